#!/usr/bin/env bash
# test_repl_crash.sh — synchronous writes under kill -9 of either node at random moments: every
# write answered "ok" is on both nodes afterwards, every write answered "refused" is on neither,
# and both nodes end identical (rows and pages), whatever was indeterminate.
# KT_LONG=1 runs more rounds. Every process is killed by PID when the script ends.
source "$(dirname "$0")/../lib/common.sh"

NODE=$KT_TESTS/repl_node
W=$KT_WORK
PORT=$(kt_free_port)
ROUNDS=${KT_LONG:+30}
ROUNDS=${ROUNDS:-6}
"$NODE" genkey "$W/key" || { not_ok "generate a pair key"; kt_finish; }
mkdir -p "$W/a" "$W/p"

ctl() { local node=$1; shift; "$NODE" ctl "$W/$node.sock" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
field() { ctl "$1" status | tr ' ' '\n' | sed -n "s/^$2=//p"; }
state_is() { [ "$(field "$1" state)" = "$2" ]; }
wait_for() {
  local tenths=$1; shift
  for _ in $(seq 1 "$tenths"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

start_active() {
  rm -f "$W/a.sock"
  kt_start active "$NODE" run --role active --dir "$W/a" --key-file "$W/key" \
    --control "$W/a.sock" --listen "127.0.0.1:$PORT" --cache-pages 20 "$@"
  kt_wait_file "$W/a.sock"
}

start_passive() {
  rm -f "$W/p.sock"
  kt_start passive "$NODE" run --role passive --dir "$W/p" --key-file "$W/key" \
    --control "$W/p.sock" --master "127.0.0.1:$PORT"
  kt_wait_file "$W/p.sock"
}

start_active
quiet ctl a put seed 0
"$NODE" basecopy --master "127.0.0.1:$PORT" --key-file "$W/key" --dir "$W/p" >/dev/null 2>&1
start_passive
check "pair in sync" wait_for 100 state_is a in_sync
kt_stop active
start_active --sync
check "pair in sync, synchronous" wait_for 100 state_is a in_sync

# The writer: one write at a time, each answer recorded; every tenth write is a big one.
writer() {
  local i=0 answer
  while [ ! -e "$W/stop-writing" ]; do
    i=$((i + 1))
    if [ $((i % 10)) -eq 0 ]; then
      answer=$("$NODE" ctl "$W/a.sock" big "w$i" 40 2>/dev/null | head -n 1)
      echo "w$i-0 big ${answer:-none}" >>"$W/answers"
    else
      answer=$("$NODE" ctl "$W/a.sock" put "w$i" "v$i" 2>/dev/null | head -n 1)
      echo "w$i plain ${answer:-none}" >>"$W/answers"
    fi
  done
}
writer &
WRITER=$!
KT_PIDS[writer]=$WRITER

for round in $(seq 1 "$ROUNDS"); do
  sleep "0.$((RANDOM % 8 + 2))"
  if [ $((RANDOM % 2)) -eq 0 ]; then
    kt_stop passive KILL
    sleep "0.$((RANDOM % 5))"
    start_passive
  else
    kt_stop active KILL
    sleep "0.$((RANDOM % 3))"
    start_active --sync
  fi
  wait_for 100 state_is a in_sync
done
sleep 0.5
touch "$W/stop-writing"
wait "$WRITER"; unset "KT_PIDS[writer]"

check "pair in sync after the last crash" wait_for 150 state_is a in_sync
quiet ctl a put final v
check "final write accepted and applied on the passive" wait_for 30 ctl p get final

present() { "$NODE" ctl "$W/$1.sock" get "$2" >/dev/null 2>&1; }
lost=0; resurrected=0; oks=0; refusals=0; others=0
while read -r key _ answer; do
  case "$answer" in
    ok)
      oks=$((oks + 1))
      present a "$key" && present p "$key" || { lost=$((lost + 1)); echo "# acknowledged but missing: $key"; } ;;
    refused)
      refusals=$((refusals + 1))
      if present a "$key" || present p "$key"; then resurrected=$((resurrected + 1)); echo "# refused but present: $key"; fi ;;
    *) others=$((others + 1)) ;;
  esac
done <"$W/answers"
echo "# $oks acknowledged, $refusals refused, $others indeterminate or unanswered, over $ROUNDS crashes"
check "some writes were acknowledged" test "$oks" -gt 0
check "every acknowledged write is on both nodes" test "$lost" -eq 0
check "no refused write appears on either node" test "$resurrected" -eq 0
rows_a=$(ctl a rows); rows_p=$(ctl p rows); sum_a=$(ctl a checksum); sum_p=$(ctl p checksum)
check "both nodes hold the same rows" test "$rows_a" = "$rows_p"
check "both nodes hold the same pages" test "$sum_a" = "$sum_p"

kt_stop passive; status=$?
check "passive stops cleanly" test "$status" -eq 0
kt_stop active; status=$?
check "active stops cleanly" test "$status" -eq 0
kt_finish
