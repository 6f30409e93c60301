#!/usr/bin/env bash
# bench/tools/get_ab.sh — deposit GET over HTTPS, A/B: two keytrustee builds and nginx, interleaved.
#
# For profiling work on the read path (issue 8), not part of `make bench`. Starts, for each build,
# an active/passive pair by the seed's procedure (tests/lib/pair.sh) on loopback addresses
# 127.0.0.41/42 ("base") and 127.0.0.43/44 ("new"), registers a client, stores one deposit
# (~180-byte answer), starts bench/nginx_tls.sh's nginx, then runs wrk (bench_wrk) against each
# system in turn: nginx (static JSON, unsigned), nginx-signed (the same, with kt_signed.lua's
# signing cost on the client), base and new (signed deposit GETs). Each run prints one JSON line:
# req/s, p50/p99 ms, errors, and CPU microseconds per request of keytrusteed, keytrustee-db and
# the client (wrk + signing), from /proc/PID/stat before and after the run.
#
#   BASE_BIN=/path/to/old/build/bin bench/tools/get_ab.sh      # default: base = new = build/bin
#   env: CONNS="1 8 64" SECONDS_PER=5 REPEATS=2 SYSTEMS="nginx nginx-signed base new"
#        HOLD=file.sh  sources file.sh instead of the loop (APIPID[new], DBPID[new], ktget ... are
#                      set), e.g. to run perf record / strace -c on a daemon under load
#
# To build a base from an older commit: git archive COMMIT | tar -x -C /tmp/base && make -C /tmp/base
# Work files go to $GET_AB_DIR (default build/get-ab); every process started is stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${GET_AB_DIR:-$ROOT/build/get-ab}"
export BENCH_DIR="$WORK/bench"
source $ROOT/bench/lib.sh
source $ROOT/bench/nginx_tls.sh
PIDS=()
stopall() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 0.5; }
bench_at_exit stopall
declare -A URL UUIDS KEY APIPID DBPID
setup_kt() {
 local name=$1 bin=$2 A=$3 B=$4 work=$WORK/work-$1 HTTPS REPL
 HTTPS=$(bench_free_port); REPL=$(bench_free_port)
 rm -rf $work; mkdir -p $work/b; chmod 700 $work $work/b
 ( export KEYTRUSTEE_HOME=$work/a
   $bin/ktadmin init --external-address $A --listen $A --port $HTTPS
   rsync -a --exclude .ssl $work/a/.keytrustee $work/b/
   $bin/ktadmin db --bootstrap --port $REPL --pg-rootdir $work/a/db --slave kt02 ) > $work/setup.log 2>&1
 KEYTRUSTEE_HOME=$work/a $bin/keytrustee-db --foreground --pg-rootdir $work/a/db >$work/dba.log 2>&1 & PIDS+=($!); DBPID[$name]=$!
 for i in $(seq 100); do [ -S $work/a/run/keytrustee-db.sock ] && break; sleep 0.05; done
 KEYTRUSTEE_HOME=$work/a $bin/keytrusteed --foreground >$work/apia.log 2>&1 & PIDS+=($!); APIPID[$name]=$!
 for i in $(seq 100); do (exec 3<>/dev/tcp/$A/$HTTPS) 2>/dev/null && break; sleep 0.05; done
 ( export KEYTRUSTEE_HOME=$work/b
   for i in $(seq 50); do $bin/ktadmin init-slave --master $A --pg-port $REPL --pg-rootdir $work/b/db --no-import-key --no-start && break; sleep 0.2; done ) >> $work/setup.log 2>&1
 KEYTRUSTEE_HOME=$work/b $bin/keytrustee-db --foreground --pg-rootdir $work/b/db >$work/dbb.log 2>&1 & PIDS+=($!)
 for i in $(seq 100); do [ -S $work/b/run/keytrustee-db.sock ] && break; sleep 0.05; done
 KEYTRUSTEE_HOME=$work/a $bin/ktadmin enable-synchronous-replication --pg-rootdir $work/a/db >> $work/setup.log 2>&1
 export KEYTRUSTEE_HOME=$work/a
 for i in $(seq 100); do $bin/keytrustee-orgtool add -n demo -c demo@example.com >/dev/null 2>&1 && break; sleep 0.1; done
 local secret; secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["demo"]["auth_secret"])' < <($bin/keytrustee-orgtool list))
 $bin/ktclient --confdir $work/client register --server https://$A:$HTTPS --org demo --auth "$secret" --clientname c1 --cacert $work/a/.keytrustee/.ssl/ssl-cert-keytrustee-ca.pem >/dev/null
 echo -n 'MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlh' | $bin/ktclient --confdir $work/client put --handle bench1 >/dev/null
 UUIDS[$name]=$($bin/ktclient --confdir $work/client list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["uuid"] if isinstance(d,list) else d["deposits"][0]["uuid"])')
 URL[$name]=https://$A:$HTTPS; KEY[$name]=$work/client/client.key
 unset KEYTRUSTEE_HOME
 bench_log "$name: ${URL[$name]} uuid ${UUIDS[$name]} api ${APIPID[$name]} db ${DBPID[$name]}"
}
setup_kt base "${BASE_BIN:-$ROOT/build/bin}" 127.0.0.41 127.0.0.42
setup_kt new $ROOT/build/bin 127.0.0.43 127.0.0.44
nginx_setup
ktget() { KT_BENCH_KEY_FILE=${KEY[$1]} KT_BENCH_METHOD=GET KT_BENCH_PATH=/v1/deposits/${UUIDS[$1]} bench_wrk "${URL[$1]}/" "$2" "$3" --script $ROOT/bench/wrk/kt_signed.lua; }
ngget() { bench_wrk "$(nginx_url)" "$2" "$3"; }
ngsigned() { KT_BENCH_KEY_FILE=${KEY[new]} KT_BENCH_METHOD=GET KT_BENCH_PATH=/deposit.json bench_wrk "$(nginx_url)" "$2" "$3" --script $ROOT/bench/wrk/kt_signed.lua; }
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
measure() { # sys conns seconds -> json line with cpu us/req
 local sys=$1 c=$2 s=$3 out a0 d0 a1 d1 t0 t1 me=$BASHPID
 if [ "$sys" = nginx ] || [ "$sys" = nginx-signed ]; then a0=0; d0=0; else a0=$(cpu ${APIPID[$sys]}); d0=$(cpu ${DBPID[$sys]}); fi
 t0=$(awk '{print $16+$17}' /proc/$me/stat)
 case $sys in nginx) out=$(ngget x $c $s);; nginx-signed) out=$(ngsigned x $c $s);; *) out=$(ktget $sys $c $s);; esac
 t1=$(awk '{print $16+$17}' /proc/$me/stat)
 if [ "$sys" = nginx ] || [ "$sys" = nginx-signed ]; then a1=0; d1=0; else a1=$(cpu ${APIPID[$sys]}); d1=$(cpu ${DBPID[$sys]}); fi
 echo "$out" | python3 -c "
import json,sys; d=json.load(sys.stdin); n=max(d['requests'],1); t=1e6/$tck
print(json.dumps({'sys':'$sys','c':$c,'rps':round(d['ops_per_s']),'p50':d['p50_ms'],'p99':d['p99_ms'],'err':d['errors'],'api_us':round(($a1-$a0)*t/n,1),'db_us':round(($d1-$d0)*t/n,1),'client_us':round(($t1-$t0)*t/n,1)}))"
}
bench_log "ready"
if [ -n "${HOLD:-}" ]; then source "$HOLD"; exit 0; fi
for rep in $(seq ${REPEATS:-2}); do
 for c in ${CONNS:-1 8 64}; do
  for sys in ${SYSTEMS:-nginx base new}; do measure $sys $c ${SECONDS_PER:-5}; done
 done
done
