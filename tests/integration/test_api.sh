#!/usr/bin/env bash
# test_api.sh — docs/api.md against a real node: keytrustee-db and keytrusteed started from
# scratch in a temporary KEYTRUSTEE_HOME, driven by curl over real TLS, with requests signed by
# tests/tools/kt_sign (written from docs/api.md alone).
#
#   tests/integration/test_api.sh        KT_BIN (default build/asan/bin) names the programs,
#                                        KT_TESTS (default build/asan/tests) holds kt_sign.
#
# Prints "ok - name" / "not ok - name" per check and ends with "N passed, M failed"; exits 1 when
# anything failed. Processes are started and stopped by PID through tests/lib/common.sh. The
# programs may still be being built by others: it waits up to WAIT_FOR_PROGRAMS seconds for them.
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cd "$KT_ROOT"

KT_SIGN=${KT_SIGN:-$KT_TESTS/kt_sign}
WAIT_FOR_PROGRAMS=${WAIT_FOR_PROGRAMS:-600} # seconds to wait for programs still being built
work=$KT_WORK
export KEYTRUSTEE_HOME=$work/home

# expect NAME COMMAND...: like check, but a failure shows the last answer.
expect() {
    local name=$1
    shift
    if "$@"; then
        ok "$name"
    else
        not_ok "$name" "status ${status:-?}, body: $(head -c 300 "$work/body" 2>/dev/null)"
    fi
}

# ---- Starting a node -------------------------------------------------------------------------

wait_for_programs() {
    local waited=0
    for program in ktadmin keytrustee-db keytrustee-orgtool keytrusteed; do
        while [ ! -x "$KT_BIN/$program" ]; do
            if [ "$waited" -ge "$WAIT_FOR_PROGRAMS" ]; then
                echo "Bail out! $KT_BIN/$program does not exist (build it first)"
                exit 1
            fi
            sleep 5
            waited=$((waited + 5))
        done
    done
    if [ ! -x "$KT_SIGN" ]; then
        echo "Bail out! $KT_SIGN does not exist (make tests)"
        exit 1
    fi
}

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
    server_pid=$(kt_pid server)
    for _ in $(seq 1 100); do
        curl -sk --max-time 2 -o /dev/null "$url/?a=fingerprint" && return 0
        sleep 0.1
    done
    return 1
}

# ---- Requests --------------------------------------------------------------------------------

# request METHOD TARGET BODYFILE [curl options...]: sets $status, writes the body to $work/body
# and the headers to $work/headers. BODYFILE "" sends no body.
request() {
    local method=$1 target=$2 body=$3
    shift 3
    local data=()
    if [ -n "$body" ]; then data=(-H 'Content-Type: application/json' --data-binary "@$body"); fi
    status=$(curl -sk --max-time 20 -X "$method" -o "$work/body" -D "$work/headers" \
        -w '%{http_code}' "${data[@]}" "$@" "$url$target")
}

# sign CLIENTDIR METHOD TARGET BODYFILE: fills the array $signature with curl -H options: the
# Host header of $url and the four X-KT-* headers, signed for that host.
sign() {
    signature=()
    local line
    while IFS= read -r line; do signature+=(-H "$line"); done \
        < <("$KT_SIGN" headers "$1" "$2" "${url#https://}" "$3" "$4")
}

# signed CLIENTDIR METHOD TARGET BODYFILE [curl options...]
signed() {
    local client=$1 method=$2 target=$3 body=$4
    shift 4
    sign "$client" "$method" "$target" "$body"
    request "$method" "$target" "$body" "${signature[@]}" "$@"
}

field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$work/body" | head -n 1; }
error_is() { [ "$status" = "$1" ] && grep -q "\"error\":\"$2\"" "$work/body"; }
status_is() { [ "$status" = "$1" ]; }
server_answers() {
    curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "$url/v1/health" | grep -q '^200$' &&
        kill -0 "$server_pid" 2>/dev/null
}
# Kept from when SIGHUP restarted the listener (it now reloads in place): allow a few seconds.
server_answers_soon() {
    for _ in $(seq 1 50); do
        server_answers && return 0
        sleep 0.1
    done
    return 1
}
error_is_and_up() { error_is "$1" "$2" && server_answers; }

json_file() { printf '%s' "$2" >"$work/$1"; echo "$work/$1"; }

register_client() { # DIR NAME AUTH ORG → registers, sets $status
    local key
    key=$(cut -d' ' -f2 "$1.id")
    local body
    body=$(json_file "register-$2.json" \
        "{\"org\":\"$4\",\"auth\":\"$3\",\"name\":\"$2\",\"public_key\":\"$key\"}")
    signed "$1" POST /v1/register "$body"
}

new_client() { # DIR: a key pair in DIR, its "FINGERPRINT PUBLIC_KEY" in DIR.id
    mkdir -p "$1" && "$KT_SIGN" keygen "$1" >"$1.id"
}

# ---- The node --------------------------------------------------------------------------------

wait_for_programs
port=$(kt_free_port) || { echo "Bail out! no free port"; exit 1; }
url="https://127.0.0.1:$port"

init_output=$("$KT_BIN/ktadmin" init --external-address 127.0.0.1 --listen 127.0.0.1 \
    --port "$port" 2>&1)
server_fingerprint=$(printf '%s\n' "$init_output" | sed -n 's/^Initialized directory for \([0-9A-F]\{40\}\).*/\1/p')
"$KT_BIN/ktadmin" db --bootstrap >"$work/bootstrap.log" 2>&1 || {
    echo "Bail out! ktadmin db --bootstrap failed: $(cat "$work/bootstrap.log")"
    exit 1
}
start_db || { echo "Bail out! keytrustee-db did not start: $(tail -5 "$work/db.log")"; exit 1; }
start_server || { echo "Bail out! keytrusteed did not start: $(tail -5 "$work/server.log")"; exit 1; }
"$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null 2>&1
"$KT_BIN/keytrustee-orgtool" add -n open -c ops@example.com >/dev/null 2>&1
"$KT_BIN/keytrustee-orgtool" set-auth -n open -s "" >/dev/null 2>&1
acme_secret=$("$KT_BIN/keytrustee-orgtool" list | tr -d '\n ' |
    sed -n 's/.*"acme":{"auth_secret":"\([^"]*\)".*/\1/p')
[ -n "$acme_secret" ] || { echo "Bail out! no auth secret for acme in keytrustee-orgtool list"; exit 1; }

# ---- Unauthenticated endpoints ---------------------------------------------------------------

request GET "/?a=fingerprint" ""
expect "fingerprint endpoint answers what ktadmin init printed" \
    eval '[ "$status" = 200 ] && [ -n "$server_fingerprint" ] && [ "$(cat "$work/body")" = "$server_fingerprint" ]'
expect "fingerprint is text/plain" grep -qi '^Content-Type: text/plain' "$work/headers"

request GET /v1/health ""
expect "health answers standalone, writable, version" \
    grep -q '{"role":"standalone","writable":true,"version":"[0-9.]*"}' "$work/body"

expect "the combined TLS PEM is removed from run/ after start" \
    eval '! ls "$KEYTRUSTEE_HOME/run" | grep -q "tls.*pem"'

# ---- Registration ----------------------------------------------------------------------------

new_client "$work/c1"
new_client "$work/c2"
new_client "$work/c3"
new_client "$work/stranger"
c1=$(cut -d' ' -f1 "$work/c1.id")

register_client "$work/c1" host1 "wrong-secret" acme
expect "register with a wrong auth secret is 403" error_is 403 forbidden
register_client "$work/c1" host1 "" acme
expect "register without the auth secret of an org that has one is 403" error_is 403 forbidden
register_client "$work/c1" host1 "$acme_secret" nosuchorg
expect "register in an unknown org is 404" error_is 404 not_found
c2_key=$(cut -d' ' -f2 "$work/c2.id")
body=$(json_file reg-mismatch.json \
    "{\"org\":\"acme\",\"auth\":\"$acme_secret\",\"name\":\"x\",\"public_key\":\"$c2_key\"}")
signed "$work/c1" POST /v1/register "$body"
expect "register with X-KT-Client not matching public_key is 401" error_is 401 unauthenticated
register_client "$work/c1" host1 "$acme_secret" acme
expect "register with the right secret is 201" \
    eval 'status_is 201 && [ "$(field fingerprint)" = "$c1" ] &&
          [ "$(field server_fingerprint)" = "$server_fingerprint" ]'
register_client "$work/c1" host1 "$acme_secret" acme
expect "registering the same key twice is 409" error_is 409 conflict
register_client "$work/c2" host2 "$acme_secret" acme
expect "a second client registers" status_is 201
register_client "$work/c3" host3 "" open
expect "an org without a secret registers without one" status_is 201

# ---- Deposits --------------------------------------------------------------------------------

marker="KTMARKER-$RANDOM$RANDOM-plaintext"
{ printf '%s\0\0\001\377' "$marker"; head -c 3000 /dev/urandom; printf '\0'; } >"$work/secret.bin"
secret_text=$(base64 -w0 "$work/secret.bin")
body=$(json_file put.json \
    "{\"handle\":\"disk 1+x\",\"secret\":\"$secret_text\",\"description\":\"root volume\"}")
signed "$work/c1" POST /v1/deposits "$body"
uuid=$(field uuid)
expect "put a binary deposit is 201 with a uuid" \
    eval 'status_is 201 && [ ${#uuid} = 36 ] && [ "$(field handle)" = "disk 1+x" ]'

same_secret() {
    field secret | base64 -d >"$work/got.bin" 2>/dev/null && cmp -s "$work/secret.bin" "$work/got.bin"
}
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "get by uuid returns the bytes exactly" \
    eval 'status_is 200 && same_secret && [ "$(field state)" = active ]'
content_length() { sed -n 's/^Content-Length: *\([0-9]*\).*/\1/Ip' "$work/headers"; }
expect "an answer's head (one write with its body) has every header and an exact length" \
    eval 'head -n 1 "$work/headers" | grep -q "^HTTP/1.1 200 OK" &&
          grep -qi "^Content-Type: application/json" "$work/headers" &&
          grep -qi "^Cache-Control: no-store" "$work/headers" && grep -qi "^Date: " "$work/headers" &&
          grep -qi "^Connection: keep-alive" "$work/headers" &&
          [ "$(content_length)" = "$(wc -c <"$work/body")" ]'
connects=$(curl -sk --max-time 10 -o /dev/null -o /dev/null -w '%{num_connects} ' \
    "$url/v1/health" "$url/v1/health")
expect "two requests share one keep-alive connection" [ "$connects" = "1 0 " ]
signed "$work/c1" GET "/v1/deposits?handle=disk%201%2Bx" ""
expect "get by URL-encoded handle returns the bytes exactly" \
    eval 'status_is 200 && same_secret && [ "$(field uuid)" = "$uuid" ]'
signed "$work/c1" POST /v1/deposits "$body"
expect "a second deposit with the same handle is 409" error_is 409 conflict

body2=$(json_file put2.json '{"handle":"swap","secret":"c3dhcA=="}')
signed "$work/c1" POST /v1/deposits "$body2"
expect "put without a description is 201" status_is 201
signed "$work/c1" GET /v1/deposits ""
expect "list shows both deposits and no secrets" \
    eval 'status_is 200 && grep -q "disk 1+x" "$work/body" && grep -q "\"swap\"" "$work/body" &&
          ! grep -q secret "$work/body"'
signed "$work/c1" GET "/v1/deposits?search=root" ""
expect "search matches the description" \
    eval 'status_is 200 && grep -q "disk 1+x" "$work/body" && ! grep -q "\"swap\"" "$work/body"'
signed "$work/c1" GET "/v1/deposits/$(python3 -c 'import uuid; print(uuid.uuid4())')" ""
expect "an unknown uuid is 404" error_is 404 not_found
signed "$work/c1" GET "/v1/deposits?handle=nothing-here" ""
expect "an unknown handle is 404" error_is 404 not_found
signed "$work/c1" GET "/v1/deposits?handle=%FF" ""
expect "a handle that is not UTF-8 is 400" error_is 400 bad_request
request GET "/v1/deposits?handle=%FF" ""
expect "an unsigned read of such a handle is 401 first" error_is 401 unauthenticated
signed "$work/c1" GET "/v1/deposits/$uuid?x=1" ""
expect "a query on a deposit read is 400" error_is 400 bad_request
signed "$work/stranger" GET "/v1/deposits/$uuid" ""
expect "an unregistered client reading a deposit is 401" error_is 401 unauthenticated
sign "$work/c1" GET "/v1/deposits?handle=swap" ""
request GET "/v1/deposits?handle=disk%201%2Bx" "" "${signature[@]}"
expect "a deposit read signed for another handle is 401" error_is 401 unauthenticated
signed "$work/c1" GET "/v1/deposits?handle=a&search=b" ""
expect "handle and search together are 400" error_is 400 bad_request
signed "$work/c1" GET "/v1/deposits?color=red" ""
expect "an unknown query parameter is 400" error_is 400 bad_request

signed "$work/c1" POST "/v1/deposits/$uuid/disable" ""
expect "disable answers the new state" eval 'status_is 200 && [ "$(field state)" = disabled ]'
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "a disabled deposit is 403" error_is 403 forbidden
signed "$work/c1" POST "/v1/deposits/$uuid/enable" ""
expect "enable answers the new state" eval 'status_is 200 && [ "$(field state)" = active ]'
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "an enabled deposit reads again" eval 'status_is 200 && same_secret'

signed "$work/c2" GET "/v1/deposits/$uuid" ""
expect "another client cannot read the deposit (404)" error_is 404 not_found
signed "$work/c2" GET "/v1/deposits?handle=swap" ""
expect "another client cannot find it by handle (404)" error_is 404 not_found
signed "$work/c2" GET /v1/deposits ""
expect "another client's list is empty" grep -q '{"deposits":\[\]}' "$work/body"
signed "$work/c2" DELETE "/v1/deposits/$uuid" ""
expect "another client cannot purge it (404)" error_is 404 not_found

expect "the database files never hold the plaintext" \
    eval '[ "$(cat "$KEYTRUSTEE_HOME"/db/keytrustee.db* | grep -a -c "$marker")" = 0 ]'

# ---- Authentication --------------------------------------------------------------------------

request GET /v1/deposits ""
expect "a request without signature headers is 401" error_is 401 unauthenticated
sign "$work/c1" GET /v1/deposits ""
request GET /v1/deposits "" "${signature[@]}"
first=$status
request GET /v1/deposits "" "${signature[@]}"
expect "replaying an identical signed request is 401" eval '[ "$first" = 200 ] && error_is 401 unauthenticated'
KT_SIGN_TIME=$(($(date +%s) - 1000)) signed "$work/c1" GET /v1/deposits ""
expect "a stale timestamp is 401" error_is 401 unauthenticated
KT_SIGN_TIME=$(($(date +%s) + 1000)) signed "$work/c1" GET /v1/deposits ""
expect "a timestamp from the future is 401" error_is 401 unauthenticated
sign "$work/c1" GET /v1/deposits ""
request GET "/v1/deposits?search=x" "" "${signature[@]}"
expect "a signature over another target is 401" error_is 401 unauthenticated
sign "$work/c1" POST /v1/deposits "$body2"
request POST /v1/deposits "$body" "${signature[@]}"
expect "a signature over another body is 401" error_is 401 unauthenticated
signed "$work/stranger" GET /v1/deposits ""
expect "an unregistered client is 401" error_is 401 unauthenticated

"$KT_BIN/keytrustee-orgtool" disable-client --fingerprint "$c1" >/dev/null 2>&1
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "a disabled client is 403" error_is 403 forbidden
signed "$work/c1" GET "/v1/deposits?handle=swap" ""
expect "a disabled client is 403 by handle too" error_is 403 forbidden
"$KT_BIN/keytrustee-orgtool" enable-client --fingerprint "$c1" >/dev/null 2>&1
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "an enabled client reads again" status_is 200

# ---- Bad input: each must be refused cleanly, and the server must still answer ---------------

body=$(json_file bad-json.json '{"handle": "x", "secret": ')
signed "$work/c1" POST /v1/deposits "$body"
expect "malformed JSON is 400" error_is_and_up 400 bad_request
body=$(json_file not-object.json '["handle"]')
signed "$work/c1" POST /v1/deposits "$body"
expect "a JSON array body is 400" error_is_and_up 400 bad_request
body=$(json_file duplicate.json '{"handle":"a","handle":"b","secret":"eA=="}')
signed "$work/c1" POST /v1/deposits "$body"
expect "duplicate JSON keys are 400" error_is_and_up 400 bad_request
body=$(json_file bad-base64.json '{"handle":"b64","secret":"not base64!"}')
signed "$work/c1" POST /v1/deposits "$body"
expect "bad base64 is 400" error_is_and_up 400 bad_request
body=$(json_file empty-secret.json '{"handle":"empty","secret":""}')
signed "$work/c1" POST /v1/deposits "$body"
expect "an empty secret is 400" error_is_and_up 400 bad_request
body=$(json_file unknown-field.json '{"handle":"u","secret":"eA==","colour":"red"}')
signed "$work/c1" POST /v1/deposits "$body"
expect "an unknown field is 400" error_is_and_up 400 bad_request
body=$(json_file control.json '{"handle":"a\u0001b","secret":"eA=="}')
signed "$work/c1" POST /v1/deposits "$body"
expect "a handle with a control character is 400" error_is_and_up 400 bad_request
long_handle=$(head -c 256 /dev/zero | tr '\0' h)
body=$(json_file long.json "{\"handle\":\"$long_handle\",\"secret\":\"eA==\"}")
signed "$work/c1" POST /v1/deposits "$body"
expect "a 256-byte handle is 400" error_is_and_up 400 bad_request
head -c $((64 * 1024 + 1)) /dev/urandom >"$work/big.bin"
body=$(json_file too-long-secret.json "{\"handle\":\"big\",\"secret\":\"$(base64 -w0 "$work/big.bin")\"}")
signed "$work/c1" POST /v1/deposits "$body"
expect "a secret over 64 KiB is 400" error_is_and_up 400 bad_request
body=$(json_file wrong-type.json '{"handle":"n","secret":"eA=="}')
signed "$work/c1" POST /v1/deposits "$body" -H 'Content-Type: text/plain'
expect "a body that is not application/json is 415" error_is_and_up 415 unsupported_media_type
signed "$work/c1" POST /v1/deposits "$body" -H 'Transfer-Encoding: chunked'
expect "a chunked body without Content-Length is 411" error_is_and_up 411 length_required
{ printf '{"handle":"huge","secret":"'; head -c 140000 /dev/zero | tr '\0' A; printf '"}'; } >"$work/huge.json"
request POST /v1/deposits "$work/huge.json"
expect "a body over 128 KiB is 413" error_is_and_up 413 too_large
status=$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H 'Content-Length: 1000' --data-binary '{"handle":' "$url/v1/deposits")
expect "a body shorter than its Content-Length does not hurt the server" server_answers
request GET /v1/nothing ""
expect "an unknown endpoint is 404" error_is_and_up 404 not_found
request GET "/?a=other" ""
expect "GET / without a=fingerprint is 404" error_is_and_up 404 not_found
request PUT /v1/deposits ""
expect "a wrong method is 405 with Allow" \
    eval 'error_is_and_up 405 method_not_allowed && grep -qi "^Allow: GET, POST" "$work/headers"'
signed "$work/c1" GET /v1/deposits/not-a-uuid ""
expect "a path segment that is not a uuid is 404" error_is_and_up 404 not_found
curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$port/v1/health"
plain_http=$?
expect "plain HTTP to the TLS port is refused" eval '[ "$plain_http" -ne 0 ] && server_answers'
# In a subshell that ignores SIGPIPE: the server may close before the last byte is written.
(
    trap '' PIPE
    exec 3<>"/dev/tcp/127.0.0.1/$port" &&
        printf 'GARBAGE\r\n\r\n\026\003\001\377\377' >&3
    sleep 0.5
) 2>/dev/null
expect "garbage bytes on the TLS port do not hurt the server" server_answers

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
before=$(cpu_ticks)
idle=()
for _ in 1 2 3 4; do exec {fd}<>"/dev/tcp/127.0.0.1/$port" && idle+=("$fd"); done
sleep 2
start=$(date +%s%N)
server_answers
answered=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
spent=$(($(cpu_ticks) - before))
for fd in "${idle[@]}"; do exec {fd}>&-; done
expect "idle TCP connections neither spin nor block the server" \
    eval '[ "$answered" = 0 ] && [ "$elapsed_ms" -lt 3000 ] && [ "$spent" -lt 100 ]'

# ---- Purge -----------------------------------------------------------------------------------

signed "$work/c1" DELETE "/v1/deposits/$uuid" ""
expect "purge answers the purged uuid" eval 'status_is 200 && [ "$(field purged)" = "$uuid" ]'
signed "$work/c1" GET "/v1/deposits/$uuid" ""
expect "a purged deposit is 404" error_is 404 not_found
signed "$work/c1" DELETE "/v1/deposits/$uuid" ""
expect "purging it again is 404" error_is 404 not_found

# ---- keytrustee-db down and back ---------------------------------------------------------------

kt_stop db
request GET /v1/health ""
expect "health is 503 unavailable while keytrustee-db is down" error_is 503 unavailable
expect "the 503 says keytrustee-db is not running" grep -q 'keytrustee-db) is not running' "$work/body"
expect "503 unavailable carries Retry-After" grep -qi '^Retry-After:' "$work/headers"
signed "$work/c1" GET /v1/deposits ""
expect "a signed request is 503 while keytrustee-db is down" error_is 503 unavailable
start_db
signed "$work/c1" GET "/v1/deposits?handle=swap" ""
expect "keytrusteed reconnects when keytrustee-db is back" status_is 200

# ---- Certificate reload ----------------------------------------------------------------------

cert=$KEYTRUSTEE_HOME/.keytrustee/.ssl/ssl-cert-keytrustee.pem
kill -HUP "$server_pid"
sleep 0.5
expect "SIGHUP with a good certificate keeps serving" \
    eval 'server_answers_soon && grep -q "new connections get the re-read certificate" "$work/server.log"'
chmod u+w "$cert" && cp "$cert" "$work/cert.saved" && printf 'not a certificate\n' >"$cert"
kill -HUP "$server_pid"
sleep 1
expect "SIGHUP with a broken certificate keeps serving the old one" \
    eval 'server_answers_soon && grep -q "refused the new certificate, still serving the previous one" "$work/server.log"'
cp "$work/cert.saved" "$cert"

# ---- Hygiene and shutdown --------------------------------------------------------------------

expect "the log never holds the plaintext marker" eval '! grep -q "$marker" "$work/server.log"'
expect "the log has one line per request with status and client" \
    grep -q "GET /v1/deposits 200 [0-9.]* ms client $c1" "$work/server.log"
kt_stop server TERM
exit_status=$?
expect "SIGTERM stops keytrusteed with status 0" eval '[ "$exit_status" = 0 ]'
expect "the pid file is removed" eval '[ ! -e "$KEYTRUSTEE_HOME/run/keytrusteed.pid" ]'
expect "no sanitizer reports in the keytrusteed log" \
    eval '! grep -q "AddressSanitizer\|LeakSanitizer\|runtime error:" "$work/server.log"'
if [ "$kt_failed" -gt 0 ]; then
    echo "# keytrusteed log (last 30 lines):"
    tail -n 30 "$work/server.log" | sed 's/^/#   /'
fi

kt_finish
