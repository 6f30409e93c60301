#!/usr/bin/env bash
# End to end over real TLS, the way an operator and a client would do it: ktadmin init, db
# bootstrap, both services, an org, two registered clients, deposits put and read back
# byte-identical, isolation between clients, disabled client and wrong secret refused, the
# fingerprint over curl, and no deposit plaintext anywhere in the database files.
source "$(dirname "$0")/../lib/common.sh"

home=$KT_WORK/home
port=$(kt_free_port)
address=127.0.0.1
url=https://$address:$port
export KEYTRUSTEE_HOME=$home

init_output=$("$KT_BIN/ktadmin" init --external-address $address --listen $address --port "$port" 2>&1)
fingerprint=$(sed -n 's/^Initialized directory for \([0-9A-F]\{40\}\)$/\1/p' <<<"$init_output")
check "ktadmin init prints the server fingerprint" test -n "$fingerprint"
check "ktadmin db --bootstrap" "$KT_BIN/ktadmin" db --bootstrap

kt_start db "$KT_BIN/keytrustee-db" --foreground
kt_wait_file "$home/run/keytrustee-db.sock"
kt_start api "$KT_BIN/keytrusteed" --foreground
kt_wait_port $address "$port" || not_ok "keytrusteed listens on $port"

ca=$home/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem
served=$(curl -sS --cacert "$ca" "$url/?a=fingerprint" | tr -d '\n')
check "curl ?a=fingerprint answers the fingerprint init printed" test "$served" = "$fingerprint"
served_insecure=$(curl -sSk "$url/?a=fingerprint" | tr -d '\n')
check "curl -k ?a=fingerprint" test "$served_insecure" = "$fingerprint"

"$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null
"$KT_BIN/keytrustee-orgtool" list >"$KT_WORK/orgs.json"
secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acme"]["auth_secret"])' "$KT_WORK/orgs.json")
check "org auth secret is base64 of 16 bytes" \
  python3 -c 'import base64,sys; assert len(base64.b64decode(sys.argv[1], validate=True)) == 16' "$secret"

c1=$KT_WORK/client1
c2=$KT_WORK/client2
check "register client 1 with the org secret" \
  "$KT_BIN/ktclient" --confdir "$c1" register --server "$url" --org acme --auth "$secret" --clientname one --cacert "$ca"
check "register client 2" \
  "$KT_BIN/ktclient" --confdir "$c2" register --server "$url" --org acme --auth "$secret" --clientname two --cacert "$ca"
check "client key file is 0600" test "$(stat -c %a "$c1/client.key")" = 600
check "client directory is 0700" test "$(stat -c %a "$c1")" = 700

"$KT_BIN/ktclient" --confdir "$KT_WORK/bad" register --server "$url" --org acme --auth "AAAAAAAAAAAAAAAAAAAAAA==" --cacert "$ca" 2>"$KT_WORK/bad.err"
status=$?
check "a wrong auth secret is refused with exit 5" test "$status" -eq 5
check "the wrong-secret refusal says why" grep -qi "secret\|refused\|forbidden" "$KT_WORK/bad.err"

# Binary content with NUL bytes and every byte value, plus a marker to grep the database for.
python3 -c 'import os,sys; sys.stdout.buffer.write(b"PLAINTEXT-MARKER-7f3a9c" + bytes(range(256)) + os.urandom(4000))' >"$KT_WORK/secret.bin"
uuid=$("$KT_BIN/ktclient" --confdir "$c1" put --handle disk1 --file "$KT_WORK/secret.bin" --description "root volume")
check "put prints a uuid" grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' <<<"$uuid"
"$KT_BIN/ktclient" --confdir "$c1" get --uuid "$uuid" >"$KT_WORK/by-uuid.bin"
check "get by uuid is byte-identical" cmp -s "$KT_WORK/secret.bin" "$KT_WORK/by-uuid.bin"
"$KT_BIN/ktclient" --confdir "$c1" get --handle disk1 >"$KT_WORK/by-handle.bin"
check "get by handle is byte-identical" cmp -s "$KT_WORK/secret.bin" "$KT_WORK/by-handle.bin"
printf 'from stdin' | "$KT_BIN/ktclient" --confdir "$c1" put --handle disk2 >/dev/null
check "put from stdin, get back" test "$("$KT_BIN/ktclient" --confdir "$c1" get --handle disk2)" = "from stdin"

"$KT_BIN/ktclient" --confdir "$c1" list >"$KT_WORK/list.txt"
check "list shows both handles" grep -q disk1 "$KT_WORK/list.txt"
"$KT_BIN/ktclient" --confdir "$c1" list --json >"$KT_WORK/list.json"
check "list --json is JSON holding the uuid" python3 -c '
import json,sys
data = json.load(open(sys.argv[1]))
items = data["deposits"] if isinstance(data, dict) else data
assert any(d["uuid"] == sys.argv[2] for d in items)' "$KT_WORK/list.json" "$uuid"

"$KT_BIN/ktclient" --confdir "$c2" get --uuid "$uuid" >/dev/null 2>&1
check "another client cannot read the deposit (exit 4)" test $? -eq 4
"$KT_BIN/ktclient" --confdir "$c2" list >"$KT_WORK/list2.txt"
check "another client does not list it" bash -c "! grep -q disk1 '$KT_WORK/list2.txt'"

"$KT_BIN/ktclient" --confdir "$c1" put --handle disk1 --file "$KT_WORK/secret.bin" >/dev/null 2>&1
check "a second deposit under the same handle is refused" test $? -ne 0

fp1=$("$KT_BIN/ktclient" --confdir "$c1" fingerprint)
check "disable-client" "$KT_BIN/keytrustee-orgtool" disable-client --fingerprint "$fp1"
"$KT_BIN/ktclient" --confdir "$c1" get --uuid "$uuid" >/dev/null 2>&1
check "a disabled client is refused (exit 5)" test $? -eq 5
check "enable-client" "$KT_BIN/keytrustee-orgtool" enable-client --fingerprint "$fp1"
"$KT_BIN/ktclient" --confdir "$c1" get --uuid "$uuid" >"$KT_WORK/again.bin"
check "a re-enabled client reads again" cmp -s "$KT_WORK/secret.bin" "$KT_WORK/again.bin"

uuid2=$("$KT_BIN/ktclient" --confdir "$c1" list --json | python3 -c '
import json,sys
data = json.load(sys.stdin)
items = data["deposits"] if isinstance(data, dict) else data
print([d["uuid"] for d in items if d["handle"] == "disk2"][0])')
check "delete" "$KT_BIN/ktclient" --confdir "$c1" delete --uuid "$uuid2"
"$KT_BIN/ktclient" --confdir "$c1" get --uuid "$uuid2" >/dev/null 2>&1
check "a deleted deposit is gone (exit 4)" test $? -eq 4

# The database must hold ciphertext only. Stop the services so everything is on disk.
kt_stop api; kt_stop db
matches=$(cat "$home"/db/keytrustee.db* 2>/dev/null | grep -c -a "PLAINTEXT-MARKER-7f3a9c")
check "no deposit plaintext in the database or WAL files" test "$matches" -eq 0
check "the database file exists and is not empty" test -s "$home/db/keytrustee.db"

kt_finish
