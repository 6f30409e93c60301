#!/usr/bin/env bash
# test_repl_basic.sh — an active and a passive (tests/tools/repl_node: storage/ + replication/) on
# 127.0.0.1, as real processes on real files: base copy into an empty directory, synchronous
# writes that both nodes hold identically (row digest and page checksum), the passive killed
# with -9 and stopped with SIGSTOP (writes refused within 2 s, nothing refused shows up later),
# catch-up after a restart, the active killed with -9 after a refusal, a wrong pair key.
# Every process is started with kt_start and killed by PID when the script ends.
source "$(dirname "$0")/../lib/common.sh"

NODE=$KT_TESTS/repl_node
W=$KT_WORK
PORT=$(kt_free_port)
"$NODE" genkey "$W/key" || { not_ok "generate a pair key"; kt_finish; }
"$NODE" genkey "$W/wrong-key"
mkdir -p "$W/a" "$W/p" "$W/x"

ctl() { local node=$1; shift; "$NODE" ctl "$W/$node.sock" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
field() { ctl "$1" status | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# Waits up to $1 tenths of a second for the command to succeed.
wait_for() {
  local tenths=$1; shift
  for _ in $(seq 1 "$tenths"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

state_is() { [ "$(field "$1" state)" = "$2" ]; }
same_txid() { [ -n "$(field a txid)" ] && [ "$(field a txid)" = "$(field p txid)" ]; }
now_ms() { date +%s%3N; }

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

# Both nodes at the same position with the same rows and the same pages.
identical() {
  wait_for 50 same_txid || return 1
  local rows_a rows_p sum_a sum_p
  rows_a=$(ctl a rows) && rows_p=$(ctl p rows) && sum_a=$(ctl a checksum) && sum_p=$(ctl p checksum) || return 1
  [ "$rows_a" = "$rows_p" ] && [ "$sum_a" = "$sum_p" ]
}

# Runs a write on the active and checks its answer and how long it took.
write_expect() {
  local name=$1 expected=$2 limit_ms=$3; shift 3
  local start answer elapsed
  start=$(now_ms)
  answer=$(ctl a "$@")
  elapsed=$(( $(now_ms) - start ))
  if [[ " $expected " == *" $answer "* ]] && [ "$elapsed" -le "$limit_ms" ]; then
    ok "$name ($answer in ${elapsed} ms)"
  else
    not_ok "$name" "answer '$answer' after ${elapsed} ms, expected '$expected' within ${limit_ms} ms"
  fi
}

# ---- set-up: an active with data, a passive from a base copy ------------------------------------

start_active
check "active starts" wait_for 50 ctl a status
for i in $(seq 1 10); do ctl a put "before-$i" "value-$i" >/dev/null; done
check "storage write through the replication VFS" quiet ctl a org acme

check "base copy into an empty directory" \
  "$NODE" basecopy --master "127.0.0.1:$PORT" --key-file "$W/key" --dir "$W/p"
check "base copy refuses a directory that has a database" \
  bash -c "! '$NODE' basecopy --master 127.0.0.1:$PORT --key-file '$W/key' --dir '$W/p' 2>/dev/null"

start_passive
check "passive reaches in_sync" wait_for 100 state_is p in_sync
check "active reaches in_sync" wait_for 100 state_is a in_sync
check "nodes identical after the base copy" identical

# ---- synchronous writes --------------------------------------------------------------------------

check "enable synchronous replication" quiet ctl a sync on
failures=0
for i in $(seq 1 30); do [ "$(ctl a put "sync-$i" "value-$i")" = ok ] || failures=$((failures + 1)); done
check "30 synchronous writes acknowledged" test "$failures" -eq 0
check "synchronous storage write" quiet ctl a org beta
check "a transaction larger than the page cache" quiet ctl a big large 300
check "the passive applies a synchronous write once confirmed" wait_for 30 ctl p get sync-30
check "nodes identical after synchronous writes" identical

# Back-to-back synchronous commits: the passive's acknowledgement can reach the active's session
# thread before the committing thread has returned from sending the transaction (a race that once
# dropped the link: "acknowledged something never sent").
burst=$(ctl a bench 5000)
check "5,000 back-to-back synchronous commits, none refused ($burst)" \
  test "$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$burst")" = 0
check "the link was never dropped during the burst" \
  bash -c "! grep -q 'never sent' '$W/active.log' 2>/dev/null"
check "nodes identical after the burst" identical

# ---- the passive killed with -9: refused within 2 s, never appears ------------------------------

kt_stop passive KILL
write_expect "write refused with the passive killed" "refused" 2000 put refused-1 x
write_expect "second write refused with the passive killed" "refused" 2000 put refused-2 x
write_expect "storage write refused with the passive killed" "refused" 2000 org refusedorg
check "a refused write is not visible on the active" bash -c "! '$NODE' ctl '$W/a.sock' get refused-1 >/dev/null"
check "active reports not writable" bash -c "[ \"\$('$NODE' ctl '$W/a.sock' status | tr ' ' '\n' | sed -n 's/^writable=//p')\" = 0 ]"

start_passive
check "passive back in sync after a restart" wait_for 100 state_is a in_sync
check "write accepted after the passive returned" quiet ctl a put after-restart v
check "refused writes appear on neither node" \
  bash -c "! '$NODE' ctl '$W/a.sock' get refused-1 >/dev/null && ! '$NODE' ctl '$W/p.sock' get refused-1 >/dev/null && ! '$NODE' ctl '$W/p.sock' get refused-2 >/dev/null"
check "nodes identical after the passive's restart" identical

# ---- the passive stopped (SIGSTOP): refused or indeterminate within 2 s --------------------------

kill -STOP "$(kt_pid passive)"
write_expect "write answered within 2 s with the passive stopped" "refused indeterminate" 2000 put stopped-1 x
write_expect "next write refused at once with the passive stopped" "refused" 2000 put stopped-2 x
kill -CONT "$(kt_pid passive)"
check "passive back in sync after SIGCONT" wait_for 100 state_is a in_sync
check "write accepted after SIGCONT" quiet ctl a put after-cont v
check "the indeterminate write was settled the same way on both nodes" identical
check "the refused write appears on neither node" \
  bash -c "! '$NODE' ctl '$W/a.sock' get stopped-2 >/dev/null && ! '$NODE' ctl '$W/p.sock' get stopped-2 >/dev/null"

# ---- the active killed with -9 after a refusal: the refused row does not come back ---------------

kt_stop passive KILL
write_expect "write refused before the active dies" "refused" 2000 put crash-refused x
kt_stop active KILL
start_active --sync
check "active restarts" wait_for 50 ctl a status
check "refused write absent after the active's crash and restart" \
  bash -c "! '$NODE' ctl '$W/a.sock' get crash-refused >/dev/null"
start_passive
check "pair in sync again" wait_for 100 state_is a in_sync
check "write accepted after both restarts" quiet ctl a put after-crash v
check "nodes identical after the active's crash" identical

# ---- catch-up: the passive away while the active commits asynchronously --------------------------

check "synchronous replication off" quiet ctl a sync off
kt_stop passive KILL
failures=0
for i in $(seq 1 40); do [ "$(ctl a put "async-$i" v)" = ok ] || failures=$((failures + 1)); done
check "asynchronous writes accepted without a passive" test "$failures" -eq 0
start_passive
check "passive catches up" wait_for 100 state_is p in_sync
check "nodes identical after catch-up" identical

# ---- the passive away longer than the active keeps its log: a full copy into the live database ---

kt_stop passive KILL
kt_stop active
start_active --retain 200000
failures=0
for i in $(seq 1 6); do [ "$(ctl a big "gone-$i" 100)" = ok ] || failures=$((failures + 1)); done
check "writes while the passive is away" test "$failures" -eq 0
start_passive
check "passive in sync again" wait_for 150 state_is p in_sync
check "the active sent a full copy (its log no longer held the passive's position)" \
  grep -q "active at [0-9]*: base copy$" "$W/active.log"
check "the passive installed it into its live database" grep -q "installed a full copy" "$W/passive.log"
check "nodes identical after the full copy" identical

# ---- a peer with the wrong pair key ---------------------------------------------------------------

kt_start intruder "$NODE" run --role passive --dir "$W/x" --key-file "$W/wrong-key" \
  --control "$W/x.sock" --master "127.0.0.1:$PORT"
kt_wait_file "$W/x.sock"
sleep 0.5
check "wrong key refused and logged by the active" grep -q "it does not hold our pair key" "$W/active.log"
check "wrong key noticed by the intruder" grep -q "does not hold our pair key" "$W/intruder.log"
check "the real passive keeps its link" state_is a in_sync
kt_stop intruder

# ---- clean shutdown (ASan checks for leaks at exit) ----------------------------------------------

kt_stop passive; status=$?
check "passive stops cleanly" test "$status" -eq 0
kt_stop active; status=$?
check "active stops cleanly" test "$status" -eq 0

kt_finish
