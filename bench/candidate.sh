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
CANDIDATE_PAIR_PIDS=()
candidate_pair_start() {
  local bin=$BENCH_ROOT/build/bin work=$BENCH_DIR/pair a b https repl
  a=127.0.0.21; b=127.0.0.22
  https=$(bench_free_port); repl=$(bench_free_port)
  rm -rf "$work"; mkdir -p "$work/kt02"; chmod 700 "$work" "$work/kt02"
  CANDIDATE_A_HOME=$work/kt01; CANDIDATE_B_HOME=$work/kt02
  CANDIDATE_URL=https://$a:$https
  {
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" init --external-address "$a" --listen "$a" --port "$https" &&
    rsync -a --exclude .ssl "$work/kt01/.keytrustee" "$work/kt02/" &&
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" db --bootstrap --port "$repl" --pg-rootdir "$work/kt01/db" --slave kt02
  } >"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="pair set-up failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
  KEYTRUSTEE_HOME=$work/kt01 "$bin/keytrustee-db" --foreground --pg-rootdir "$work/kt01/db" >"$BENCH_LOGS/db-a.log" 2>&1 &
  CANDIDATE_PAIR_PIDS+=($!)
  KEYTRUSTEE_HOME=$work/kt01 "$bin/keytrusteed" --foreground --log-level warning >"$BENCH_LOGS/api-a.log" 2>&1 &
  CANDIDATE_PAIR_PIDS+=($!)
  bench_at_exit candidate_pair_stop
  # The admin socket is bound before replication starts: wait for the replication listener too
  # (init-slave connects to it).
  for _ in $(seq 1 600); do
    [ -S "$work/kt01/run/keytrustee-db.sock" ] && grep -q 'active listening on' "$BENCH_LOGS/db-a.log" && break
    sleep 0.05
  done
  KEYTRUSTEE_HOME=$work/kt02 "$bin/ktadmin" init-slave --master "$a" --pg-port "$repl" \
    --pg-rootdir "$work/kt02/db" --no-import-key --no-start >>"$BENCH_LOGS/pair-setup.log" 2>&1 ||
    { CANDIDATE_WHY="init-slave failed (see $BENCH_LOGS/pair-setup.log)"; return 1; }
  KEYTRUSTEE_HOME=$work/kt02 "$bin/keytrustee-db" --foreground --pg-rootdir "$work/kt02/db" >"$BENCH_LOGS/db-b.log" 2>&1 &
  CANDIDATE_PAIR_PIDS+=($!)
  for _ in $(seq 1 600); do [ -S "$work/kt02/run/keytrustee-db.sock" ] && break; sleep 0.05; done
  KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" enable-synchronous-replication --pg-rootdir "$work/kt01/db" \
    >>"$BENCH_LOGS/pair-setup.log" 2>&1 || { CANDIDATE_WHY="enable-synchronous-replication failed"; return 1; }
  for _ in $(seq 1 100); do
    KEYTRUSTEE_HOME=$work/kt01 "$bin/ktadmin" status --json 2>/dev/null | grep -q '"state": "in_sync"' && return 0
    sleep 0.1
  done
  CANDIDATE_WHY="the pair did not reach in_sync (see $BENCH_LOGS/db-*.log)"
  return 1
}
candidate_pair_stop() {
  local pid
  for pid in "${CANDIDATE_PAIR_PIDS[@]}"; do bench_stop_pid "$pid"; done
  CANDIDATE_PAIR_PIDS=()
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
# size of nginx's 180-byte document (a ~40-byte secret), and set:
#   CANDIDATE_URL           https://HOST:PORT of the active
#   CANDIDATE_KEY_FILE      the client's client.key
#   CANDIDATE_DEPOSIT_UUID  the stored deposit
# bench/wrk/kt_signed.lua signs every request as docs/api.md says (Ed25519 via libsodium through
# wrk's LuaJIT FFI; checked against keytrusteed: 0 status errors for GET, POST and --close).
candidate_https_setup() {
  CANDIDATE_WHY="bench/candidate.sh: candidate_https_setup does not start keytrusteed yet"
  return 1
}
# candidate_https_get CONNECTIONS SECONDS: one bench_wrk JSON line (keep-alive deposit get).
candidate_https_get() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=GET \
    KT_BENCH_PATH="/v1/deposits/${CANDIDATE_DEPOSIT_UUID:?}" \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
# candidate_https_put CONNECTIONS SECONDS: keep-alive deposit put (a new handle per request).
candidate_https_put() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=POST KT_BENCH_PATH=/v1/deposits \
    KT_BENCH_BODY='{"handle":"bench-{unique}","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
# candidate_https_handshake CONNECTIONS SECONDS: a new TLS connection per request (deposit get).
candidate_https_handshake() {
  KT_BENCH_KEY_FILE="${CANDIDATE_KEY_FILE:?}" KT_BENCH_METHOD=GET \
    KT_BENCH_PATH="/v1/deposits/${CANDIDATE_DEPOSIT_UUID:?}" \
    bench_wrk "${CANDIDATE_URL:?}/" "$1" "$2" --close --script "$BENCH_ROOT/bench/wrk/kt_signed.lua"
}
candidate_https_teardown() { :; }

# ---- failure timings ------------------------------------------------------------------------------
# Prints rows {"suite":"failure","case":...,"system":"keytrustee","outcome":...,"seconds":S,
# "detail":...}, with these case names (bench/benchlib.py checks the targets by name):
#   "read failover after SIGKILL of the active"    -> first successful read on the passive (<= 1 s)
#   "write refusal after the passive is cut"       -> first 503 write_unavailable (<= 2 s)
#   "write resumption after the passive returns"   -> first accepted write (<= 2 s)
# Repeat each >= 3 times and put the median in "seconds" (each trial in "trials": [...]).
candidate_failure_rows() {
  CANDIDATE_WHY="bench/candidate.sh: candidate_failure_rows not written yet"
  return 1
}

# ---- scale ----------------------------------------------------------------------------------------
# Prints rows {"suite":"scale","case":...,"system":"keytrustee","deposits":N,"ops_per_s":..,
# "p99_ms":..,"rss_mb":..,"bytes_per_deposit":..} at 10k, 100k and 1M deposits stored (targets:
# rss_mb <= 20 at deposits=100000; p99_ms at 1000000 <= 1.5x at 10000). Mind the 15-minute budget:
# loading 1M deposits one per commit is too slow; build the stores in big batches.
candidate_scale_rows() {
  CANDIDATE_WHY="bench/candidate.sh: candidate_scale_rows not written yet"
  return 1
}
