#!/usr/bin/env bash
# image/build.sh — builds the keytrustee appliance: a kernel and an initramfs that boots straight
# into busybox init, dropbear and the keytrustee services (docs/appliance.md).
#
#   image/build.sh [BIN_DIR [OUT_DIR]]     (make image: BIN_DIR=build/bin, OUT_DIR=build/image)
#
# Output: OUT_DIR/vmlinuz, OUT_DIR/initrd.img, OUT_DIR/manifest.txt (versions and checksums).
#
# Inputs, all Debian 12 packages: the kernel from linux-image-cloud-amd64 (resolved through the
# metapackage on each build, fetched with `apt-get download` and unpacked, never installed),
# busybox-static, dropbear-bin, rsync and mke2fs with the shared libraries ldd lists, our programs
# from BIN_DIR (stripped, dynamically linked: glibc is in the image anyway for dropbear and rsync,
# so the shared libsqlite3/mbedTLS/libsodium/jansson cost less than four static copies).
#
# Reproducible: the same inputs give the same bytes — files sorted, owner 0:0, every mtime set to
# SOURCE_DATE_EPOCH (default: the commit time of HEAD), cpio --reproducible, gzip -n.
set -euo pipefail
umask 022

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${1:-$root/build/bin}
out_dir=${2:-$root/build/image}
mkdir -p "$out_dir"
bin_dir=$(cd "$bin_dir" && pwd)
out_dir=$(cd "$out_dir" && pwd)
cache=$out_dir/cache
size_limit=$((40 * 1024 * 1024))

die() { echo "image/build.sh: $*" >&2; exit 1; }
say() { echo "image: $*" >&2; }

# ---- host packages ------------------------------------------------------------------------------
install_packages() {
  local package missing=()
  while read -r package; do
    package=${package%%#*}; package=${package//[[:space:]]/}
    [ -n "$package" ] || continue
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done <"$root/image/packages.txt"
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] ||
    die "missing packages: ${missing[*]}; run as root or: apt-get install --no-install-recommends ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_packages

for program in keytrusteed keytrustee-db ktadmin keytrustee-orgtool; do
  [ -x "$bin_dir/$program" ] || die "$bin_dir/$program is missing: run make first"
done

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 1700000000)
fi
export SOURCE_DATE_EPOCH
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds"

# ---- the kernel ---------------------------------------------------------------------------------
kernel_package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
  awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$kernel_package" ]; then
  [ "$(id -u)" -eq 0 ] || die "apt-cache knows no linux-image-cloud-amd64: run apt-get update as root"
  apt-get update -qq
  kernel_package=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
[ -n "$kernel_package" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
kernel_version=$(apt-cache policy "$kernel_package" | awk '/Candidate:/ { print $2 }')
if [ -z "$kernel_version" ] || [ "$kernel_version" = "(none)" ]; then die "no candidate for $kernel_package"; fi
mkdir -p "$cache"
kernel_deb=$cache/${kernel_package}_${kernel_version//:/%3a}_amd64.deb
# A private work directory: two builds at once (two test runs) must not share one.
work=$(mktemp -d "$out_dir/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
staging=$work/root
if [ ! -s "$kernel_deb" ]; then
  say "fetching $kernel_package $kernel_version"
  mkdir -p "$work/download"
  (cd "$work/download" && apt-get download -q "$kernel_package=$kernel_version" 2>&1 |
     grep -v 'Download is performed unsandboxed' >&2) || true
  [ -s "$work/download/${kernel_deb##*/}" ] ||
    die "apt-get download $kernel_package=$kernel_version did not give ${kernel_deb##*/}"
  rm -f "$cache"/linux-image-*.deb
  mv -f "$work/download/${kernel_deb##*/}" "$kernel_deb"
fi

mkdir -p "$work/kernel" "$staging"
dpkg-deb -x "$kernel_deb" "$work/kernel"
kernel_release=${kernel_package#linux-image-}
vmlinuz=$work/kernel/boot/vmlinuz-$kernel_release
moddir=$work/kernel/lib/modules/$kernel_release
[ -f "$vmlinuz" ] || die "$kernel_deb has no boot/vmlinuz-$kernel_release"
[ -d "$moddir" ] || die "$kernel_deb has no lib/modules/$kernel_release"

# ---- the tree -----------------------------------------------------------------------------------
# Merged /usr, like the host: /bin, /sbin, /lib, /lib64 are links into /usr.
cd "$staging"
mkdir -p usr/bin usr/sbin usr/lib/x86_64-linux-gnu usr/lib64 usr/lib/modules \
  dev proc sys run tmp root etc mnt/data var/lib/keytrustee var/log
ln -s usr/bin bin; ln -s usr/sbin sbin; ln -s usr/lib lib; ln -s usr/lib64 lib64
ln -s ../run var/run
chmod 1777 tmp; chmod 700 root

# busybox and its applets (every applet a link; the real programs below replace some of them).
cp /bin/busybox usr/bin/busybox
while read -r applet; do
  name=${applet##*/}
  case "$applet" in
    sbin/*|usr/sbin/*) link=usr/sbin/$name ;;
    *) link=usr/bin/$name ;;
  esac
  [ -e "$link" ] || [ -L "$link" ] || ln -s /usr/bin/busybox "$link"
done < <(/bin/busybox --list-full | LC_ALL=C sort)
ln -s usr/bin/busybox init

# A program and the libraries the dynamic loader resolves for it, each under its soname.
copy_program() {
  local source=$1 target=$2 strip=${3:-no}
  rm -f "$target"
  cp "$source" "$target"
  chmod 0755 "$target"
  if [ "$strip" = strip ]; then strip --strip-all "$target"; fi
  local library
  while read -r library; do
    [ -n "$library" ] || continue
    local name=${library##*/}
    [ -e "usr/lib/x86_64-linux-gnu/$name" ] && continue
    cp -L "$library" "usr/lib/x86_64-linux-gnu/$name"
    # The loader must stay executable (the kernel execs it); the rest need not be.
    case "$name" in ld-linux*) chmod 0755 "usr/lib/x86_64-linux-gnu/$name" ;;
      *) chmod 0644 "usr/lib/x86_64-linux-gnu/$name" ;; esac
  done < <(ldd "$source" | awk '/=> \// { print $3 } /^\t\/lib64\// { print $1 }' | LC_ALL=C sort -u)
}

copy_program /usr/sbin/dropbear usr/sbin/dropbear
copy_program /usr/bin/dbclient usr/bin/dbclient
copy_program /usr/bin/dropbearkey usr/bin/dropbearkey
copy_program /usr/bin/rsync usr/bin/rsync
copy_program /sbin/mke2fs usr/sbin/mke2fs
ln -sf mke2fs usr/sbin/mkfs.ext4
for program in keytrusteed keytrustee-db ktadmin keytrustee-orgtool; do
  copy_program "$bin_dir/$program" "usr/sbin/$program" strip
done
# The loader lives in x86_64-linux-gnu; programs name it /lib64/ld-linux-x86-64.so.2.
if [ -e usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ]; then
  rm -f usr/lib64/ld-linux-x86-64.so.2
  ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2
fi
cp /etc/mke2fs.conf etc/mke2fs.conf

# Kernel modules: the virtio devices, qemu's fw_cfg, and what they depend on, in load order.
declare -A module_file=() module_loaded=()
while read -r file; do
  name=${file##*/}; name=${name%.ko}; name=${name//-/_}
  module_file[$name]=$file
done < <(find "$moddir/kernel" -name '*.ko' | LC_ALL=C sort)
module_order=()
add_module() {
  local name=${1//-/_} file depends dependency
  [ -n "${module_loaded[$name]:-}" ] && return 0
  file=${module_file[$name]:-}
  [ -n "$file" ] || die "kernel $kernel_release has no module $name"
  depends=$(tr '\0' '\n' <"$file" | grep -a '^depends=' | head -n 1 | cut -d= -f2 | tr ',' ' ')
  for dependency in $depends; do add_module "$dependency"; done
  module_loaded[$name]=1
  module_order+=("$name")
  cp "$file" "usr/lib/modules/$name.ko"
  chmod 0644 "usr/lib/modules/$name.ko"
}
for module in virtio_pci virtio_net virtio_blk virtio_rng qemu_fw_cfg; do add_module "$module"; done
printf '%s\n' "${module_order[@]}" >usr/lib/modules/load-order

# Our files: init scripts, the service command, the ssh and sudo shims, /etc.
(cd "$root/image/rootfs" && find . -type f | LC_ALL=C sort) | while read -r file; do
  mkdir -p "$(dirname "$file")"
  cp "$root/image/rootfs/$file" "$file"
  case "$file" in
    ./usr/bin/*|./usr/sbin/*|./etc/init.d/*|./usr/share/udhcpc/*) chmod 0755 "$file" ;;
    ./etc/shadow) chmod 0600 "$file" ;;
    *) chmod 0644 "$file" ;;
  esac
done

busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)
dropbear_version=$(dpkg-query -W -f='${Version}' dropbear-bin)
rsync_version=$(dpkg-query -W -f='${Version}' rsync)
e2fsprogs_version=$(dpkg-query -W -f='${Version}' e2fsprogs)
kt_version=$("$bin_dir/ktadmin" --version 2>/dev/null | head -n 1 || echo unknown)
kt_commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
cat >etc/keytrustee-appliance-release <<EOF
keytrustee appliance
keytrustee: $kt_version (commit $kt_commit)
kernel: $kernel_package $kernel_version
busybox-static: $busybox_version
dropbear-bin: $dropbear_version
rsync: $rsync_version
e2fsprogs: $e2fsprogs_version
modules: ${module_order[*]}
EOF

# ---- pack ---------------------------------------------------------------------------------------
find . -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
find . -print0 | LC_ALL=C sort -z |
  cpio --quiet --null -o -H newc --reproducible -R 0:0 >"$work/initrd.cpio"
gzip -n -9 <"$work/initrd.cpio" >"$work/initrd.img"
cp "$vmlinuz" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$out_dir/vmlinuz"
mv -f "$work/initrd.img" "$out_dir/initrd.img"

kernel_bytes=$(stat -c %s "$out_dir/vmlinuz")
initrd_bytes=$(stat -c %s "$out_dir/initrd.img")
unpacked_bytes=$(stat -c %s "$work/initrd.cpio")
total=$((kernel_bytes + initrd_bytes))
{
  cat etc/keytrustee-appliance-release
  echo "SOURCE_DATE_EPOCH: $SOURCE_DATE_EPOCH"
  echo "vmlinuz: $kernel_bytes bytes, sha256 $(sha256sum "$out_dir/vmlinuz" | cut -d' ' -f1)"
  echo "initrd.img: $initrd_bytes bytes ($unpacked_bytes unpacked), sha256 $(sha256sum "$out_dir/initrd.img" | cut -d' ' -f1)"
  echo "total: $total bytes"
} >"$work/manifest.txt"
mv -f "$work/manifest.txt" "$out_dir/manifest.txt"
[ "$total" -le "$size_limit" ] || die "the image is $total bytes, over the limit of $size_limit"
say "$out_dir/vmlinuz ($((kernel_bytes / 1024)) KiB) + initrd.img ($((initrd_bytes / 1024)) KiB, $((unpacked_bytes / 1024)) KiB unpacked) = $((total / 1024)) KiB"
