#!/usr/bin/env bash
# test_tls.sh — keytrusteed's TLS policy and its resistance to idle and slow clients, against a
# real node (keytrustee-db + keytrusteed from KT_BIN, default build/asan/bin) on a free port.
#
# What it shows (issue 7, "TLS" and "slow clients"), with openssl s_client as the client:
#   - TLS 1.0 and 1.1 are refused by the server (the client is told to offer them: OpenSSL's own
#     security level would otherwise refuse before anything is sent), TLS 1.2 is accepted with an
#     ECDHE AEAD suite and no compression.
#   - CBC suites (ECDHE-ECDSA-AES128-SHA, ...-SHA256, ...-AES256-SHA384), offered alone over TLS
#     1.2, are refused: only AEAD suites are served. The node's certificate is ECDSA, so these are
#     suites the server could otherwise have chosen.
#   - A client's renegotiation request is not honoured.
#   - tls_ciphers in keytrustee.conf narrows the list; a weak or unknown suite there refuses the
#     start with a message naming it; tls_min_version other than 1.2 likewise.
#   - On SIGHUP (certificate reload in place) tls_ciphers is re-read and applied to new
#     connections, with TLS 1.0/1.1, CBC suites and renegotiation still refused; a bad tls_ciphers
#     or tls_min_version then keeps the running settings, with a log line naming it.
#   - 20 TCP connections that send nothing neither spin the server (CPU) nor stop a normal client
#     (curl still gets its 200), and the server closes every one of them itself.
#     CivetWeb gives each connection a worker thread from the start of its handshake: with fewer
#     workers than idle connections (keytrusteed has KTD_WORKER_THREADS = 64), a new client waits
#     for the first handshake deadline (5 s) to free one, hence the limit; with more workers than
#     idle connections it is answered at once (the time is printed).
#   - A slowloris client (one byte a second, during the handshake or in the HTTP headers after it)
#     does not stop other clients from being answered, and is cut off by the server before it can
#     finish. How long each thing took is printed as a figure, not asserted (timings belong to
#     make bench: a loaded CI machine must not fail a test that behaved correctly).
#   - An ordinary close by the client leaves no "SSL read failed" line in the log.
#
# Prints "ok - name" / "not ok - name" per check and ends with "N passed, M failed".
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cd "$KT_ROOT"

work=$KT_WORK
export KEYTRUSTEE_HOME=$work/home
conf=$KEYTRUSTEE_HOME/.keytrustee/keytrustee.conf
HANDSHAKE_DEADLINE_S=5 # keytrusteed's ssl_handshake_timeout_ms (app/keytrusteed/server.c)

for program in ktadmin keytrustee-db keytrusteed; do
    [ -x "$KT_BIN/$program" ] || { echo "Bail out! $KT_BIN/$program does not exist (build it first)"; exit 1; }
done
command -v openssl >/dev/null || { echo "Bail out! openssl is not installed"; exit 1; }

port=$(kt_free_port) || { echo "Bail out! no free port"; exit 1; }
url="https://127.0.0.1:$port"

start_server() {
    kt_start server "$KT_BIN/keytrusteed" --foreground
    server_pid=$(kt_pid server)
    for _ in $(seq 1 100); do
        curl -sk --max-time 2 -o /dev/null "$url/?a=fingerprint" && return 0
        kt_alive server || return 1
        sleep 0.1
    done
    return 1
}

server_answers() {
    curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "$url/v1/health" | grep -q '^200$'
}

# Milliseconds a normal request takes right now (999999 when it fails).
request_ms() {
    local start status
    start=$(date +%s%N)
    status=$(curl -sk --max-time 20 -o /dev/null -w '%{http_code}' "$url/v1/health")
    if [ "$status" = 200 ]; then echo $((($(date +%s%N) - start) / 1000000)); else echo 999999; fi
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

# s_client NAME OPTIONS...: one handshake attempt, output in $work/NAME.out.
s_client() {
    local name=$1
    shift
    timeout 15 openssl s_client -connect "127.0.0.1:$port" -servername localhost "$@" \
        </dev/null >"$work/$name.out" 2>&1
}
handshake_done() { grep -qE '^ *Cipher *: [A-Z0-9-]+$' "$1" && ! grep -q 'Cipher is (NONE)' "$1"; }
# The client offered the handshake (it did not refuse on its own) and the server refused it.
server_refused() {
    ! grep -qiE 'no protocols available|no ciphers available|no cipher match' "$1" &&
        ! handshake_done "$1" &&
        grep -qiE 'alert|handshake failure|wrong version|unsupported protocol|errno|write:' "$1"
}

# ---- The node ----------------------------------------------------------------------------------

"$KT_BIN/ktadmin" init --external-address 127.0.0.1 --listen 127.0.0.1 --port "$port" \
    >"$work/init.log" 2>&1 || { echo "Bail out! ktadmin init failed: $(tail -3 "$work/init.log")"; exit 1; }
"$KT_BIN/ktadmin" db --bootstrap >"$work/bootstrap.log" 2>&1 ||
    { echo "Bail out! ktadmin db --bootstrap failed: $(tail -3 "$work/bootstrap.log")"; exit 1; }
kt_start db "$KT_BIN/keytrustee-db" --foreground
kt_wait_file "$KEYTRUSTEE_HOME/run/keytrustee-db.sock" ||
    { echo "Bail out! keytrustee-db did not start: $(tail -5 "$work/db.log")"; exit 1; }
start_server || { echo "Bail out! keytrusteed did not start: $(tail -5 "$work/server.log")"; exit 1; }

# ---- Protocol versions, suites, compression, renegotiation -------------------------------------

s_client tls10 -tls1 -cipher 'DEFAULT:@SECLEVEL=0'
check "TLS 1.0 is refused by the server" server_refused "$work/tls10.out"
s_client tls11 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
check "TLS 1.1 is refused by the server" server_refused "$work/tls11.out"
s_client tls12 -tls1_2
check "TLS 1.2 is accepted" handshake_done "$work/tls12.out"
check "TLS 1.2 negotiates an ECDHE AEAD suite" \
    grep -qE '^ *Cipher *: ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$' \
    "$work/tls12.out"
check "no compression" grep -q '^Compression: NONE' "$work/tls12.out"
for suite in ECDHE-ECDSA-AES128-SHA ECDHE-ECDSA-AES256-SHA384 ECDHE-ECDSA-AES128-SHA256 AES128-SHA; do
    s_client "weak-$suite" -tls1_2 -cipher "$suite:@SECLEVEL=0"
    check "the non-AEAD suite $suite is refused" server_refused "$work/weak-$suite.out"
done
s_client chacha -tls1_2 -cipher 'ECDHE-ECDSA-CHACHA20-POLY1305'
check "ChaCha20-Poly1305 alone is accepted" handshake_done "$work/chacha.out"

# "R" on s_client's input asks for a renegotiation; the server must not perform one.
{ sleep 1; echo R; sleep 2; } | timeout 15 openssl s_client -connect "127.0.0.1:$port" -tls1_2 \
    >"$work/renegotiate.out" 2>&1
sed -n '/^RENEGOTIATING/,$p' "$work/renegotiate.out" >"$work/renegotiate.after"
check "a client's renegotiation is refused (no_renegotiation)" \
    eval 'grep -q "^RENEGOTIATING" "$work/renegotiate.out" &&
          grep -q "no renegotiation" "$work/renegotiate.after" &&
          ! grep -q "verify return" "$work/renegotiate.after" && server_answers'

# ---- keytrustee.conf: tls_ciphers and tls_min_version ------------------------------------------

restart_with() { # LINE...: keytrustee.conf plus these lines; sets $started
    kt_stop server
    cp "$work/conf.saved" "$conf"
    local line
    for line in "$@"; do printf '%s\n' "$line" >>"$conf"; done
    : >"$work/server.log"
    if start_server; then started=yes; else started=no; fi
}
cp "$conf" "$work/conf.saved"
restart_with "tls_ciphers = TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"
s_client narrow-128 -tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256'
s_client narrow-256 -tls1_2 -cipher 'ECDHE-ECDSA-AES256-GCM-SHA384'
check "tls_ciphers limits the suites served" \
    eval '[ "$started" = yes ] && handshake_done "$work/narrow-128.out" &&
          server_refused "$work/narrow-256.out"'
restart_with "tls_ciphers = TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA"
check "a CBC suite in tls_ciphers refuses the start, naming it" \
    eval '[ "$started" = no ] && grep -q "tls_ciphers: TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA is not allowed" "$work/server.log"'
restart_with "tls_ciphers = TLS-NO-SUCH-SUITE"
check "an unknown suite in tls_ciphers refuses the start" \
    eval '[ "$started" = no ] && grep -q "TLS-NO-SUCH-SUITE is not a cipher suite" "$work/server.log"'
restart_with "tls_min_version = 1.0"
check "tls_min_version = 1.0 refuses the start" \
    eval '[ "$started" = no ] && grep -q "tls_min_version = 1.0 is not supported" "$work/server.log"'
restart_with "tls_min_version = 1.2"
check "tls_min_version = 1.2 is accepted" eval '[ "$started" = yes ] && server_answers'

# ---- keytrustee.conf on SIGHUP: the reloaded configuration keeps the policy ---------------------

reload_with() { # LINE...: keytrustee.conf plus these lines, then SIGHUP; waits for its outcome
    cp "$work/conf.saved" "$conf"
    local line outcomes
    for line in "$@"; do printf '%s\n' "$line" >>"$conf"; done
    outcomes=$(grep -cE 'new connections get the re-read|refused the new certificate' "$work/server.log")
    kill -HUP "$(kt_pid server)"
    for _ in $(seq 1 100); do
        [ "$(grep -cE 'new connections get the re-read|refused the new certificate' "$work/server.log")" -gt "$outcomes" ] && return 0
        sleep 0.05
    done
    return 1
}
# reloaded: the last SIGHUP's outcome in the log is a reload, not a refusal.
reloaded() {
    grep -E 'new connections get the re-read|refused the new certificate' "$work/server.log" |
        tail -n 1 | grep -q 'new connections get the re-read'
}
reload_with "tls_ciphers = TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"
check "SIGHUP reloads with the new tls_ciphers" reloaded
s_client reload-256 -tls1_2 -cipher 'ECDHE-ECDSA-AES256-GCM-SHA384'
s_client reload-128 -tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256'
check "after SIGHUP, new connections get only the suites tls_ciphers now lists" \
    eval 'handshake_done "$work/reload-256.out" && server_refused "$work/reload-128.out"'
s_client reload-tls11 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
check "after SIGHUP, TLS 1.1 is still refused" server_refused "$work/reload-tls11.out"
s_client reload-cbc -tls1_2 -cipher 'ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0'
check "after SIGHUP, a CBC suite is still refused" server_refused "$work/reload-cbc.out"
reload_with "tls_ciphers = TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA"
check "with a bad tls_ciphers, SIGHUP still reloads the certificate" reloaded
s_client reload-kept-256 -tls1_2 -cipher 'ECDHE-ECDSA-AES256-GCM-SHA384'
s_client reload-kept-128 -tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256'
check "a CBC suite in tls_ciphers on SIGHUP keeps the running settings, saying why" \
    eval 'grep -q "SIGHUP: keeping the current TLS settings: .*TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA is not allowed" "$work/server.log" &&
          handshake_done "$work/reload-kept-256.out" && server_refused "$work/reload-kept-128.out"'
reload_with "tls_min_version = 1.0"
check "tls_min_version = 1.0 on SIGHUP keeps the running settings, saying why" \
    eval 'reloaded && grep -q "SIGHUP: keeping the current TLS settings: .*tls_min_version = 1.0 is not supported" "$work/server.log"'
s_client reload-tls10 -tls1 -cipher 'DEFAULT:@SECLEVEL=0'
check "after that SIGHUP, TLS 1.0 is still refused" server_refused "$work/reload-tls10.out"
reload_with
s_client reload-default -tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256'
check "without tls_ciphers, SIGHUP goes back to the default suites" handshake_done "$work/reload-default.out"
{ sleep 1; echo R; sleep 2; } | timeout 15 openssl s_client -connect "127.0.0.1:$port" -tls1_2 \
    >"$work/reload-renegotiate.out" 2>&1
sed -n '/^RENEGOTIATING/,$p' "$work/reload-renegotiate.out" >"$work/reload-renegotiate.after"
check "after SIGHUP, a client's renegotiation is still refused" \
    eval 'grep -q "^RENEGOTIATING" "$work/reload-renegotiate.out" &&
          grep -q "no renegotiation" "$work/reload-renegotiate.after" &&
          ! grep -q "verify return" "$work/reload-renegotiate.after" && server_answers'
# The refused renegotiation leaves an "SSL read failed" (fatal alert) line; the hygiene check at
# the end is about ordinary closes, so it starts from an empty log (O_APPEND: safe to truncate).
: >"$work/server.log"

# ---- Idle connections --------------------------------------------------------------------------

before=$(cpu_ticks)
idle=()
for _ in $(seq 1 20); do exec {fd}<>"/dev/tcp/127.0.0.1/$port" && idle+=("$fd"); done
sleep 1
elapsed=$(request_ms)
sleep 1
spent=$(($(cpu_ticks) - before))
echo "# 20 idle connections: a request took ${elapsed} ms; keytrusteed used $spent CPU ticks in ~2 s"
check "20 idle connections were opened" eval '[ "${#idle[@]}" -eq 20 ]'
# A 200 within curl's own limit is the behaviour checked; how long it took is a figure, printed
# above (timed assertions belong in make bench, not in tests).
check "with 20 idle connections a normal request is still answered" eval '[ "$elapsed" -ne 999999 ]'
check "idle connections do not spin the server" eval '[ "$spent" -lt 50 ]'
# The server ends each idle connection at its handshake deadline: reading sees the close.
start=$(date +%s)
closed=0
for fd in "${idle[@]}"; do
    if timeout $((HANDSHAKE_DEADLINE_S + 10)) cat <&"$fd" >/dev/null 2>&1; then closed=$((closed + 1)); fi
done
waited=$(($(date +%s) - start))
for fd in "${idle[@]}"; do exec {fd}>&-; done
echo "# the 20 idle connections were closed by the server after ${waited} s (deadline ${HANDSHAKE_DEADLINE_S} s)"
check "the server closes every idle connection itself (before the reader's own limit)" \
    eval '[ "$closed" -eq 20 ]'

# ---- Slowloris ---------------------------------------------------------------------------------

# During the handshake: a TLS record header announcing 512 bytes, then one byte a second.
slow_start=$(date +%s)
(
    trap '' PIPE
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf '\026\003\001\002\000' >&3
    for _ in $(seq 1 30); do printf 'x' >&3 || exit 0; sleep 1; done
    exit 3 # the server let it send all 30 bytes over 30 s: it was never cut off
) 2>/dev/null &
slow_handshake=$!
# After the handshake: HTTP header bytes one a second over a real TLS connection.
(
    for character in G E T ' ' / v 1 / h e a l t h ' ' H T T P / 1 . 1 $'\r' $'\n' X : ' ' y y y y y y y y y y; do
        printf '%s' "$character"
        sleep 1
    done
) | timeout 40 openssl s_client -quiet -connect "127.0.0.1:$port" -tls1_2 >"$work/slowloris.out" 2>&1 &
slow_headers=$!
sleep 2
worst=0
for _ in 1 2 3 4 5; do
    ms=$(request_ms)
    [ "$ms" -gt "$worst" ] && worst=$ms
    sleep 1
done
echo "# with two slowloris clients the slowest of 5 requests took ${worst} ms"
check "with two slowloris clients connected, other clients are still answered" \
    eval '[ "$worst" -ne 999999 ]'
# The writer sees the close at its next byte and exits 0; after all 30 bytes it exits 3.
wait "$slow_handshake" 2>/dev/null
slow_handshake_status=$?
handshake_cut=$(($(date +%s) - slow_start))
echo "# the slowloris handshake was cut off after ${handshake_cut} s (deadline ${HANDSHAKE_DEADLINE_S} s)"
check "a slowloris handshake is cut off by the server before it can finish" \
    eval '[ "$slow_handshake_status" -eq 0 ]'
wait "$slow_headers" 2>/dev/null
slow_headers_status=$?
headers_cut=$(($(date +%s) - slow_start))
echo "# the slowloris request was cut off after ${headers_cut} s"
# timeout(1) exits 124 when it had to kill openssl: the server never closed the connection.
check "a slowloris request is cut off by the server's request timeout" \
    eval '[ "$slow_headers_status" -ne 124 ]'

# ---- Hygiene -----------------------------------------------------------------------------------

for _ in 1 2 3; do server_answers; done
check "an ordinary close leaves no 'SSL read failed' in the log" \
    eval '! grep -q "SSL read failed" "$work/server.log"'
kt_stop server TERM
exit_status=$?
check "SIGTERM stops keytrusteed with status 0" eval '[ "$exit_status" = 0 ]'
check "no sanitizer reports in the keytrusteed log" \
    eval '! grep -q "AddressSanitizer\|LeakSanitizer\|runtime error:" "$work/server.log"'
if [ "$kt_failed" -gt 0 ]; then
    echo "# keytrusteed log (last 30 lines):"
    tail -n 30 "$work/server.log" | sed 's/^/#   /'
fi
kt_finish
