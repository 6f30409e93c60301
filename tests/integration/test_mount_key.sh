#!/usr/bin/env bash
# test_mount_key.sh — per-mount-point keys (ktclient mount-key) against a real node over TLS:
# register stores the master key deposit; the same name gives the same key every time, other names
# other keys; --raw is the same key as bytes; the key is BLAKE2b keyed by the master key over
# "keytrustee-mount-key-v1" || 0 || NAME (checked with Python's hashlib, independently of the C
# code); it needs only a read, so it works with the first configured node dead; neither the master
# key nor a mount key is written to the client's disk; the master deposit is protected from
# put and delete; a client without one is told how to create it. Mount keys with a real pair and
# one node down: test_failover.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nodes.sh"

KTCLIENT=$KT_BIN/ktclient
address=127.0.0.1
kt_node_start alpha $address "$(kt_free_port)" || { echo "Bail out! node alpha did not start"; exit 1; }
alpha=$(kt_node_url alpha)
ca=$(kt_node_ca alpha)
secret=$(kt_node_org alpha acme)
dead="https://$address:$(kt_free_port)"

run() {
  "$KTCLIENT" --confdir "$KT_WORK/$1" "${@:2}" >"$KT_WORK/out" 2>"$KT_WORK/err"
  STATUS=$?
}
is_hex_key() { grep -Eqx '[0-9a-f]{64}' "$1"; }

"$KTCLIENT" --confdir "$KT_WORK/c1" register --server "$alpha" --passive-server "$dead" --org acme \
  --auth "$secret" --clientname one --cacert "$ca" >/dev/null 2>"$KT_WORK/err"
check "register (stores the master key too)" test $? -eq 0

run c1 mount-key --name data01
cp "$KT_WORK/out" "$KT_WORK/data01.first"
check "mount-key prints 64 lowercase hex characters" is_hex_key "$KT_WORK/data01.first"
run c1 mount-key --name data01
check "the same name gives the same key" cmp -s "$KT_WORK/out" "$KT_WORK/data01.first"
run c1 mount-key --name data02
check "another name gives another key" bash -c "is_hex() { grep -Eqx '[0-9a-f]{64}' \"\$1\"; }; is_hex '$KT_WORK/out' && ! cmp -s '$KT_WORK/out' '$KT_WORK/data01.first'"
run c1 mount-key --name data01 --raw
check "--raw writes the same key as 32 bytes" \
  test "$(od -An -tx1 -v "$KT_WORK/out" | tr -d ' \n')" = "$(cat "$KT_WORK/data01.first")"
check "--raw writes exactly 32 bytes" test "$(stat -c %s "$KT_WORK/out")" -eq 32

run c1 get --handle ktclient-master-key
cp "$KT_WORK/out" "$KT_WORK/master.bin"
check "the master key deposit holds 32 bytes" test "$(stat -c %s "$KT_WORK/master.bin")" -eq 32
check "the mount key is BLAKE2b(key=master, 'keytrustee-mount-key-v1' 0 NAME), per hashlib" python3 -c '
import hashlib, sys
master = open(sys.argv[1], "rb").read()
expected = hashlib.blake2b(b"keytrustee-mount-key-v1\0data01", key=master, digest_size=32).hexdigest()
sys.exit(0 if open(sys.argv[2]).read().strip() == expected else 1)' "$KT_WORK/master.bin" "$KT_WORK/data01.first"

run c1 mount-key --name "$(printf 'caf\xc3\xa9 / vol 7')"
check "names may hold any printable UTF-8" test "$STATUS" -eq 0
run c1 mount-key --name ""
check "an empty name is a usage error (exit 2)" test "$STATUS" -eq 2
run c1 mount-key --name "$(printf 'a\tb')"
check "a control character is a usage error (exit 2)" test "$STATUS" -eq 2
run c1 mount-key --name "$(head -c 256 /dev/zero | tr '\0' n)"
check "a 256-byte name is a usage error (exit 2)" test "$STATUS" -eq 2
run c1 mount-key
check "--name is required (exit 2)" test "$STATUS" -eq 2

# ---- Nothing secret on disk -----------------------------------------------------------------

check "the master key is not in the confdir" python3 -c '
import os, sys
master = open(sys.argv[1], "rb").read()
key = bytes.fromhex(open(sys.argv[3]).read().strip())
for name in os.listdir(sys.argv[2]):
    data = open(os.path.join(sys.argv[2], name), "rb").read()
    for secret in (master, key, master.hex().encode(), key.hex().encode()):
        if secret in data or secret.upper() in data:
            sys.exit(name + " holds key material")' "$KT_WORK/master.bin" "$KT_WORK/c1" "$KT_WORK/data01.first"
files=$(cd "$KT_WORK/c1" && ls -A | sort | tr '\n' ' ')
check "the confdir holds only key, conf, CA and hint ($files)" \
  bash -c "[ '$files' = 'client.conf client.key client.state server-ca.pem ' ] || [ '$files' = 'client.conf client.key server-ca.pem ' ]"

# ---- Reads only: works with the first configured node dead ----------------------------------

rm -rf "$KT_WORK/c2" && cp -a "$KT_WORK/c1" "$KT_WORK/c2" && rm -f "$KT_WORK/c2/client.state"
sed -i -e "s|^server = .*|server = $dead|" -e "s|^passive_server =.*|passive_server = $alpha|" "$KT_WORK/c2/client.conf"
run c2 mount-key --name data01
check "with the first node dead, mount-key gives the same key from the other" cmp -s "$KT_WORK/out" "$KT_WORK/data01.first"
before=$(curl -sk "$alpha/metrics" | grep -c 'method="POST"')
run c2 mount-key --name brand-new-mount
check "a new mount point's key needs no write" \
  test "$STATUS" -eq 0 -a "$(curl -sk "$alpha/metrics" | grep -c 'method="POST"')" -eq "$before"

# ---- The master deposit is protected --------------------------------------------------------

printf 'x' >"$KT_WORK/x"
run c1 put --handle ktclient-master-key --file "$KT_WORK/x"
check "put under the reserved handle is refused (exit 2)" test "$STATUS" -eq 2
master_uuid=$("$KTCLIENT" --confdir "$KT_WORK/c1" list --search ktclient-master-key | cut -f1)
run c1 delete --uuid "$master_uuid"
check "deleting the master key deposit is refused (exit 2)" test "$STATUS" -eq 2
check "... saying why" grep -q "every mount key" "$KT_WORK/err"
run c1 create-master-key
check "create-master-key refuses to replace an existing master key" test "$STATUS" -eq 1
run c1 mount-key --name data01
check "... which is unchanged" cmp -s "$KT_WORK/out" "$KT_WORK/data01.first"

# ---- A client without a master deposit ------------------------------------------------------
# Delete the deposit behind ktclient's back, with a signed curl request (tests/tools/kt_sign).

mkdir -p "$KT_WORK/signer" && chmod 700 "$KT_WORK/signer"
sed -n 's/^keytrustee-client-key-v1 //p' "$KT_WORK/c1/client.key" >"$KT_WORK/signer/key"
chmod 600 "$KT_WORK/signer/key"
mapfile -t headers < <("$KT_TESTS/kt_sign" headers "$KT_WORK/signer" DELETE "${alpha#https://}" \
    "/v1/deposits/$master_uuid" "")
curl_headers=()
for header in "${headers[@]}"; do curl_headers+=(-H "$header"); done
code=$(curl -s --cacert "$ca" -o /dev/null -w '%{http_code}' -X DELETE "${curl_headers[@]}" "$alpha/v1/deposits/$master_uuid")
check "the master deposit is deleted with a signed curl request" test "$code" = 200
run c1 mount-key --name data01
check "mount-key without a master deposit: exit 4" test "$STATUS" -eq 4
check "... naming create-master-key" grep -q "create-master-key" "$KT_WORK/err"
run c1 create-master-key
check "create-master-key stores a new one" test "$STATUS" -eq 0
run c1 mount-key --name data01
check "... from which mount keys derive again (new ones)" \
  bash -c "grep -Eqx '[0-9a-f]{64}' '$KT_WORK/out' && ! cmp -s '$KT_WORK/out' '$KT_WORK/data01.first'"

kt_finish
