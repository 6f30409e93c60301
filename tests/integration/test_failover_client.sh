#!/usr/bin/env bash
# test_failover_client.sh — ktclient's failover rules end to end, over real TLS, with one real
# node and stand-ins for the other node's states that need no replicated pair:
#   - a dead node (a port nobody listens on: connection refused),
#   - a hung node (kt_proxy in "drop" mode: TCP connects, nothing ever answers),
#   - fake nodes (tests/tools/fake_node.py, serving the real node's certificate) that answer every
#     request with one canned refusal: a passive naming an active, an active whose peer is down,
#     a 500, a 404, a 401, a 403,
#   - a second real node that does not know the client (a 401 after a failover proves it was asked).
# Reads must move on refusal, timeout, TLS failure and 5xx, and never on 401/403/404; writes move
# only when nothing was sent or to the active a passive names; a degraded pair gives exit 3 and one
# line naming the node that is down. The same rules with a real pair: test_failover.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nodes.sh"

KTCLIENT=$KT_BIN/ktclient
address=127.0.0.1

kt_node_start alpha $address "$(kt_free_port)" || { echo "Bail out! node alpha did not start"; exit 1; }
alpha=$(kt_node_url alpha)
ca=$(kt_node_ca alpha)
ssl=$(kt_node_home alpha)/.keytrustee/.ssl
secret=$(kt_node_org alpha acme)
[ -n "$secret" ] || { echo "Bail out! no org secret"; exit 1; }

dead="https://$address:$(kt_free_port)"

# ---- Helpers ---------------------------------------------------------------------------------

# fake NAME STATUS BODY [OPTION]: a fake node answering STATUS and BODY; sets FAKE_URL.
fake() {
  local name=$1 status=$2 body=$3 port
  port=$(kt_free_port)
  kt_start "fake-$name" python3 "$KT_ROOT/tests/tools/fake_node.py" --cert "$ssl/ssl-cert-keytrustee.pem" \
    --key "$ssl/ssl-cert-keytrustee-pk.pem" --host $address --port "$port" --status "$status" \
    --body "$body" --log "$KT_WORK/fake-$name.requests" "${@:4}"
  : >"$KT_WORK/fake-$name.requests"
  kt_wait_port $address "$port" || not_ok "fake node $name listens"
  FAKE_URL="https://$address:$port"
}

# clone SOURCE DEST SERVER PASSIVE: the same client identity with other servers in client.conf.
clone() {
  rm -rf "$2" && cp -a "$1" "$2" && rm -f "$2/client.state" &&
    sed -i -e "s|^server = .*|server = $3|" -e "s|^passive_server =.*|passive_server = $4|" "$2/client.conf"
}

# run NAME ARGS...: ktclient with its stdout, stderr, status and duration (ms) kept.
run() {
  local start
  start=$(kt_now_ms)
  "$KTCLIENT" --confdir "$KT_WORK/$1" "${@:2}" >"$KT_WORK/out" 2>"$KT_WORK/err"
  STATUS=$?
  ELAPSED=$(($(kt_now_ms) - start))
}

requests_to() { wc -l <"$KT_WORK/fake-$1.requests"; }
err_lines() { grep -vc "^warning: --skip-ssl-check" "$KT_WORK/err"; }
show_err() { sed 's/^/#   /' "$KT_WORK/err"; } # the message, for whoever reads the log
# count_on NAME METHOD ENDPOINT: requests alpha's /metrics counted for that route and method.
count_on() {
  curl -sk "$(kt_node_url "$1")/metrics" |
    awk -v e="endpoint=\"$3\"" -v m="method=\"$2\"" 'index($0, "keytrustee_http_requests_total{") == 1 &&
      index($0, e) && index($0, m) { total += $NF } END { print total + 0 }'
}

# ---- Registration and reads with a dead node -----------------------------------------------

"$KTCLIENT" --confdir "$KT_WORK/c1" register --server "$dead" --passive-server "$alpha" --org acme \
  --auth "$secret" --clientname one --cacert "$ca" >"$KT_WORK/fp" 2>"$KT_WORK/err"
check "register with the first server dead goes to the other (nothing was sent)" test $? -eq 0
check "register prints the fingerprint" grep -Eq '^[0-9A-F]{40}$' "$KT_WORK/fp"
check "client.conf records the default connect timeout" grep -qx "connect_timeout_ms = 1000" "$KT_WORK/c1/client.conf"
run c1 list --search ktclient-master-key
check "register stored the master key deposit" grep -q "ktclient-master-key" "$KT_WORK/out"

printf 'disk secret one' >"$KT_WORK/secret1"
run c1 put --handle disk1 --file "$KT_WORK/secret1"
check "put with the active dead goes to the other node when nothing was sent" test "$STATUS" -eq 0
rm -f "$KT_WORK/c1/client.state"
run c1 get --handle disk1
check "a read with the first server refusing connections succeeds" test "$STATUS" -eq 0 -a "$(cat "$KT_WORK/out")" = "disk secret one"
echo "# the read with the first server refusing connections took ${ELAPSED} ms"
check "the failed server is remembered in client.state" grep -qx "avoid = $dead" "$KT_WORK/c1/client.state"
check "client.state is 0600" test "$(stat -c %a "$KT_WORK/c1/client.state")" = 600
check "client.state holds no key material" \
  bash -c "! grep -qv -e '^#' -e '^avoid = https://' -e '^until = [0-9]*\$' '$KT_WORK/c1/client.state'"
files=$(cd "$KT_WORK/c1" && ls -A | sort | tr '\n' ' ')
check "the confdir holds only key, conf, CA and hint ($files)" test "$files" = "client.conf client.key client.state server-ca.pem "

# ---- A hung node: connects, never answers ---------------------------------------------------

mkfifo "$KT_WORK/proxy.fifo"
hung_port=$(kt_free_port)
kt_start proxy "$KT_TESTS/kt_proxy" $address "$hung_port" $address "${alpha##*:}" "$KT_WORK/proxy.fifo"
kt_wait_port $address "$hung_port" || not_ok "kt_proxy listens"
echo drop >"$KT_WORK/proxy.fifo"
hung="https://$address:$hung_port"
clone "$KT_WORK/c1" "$KT_WORK/c2" "$hung" "$alpha"
run c2 get --handle disk1
check "a read with the first server hung succeeds from the other" test "$STATUS" -eq 0 -a "$(cat "$KT_WORK/out")" = "disk secret one"
echo "# the read with the first server hung took ${ELAPSED} ms (first-attempt timeout 1 s)"
check "the hung server is remembered in client.state" grep -qx "avoid = $hung" "$KT_WORK/c2/client.state"
run c2 get --handle disk1
# client.state still names the hung node, so the next read asks the answering node first; asking
# the hung node would cost the 1 s first-attempt timeout (printed as a figure, not asserted).
echo "# the next read took ${ELAPSED} ms"
check "the next read succeeds and the hung node is still avoided" \
  test "$STATUS" -eq 0 -a "$(grep -c "^avoid = $hung\$" "$KT_WORK/c2/client.state")" = 1

# ---- 4xx is final, 5xx moves: a second real node that does not know the client --------------

kt_node_create beta $address "$(kt_free_port)"
beta_ssl=$(kt_node_home beta)/.keytrustee/.ssl
chmod 600 "$beta_ssl"/*.pem && cp "$ssl"/*.pem "$beta_ssl"/ && chmod 400 "$beta_ssl"/*.pem # alpha's certificate
kt_node_start_db beta && kt_node_start_api beta || not_ok "node beta starts"
beta=$(kt_node_url beta)
clone "$KT_WORK/c1" "$KT_WORK/c3" "$alpha" "$beta"
run c3 get --handle no-such-handle
check "a 404 is final (exit 4)" test "$STATUS" -eq 4
check "... and the other node was not asked" test "$(count_on beta GET /v1/deposits)" -eq 0
kt_stop alpha-db
run c3 get --handle disk1
show_err
check "a 503 from a node whose database is down moves the read to the other node" test "$(count_on beta GET /v1/deposits)" -eq 1
check "... whose 401 (it does not know this client) is the answer (exit 5)" test "$STATUS" -eq 5
check "... and the message names both nodes" grep -q "$alpha" "$KT_WORK/err"
kt_node_start_db alpha || not_ok "alpha's keytrustee-db restarts"

# ---- Fake nodes: canned answers -------------------------------------------------------------

fake f500 500 '{"error":"internal","message":"boom"}'
clone "$KT_WORK/c1" "$KT_WORK/c4" "$FAKE_URL" "$alpha"
run c4 get --handle disk1
check "a 500 moves the read to the other node" test "$STATUS" -eq 0 -a "$(cat "$KT_WORK/out")" = "disk secret one"

for refusal in "404 not_found 4" "401 unauthenticated 5" "403 forbidden 5"; do
  set -- $refusal
  fake "f$1" "$1" "{\"error\":\"$2\",\"message\":\"canned $1\"}"
  clone "$KT_WORK/c1" "$KT_WORK/c$1" "$FAKE_URL" "$alpha"
  before=$(count_on alpha GET /v1/deposits)
  run "c$1" get --handle disk1
  check "a $1 is final for reads (exit $3)" test "$STATUS" -eq "$3"
  check "... the other node was not asked" test "$(count_on alpha GET /v1/deposits)" -eq "$before"
  before=$(count_on alpha POST /v1/deposits)
  run "c$1" put --handle "after-$1" --file "$KT_WORK/secret1"
  check "a $1 is final for writes (exit $3, asked once)" test "$STATUS" -eq "$3" -a "$(requests_to "f$1")" -eq 2
  check "... the other node was not asked" test "$(count_on alpha POST /v1/deposits)" -eq "$before"
done

# The active is dead and the passive says so.
fake passive-dead 503 "{\"error\":\"passive\",\"message\":\"passive\",\"active\":\"$dead\"}"
passive_dead=$FAKE_URL
clone "$KT_WORK/c1" "$KT_WORK/c5" "$dead" "$passive_dead"
run c5 put --handle new-key --file "$KT_WORK/secret1"
show_err
check "active dead, passive up: a write exits 3" test "$STATUS" -eq 3
check "... with one line" test "$(err_lines)" -eq 1
check "... naming the node that is down" grep -q "$dead is down" "$KT_WORK/err"
check "... saying existing keys still work" grep -q "Existing keys still work" "$KT_WORK/err"
check "... asking the passive once (no retry loop)" test "$(requests_to passive-dead)" -eq 1

clone "$KT_WORK/c1" "$KT_WORK/c6" "$passive_dead" "$dead"
run c6 put --handle new-key --file "$KT_WORK/secret1"
check "the passive listed first names the dead active: exit 3, names it" test "$STATUS" -eq 3 -a "$(grep -c "$dead is down" "$KT_WORK/err")" -eq 1

# The active is up but cannot reach its passive.
fake lonely 503 '{"error":"write_unavailable","message":"the pair cannot make a write durable"}'
lonely=$FAKE_URL
clone "$KT_WORK/c1" "$KT_WORK/c7" "$lonely" "$dead"
run c7 put --handle new-key --file "$KT_WORK/secret1"
show_err
check "the passive is down: a write exits 3" test "$STATUS" -eq 3
check "... with one line naming the passive as down" test "$(err_lines)" -eq 1 -a "$(grep -c "$dead is down" "$KT_WORK/err")" -eq 1
check "... reads are served by the active, it says" grep -q "reads are served by $lonely" "$KT_WORK/err"
check "... asked once" test "$(requests_to lonely)" -eq 1

"$KTCLIENT" --confdir "$KT_WORK/c8" register --server "$lonely" --passive-server "$dead" --org acme \
  --auth "$secret" --cacert "$ca" >"$KT_WORK/out" 2>"$KT_WORK/err"
STATUS=$?
check "a new registration is refused while the pair is degraded (exit 3)" test "$STATUS" -eq 3
check "... saying the pair is degraded" grep -q "degraded" "$KT_WORK/err"
check "... leaving no half-made registration" test ! -e "$KT_WORK/c8/client.key"

# Registered, but the pair degrades before the master key is stored.
fake degrades 503 '{"error":"write_unavailable","message":"the pair cannot make a write durable"}' \
  --accept-registrations
"$KTCLIENT" --confdir "$KT_WORK/c14" register --server "$FAKE_URL" --passive-server "$dead" \
  --org acme --auth "$secret" --cacert "$ca" >"$KT_WORK/out" 2>"$KT_WORK/err"
STATUS=$?
show_err
check "registered but no master key: exit 3" test "$STATUS" -eq 3
check "... the fingerprint is printed (the client exists)" grep -Eqx '[0-9A-F]{40}' "$KT_WORK/out"
check "... the client directory is kept" test -s "$KT_WORK/c14/client.key" -a -s "$KT_WORK/c14/client.conf"
check "... the message says so and names create-master-key" \
  bash -c "grep -q 'is registered and saved' '$KT_WORK/err' && grep -q 'create-master-key' '$KT_WORK/err'"

# A passive naming a server this client does not know is not followed.
fake stranger 503 '{"error":"passive","message":"passive","active":"https://198.51.100.7:11371"}'
clone "$KT_WORK/c1" "$KT_WORK/c9" "$FAKE_URL" "$alpha"
before=$(count_on alpha POST /v1/deposits)
run c9 put --handle new-key --file "$KT_WORK/secret1"
show_err
check "a passive naming an unknown active: exit 3" test "$STATUS" -eq 3
check "... the write is not sent to the other configured node" test "$(count_on alpha POST /v1/deposits)" -eq "$before"
check "... and the message names the unknown active" grep -q "198.51.100.7" "$KT_WORK/err"

# A passive naming the other configured server: the write goes there.
fake passive-alpha 503 "{\"error\":\"passive\",\"message\":\"passive\",\"active\":\"$alpha\"}"
clone "$KT_WORK/c1" "$KT_WORK/c10" "$FAKE_URL" "$alpha"
run c10 put --handle via-passive --file "$KT_WORK/secret1"
check "a write refused by the passive goes to the active it names" test "$STATUS" -eq 0
run c1 get --handle via-passive
check "... and is stored there" test "$(cat "$KT_WORK/out")" = "disk secret one"

# ---- Reads keep working while writes are refused ----------------------------------------------

run c5 get --handle disk1
check "with the active dead, reads fail over (here to a fake that refuses them: exit 3, no hang)" test "$STATUS" -eq 3 -a "$ELAPSED" -lt 3000
clone "$KT_WORK/c1" "$KT_WORK/c11" "$dead" "$alpha"
run c11 get --handle disk1
check "with the active dead, reads come from the surviving node" test "$STATUS" -eq 0

# ---- Connect timeout option -----------------------------------------------------------------

run c1 --connect-timeout 0 get --handle disk1
check "--connect-timeout 0 is a usage error (exit 2)" test "$STATUS" -eq 2
run c1 get --handle disk1 --connect-timeout abc
check "--connect-timeout abc is a usage error (exit 2)" test "$STATUS" -eq 2
run c1 --connect-timeout 250 get --handle disk1
check "--connect-timeout overrides client.conf for one command" test "$STATUS" -eq 0
"$KTCLIENT" --confdir "$KT_WORK/c12" register --server "$alpha" --org acme --auth "$secret" \
  --cacert "$ca" --connect-timeout 700 >/dev/null 2>"$KT_WORK/err"
check "register --connect-timeout keeps it in client.conf" grep -qx "connect_timeout_ms = 700" "$KT_WORK/c12/client.conf"

"$KTCLIENT" --confdir "$KT_WORK/c13" register --server "$alpha" --org acme --auth "$secret" \
  --skip-ssl-check >/dev/null 2>"$KT_WORK/err"
check "--skip-ssl-check says loudly what it disables" grep -q "not verified; anyone on the network" "$KT_WORK/err"
run c13 list
check "... and again on every use" grep -q "not verified" "$KT_WORK/err"

kt_finish
