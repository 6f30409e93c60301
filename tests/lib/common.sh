# tests/lib/common.sh — what every integration test shares. Source it, then:
#   kt_start NAME CMD...     start a process in the background, remember its PID, log to $KT_WORK/NAME.log
#   kt_stop NAME [SIGNAL]    signal it (TERM by default) and wait for it to exit
#   kt_wait_port HOST PORT   wait until something accepts TCP there (10 s)
#   kt_free_port             print a TCP port nobody listens on
#   ok NAME / not_ok NAME DETAIL / check NAME CMD...   record results
#   kt_finish                print "N passed, M failed" and exit with the right status
# Every process started with kt_start is killed by PID when the script exits, whatever happens.
set -uo pipefail

KT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KT_BIN=${KT_BIN:-$KT_ROOT/build/asan/bin}
KT_TESTS=${KT_TESTS:-$KT_ROOT/build/asan/tests}
KT_WORK=$(mktemp -d "${TMPDIR:-/tmp}/kt-test.XXXXXX")
chmod 700 "$KT_WORK"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}

declare -A KT_PIDS=()
kt_passed=0
kt_failed=0

kt_cleanup() {
  local name pid
  for name in "${!KT_PIDS[@]}"; do
    pid=${KT_PIDS[$name]}
    kill -CONT "$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "$kt_failed" -eq 0 ] && [ -z "${KT_KEEP:-}" ]; then rm -rf "$KT_WORK"; else echo "# work dir kept: $KT_WORK"; fi
}
trap kt_cleanup EXIT

kt_start() {
  local name=$1; shift
  "$@" >>"$KT_WORK/$name.log" 2>&1 &
  KT_PIDS[$name]=$!
}

kt_pid() { echo "${KT_PIDS[$1]:-}"; }

# Stops a process started with kt_start; returns its exit status (128+n for a signal).
kt_stop() {
  local name=$1 signal=${2:-TERM} pid status
  pid=${KT_PIDS[$name]:-}
  [ -n "$pid" ] || return 0
  kill -CONT "$pid" 2>/dev/null
  kill -"$signal" "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null; status=$?
  unset "KT_PIDS[$name]"
  return $status
}

kt_alive() { local pid=${KT_PIDS[$1]:-}; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

kt_wait_port() {
  local host=$1 port=$2
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

kt_wait_file() {
  for _ in $(seq 1 200); do [ -e "$1" ] && return 0; sleep 0.05; done
  return 1
}

kt_free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

ok() { kt_passed=$((kt_passed + 1)); echo "ok - $1"; }
not_ok() { kt_failed=$((kt_failed + 1)); echo "not ok - $1${2:+: $2}"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }

kt_finish() {
  echo "$kt_passed passed, $kt_failed failed"
  [ "$kt_failed" -eq 0 ]
  exit $?
}
