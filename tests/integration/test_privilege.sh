#!/usr/bin/env bash
# test_privilege.sh — least privilege of the two daemons (app/common/privilege.c):
#   - keytrusteed refuses a TLS key or server key that others can read, naming the chmod;
#   - core dumps are off (RLIMIT_CORE 0) in both daemons;
#   - as root: with --user NAME both daemons run as NAME (every uid and gid in /proc/PID/status,
#     no supplementary groups) once they have bound their sockets and read their keys, and still
#     serve a signed registration and deposit end to end; --user with an unknown name refuses to
#     start. The test user is created for the run and removed afterwards.
# Ends with "N passed, M failed".
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cd "$KT_ROOT"

KT_SIGN=${KT_SIGN:-$KT_TESTS/kt_sign}
work=$KT_WORK
export KEYTRUSTEE_HOME=$work/home
test_user=kt-test-priv

for program in "$KT_BIN/ktadmin" "$KT_BIN/keytrustee-db" "$KT_BIN/keytrusteed" "$KT_SIGN"; do
    [ -x "$program" ] || { echo "Bail out! $program missing (make SAN=1 all tests)"; exit 1; }
done

port=$(kt_free_port)
url="https://127.0.0.1:$port"
"$KT_BIN/ktadmin" init --external-address 127.0.0.1 --listen 127.0.0.1 --port "$port" \
    >"$work/init.log" 2>&1 || { echo "Bail out! ktadmin init"; exit 1; }
"$KT_BIN/ktadmin" db --bootstrap >"$work/bootstrap.log" 2>&1 || { echo "Bail out! bootstrap"; exit 1; }
tls_key=$KEYTRUSTEE_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-pk.pem
server_key=$KEYTRUSTEE_HOME/.keytrustee/keytrustee-server.key

# refuses FILE: keytrusteed exits non-zero naming "chmod 600 FILE" while FILE is 0644.
refuses() {
    local file=$1 mode output
    mode=$(stat -c %a "$file")
    chmod 644 "$file"
    output=$(timeout 20 "$KT_BIN/keytrusteed" --foreground --user '' 2>&1)
    local status=$?
    chmod "$mode" "$file"
    [ "$status" -ne 0 ] && printf '%s\n' "$output" | grep -q "run: chmod 600 $file" ||
        { echo "# keytrusteed said ($status): $output" | head -3; return 1; }
}
check "keytrusteed refuses a TLS key readable by others, with the chmod" refuses "$tls_key"
check "keytrusteed refuses a server key readable by others, with the chmod" refuses "$server_key"

start_db() { # [--user NAME]
    kt_start db "$KT_BIN/keytrustee-db" --foreground "$@"
    for _ in $(seq 1 100); do
        [ -S "$KEYTRUSTEE_HOME/run/keytrustee-db.sock" ] && kt_alive db && return 0
        sleep 0.1
    done
    return 1
}
start_server() { # [--user NAME]
    kt_start server "$KT_BIN/keytrusteed" --foreground "$@"
    for _ in $(seq 1 100); do
        curl -sk --max-time 2 -o /dev/null "$url/?a=fingerprint" && return 0
        sleep 0.1
    done
    return 1
}
core_limit_zero() { grep -q '^Max core file size *0 *0 ' "/proc/$(kt_pid "$1")/limits"; }

if [ "$(id -u)" != 0 ]; then
    start_db && start_server || { echo "Bail out! the node did not start"; exit 1; }
    check "keytrustee-db runs without core dumps" core_limit_zero db
    check "keytrusteed runs without core dumps" core_limit_zero server
    ok "privilege drop skipped (not root)"
    kt_finish
fi

created_user=0
if ! id "$test_user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$test_user" || {
        echo "Bail out! cannot create the test user $test_user"; exit 1; }
    created_user=1
fi
remove_user() { [ "$created_user" = 1 ] && userdel "$test_user" 2>/dev/null; kt_cleanup; }
trap remove_user EXIT
uid=$(id -u "$test_user")
gid=$(id -g "$test_user")

output=$(timeout 20 "$KT_BIN/keytrustee-db" --foreground --user kt-no-such-user 2>&1)
check "keytrustee-db --user with an unknown user refuses to start" \
    bash -c "[ $? -ne 0 ] && printf '%s' \"\$1\" | grep -q 'no such user'" _ "$output"

chown -R "$test_user:$test_user" "$KEYTRUSTEE_HOME"
chmod 711 "$work" # the test directory (0700, root's) must be traversable to reach the home
# LeakSanitizer cannot ptrace a process that changed its uid: leaks are checked by the other suites.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
start_db --user "$test_user" || { echo "Bail out! keytrustee-db --user did not start: $(tail -3 "$work/db.log")"; exit 1; }
start_server --user "$test_user" || { echo "Bail out! keytrusteed --user did not start: $(tail -3 "$work/server.log")"; exit 1; }

runs_as_user() { # NAME: every uid and gid of the process is the test user's, no other groups
    local pid status
    pid=$(kt_pid "$1")
    status=$(cat "/proc/$pid/status")
    printf '%s\n' "$status" | grep -q "^Uid:	$uid	$uid	$uid	$uid$" &&
        printf '%s\n' "$status" | grep -q "^Gid:	$gid	$gid	$gid	$gid$" &&
        printf '%s\n' "$status" | grep -Eq "^Groups:	($gid ?)?$" ||
        { printf '%s\n' "$status" | grep -E '^(Uid|Gid|Groups)' | sed 's/^/# /'; return 1; }
}
check "keytrustee-db runs as $test_user (uid $uid)" runs_as_user db
check "keytrusteed runs as $test_user (uid $uid)" runs_as_user server
check "keytrustee-db runs without core dumps" core_limit_zero db
check "keytrusteed runs without core dumps" core_limit_zero server

"$KT_BIN/keytrustee-orgtool" add -n acme -c ops@example.com >/dev/null 2>&1
secret=$("$KT_BIN/keytrustee-orgtool" list | tr -d '\n ' |
    sed -n 's/.*"acme":{"auth_secret":"\([^"]*\)".*/\1/p')
check "the operator tools (root) still reach the dropped keytrustee-db" [ -n "$secret" ]
mkdir -p "$work/c1" && "$KT_SIGN" keygen "$work/c1" >"$work/c1.id"
printf '{"org":"acme","auth":"%s","name":"host1","public_key":"%s"}' "$secret" \
    "$(cut -d' ' -f2 "$work/c1.id")" >"$work/register.json"
signed_status() { # METHOD TARGET BODYFILE
    local headers=() line
    while IFS= read -r line; do headers+=(-H "$line"); done \
        < <("$KT_SIGN" headers "$work/c1" "$1" "${url#https://}" "$2" "$3")
    curl -sk --max-time 20 -X "$1" -o "$work/body" -w '%{http_code}' \
        -H 'Content-Type: application/json' --data-binary "@$3" "${headers[@]}" "$url$2"
}
check "a registration is served by the dropped daemons" \
    [ "$(signed_status POST /v1/register "$work/register.json")" = 201 ]
printf '{"handle":"disk1","secret":"%s"}' "$(printf s3cret | base64)" >"$work/put.json"
check "a deposit is stored by the dropped daemons" \
    [ "$(signed_status POST /v1/deposits "$work/put.json")" = 201 ]
check "the audit log belongs to $test_user" \
    [ "$(stat -c %U "$KEYTRUSTEE_HOME/logs/audit.log")" = "$test_user" ]
kt_stop server
check "keytrusteed stops cleanly after dropping root" [ $? -eq 0 ]
kt_stop db
check "keytrustee-db stops cleanly after dropping root" [ $? -eq 0 ]
kt_finish
