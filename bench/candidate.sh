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
# TO BE FILLED IN BY THE LEAD once the replicated store and keytrusteed exist. The stubs below
# say what each hook must do; none of them fakes a measurement.

# shellcheck disable=SC2034  # read by bench/run.sh
CANDIDATE_WHY=""

# ---- commit suite ---------------------------------------------------------------------------------
# Setup: start an active/passive keytrustee pair on loopback (synchronous replication on), with an
# org and a client to own the rows; export what commit_bench's backend needs (e.g. the active's
# confdir in CANDIDATE_CONFDIR).
candidate_commit_setup() {
  local backends
  backends="$("$BENCH_BIN/commit_bench" --list-backends)"
  if ! grep -q '^keytrustee' <<<"$backends"; then
    CANDIDATE_WHY="commit_bench has no 'keytrustee' backend yet (bench/tools/commit_bench.c, note at its end)"
    return 1
  fi
  CANDIDATE_WHY="bench/candidate.sh: candidate_commit_setup does not start a replicated pair yet"
  return 1
}
# candidate_commit_run WRITERS SECONDS: one commit_bench JSON line.
candidate_commit_run() {
  "$BENCH_BIN/commit_bench" --backend keytrustee --target "${CANDIDATE_CONFDIR:?}" \
    --writers "$1" --seconds "$2"
}
candidate_commit_teardown() { :; }

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
