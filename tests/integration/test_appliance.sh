#!/usr/bin/env bash
# test_appliance.sh — the appliance as an operator meets it (issue 6, docs/appliance.md).
#
# Builds the image (make image), boots two VMs under qemu (image/vm.sh pair), and over SSH runs the
# seed's command-line HA procedure as written on keytrustee01.example.com and keytrustee02.example.com:
# ktadmin init, the rsync of .keytrustee, db --bootstrap --slave, the service commands, init-slave,
# enable-synchronous-replication. From this machine it then creates an org over SSH, registers a
# client with ktclient against both forwarded HTTPS ports, and puts and gets keys through:
#   - a partition of the private link (monitor set_link): writes refused, reads on both, heal
#   - a power cut of the passive while writing, then of the active (reads go on on the passive)
#   - the hourly backup job (run by hand): 10 kept, the newest verifies with the secret key here
#   - a reboot of both, and a clean poweroff of both
# Prints the image size, boot-to-HTTPS time and guest memory in use as "# measured:" lines.
# On failure the serial consoles and the guests' logs are printed. qemu processes are killed by
# PID when the script exits, whatever happens.
#
# The VMs run under TCG (no KVM here); the whole test takes about 2-3 minutes on 2 cores.
# shellcheck source=tests/lib/common.sh
source "$(dirname "$0")/../lib/common.sh"

export KT_VM_DIR=$KT_WORK/vm
export KT_IMAGE_DIR=$KT_ROOT/build/image
VM=$KT_ROOT/image/vm.sh
CLIENT=$KT_BIN/ktclient
A=keytrustee01.example.com
P=keytrustee02.example.com

S() { "$VM" ssh "$@"; }

# Remember the qemu PIDs so that the exit trap can kill them whatever happens.
track() {
  local name pid
  for name in kt01 kt02; do
    pid=$(cat "$KT_VM_DIR/$name/qemu.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && KT_PIDS["qemu-$name"]=$pid
  done
}

dump_logs() {
  local name
  for name in kt01 kt02; do
    [ -f "$KT_VM_DIR/$name/serial.log" ] || continue
    echo "# ---- $name serial console (last 60 lines) ----"
    tail -n 60 "$KT_VM_DIR/$name/serial.log" | tr -d '\r' | sed 's/^/# /'
    echo "# ---- $name logs ----"
    if [ -s "$KT_VM_DIR/$name/qemu.pid" ] && kill -0 "$(cat "$KT_VM_DIR/$name/qemu.pid")" 2>/dev/null; then
      timeout 20 "$VM" ssh "$name" 'tail -n 30 /var/lib/keytrustee/logs/*.log /var/log/boot.log' 2>&1 | sed 's/^/# /'
    else  # powered off: read them from the data disk
      for file in /keytrustee/logs/keytrustee-db.log /keytrustee/logs/keytrusteed.log /log/boot.log; do
        echo "# $file:"
        /sbin/debugfs -R "cat $file" "$KT_VM_DIR/$name/data.img" 2>/dev/null | tr -d '\000' | tail -n 30 | sed 's/^/#   /'
      done
    fi
  done
}

on_exit() {
  local status=$?
  if [ "$kt_failed" -ne 0 ] || [ "$status" -ne 0 ]; then dump_logs; fi
  track
  kt_cleanup
}
trap on_exit EXIT
trap 'exit 143' TERM INT   # so that the EXIT trap kills the VMs when the test itself is stopped

abort() { not_ok "$1" "${2:-}"; echo "# stopping here: the steps below need this one"; kt_finish; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- the image ----------------------------------------------------------------------------------
# KT_APPLIANCE_PREBUILT=1 boots build/image as it is (an image built earlier or elsewhere).
if [ -n "${KT_APPLIANCE_PREBUILT:-}" ]; then
  if [ ! -f "$KT_IMAGE_DIR/vmlinuz" ] || [ ! -f "$KT_IMAGE_DIR/initrd.img" ]; then
    abort "KT_APPLIANCE_PREBUILT: an image in $KT_IMAGE_DIR"
  fi
  echo "# using the prebuilt image in $KT_IMAGE_DIR"
elif ! make -C "$KT_ROOT" --no-print-directory image >"$KT_WORK/make-image.log" 2>&1; then
  tail -n 20 "$KT_WORK/make-image.log" | sed 's/^/# /'
  abort "make image builds the appliance"
else
  ok "make image builds the appliance"
fi
image_bytes=$(($(stat -c %s "$KT_IMAGE_DIR/vmlinuz") + $(stat -c %s "$KT_IMAGE_DIR/initrd.img")))
check "the image (kernel + initramfs) is at most 40 MB ($((image_bytes / 1024)) KiB)" \
  test "$image_bytes" -le $((40 * 1024 * 1024))

# ---- boot ---------------------------------------------------------------------------------------
start=$(now)
if ! "$VM" pair >"$KT_WORK/pair.log" 2>&1; then
  track
  sed 's/^/# /' "$KT_WORK/pair.log"
  abort "make vm-pair boots keytrustee01 and keytrustee02"
fi
track
boot_time=$(elapsed "$start")
ok "two fresh VMs boot and answer SSH (${boot_time}s)"
# shellcheck disable=SC1091
. "$KT_VM_DIR/pair.env"
for var in KT01_SSH KT01_HTTPS KT02_SSH KT02_HTTPS SSH_KEY; do
  [ -n "${!var:-}" ] || not_ok "pair.env sets $var"
done

check "each VM resolves both names on the private link" \
  S kt01 "ping -c 1 -W 5 $P >/dev/null && ping -c 1 -W 5 keytrustee01 >/dev/null && [ \"\$(hostname)\" = $A ]"
check "the data disk is ext4 on /var/lib/keytrustee" \
  S kt02 "grep -q '^/dev/vda /mnt/data ext4' /proc/mounts && grep -q ' /var/lib/keytrustee ext4' /proc/mounts"

# ---- the seed's procedure, as written -----------------------------------------------------------
active_steps="set -e
sudo ktadmin init --external-address $A
sudo rsync -zav --exclude .ssl /var/lib/keytrustee/.keytrustee root@$P:/var/lib/keytrustee/.
sudo ktadmin db --bootstrap --port 11381 --pg-rootdir /var/lib/keytrustee/db --slave $P
sudo service keytrustee-db stop
sudo service keytrustee-db start
sudo service keytrusteed start"
passive_steps="set -e
sudo ktadmin init-slave --master $A --pg-rootdir /var/lib/keytrustee/db --no-import-key --no-start
sudo service keytrustee-db start
sudo ktadmin init --external-address $P
sudo service keytrusteed start"

S kt01 "$active_steps" >"$KT_WORK/active-steps.log" 2>&1 ||
  { sed 's/^/# /' "$KT_WORK/active-steps.log"; abort "the active's steps run as written on $A"; }
ok "the active's steps run as written on $A (init, rsync to $P, db --bootstrap --slave, services)"
S kt02 "$passive_steps" >"$KT_WORK/passive-steps.log" 2>&1 ||
  { sed 's/^/# /' "$KT_WORK/passive-steps.log"; abort "the passive's steps run as written on $P"; }
ok "the passive's steps run as written on $P (init-slave, services, init)"
S kt01 "sudo ktadmin enable-synchronous-replication --pg-rootdir /var/lib/keytrustee/db" \
  >"$KT_WORK/sync.log" 2>&1 ||
  { sed 's/^/# /' "$KT_WORK/sync.log"; abort "enable-synchronous-replication on the active"; }
ok "enable-synchronous-replication on the active"

# in_sync: the active reports the passive connected and caught up (60 s).
status_field() {  # status_field NAME EXPRESSION: evaluates EXPRESSION on `ktadmin status --json`
  S "$1" 'ktadmin status --json' 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); r=d.get('replication',{}); print($2)" 2>/dev/null
}
wait_in_sync() {
  for _ in $(seq 1 120); do
    [ "$(status_field kt01 "r.get('state')")" = in_sync ] &&
      [ "$(status_field kt02 "r.get('state')")" = in_sync ] && return 0
    sleep 0.5
  done
  return 1
}
check "the pair is in sync, synchronous on the active" wait_in_sync
check "the active reports synchronous replication" \
  test "$(status_field kt01 "r.get('synchronous')")" = True

services_running() { S "$1" 'service keytrustee-db status >/dev/null && service keytrusteed status >/dev/null'; }
both_services_running() { services_running kt01 && services_running kt02; }
check "service status: both services run on both nodes" both_services_running
check "logs are readable over SSH" \
  S kt01 'test -s /var/lib/keytrustee/logs/keytrustee-db.log && test -s /var/lib/keytrustee/logs/keytrusteed.log'

# ---- the names the client uses -----------------------------------------------------------------
# This machine reaches the nodes through qemu's forwarded ports (NAT), so requests are signed for
# 127.0.0.1:PORT, which is no name of either node: each node lists its own in accepted_hosts
# (docs/security.md, "Replay across the nodes of a pair") and restarts keytrusteed.
accept_forwarded() {  # accept_forwarded VM PORT: then waits (60 s) until HTTPS answers again
  S "$1" "echo 'accepted_hosts = 127.0.0.1:$2' | sudo tee -a /var/lib/keytrustee/.keytrustee/keytrustee.conf >/dev/null &&
          sudo service keytrusteed restart >/dev/null" || return 1
  for _ in $(seq 1 300); do
    curl -sk -o /dev/null --max-time 2 "https://127.0.0.1:$2/v1/health" && return 0
    sleep 0.2
  done
  return 1
}
check "each node accepts requests signed for its forwarded port (accepted_hosts)" \
  eval 'accept_forwarded kt01 "$KT01_HTTPS" && accept_forwarded kt02 "$KT02_HTTPS"'

# ---- an org over SSH, a client from this machine -------------------------------------------------
S kt01 'keytrustee-orgtool add -n acme -c ops@example.com' >"$KT_WORK/orgtool.log" 2>&1 ||
  { sed 's/^/# /' "$KT_WORK/orgtool.log"; abort "keytrustee-orgtool add over SSH"; }
secret=$(S kt01 'keytrustee-orgtool list' | python3 -c 'import json,sys; print(json.load(sys.stdin)["acme"]["auth_secret"])')
[ -n "$secret" ] || abort "keytrustee-orgtool list shows the org's auth secret"
ok "keytrustee-orgtool add over SSH; list shows the auth secret"

# Each node made its own self-signed certificate: the client pins both.
{ S kt01 'cat /var/lib/keytrustee/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem'
  S kt02 'cat /var/lib/keytrustee/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem'; } >"$KT_WORK/ca.pem"
pair_client=$KT_WORK/client
if ! "$CLIENT" --confdir "$pair_client" register --server "https://127.0.0.1:$KT01_HTTPS" \
     --passive-server "https://127.0.0.1:$KT02_HTTPS" --org acme --auth "$secret" \
     --clientname appliance-test --cacert "$KT_WORK/ca.pem" >"$KT_WORK/register.log" 2>&1; then
  sed 's/^/# /' "$KT_WORK/register.log"
  abort "ktclient registers with both forwarded HTTPS URLs"
fi
ok "ktclient registers with both forwarded HTTPS URLs"
# Two more views of the same registration, each asking one node only: reads through them prove
# that this node has the key.
single_client() {  # single_client DIR PORT
  rm -rf "$1"; cp -r "$pair_client" "$1"; rm -f "$1/client.state"
  sed -i -e "s|^server = .*|server = https://127.0.0.1:$2|" -e '/^passive_server = /d' "$1/client.conf"
}
on_active=$KT_WORK/client-active
on_passive=$KT_WORK/client-passive
single_client "$on_active" "$KT01_HTTPS"
single_client "$on_passive" "$KT02_HTTPS"

acked=$KT_WORK/acked   # handle<TAB>value of every write the server acknowledged
: >"$acked"
put() {  # put HANDLE VALUE [CLIENT]: records the key when acknowledged
  if printf '%s' "$2" | "$CLIENT" --confdir "${3:-$pair_client}" put --handle "$1" >/dev/null 2>>"$KT_WORK/put.log"; then
    printf '%s\t%s\n' "$1" "$2" >>"$acked"
    return 0
  fi
  return 1
}
# Every acknowledged key is on the node the client asks: `list` shows every handle, and a sample of
# values (the first, last and every 10th) reads back byte for byte.
all_keys_on() {  # all_keys_on CLIENTDIR
  local handles missing=0 n=0 handle value snapshot=$KT_WORK/acked.snapshot
  cp "$acked" "$snapshot"   # a writer may still be adding: check what was acknowledged before the list
  handles=$("$CLIENT" --confdir "$1" list 2>>"$KT_WORK/get.log" | cut -f2) || return 1
  local total; total=$(wc -l <"$snapshot")
  while IFS=$'\t' read -r handle value; do
    n=$((n + 1))
    grep -qxF "$handle" <<<"$handles" || { echo "# missing $handle via $(basename "$1")"; missing=$((missing + 1)); continue; }
    if [ "$n" -eq 1 ] || [ "$n" -eq "$total" ] || [ $((n % 10)) -eq 0 ]; then
      [ "$("$CLIENT" --confdir "$1" get --handle "$handle" 2>>"$KT_WORK/get.log")" = "$value" ] ||
        { echo "# wrong value for $handle via $(basename "$1")"; missing=$((missing + 1)); }
    fi
  done <"$snapshot"
  [ "$missing" -eq 0 ]
}

for i in 1 2 3 4 5; do put "key$i" "secret number $i" || not_ok "put key$i" "$(tail -n 2 "$KT_WORK/put.log")"; done
check "keys written through the pair read back from the active" all_keys_on "$on_active"
check "... and from the passive" all_keys_on "$on_passive"

# ---- the hourly backup --------------------------------------------------------------------------
check "crond runs with the hourly backup entry" \
  S kt01 "pidof crond >/dev/null && grep -q '^0 \* \* \* \* /usr/sbin/keytrustee-backup-hourly' /etc/crontabs/root"
"$KT_BIN/ktadmin" backup-key generate --output "$KT_WORK/backup-key" >/dev/null 2>&1 ||
  not_ok "ktadmin backup-key generate on this machine"
backup_on() {  # backup_on NAME: the cron job's script, 11 times: 10 backups kept, the newest verifies
  local file
  # shellcheck disable=SC2016  # expanded on the VM
  S "$1" 'cat >/root/backup-recipient.pub' <"$KT_WORK/backup-key/keytrustee-backup.pub" &&
    S "$1" 'echo "ARGS=\"--recipient /root/backup-recipient.pub\"" >/etc/sysconfig/keytrustee-backup &&
            for i in 1 2 3 4 5 6 7 8 9 10 11; do keytrustee-backup-hourly || exit 1; done &&
            [ "$(ls /var/lib/keytrustee/backups/*.ktbackup | wc -l)" -eq 10 ]' || return 1
  file=$(S "$1" 'ls /var/lib/keytrustee/backups/*.ktbackup | tail -n 1') || return 1
  S "$1" "cat $file" >"$KT_WORK/$1.ktbackup" &&
    "$KT_BIN/ktadmin" backup verify "$KT_WORK/$1.ktbackup" --secret-key "$KT_WORK/backup-key/keytrustee-backup.key" >"$KT_WORK/verify-$1.log" 2>&1
}
check "the hourly backup runs on the active, keeps 10, and the newest verifies here" backup_on kt01
check "... and on the passive" backup_on kt02

mem_used() {  # MiB in use in the guest: total - available
  S "$1" "free -k | awk '/^Mem:/ { printf \"%d MiB of %d MiB\", (\$2 - \$7) / 1024, \$2 / 1024 }'"
}
echo "# measured: guest memory in use with both services running: kt01 $(mem_used kt01), kt02 $(mem_used kt02) (-m 128)"

# ---- partition ----------------------------------------------------------------------------------
"$VM" monitor kt01 'set_link link off' >/dev/null
sleep 1
if put part1 "during the partition"; then not_ok "writes are refused while the link is down"
else ok "writes are refused while the link is down"; fi
check "reads work on the active during the partition" all_keys_on "$on_active"
check "reads work on the passive during the partition" all_keys_on "$on_passive"
"$VM" monitor kt01 'set_link link on' >/dev/null
healed=no
for i in $(seq 1 60); do
  if put "healed$i" "after the partition $i"; then healed=yes; break; fi
  sleep 1
done
check "writes resume once the link is back" test "$healed" = yes
check "the pair is in sync again" wait_in_sync

# ---- power cuts while writing: the passive, then the active --------------------------------------
writer() {  # writes w<N>-<i> until $KT_WORK/stop-<N> exists (at most 600 tries, 5 minutes)
  local deadline=$((SECONDS + 300))
  for i in $(seq 1 600); do
    [ -e "$KT_WORK/stop-$1" ] && break
    [ "$SECONDS" -lt "$deadline" ] || break
    put "w$1-$i" "value $1 $i" || sleep 0.2
  done
}
wait_https() {  # wait_https PORT: until keytrusteed serves reads through the forwarded port (120 s)
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null --max-time 2 --cacert "$KT_WORK/ca.pem" "https://127.0.0.1:$1/v1/health" && return 0
    sleep 0.2
  done
  return 1
}
restart_vm() {  # restart_vm NAME: boot it again after a power cut; sets boot_seconds (to HTTPS)
  local started port
  started=$(now)
  "$VM" start "$1" || return 1
  track
  port=KT${1#kt}_HTTPS
  "$VM" wait "$1" && wait_https "${!port}" || return 1
  boot_seconds=$(elapsed "$started")
}
acks() { wc -l <"$acked"; }
wait_acks_above() {  # wait_acks_above N: until more than N writes were acknowledged (60 s)
  for _ in $(seq 1 300); do [ "$(acks)" -gt "$1" ] && return 0; sleep 0.2; done
  return 1
}
stop_writer() {  # stop_writer N: asks writer N to stop and waits for it (20 s, then TERM)
  touch "$KT_WORK/stop-$1"
  for _ in $(seq 1 200); do kt_alive "writer$1" || break; sleep 0.1; done
  kt_stop "writer$1" TERM >/dev/null 2>&1 || true
}

# One cycle: cut the passive's power while writing, bring it back; then the same for the active.
# make test runs one cycle; make check-long (KT_LONG=1) runs five.
power_cut_cycle() {
  local cycle=$1 tag="" start_acks cut_at after
  [ "$KT_CYCLES" -gt 1 ] && tag=" [cycle $cycle]"
  local w1=$((2 * cycle - 1)) w2=$((2 * cycle))

  start_acks=$(acks)
  kt_start "writer$w1" writer "$w1"
  wait_acks_above "$((start_acks + 5))" || true
  sleep 3   # cut in the middle of a stream of writes
  "$VM" kill kt02
  cut_at=$(acks)
  sleep 2
  if restart_vm kt02; then
    [ -n "${boot_to_https:-}" ] || boot_to_https=$boot_seconds
    ok "the passive boots again after a power cut (HTTPS after ${boot_seconds}s)$tag"
  else
    not_ok "the passive boots again after a power cut$tag"
  fi
  check "the passive rejoins (in sync)$tag" wait_in_sync
  check "writes go on after the passive came back$tag" wait_acks_above "$(acks)"
  stop_writer "$w1"
  after=$(acks)
  echo "# writer $w1: $((cut_at - start_acks)) writes acknowledged before the cut of the passive, $((after - start_acks)) in all"
  check "every acknowledged key is on the active$tag" all_keys_on "$on_active"
  check "every acknowledged key is on the passive$tag" all_keys_on "$on_passive"

  start_acks=$(acks)
  kt_start "writer$w2" writer "$w2"
  wait_acks_above "$((start_acks + 5))" || true
  sleep 3
  "$VM" kill kt01
  cut_at=$(acks)
  sleep 1
  check "reads go on through the pair client while the active is down$tag" all_keys_on "$pair_client"
  check "... and on the passive$tag" all_keys_on "$on_passive"
  if put "down$cycle" "with the active down"; then not_ok "writes are refused while the active is down$tag"
  else ok "writes are refused while the active is down$tag"; fi
  if restart_vm kt01; then ok "the active boots again after a power cut (HTTPS after ${boot_seconds}s)$tag"
  else not_ok "the active boots again after a power cut$tag"; fi
  check "the pair is in sync again$tag" wait_in_sync
  check "writes go on after the active came back$tag" wait_acks_above "$(acks)"
  stop_writer "$w2"
  after=$(acks)
  echo "# writer $w2: $((cut_at - start_acks)) writes acknowledged before the cut of the active, $((after - start_acks)) in all"
  check "every acknowledged key is on the active$tag" all_keys_on "$on_active"
  check "every acknowledged key is on the passive$tag" all_keys_on "$on_passive"
}

KT_CYCLES=1
[ -n "${KT_LONG:-}" ] && KT_CYCLES=5
for cycle in $(seq 1 "$KT_CYCLES"); do power_cut_cycle "$cycle"; done
echo "# measured: boot to HTTPS after a power cut: ${boot_to_https:-?}s"

# ---- reboot both --------------------------------------------------------------------------------
"$VM" reboot kt01 >"$KT_WORK/reboot-kt01.log" 2>&1 &
reboot1=$!
"$VM" reboot kt02 >"$KT_WORK/reboot-kt02.log" 2>&1 &
reboot2=$!
rebooted=yes
wait "$reboot1" || rebooted=no
wait "$reboot2" || rebooted=no
check "both VMs reboot" test "$rebooted" = yes
both_https() { wait_https "$KT01_HTTPS" && wait_https "$KT02_HTTPS"; }
check "after the reboot both serve HTTPS again by themselves" both_https
check "the pair comes back in sync by itself" wait_in_sync
check "every key is on the active after the reboot" all_keys_on "$on_active"
check "every key is on the passive after the reboot" all_keys_on "$on_passive"
check "writes work after the reboot" put after-reboot "written after the reboot"

# ---- clean poweroff -----------------------------------------------------------------------------
"$VM" stop >"$KT_WORK/stop.log" 2>&1
powered_off() {
  ! grep -q killed "$KT_WORK/stop.log" && grep -q "kt01 powered off" "$KT_WORK/stop.log" &&
    grep -q "kt02 powered off" "$KT_WORK/stop.log"
}
check "both VMs power off cleanly (no kill needed)" powered_off
clean_fs() { /sbin/dumpe2fs -h "$1" 2>/dev/null | grep -E '^Filesystem (state|features):' >"$KT_WORK/fs.txt" &&
  grep -q 'state: *clean' "$KT_WORK/fs.txt" && ! grep -q needs_recovery "$KT_WORK/fs.txt"; }
both_clean() { clean_fs "$KT_VM_DIR/kt01/data.img" && clean_fs "$KT_VM_DIR/kt02/data.img"; }
check "the data disks were unmounted cleanly before the power went" both_clean

echo "# measured: image $((image_bytes / 1024)) KiB; pair boot to SSH ${boot_time}s; boot to HTTPS after a power cut ${boot_to_https:-?}s"
kt_finish
