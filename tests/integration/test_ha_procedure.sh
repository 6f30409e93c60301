#!/usr/bin/env bash
# The seed's command-line HA procedure, as an operator types it, with two homes on 127.0.0.11
# (keytrustee01, active) and 127.0.0.12 (keytrustee02, passive); then what the pair promises:
# a key put on the active is readable from the passive, the passive refuses writes with a 503
# naming the active, a node lost means writes refused and reads going on, and a node that returns
# catches up by itself with nothing refused ever appearing.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pair.sh"

check "the seed's procedure runs as written" pair_setup
check "the passive kept the active's server keys (same fingerprint)" \
  test "$(grep -o '[0-9A-F]\{40\}' "$KT_WORK/init_a.out")" = "$(grep -o '[0-9A-F]\{40\}' "$KT_WORK/init_b.out")"
check "init-slave says where writers go" grep -q "$A_URL" "$KT_WORK/init_slave_b.out"
check "the active reports in_sync" pair_wait_state a in_sync
check "the passive reports in_sync" pair_wait_state b in_sync
check "the active is synchronous" test "$(pair_status_field a replication.synchronous)" = True
check "ktadmin status exits 0 on both nodes" bash -c \
  "KEYTRUSTEE_HOME=$A_HOME $KT_BIN/ktadmin status >/dev/null && KEYTRUSTEE_HOME=$B_HOME $KT_BIN/ktadmin status >/dev/null"

# An org made on the active (keytrustee-orgtool over the admin socket) is on the passive.
on_node a "$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null
on_node b "$KT_BIN/keytrustee-orgtool" list >"$KT_WORK/orgs_b.json" 2>&1
check "an org added on the active is listed on the passive" grep -q '"acme"' "$KT_WORK/orgs_b.json"
secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acme"]["auth_secret"])' "$KT_WORK/orgs_b.json")
on_node b "$KT_BIN/keytrustee-orgtool" add -n other -c x@example.com >/dev/null 2>"$KT_WORK/orgtool_b.err"
check "orgtool on the passive is refused with exit 3" test $? -eq 3
check "and told to use the active" grep -qi "passive" "$KT_WORK/orgtool_b.err"

# Both certificates: clients pin the CA of each node; here the two self-signed certificates.
cat "$A_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" "$B_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" >"$KT_WORK/pair-ca.pem"
client=$KT_WORK/client
check "a client registers through the passive (sent on to the active)" \
  "$KT_BIN/ktclient" --confdir "$client" register --server "$B_URL" --passive-server "$A_URL" \
  --org acme --auth "$secret" --clientname host1 --cacert "$KT_WORK/pair-ca.pem" >/dev/null
head -c 3000 /dev/urandom >"$KT_WORK/key1.bin"
uuid=$("$KT_BIN/ktclient" --confdir "$client" put --handle disk1 --file "$KT_WORK/key1.bin")
check "a key is put (through the passive's redirect to the active)" test -n "$uuid"

# Read it from each node alone: one client directory per node, each naming only that node.
for node in a b; do
  mkdir -p "$KT_WORK/only_$node"; chmod 700 "$KT_WORK/only_$node"
  cp -p "$client/client.key" "$client/server-ca.pem" "$KT_WORK/only_$node/"
  url=$A_URL; [ $node = b ] && url=$B_URL
  grep -v '^server\|^passive_server' "$client/client.conf" >"$KT_WORK/only_$node/client.conf"
  echo "server = $url" >>"$KT_WORK/only_$node/client.conf"
  chmod 600 "$KT_WORK/only_$node/client.conf"
done
"$KT_BIN/ktclient" --confdir "$KT_WORK/only_b" get --uuid "$uuid" >"$KT_WORK/from_b.bin" 2>"$KT_WORK/from_b.err"
check "the key put on the active is read byte-identical from the passive" cmp -s "$KT_WORK/key1.bin" "$KT_WORK/from_b.bin"
"$KT_BIN/ktclient" --confdir "$KT_WORK/only_a" get --uuid "$uuid" >"$KT_WORK/from_a.bin"
check "and from the active" cmp -s "$KT_WORK/key1.bin" "$KT_WORK/from_a.bin"

"$KT_BIN/ktclient" --confdir "$KT_WORK/only_b" put --handle nope --file "$KT_WORK/key1.bin" >/dev/null 2>"$KT_WORK/put_b.err"
check "a write sent only to the passive is refused with exit 3" test $? -eq 3
check "the refusal names the passive and where the active is" \
  bash -c "grep -qi passive '$KT_WORK/put_b.err' && grep -q '$A_URL' '$KT_WORK/put_b.err'"

# Same content on both nodes once the passive has applied everything (compare a dump of the rows).
dump() { sqlite3 "file:$1/db/keytrustee.db?mode=ro" "select uuid,name,state,hex(auth_box) from orgs order by uuid; select fingerprint,org_uuid,state from clients order by fingerprint; select uuid,client,handle,state,hex(box) from deposits order by uuid;" 2>&1; }
same_content() {
  for _ in $(seq 1 50); do
    [ "$(dump "$A_HOME")" = "$(dump "$B_HOME")" ] && return 0
    sleep 0.1
  done
  return 1
}
check "both databases hold the same rows" same_content
check "the passive's database passes integrity_check" \
  test "$(sqlite3 "file:$B_HOME/db/keytrustee.db?mode=ro" 'pragma integrity_check')" = ok

# The passive is lost (kill -9): writes are refused, reads go on, nothing refused appears later.
pair_stop b db KILL
"$KT_BIN/ktclient" --confdir "$KT_WORK/only_a" put --handle refused1 --file "$KT_WORK/key1.bin" >/dev/null 2>"$KT_WORK/refused.err"
check "with the passive down a new key is refused with exit 3" test $? -eq 3
check "the refusal says the pair is degraded and existing keys still work" grep -qi "existing keys" "$KT_WORK/refused.err"
on_node a "$KT_BIN/keytrustee-orgtool" add -n refusedorg -c x@example.com >/dev/null 2>&1
check "with the passive down a new org is refused (exit 3)" test $? -eq 3
"$KT_BIN/ktclient" --confdir "$KT_WORK/only_a" get --uuid "$uuid" >"$KT_WORK/degraded.bin"
check "with the passive down existing keys are read from the active" cmp -s "$KT_WORK/key1.bin" "$KT_WORK/degraded.bin"
check "the active's status says why it is not writable" \
  bash -c "KEYTRUSTEE_HOME=$A_HOME $KT_BIN/ktadmin status --json | grep -q '\"writable\": false'"
on_node a "$KT_BIN/ktadmin" status >"$KT_WORK/status_degraded.txt" 2>&1
check "ktadmin status on the active exits 1 while the pair is degraded" test $? -eq 1
check "and its health line says so" grep -q "^health: " "$KT_WORK/status_degraded.txt"

# The passive returns: it catches up by itself and writes resume without operator action.
pair_start_db b
check "the returning passive is in sync again" pair_wait_state b in_sync
resumed=
for _ in $(seq 1 50); do
  resumed=$("$KT_BIN/ktclient" --confdir "$KT_WORK/only_a" put --handle after1 --file "$KT_WORK/key1.bin" 2>/dev/null) && break
  sleep 0.1
done
check "writes resume once the passive is back" test -n "$resumed"
check "the refused key appears on neither node" bash -c \
  "! sqlite3 'file:$A_HOME/db/keytrustee.db?mode=ro' \"select handle from deposits\" | grep -q refused1 &&
   ! sqlite3 'file:$B_HOME/db/keytrustee.db?mode=ro' \"select handle from deposits\" | grep -q refused1"
check "the refused org appears on neither node" bash -c \
  "! sqlite3 'file:$A_HOME/db/keytrustee.db?mode=ro' 'select name from orgs' | grep -q refusedorg &&
   ! sqlite3 'file:$B_HOME/db/keytrustee.db?mode=ro' 'select name from orgs' | grep -q refusedorg"
check "after catching up both databases hold the same rows" same_content

# The active is lost (kill -9): the passive goes on serving reads.
pair_stop a db KILL
pair_stop a api KILL
"$KT_BIN/ktclient" --confdir "$KT_WORK/only_b" get --uuid "$uuid" >"$KT_WORK/active_down.bin"
check "with the active down the passive serves existing keys" cmp -s "$KT_WORK/key1.bin" "$KT_WORK/active_down.bin"
"$KT_BIN/ktclient" --confdir "$client" get --handle after1 >/dev/null
check "a client knowing both URLs reads with the active down" test $? -eq 0
pair_start_db a
pair_start_api a
check "the active returns in sync" pair_wait_state a in_sync
check "and takes writes again" bash -c \
  "for i in \$(seq 1 50); do $KT_BIN/ktclient --confdir $KT_WORK/only_a put --handle after2 --file $KT_WORK/key1.bin >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1"
check "in the end both databases hold the same rows" same_content

kt_finish
