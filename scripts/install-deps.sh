#!/usr/bin/env bash
# Installs the Debian 12 packages keytrustee builds and tests with, and only those that are missing.
# Idempotent: a machine that has everything does no apt work at all.
set -euo pipefail

packages=(
  build-essential pkg-config dpkg-dev
  libsqlite3-dev libsodium-dev libmbedtls-dev libjansson-dev
  sqlite3 curl openssl iproute2 rsync python3 clang libclang-rt-14-dev valgrind
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done

# CivetWeb is built from Debian's source package: that needs a deb-src entry.
need_source_entry=0
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  need_source_entry=1
fi

if [ ${#missing[@]} -eq 0 ] && [ $need_source_entry -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]:-deb-src entry}); run as root or install them: apt-get install ${missing[*]:-}" >&2
  exit 1
fi

if [ $need_source_entry -eq 1 ]; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/keytrustee-deb-src.sources
  else
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/keytrustee-deb-src.list
  fi
fi

echo "install-deps: installing ${missing[*]:-(source index only)}" >&2
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
