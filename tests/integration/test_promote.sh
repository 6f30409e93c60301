#!/usr/bin/env bash
# test_promote.sh — node recovery by promotion, and a planned switchover, on a real pair set up by
# the seed's procedure (tests/lib/pair.sh: keytrustee01 on 127.0.0.11 active, keytrustee02 on
# 127.0.0.12 passive, synchronous replication):
#   1. `ktadmin promote` is refused on the active, and on the passive while the active answers
#      (with the reason and the way out); nothing changes;
#   2. the active is killed (kill -9) while a client writes, a copy of its home is kept, its home is
#      destroyed; reads go on from the passive; the passive is promoted (new epoch) and holds every
#      key ever acknowledged; writes go to it;
#   3. the old active started again from the copy of its old home is fenced by the new epoch: a
#      write to it is refused (503, the reason says fenced), and appears on no node;
#   4. the old host is rebuilt as the passive (init-slave --master NEWACTIVE, the seed's steps),
#      synchronous replication is enabled on the new active: every acknowledged key is on both
#      nodes, byte for byte; a client that knows both URLs writes through the new passive's 503
#      pointer;
#   5. `ktadmin switchover` while a client writes continuously: roles swap (status on both, a new
#      epoch), every acknowledged write is on both nodes exactly once, writes resume on the new
#      active;
#   6. `ktadmin promote --force` while the active runs: the running old active is fenced within a
#      second and refuses writes; a client with both URLs is sent on to the new active.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pair.sh"

KTADMIN=$KT_BIN/ktadmin
KTCLIENT=$KT_BIN/ktclient

pair_setup_with_org
secret=$PAIR_ORG_SECRET
client=$KT_WORK/client
pair_register_client "$client"

# Client directories that talk to one node only (same client key).
one_node_client() {
  local dir=$KT_WORK/only_$1 url=$2
  mkdir -p "$dir" && chmod 700 "$dir"
  cp -p "$client/client.key" "$client/server-ca.pem" "$dir/"
  grep -v '^server\|^passive_server' "$client/client.conf" >"$dir/client.conf"
  echo "server = $url" >>"$dir/client.conf"
  chmod 600 "$dir/client.conf"
}
one_node_client a "$A_URL"
one_node_client b "$B_URL"
# The CA file must know the rebuilt node's new self-signed certificate: refreshed in part 4.
refresh_ca() {
  cat "$A_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" "$B_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" >"$KT_WORK/pair-ca.pem"
  local dir
  for dir in "$client" "$KT_WORK/only_a" "$KT_WORK/only_b"; do cp "$KT_WORK/pair-ca.pem" "$dir/server-ca.pem"; done
}

# put_keys NAME...: random keys stored under those handles; their bytes kept in $KT_WORK/keys/NAME.
mkdir -p "$KT_WORK/keys"
put_keys() {
  local name
  for name in "$@"; do
    head -c 1000 /dev/urandom >"$KT_WORK/keys/$name"
    "$KTCLIENT" --confdir "$client" put --handle "$name" --file "$KT_WORK/keys/$name" >/dev/null 2>>"$KT_WORK/put.err" || return 1
    echo "$name" >>"$KT_WORK/acknowledged"
  done
}
# every_key_on NODE: every acknowledged key, read from that node alone, equals what was put.
every_key_on() {
  local name missing=0
  while read -r name; do
    if ! "$KTCLIENT" --confdir "$KT_WORK/only_$1" get --handle "$name" >"$KT_WORK/got.bin" 2>>"$KT_WORK/get.err" ||
       ! cmp -s "$KT_WORK/keys/$name" "$KT_WORK/got.bin"; then
      echo "#   $name missing or different on $1"; missing=$((missing + 1))
    fi
  done <"$KT_WORK/acknowledged"
  [ "$missing" -eq 0 ]
}
# absent_on NODE HANDLE: the node answers "not found" (exit 4) for the handle.
absent_on() {
  "$KTCLIENT" --confdir "$KT_WORK/only_$1" get --handle "$2" >/dev/null 2>&1
  [ $? -eq 4 ]
}
# each_once NODE: every acknowledged handle is listed exactly once on the node.
each_once() {
  "$KTCLIENT" --confdir "$KT_WORK/only_$1" list >"$KT_WORK/list_$1.out" 2>>"$KT_WORK/get.err" || return 1
  python3 - "$KT_WORK/list_$1.out" "$KT_WORK/acknowledged" <<'EOF'
import collections, sys
listed = collections.Counter(line.split("\t")[1] for line in open(sys.argv[1]) if "\t" in line)
bad = [h for h in (l.strip() for l in open(sys.argv[2])) if h and listed[h] != 1]
for h in bad[:5]:
    print("#   %s listed %d times" % (h, listed[h]))
sys.exit(1 if bad else 0)
EOF
}
role_is() { [ "$(pair_status_field "$1" role)" = "$2" ]; }
epoch_of() { pair_status_field "$1" replication.epoch; }

# A loop of writes through the client that knows both URLs: each acknowledged handle goes to
# $KT_WORK/acknowledged, each refusal is counted in $KT_WORK/NAME.refused.
start_writer() {
  local name=$1
  rm -f "$KT_WORK/$name.stop"
  kt_start "$name" bash -c "
    i=0
    while [ ! -e '$KT_WORK/$name.stop' ]; do
      i=\$((i + 1))
      head -c 100 /dev/urandom >'$KT_WORK/keys/$name-'\$i
      if '$KTCLIENT' --confdir '$client' put --handle '$name-'\$i --file '$KT_WORK/keys/$name-'\$i >/dev/null 2>>'$KT_WORK/$name.err'
      then echo '$name-'\$i >>'$KT_WORK/acknowledged'; echo ok >>'$KT_WORK/$name.results'
      else echo refused >>'$KT_WORK/$name.results'; fi
    done"
}
stop_writer() {
  touch "$KT_WORK/$1.stop"
  for _ in $(seq 1 150); do kt_alive "$1" || break; sleep 0.1; done
  kt_stop "$1"
}
count_of() { grep -c "^$2\$" "$KT_WORK/$1.results" 2>/dev/null || true; }

# ---- 1. promote is refused where it would make two actives ----------------------------------

check "keys are put on the healthy pair" put_keys k1 k2 k3
on_node a "$KTADMIN" promote >"$KT_WORK/promote_a.out" 2>&1
check "promote on the active fails" test $? -eq 1
check "and says only a passive can be promoted" grep -q "only a passive can be promoted" "$KT_WORK/promote_a.out"
on_node b "$KTADMIN" promote >"$KT_WORK/promote_b.out" 2>&1
check "promote on the passive fails while the active answers" test $? -eq 1
check "and names the active, switchover and --force" \
  bash -c "grep -q 'the active at $A_ADDRESS:$REPL_PORT still answers' '$KT_WORK/promote_b.out' &&
           grep -q 'switchover' '$KT_WORK/promote_b.out' && grep -q -- '--force' '$KT_WORK/promote_b.out'"
sed 's/^/#   /' "$KT_WORK/promote_b.out"
check "nothing changed: keytrustee01 is still the active" role_is a active
check "keytrustee02 still the passive, in sync" pair_wait_state b in_sync
epoch_before=$(epoch_of b)

# ---- 2. the active is lost; the passive is promoted -----------------------------------------

start_writer loop1
sleep 1.5
pair_stop a db KILL
pair_stop a api KILL
sleep 0.5
stop_writer loop1
echo "# $(count_of loop1 ok) writes acknowledged before and $(count_of loop1 refused) refused after the kill"
check "writes were acknowledged before the kill" test "$(count_of loop1 ok)" -gt 0
# The old active's home as it was when it died: started again in part 3.
cp -a "$A_HOME" "$KT_WORK/stale_home"
rm -rf "$A_HOME"
check "the active's home is gone" test ! -e "$A_HOME"
check "reads go on from the passive for a client with both URLs" \
  bash -c "'$KTCLIENT' --confdir '$client' get --handle k1 | cmp -s - '$KT_WORK/keys/k1'"
on_node b "$KTADMIN" promote >"$KT_WORK/promote.out" 2>&1
check "ktadmin promote on the passive succeeds once the active is gone" test $? -eq 0
sed 's/^/#   /' "$KT_WORK/promote.out"
check "keytrustee02 is now the active" role_is b active
epoch_new=$(epoch_of b)
check "under a new epoch ($epoch_before -> $epoch_new)" test "$epoch_new" -eq $((epoch_before + 1))
check "promote says what to do next" grep -q "init-slave" "$KT_WORK/promote.out"
check "the promoted node holds every acknowledged key" every_key_on b
check "a client with both URLs writes to the new active (the old one refuses connections)" \
  put_keys p1 p2 p3
on_node b "$KTADMIN" promote >"$KT_WORK/promote_again.out" 2>&1
check "promote on the new active is refused" test $? -eq 1

# ---- 3. the old active comes back with its old home: fenced -------------------------------------

STALE=$KT_WORK/stale_home
rm -f "$STALE/run/keytrustee-db.sock"
KEYTRUSTEE_HOME=$STALE kt_start stale_db "$KT_BIN/keytrustee-db" --foreground --pg-rootdir "$STALE/db"
kt_wait_file "$STALE/run/keytrustee-db.sock"
KEYTRUSTEE_HOME=$STALE kt_start stale_api "$KT_BIN/keytrusteed" --foreground
kt_wait_port "$A_ADDRESS" "$HTTPS_PORT"
stale_state() {
  KEYTRUSTEE_HOME=$STALE "$KTADMIN" status --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"]["state"])' 2>/dev/null
}
fenced=no
for _ in $(seq 1 100); do [ "$(stale_state)" = fenced ] && { fenced=yes; break; }; sleep 0.1; done
check "the old active, started from its old home, is fenced by the new epoch" test "$fenced" = yes
"$KTCLIENT" --confdir "$KT_WORK/only_a" put --handle stale1 --file "$KT_WORK/keys/k1" >/dev/null 2>"$KT_WORK/stale_put.err"
check "a write to it is refused (exit 3)" test $? -eq 3
check "ktclient says the node is fenced" grep -q "is fenced: another node was promoted" "$KT_WORK/stale_put.err"
curl -s --cacert "$STALE/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" -o "$KT_WORK/stale_health.json" -w '%{http_code}' \
  "https://$A_ADDRESS:$HTTPS_PORT/v1/health?write=1" >"$KT_WORK/stale_health.code" 2>/dev/null
check "it answers 503 to writes" test "$(cat "$KT_WORK/stale_health.code")" = 503
check "and says why: fenced" grep -q '"reason":"fenced"' "$KT_WORK/stale_health.json"
sed 's/^/#   /' "$KT_WORK/stale_put.err"
KEYTRUSTEE_HOME=$STALE "$KT_BIN/keytrustee-orgtool" add -n stale-org -c x@example.com >"$KT_WORK/stale_org.out" 2>&1
check "an operator write to it is refused too" test $? -ne 0
check "with a clear reason: fenced, a newer epoch exists" \
  bash -c "KEYTRUSTEE_HOME='$STALE' '$KTADMIN' status --json | grep -q 'fenced: a node with a newer epoch exists'"
check "its refused key is not on it" absent_on a stale1
kt_stop stale_api KILL
kt_stop stale_db KILL
check "nor on the new active" absent_on b stale1
check "nor its org" bash -c "! on_node b '$KT_BIN/keytrustee-orgtool' list 2>/dev/null | grep -q stale-org"

# ---- 4. the old host is rebuilt as the passive ----------------------------------------------

mkdir -p "$A_HOME" && chmod 700 "$A_HOME"
rsync -a --exclude .ssl "$B_HOME/.keytrustee" "$A_HOME/"
on_node a "$KTADMIN" init-slave --master "$B_ADDRESS" --pg-port "$REPL_PORT" \
  --pg-rootdir "$A_HOME/db" --no-import-key --no-start >"$KT_WORK/rebuild.out" 2>&1
check "init-slave --master NEWACTIVE copies the new active's database" test $? -eq 0
pair_start_db a
on_node a "$KTADMIN" init --external-address "$A_ADDRESS" --listen "$A_ADDRESS" \
  --port "$HTTPS_PORT" >"$KT_WORK/rebuild_init.out" 2>&1
pair_start_api a
refresh_ca
on_node b "$KTADMIN" enable-synchronous-replication --pg-rootdir "$B_HOME/db" >"$KT_WORK/sync_b.out" 2>&1
check "synchronous replication is enabled on the new active" test $? -eq 0
check "the rebuilt passive is in sync" pair_wait_state a in_sync
check "the new active is in sync" pair_wait_state b in_sync
check "status: keytrustee01 is the passive" role_is a passive
check "at the new epoch" test "$(epoch_of a)" = "$epoch_new"
check "status: keytrustee02 is the active, synchronous" \
  test "$(pair_status_field b replication.synchronous)" = True
check "every acknowledged key is on the new active" every_key_on b
check "every acknowledged key is on the rebuilt passive" every_key_on a
check "the fenced node's write is on neither" bash -c "$(declare -f absent_on); KT_WORK='$KT_WORK' KTCLIENT='$KTCLIENT'; absent_on a stale1 && absent_on b stale1"
check "a client with both URLs writes through the passive's pointer" put_keys q1 q2 q3
check "and those keys are on both nodes" every_key_on a
every_key_on b >/dev/null

# ---- 5. switchover under a continuous writer ------------------------------------------------

start_writer loop2
sleep 1.5
on_node b "$KTADMIN" switchover --new-active-url "$A_URL" >"$KT_WORK/switchover.out" 2>&1
switch_status=$?
sed 's/^/#   /' "$KT_WORK/switchover.out"
check "ktadmin switchover on the active succeeds" test "$switch_status" -eq 0
acked_at_switch=$(count_of loop2 ok)
sleep 2
stop_writer loop2
echo "# switchover under load: $(count_of loop2 ok) writes acknowledged, $(count_of loop2 refused) refused (during the hand-over)"
sort "$KT_WORK/loop2.err" 2>/dev/null | uniq -c | sed 's/^/#   refused: /' | head -5
check "writes resumed on the new active" test "$(count_of loop2 ok)" -gt "$acked_at_switch"
check "status: keytrustee01 is the active again" role_is a active
check "status: keytrustee02 is its passive" role_is b passive
epoch_switch=$(epoch_of a)
check "under a newer epoch ($epoch_new -> $epoch_switch), on both" \
  bash -c "[ '$epoch_switch' -eq $((epoch_new + 1)) ] && [ \"\$(KEYTRUSTEE_HOME='$B_HOME' '$KTADMIN' status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"replication\"][\"epoch\"])')\" = '$epoch_switch' ]"
check "the pair is in sync again" pair_wait_state b in_sync
check "every acknowledged write is on the new active" every_key_on a
check "and on the new passive" every_key_on b
check "each exactly once on the new active" each_once a
check "each exactly once on the new passive" each_once b
check "writes after the switchover go through" put_keys r1
check "and reach both nodes" bash -c "'$KTCLIENT' --confdir '$KT_WORK/only_b' get --handle r1 | cmp -s - '$KT_WORK/keys/r1'"
switch_back=$(on_node b "$KTADMIN" switchover --new-active-url "$A_URL" 2>&1)
check "switchover on the passive is refused" bash -c "echo '$switch_back' | grep -q 'run switchover on the active'"

# ---- 6. promote --force while the active runs: the old active is fenced at once ---------------

on_node b "$KTADMIN" promote --force >"$KT_WORK/promote_force.out" 2>&1
check "promote --force on the passive succeeds while the active runs" test $? -eq 0
check "keytrustee02 is the active" role_is b active
check "under a newer epoch" test "$(epoch_of b)" -eq $((epoch_switch + 1))
check "the running old active is fenced" pair_wait_state a fenced
check "which refuses writes as fenced" \
  bash -c "'$KTCLIENT' --confdir '$KT_WORK/only_a' put --handle forced1 --file '$KT_WORK/keys/k1' 2>&1 >/dev/null | grep -q 'is fenced'"
check "a client with both URLs is sent on to the new active" put_keys s1
check "every acknowledged key is on the new active" every_key_on b
check "the fenced node's refused write is on neither" bash -c "$(declare -f absent_on); KT_WORK='$KT_WORK' KTCLIENT='$KTCLIENT'; absent_on a forced1 && absent_on b forced1"

kt_finish
