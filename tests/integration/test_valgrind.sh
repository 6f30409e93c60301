#!/usr/bin/env bash
# test_valgrind.sh — valgrind memcheck over keytrustee-db and keytrusteed (the normal build,
# build/bin, not the sanitizer one) through an end-to-end scenario: org setup, registration, a
# deposit put, get, find and delete, a forged request (401) and a disabled client (403), then a
# clean SIGTERM of both. Each daemon must end with 0 errors and 0 bytes definitely lost.
#
# Slow (minutes), so it runs only with KT_LONG=1 (`make check-long`); otherwise it prints one
# skipped check. KT_VALGRIND_BIN (default build/bin) names the programs. Ends with
# "N passed, M failed".
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cd "$KT_ROOT"

if [ "${KT_LONG:-}" != 1 ]; then
    ok "skipped (KT_LONG unset)"
    kt_finish
fi

BIN=${KT_VALGRIND_BIN:-$KT_ROOT/build/bin}
KT_SIGN=${KT_SIGN:-$KT_TESTS/kt_sign}
work=$KT_WORK
export KEYTRUSTEE_HOME=$work/home
for program in "$BIN/ktadmin" "$BIN/keytrustee-db" "$BIN/keytrusteed" "$KT_SIGN"; do
    [ -x "$program" ] || { echo "Bail out! $program missing (make all; make SAN=1 tests)"; exit 1; }
done
command -v valgrind >/dev/null || { echo "Bail out! valgrind is not installed"; exit 1; }

memcheck() { # NAME PROGRAM ARGS...
    local name=$1
    shift
    kt_start "$name" valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --track-origins=yes --num-callers=30 \
        --log-file="$work/$name.valgrind" "$@"
}

port=$(kt_free_port)
url="https://127.0.0.1:$port"
"$BIN/ktadmin" init --external-address 127.0.0.1 --listen 127.0.0.1 --port "$port" \
    >"$work/init.log" 2>&1 || { echo "Bail out! ktadmin init"; exit 1; }
"$BIN/ktadmin" db --bootstrap >"$work/bootstrap.log" 2>&1 || { echo "Bail out! bootstrap"; exit 1; }
memcheck db "$BIN/keytrustee-db" --foreground --user ''
for _ in $(seq 1 600); do [ -S "$KEYTRUSTEE_HOME/run/keytrustee-db.sock" ] && break; sleep 0.1; done
memcheck server "$BIN/keytrusteed" --foreground --user ''
for _ in $(seq 1 600); do curl -sk --max-time 5 -o /dev/null "$url/?a=fingerprint" && break; sleep 0.2; done

"$BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null 2>&1
secret=$("$BIN/keytrustee-orgtool" list | tr -d '\n ' | sed -n 's/.*"acme":{"auth_secret":"\([^"]*\)".*/\1/p')
mkdir -p "$work/c1" && "$KT_SIGN" keygen "$work/c1" >"$work/c1.id"
c1=$(cut -d' ' -f1 "$work/c1.id")
call() { # METHOD TARGET [BODYFILE]: prints the status; body in $work/body
    local headers=() line body=${3:-}
    while IFS= read -r line; do headers+=(-H "$line"); done \
        < <("$KT_SIGN" headers "$work/c1" "$1" "${url#https://}" "$2" "$body")
    local data=()
    [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "@$body")
    curl -sk --max-time 60 -X "$1" -o "$work/body" -w '%{http_code}' "${data[@]}" "${headers[@]}" "$url$2"
}
printf '{"org":"acme","auth":"%s","name":"host1","public_key":"%s"}' "$secret" \
    "$(cut -d' ' -f2 "$work/c1.id")" >"$work/register.json"
printf '{"handle":"disk1","secret":"%s"}' "$(printf s3cret | base64)" >"$work/put.json"
check "registration under valgrind" [ "$(call POST /v1/register "$work/register.json")" = 201 ]
check "deposit put under valgrind" [ "$(call POST /v1/deposits "$work/put.json")" = 201 ]
uuid=$(sed -n 's/.*"uuid":"\([^"]*\)".*/\1/p' "$work/body")
check "deposit get" [ "$(call GET "/v1/deposits/$uuid")" = 200 ]
check "deposit find by handle" [ "$(call GET "/v1/deposits?handle=disk1")" = 200 ]
check "deposit delete" [ "$(call DELETE "/v1/deposits/$uuid")" = 200 ]
forged=$(curl -sk --max-time 60 -o /dev/null -w '%{http_code}' -H "X-KT-Client: $c1" \
    -H "X-KT-Timestamp: $(date +%s)" -H "X-KT-Nonce: AAAAAAAAAAAAAAAAAAAAAA==" \
    -H "X-KT-Signature: $(head -c 64 /dev/zero | base64 -w0)" "$url/v1/deposits")
check "a forged request is 401" [ "$forged" = 401 ]
"$BIN/keytrustee-orgtool" disable-client --fingerprint "$c1" >/dev/null 2>&1
check "a disabled client is 403" [ "$(call GET /v1/deposits)" = 403 ]
curl -sk --max-time 60 -o /dev/null "$url/v1/status"
curl -sk --max-time 60 -o /dev/null "$url/metrics"

kt_stop server TERM
kt_stop db TERM
clean() { # NAME: 0 errors and nothing definitely lost
    local log=$work/$1.valgrind
    grep -q 'ERROR SUMMARY: 0 errors' "$log" &&
        { grep -q 'definitely lost: 0 bytes' "$log" || grep -q 'All heap blocks were freed' "$log" ||
          ! grep -q 'definitely lost' "$log"; } ||
        { grep -E 'ERROR SUMMARY|definitely lost' "$log" | sed 's/^/# /'; return 1; }
}
check "keytrusteed: 0 valgrind errors, 0 bytes definitely lost" clean server
check "keytrustee-db: 0 valgrind errors, 0 bytes definitely lost" clean db
grep -hE 'ERROR SUMMARY|definitely lost|in use at exit' "$work/server.valgrind" "$work/db.valgrind" | sed 's/^/# /'
kt_finish
