#!/usr/bin/env bash
# Fetches CivetWeb 1.15 from Debian's `civetweb` source package into $1 (default build/third_party).
# Nothing of CivetWeb is committed; the build compiles src/civetweb.c with USE_MBEDTLS because
# Debian's binary libcivetweb is built against OpenSSL.
set -euo pipefail
dest=${1:-build/third_party}
mkdir -p "$dest"
if [ -f "$dest/civetweb/src/civetweb.c" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get source --download-only -qq civetweb >/dev/null 2>&1 ) || {
  echo "fetch-civetweb: 'apt-get source civetweb' failed; run scripts/install-deps.sh as root (it adds the deb-src entry)" >&2
  exit 1
}
tarball=$(ls "$work"/civetweb_*.orig.tar.* | head -n 1)
mkdir -p "$work/unpacked"
tar -xf "$tarball" -C "$work/unpacked"
rm -rf "$dest/civetweb"
mv "$work/unpacked"/civetweb-* "$dest/civetweb"
test -f "$dest/civetweb/src/civetweb.c"
