#!/usr/bin/env bash
# bench/run.sh — `make bench`: keytrustee against the systems users would pick instead, on this
# machine, in the same run. Prints the machine, a table of medians, spreads and ratios, and writes
# build/bench/results.json.
#
#   bench/run.sh [--suites commit,failure,https,scale] [--systems LIST] [--seconds S]
#                [--repeats N] [--writers "1 8 32"] [--connections "1 8 64"]
#                [--handshake-connections "8"] [--quick]
#
#   --suites    which suites (default all): commit (one key row per transaction: keytrustee's
#               storage + replication layer, and end to end through keytrustee-db's admin socket,
#               vs PostgreSQL sync-rep vs SQLite WAL FULL), failure (failure timings; PostgreSQL's
#               row: a write with its synchronous standby stopped), https (deposit get/put and
#               full handshakes vs nginx TLS 1.2), scale (keytrustee only).
#   --systems   keep only these systems: keytrustee, keytrustee-admin (commit suite only),
#               postgresql-syncrep (or pg), sqlite-wal-full (or sqlite), nginx-tls12 (or nginx)
#               (default all)
#   --seconds   length of each measured run (default 5); --repeats: runs per row (default 3)
#   --quick     1-second runs, 1 repeat: a smoke test of the harness, not a measurement
#   --budget    seconds the whole run may take (default 840, under make bench's 15 minutes): a
#               measured run that would end past it is skipped and listed as not measured
#
# Each row's systems run alternately (the order rotates with each repeat); the table gives the
# median over the repeats, the min–max spread of ops/s, the median p50/p99/p999, and the ratio to
# the reference system (PostgreSQL for commits, nginx for HTTPS). Everything started is stopped by
# PID on exit. Bounded: every run has a fixed length and a timeout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
# shellcheck source=bench/pg_syncrep.sh
source "$HERE/pg_syncrep.sh"
# shellcheck source=bench/nginx_tls.sh
source "$HERE/nginx_tls.sh"
# shellcheck source=bench/candidate.sh
source "$HERE/candidate.sh"

SUITES="commit,failure,https,scale"
SYSTEMS="keytrustee,keytrustee-admin,postgresql-syncrep,sqlite-wal-full,nginx-tls12"
WRITERS="1 8 32"
CONNECTIONS="1 8 64"
HANDSHAKE_CONNECTIONS="8"
while [ $# -gt 0 ]; do
  case "$1" in
    --suites) SUITES="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --seconds) BENCH_SECONDS="$2"; shift 2 ;;
    --repeats) BENCH_REPEATS="$2"; shift 2 ;;
    --writers) WRITERS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --handshake-connections) HANDSHAKE_CONNECTIONS="$2"; shift 2 ;;
    --quick) BENCH_SECONDS=1; BENCH_REPEATS=1; shift ;;
    --budget) BENCH_BUDGET="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) bench_die "unknown option '$1' (bench/run.sh --help)" ;;
  esac
done
[[ "$BENCH_SECONDS" =~ ^[0-9]+$ && "$BENCH_SECONDS" -ge 1 && "$BENCH_SECONDS" -le 60 ]] \
  || bench_die "--seconds must be a whole number 1..60"
[[ "$BENCH_REPEATS" =~ ^[0-9]+$ && "$BENCH_REPEATS" -ge 1 && "$BENCH_REPEATS" -le 10 ]] \
  || bench_die "--repeats must be 1..10"

BENCH_BUDGET="${BENCH_BUDGET:-840}"
[[ "$BENCH_BUDGET" =~ ^[0-9]+$ ]] || bench_die "--budget must be a number of seconds"
# Short names for the baselines.
SYSTEMS="$(echo ",$SYSTEMS," | sed 's/,pg,/,postgresql-syncrep,/g; s/,sqlite,/,sqlite-wal-full,/g;
  s/,nginx,/,nginx-tls12,/g; s/^,//; s/,$//')"
want_suite() { [[ ",$SUITES," == *",$1,"* ]]; }
want_system() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

RUNS="$BENCH_DIR/runs.jsonl"
MACHINE="$BENCH_DIR/machine.json"
RESULTS="$BENCH_DIR/results.json"
HOOK_OUT="$BENCH_DIR/hook.out"   # candidate hooks write here (run in this shell: CANDIDATE_WHY)
STARTED=$SECONDS

# ---- rows ---------------------------------------------------------------------------------------
# emit LABELS... < tool-json: one row appended to runs.jsonl, a progress line on stderr.
emit() {
  local row
  row="$(bench_py tag "$@" loadavg="$(cut -d' ' -f1 /proc/loadavg)")"
  echo "$row" >>"$RUNS"
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
f = lambda k: "-" if r.get(k) is None else "%.3f" % r[k]
print("[bench]   %-6s %-20s %-18s c=%-3s rep %s: %10s ops/s  p50 %s  p99 %s  p999 %s ms%s" % (
    r.get("suite"), r.get("system"), r.get("group"), r.get("clients"), r.get("rep"),
    "{:,.0f}".format(r.get("ops_per_s") or 0), f("p50_ms"), f("p99_ms"), f("p999_ms"),
    "  ERRORS %s" % r["errors"] if r.get("errors") else ""), file=sys.stderr)' "$row"
}
note() { # note WHAT DETAIL
  python3 -c 'import json,sys; print(json.dumps({"suite":"info","what":sys.argv[1],"detail":sys.argv[2]}))' "$1" "$2" >>"$RUNS"
}
missing() { # missing WHAT
  bench_log "not measured: $1"
  python3 -c 'import json,sys; print(json.dumps({"suite":"missing","what":sys.argv[1]}))' "$1" >>"$RUNS"
}
# in_budget WHAT: true when a run of BENCH_SECONDS (+ 15 s of setup slack) still ends within the
# budget; otherwise records WHAT as not measured.
in_budget() {
  if [ $((SECONDS - STARTED + BENCH_SECONDS + 15)) -le "$BENCH_BUDGET" ]; then return 0; fi
  missing "$1: skipped, the ${BENCH_BUDGET}-second budget of the whole run is spent"
  return 1
}
# rotate N WORDS...: the words rotated left by N (alternation order for repeat N).
rotate() {
  local n="$1"; shift
  local -a items=("$@")
  local count=${#items[@]} i
  [ "$count" -gt 0 ] || return 0
  for ((i = 0; i < count; i++)); do printf '%s\n' "${items[$(((i + n) % count))]}"; done
}

# ---- the machine --------------------------------------------------------------------------------
bench_need_tool fsync_latency
bench_need_tool commit_bench
"$HERE/install-deps.sh"
: >"$RUNS"

COMMIT="$(git -C "$BENCH_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
FS_TYPE="$(stat -f -c %T "$BENCH_DIR")"
FSYNC="$("$BENCH_BIN/fsync_latency" --count 2000 "$BENCH_DIR")"
echo "$FSYNC" | bench_py machine fs_type="$FS_TYPE" fsync_dir="$BENCH_DIR" \
  loadavg_at_start="$(cut -d' ' -f1-3 /proc/loadavg)" commit="$COMMIT" \
  started="$(date -u +%Y-%m-%dT%H:%M:%SZ)" seconds_per_run="$BENCH_SECONDS" \
  repeats="$BENCH_REPEATS" \
  postgresql="$("$PG_BIN/postgres" --version 2>/dev/null | awk '{print $3}')" \
  nginx="$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
  wrk="$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')" >"$MACHINE"
REPORT_TXT="$BENCH_DIR/report.txt"   # the header and the tables, as printed
python3 - "$MACHINE" <<'EOF' | tee "$REPORT_TXT"
import json, sys
m = json.load(open(sys.argv[1]))
f = m["fsync_4k_in_place"]
print("== keytrustee make bench — commit %s — %s" % (m["commit"][:12], m["started"]))
print("machine: %s cores (%s), %s GiB memory, kernel %s, %s" % (m["cores"], m["cpu"], m["memory_gib"], m["kernel"], m["os"]))
print("fsync:   4 KiB pwrite+fdatasync in place x%d on %s (%s): p50 %.3f ms, p99 %.3f ms, max %.3f ms"
      % (f["count"], m["fsync_dir"], m["fs_type"], f["p50_ms"], f["p99_ms"], f["max_ms"]))
print("load:    %s at start (other work on this machine skews every figure)" % m["loadavg_at_start"])
print("runs:    %ss each, %s repeats, systems alternating; PostgreSQL %s, nginx %s, wrk %s"
      % (m["seconds_per_run"], m["repeats"], m["postgresql"], m["nginx"], m["wrk"]))
EOF

# ---- commit suite -------------------------------------------------------------------------------
PG_UP=0
pg_up() {
  if [ $PG_UP -eq 0 ]; then pg_setup; PG_UP=1; fi
}

if want_suite commit; then
  bench_log "suite commit: one key row per transaction, writers: $WRITERS"
  systems=()
  if want_system keytrustee; then
    if candidate_commit_setup; then systems+=(keytrustee); bench_at_exit candidate_commit_teardown
    else missing "keytrustee commit rows: $CANDIDATE_WHY"; fi
  fi
  if want_system keytrustee-admin; then
    if candidate_admin_commit_setup; then systems+=(keytrustee-admin); bench_at_exit candidate_admin_commit_teardown
    else missing "keytrustee-admin commit rows: $CANDIDATE_WHY"; fi
  fi
  if want_system sqlite-wal-full; then
    systems+=(sqlite-wal-full)
    SQLITE_DIR="$BENCH_DIR/sqlite"
    rm -rf "$SQLITE_DIR"; mkdir -p "$SQLITE_DIR"
  fi
  if want_system postgresql-syncrep; then
    pg_up
    systems+=(postgresql-syncrep)
    note "postgresql sync state before the commit runs" "$(pg_sync_state)"
  fi
  for writers in $WRITERS; do
    for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
      mapfile -t order < <(rotate $((rep - 1)) "${systems[@]}")
      for system in "${order[@]}"; do
        labels=(suite=commit group=commit "case=1 key row per commit" system="$system" clients="$writers" rep="$rep")
        in_budget "$system commit, $writers writers, repeat $rep" || continue
        case "$system" in
          sqlite-wal-full)
            "$BENCH_BIN/commit_bench" --backend sqlite --target "$SQLITE_DIR/commit.db" \
              --writers "$writers" --seconds "$BENCH_SECONDS" --hang-timeout 20 | emit "${labels[@]}" ;;
          postgresql-syncrep)
            pg_commit_run "$writers" "$BENCH_SECONDS" | emit "${labels[@]}" ;;
          keytrustee)
            if candidate_commit_run "$writers" "$BENCH_SECONDS" >"$HOOK_OUT"; then emit "${labels[@]}" <"$HOOK_OUT"
            else missing "keytrustee commit, $writers writers, repeat $rep: the run failed"; fi ;;
          keytrustee-admin)
            if candidate_admin_commit_run "$writers" "$BENCH_SECONDS" >"$HOOK_OUT"; then emit "${labels[@]}" <"$HOOK_OUT"
            else missing "keytrustee-admin commit, $writers writers, repeat $rep: the run failed"; fi ;;
        esac
      done
    done
  done
  if want_system postgresql-syncrep; then
    state="$(pg_sync_state)"
    note "postgresql sync state after the commit runs" "$state"
    [ "$state" = "standby1 streaming sync" ] || bench_die "the PostgreSQL standby was not synchronous at the end: '$state'"
  fi
  if [[ " ${systems[*]} " == *" keytrustee "* ]]; then candidate_commit_teardown; fi
  if [[ " ${systems[*]} " == *" keytrustee-admin "* ]]; then candidate_admin_commit_teardown; fi
  rm -rf "${SQLITE_DIR:-/nonexistent}"
fi

# ---- failure timings ----------------------------------------------------------------------------
if want_suite failure; then
  bench_log "suite failure: failure timings"
  if want_system postgresql-syncrep; then
    pg_up
    pg_standby_stopped_rows >>"$RUNS"
  fi
  if want_system keytrustee; then
    if candidate_failure_rows >"$HOOK_OUT"; then cat "$HOOK_OUT" >>"$RUNS"
    else missing "keytrustee failure timings: $CANDIDATE_WHY"; fi
  fi
fi
if [ $PG_UP -eq 1 ]; then pg_teardown; PG_UP=0; fi

# ---- https suite --------------------------------------------------------------------------------
if want_suite https; then
  bench_log "suite https: connections $CONNECTIONS keep-alive, $HANDSHAKE_CONNECTIONS with a handshake per request"
  keepalive=() handshake=()
  if want_system nginx-tls12; then
    nginx_setup
    keepalive+=(nginx-tls12) handshake+=(nginx-tls12)
  fi
  if want_system keytrustee; then
    if candidate_https_setup; then
      keepalive+=(keytrustee-get keytrustee-put) handshake+=(keytrustee-get)
      bench_at_exit candidate_https_teardown
    else missing "keytrustee https rows: $CANDIDATE_WHY"; fi
  fi
  https_run() { # https_run GROUP CONNECTIONS REP WHAT
    local group="$1" connections="$2" rep="$3" what="$4" close=()
    [ "$group" = handshake ] && close=(--close)
    local labels=(suite=https group="$group" clients="$connections" rep="$rep")
    in_budget "$what https $group, $connections connections, repeat $rep" || return 0
    case "$what" in
      nginx-tls12)
        bench_wrk "$(nginx_url)" "$connections" "$BENCH_SECONDS" "${close[@]}" \
          | emit "${labels[@]}" system=nginx-tls12 "case=GET static 180-byte JSON" ;;
      keytrustee-get|keytrustee-put)
        local hook=candidate_https_get name="deposit get"
        [ "$what" = keytrustee-put ] && hook=candidate_https_put name="deposit put"
        [ "$group" = handshake ] && hook=candidate_https_handshake
        if $hook "$connections" "$BENCH_SECONDS" >"$HOOK_OUT"; then
          emit "${labels[@]}" system=keytrustee "case=$name" <"$HOOK_OUT"
        else missing "keytrustee https $name ($group, $connections connections, repeat $rep): the run failed"; fi ;;
    esac
  }
  for connections in $CONNECTIONS; do
    for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
      mapfile -t order < <(rotate $((rep - 1)) "${keepalive[@]}")
      for what in "${order[@]}"; do https_run keep-alive "$connections" "$rep" "$what"; done
    done
  done
  for connections in $HANDSHAKE_CONNECTIONS; do
    for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
      mapfile -t order < <(rotate $((rep - 1)) "${handshake[@]}")
      for what in "${order[@]}"; do https_run handshake "$connections" "$rep" "$what"; done
    done
  done
  if [ -n "$HANDSHAKE_CONNECTIONS" ]; then
    note "https handshake rows" "a new TCP connection and full TLS 1.2 handshake per request (Connection: close, no session reuse); the rate is the figure: wrk starts its latency clock after the handshake"
  fi
  nginx_teardown
  if [[ " ${keepalive[*]} " == *" keytrustee-get "* ]]; then candidate_https_teardown; fi
fi

# ---- scale --------------------------------------------------------------------------------------
if want_suite scale && want_system keytrustee; then
  bench_log "suite scale"
  if candidate_scale_rows >"$HOOK_OUT"; then cat "$HOOK_OUT" >>"$RUNS"
  else missing "keytrustee scale rows: $CANDIDATE_WHY"; fi
fi

# ---- report -------------------------------------------------------------------------------------
note "wall time of bench/run.sh" "$((SECONDS - STARTED)) s"
bench_py report "$RUNS" "$MACHINE" "$RESULTS" | tee -a "$REPORT_TXT"
echo "bench: done in $((SECONDS - STARTED)) s (printed tables also in $REPORT_TXT)"
