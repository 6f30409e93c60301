#!/usr/bin/env bash
# test_replay.sh — a captured signed request cannot be replayed on either node of a real pair
# (issue 7; docs/security.md "Replay across nodes"). Each node keeps its own nonce cache, so what
# stops a request captured on its way to node A from working once on node B is the Host line of
# the string to sign (docs/api.md): B refuses a request signed for A's authority.
#
# The pair is set up by the seed's procedure (tests/lib/pair.sh: keytrustee01 on 127.0.0.11
# active, keytrustee02 on 127.0.0.12 passive, synchronous replication). Requests are signed by
# tests/tools/kt_sign (written from docs/api.md alone) and sent with curl, so the test can hold a
# request back, send it to the other node, or rewrite its Host header, as an attacker would:
#   1. a read captured for A: A answers it once; replayed to B it is refused (401, "signed for
#      another server", no secret in the answer); replayed to A the nonce cache refuses it;
#   2. writes (put, delete) captured for A and replayed to B: refused, and nothing changes on
#      either node (deposit counts, the deposit still readable);
#   3. a request refused by B used up nothing: A still accepts it once;
#   4. a request signed for A whose Host header is rewritten to B: refused by B (the signature
#      covers the Host);
#   5. names: accepted_hosts, compared case-insensitively, with the default port (443) filled in
#      for a Host header without one; B refuses a name that is A's alone;
#   6. ktclient configured with both URLs signs per node: it follows B's "passive" answer to A,
#      and reads from B when A's keytrusteed is down.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pair.sh"

KTCLIENT=$KT_BIN/ktclient
KT_SIGN=${KT_SIGN:-$KT_TESTS/kt_sign}
[ -x "$KT_SIGN" ] || { echo "Bail out! $KT_SIGN does not exist (make tests)"; exit 1; }

pair_setup_with_org
secret=$PAIR_ORG_SECRET
A_AUTHORITY=${A_URL#https://}
B_AUTHORITY=${B_URL#https://}

# ---- Helpers ---------------------------------------------------------------------------------

# capture AUTHORITY METHOD TARGET BODYFILE: signs a request for AUTHORITY without sending it; the
# curl -H options (Host included) go to the array $captured.
capture() {
  captured=()
  local line
  while IFS= read -r line; do captured+=(-H "$line"); done \
    < <("$KT_SIGN" headers "$KT_WORK/signer" "$2" "$1" "$3" "$4")
}

# send URL METHOD TARGET BODYFILE HEADER-OPTIONS...: sets $CODE, the body in $KT_WORK/body.
send() {
  local url=$1 method=$2 target=$3 body=$4 data=()
  shift 4
  if [ -n "$body" ]; then data=(-H 'Content-Type: application/json' --data-binary "@$body"); fi
  CODE=$(curl -sS --max-time 20 --cacert "$KT_WORK/pair-ca.pem" -X "$method" -o "$KT_WORK/body" \
    -w '%{http_code}' "${data[@]}" "$@" "$url$target")
}

# without_host OPTIONS...: the options without the -H "Host: ..." pair, in $rewritten.
without_host() {
  rewritten=()
  while [ $# -gt 0 ]; do
    if [ "$1" = -H ] && [[ "$2" == Host:* ]]; then shift 2; continue; fi
    rewritten+=("$1")
    shift
  done
}

error_is() { # STATUS CODE [MESSAGE-PART]
  [ "$CODE" = "$1" ] && grep -q "\"error\":\"$2\"" "$KT_WORK/body" &&
    { [ -z "${3:-}" ] || grep -q "$3" "$KT_WORK/body"; }
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$KT_WORK/body" "$1" 2>/dev/null; }
deposits_on() { pair_status_field "$1" counts.deposits; }
# checkb NAME COMMAND...: check, showing the last answer when it fails.
checkb() {
  local name=$1
  shift
  if "$@"; then ok "$name"; else not_ok "$name" "status ${CODE:-?}, body: $(head -c 300 "$KT_WORK/body")"; fi
}
# ktclient_run CONFDIR ARGS...: ktclient with stdout in $KT_WORK/out, stderr in $KT_WORK/err.
ktclient_run() {
  "$KTCLIENT" --confdir "$1" "${@:2}" >"$KT_WORK/out" 2>"$KT_WORK/err"
  STATUS=$?
  sed 's/^/#   stderr: /' "$KT_WORK/err"
}

# ---- A client of both nodes ------------------------------------------------------------------

"$KTCLIENT" --confdir "$KT_WORK/c1" register --server "$A_URL" --passive-server "$B_URL" --org acme \
  --auth "$secret" --clientname one --cacert "$KT_WORK/pair-ca.pem" >/dev/null 2>"$KT_WORK/err"
check "ktclient registers with --server A --passive-server B" test $? -eq 0
# The same key, for kt_sign (its key file is the bare base64 of client.key).
mkdir -p "$KT_WORK/signer" && chmod 700 "$KT_WORK/signer"
sed -n 's/^keytrustee-client-key-v1 //p' "$KT_WORK/c1/client.key" >"$KT_WORK/signer/key"
chmod 600 "$KT_WORK/signer/key"

deposit_secret=$(head -c 48 /dev/urandom | base64 -w0)
printf '{"handle":"disk1","secret":"%s"}' "$deposit_secret" >"$KT_WORK/put.json"
capture "$A_AUTHORITY" POST /v1/deposits "$KT_WORK/put.json"
send "$A_URL" POST /v1/deposits "$KT_WORK/put.json" "${captured[@]}"
uuid=$(field uuid)
checkb "a put signed for A is stored by A" test "$CODE" = 201 -a ${#uuid} = 36

# ---- 1. A read captured on its way to A ------------------------------------------------------

capture "$A_AUTHORITY" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "A answers the read it was signed for" test "$CODE" = 200 -a "$(field secret)" = "$deposit_secret"

send "$B_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "the read replayed to B is 401 'signed for another server'" \
  error_is 401 unauthenticated "signed for another server"
check "... and B's answer carries no secret" \
  eval '! grep -q "$deposit_secret" "$KT_WORK/body" && [ -z "$(field secret)" ]'
check "... nor the signature or the nonce" \
  eval '! grep -qF -- "${captured[9]#X-KT-Signature: }" "$KT_WORK/body" &&
        ! grep -qF -- "${captured[7]#X-KT-Nonce: }" "$KT_WORK/body"'
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "the read replayed to A is refused by A's nonce cache" \
  error_is 401 unauthenticated "already used"
send "$B_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "... and replayed to B again, still refused" error_is 401 unauthenticated "another server"

# ---- 2. Writes captured for A, replayed to B: nothing changes ----------------------------------

pair_wait_state b in_sync
before_a=$(deposits_on a)
before_b=$(deposits_on b)
# ktclient's register stored its master key deposit too, so the count is not 1.
check "both nodes count the same deposits" test -n "$before_a" -a "$before_a" = "$before_b"

printf '{"handle":"disk2","secret":"%s"}' "$deposit_secret" >"$KT_WORK/put2.json"
capture "$A_AUTHORITY" POST /v1/deposits "$KT_WORK/put2.json"
put_capture=("${captured[@]}")
send "$B_URL" POST /v1/deposits "$KT_WORK/put2.json" "${put_capture[@]}"
checkb "a put signed for A, sent to B, is 401 (not 503: it is refused before anything else)" \
  error_is 401 unauthenticated "another server"

capture "$A_AUTHORITY" DELETE "/v1/deposits/$uuid" ""
delete_capture=("${captured[@]}")
send "$B_URL" DELETE "/v1/deposits/$uuid" "" "${delete_capture[@]}"
checkb "a delete signed for A, sent to B, is 401" error_is 401 unauthenticated "another server"

check "nothing changed on A (deposit count)" test "$(deposits_on a)" = "$before_a"
check "nothing changed on B (deposit count)" test "$(deposits_on b)" = "$before_b"
capture "$A_AUTHORITY" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "the deposit B was asked to delete is still on A" test "$CODE" = 200
capture "$B_AUTHORITY" GET "/v1/deposits/$uuid" ""
send "$B_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "... and on B (a read signed for B is served by the passive)" \
  test "$CODE" = 200 -a "$(field secret)" = "$deposit_secret"

# ---- 3. B's refusal used up nothing ------------------------------------------------------------

send "$A_URL" POST /v1/deposits "$KT_WORK/put2.json" "${put_capture[@]}"
checkb "the put B refused is still good once on A, the node it was signed for" test "$CODE" = 201
send "$A_URL" POST /v1/deposits "$KT_WORK/put2.json" "${put_capture[@]}"
checkb "... and only once" error_is 401 unauthenticated "already used"
pair_wait_state b in_sync
check "A and B count one deposit more" \
  test "$(deposits_on a)" = $((before_a + 1)) -a "$(deposits_on b)" = $((before_a + 1))

# ---- 4. The Host header rewritten --------------------------------------------------------------

capture "$A_AUTHORITY" GET "/v1/deposits/$uuid" ""
without_host "${captured[@]}"
send "$B_URL" GET "/v1/deposits/$uuid" "" "${rewritten[@]}" -H "Host: $B_AUTHORITY"
checkb "a request signed for A with its Host rewritten to B is refused by B" \
  error_is 401 unauthenticated "does not verify"
send "$B_URL" GET "/v1/deposits/$uuid" "" "${rewritten[@]}"
checkb "... also with curl's own Host for B's URL" error_is 401 unauthenticated "does not verify"
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "... while the untouched request is good on A (B's refusals used up nothing)" test "$CODE" = 200
capture "$A_AUTHORITY" GET "/v1/deposits/$uuid" ""
without_host "${captured[@]}"
send "$A_URL" GET "/v1/deposits/$uuid" "" "${rewritten[@]}" -H "Host: 127.0.0.99:$HTTPS_PORT"
checkb "a request signed for A with its Host rewritten to a stranger is refused by A" \
  error_is 401 unauthenticated "another server"
# curl sends one Host header whatever it is given: this request is written by hand.
capture "$A_AUTHORITY" GET "/v1/deposits/$uuid" ""
two_hosts=$(python3 - "$A_ADDRESS" "$HTTPS_PORT" "$KT_WORK/pair-ca.pem" "$uuid" "${captured[@]}" <<'PY'
import socket, ssl, sys
address, port, ca, uuid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
headers = [value for value in sys.argv[5:] if value != "-H"]
host = headers[0]
text = "GET /v1/deposits/%s HTTP/1.1\r\n%s\r\n%s\r\nConnection: close\r\n\r\n" % (
    uuid, host, "\r\n".join(headers))
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
with socket.create_connection((address, port), timeout=20) as raw:
    with context.wrap_socket(raw) as tls:
        tls.sendall(text.encode())
        answer = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
print(answer.decode(errors="replace").replace("\r\n", " "))
PY
)
if [[ "$two_hosts" == "HTTP/1.1 401 "*"Host header must be given once"* ]]; then
  ok "a request with two Host headers is refused"
else
  not_ok "a request with two Host headers is refused" "answer: ${two_hosts:0:400}"
fi

# ---- 5. Names: accepted_hosts, case, default port --------------------------------------------

printf 'accepted_hosts = KT01.Example.COM:%s, lb.example.com:443\n' "$HTTPS_PORT" \
  >>"$A_HOME/.keytrustee/keytrustee.conf"
pair_stop a api && pair_start_api a
check "A restarts with accepted_hosts" kt_wait_port "$A_ADDRESS" "$HTTPS_PORT"
logs_names() {
  grep -q "accepting requests signed for: .*kt01.example.com:$HTTPS_PORT.*lb.example.com:443" \
    "$KT_WORK/api_a.log"
}
for _ in $(seq 1 100); do logs_names && break; sleep 0.1; done
check "A logs the names it accepts" logs_names
capture "kt01.example.com:$HTTPS_PORT" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "A accepts a request signed for a name in accepted_hosts" test "$CODE" = 200
capture "Kt01.EXAMPLE.com:$HTTPS_PORT" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "... in any case" test "$CODE" = 200
capture "lb.example.com" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "... and a Host without a port as the https default, 443" test "$CODE" = 200
capture "lb.example.com:11371" GET "/v1/deposits/$uuid" ""
send "$A_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "a listed name at another port is refused" error_is 401 unauthenticated "another server"
capture "kt01.example.com:$HTTPS_PORT" GET "/v1/deposits/$uuid" ""
send "$B_URL" GET "/v1/deposits/$uuid" "" "${captured[@]}"
checkb "B refuses a request signed for a name that is A's alone" \
  error_is 401 unauthenticated "another server"
printf 'accepted_hosts = not a host:name\n' >>"$B_HOME/.keytrustee/keytrustee.conf"
KEYTRUSTEE_HOME=$B_HOME "$KT_BIN/keytrusteed" --foreground >"$KT_WORK/bad-names.out" 2>&1 &
bad_pid=$!
for _ in $(seq 1 100); do kill -0 "$bad_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$bad_pid" 2>/dev/null; then kill "$bad_pid"; fi
wait "$bad_pid"
bad_status=$?
check "a keytrusteed with a malformed accepted_hosts entry refuses to start, naming it" \
  eval '[ "$bad_status" != 0 ] && grep -q "accepted_hosts entry .host:name." "$KT_WORK/bad-names.out"'
sed -i '/^accepted_hosts = not a host:name$/d' "$B_HOME/.keytrustee/keytrustee.conf"

# ---- 6. ktclient signs for each node it asks ------------------------------------------------

rm -rf "$KT_WORK/c2" && cp -a "$KT_WORK/c1" "$KT_WORK/c2" && rm -f "$KT_WORK/c2/client.state"
sed -i -e "s|^server = .*|server = $B_URL|" -e "s|^passive_server =.*|passive_server = $A_URL|" \
  "$KT_WORK/c2/client.conf"
printf 'third secret' >"$KT_WORK/secret3"
ktclient_run "$KT_WORK/c2" put --handle disk3 --file "$KT_WORK/secret3"
check "ktclient asking the passive B first follows it to A for a put (each signed for its node)" \
  test "$STATUS" -eq 0
pair_wait_state b in_sync
pair_stop a api
ktclient_run "$KT_WORK/c1" get --handle disk3
check "with A's keytrusteed down, ktclient (A first) reads from B" \
  eval '[ "$STATUS" -eq 0 ] && [ "$(cat "$KT_WORK/out")" = "third secret" ]'
ktclient_run "$KT_WORK/c1" get --handle disk1
check "... every deposit (signed for B, accepted by B)" test "$STATUS" -eq 0

kt_finish
