#!/usr/bin/env bash
# image/vm.sh — runs appliance VMs on this machine under qemu (docs/appliance.md).
#
#   image/vm.sh pair              boot two fresh VMs, keytrustee01 and keytrustee02 (make vm-pair)
#   image/vm.sh stop [NAME...]    power them off cleanly: ssh poweroff, wait, then kill (make vm-stop)
#   image/vm.sh start NAME        boot an existing VM again (same disk, ports and settings)
#   image/vm.sh kill NAME         power cut: SIGKILL its qemu
#   image/vm.sh reboot NAME       reboot it from inside (ssh reboot) and wait until it is back
#   image/vm.sh wait NAME         wait until its SSH answers (after start)
#   image/vm.sh ssh NAME [CMD]    run a command on it as root (a shell without CMD)
#   image/vm.sh monitor NAME CMD  a qemu monitor command, e.g. `set_link link off` (partition)
#   image/vm.sh status            which VMs run
#
# NAME is kt01 or kt02. Everything lives in KT_VM_DIR (default build/vm): pair.env (KT01_SSH,
# KT01_HTTPS, KT02_SSH, KT02_HTTPS, SSH_KEY, KT_KNOWN_HOSTS), the admin key, known_hosts, and per VM
# NAME/data.img (the data disk), NAME/settings, NAME/serial.log, NAME/monitor.sock, NAME/qemu.pid.
#
# Networks: each VM has a user-mode NIC (eth0, restrict=on: nothing leaves this machine) with SSH
# and HTTPS forwarded to 127.0.0.1 ports, and a private link (eth1) to the other VM: `-netdev dgram`
# over UDP on 127.0.0.1, which survives a restart of either VM. The link's netdev is called `link`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vm_dir=${KT_VM_DIR:-$root/build/vm}
image_dir=${KT_IMAGE_DIR:-$root/build/image}
memory=${KT_VM_MEMORY:-128}
disk_size=${KT_VM_DISK_SIZE:-512M}
boot_timeout=${KT_VM_BOOT_TIMEOUT:-180}
domain=example.com
names=(kt01 kt02)

die() { echo "vm.sh: $*" >&2; exit 1; }

host_of() { echo "keytrustee${1#kt}"; }                 # kt01 -> keytrustee01
link_address() { echo "10.11.0.${1#kt0}"; }            # kt01 -> 10.11.0.1 (only on the dgram link)
check_name() { [[ "$1" =~ ^kt0[12]$ ]] || die "no VM named '$1' (kt01 or kt02)"; }

free_port() {  # a free 127.0.0.1 port of the given kind (tcp or udp)
  python3 - "$1" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

load_env() {
  [ -f "$vm_dir/pair.env" ] || die "no pair in $vm_dir: run make vm-pair (image/vm.sh pair) first"
  # shellcheck disable=SC1091
  . "$vm_dir/pair.env"
}

ssh_port() { local var; var="KT${1#kt}_SSH"; echo "${!var}"; }

pid_of() {  # the qemu pid of a VM that runs, else nothing
  local pidfile=$vm_dir/$1/qemu.pid pid
  [ -s "$pidfile" ] || return 0
  pid=$(tr -dc 0-9 <"$pidfile")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$vm_dir/$1/data.img"; then
    echo "$pid"
  fi
}

vm_ssh() {  # vm_ssh NAME [ssh args/command...]
  local name=$1; shift
  ssh -F /dev/null -i "$SSH_KEY" -p "$(ssh_port "$name")" -o UserKnownHostsFile="$KT_KNOWN_HOSTS" \
    -o HostKeyAlias="$(host_of "$name")" -o StrictHostKeyChecking=yes -o BatchMode=yes \
    -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=6 -o LogLevel=ERROR \
    root@127.0.0.1 "$@"
}

# Boots a VM from its directory; returns once qemu runs (not once the guest is up).
launch() {
  local name=$1 dir=$vm_dir/$1 n=${1#kt0} peer
  peer=kt0$((3 - n))
  [ -z "$(pid_of "$name")" ] || die "$name runs already (pid $(pid_of "$name"))"
  if [ ! -f "$image_dir/vmlinuz" ] || [ ! -f "$image_dir/initrd.img" ]; then die "no image in $image_dir: run make image"; fi
  local local_port_var="KT${name#kt}_LINK" peer_port_var="KT${peer#kt}_LINK" ssh_var="KT${name#kt}_SSH" https_var="KT${name#kt}_HTTPS"
  # Serial output is appended across boots; the wait below reads only what this boot writes.
  touch "$dir/serial.log"
  stat -c %s "$dir/serial.log" >"$dir/serial.offset"
  rm -f "$dir/qemu.pid" "$dir/monitor.sock"
  qemu-system-x86_64 -name "$(host_of "$name")" -accel tcg -m "$memory" -smp 1 \
    -nodefaults -no-user-config -display none \
    -kernel "$image_dir/vmlinuz" -initrd "$image_dir/initrd.img" \
    -append "console=ttyS0 panic=5 quiet" \
    -chardev "file,id=serial,path=$dir/serial.log,append=on" -serial chardev:serial \
    -monitor "unix:$dir/monitor.sock,server=on,wait=off" \
    -drive "file=$dir/data.img,format=raw,if=virtio,cache=writeback" \
    -netdev "user,id=mgmt,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:${!ssh_var}-:22,hostfwd=tcp:127.0.0.1:${!https_var}-:11371" \
    -device "virtio-net-pci,netdev=mgmt,mac=52:54:00:4b:54:1$n,romfile=,addr=0x3" \
    -netdev "dgram,id=link,local.type=inet,local.host=127.0.0.1,local.port=${!local_port_var},remote.type=inet,remote.host=127.0.0.1,remote.port=${!peer_port_var}" \
    -device "virtio-net-pci,netdev=link,mac=52:54:00:4b:54:0$n,romfile=,addr=0x4" \
    -device virtio-rng-pci,addr=0x5 \
    -fw_cfg "name=opt/keytrustee/settings,file=$dir/settings" \
    -fw_cfg "name=opt/keytrustee/authorized_keys,file=$vm_dir/authorized_keys" \
    -fw_cfg "name=opt/keytrustee/ssh_identity,file=$vm_dir/peer_key" \
    -pidfile "$dir/qemu.pid" -daemonize >"$dir/qemu.log" 2>&1 ||
    { cat "$dir/qemu.log" >&2; die "qemu did not start $name"; }
}

# Waits for this boot's "ready" on the serial console and for SSH to answer.
wait_up() {
  local name=$1 dir=$vm_dir/$1 offset deadline
  offset=$(cat "$dir/serial.offset" 2>/dev/null || echo 0)
  deadline=$((SECONDS + boot_timeout))
  until tail -c +"$((offset + 1))" "$dir/serial.log" | grep -q 'kt-appliance: ready'; do
    [ -n "$(pid_of "$name")" ] || { tail -n 30 "$dir/serial.log" >&2; die "$name: qemu exited while booting"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$dir/serial.log" >&2; die "$name did not boot within ${boot_timeout}s"; }
    sleep 0.2
  done
  until vm_ssh "$name" true 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$name booted but SSH does not answer on 127.0.0.1:$(ssh_port "$name")"
    sleep 0.3
  done
}

# The host key a VM printed on its console at its latest boot.
host_key_of() {
  grep -a 'kt-appliance: ssh host key: ssh-' "$vm_dir/$1/serial.log" | tail -n 1 |
    sed 's/.*ssh host key: //' | tr -d '\r'
}

pair() {
  local name running=()
  for name in "${names[@]}"; do [ -z "$(pid_of "$name")" ] || running+=("$name"); done
  [ ${#running[@]} -eq 0 ] || die "${running[*]} still running from $vm_dir: make vm-stop first"
  for tool in qemu-system-x86_64 ssh ssh-keygen dropbearkey python3; do
    command -v "$tool" >/dev/null || die "$tool is missing: run make image (it installs image/packages.txt)"
  done
  rm -rf "$vm_dir"
  mkdir -p "$vm_dir"
  chmod 700 "$vm_dir"
  # The admin's key (the host logs in with it) and the pair's key (root on each VM uses it for
  # ssh/rsync to the other); both are in each VM's authorized_keys.
  ssh-keygen -q -t ed25519 -N '' -C "keytrustee-admin" -f "$vm_dir/admin_key"
  dropbearkey -t ed25519 -f "$vm_dir/peer_key" >/dev/null 2>&1
  { cat "$vm_dir/admin_key.pub"; dropbearkey -y -f "$vm_dir/peer_key" | grep '^ssh-' |
      awk '{ print $1, $2, "keytrustee-pair" }'; } >"$vm_dir/authorized_keys"
  cat >"$vm_dir/pair.env" <<EOF
# Written by image/vm.sh pair. Source it: ssh -i \$SSH_KEY -p \$KT01_SSH root@127.0.0.1 ...
KT_VM_DIR=$vm_dir
KT01_SSH=$(free_port tcp)
KT01_HTTPS=$(free_port tcp)
KT02_SSH=$(free_port tcp)
KT02_HTTPS=$(free_port tcp)
KT01_LINK=$(free_port udp)
KT02_LINK=$(free_port udp)
SSH_KEY=$vm_dir/admin_key
KT_KNOWN_HOSTS=$vm_dir/known_hosts
EOF
  load_env
  : >"$KT_KNOWN_HOSTS"
  for name in "${names[@]}"; do
    mkdir -p "$vm_dir/$name"
    truncate -s "$disk_size" "$vm_dir/$name/data.img"   # blank: the first boot formats it
    {
      echo "hostname=$(host_of "$name").$domain"
      echo "iface=eth0 10.0.2.15/24"
      echo "iface=eth1 $(link_address "$name")/24"
      for peer in "${names[@]}"; do
        echo "host=$(link_address "$peer") $(host_of "$peer").$domain $(host_of "$peer")"
      done
    } >"$vm_dir/$name/settings"
  done
  local start=$SECONDS
  for name in "${names[@]}"; do launch "$name"; done
  for name in "${names[@]}"; do
    # Wait for the console's "ready", then trust the host key it printed there.
    local offset deadline=$((SECONDS + boot_timeout))
    offset=$(cat "$vm_dir/$name/serial.offset")
    until tail -c +"$((offset + 1))" "$vm_dir/$name/serial.log" | grep -q 'kt-appliance: ready'; do
      [ -n "$(pid_of "$name")" ] || { tail -n 30 "$vm_dir/$name/serial.log" >&2; die "$name: qemu exited while booting"; }
      [ $SECONDS -lt $deadline ] || { tail -n 30 "$vm_dir/$name/serial.log" >&2; die "$name did not boot within ${boot_timeout}s"; }
      sleep 0.2
    done
    local key; key=$(host_key_of "$name")
    [ -n "$key" ] || die "$name printed no SSH host key on its console"
    echo "$(host_of "$name") $key" >>"$KT_KNOWN_HOSTS"
  done
  for name in "${names[@]}"; do wait_up "$name"; done
  # Each VM trusts the other's host key under every name of it, for the seed's rsync step.
  local lines=""
  for name in "${names[@]}"; do
    local key; key=$(host_key_of "$name")
    for alias in "$(host_of "$name").$domain" "$(host_of "$name")" "$(link_address "$name")"; do
      lines+="$alias $key"$'\n'
    done
  done
  for name in "${names[@]}"; do
    printf '%s' "$lines" | vm_ssh "$name" 'cat >/root/.ssh/known_hosts && chmod 600 /root/.ssh/known_hosts'
  done
  cat <<EOF
Two appliance VMs run (booted in $((SECONDS - start)) s), nothing initialized yet:
  keytrustee01.$domain   ssh -i $SSH_KEY -p $KT01_SSH root@127.0.0.1    HTTPS https://127.0.0.1:$KT01_HTTPS
  keytrustee02.$domain   ssh -i $SSH_KEY -p $KT02_SSH root@127.0.0.1    HTTPS https://127.0.0.1:$KT02_HTTPS
  (host keys: -o UserKnownHostsFile=$KT_KNOWN_HOSTS -o HostKeyAlias=keytrustee01|keytrustee02)
  or: image/vm.sh ssh kt01|kt02 [COMMAND]
Settings: $vm_dir/pair.env. Serial consoles: $vm_dir/kt0N/serial.log. Partition: image/vm.sh monitor kt01 'set_link link off'.
Then follow the seed's command-line procedure on them (docs/appliance.md). Stop them with: make vm-stop
EOF
}

stop_vm() {
  local name=$1 pid
  pid=$(pid_of "$name")
  [ -n "$pid" ] || { echo "$name is not running"; return 0; }
  kill -CONT "$pid" 2>/dev/null || true   # a frozen VM cannot power off
  vm_ssh "$name" poweroff >/dev/null 2>&1 || true
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || { echo "$name powered off"; rm -f "$vm_dir/$name/qemu.pid"; return 0; }
    sleep 0.1
  done
  # No clean shutdown within a minute: try the ACPI button, then cut the power.
  monitor "$name" system_powerdown >/dev/null 2>&1 || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    echo "$name did not power off: killed (pid $pid)" >&2
  else
    echo "$name powered off (ACPI)"
  fi
  rm -f "$vm_dir/$name/qemu.pid"
}

reboot_vm() {
  local name=$1
  [ -n "$(pid_of "$name")" ] || die "$name is not running"
  stat -c %s "$vm_dir/$name/serial.log" >"$vm_dir/$name/serial.offset"
  vm_ssh "$name" reboot >/dev/null 2>&1 || true
  wait_up "$name"
}

kill_vm() {
  local name=$1 pid
  pid=$(pid_of "$name")
  [ -n "$pid" ] || { echo "$name is not running"; return 0; }
  kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$vm_dir/$name/qemu.pid"
}

monitor() {  # monitor NAME COMMAND: prints the monitor's answer
  local name=$1; shift
  [ -S "$vm_dir/$name/monitor.sock" ] || die "$name has no monitor socket (is it running?)"
  python3 - "$vm_dir/$name/monitor.sock" "$*" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
def read_prompt():
    data = b""
    while not data.endswith(b"(qemu) "):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
read_prompt()
s.sendall(sys.argv[2].encode() + b"\n")
out = read_prompt()
lines = [l for l in out.replace("\r", "").split("\n") if l and not l.startswith("(qemu)") and sys.argv[2] not in l]
print("\n".join(l for l in lines if not l.startswith("\x1b")))
PY
}

command=${1:-}
[ -n "$command" ] || { sed -n '2,17p' "$0"; exit 2; }
shift
case "$command" in
  pair) pair ;;
  stop)
    [ -f "$vm_dir/pair.env" ] || { echo "no VMs in $vm_dir"; exit 0; }
    load_env
    if [ $# -eq 0 ]; then set -- "${names[@]}"; fi
    for name in "$@"; do check_name "$name"; stop_vm "$name"; done ;;
  start) [ $# -eq 1 ] || die "usage: vm.sh start NAME"; check_name "$1"; load_env; launch "$1" ;;
  wait) [ $# -eq 1 ] || die "usage: vm.sh wait NAME"; check_name "$1"; load_env; wait_up "$1" ;;
  kill) [ $# -eq 1 ] || die "usage: vm.sh kill NAME"; check_name "$1"; load_env; kill_vm "$1" ;;
  reboot) [ $# -eq 1 ] || die "usage: vm.sh reboot NAME"; check_name "$1"; load_env; reboot_vm "$1" ;;
  ssh) [ $# -ge 1 ] || die "usage: vm.sh ssh NAME [COMMAND]"; check_name "$1"; load_env; name=$1; shift
       if [ $# -eq 0 ]; then vm_ssh "$name" -t; else vm_ssh "$name" "$@"; fi ;;
  monitor) [ $# -ge 2 ] || die "usage: vm.sh monitor NAME COMMAND"; check_name "$1"; load_env; name=$1; shift; monitor "$name" "$@" ;;
  status)
    load_env
    for name in "${names[@]}"; do
      pid=$(pid_of "$name")
      if [ -n "$pid" ]; then echo "$name runs (qemu pid $pid)"; else echo "$name is off"; fi
    done ;;
  *) die "unknown command '$command' (pair, stop, start, kill, reboot, wait, ssh, monitor, status)" ;;
esac
