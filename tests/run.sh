#!/usr/bin/env bash
# Runs every test suite and ends with the line "N passed, M failed" (the sum over all suites).
#
#   unit suites:        build/asan/tests/test_*  (ASan + UBSan + LeakSanitizer)
#   fuzz regression:    build/fuzz/bin/fuzz_* over tests/fuzz/corpus/* (tests/fuzz/run.sh regress)
#   integration suites: tests/integration/test_*.sh against build/asan/bin (real processes, TLS,
#                       SQLite files, kill -9)
#
# Each suite prints its own "N passed, M failed" as its last such line; a suite that dies without
# one (a crash, a sanitizer report) counts as one failure. KT_LONG=1 (make check-long) lets suites
# run their long versions. KT_ONLY=pattern runs the suites whose name contains the pattern.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export KT_BIN=${KT_BIN:-$root/build/asan/bin}
export KT_TESTS=${KT_TESTS:-$root/build/asan/tests}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
logdir=$root/build/test-logs
rm -rf "$logdir"; mkdir -p "$logdir"

total_passed=0
total_failed=0
failed_suites=()

run_suite() {
  local name=$1; shift
  if [ -n "${KT_ONLY:-}" ] && [[ "$name" != *"$KT_ONLY"* ]]; then return; fi
  local log=$logdir/$name.log start end
  mkdir -p "$(dirname "$log")"
  start=$(date +%s)
  "$@" >"$log" 2>&1
  local status=$?
  end=$(date +%s)
  local summary passed failed
  summary=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$summary" ]; then
    passed=$(sed -E 's/^([A-Za-z]+: )?([0-9]+) passed.*/\2/' <<<"$summary")
    failed=$(sed -E 's/^([A-Za-z]+: )?[0-9]+ passed, ([0-9]+) failed.*/\2/' <<<"$summary")
  else
    passed=0; failed=0
  fi
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1   # died without saying so: a crash or sanitizer abort is a failure
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  printf '%-34s %4d passed, %3d failed  (%ss)\n' "$name" "$passed" "$failed" "$((end - start))"
  if [ "$failed" -ne 0 ]; then
    failed_suites+=("$name")
    echo "---- $name: failures (full log: $log)"
    grep -E '^not ok|CHECK failed|REQUIRE failed|ERROR: |runtime error|is .*, expected' "$log" | head -n 40
    tail -n 15 "$log"
    echo "----"
  fi
}

for test in "$KT_TESTS"/test_*; do
  [ -x "$test" ] || continue
  run_suite "unit/$(basename "$test")" "$test"
done

# Fuzz regression: every libFuzzer target once over its committed corpus (seeds and the inputs of
# crashes fixed before), under ASan + UBSan + LeakSanitizer; a few seconds in all. Built by
# `make fuzz-build` (make test does it); tests/fuzz/run.sh reports a target it cannot find.
for source in tests/fuzz/fuzz_*.c; do
  name=$(basename "$source" .c); name=${name#fuzz_}
  [ -d "tests/fuzz/corpus/$name" ] || continue
  run_suite "fuzz/$name" tests/fuzz/run.sh regress "$name"
done

for script in tests/integration/test_*.sh; do
  [ -f "$script" ] || continue
  run_suite "integration/$(basename "$script" .sh)" bash "$script"
done

if [ ${#failed_suites[@]} -gt 0 ]; then
  echo "failed suites: ${failed_suites[*]}"
fi
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
