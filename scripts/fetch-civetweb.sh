#!/usr/bin/env bash
# Fetches CivetWeb 1.15 from Debian's `civetweb` source package into $1 (default build/third_party)
# and applies our patches, scripts/patches/*.patch in name order (patch -p1 in the source tree).
# Nothing of CivetWeb is committed; the build compiles src/civetweb.c with USE_MBEDTLS because
# Debian's binary libcivetweb is built against OpenSSL.
#
# A patch that does not apply stops the fetch with an error: the build never runs an unpatched
# CivetWeb (the patches carry the TLS policy, see scripts/patches/). The tree records a checksum of
# the patches it was built with (.keytrustee-patches); a tree fetched with other patches, or none,
# is fetched again.
set -euo pipefail
dest=${1:-build/third_party}
patches_dir=$(cd "$(dirname "$0")" && pwd)/patches
mkdir -p "$dest"

patches=()
for patch in "$patches_dir"/*.patch; do
  [ -e "$patch" ] && patches+=("$patch")
done
if [ ${#patches[@]} -gt 0 ]; then
  wanted=$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)
else
  wanted=none
fi
marker=$dest/civetweb/.keytrustee-patches
if [ -f "$dest/civetweb/src/civetweb.c" ] && [ "$(cat "$marker" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get source --download-only -qq civetweb >/dev/null 2>&1 ) || {
  echo "fetch-civetweb: 'apt-get source civetweb' failed; run scripts/install-deps.sh as root (it adds the deb-src entry)" >&2
  exit 1
}
tarball=$(ls "$work"/civetweb_*.orig.tar.* | head -n 1)
mkdir -p "$work/unpacked"
tar -xf "$tarball" -C "$work/unpacked"
source_dir=$(ls -d "$work/unpacked"/civetweb-*)
for patch in "${patches[@]}"; do
  if ! patch -p1 --batch --forward --silent -d "$source_dir" <"$patch" >"$work/patch.log" 2>&1; then
    echo "fetch-civetweb: $(basename "$patch") does not apply to $(basename "$tarball"):" >&2
    sed 's/^/  /' "$work/patch.log" >&2
    echo "fetch-civetweb: update the patch for this CivetWeb version; refusing to build without it" >&2
    exit 1
  fi
done
echo "$wanted" >"$source_dir/.keytrustee-patches"
touch "$source_dir/src/civetweb.c" # newer than the patches: make rebuilds civetweb.o once
rm -rf "$dest/civetweb"
mv "$source_dir" "$dest/civetweb"
test -f "$dest/civetweb/src/civetweb.c"
