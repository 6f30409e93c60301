# shellcheck shell=bash
# bench/candidate.sh — the keytrustee side of `make bench` (sourced by bench/run.sh).
#
# bench/run.sh calls these hooks between baseline runs (alternating, same repeats, same lengths).
# A *_setup hook returns 0 when the candidate is ready, or 1 after setting CANDIDATE_WHY: the
# report then lists the rows as "not measured: <why>" instead of failing the whole run.
# A *_run / *_rows hook prints JSON lines on stdout (nothing else: logs go to stderr) and returns
# non-zero on failure (that run is reported as not measured; the baselines go on).
# Every process started here must be stopped by PID: register the stop with bench_at_exit
# (bench/lib.sh) and stop it in the *_teardown hook as well.
#
# Hooks not written yet say why and report "not measured"; none of them fakes a measurement.

# shellcheck disable=SC2034  # read by bench/run.sh
CANDIDATE_WHY=""

# ---- the pair every candidate suite measures ---------------------------------------------------
# An active/passive pair set up by the seed's procedure (as scripts/run-pair.sh and the tests do),
# with synchronous replication on, on 127.0.0.21 (active) and 127.0.0.22 (passive), release
# build, every process started in the foreground under our PIDs.
#   candidate_pair_start [--passive-api] [--preload FUNCTION]
#     --passive-api      also `ktadmin init` the passive and start its keytrusteed (failure suite)
#     --preload F        runs F after `ktadmin db --bootstrap`, before keytrustee-db first starts
#                        (the scale suite fills the database there; see deposit_load.c)
# Sets CANDIDATE_A_HOME/B_HOME, CANDIDATE_URL (active), CANDIDATE_B_URL, CANDIDATE_PIDS[db_a,
# api_a, db_b, api_b], and CANDIDATE_PAIR_PIDS (all of them, for the stop).
CANDIDATE_PAIR_PIDS=()
declare -A CANDIDATE_PIDS=()
candidate_home() { if [ "$1" = a ]; then echo "$CANDIDATE_A_HOME"; else echo "$CANDIDATE_B_HOME"; fi; }
# candidate_start_db NODE / candidate_start_api NODE: one service of a node, waited for.
candidate_start_db() {
  local node=$1 home; home=$(candidate_home "$1")
  rm -f "$home/run/keytrustee-db.sock"
  KEYTRUSTEE_HOME=$home "$BENCH_ROOT/build/bin/keytrustee-db" --foreground --pg-rootdir "$home/db" \
    >>"$BENCH_LOGS/db-$node.log" 2>&1 &
  CANDIDATE_PIDS[db_$node]=$!
  CANDIDATE_PAIR_PIDS+=($!)
  for _ in $(seq 1 200); do [ -S "$home/run/keytrustee-db.sock" ] && return 0; sleep 0.05; done
  CANDIDATE_WHY="keytrustee-db of node $node did not create its socket (see $BENCH_LOGS/db-$node.log)"
  return 1
}
candidate_start_api() {
  local node=$1 home url; home=$(candidate_home "$1")
  url=$CANDIDATE_URL; [ "$node" = b ] && url=$CANDIDATE_B_URL
  KEYTRUSTEE_HOME=$home "$BENCH_ROOT/build/bin/keytrusteed" --foreground --log-level warning \
    >>"$BENCH_LOGS/api-$node.log" 2>&1 &
  CANDIDATE_PIDS[api_$node]=$!
  CANDIDATE_PAIR_PIDS+=($!)
  for _ in $(seq 1 200); do
    curl -sk --max-time 1 -o /dev/null "$url/v1/health" && return 0
    sleep 0.05
  done
  CANDIDATE_WHY="keytrusteed of node $node does not answer at $url (see $BENCH_LOGS/api-$node.log)"
  return 1
}
# candidate_state NODE: the node's replication state (in_sync, ...), empty when it does not answer.
candidate_state() {
  KEYTRUSTEE_HOME=$(candidate_home "$1") "$BENCH_ROOT/build/bin/ktadmin" status --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"]["state"])' 2>/dev/null
}
# candidate_wait_in_sync SECONDS: both nodes in_sync.
candidate_wait_in_sync() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    [ "$(candidate_state a)" = in_sync ] && [ "$(candidate_state b)" = in_sync ] && return 0
    sleep 0.1
  done
  return 1
}
candidate_pair_start() {
  local bin=$BENCH_ROOT/build/bin work=$BENCH_DIR/pair a b https repl passive_api=0 preload=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --passive-api) passive_api=1; shift ;;
      --preload) preload=$2; shift 2 ;;
      *) bench_die "candidate_pair_start: unknown option $1" ;;
    esac
  done
  a=127.0.0.21; b=127.0.0.22
  https=$(bench_free_port); repl=$(bench_free_port)
  rm -rf "$work"; mkdir -p "$work/kt02"; chmod 700 "$work" "$work/kt02"
  CANDIDATE_A_HOME=$work/kt01; CANDIDATE_B_HOME=$work/kt02
  CANDIDATE_URL=https://$a:$https
  CANDIDATE_B_URL=https://$b:$https
  local log
  for log in db-a db-b api-a api-b; do # appended to, so that every pair of the run keeps its log
    printf '==== bench pair started %s\n' "$(date -u +%FT%TZ)" >>"$BENCH_LOGS/$log.log"
  done
  {
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" init --external-address "$a" --listen "$a" --port "$https" &&
    rsync -a --exclude .ssl "$work/kt01/.keytrustee" "$work/kt02/" &&
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" db --bootstrap --port "$repl" --pg-rootdir "$work/kt01/db" --slave kt02
  } >"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="pair set-up failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
  if [ -n "$preload" ]; then "$preload" || return 1; fi
  bench_at_exit candidate_pair_stop
  candidate_start_db a || return 1
  candidate_start_api a || return 1
  # keytrustee-db binds its admin socket before replication starts: wait for the replication
  # listener too (init-slave connects to it).
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/$a/$repl") 2>/dev/null && break
    sleep 0.05
  done
  KEYTRUSTEE_HOME=$work/kt02 "$bin/ktadmin" init-slave --master "$a" --pg-port "$repl" \
    --pg-rootdir "$work/kt02/db" --no-import-key --no-start >>"$BENCH_LOGS/pair-setup.log" 2>&1 ||
    { CANDIDATE_WHY="init-slave failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
  candidate_start_db b || return 1
  if [ $passive_api -eq 1 ]; then
    KEYTRUSTEE_HOME=$work/kt02 "$bin/ktadmin" init --external-address "$b" --listen "$b" --port "$https" \
      >>"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="ktadmin init on the passive failed"; return 1; }
    candidate_start_api b || return 1
  fi
  KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" enable-synchronous-replication --pg-rootdir "$work/kt01/db" \
    >>"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="enable-synchronous-replication failed"; return 1; }
  for _ in $(seq 1 300); do
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" status --json 2>/dev/null | grep -q '"state": "in_sync"' && return 0
    sleep 0.1
  done
  CANDIDATE_WHY="the pair did not reach in_sync (see $BENCH_LOGS/db-*.log)"
  return 1
}
candidate_pair_stop() {
  local pid
  for pid in "${CANDIDATE_PAIR_PIDS[@]}"; do
    kill -s CONT "$pid" 2>/dev/null || true   # a node the failure suite froze must be able to stop
    bench_stop_pid "$pid"
  done
  CANDIDATE_PAIR_PIDS=()
  CANDIDATE_PIDS=()
}

# candidate_register CONFDIR [PASSIVE_URL]: an org and a client registered with ktclient against
# the active (and the passive, when given), trusting both nodes' CAs.
candidate_register() {
  local confdir=$1 passive=${2:-} bin=$BENCH_ROOT/build/bin secret ca=$BENCH_DIR/pair/pair-ca.pem
  local -a second=()
  KEYTRUSTEE_HOME=$CANDIDATE_A_HOME "$bin/keytrustee-orgtool" add -n bench -c bench@example.com \
    >>"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="keytrustee-orgtool add failed"; return 1; }
  secret=$(KEYTRUSTEE_HOME=$CANDIDATE_A_HOME "$bin/keytrustee-orgtool" list |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["bench"]["auth_secret"])') ||
    { CANDIDATE_WHY="keytrustee-orgtool list did not give the org secret"; return 1; }
  cat "$CANDIDATE_A_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" >"$ca"
  if [ -n "$passive" ]; then
    cat "$CANDIDATE_B_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem" >>"$ca"
    second=(--passive-server "$passive")
  fi
  rm -rf "$confdir"
  "$bin/ktclient" --confdir "$confdir" register --server "$CANDIDATE_URL" "${second[@]}" --org bench \
    --auth "$secret" --clientname bench-client --cacert "$ca" >>"$BENCH_LOGS/pair-setup.log" 2>&1 ||
    { CANDIDATE_WHY="ktclient register failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
}

# candidate_wrk_checked HOOK ARGS...: runs a wrk hook; its JSON line on stdout when it had no
# error of any kind (a non-2xx answer, a timeout, a broken connection), else the counts on stderr
# and status 1: an error is a failed run, never throughput.
candidate_wrk_checked() {
  local line
  line=$("$@") || return 1
  if python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("errors", 1) == 0 else 1)' "$line"; then
    echo "$line"
  else
    # keytrusteed logs every error answer ("METHOD PATH STATUS CODE ..."): say which they were
    # (since this pair started; they may include earlier runs on the same pair).
    bench_log "keytrustee: $* had errors (a failed run, not throughput): $line; error answers in the active's log: $(
      tac "$BENCH_LOGS/api-a.log" 2>/dev/null | sed '/^==== bench pair started/q' |
        grep -Eo '(GET|POST) [^ ]+ [45][0-9][0-9] [a-z_]+' |
        sed -E 's#/v1/deposits/[0-9a-f-]{36}#/v1/deposits/{uuid}#' | sort | uniq -c | sort -rn | head -n 4 | tr -s ' \n' ' ')"
    return 1
  fi
}

# ---- commit suite ---------------------------------------------------------------------------------
# Two systems:
#   keytrustee        the storage + replication layer (issue 8's row): commit_bench's keytrustee
#                     backend commits through storage/ and replication/ in its own process, with
#                     keytrustee-db's group-commit policy, against a synchronous passive process on
#                     loopback (a fresh pair in a new directory for every run, set up before the
#                     measured window). Every acknowledged row is fsynced on both nodes.
#   keytrustee-admin  end to end through keytrustee-db: the seed's pair (above), commit_bench's
#                     keytrustee-admin backend sending deposit.put over the active's admin socket
#                     (JSON framing, one admin thread per connection, the same group commit).
CANDIDATE_COMMIT_DIR=""
CANDIDATE_COMMIT_RUNS=0
candidate_commit_setup() {
  CANDIDATE_COMMIT_DIR=$BENCH_DIR/commit-pair
  rm -rf "$CANDIDATE_COMMIT_DIR" && mkdir -p "$CANDIDATE_COMMIT_DIR" && chmod 700 "$CANDIDATE_COMMIT_DIR" ||
    { CANDIDATE_WHY="cannot create $CANDIDATE_COMMIT_DIR"; return 1; }
}
# candidate_commit_run WRITERS SECONDS: one commit_bench JSON line.
candidate_commit_run() {
  local target
  CANDIDATE_COMMIT_RUNS=$((CANDIDATE_COMMIT_RUNS + 1))
  target=${CANDIDATE_COMMIT_DIR:?}/run-$CANDIDATE_COMMIT_RUNS
  "$BENCH_BIN/commit_bench" --backend keytrustee --target "$target" \
    --writers "$1" --seconds "$2" 2>>"$BENCH_LOGS/commit-keytrustee.log"
  local rc=$?
  rm -rf "$target"
  return $rc
}
candidate_commit_teardown() {
  if [ -n "$CANDIDATE_COMMIT_DIR" ]; then rm -rf "$CANDIDATE_COMMIT_DIR"; CANDIDATE_COMMIT_DIR=""; fi
}

candidate_admin_commit_setup() {
  candidate_pair_start || return 1
  CANDIDATE_CONFDIR=$CANDIDATE_A_HOME/.keytrustee
}
# candidate_admin_commit_run WRITERS SECONDS: one commit_bench JSON line.
candidate_admin_commit_run() {
  "$BENCH_BIN/commit_bench" --backend keytrustee-admin --target "${CANDIDATE_CONFDIR:?}" \
    --writers "$1" --seconds "$2"
}
candidate_admin_commit_teardown() { candidate_pair_stop; }

# ---- https suite ----------------------------------------------------------------------------------
# Setup: start keytrusteed (the active of a synchronous pair), register a client with ktclient
# (its confdir's client.key signs the requests), store one deposit whose GET answer is about the
# size of nginx's 180-byte document (a 32-byte secret), and set:
#   CANDIDATE_URL           https://HOST:PORT of the active
#   CANDIDATE_KEY_FILE      the client's client.key
#   CANDIDATE_DEPOSIT_UUID  the stored deposit
# bench/wrk/kt_signed.lua signs every request as docs/api.md says (Ed25519 via libsodium through
# wrk's LuaJIT FFI; checked against keytrusteed: 0 status errors for GET, POST and --close).
candidate_https_setup() {
  local confdir=$BENCH_DIR/pair/client secret_b64 uuid hook
  candidate_pair_start || return 1
  candidate_register "$confdir" || return 1
  CANDIDATE_KEY_FILE=$confdir/client.key
  # 32 random bytes under the handle "bench-get0": the GET answer ({"uuid", "handle",
  # "description", "created", "state", "secret"}, the secret in base64) is then 180 bytes, the
  # size of nginx's document (checked with curl + tests/tools/kt_sign when this was written).
  head -c 32 /dev/urandom >"$BENCH_DIR/pair/deposit.bin"
  uuid=$("$BENCH_ROOT/build/bin/ktclient" --confdir "$confdir" put --handle bench-get0 \
    --file "$BENCH_DIR/pair/deposit.bin" 2>>"$BENCH_LOGS/pair-setup.log") ||
    { CANDIDATE_WHY="ktclient put of the benchmark deposit failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
  CANDIDATE_DEPOSIT_UUID=$uuid
  "$BENCH_ROOT/build/bin/ktclient" --confdir "$confdir" get --uuid "$uuid" 2>/dev/null |
    cmp -s - "$BENCH_DIR/pair/deposit.bin" ||
    { CANDIDATE_WHY="the benchmark deposit does not read back byte-identical"; return 1; }
  # Each hook once, 1 s: a signed request keytrusteed refuses would show up as status errors.
  for hook in candidate_https_get candidate_https_put candidate_https_handshake; do
    if ! "$hook" 1 1 >/dev/null; then
      CANDIDATE_WHY="$hook got error answers in its 1-second check (see $BENCH_LOGS/wrk.last.txt)"
      return 1
    fi
  done
  bench_log "keytrustee: $CANDIDATE_URL, deposit $uuid (32-byte secret, 180-byte answer), client key $CANDIDATE_KEY_FILE; get/put/handshake checked: 0 errors"
}
# candidate_https_get CONNECTIONS SECONDS: one bench_wrk JSON line (keep-alive deposit get).
candidate_https_get() { candidate_wrk_checked candidate_https_get_raw "$@"; }
candidate_https_get_raw() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=GET \
    KT_BENCH_PATH="/v1/deposits/${CANDIDATE_DEPOSIT_UUID:?}" \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
# candidate_https_put CONNECTIONS SECONDS: keep-alive deposit put (a new handle per request).
candidate_https_put() { candidate_wrk_checked candidate_https_put_raw "$@"; }
candidate_https_put_raw() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=POST KT_BENCH_PATH=/v1/deposits \
    KT_BENCH_BODY='{"handle":"bench-{unique}","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
# candidate_https_handshake CONNECTIONS SECONDS: a new TLS connection per request (deposit get).
candidate_https_handshake() { candidate_wrk_checked candidate_https_handshake_raw "$@"; }
candidate_https_handshake_raw() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=GET \
    KT_BENCH_PATH="/v1/deposits/${CANDIDATE_DEPOSIT_UUID:?}" \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --close --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
candidate_https_teardown() { candidate_pair_stop; }

# ---- failure timings ------------------------------------------------------------------------------
# Prints rows {"suite":"failure","case":...,"system":"keytrustee","outcome":...,"seconds":S,
# "detail":...}, with these case names (bench/benchlib.py checks the targets by name):
#   "read failover after SIGKILL of the active"    -> first successful read on the passive (<= 1 s)
#   "write refusal after the passive is cut"       -> first 503 write_unavailable (<= 2 s)
#   "write resumption after the passive returns"   -> first accepted write (<= 2 s)
# Repeat each >= 3 times and put the median in "seconds" (each trial in "trials": [...]).
#
# Method: the pair with both keytrusteds up, a client registered with ktclient with both URLs
# (--server active --passive-server passive), one stored deposit. The client is the real ktclient
# CLI, one process per attempt (a new TLS connection each time, as a script or a mount helper
# does); attempts follow each other with a 10 ms pause (CANDIDATE_POLL_SECONDS), so the resolution
# of each figure is one attempt plus 10 ms (the median attempt time is in "detail"). Clock: bash's
# EPOCHREALTIME (no process spawned to read it). A trial's time runs from just before the signal to
# the end of the first attempt that got the awaited answer.
#   read failover:    SIGKILL both services of the active; first `ktclient get` that returns the
#                     secret byte for byte (the client's avoid-hint file is removed first, so it
#                     asks the dead active first, as a client that did not know would). The active
#                     is then restarted and the pair waited in_sync before the next trial.
#   write refusal:    SIGSTOP both services of the passive (a node that stops answering: the active
#                     can only notice by its heartbeat timeout; kill -9 closes the sockets and is
#                     noticed at once — its figure is a separate row); first `ktclient put` refused
#                     as degraded (503 write_unavailable; an "indeterminate" answer to a put caught
#                     mid-commit is not the refusal and the polling goes on).
#   write resumption: SIGCONT the passive; first `ktclient put` accepted. After kill -9: the
#                     passive's services are started again, the clock starts at that start.
# Each repeated CANDIDATE_FAILURE_TRIALS times (default 3); "seconds" is the median.
CANDIDATE_POLL_SECONDS=0.01
CANDIDATE_FAILURE_TRIALS=${CANDIDATE_FAILURE_TRIALS:-3}

# candidate_poll DEADLINE_SECONDS WANT COMMAND...: runs COMMAND until WANT (a function given the
# exit status and the stderr file) says yes; prints "ELAPSED_SINCE_T0 ATTEMPTS MEDIAN_ATTEMPT_MS".
# t0 is CANDIDATE_T0 (EPOCHREALTIME). Returns 1 at the deadline.
candidate_poll() {
  local deadline=$1 want=$2; shift 2
  local err=$BENCH_DIR/pair/poll.err status start end attempts=0
  local -a durations=()
  while :; do
    start=$EPOCHREALTIME
    "$@" >"$BENCH_DIR/pair/poll.out" 2>"$err"; status=$?
    end=$EPOCHREALTIME
    attempts=$((attempts + 1))
    durations+=("$start" "$end")
    if "$want" "$status" "$err"; then
      python3 -c '
import statistics, sys
t0, end, attempts = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
d = [float(b) - float(a) for a, b in zip(sys.argv[4::2], sys.argv[5::2])]
print("%.4f %s %.1f" % (end - t0, attempts, statistics.median(d) * 1000))' "$CANDIDATE_T0" "$end" "$attempts" "${durations[@]}"
      return 0
    fi
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) > float(sys.argv[3]) else 1)' \
        "$end" "$CANDIDATE_T0" "$deadline"; then
      bench_log "keytrustee failure: no awaited answer in ${deadline}s (last status $status: $(head -c 300 "$err"))"
      return 1
    fi
    sleep "$CANDIDATE_POLL_SECONDS"
  done
}
candidate_read_ok() { [ "$1" -eq 0 ] && cmp -s "$BENCH_DIR/pair/poll.out" "$BENCH_DIR/pair/failure.bin"; }
candidate_write_refused() { [ "$1" -eq 3 ] && grep -q "write refused: the key server pair is degraded" "$2"; }
candidate_write_ok() { [ "$1" -eq 0 ]; }

candidate_client_get() { "$BENCH_ROOT/build/bin/ktclient" --confdir "$BENCH_DIR/pair/client" get --handle failure-read; }
candidate_client_put() { # a new handle each time (it runs in $(...) subshells: no counter)
  "$BENCH_ROOT/build/bin/ktclient" --confdir "$BENCH_DIR/pair/client" put \
    --handle "failure-put-${EPOCHREALTIME/./}-$RANDOM" --file "$BENCH_DIR/pair/failure.bin"
}
candidate_signal_node() { # NODE SIGNAL
  kill -s "$2" "${CANDIDATE_PIDS[api_$1]}" "${CANDIDATE_PIDS[db_$1]}"
  # bash would print "Killed" job notices for these in the middle of the report; bash still
  # reaps them (candidate_reap_node forgets their PIDs).
  if [ "$2" = KILL ]; then disown "${CANDIDATE_PIDS[api_$1]}" "${CANDIDATE_PIDS[db_$1]}" 2>/dev/null || true; fi
}
candidate_reap_node() { # NODE: collect a killed node's processes and forget their PIDs
  local dead=" ${CANDIDATE_PIDS[api_$1]} ${CANDIDATE_PIDS[db_$1]} " pid kept=()
  wait "${CANDIDATE_PIDS[api_$1]}" "${CANDIDATE_PIDS[db_$1]}" 2>/dev/null || true
  for pid in "${CANDIDATE_PAIR_PIDS[@]}"; do [[ "$dead" == *" $pid "* ]] || kept+=("$pid"); done
  CANDIDATE_PAIR_PIDS=("${kept[@]}")
}
candidate_restart_node() { # NODE
  candidate_start_db "$1" && candidate_start_api "$1"
}
candidate_settle() { # the pair in sync and writable again before the next trial
  candidate_wait_in_sync 30 || { CANDIDATE_WHY="the pair did not return to in_sync between trials"; return 1; }
  CANDIDATE_T0=$EPOCHREALTIME
  candidate_poll 30 candidate_write_ok candidate_client_put >/dev/null ||
    { CANDIDATE_WHY="writes did not resume between trials"; return 1; }
}

# candidate_failure_row CASE DETAIL RESULT_FILE: the JSON row from one line per trial
# ("SECONDS ATTEMPTS MEDIAN_ATTEMPT_MS").
candidate_failure_row() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, statistics, sys
case, detail, path = sys.argv[1:4]
trials = [line.split() for line in open(path) if line.strip()]
seconds = [float(t[0]) for t in trials]
attempt_ms = statistics.median(float(t[2]) for t in trials)
print(json.dumps({"suite": "failure", "case": case, "system": "keytrustee",
                  "outcome": "median of %d trials" % len(trials), "seconds": round(statistics.median(seconds), 4),
                  "trials": [round(x, 4) for x in seconds], "attempts": [int(t[1]) for t in trials],
                  "poll_interval_s": 0.01, "median_attempt_ms": round(attempt_ms, 1),
                  "detail": "%s; trials %s s; ktclient polled every 10 ms after the previous attempt (median attempt %.0f ms: the resolution)"
                            % (detail, " / ".join("%.3f" % x for x in seconds), attempt_ms)}))
EOF
}

candidate_failure_rows() {
  local work=$BENCH_DIR/pair trial result
  candidate_pair_start --passive-api || return 1
  candidate_register "$work/client" "$CANDIDATE_B_URL" || return 1
  head -c 64 /dev/urandom >"$work/failure.bin"
  "$BENCH_ROOT/build/bin/ktclient" --confdir "$work/client" put --handle failure-read \
    --file "$work/failure.bin" >/dev/null 2>>"$BENCH_LOGS/pair-setup.log" ||
    { CANDIDATE_WHY="ktclient put of the failure-suite deposit failed"; return 1; }
  : >"$work/read.trials"; : >"$work/refuse.trials"; : >"$work/resume.trials"
  : >"$work/refuse9.trials"; : >"$work/resume9.trials"
  for ((trial = 1; trial <= CANDIDATE_FAILURE_TRIALS; trial++)); do
    # Read failover: SIGKILL the active.
    rm -f "$work/client/client.state"
    CANDIDATE_T0=$EPOCHREALTIME
    candidate_signal_node a KILL
    result=$(candidate_poll 30 candidate_read_ok candidate_client_get) ||
      { CANDIDATE_WHY="no read succeeded within 30 s of killing the active"; return 1; }
    echo "$result" >>"$work/read.trials"
    candidate_reap_node a
    candidate_restart_node a || return 1
    rm -f "$work/client/client.state"
    candidate_settle || return 1
    # Write refusal and resumption: SIGSTOP / SIGCONT the passive.
    CANDIDATE_T0=$EPOCHREALTIME
    candidate_signal_node b STOP
    result=$(candidate_poll 30 candidate_write_refused candidate_client_put) ||
      { candidate_signal_node b CONT; CANDIDATE_WHY="no write was refused within 30 s of stopping the passive"; return 1; }
    echo "$result" >>"$work/refuse.trials"
    CANDIDATE_T0=$EPOCHREALTIME
    candidate_signal_node b CONT
    result=$(candidate_poll 30 candidate_write_ok candidate_client_put) ||
      { CANDIDATE_WHY="no write was accepted within 30 s of continuing the passive"; return 1; }
    echo "$result" >>"$work/resume.trials"
    rm -f "$work/client/client.state"
    candidate_settle || return 1
    # The same with kill -9 of the passive, and its services started again.
    CANDIDATE_T0=$EPOCHREALTIME
    candidate_signal_node b KILL
    result=$(candidate_poll 30 candidate_write_refused candidate_client_put) ||
      { CANDIDATE_WHY="no write was refused within 30 s of killing the passive"; return 1; }
    echo "$result" >>"$work/refuse9.trials"
    candidate_reap_node b
    CANDIDATE_T0=$EPOCHREALTIME
    candidate_restart_node b || return 1
    result=$(candidate_poll 30 candidate_write_ok candidate_client_put) ||
      { CANDIDATE_WHY="no write was accepted within 30 s of restarting the passive"; return 1; }
    echo "$result" >>"$work/resume9.trials"
    rm -f "$work/client/client.state"
    candidate_settle || return 1
  done
  candidate_failure_row "read failover after SIGKILL of the active" \
    "kill -9 of the active's keytrustee-db and keytrusteed; first ktclient get (asking the active first) that returns the secret, served by the passive" \
    "$work/read.trials"
  candidate_failure_row "write refusal after the passive is cut" \
    "SIGSTOP of the passive's keytrustee-db and keytrusteed (noticed only by the active's heartbeat timeout: 4.5 x 200 ms); first ktclient put refused with 503 write_unavailable" \
    "$work/refuse.trials"
  candidate_failure_row "write resumption after the passive returns" \
    "SIGCONT of the stopped passive; first ktclient put accepted" "$work/resume.trials"
  candidate_failure_row "write refusal after kill -9 of the passive" \
    "kill -9 of the passive's keytrustee-db and keytrusteed (sockets close at once); first ktclient put refused with 503 write_unavailable" \
    "$work/refuse9.trials"
  candidate_failure_row "write resumption after the killed passive restarts" \
    "from starting the passive's keytrustee-db and keytrusteed again (their own start-up included) to the first ktclient put accepted" \
    "$work/resume9.trials"
  candidate_pair_stop
}

# ---- scale ----------------------------------------------------------------------------------------
# Prints rows {"suite":"scale","case":...,"system":"keytrustee","deposits":N,"ops_per_s":..,
# "p99_ms":..,"rss_mb":..,"bytes_per_deposit":..} at 10k, 100k and 1M deposits stored (targets:
# rss_mb <= 20 at deposits=100000; p99_ms at 1000000 <= 1.5x at 10000).
#
# Method, for each size N (a fresh pair each time):
#   1. `ktadmin db --bootstrap` on the active, then bench/tools/deposit_load writes an org, a client
#      and N deposits into that database through storage/ — the same rows deposit.put writes,
#      sealed as keytrusteed seals them — 20,000 per commit, before keytrustee-db first starts
#      (1M deposits one replicated commit at a time would not fit the 15-minute budget).
#   2. keytrustee-db and keytrusteed start on the active; `ktadmin init-slave` copies the whole
#      database to the passive (base copy); synchronous replication on; both in_sync.
#   3. CANDIDATE_SCALE_REPEATS (= BENCH_REPEATS) times, alternating: random reads — wrk, 1
#      connection, signed GET /v1/deposits/<uuid> with the uuid drawn per request from 10,000
#      sampled from all N — then puts — wrk, 8 connections, signed POST /v1/deposits through the
#      whole replicated path. ops_per_s is the median puts/s; p99_ms the median p99 of the reads.
#      Any error answer fails the run.
#   4. RSS: VmRSS from /proc/PID/status of the active's keytrusteed (rss_mb: the daemon serving the
#      requests, which the 20 MB target is about) and keytrustee-db (rss_db_mb: the process holding
#      the SQLite page cache), read after the runs.
#   5. bytes_per_deposit: size of keytrustee.db (+ its -wal) right after the load, over N. The
#      replication spool (keytrustee-repl.log) is not counted.
CANDIDATE_SCALE_SIZES=${CANDIDATE_SCALE_SIZES:-"10000 100000 1000000"}
CANDIDATE_SCALE_N=0

candidate_scale_preload() {
  local db=$CANDIDATE_A_HOME/db/keytrustee.db
  rm -f "$BENCH_DIR/scale-uuids.txt"
  if ! "$BENCH_BIN/deposit_load" --database "$db" \
      --server-key "$CANDIDATE_A_HOME/.keytrustee/keytrustee-server.key" \
      --key-out "$BENCH_DIR/scale-client.key" --uuids-out "$BENCH_DIR/scale-uuids.txt" \
      --count "$CANDIDATE_SCALE_N" --secret-bytes 32 >"$BENCH_DIR/scale-load.json" 2>>"$BENCH_LOGS/pair-setup.log"; then
    CANDIDATE_WHY="deposit_load of $CANDIDATE_SCALE_N deposits failed (see $BENCH_LOGS/pair-setup.log)"
    return 1
  fi
  CANDIDATE_SCALE_DB_BYTES=$(($(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0)))
}

candidate_scale_get() { # CONNECTIONS SECONDS
  KT_BENCH_KEY_FILE="$BENCH_DIR/scale-client.key" KT_BENCH_METHOD=GET KT_BENCH_PATH='/v1/deposits/{uuid}' \
    KT_BENCH_UUID_FILE="$BENCH_DIR/scale-sample.txt" \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
candidate_scale_put() { # CONNECTIONS SECONDS
  KT_BENCH_KEY_FILE="$BENCH_DIR/scale-client.key" KT_BENCH_METHOD=POST KT_BENCH_PATH=/v1/deposits \
    KT_BENCH_BODY='{"handle":"scale-put-{unique}","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
candidate_rss_mb() { # PID: VmRSS in MB
  awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# candidate_missing WHAT: a "not measured" line among a hook's rows (bench/run.sh lists it).
candidate_missing() {
  bench_log "not measured: $1"
  python3 -c 'import json,sys; print(json.dumps({"suite":"missing","what":sys.argv[1]}))' "$1"
}

# candidate_scale_size N: one row (or 1 with CANDIDATE_WHY). Runs with errors are left out.
candidate_scale_size() {
  local n=$1 rep setup_start load rss_api rss_db repeats=${CANDIDATE_SCALE_REPEATS:-$BENCH_REPEATS}
  local runs=$BENCH_DIR/scale-runs.jsonl
  CANDIDATE_SCALE_N=$n
  setup_start=$SECONDS
  candidate_pair_start --preload candidate_scale_preload || return 1
  load=$(cat "$BENCH_DIR/scale-load.json")
  shuf -n 10000 "$BENCH_DIR/scale-uuids.txt" >"$BENCH_DIR/scale-sample.txt" ||
    { CANDIDATE_WHY="cannot sample the stored uuids"; return 1; }
  bench_log "keytrustee scale: $n deposits loaded and copied to the passive in $((SECONDS - setup_start)) s ($load)"
  : >"$runs"
  for ((rep = 1; rep <= repeats; rep++)); do
    # A run with errors is left out of the medians and listed as not measured (see bench log).
    candidate_wrk_checked candidate_scale_get 1 "$BENCH_SECONDS" | bench_py tag kind=get rep="$rep" >>"$runs" ||
      candidate_missing "keytrustee scale at $n deposits, random reads, repeat $rep: error answers or a failed run"
    candidate_wrk_checked candidate_scale_put 8 "$BENCH_SECONDS" | bench_py tag kind=put rep="$rep" >>"$runs" ||
      candidate_missing "keytrustee scale at $n deposits, puts, repeat $rep: error answers or a failed run"
  done
  rss_api=$(candidate_rss_mb "${CANDIDATE_PIDS[api_a]}")
  rss_db=$(candidate_rss_mb "${CANDIDATE_PIDS[db_a]}")
  python3 - "$runs" "$n" "$rss_api" "$rss_db" "$CANDIDATE_SCALE_DB_BYTES" "$load" "$((SECONDS - setup_start))" <<'EOF'
import json, statistics, sys
path, n, rss_api, rss_db, db_bytes, load, seconds = sys.argv[1:8]
rows = [json.loads(line) for line in open(path) if line.strip()]
gets = [r for r in rows if r["kind"] == "get"]
puts = [r for r in rows if r["kind"] == "put"]
med = lambda rs, k: round(statistics.median(r[k] for r in rs), 4) if rs else None
n = int(n)
load = json.loads(load)
print(json.dumps({
    "suite": "scale", "case": "%d deposits stored" % n, "system": "keytrustee", "deposits": n,
    "ops_per_s": med(puts, "ops_per_s"),
    "put_ops_per_s_each": [r["ops_per_s"] for r in puts], "put_p99_ms": med(puts, "p99_ms"),
    "p99_ms": med(gets, "p99_ms"), "p50_ms": med(gets, "p50_ms"), "p999_ms": med(gets, "p999_ms"),
    "get_p99_ms_each": [r["p99_ms"] for r in gets],
    "get_ops_per_s": med(gets, "ops_per_s"),
    "signed_requests_before_rss": sum(int(r.get("requests", 0)) for r in rows),
    "rss_mb": float(rss_api), "rss_db_mb": float(rss_db),
    "bytes_per_deposit": round(int(db_bytes) / n, 1), "db_bytes_after_load": int(db_bytes),
    "load": load, "seconds_for_this_size": int(seconds), "get_runs": len(gets), "put_runs": len(puts),
    "detail": "ops/s: puts/s, wrk 8 connections; p99: random reads, wrk 1 connection; RSS: keytrusteed (target) / keytrustee-db, after %d signed requests (keytrusteed's replay cache keeps each nonce 300 s)" % sum(int(r.get("requests", 0)) for r in rows)}))
EOF
  candidate_pair_stop
}

# Estimated seconds one size takes (load + base copy + runs), for the budget check: measured
# here, the 1M load and copy took 60-120 s with the machine loaded.
candidate_scale_estimate() {
  local repeats=${CANDIDATE_SCALE_REPEATS:-$BENCH_REPEATS}
  echo $(( $1 / 10000 + 20 + repeats * 2 * (BENCH_SECONDS + 2) ))
}

candidate_scale_rows() {
  local n measured=0 elapsed
  for n in $CANDIDATE_SCALE_SIZES; do
    elapsed=$((SECONDS - ${STARTED:-$SECONDS}))
    if [ $((elapsed + $(candidate_scale_estimate "$n"))) -gt "${BENCH_BUDGET:-840}" ]; then
      candidate_missing "keytrustee scale at $n deposits: skipped, it would not end within the ${BENCH_BUDGET:-840}-second budget"
      continue
    fi
    if candidate_scale_size "$n"; then measured=$((measured + 1))
    else
      candidate_missing "keytrustee scale at $n deposits: $CANDIDATE_WHY"
      candidate_pair_stop
    fi
  done
  [ $measured -gt 0 ] || { CANDIDATE_WHY="no size was measured (see the lines above)"; return 1; }
}
