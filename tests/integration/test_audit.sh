#!/usr/bin/env bash
# test_audit.sh — the audit log and the failed-authentication limiter against a real node
# (keytrustee-db + keytrusteed in a temporary KEYTRUSTEE_HOME, curl over TLS, requests signed by
# tests/tools/kt_sign):
#   - registration, deposit put/get/delete, a failed authentication, operator org and client
#     changes all land in logs/audit.log (0600) with actor, action, object, result, source, and
#     no secret;
#   - `ktadmin audit verify` accepts the chain and names the line of a modified, removed,
#     inserted or reordered entry;
#   - after KTD_RATE_FAILURES bad signatures an address gets 429 rate_limited with Retry-After,
#     while a bad signature claiming another client's fingerprint does not lock that client out;
#   - (as root) with logs/ on a full tmpfs, auditable requests are refused with 503
#     audit_unavailable once the bounded backlog is full, never served unrecorded.
# Ends with "N passed, M failed".
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cd "$KT_ROOT"

KT_SIGN=${KT_SIGN:-$KT_TESTS/kt_sign}
work=$KT_WORK
export KEYTRUSTEE_HOME=$work/home
audit_log=$KEYTRUSTEE_HOME/logs/audit.log

for program in "$KT_BIN/ktadmin" "$KT_BIN/keytrustee-db" "$KT_BIN/keytrusteed" "$KT_SIGN"; do
    [ -x "$program" ] || { echo "Bail out! $program missing (make SAN=1 all tests)"; exit 1; }
done

start_db() {
    kt_start db "$KT_BIN/keytrustee-db" --foreground
    for _ in $(seq 1 100); do
        [ -S "$KEYTRUSTEE_HOME/run/keytrustee-db.sock" ] && return 0
        sleep 0.1
    done
    return 1
}

start_server() {
    kt_start server "$KT_BIN/keytrusteed" --foreground
    for _ in $(seq 1 100); do
        curl -sk --max-time 2 -o /dev/null "$url/?a=fingerprint" && return 0
        sleep 0.1
    done
    return 1
}

request() { # METHOD TARGET BODYFILE [curl options...]: sets $status, body in $work/body
    local method=$1 target=$2 body=$3
    shift 3
    local data=()
    if [ -n "$body" ]; then data=(-H 'Content-Type: application/json' --data-binary "@$body"); fi
    status=$(curl -sk --max-time 20 -X "$method" -o "$work/body" -D "$work/headers" \
        -w '%{http_code}' "${data[@]}" "$@" "$url$target")
}

signed() { # CLIENTDIR METHOD TARGET BODYFILE [curl options...]
    local client=$1 method=$2 target=$3 body=$4 line
    shift 4
    local headers=()
    while IFS= read -r line; do headers+=(-H "$line"); done \
        < <("$KT_SIGN" headers "$client" "$method" "${url#https://}" "$target" "$body")
    request "$method" "$target" "$body" "${headers[@]}" "$@"
}

field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$work/body" | head -n 1; }
json_file() { printf '%s' "$2" >"$work/$1"; echo "$work/$1"; }
new_client() { mkdir -p "$1" && "$KT_SIGN" keygen "$1" >"$1.id"; }
register() { # DIR NAME ORG AUTH
    local body
    body=$(json_file "reg-$2.json" \
        "{\"org\":\"$3\",\"auth\":\"$4\",\"name\":\"$2\",\"public_key\":\"$(cut -d' ' -f2 "$1.id")\"}")
    signed "$1" POST /v1/register "$body"
}
# Waits for the flusher (every 100 ms) to write an entry matching a pattern.
audit_has() {
    for _ in $(seq 1 30); do
        grep -q -- "$1" "$audit_log" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
verify_says() { # PATTERN FILE: ktadmin audit verify FILE fails and its message matches
    local output
    output=$("$KT_BIN/ktadmin" audit verify "$2" 2>&1) && return 1
    printf '%s\n' "$output" | grep -q -- "$1" || { echo "# verify said: $output"; return 1; }
}

# ---- A node ------------------------------------------------------------------------------------

port=$(kt_free_port)
url="https://127.0.0.1:$port"
"$KT_BIN/ktadmin" init --external-address 127.0.0.1 --listen 127.0.0.1 --port "$port" \
    >"$work/init.log" 2>&1 || { echo "Bail out! ktadmin init: $(cat "$work/init.log")"; exit 1; }
"$KT_BIN/ktadmin" db --bootstrap >"$work/bootstrap.log" 2>&1 || { echo "Bail out! bootstrap"; exit 1; }
start_db || { echo "Bail out! keytrustee-db did not start"; exit 1; }
start_server || { echo "Bail out! keytrusteed did not start: $(tail -5 "$work/server.log")"; exit 1; }
"$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null 2>&1
secret=$("$KT_BIN/keytrustee-orgtool" list | tr -d '\n ' |
    sed -n 's/.*"acme":{"auth_secret":"\([^"]*\)".*/\1/p')
[ -n "$secret" ] || { echo "Bail out! no auth secret for acme"; exit 1; }

# ---- Events ------------------------------------------------------------------------------------

new_client "$work/c1"
new_client "$work/c2"
c1=$(cut -d' ' -f1 "$work/c1.id")
c2=$(cut -d' ' -f1 "$work/c2.id")
register "$work/c1" host1 acme "$secret"
check "c1 registers" [ "$status" = 201 ]
register "$work/c2" host2 acme "$secret"
check "c2 registers" [ "$status" = 201 ]
plaintext="AUDITSECRET$RANDOM$RANDOM"
put=$(json_file put.json "{\"handle\":\"disk1\",\"secret\":\"$(printf '%s' "$plaintext" | base64)\"}")
signed "$work/c1" POST /v1/deposits "$put"
uuid=$(field uuid)
check "c1 deposits a secret" [ "$status" = 201 ]
signed "$work/c1" GET "/v1/deposits/$uuid" ""
check "c1 reads it back" [ "$status" = 200 ]
request GET "/v1/deposits/$uuid" "" -H "X-KT-Client: $c1" -H "X-KT-Timestamp: $(date +%s)" \
    -H "X-KT-Nonce: AAAAAAAAAAAAAAAAAAAAAA==" -H "X-KT-Signature: $(head -c 64 /dev/zero | base64 -w0)"
check "a forged signature is 401" [ "$status" = 401 ]
signed "$work/c1" DELETE "/v1/deposits/$uuid" ""
check "c1 deletes it" [ "$status" = 200 ]
"$KT_BIN/keytrustee-orgtool" disable-client --fingerprint "$c2" >/dev/null 2>&1
signed "$work/c2" GET /v1/deposits ""
check "a disabled client is refused with 403" [ "$status" = 403 ]

check "the audit log exists with mode 0600" [ "$(stat -c %a "$audit_log" 2>/dev/null)" = 600 ]
check "the first entry starts the chain" \
    bash -c "head -n 1 '$audit_log' | grep -q '\"seq\":0,.*\"action\":\"audit.chain_start\"'"
check "registration is audited (actor, object, result, source)" \
    audit_has "\"actor\":\"$c1\",\"action\":\"client.register\",\"object\":\"$c1\",\"result\":\"201\",\"source\":\"127.0.0.1\""
check "the deposit put is audited with its uuid" \
    audit_has "\"action\":\"deposit.put\",\"object\":\"$uuid\",\"result\":\"201\""
check "the deposit get is audited" audit_has "\"action\":\"deposit.get\",\"object\":\"$uuid\",\"result\":\"200\""
check "the deposit delete is audited" audit_has "\"action\":\"deposit.delete\",\"object\":\"$uuid\",\"result\":\"200\""
check "the failed authentication is audited" \
    audit_has "\"actor\":\"unverified $c1\",\"action\":\"deposit.get\",\"object\":\"$uuid\",\"result\":\"401 unauthenticated\""
check "the disabled client's refusal is audited" \
    audit_has "\"actor\":\"$c2\",\"action\":\"deposit.find\",\"object\":\"-\",\"result\":\"403 forbidden\""
check "the operator's org.add is audited as admin" \
    audit_has "\"actor\":\"admin uid=$(id -u) pid=[0-9]*\",\"action\":\"org.add\",\"object\":\"name=acme\",\"result\":\"ok\",\"source\":\"local\""
check "the operator's client disable is audited" \
    audit_has "\"action\":\"client.set_state\",\"object\":\"fingerprint=$c2 state=disabled\",\"result\":\"ok\""
check "keytrusteed's own admin-socket calls are not audited twice" \
    bash -c "! grep -q '\"program\":\"keytrustee-db\",[^}]*\"action\":\"deposit.put\"' '$audit_log'"
check "no secret in the audit log (plaintext, its base64, the org secret)" \
    bash -c "! grep -q -e '$plaintext' -e '$(printf '%s' "$plaintext" | base64)' -e '$secret' '$audit_log'"

# ---- Verification and tampering ----------------------------------------------------------------

kt_stop server
kt_stop db
lines=$(wc -l <"$audit_log")
check "ktadmin audit verify accepts the chain" \
    bash -c "'$KT_BIN/ktadmin' audit verify | grep -q 'intact, $lines entries'"
cp "$audit_log" "$work/good.log"
# Line 5 is whichever entry reached the file fifth: keytrusteed and keytrustee-db append their own
# batches, so which one varies from run to run (a deposit.put's "201" or an admin "ok"). Any result
# changed is a modification.
sed -E '5s/"result":"([^"]*)"/"result":"\1X"/' "$work/good.log" >"$work/modified.log"
check "line 5 was changed for the test" bash -c "! cmp -s '$work/good.log' '$work/modified.log'"
check "a modified entry is found at its line" verify_says "line 5: modified" "$work/modified.log"
sed '6d' "$work/good.log" >"$work/removed.log"
check "a removed entry is found at the next line" verify_says "line 6: sequence 6 follows 4 (entries were removed" "$work/removed.log"
{ sed -n '1,6p' "$work/good.log"; sed -n 8p "$work/good.log"; sed -n 7p "$work/good.log"; sed -n '9,$p' "$work/good.log"; } >"$work/reordered.log"
check "reordered entries are found" verify_says "line 7: sequence 7 follows 5" "$work/reordered.log"
{ sed -n '1,4p' "$work/good.log"; sed -n '3p' "$work/good.log"; sed -n '5,$p' "$work/good.log"; } >"$work/inserted.log"
check "an inserted (copied) entry is found" verify_says "line 5: sequence 2 follows 3 (entries were reordered or inserted)" "$work/inserted.log"
python3 - "$work/good.log" "$work/rehashed.log" <<'PY'
import hashlib, json, sys
lines = open(sys.argv[1]).read().splitlines()
body = lines[3][: lines[3].rindex(',"hash":')] + "}"
body = body.replace('"result":"', '"result":"X', 1)
digest = hashlib.blake2b(body.encode(), digest_size=32).hexdigest()
lines[3] = body[:-1] + ',"hash":"%s"}' % digest
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
check "a modified entry with a recomputed hash breaks the next link" \
    verify_says "line 5: does not chain to line 4" "$work/rehashed.log"

# ---- Restart continues the chain; rate limiting -----------------------------------------------

start_db && start_server || { echo "Bail out! restart failed"; exit 1; }
for _ in $(seq 1 20); do
    request GET /v1/deposits "" -H "X-KT-Client: $c1" -H "X-KT-Timestamp: $(date +%s)" \
        -H "X-KT-Nonce: AAAAAAAAAAAAAAAAAAAAAA==" -H "X-KT-Signature: $(head -c 64 /dev/zero | base64 -w0)"
done
check "the 20th forged request is still 401" [ "$status" = 401 ]
request GET /v1/deposits "" -H "X-KT-Client: $c1" -H "X-KT-Timestamp: $(date +%s)" \
    -H "X-KT-Nonce: AAAAAAAAAAAAAAAAAAAAAA==" -H "X-KT-Signature: $(head -c 64 /dev/zero | base64 -w0)"
check "the 21st failure from that address is 429 rate_limited" \
    bash -c "[ '$status' = 429 ] && grep -q '\"error\":\"rate_limited\"' '$work/body'"
check "the 429 carries Retry-After" grep -qi '^Retry-After: [1-9][0-9]*' "$work/headers"
request GET /v1/health ""
check "unauthenticated endpoints still answer that address" [ "$status" = 200 ]
signed "$work/c1" GET /v1/deposits "" --interface 127.0.0.2 --resolve "x:$port:127.0.0.1"
status_other=$status
check "the forged client c1 is not locked out (from another address)" [ "$status_other" = 200 ]
check "the rate-limited request is audited" audit_has '"result":"429 rate_limited"'
kt_stop server
kt_stop db
check "the chain stays intact across restarts and both writers" \
    bash -c "'$KT_BIN/ktadmin' audit verify >/dev/null"

# ---- Disk full (root only: a tiny tmpfs under logs/) --------------------------------------------

if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs "$KEYTRUSTEE_HOME/logs" 2>/dev/null; then
    chmod 700 "$KEYTRUSTEE_HOME/logs"
    export KT_AUDIT_BACKLOG=5
    start_db && start_server || { umount "$KEYTRUSTEE_HOME/logs"; echo "Bail out! restart on tmpfs"; exit 1; }
    signed "$work/c1" GET /v1/deposits ""
    check "with room, requests are served and audited" audit_has '"action":"deposit.find"'
    dd if=/dev/zero of="$KEYTRUSTEE_HOME/logs/filler" bs=4k count=64 2>/dev/null
    refused=0
    for _ in $(seq 1 20); do
        signed "$work/c1" GET /v1/deposits ""
        [ "$status" = 503 ] && grep -q audit_unavailable "$work/body" && { refused=1; break; }
        sleep 0.05
    done
    check "a full disk makes auditable requests 503 audit_unavailable" [ "$refused" = 1 ]
    request GET /v1/health ""
    check "health still answers while the audit log is full" [ "$status" = 200 ]
    rm -f "$KEYTRUSTEE_HOME/logs/filler"
    served=0
    for _ in $(seq 1 30); do
        signed "$work/c1" GET /v1/deposits ""
        [ "$status" = 200 ] && { served=1; break; }
        sleep 0.1
    done
    check "once there is room again the backlog is written and requests are served" [ "$served" = 1 ]
    kt_stop server
    kt_stop db
    check "the chain is intact after the disk-full episode" \
        bash -c "'$KT_BIN/ktadmin' audit verify >/dev/null"
    umount "$KEYTRUSTEE_HOME/logs"
    unset KT_AUDIT_BACKLOG
else
    ok "disk-full test skipped (needs root to mount a tmpfs)"
fi

kt_finish
