#!/usr/bin/env bash
# `make run`: starts an active/passive keytrustee pair on loopback by the seed's own procedure,
# adds a demo org, registers a demo client that knows both servers, and prints how to use it.
# `make stop` (this script with --stop) stops what it started.
#
#   keytrustee01 (active):  https://127.0.0.11:11371, replication 127.0.0.11:11381, home build/run/kt01
#   keytrustee02 (passive): https://127.0.0.12:11371, home build/run/kt02
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$root/build/bin
run=$root/build/run
a_home=$run/kt01
b_home=$run/kt02
client_dir=$run/demo-client
a_address=127.0.0.11
b_address=127.0.0.12

stop_node() {
  local home=$1 service pidfile pid
  for service in keytrusteed keytrustee-db; do
    pidfile=$home/run/$service.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

wait_for() { for _ in $(seq 1 100); do eval "$1" && return 0; sleep 0.05; done; echo "timed out waiting: $1" >&2; return 1; }

if [ "${1:-}" = "--stop" ]; then
  for home in "$b_home" "$a_home"; do [ -d "$home" ] && stop_node "$home"; done
  echo "stopped the keytrustee pair in $run"
  exit 0
fi

for home in "$b_home" "$a_home"; do [ -d "$home" ] && stop_node "$home"; done
rm -rf "$run"
mkdir -p "$run" "$b_home"
chmod 700 "$run" "$b_home"

echo "== keytrustee01 (active)"
export KEYTRUSTEE_HOME=$a_home
"$bin/ktadmin" init --external-address "$a_address" --listen "$a_address"
rsync -a --exclude .ssl "$a_home/.keytrustee" "$b_home/"
"$bin/ktadmin" db --bootstrap --port 11381 --pg-rootdir "$a_home/db" --slave keytrustee02 >/dev/null
"$bin/keytrustee-db" --pg-rootdir "$a_home/db"
wait_for "[ -S '$a_home/run/keytrustee-db.sock' ]"
"$bin/keytrusteed"
wait_for "(exec 3<>/dev/tcp/$a_address/11371) 2>/dev/null"

echo "== keytrustee02 (passive)"
export KEYTRUSTEE_HOME=$b_home
"$bin/ktadmin" init-slave --master "$a_address" --pg-rootdir "$b_home/db" --no-import-key --no-start
"$bin/keytrustee-db" --pg-rootdir "$b_home/db"
wait_for "[ -S '$b_home/run/keytrustee-db.sock' ]"
"$bin/ktadmin" init --external-address "$b_address" --listen "$b_address"
"$bin/keytrusteed"
wait_for "(exec 3<>/dev/tcp/$b_address/11371) 2>/dev/null"

echo "== keytrustee01: enable synchronous replication"
export KEYTRUSTEE_HOME=$a_home
"$bin/ktadmin" enable-synchronous-replication --pg-rootdir "$a_home/db"

"$bin/keytrustee-orgtool" add -n demo -c demo@example.com >/dev/null
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["demo"]["auth_secret"])' \
  < <("$bin/keytrustee-orgtool" list))
ca=$run/pair-ca.pem
cat "$a_home/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" "$b_home/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" >"$ca"
"$bin/ktclient" --confdir "$client_dir" register --server "https://$a_address:11371" \
  --passive-server "https://$b_address:11371" --org demo --auth "$secret" \
  --clientname demo-client --cacert "$ca" >/dev/null

cat <<INFO

keytrustee is running as an active/passive pair with synchronous replication:
  keytrustee01 (active)   https://$a_address:11371   home $a_home
  keytrustee02 (passive)  https://$b_address:11371   home $b_home
  demo org:     demo   (auth secret: $secret)
  demo client:  $client_dir  (knows both servers)

Try:
  echo -n 'my disk key' | $bin/ktclient --confdir $client_dir put --handle disk1
  $bin/ktclient --confdir $client_dir get --handle disk1
  $bin/ktclient --confdir $client_dir list
  curl --cacert $ca 'https://$b_address:11371/?a=fingerprint'
  KEYTRUSTEE_HOME=$a_home $bin/ktadmin status        # role, sync state, positions, lag
  KEYTRUSTEE_HOME=$b_home $bin/ktadmin status
  KEYTRUSTEE_HOME=$a_home $bin/keytrustee-orgtool list
Lose the passive and see writes refused while reads go on:
  kill \$(cat $b_home/run/keytrustee-db.pid)
  echo -n k2 | $bin/ktclient --confdir $client_dir put --handle disk2     # exit 3, says why
  $bin/ktclient --confdir $client_dir get --handle disk1                 # still works
  KEYTRUSTEE_HOME=$b_home $bin/keytrustee-db --pg-rootdir $b_home/db     # it catches up by itself

Stop it with: make stop
INFO
