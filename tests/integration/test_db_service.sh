#!/usr/bin/env bash
# test_db_service.sh — keytrustee-db as a process: start-up checks, every admin op over the real
# socket, bad requests (the daemon answers bad_request and keeps serving), concurrent writers
# sharing group commits, the passive role, a second instance, stale sockets, SIGTERM, and
# running detached.
#
# Uses $KT_BIN/keytrustee-db and $KT_BIN/ktadmin (default build/asan/bin) and
# $KT_TESTS/kt_db_call (default build/asan/tests). Prints "ok - name" / "not ok - name" and ends
# with "N passed, M failed".
source "$(dirname "$0")/../lib/common.sh"

DB=$KT_BIN/keytrustee-db
KTADMIN=$KT_BIN/ktadmin
CALL=$KT_TESTS/kt_db_call
export KEYTRUSTEE_HOME=$KT_WORK/home
SOCKET=$KEYTRUSTEE_HOME/run/keytrustee-db.sock
PIDFILE=$KEYTRUSTEE_HOME/run/keytrustee-db.pid

for program in "$DB" "$KTADMIN" "$CALL"; do
  if [ ! -x "$program" ]; then
    not_ok "prerequisites" "$program is missing; run: make SAN=1 all tests"
    kt_finish
  fi
done

# ---- helpers ------------------------------------------------------------------------------------
# Runs that are expected to end by themselves are bounded with timeout(1), so a daemon that wrongly
# keeps running is killed (by its pid, by timeout) instead of hanging the suite.

# verify NAME 'EXPRESSION': passes when the shell expression is true.
verify() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }
# refute NAME CMD...: passes when the command fails.
refute() { local name=$1; shift; if "$@"; then not_ok "$name"; else ok "$name"; fi; }

# call JSON: prints the response line; the exit status is kt_db_call's.
call() { "$CALL" "$1" 2>>"$KT_WORK/calls.err"; }

# expect NAME JSON PATTERN...: the response must contain every fixed-string PATTERN.
expect() {
  local name=$1 request=$2 response pattern
  shift 2
  response=$(call "$request")
  for pattern in "$@"; do
    if ! grep -qF -- "$pattern" <<<"$response"; then
      not_ok "$name" "expected $pattern in: ${response:-(no response)}"
      return 1
    fi
  done
  ok "$name"
}

# field JSON-RESPONSE PATH: prints a value from a response (PATH like deposit.uuid).
field() {
  python3 -c 'import json,sys
value = json.loads(sys.argv[1])
for part in sys.argv[2].split("."):
    value = value[int(part)] if isinstance(value, list) else value[part]
print(value if not isinstance(value, (list, dict)) else json.dumps(value))' "$1" "$2"
}

b64() { python3 -c 'import base64,os,sys; print(base64.b64encode(os.urandom(int(sys.argv[1]))).decode())' "$1"; }

# A public key and its fingerprint (first 20 bytes of BLAKE2b-256, uppercase hex).
new_key() {
  python3 -c 'import base64,hashlib,os
key = os.urandom(32)
print(base64.b64encode(key).decode(), hashlib.blake2b(key, digest_size=32).digest()[:20].hex().upper())'
}

# raw HEX-HEADER BODY: sends bytes straight to the socket, prints the response body (or "closed").
raw() {
  python3 - "$SOCKET" "$1" "$2" <<'PY'
import socket, struct, sys
path, header, body = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
s.connect(path)
s.sendall(header + body)
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
head = exactly(4)
if head is None:
    print("closed")
else:
    print(exactly(struct.unpack(">I", head)[0]).decode())
PY
}

# Starts keytrustee-db in the foreground and waits until it answers (a stale socket file may
# already exist, so the file alone proves nothing).
start_db() {
  kt_start db "$DB" --foreground --log-level debug
  for _ in $(seq 1 200); do
    "$CALL" '{"op":"status"}' >/dev/null 2>&1 && return 0
    kt_alive db || return 1
    sleep 0.05
  done
  return 1
}

# ---- start-up checks ----------------------------------------------------------------------------

mkdir -m 700 "$KEYTRUSTEE_HOME"
output=$(timeout 20 "$DB" --foreground 2>&1); status=$?
if [ $status -eq 1 ] && grep -qF "no database in $KEYTRUSTEE_HOME/db; run: ktadmin db --bootstrap --pg-rootdir $KEYTRUSTEE_HOME/db" <<<"$output"; then
  ok "refuses to start without a database, saying what to run"
else
  not_ok "refuses to start without a database, saying what to run" "status $status: $output"
fi

output=$(timeout 20 "$DB" --bogus 2>&1); status=$?
check "usage error exits 2" [ $status -eq 2 ]

if "$KTADMIN" init --external-address localhost >"$KT_WORK/init.log" 2>&1 &&
   "$KTADMIN" db --bootstrap >"$KT_WORK/bootstrap.log" 2>&1; then
  ok "ktadmin init and db --bootstrap"
else
  not_ok "ktadmin init and db --bootstrap" "$(cat "$KT_WORK/init.log" "$KT_WORK/bootstrap.log")"
  kt_finish
fi

cp "$KEYTRUSTEE_HOME/db/keytrustee-db.conf" "$KT_WORK/db.conf.saved"
printf 'role = standalone\nrole = active\n' >"$KEYTRUSTEE_HOME/db/keytrustee-db.conf"
output=$(timeout 20 "$DB" --foreground 2>&1); status=$?
if [ $status -eq 1 ] && grep -qF "keytrustee-db.conf:2:" <<<"$output"; then
  ok "a bad keytrustee-db.conf is refused naming file:line"
else
  not_ok "a bad keytrustee-db.conf is refused naming file:line" "status $status: $output"
fi
cp "$KT_WORK/db.conf.saved" "$KEYTRUSTEE_HOME/db/keytrustee-db.conf"

if start_db; then ok "starts in the foreground and answers"; else not_ok "starts in the foreground and answers"; kt_finish; fi
check "socket is 0600" [ "$(stat -c %a "$SOCKET")" = 600 ]
check "pid file names the daemon" [ "$(cat "$PIDFILE" 2>/dev/null)" = "$(kt_pid db)" ]

output=$(timeout 20 "$DB" --foreground 2>&1); status=$?
if [ $status -eq 1 ] && grep -q "already running" <<<"$output"; then
  ok "a second instance is refused"
else
  not_ok "a second instance is refused" "status $status: $output"
fi

expect "status" '{"op":"status"}' '"ok":true' '"role":"standalone"' '"writable":true' \
  '"version":"0.1.0"' '"schema_version":' '"orgs":0' \
  '"replication":{' '"state":"standalone"' '"peer_connected":false'

# ---- orgs ---------------------------------------------------------------------------------------

expect "org.add" '{"op":"org.add","name":"acme","contacts":"ops@acme.test","auth_box":""}' \
  '"ok":true' '"name":"acme"' '"contacts":"ops@acme.test"' '"state":"active"' '"auth_box":""'
expect "org.add of an existing name is a conflict" '{"op":"org.add","name":"acme"}' \
  '"ok":false' '"error":"conflict"'
expect "org.add with a bad name is bad_request" '{"op":"org.add","name":"has space"}' \
  '"error":"bad_request"'
auth_box=$(b64 56)
expect "org.set_auth" "{\"op\":\"org.set_auth\",\"name\":\"acme\",\"auth_box\":\"$auth_box\"}" '"ok":true'
expect "org.get shows the auth box" '{"op":"org.get","name":"acme"}' "\"auth_box\":\"$auth_box\""
expect "org.get of an unknown org is not_found" '{"op":"org.get","name":"nobody"}' '"error":"not_found"'
expect "org.set_auth of an unknown org is not_found" '{"op":"org.set_auth","name":"nobody","auth_box":""}' \
  '"error":"not_found"'
call '{"op":"org.add","name":"beta"}' >/dev/null
response=$(call '{"op":"org.list"}')
check "org.list lists orgs by name" [ "$(field "$response" orgs.0.name) $(field "$response" orgs.1.name)" = "acme beta" ]

# ---- clients ------------------------------------------------------------------------------------

read -r public_key fingerprint < <(new_key)
expect "client.add" "{\"op\":\"client.add\",\"fingerprint\":\"$fingerprint\",\"org\":\"acme\",\"name\":\"host1\",\"public_key\":\"$public_key\"}" \
  '"ok":true' "\"fingerprint\":\"$fingerprint\"" '"org":"acme"' '"org_uuid":' "\"public_key\":\"$public_key\""
expect "client.add twice is a conflict" "{\"op\":\"client.add\",\"fingerprint\":\"$fingerprint\",\"org\":\"acme\",\"name\":\"host1\",\"public_key\":\"$public_key\"}" \
  '"error":"conflict"'
read -r other_key other_fingerprint < <(new_key)
expect "client.add with a fingerprint of another key is bad_request" \
  "{\"op\":\"client.add\",\"fingerprint\":\"$fingerprint\",\"org\":\"acme\",\"name\":\"x\",\"public_key\":\"$other_key\"}" \
  '"error":"bad_request"'
expect "client.add to an unknown org is not_found" \
  "{\"op\":\"client.add\",\"fingerprint\":\"$other_fingerprint\",\"org\":\"nobody\",\"name\":\"x\",\"public_key\":\"$other_key\"}" \
  '"error":"not_found"'
expect "client.get" "{\"op\":\"client.get\",\"fingerprint\":\"$fingerprint\"}" '"ok":true' '"name":"host1"'
expect "client.set_state" "{\"op\":\"client.set_state\",\"fingerprint\":\"$fingerprint\",\"state\":\"disabled\"}" '"ok":true'
expect "client.get shows the new state" "{\"op\":\"client.get\",\"fingerprint\":\"$fingerprint\"}" '"state":"disabled"'
expect "client.list" '{"op":"client.list"}' "\"fingerprint\":\"$fingerprint\""
expect "client.list of another org is empty" '{"op":"client.list","org":"beta"}' '"clients":[]'

# ---- deposits -----------------------------------------------------------------------------------

uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
box=$(b64 100)
expect "deposit.put" "{\"op\":\"deposit.put\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\",\"handle\":\"disk1\",\"description\":\"root disk\",\"box\":\"$box\"}" \
  '"ok":true' "\"uuid\":\"$uuid\"" '"handle":"disk1"' '"description":"root disk"'
response=$(call "{\"op\":\"deposit.put\",\"client\":\"$fingerprint\",\"uuid\":\"$(python3 -c 'import uuid; print(uuid.uuid4())')\",\"handle\":\"disk2\",\"box\":\"$box\"}")
verify "deposit.put response carries no box" '[ -n "$response" ] && ! grep -q "\"box\"" <<<"$response"'
expect "deposit.put of an existing handle is a conflict" \
  "{\"op\":\"deposit.put\",\"client\":\"$fingerprint\",\"uuid\":\"$(python3 -c 'import uuid; print(uuid.uuid4())')\",\"handle\":\"disk1\",\"box\":\"$box\"}" \
  '"error":"conflict"'
expect "deposit.get by uuid returns the box" "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\"}" \
  '"ok":true' "\"box\":\"$box\"" '"state":"active"'
expect "deposit.get by handle" "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"handle\":\"disk1\"}" \
  "\"uuid\":\"$uuid\"" "\"box\":\"$box\""
expect "deposit.get with both uuid and handle is bad_request" \
  "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\",\"handle\":\"disk1\"}" '"error":"bad_request"'
expect "deposit.get of another client's deposit is not_found" \
  "{\"op\":\"deposit.get\",\"client\":\"$other_fingerprint\",\"uuid\":\"$uuid\"}" '"error":"not_found"'
expect "client.deposit by uuid returns the client and the box" \
  "{\"op\":\"client.deposit\",\"fingerprint\":\"$fingerprint\",\"uuid\":\"$uuid\"}" \
  '"ok":true' '"name":"host1"' '"org_state":"active"' "\"box\":\"$box\""
expect "client.deposit by handle" \
  "{\"op\":\"client.deposit\",\"fingerprint\":\"$fingerprint\",\"handle\":\"disk1\"}" \
  "\"uuid\":\"$uuid\"" "\"box\":\"$box\""
read -r second_key second_fingerprint < <(new_key)
expect "client.add of a second client" \
  "{\"op\":\"client.add\",\"fingerprint\":\"$second_fingerprint\",\"org\":\"acme\",\"name\":\"host2\",\"public_key\":\"$second_key\"}" \
  '"ok":true'
expect "client.deposit of another client's deposit has the client and a null deposit" \
  "{\"op\":\"client.deposit\",\"fingerprint\":\"$second_fingerprint\",\"uuid\":\"$uuid\"}" \
  '"ok":true' "\"fingerprint\":\"$second_fingerprint\"" '"deposit":null'
expect "client.deposit of an unknown client is not_found" \
  "{\"op\":\"client.deposit\",\"fingerprint\":\"$other_fingerprint\",\"uuid\":\"$uuid\"}" \
  '"error":"not_found"'
expect "client.deposit with both uuid and handle is bad_request" \
  "{\"op\":\"client.deposit\",\"fingerprint\":\"$fingerprint\",\"uuid\":\"$uuid\",\"handle\":\"disk1\"}" \
  '"error":"bad_request"'
response=$(call "{\"op\":\"deposit.list\",\"client\":\"$fingerprint\"}")
verify "deposit.list lists both, without boxes" '[ "$(field "$response" deposits.0.handle) $(field "$response" deposits.1.handle)" = "disk1 disk2" ] && ! grep -q "\"box\"" <<<"$response"'
response=$(call "{\"op\":\"deposit.list\",\"client\":\"$fingerprint\",\"search\":\"root\"}")
check "deposit.list search" [ "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["deposits"]))' "$response")" = 1 ]
expect "deposit.set_state" "{\"op\":\"deposit.set_state\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\",\"state\":\"disabled\"}" '"ok":true'
expect "deposit.get shows the new state" "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\"}" '"state":"disabled"'
expect "deposit.purge" "{\"op\":\"deposit.purge\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\"}" '"ok":true'
expect "deposit.get after purge is not_found" "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\"}" '"error":"not_found"'
expect "deposit.purge twice is not_found" "{\"op\":\"deposit.purge\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\"}" '"error":"not_found"'

# ---- bad requests -------------------------------------------------------------------------------

expect "unknown op" '{"op":"org.delete","name":"acme"}' '"error":"bad_request"' 'unknown op'
expect "no op" '{"name":"acme"}' '"error":"bad_request"'
expect "unknown field" '{"op":"org.get","name":"acme","nmae":"x"}' '"error":"bad_request"' 'nmae'
expect "wrong type" '{"op":"org.get","name":5}' '"error":"bad_request"' 'must be a string'
expect "missing field" '{"op":"client.get"}' '"error":"bad_request"' 'missing'
expect "bad base64" "{\"op\":\"deposit.put\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\",\"handle\":\"h\",\"box\":\"not base64!\"}" \
  '"error":"bad_request"' 'base64'
expect "box too small to be a sealed box" "{\"op\":\"deposit.put\",\"client\":\"$fingerprint\",\"uuid\":\"$uuid\",\"handle\":\"h\",\"box\":\"$(b64 10)\"}" \
  '"error":"bad_request"'
expect "bad uuid" "{\"op\":\"deposit.get\",\"client\":\"$fingerprint\",\"uuid\":\"NOT-A-UUID\"}" '"error":"bad_request"'
expect "bad fingerprint" '{"op":"client.get","fingerprint":"abc"}' '"error":"bad_request"'
expect "bad state" "{\"op\":\"client.set_state\",\"fingerprint\":\"$fingerprint\",\"state\":\"gone\"}" '"error":"bad_request"'
response=$(raw 80000000 "")
check "oversized frame is answered with bad_request" grep -qF '"error":"bad_request"' <<<"$response"
response=$(raw 00000000 "")
check "empty frame is answered with bad_request" grep -qF '"error":"bad_request"' <<<"$response"
response=$(raw 00000005 "[1,2]")
check "a frame that is not an object is answered with bad_request" grep -qF '"error":"bad_request"' <<<"$response"
response=$(raw 00000007 '{"a":1,')
check "a frame that is not JSON is answered with bad_request" grep -qF '"error":"bad_request"' <<<"$response"
expect "the daemon keeps serving after bad requests" '{"op":"status"}' '"ok":true'
check "the daemon is still running" kt_alive db

# ---- concurrent writers -------------------------------------------------------------------------

pids=()
for index in $(seq 1 20); do
  "$CALL" "{\"op\":\"org.add\",\"name\":\"parallel$index\"}" >"$KT_WORK/parallel$index.out" 2>&1 &
  pids+=($!)
done
failures=0
for pid in "${pids[@]}"; do wait "$pid" || failures=$((failures + 1)); done
answered=$(cat "$KT_WORK"/parallel*.out | grep -c '"ok":true')
verify "20 concurrent writers all commit" '[ "$failures" -eq 0 ] && [ "$answered" -eq 20 ]'
expect "the counts see them" '{"op":"status"}' '"orgs":22'

# ---- SIGTERM ------------------------------------------------------------------------------------

# An idle client connection must not hold the shutdown up.
kt_start idle python3 -c 'import socket,sys,time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(60)' "$SOCKET"
sleep 0.3
started=$(date +%s)
kt_stop db TERM; status=$?
check "SIGTERM exits 0" [ $status -eq 0 ]
check "SIGTERM does not wait for idle connections" [ $(( $(date +%s) - started )) -lt 5 ]
kt_stop idle
check "SIGTERM removes the socket" [ ! -e "$SOCKET" ]
check "SIGTERM removes the pid file" [ ! -e "$PIDFILE" ]
refute "the log has no errors" grep -E ' error: |ERROR: |runtime error' "$KT_WORK/db.log"
refute "the log never shows a box" grep -qF "$box" "$KT_WORK/db.log"

# ---- stale socket after a crash -----------------------------------------------------------------

start_db >/dev/null
kt_stop db KILL
check "a killed daemon leaves its socket behind" [ -S "$SOCKET" ]
if start_db; then ok "restart after a crash replaces the stale socket"; else not_ok "restart after a crash replaces the stale socket"; fi
expect "data written before the crash is there" '{"op":"org.get","name":"parallel7"}' '"ok":true'
kt_stop db TERM
check "clean stop after the restart" [ $? -eq 0 ]

# ---- passive role -------------------------------------------------------------------------------

printf 'role = passive\nmaster = kt01.example.com\nactive_url = https://kt01.example.com:11371\n' \
  >"$KEYTRUSTEE_HOME/db/keytrustee-db.conf"
start_db >/dev/null
expect "a passive refuses writes and names the active" '{"op":"org.add","name":"refused"}' \
  '"ok":false' '"error":"passive"' '"active_url":"https://kt01.example.com:11371"'
expect "a passive serves reads" '{"op":"org.get","name":"acme"}' '"ok":true'
expect "a passive's status says so" '{"op":"status"}' '"role":"passive"' '"writable":false' '"reason":"passive"'
kt_stop db TERM
cp "$KT_WORK/db.conf.saved" "$KEYTRUSTEE_HOME/db/keytrustee-db.conf"

# ---- detached -----------------------------------------------------------------------------------

timeout 20 "$DB" --log-level debug >"$KT_WORK/daemon.out" 2>&1; status=$?
check "detached start returns 0" [ $status -eq 0 ]
kt_wait_file "$PIDFILE"
daemon_pid=$(cat "$PIDFILE" 2>/dev/null)
[ -n "$daemon_pid" ] && KT_PIDS[daemon]=$daemon_pid
expect "the detached daemon answers" '{"op":"status"}' '"ok":true'
check "the detached daemon logs to logs/keytrustee-db.log" grep -q 'keytrustee-db\[[0-9]*\] info: keytrustee-db .* started' "$KEYTRUSTEE_HOME/logs/keytrustee-db.log"
if [ -n "$daemon_pid" ]; then
  kill -TERM "$daemon_pid"
  for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
  refute "the detached daemon stops on SIGTERM" kill -0 "$daemon_pid" 2>/dev/null
  unset "KT_PIDS[daemon]"
fi
verify "and removes its socket and pid file" '[ ! -e "$SOCKET" ] && [ ! -e "$PIDFILE" ]'

kt_finish
