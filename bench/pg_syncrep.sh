#!/usr/bin/env bash
# bench/pg_syncrep.sh — the PostgreSQL baseline: Debian's PostgreSQL 15, a primary and one
# synchronous standby on loopback, one key row per transaction through pgbench.
#
#   bench/pg_syncrep.sh [run.sh options]    runs only this baseline (= bench/run.sh --suites
#                                          commit,failure --systems postgresql-syncrep ...)
# Sourced by bench/run.sh for its functions:
#   pg_setup                 initdb primary, pg_basebackup -R standby, both started, sync checked
#   pg_commit_run N SECONDS  pgbench -c N: one JSON line {ops_per_s, p50/p99/p999_ms, ...}
#   pg_sync_state            prints "standby1 streaming sync" (pg_stat_replication)
#   pg_standby_stopped_rows  stops the standby, one INSERT under `timeout 3`, records the hang;
#                            restarts it and times the first write that completes. Failure rows.
#   pg_teardown              stops both servers by PID, removes the data directories
#
# Layout under build/bench/pg: primary/ standby/ (data, owned by postgres), sock/ (both unix
# sockets), log/ (server logs), insert.sql. Primary: wal_level=replica, fsync=on,
# synchronous_commit=on, synchronous_standby_names='standby1'. Standby: primary_conninfo over TCP
# 127.0.0.1 with application_name=standby1. pgbench connects over the unix socket (PostgreSQL's
# fastest client path). PostgreSQL refuses to run as root: as root, servers and initdb run as the
# postgres user (runuser); the servers are stopped by their postmaster PID from the EXIT trap.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  exec "$BENCH_ROOT/bench/run.sh" --suites commit,failure --systems postgresql-syncrep "$@"
fi

pg_find_bin() { # the newest /usr/lib/postgresql/N/bin
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/postgres" ] && best="$dir"; done
  echo "$best"
}
PG_BIN="${PG_BIN:-$(pg_find_bin)}"
PG_DIR="$BENCH_DIR/pg"
PG_SOCK="$PG_DIR/sock"
PG_PRIMARY_PORT=""
PG_STANDBY_PORT=""
PG_PRIMARY_PID=""
PG_STANDBY_PID=""
PG_ROW_SQL="INSERT INTO deposits(uuid, client, handle, created, box) VALUES"

pg_as() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_psql() { # pg_psql PORT SQL: one value out (-At)
  "$PG_BIN/psql" -X -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$1" -U postgres -d postgres -c "$2"
}

# Fast shutdown (SIGINT) by PID, then immediate (SIGQUIT), then SIGKILL.
pg_stop_pid() {
  local pid="$1" i
  [ -n "$pid" ] || return 0
  bench_pid_alive "$pid" || return 0
  kill -s INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 400; i++)); do bench_pid_alive "$pid" || return 0; sleep 0.05; done
  bench_log "postgres $pid: no fast shutdown in 20 s, immediate shutdown"
  kill -s QUIT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do bench_pid_alive "$pid" || return 0; sleep 0.05; done
  kill -s KILL "$pid" 2>/dev/null || true
}

pg_postmaster_pid() { head -n 1 "$1/postmaster.pid" 2>/dev/null || true; }

pg_start_server() { # pg_start_server DATADIR NAME -> prints the postmaster PID
  local data="$1" name="$2"
  if ! pg_as "$PG_BIN/pg_ctl" -D "$data" -l "$PG_DIR/log/$name.log" -w -t 60 start >/dev/null; then
    tail -n 20 "$PG_DIR/log/$name.log" >&2 || true
    bench_die "PostgreSQL $name did not start (log: $PG_DIR/log/$name.log)"
  fi
  pg_postmaster_pid "$data"
}

pg_sync_state() {
  pg_psql "$PG_PRIMARY_PORT" \
    "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication" 2>/dev/null || true
}

pg_wait_sync() { # pg_wait_sync SECONDS
  local i state=""
  for ((i = 0; i < $1 * 10; i++)); do
    state="$(pg_sync_state)"
    [ "$state" = "standby1 streaming sync" ] && return 0
    sleep 0.1
  done
  bench_log "pg_stat_replication: '${state:-no standby}'"
  return 1
}

pg_setup() {
  [ -x "$PG_BIN/postgres" ] || bench_die "PostgreSQL server binaries not found under /usr/lib/postgresql (bench/install-deps.sh)"
  id postgres >/dev/null 2>&1 || bench_die "no 'postgres' user (the postgresql package creates it)"
  # A previous run interrupted hard may have left servers running here: they are ours, stop them.
  local old pid
  for old in "$PG_DIR/standby" "$PG_DIR/primary"; do
    pid="$(pg_postmaster_pid "$old")"
    if [ -n "$pid" ] && bench_pid_alive "$pid" && grep -q postgres "/proc/$pid/comm" 2>/dev/null; then
      bench_log "stopping a leftover PostgreSQL (pid $pid) from an earlier bench run"
      pg_stop_pid "$pid"
    fi
  done
  rm -rf "$PG_DIR"
  install -d -o postgres -g postgres "$PG_DIR" "$PG_SOCK" "$PG_DIR/log"
  if [ "${#PG_SOCK}" -gt 90 ]; then bench_die "socket directory path too long for a unix socket: $PG_SOCK"; fi
  PG_PRIMARY_PORT="$(bench_free_port)"
  PG_STANDBY_PORT="$(bench_free_port)"
  while [ "$PG_STANDBY_PORT" = "$PG_PRIMARY_PORT" ]; do PG_STANDBY_PORT="$(bench_free_port)"; done

  bench_log "PostgreSQL ($("$PG_BIN/postgres" --version)): initdb primary, port $PG_PRIMARY_PORT"
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/primary" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$PG_DIR/log/initdb.log" 2>&1 || { cat "$PG_DIR/log/initdb.log" >&2; bench_die "initdb failed"; }
  pg_as tee -a "$PG_DIR/primary/postgresql.conf" >/dev/null <<EOF
# ---- bench/pg_syncrep.sh ----
listen_addresses = '127.0.0.1'
port = $PG_PRIMARY_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 100
wal_level = replica
max_wal_senders = 4
fsync = on
synchronous_commit = on
full_page_writes = on
hot_standby = on
EOF
  bench_at_exit pg_teardown
  PG_PRIMARY_PID="$(pg_start_server "$PG_DIR/primary" primary)"
  pg_psql "$PG_PRIMARY_PORT" "CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null
  pg_psql "$PG_PRIMARY_PORT" "CREATE TABLE deposits(uuid text PRIMARY KEY, client text NOT NULL,
      handle text NOT NULL, created bigint NOT NULL, box bytea NOT NULL)" >/dev/null

  bench_log "PostgreSQL: pg_basebackup -R standby, port $PG_STANDBY_PORT"
  pg_as "$PG_BIN/pg_basebackup" -h "$PG_SOCK" -p "$PG_PRIMARY_PORT" -U postgres \
    -D "$PG_DIR/standby" -R -X stream -c fast >"$PG_DIR/log/basebackup.log" 2>&1 \
    || { cat "$PG_DIR/log/basebackup.log" >&2; bench_die "pg_basebackup failed"; }
  pg_as tee -a "$PG_DIR/standby/postgresql.auto.conf" >/dev/null <<EOF
port = $PG_STANDBY_PORT
primary_conninfo = 'host=127.0.0.1 port=$PG_PRIMARY_PORT user=postgres application_name=standby1'
EOF
  PG_STANDBY_PID="$(pg_start_server "$PG_DIR/standby" standby)"
  # Synchronous only now that the standby exists (the schema above committed without waiting).
  pg_psql "$PG_PRIMARY_PORT" "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" >/dev/null
  pg_psql "$PG_PRIMARY_PORT" "SELECT pg_reload_conf()" >/dev/null
  pg_wait_sync 30 || bench_die "the standby did not become synchronous in 30 s (logs: $PG_DIR/log)"
  bench_log "PostgreSQL: primary pid $PG_PRIMARY_PID, standby pid $PG_STANDBY_PID;" \
    "pg_stat_replication: $(pg_sync_state); synchronous_commit=$(pg_psql "$PG_PRIMARY_PORT" 'SHOW synchronous_commit'), fsync=$(pg_psql "$PG_PRIMARY_PORT" 'SHOW fsync')"

  # One key row per transaction, the same shape as commit_bench's rows.
  cat >"$PG_DIR/insert.sql" <<'EOF'
INSERT INTO deposits(uuid, client, handle, created, box)
VALUES (gen_random_uuid()::text, lpad(:client_id::text, 40, '0'), 'bench-' || md5(random()::text),
        extract(epoch FROM now())::bigint, gen_random_bytes(100));
EOF
}

# pg_commit_run CLIENTS SECONDS: one pgbench run; prints one JSON line.
pg_commit_run() {
  local clients="$1" seconds="$2" jobs dir tps failed latency
  jobs="$(bench_min 2 "$clients")"
  dir="$(mktemp -d "$PG_DIR/run.XXXXXX")"
  if ! timeout -k 5 $((seconds + 60)) "$PG_BIN/pgbench" -n -h "$PG_SOCK" -p "$PG_PRIMARY_PORT" \
      -U postgres -c "$clients" -j "$jobs" -T "$seconds" -f "$PG_DIR/insert.sql" \
      -l --log-prefix="$dir/tx" postgres >"$dir/out" 2>&1; then
    cat "$dir/out" >&2
    bench_die "pgbench -c $clients failed"
  fi
  tps="$(sed -n 's/^tps = \([0-9.]*\) .*without initial connection time.*/\1/p' "$dir/out")"
  failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/out")"
  [ -n "$tps" ] || { cat "$dir/out" >&2; bench_die "no tps in pgbench's output"; }
  latency="$(bench_py pgbench-log "$dir"/tx.*)"
  echo "$latency" | bench_py tag backend=pgbench writers="$clients" seconds="$seconds" \
    ops_per_s="$tps" errors="${failed:-0}"
  cp "$dir/out" "$BENCH_LOGS/pgbench-c$clients.last.txt"
  rm -rf "$dir"
}

# The reference rows of the failure table: what PostgreSQL does when its synchronous standby goes.
pg_standby_stopped_rows() {
  local uuid rc start end elapsed visible err detail outcome
  bench_log "PostgreSQL: stopping the standby (pid $PG_STANDBY_PID), one INSERT under timeout 3 s"
  pg_stop_pid "$PG_STANDBY_PID"
  PG_STANDBY_PID=""
  uuid="$(cat /proc/sys/kernel/random/uuid)"
  err="$BENCH_LOGS/pg-standby-stopped.txt"
  start="$(date +%s.%N)"
  set +e
  # statement_timeout=1s to show it does not fire while waiting for the standby. SIGINT after
  # 3 s makes psql send a cancel request (the server then reports the row committed locally).
  PGOPTIONS='-c statement_timeout=1000' timeout -s INT -k 3 3 "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 \
    -h "$PG_SOCK" -p "$PG_PRIMARY_PORT" -U postgres -d postgres \
    -c "$PG_ROW_SQL ('$uuid', repeat('0', 40), 'bench-standby-stopped', 0, gen_random_bytes(100))" \
    >"$err" 2>&1
  rc=$?
  set -e
  end="$(date +%s.%N)"
  elapsed="$(python3 -c "print(round($end - $start, 3))")"
  visible="$(pg_psql "$PG_PRIMARY_PORT" "SELECT count(*) FROM deposits WHERE uuid = '$uuid'")"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    outcome="hang"
    detail="no answer within 3 s (statement_timeout=1s did not fire)"
    if grep -q 'committed locally' "$err"; then
      detail="$detail; after cancel: 'committed locally, but might not have been replicated'"
    fi
    detail="$detail; row visible on the primary: $([ "$visible" = 1 ] && echo yes || echo no)"
  elif [ "$rc" -eq 0 ]; then
    outcome="completed"; detail="the INSERT returned in ${elapsed}s without the standby"
  else
    outcome="error"; detail="psql exit $rc: $(tr '\n' ' ' <"$err" | cut -c1-200)"
  fi
  bench_log "PostgreSQL, standby stopped: $outcome — $detail"
  printf '{"suite":"failure","case":"write with the synchronous standby stopped","system":"postgresql-syncrep","outcome":"%s","seconds":null,"waited_s":%s,"detail":"%s"}\n' \
    "$outcome" "$elapsed" "${detail//\"/\'}"

  # The standby returns: time from its start to the first INSERT that completes.
  bench_log "PostgreSQL: restarting the standby, timing the first write that completes"
  start="$(date +%s.%N)"
  PG_STANDBY_PID="$(pg_start_server "$PG_DIR/standby" standby)"
  # One INSERT issued at once, allowed 30 s: it completes when the standby has caught up and
  # acknowledged it.
  local done_ok=0
  uuid="$(cat /proc/sys/kernel/random/uuid)"
  if timeout -s INT -k 2 30 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" \
      -p "$PG_PRIMARY_PORT" -U postgres -d postgres \
      -c "$PG_ROW_SQL ('$uuid', repeat('0', 40), 'bench-standby-back', 0, gen_random_bytes(100))" \
      >/dev/null 2>&1; then
    done_ok=1
  fi
  end="$(date +%s.%N)"
  elapsed="$(python3 -c "print(round($end - $start, 3))")"
  if [ $done_ok -eq 1 ]; then
    printf '{"suite":"failure","case":"write resumption after the standby returns","system":"postgresql-syncrep","outcome":"resumed","seconds":%s,"detail":"from pg_ctl start of the standby (includes its startup) to the first INSERT that completed"}\n' "$elapsed"
  else
    printf '{"suite":"failure","case":"write resumption after the standby returns","system":"postgresql-syncrep","outcome":"not resumed","seconds":null,"detail":"no INSERT completed within %ss"}\n' "$elapsed"
  fi
  pg_wait_sync 30 || bench_log "warning: the standby is not synchronous again"
}

pg_teardown() {
  if [ -n "$PG_STANDBY_PID" ]; then pg_stop_pid "$PG_STANDBY_PID"; PG_STANDBY_PID=""; fi
  if [ -n "$PG_PRIMARY_PID" ]; then pg_stop_pid "$PG_PRIMARY_PID"; PG_PRIMARY_PID=""; fi
  rm -rf "$PG_DIR/primary" "$PG_DIR/standby"
}
