#!/usr/bin/env bash
# test_monitoring.sh — keytrusteed's monitoring endpoints on a real node over TLS, with curl:
#   /v1/health and /v1/health?write=1 answer 200 or 503 as docs/api.md says, with keytrustee-db up
#   and down; /v1/status has every documented field with the right types and values (certificate
#   expiry from the served certificate, counts only for loopback callers); /metrics passes a strict
#   Prometheus text-format check (tests/tools/prometheus_check.py, and promtool when installed),
#   has the documented families, and its counters count; keytrusteed logs one line per request with
#   a level and no secrets, and logs keytrustee-db going away and coming back.
# The replication fields with a real pair, and role and peer changes: test_failover.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nodes.sh"

CHECKER="python3 $KT_ROOT/tests/tools/prometheus_check.py"
check "the Prometheus format checker passes its own tests" bash -c "$CHECKER --self-test >'$KT_WORK/selftest.log'"

# Listen on every address, so that a non-loopback caller can be tried when the host has one.
port=$(kt_free_port)
kt_node_create alpha 127.0.0.1 "$port" || { echo "Bail out! ktadmin init failed"; exit 1; }
home=$(kt_node_home alpha)
sed -i 's/^listen = .*/listen = 0.0.0.0/' "$home/.keytrustee/keytrustee.conf"
grep -q '^listen = 0.0.0.0' "$home/.keytrustee/keytrustee.conf" || echo "listen = 0.0.0.0" >>"$home/.keytrustee/keytrustee.conf"
kt_node_start_db alpha && kt_node_start_api alpha || { echo "Bail out! node did not start"; exit 1; }
url=$(kt_node_url alpha)
ca=$(kt_node_ca alpha)
api_log=$KT_WORK/alpha-api.log

# get PATH: curl with the node's CA; body in $KT_WORK/body, status in $CODE.
get() { CODE=$(curl -sS --cacert "$ca" -o "$KT_WORK/body" -w '%{http_code}' "$url$1"); }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(eval(sys.argv[2], {'d': d})))" "$KT_WORK/body" "$1"; }
json_check() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2], {'d': d}) else 1)" "$KT_WORK/body" "$1"; }
metric() { awk -v name="$1" '$1 == name { print $2 }' "$KT_WORK/metrics"; }
scrape() { get /metrics && cp "$KT_WORK/body" "$KT_WORK/metrics"; }

secret=$(kt_node_org alpha acme)
"$KT_BIN/ktclient" --confdir "$KT_WORK/c1" register --server "$url" --org acme --auth "$secret" \
  --cacert "$ca" >/dev/null 2>&1 || not_ok "a client registers"
printf 'MONITOR-PLAINTEXT-5d1e' | "$KT_BIN/ktclient" --confdir "$KT_WORK/c1" put --handle disk1 >/dev/null

# ---- Health ---------------------------------------------------------------------------------

get /v1/health
check "health: 200 with keytrustee-db up" test "$CODE" = 200
check "health: role, writable, version" json_check 'd == {"role": "standalone", "writable": True, "version": d["version"]}'
get "/v1/health?write=1"
check "health?write=1: 200 on a writable node" test "$CODE" = 200
get "/v1/health?write=0"
check "health?write=0: 200" test "$CODE" = 200
get "/v1/health?write=yes"
check "health?write=yes: 400" test "$CODE" = 400
get "/v1/health?verbose=1"
check "health with an unknown parameter: 400" test "$CODE" = 400

# ---- Status ---------------------------------------------------------------------------------

get /v1/status
check "status: 200" test "$CODE" = 200
cp "$KT_WORK/body" "$KT_WORK/status.json"
check "status has every documented field" json_check 'set(d) == {"role", "database", "serves_reads", "writable", "reason", "reason_message", "active_url", "state", "epoch", "synchronous", "peer", "position", "peer_position", "lag_transactions", "lag_seconds", "started", "uptime_seconds", "version", "server_fingerprint", "certificate", "counts", "last_backup"} and set(d["peer"]) == {"connected", "address"}'
check "status: standalone, database up, serves reads, writable, no reason" \
  json_check 'd["role"] == "standalone" and d["database"] == "up" and d["serves_reads"] is True and d["writable"] is True and d["reason"] is None'
check "status: uptime and start time are consistent" \
  json_check 'isinstance(d["uptime_seconds"], int) and 0 <= d["uptime_seconds"] < 600 and d["started"] > 1500000000'
fingerprint=$(curl -sS --cacert "$ca" "$url/?a=fingerprint" | tr -d '\n')
check "status: server_fingerprint is the node's" json_check "d['server_fingerprint'] == '$fingerprint'"
not_after=$(date -d "$(openssl x509 -in "$home/.keytrustee/.ssl/ssl-cert-keytrustee.pem" -noout -enddate | cut -d= -f2)" +%s)
check "status: certificate.not_after is the served certificate's (openssl: $not_after)" \
  json_check "d['certificate']['not_after'] == $not_after and abs(d['certificate']['expires_in_seconds'] - ($not_after - $(date +%s))) < 60"
check "status: counts from loopback (1 org, 1 client, 2 deposits: master key and disk1)" \
  json_check 'd["counts"] == {"orgs": 1, "clients": 1, "deposits": 2}'
check "status: last_backup is null (no backups yet)" json_check 'd["last_backup"] is None'
check "status: replication fields have their types" \
  json_check 'd["lag_transactions"] is None or isinstance(d["lag_transactions"], int)'
check "status: holds no secret" bash -c "! grep -qi 'secret\|MONITOR-PLAINTEXT' '$KT_WORK/status.json'"
get "/v1/status?x=1"
check "status with a parameter: 400" test "$CODE" = 400

other=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v '^127\.' | grep -E '^[0-9.]+$' | head -n 1)
if [ -n "$other" ] && curl -sk --max-time 3 -o "$KT_WORK/body" "https://$other:$port/v1/status"; then
  check "status from a non-loopback address ($other): counts are null" json_check 'd["counts"] is None and d["role"] == "standalone"'
else
  echo "ok - status from a non-loopback address # SKIP this host has no other address"
  kt_passed=$((kt_passed + 1))
fi

# ---- Metrics --------------------------------------------------------------------------------

for _ in 1 2 3; do get /v1/health; done
scrape
check "metrics: 200" test "$CODE" = 200
check "metrics: Content-Type is the text format 0.0.4" bash -c \
  "curl -sS --cacert '$ca' -D - -o /dev/null '$url/metrics' | grep -qi '^Content-Type: text/plain; version=0.0.4'"
if $CHECKER "$KT_WORK/metrics" >"$KT_WORK/check.log"; then ok "metrics: strict text-format check ($(cat "$KT_WORK/check.log"))"; else not_ok "metrics: strict text-format check" "$(head -5 "$KT_WORK/check.log")"; fi
if command -v promtool >/dev/null; then
  check "metrics: promtool check metrics" bash -c "promtool check metrics <'$KT_WORK/metrics'"
else
  echo "ok - metrics: promtool check metrics # SKIP promtool not installed"
  kt_passed=$((kt_passed + 1))
fi
for family in keytrustee_up keytrustee_writable keytrustee_role keytrustee_build_info \
  keytrustee_start_time_seconds keytrustee_certificate_expiry_seconds \
  keytrustee_http_requests_total keytrustee_http_request_duration_seconds \
  keytrustee_writes_refused_total keytrustee_db_write_duration_seconds; do
  check "metrics: has $family" grep -q "^# TYPE $family " "$KT_WORK/metrics"
done
check "metrics: keytrustee_up 1, writable 1, role standalone" \
  test "$(metric keytrustee_up)" = 1 -a "$(metric keytrustee_writable)" = 1 -a "$(metric 'keytrustee_role{role="standalone"}')" = 1
health_count=$(metric 'keytrustee_http_requests_total{endpoint="/v1/health",method="GET",status="200"}')
check "metrics: counts health requests (${health_count:-none}; 6 answered 200)" test "${health_count:-0}" -eq 6
get /v1/health
scrape
check "metrics: the count goes up by one per request" \
  test "$(metric 'keytrustee_http_requests_total{endpoint="/v1/health",method="GET",status="200"}')" -eq $((health_count + 1))
check "metrics: routes with a uuid are labelled {uuid}, not with the uuid" \
  bash -c "! grep -E 'endpoint=\"/v1/deposits/[0-9a-f]{8}' '$KT_WORK/metrics'"
check "metrics: the writes so far were timed (db write histogram count > 0)" test "$(metric keytrustee_db_write_duration_seconds_count)" -gt 0
expiry=$(metric keytrustee_certificate_expiry_seconds)
check "metrics: certificate expiry seconds match the certificate ($expiry)" \
  test $((not_after - $(date +%s) - ${expiry%.*})) -lt 60
check "metrics: no row counts exported (/metrics answers anyone)" \
  bash -c "! grep -Eq '^keytrustee_[a-z_]*(orgs|clients|deposits)' '$KT_WORK/metrics'"

# ---- The last backup, as keytrustee-db reports it (from $KEYTRUSTEE_HOME/last-backup.json) ----

printf '{"time":1764327600,"result":"ok","path":"%s/backups/b1"}' "$home" >"$home/last-backup.json"
chmod 600 "$home/last-backup.json"
get /v1/status
if json_check 'd["last_backup"] is not None'; then
  check "status: last_backup from loopback has time, result and path" \
    json_check "d['last_backup'] == {'time': 1764327600, 'result': 'ok', 'path': '$home/backups/b1'}"
  if [ -n "$other" ]; then
    curl -sk --max-time 3 -o "$KT_WORK/body" "https://$other:$port/v1/status"
    check "status: last_backup from elsewhere has no path" json_check 'd["last_backup"] == {"time": 1764327600, "result": "ok"}'
  fi
  scrape
  check "metrics: last backup time and success" \
    test "$(metric keytrustee_last_backup_timestamp_seconds)/$(metric keytrustee_last_backup_success)" = "1764327600/1"
  check "metrics: still strictly valid with the backup gauges" bash -c "$CHECKER '$KT_WORK/metrics' >/dev/null"
else
  echo "ok - last_backup passthrough # SKIP this keytrustee-db does not report last_backup"
  kt_passed=$((kt_passed + 1))
fi

# ---- keytrustee-db down ----------------------------------------------------------------------

kt_stop alpha-db
get /v1/health
check "health: 503 with keytrustee-db down" test "$CODE" = 503
get "/v1/health?write=1"
check "health?write=1: 503 with keytrustee-db down" test "$CODE" = 503
get /v1/status
check "status: still 200, database down, no reads, reason database_down" \
  json_check 'd["database"] == "down" and d["serves_reads"] is False and d["writable"] is False and d["reason"] == "database_down" and d["role"] is None'
scrape
check "metrics: still served; keytrustee_up 0, writable 0" test "$CODE" = 200 -a "$(metric keytrustee_up)" = 0 -a "$(metric keytrustee_writable)" = 0
check "metrics: still strictly valid" bash -c "$CHECKER '$KT_WORK/metrics' >/dev/null"
printf 'x' | "$KT_BIN/ktclient" --confdir "$KT_WORK/c1" put --handle refused >/dev/null 2>&1
check "a write while keytrustee-db is down is refused (exit 3)" test $? -eq 3
scrape
check "metrics: the refusal is counted by reason" test "$(metric 'keytrustee_writes_refused_total{reason="unavailable"}')" = 1
for _ in $(seq 1 40); do grep -q "keytrustee-db stopped answering" "$api_log" && break; sleep 0.1; done
check "log: the monitor noticed keytrustee-db going away (warning)" grep -q "warning: keytrustee-db stopped answering" "$api_log"

kt_node_start_db alpha || not_ok "keytrustee-db restarts"
for _ in $(seq 1 40); do get /v1/health; [ "$CODE" = 200 ] && break; sleep 0.1; done
check "health: 200 again once keytrustee-db is back" test "$CODE" = 200
for _ in $(seq 1 40); do grep -q "keytrustee-db answers again" "$api_log" && break; sleep 0.1; done
check "log: the monitor noticed it coming back" grep -q "info: keytrustee-db answers again" "$api_log"

# ---- The request log ------------------------------------------------------------------------

check "log: one line per request, with a level" grep -q "info: GET /v1/health 200 [0-9.]* ms client - from 127.0.0.1" "$api_log"
check "log: a 503 is logged at warning with its error code" grep -q "warning: POST /v1/deposits 503 unavailable" "$api_log"
check "log: authenticated requests name the client" grep -q "POST /v1/deposits 201 .* client [0-9A-F]\{40\}" "$api_log"
check "log: no deposit plaintext, org secret or signature" \
  bash -c "! grep -q -e 'MONITOR-PLAINTEXT' -e '$secret' -e 'X-KT-Signature' '$api_log'"

kt_finish
