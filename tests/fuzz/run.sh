#!/usr/bin/env bash
# tests/fuzz/run.sh — runs the libFuzzer targets of tests/fuzz/ (built by `make fuzz-build` into
# build/fuzz/bin, or $KT_FUZZ_BIN).
#
#   tests/fuzz/run.sh regress [NAME...]
#       Runs each target once over every file of its committed corpus tests/fuzz/corpus/NAME/
#       (seeds and the inputs of crashes found before, kept as regressions) under ASan, UBSan and
#       LeakSanitizer. Prints a line per target and ends with "N passed, M failed" (N inputs; a
#       crash, a sanitizer report or a leak is one failure); exits 1 when any failed. tests/run.sh
#       runs this for every target as part of `make test`; it takes a few seconds in all.
#   tests/fuzz/run.sh fuzz [NAME...]
#       Fuzzes each target for FUZZ_SECONDS (default 60), FUZZ_JOBS (default 1) at a time,
#       starting from the committed corpus plus build/fuzz/corpus/NAME, where new inputs are kept
#       (the committed corpus is not touched: copy an input there by hand to keep it). A crash is
#       written to build/fuzz/crashes/NAME/ and fails the run. Prints one line per target with the
#       executions, executions per second, coverage (edges "cov" and features "ft") and corpus
#       size libFuzzer reported, and keeps each full log in build/fuzz/logs/NAME.log.
#
# NAME is a target without its fuzz_ prefix (api, wire, ...); FUZZ_TARGETS=api,wire does the same
# as naming them. With no names, every tests/fuzz/fuzz_*.c that has a corpus directory runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin=${KT_FUZZ_BIN:-$root/build/fuzz/bin}
out=$root/build/fuzz
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mode=${1:-}
shift || true
names=("$@")
if [ ${#names[@]} -eq 0 ] && [ -n "${FUZZ_TARGETS:-}" ]; then
  IFS=, read -r -a names <<<"$FUZZ_TARGETS"
fi
if [ ${#names[@]} -eq 0 ]; then
  for source in tests/fuzz/fuzz_*.c; do
    name=$(basename "$source" .c); name=${name#fuzz_}
    [ -d "tests/fuzz/corpus/$name" ] && names+=("$name")
  done
fi

passed=0
failed_inputs=0
regress() {
  local name=$1 target=$bin/fuzz_$1 corpus=tests/fuzz/corpus/$1
  local files=("$corpus"/*)
  if [ ! -x "$target" ]; then
    echo "regress $name: $target is not built (make fuzz-build)"
    failed_inputs=$((failed_inputs + 1))
    return 1
  fi
  if [ ! -e "${files[0]}" ]; then
    echo "regress $name: no corpus in $corpus"
    failed_inputs=$((failed_inputs + 1))
    return 1
  fi
  # Files named one by one: libFuzzer runs each once, and LeakSanitizer checks at exit.
  if "$target" -timeout=20 -rss_limit_mb=2048 "${files[@]}" >"$out/logs/$name.regress.log" 2>&1; then
    echo "regress $name: ${#files[@]} inputs ok"
    passed=$((passed + ${#files[@]}))
    return 0
  fi
  # libFuzzer stops at the first failing input: the last one it was running.
  grep -E 'ERROR|FUZZ CHECK|runtime error|Running:' "$out/logs/$name.regress.log" | tail -n 8
  echo "regress $name: FAILED (full log: $out/logs/$name.regress.log)"
  passed=$((passed + $(grep -c '^Running:' "$out/logs/$name.regress.log") - 1))
  failed_inputs=$((failed_inputs + 1))
  return 1
}

# The last numbers libFuzzer printed for a run: executions, per second, cov, ft, corpus.
summarize() {
  local name=$1 log=$out/logs/$1.log status=$2
  local units rate cov ft corpus
  units=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 | cut -d' ' -f2)
  printf '%-16s %s  runs %10s  exec/s %7s  cov %5s  ft %6s  corpus %s\n' "$name" \
    "$([ "$status" -eq 0 ] && echo ok || echo CRASH)" "${units:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "${corpus:-?}"
  if [ "$status" -ne 0 ]; then
    grep -E 'ERROR|FUZZ CHECK|runtime error|Test unit written' "$log" | head -n 6 | sed 's/^/    /'
  fi
}

fuzz_one() {
  local name=$1 target=$bin/fuzz_$1
  mkdir -p "$out/corpus/$name" "$out/crashes/$name"
  "$target" -max_total_time="${FUZZ_SECONDS:-60}" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$name/" \
    "$out/corpus/$name" "tests/fuzz/corpus/$name" >"$out/logs/$name.log" 2>&1
}

mkdir -p "$out/logs"
failed=0
case "$mode" in
  regress)
    for name in "${names[@]}"; do regress "$name" || failed=1; done
    echo "$passed passed, $failed_inputs failed"
    ;;
  fuzz)
    for name in "${names[@]}"; do
      [ -x "$bin/fuzz_$name" ] || { echo "$name: not built (make fuzz-build)"; failed=1; continue; }
    done
    for name in "${names[@]}"; do
      [ -x "$bin/fuzz_$name" ] || continue
      while [ "$(jobs -rp | wc -l)" -ge "${FUZZ_JOBS:-1}" ]; do wait -n; done
      rm -f "$out/logs/$name.status"
      ( fuzz_one "$name"; echo $? >"$out/logs/$name.status" ) &
    done
    wait
    echo "fuzzing ${FUZZ_SECONDS:-60} s per target:"
    for name in "${names[@]}"; do
      [ -x "$bin/fuzz_$name" ] || continue
      status=$(cat "$out/logs/$name.status" 2>/dev/null || echo 1)
      [ "$status" -eq 0 ] || failed=1
      summarize "$name" "$status"
    done
    ;;
  *)
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
exit $failed
