# tests/lib/nodes.sh — standalone keytrustee nodes for integration tests. Source it after
# tests/lib/common.sh, then:
#   kt_node_create NAME ADDRESS PORT  ktadmin init + db --bootstrap in $KT_WORK/NAME (a home)
#   kt_node_start_db NAME             start keytrustee-db (process "NAME-db"), wait for its socket
#   kt_node_start_api NAME            start keytrusteed (process "NAME-api"), wait for HTTPS
#   kt_node_start NAME ADDRESS PORT   all three
#   kt_node_home NAME / kt_node_url NAME / kt_node_ca NAME    where things are
#   kt_node_org NAME ORG              add an org, print its auth secret
#   kt_node_run NAME PROGRAM ARGS...  run an admin program against the node's home
# Processes are started with kt_start, so they are killed by PID when the script exits.

declare -A KT_NODE_URLS=()

kt_node_home() { echo "$KT_WORK/$1"; }
kt_node_url() { echo "${KT_NODE_URLS[$1]}"; }
kt_node_ca() { echo "$KT_WORK/$1/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem"; }
kt_node_run() { local name=$1; shift; KEYTRUSTEE_HOME=$(kt_node_home "$name") "$@"; }

kt_node_create() {
  local name=$1 address=$2 port=$3 home
  home=$(kt_node_home "$name")
  KT_NODE_URLS[$name]="https://$address:$port"
  KEYTRUSTEE_HOME=$home "$KT_BIN/ktadmin" init --external-address "$address" --listen "$address" \
    --port "$port" >"$KT_WORK/$name-init.log" 2>&1 &&
    KEYTRUSTEE_HOME=$home "$KT_BIN/ktadmin" db --bootstrap >>"$KT_WORK/$name-init.log" 2>&1
}

kt_node_start_db() {
  local name=$1 home
  home=$(kt_node_home "$name")
  kt_start "$name-db" env KEYTRUSTEE_HOME="$home" "$KT_BIN/keytrustee-db" --foreground
  for _ in $(seq 1 200); do
    [ -S "$home/run/keytrustee-db.sock" ] && return 0
    sleep 0.05
  done
  return 1
}

kt_node_start_api() {
  local name=$1 url
  url=$(kt_node_url "$name")
  kt_start "$name-api" env KEYTRUSTEE_HOME="$(kt_node_home "$name")" "$KT_BIN/keytrusteed" --foreground
  for _ in $(seq 1 200); do
    curl -sk --max-time 2 -o /dev/null "$url/?a=fingerprint" && return 0
    sleep 0.05
  done
  return 1
}

kt_node_start() {
  kt_node_create "$1" "$2" "$3" && kt_node_start_db "$1" && kt_node_start_api "$1"
}

kt_node_org() {
  local name=$1 org=$2
  kt_node_run "$name" "$KT_BIN/keytrustee-orgtool" add -n "$org" -c ops@example.com >/dev/null 2>&1 || return 1
  kt_node_run "$name" "$KT_BIN/keytrustee-orgtool" list |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]]["auth_secret"])' "$org"
}

# Milliseconds since the epoch, for timing a command.
kt_now_ms() { date +%s%3N; }
