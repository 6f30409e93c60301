# tests/lib/pair.sh — sets up an active/passive pair exactly as the seed's command-line procedure
# does, with two homes on 127.0.0.11 (keytrustee01) and 127.0.0.12 (keytrustee02). Source it after
# common.sh, then call pair_setup. Variables it sets: A_HOME B_HOME A_URL B_URL HTTPS_PORT
# REPL_PORT CA_A CA_B. pair_setup_with_org and pair_register_client do what most pair suites do
# next. Helpers: pair_start_db NODE, pair_start_api NODE, pair_stop NODE SERVICE
# [SIGNAL], on_node NODE CMD... (runs CMD with that node's KEYTRUSTEE_HOME).
A_ADDRESS=127.0.0.11
B_ADDRESS=127.0.0.12
A_HOME=$KT_WORK/keytrustee01
B_HOME=$KT_WORK/keytrustee02
HTTPS_PORT=$(kt_free_port)
REPL_PORT=$(kt_free_port)
A_URL=https://$A_ADDRESS:$HTTPS_PORT
B_URL=https://$B_ADDRESS:$HTTPS_PORT

node_home() { if [ "$1" = a ]; then echo "$A_HOME"; else echo "$B_HOME"; fi; }
node_address() { if [ "$1" = a ]; then echo "$A_ADDRESS"; else echo "$B_ADDRESS"; fi; }
on_node() { local node=$1; shift; KEYTRUSTEE_HOME=$(node_home "$node") "$@"; }

# `service keytrustee-db start`: in the foreground under the test's control.
pair_start_db() {
  local node=$1 home; home=$(node_home "$1")
  rm -f "$home/run/keytrustee-db.sock"
  KEYTRUSTEE_HOME=$home kt_start "db_$node" "$KT_BIN/keytrustee-db" --foreground --pg-rootdir "$home/db"
  kt_wait_file "$home/run/keytrustee-db.sock"
}

# `service keytrusteed start`.
pair_start_api() {
  local node=$1
  KEYTRUSTEE_HOME=$(node_home "$node") kt_start "api_$node" "$KT_BIN/keytrusteed" --foreground
  kt_wait_port "$(node_address "$node")" "$HTTPS_PORT"
}

pair_stop() { kt_stop "$2_$1" "${3:-TERM}"; }

# The seed's procedure, step by step. Returns non-zero at the first step that fails.
pair_setup() {
  # On the active.
  on_node a "$KT_BIN/ktadmin" init --external-address "$A_ADDRESS" --listen "$A_ADDRESS" \
    --port "$HTTPS_PORT" >"$KT_WORK/init_a.out" 2>&1 || return 1
  mkdir -p "$B_HOME" && chmod 700 "$B_HOME"
  rsync -a --exclude .ssl "$A_HOME/.keytrustee" "$B_HOME/" || return 1
  on_node a "$KT_BIN/ktadmin" db --bootstrap --port "$REPL_PORT" --pg-rootdir "$A_HOME/db" \
    --slave keytrustee02 >"$KT_WORK/bootstrap_a.out" 2>&1 || return 1
  pair_start_db a || return 1
  pair_start_api a || return 1
  # On the passive.
  on_node b "$KT_BIN/ktadmin" init-slave --master "$A_ADDRESS" --pg-port "$REPL_PORT" \
    --pg-rootdir "$B_HOME/db" --no-import-key --no-start >"$KT_WORK/init_slave_b.out" 2>&1 || return 1
  pair_start_db b || return 1
  on_node b "$KT_BIN/ktadmin" init --external-address "$B_ADDRESS" --listen "$B_ADDRESS" \
    --port "$HTTPS_PORT" >"$KT_WORK/init_b.out" 2>&1 || return 1
  pair_start_api b || return 1
  # On the active again.
  on_node a "$KT_BIN/ktadmin" enable-synchronous-replication --pg-rootdir "$A_HOME/db" \
    >"$KT_WORK/sync_a.out" 2>&1 || return 1
  CA_A=$A_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem
  CA_B=$B_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem
}

# Waits (up to 10 s) until a node's replication state is the given one.
pair_wait_state() {
  local node=$1 wanted=$2
  for _ in $(seq 1 100); do
    [ "$(pair_state "$node")" = "$wanted" ] && return 0
    sleep 0.1
  done
  return 1
}

pair_state() {
  on_node "$1" "$KT_BIN/ktadmin" status --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"]["state"])' 2>/dev/null
}

pair_status_field() {
  on_node "$1" "$KT_BIN/ktadmin" status --json 2>/dev/null |
    python3 -c 'import json,sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."): d = d[k]
print(d)' "$2" 2>/dev/null
}

# pair_setup_with_org: the seed's procedure, both nodes in sync, the org "acme" added on the active.
# Sets PAIR_ORG_SECRET (acme's auth secret) and writes both nodes' CAs to $KT_WORK/pair-ca.pem.
# Bails out (the suite cannot run) when a step fails.
pair_setup_with_org() {
  pair_setup || { echo "Bail out! the seed's procedure failed; see $KT_WORK/*.out"; exit 1; }
  { pair_wait_state a in_sync && pair_wait_state b in_sync; } ||
    { echo "Bail out! the pair is not in sync"; exit 1; }
  on_node a "$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null ||
    { echo "Bail out! keytrustee-orgtool add failed"; exit 1; }
  PAIR_ORG_SECRET=$(on_node a "$KT_BIN/keytrustee-orgtool" list |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["acme"]["auth_secret"])') ||
    { echo "Bail out! keytrustee-orgtool list failed"; exit 1; }
  cat "$CA_A" "$CA_B" >"$KT_WORK/pair-ca.pem"
}

# pair_register_client DIR: a ktclient confdir registered with acme, the active's URL first and
# the passive's second. Bails out when registration fails.
pair_register_client() {
  "$KT_BIN/ktclient" --confdir "$1" register --server "$A_URL" --passive-server "$B_URL" \
    --org acme --auth "$PAIR_ORG_SECRET" --cacert "$KT_WORK/pair-ca.pem" >/dev/null \
    2>"$KT_WORK/register.err" ||
    { echo "Bail out! registration failed: $(cat "$KT_WORK/register.err")"; exit 1; }
}
