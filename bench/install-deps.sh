#!/usr/bin/env bash
# bench/install-deps.sh — the Debian 12 packages `make bench` needs for its baselines, installed only
# when missing (a machine that has them all does no apt work). Debian packages only.
#   postgresql-15 (+ contrib: pgcrypto's gen_random_bytes), nginx-light, wrk, python3 (report).
# Package post-install scripts must not start system services (nginx on :80, the Debian
# "main" cluster): when no /usr/sbin/policy-rc.d exists, a temporary one that denies starts is put
# in place for the install and removed afterwards.
set -euo pipefail

packages=(postgresql-15 postgresql-contrib nginx-light wrk python3 openssl procps util-linux)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/install-deps: missing packages: ${missing[*]} — run as root or: apt-get install ${missing[*]}" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
made_policy=0
cleanup() { if [ $made_policy -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, bench/install-deps.sh: no service starts during install\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  made_policy=1
fi

echo "bench/install-deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
