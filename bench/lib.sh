# shellcheck shell=bash
# bench/lib.sh — shared by bench/run.sh and the suite scripts (sourced, never run).
#
# Gives: paths (BENCH_ROOT, BENCH_DIR, BENCH_BIN), logging (bench_log, bench_die), cleanup on exit
# in reverse order of registration (bench_at_exit), stopping a process by PID (bench_stop_pid),
# free loopback ports (bench_free_port), and the Python helper (bench_py).
# Every process a bench script starts is stopped by PID from the EXIT trap installed here.

if [ -n "${BENCH_LIB_LOADED:-}" ]; then return 0; fi
BENCH_LIB_LOADED=1

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_BUILD="${BUILD:-build}"
case "$BENCH_BUILD" in /*) ;; *) BENCH_BUILD="$BENCH_ROOT/$BENCH_BUILD" ;; esac
BENCH_DIR="${BENCH_DIR:-$BENCH_BUILD/bench}"
BENCH_BIN="$BENCH_DIR/bin"
BENCH_LOGS="$BENCH_DIR/logs"
BENCH_PY="$BENCH_ROOT/bench/benchlib.py"
# Defaults for every suite (bench/run.sh options override them).
BENCH_SECONDS="${BENCH_SECONDS:-5}"
BENCH_REPEATS="${BENCH_REPEATS:-3}"
mkdir -p "$BENCH_DIR" "$BENCH_LOGS"

bench_log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

bench_py() { python3 "$BENCH_PY" "$@"; }

# ---- cleanup ------------------------------------------------------------------------------------
BENCH_CLEANUPS=()
bench_at_exit() { BENCH_CLEANUPS+=("$*"); }
bench_run_cleanups() {
  local i
  for ((i = ${#BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${BENCH_CLEANUPS[i]}" || true
  done
  BENCH_CLEANUPS=()
}
trap 'bench_run_cleanups' EXIT
trap 'bench_log "interrupted"; exit 130' INT TERM HUP

# A process is alive when it exists and is not a zombie.
bench_pid_alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# bench_stop_pid PID [SIGNAL [SECONDS]]: sends SIGNAL (default TERM), waits up to SECONDS
# (default 10) for the process to go, then SIGKILL. Reaps it when it is our child.
bench_stop_pid() {
  local pid="$1" signal="${2:-TERM}" seconds="${3:-10}" i
  [ -n "$pid" ] || return 0
  if bench_pid_alive "$pid"; then
    kill -s "$signal" "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 20; i++)); do
      bench_pid_alive "$pid" || break
      sleep 0.05
    done
    if bench_pid_alive "$pid"; then
      bench_log "pid $pid did not stop on SIG$signal in ${seconds}s: SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# A free TCP port on 127.0.0.1 (bound and released: a tiny race, acceptable here).
bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# bench_wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.
bench_wait_port() {
  local port="$1" seconds="$2" i
  for ((i = 0; i < seconds * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

bench_need_tool() {
  [ -x "$BENCH_BIN/$1" ] || bench_die "$BENCH_BIN/$1 is missing: run 'make bench-tools' (or 'make bench')"
}

bench_min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
