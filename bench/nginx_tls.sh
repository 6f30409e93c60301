#!/usr/bin/env bash
# bench/nginx_tls.sh — the HTTPS baseline: Debian's nginx serving a 180-byte static JSON over
# TLS 1.2 on loopback, measured with wrk. Also the wrk measurement used for the candidate.
#
#   bench/nginx_tls.sh [run.sh options]   runs only this baseline (= bench/run.sh --suites https
#                                         --systems nginx-tls12 ...)
# Sourced by bench/run.sh for its functions:
#   nginx_setup         self-signed ECDSA P-256 certificate (as keytrusteed's), config, start
#   nginx_url           https://127.0.0.1:PORT/deposit.json
#   nginx_teardown      stops the master by PID
#   bench_wrk URL CONNECTIONS SECONDS [--close] [--header 'Name: value']... [--header-file FILE]
#                       [--script FILE]
#       one wrk run: 2 threads (1 at 1 connection), --latency; --close adds 'Connection: close'
#       (a new TCP connection and full TLS handshake per request). --header-file: one header a
#       line. --script: a Lua file defining request()/init()/response() (signed requests for
#       keytrusteed), loaded by bench/wrk/report.lua. Prints one JSON line {ops_per_s, p50_ms,
#       p99_ms, p999_ms, errors, ...}.
#
# nginx runs with its own config under build/bench/nginx (pid file, error log, temp paths there),
# master_process on, worker_processes 2, daemon off (started in the background, its PID recorded),
# access_log off, keepalive_requests high (wrk's keep-alive connections are never recycled), no
# TLS session cache and no tickets (so --close means full handshakes).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  exec "$BENCH_ROOT/bench/run.sh" --suites https --systems nginx-tls12 "$@"
fi

NGINX_DIR="$BENCH_DIR/nginx"
NGINX_PORT=""
NGINX_PID=""
NGINX_BODY_BYTES=180

nginx_url() { echo "https://127.0.0.1:$NGINX_PORT/deposit.json"; }

nginx_setup() {
  command -v nginx >/dev/null || bench_die "nginx is not installed (bench/install-deps.sh)"
  command -v wrk >/dev/null || bench_die "wrk is not installed (bench/install-deps.sh)"
  local old
  old="$(cat "$NGINX_DIR/nginx.pid" 2>/dev/null || true)"
  if [ -n "$old" ] && bench_pid_alive "$old" && grep -q nginx "/proc/$old/comm" 2>/dev/null; then
    bench_log "stopping a leftover nginx (pid $old) from an earlier bench run"
    bench_stop_pid "$old" TERM 10
  fi
  rm -rf "$NGINX_DIR"
  mkdir -p "$NGINX_DIR/html" "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
  chmod 0755 "$NGINX_DIR" "$NGINX_DIR/html"
  NGINX_PORT="$(bench_free_port)"

  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=127.0.0.1" -keyout "$NGINX_DIR/key.pem" -out "$NGINX_DIR/cert.pem" \
    >"$NGINX_DIR/logs/openssl.log" 2>&1 || { cat "$NGINX_DIR/logs/openssl.log" >&2; bench_die "openssl req failed"; }

  # A deposit-shaped JSON document of exactly NGINX_BODY_BYTES bytes.
  python3 - "$NGINX_DIR/html/deposit.json" "$NGINX_BODY_BYTES" <<'EOF'
import json, sys
path, size = sys.argv[1], int(sys.argv[2])
doc = {"uuid": "3f1c2a9e-8b7d-4c6e-9a5f-0d1e2f3a4b5c", "handle": "hdfs-ez-key-0001",
       "state": "active", "created": 1700000000, "deposit": ""}
base = len(json.dumps(doc, separators=(",", ":")))
doc["deposit"] = "A" * (size - base)
text = json.dumps(doc, separators=(",", ":"))
assert len(text) == size, len(text)
open(path, "w").write(text)
EOF

  cat >"$NGINX_DIR/nginx.conf" <<EOF
# bench/nginx_tls.sh: the "fast TLS server" ceiling for keytrusteed's HTTPS API.
worker_processes 2;
master_process on;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    types { application/json json; }
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name localhost;
        ssl_certificate $NGINX_DIR/cert.pem;
        ssl_certificate_key $NGINX_DIR/key.pem;
        ssl_protocols TLSv1.2;
        ssl_session_cache off;
        ssl_session_tickets off;
        root $NGINX_DIR/html;
        location = /deposit.json { }
    }
}
EOF
  nginx -t -q -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log" \
    || bench_die "nginx -t rejected $NGINX_DIR/nginx.conf"
  bench_at_exit nginx_teardown
  nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log" \
    >"$NGINX_DIR/logs/stdout.log" 2>&1 &
  NGINX_PID=$!
  bench_wait_port "$NGINX_PORT" 10 || { cat "$NGINX_DIR/logs/error.log" >&2; bench_die "nginx did not listen on port $NGINX_PORT"; }
  local got
  got="$(curl -sk --tlsv1.2 --tls-max 1.2 "$(nginx_url)" | wc -c)"
  [ "$got" = "$NGINX_BODY_BYTES" ] || bench_die "nginx served $got bytes, expected $NGINX_BODY_BYTES"
  bench_log "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): pid $NGINX_PID, $(nginx_url) (TLS 1.2, ${NGINX_BODY_BYTES}-byte JSON)"
}

nginx_teardown() {
  if [ -n "$NGINX_PID" ]; then
    bench_stop_pid "$NGINX_PID" TERM 10   # SIGTERM: fast shutdown of the master and its workers
    NGINX_PID=""
  fi
}

# bench_wrk URL CONNECTIONS SECONDS [--close] [--header H]... [--header-file F] [--script F]
bench_wrk() {
  local url="$1" connections="$2" seconds="$3"
  shift 3
  local threads script="" out line
  local -a headers=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --close) headers+=(-H "Connection: close"); shift ;;
      --header) headers+=(-H "$2"); shift 2 ;;
      --header-file)
        [ -r "$2" ] || bench_die "bench_wrk: cannot read header file $2"
        while IFS= read -r line; do [ -n "$line" ] && headers+=(-H "$line"); done <"$2"
        shift 2 ;;
      --script) script="$2"; shift 2 ;;
      *) bench_die "bench_wrk: unknown option $1" ;;
    esac
  done
  threads="$(bench_min 2 "$connections")"
  out="$(mktemp "$BENCH_LOGS/wrk.XXXXXX")"
  if ! WRK_REQUEST_SCRIPT="$script" timeout -k 5 $((seconds + 30)) wrk -t "$threads" \
      -c "$connections" -d "${seconds}s" --timeout 5s --latency -s "$BENCH_ROOT/bench/wrk/report.lua" \
      "${headers[@]}" "$url" >"$out" 2>&1; then
    cat "$out" >&2
    bench_die "wrk against $url failed"
  fi
  bench_py wrk-json "$out" | bench_py tag tool=wrk threads="$threads" connections="$connections"
  mv "$out" "$BENCH_LOGS/wrk.last.txt"
}
