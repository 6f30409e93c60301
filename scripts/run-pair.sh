#!/usr/bin/env bash
# `make run`: starts keytrustee on loopback with a demo org and a registered demo client, then
# prints how to use it. `make stop` (this script with --stop) stops what it started.
#
# Homes live in build/run/; the node listens on 127.0.0.11:11371 (HTTPS).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$root/build/bin
run=$root/build/run
active_home=$run/kt01
client_dir=$run/demo-client
active_address=127.0.0.11

stop_node() {
  local home=$1 service pidfile
  for service in keytrusteed keytrustee-db; do
    pidfile=$home/run/$service.pid
    if [ -f "$pidfile" ]; then
      local pid; pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
    fi
  done
}

if [ "${1:-}" = "--stop" ]; then
  [ -d "$active_home" ] && stop_node "$active_home"
  echo "stopped the keytrustee node in $run"
  exit 0
fi

[ -d "$active_home" ] && stop_node "$active_home"
rm -rf "$run"
mkdir -p "$run"
chmod 700 "$run"

export KEYTRUSTEE_HOME=$active_home
"$bin/ktadmin" init --external-address "$active_address" --listen "$active_address" --port 11371
"$bin/ktadmin" db --bootstrap >/dev/null
"$bin/keytrustee-db"
for _ in $(seq 1 100); do [ -S "$active_home/run/keytrustee-db.sock" ] && break; sleep 0.05; done
"$bin/keytrusteed"
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/$active_address/11371) 2>/dev/null && break; sleep 0.05; done

"$bin/keytrustee-orgtool" add -n demo -c demo@example.com >/dev/null
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["demo"]["auth_secret"])' \
  < <("$bin/keytrustee-orgtool" list))
ca=$active_home/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem
"$bin/ktclient" --confdir "$client_dir" register --server "https://$active_address:11371" \
  --org demo --auth "$secret" --clientname demo-client --cacert "$ca" >/dev/null

cat <<INFO

keytrustee is running on https://$active_address:11371 (home: $active_home)
  demo org:      demo   (auth secret: $secret)
  demo client:   $client_dir

Try:
  echo -n 'my disk key' | $bin/ktclient --confdir $client_dir put --handle disk1
  $bin/ktclient --confdir $client_dir get --handle disk1
  $bin/ktclient --confdir $client_dir list
  curl --cacert $ca 'https://$active_address:11371/?a=fingerprint'
  curl --cacert $ca https://$active_address:11371/v1/health
  KEYTRUSTEE_HOME=$active_home $bin/ktadmin status
  KEYTRUSTEE_HOME=$active_home $bin/keytrustee-orgtool list

Stop it with: make stop
INFO
