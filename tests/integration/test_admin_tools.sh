#!/usr/bin/env bash
# test_admin_tools.sh — ktadmin (init, db --bootstrap, status) and keytrustee-orgtool (add, list,
# set-auth, disable-client, enable-client) against a real keytrustee-db, in a temporary
# KEYTRUSTEE_HOME. Binaries come from $KT_BIN, else build/asan/bin, else build/bin.
#
# Prints "ok - name" / "not ok - name" per check and ends with "N passed, M failed"; exits 1 when
# anything failed.
set -u

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [[ -n "${KT_BIN:-}" ]]; then
    BIN="$KT_BIN"
elif [[ -x "$ROOT/build/asan/bin/ktadmin" ]]; then
    BIN="$ROOT/build/asan/bin"
else
    BIN="$ROOT/build/bin"
fi
KTADMIN="$BIN/ktadmin"
ORGTOOL="$BIN/keytrustee-orgtool"
KEYTRUSTEE_DB="$BIN/keytrustee-db"

WORK="$(mktemp -d /tmp/kt-admin-tools.XXXXXX)"
export KEYTRUSTEE_HOME="$WORK/home"
CONFDIR="$KEYTRUSTEE_HOME/.keytrustee"
SSLDIR="$CONFDIR/.ssl"
OUT="$WORK/out"
ERR="$WORK/err"
DB_PID=""
PASSED=0
FAILED=0
SANITIZER_REPORTS=0

stop_db() {
    if [[ -n "$DB_PID" ]]; then
        kill "$DB_PID" 2>/dev/null
        wait "$DB_PID" 2>/dev/null
        DB_PID=""
    fi
}

cleanup() {
    stop_db
    rm -rf "$WORK"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() {
    FAILED=$((FAILED + 1))
    echo "not ok - $1"
    if [[ -s "$ERR" ]]; then sed 's/^/#   stderr: /' "$ERR" | head -20; fi
}
check() { # check NAME CONDITION-COMMAND...
    local name="$1"
    shift
    if "$@" 2>>"$WORK/checks.err"; then ok "$name"; else not_ok "$name"; fi
}

# run PROGRAM ARGS...: stdout to $OUT, stderr to $ERR, exit status to $STATUS.
# A sanitizer report in any run is counted, since a failing command's exit status hides it.
run() {
    "$@" >"$OUT" 2>"$ERR"
    STATUS=$?
    if grep -q "Sanitizer" "$ERR"; then
        SANITIZER_REPORTS=$((SANITIZER_REPORTS + 1))
        sed 's/^/#   /' "$ERR" | head -30
    fi
}

mode_of() { stat -c '%a' "$1"; }
fingerprint_line() { grep -Eo '^Initialized directory for [0-9A-F]{40}$' "$OUT"; }
fingerprint() { fingerprint_line | awk '{print $4}'; }
cert_sum() { sha256sum "$SSLDIR/ssl-cert-keytrustee.pem" | awk '{print $1}'; }
conf_value() { sed -n "s/^$2 = //p" "$1"; }
stderr_has() { grep -qi -- "$1" "$ERR"; }

# ---- ktadmin init ------------------------------------------------------------------------------

test_init() {
    run "$KTADMIN" init --external-address localhost
    check "init succeeds and prints the fingerprint line" \
        test "$STATUS" -eq 0 -a -n "$(fingerprint_line)"
    FINGERPRINT="$(fingerprint)"
    CERT_SUM="$(cert_sum)"
    local modes_ok=true
    for directory in "$KEYTRUSTEE_HOME" "$CONFDIR" "$SSLDIR" "$KEYTRUSTEE_HOME/run" \
                     "$KEYTRUSTEE_HOME/logs"; do
        [[ "$(mode_of "$directory")" == 700 ]] || modes_ok=false
    done
    check "init makes every directory 0700" $modes_ok
    check "init makes the server key 0600" \
        test "$(mode_of "$CONFDIR/keytrustee-server.key")" = 600
    modes_ok=true
    for file in ssl-cert-keytrustee.pem ssl-cert-keytrustee-pk.pem ssl-cert-keytrustee-ca.pem; do
        [[ "$(mode_of "$SSLDIR/$file")" == 400 ]] || modes_ok=false
    done
    check "init makes the certificate, key and CA file 0400" $modes_ok
    check "the CA file is a copy of the self-signed certificate" \
        cmp -s "$SSLDIR/ssl-cert-keytrustee.pem" "$SSLDIR/ssl-cert-keytrustee-ca.pem"
    check "keytrustee.conf has the defaults and the external address" \
        test "$(conf_value "$CONFDIR/keytrustee.conf" external_address)" = localhost \
        -a "$(conf_value "$CONFDIR/keytrustee.conf" listen)" = 0.0.0.0 \
        -a "$(conf_value "$CONFDIR/keytrustee.conf" port)" = 11371
}

test_init_again() {
    run "$KTADMIN" init --port 11443
    check "init a second time keeps the fingerprint" \
        test "$STATUS" -eq 0 -a "$(fingerprint)" = "$FINGERPRINT"
    check "init a second time keeps the certificate" test "$(cert_sum)" = "$CERT_SUM"
    check "init a second time updates only the keys given" \
        test "$(conf_value "$CONFDIR/keytrustee.conf" port)" = 11443 \
        -a "$(conf_value "$CONFDIR/keytrustee.conf" external_address)" = localhost
}

test_init_passive_case() {
    rm -rf "$SSLDIR"
    run "$KTADMIN" --confdir "$CONFDIR" init
    check "init without .ssl keeps the copied server key (passive case)" \
        test "$STATUS" -eq 0 -a "$(fingerprint)" = "$FINGERPRINT"
    check "init without .ssl says the server keys were kept" \
        grep -qi "kept the existing server" "$OUT"
    check "init without .ssl makes a new certificate" \
        test -f "$SSLDIR/ssl-cert-keytrustee.pem" -a "$(cert_sum)" != "$CERT_SUM"
    check "the new certificate files are 0400" \
        test "$(mode_of "$SSLDIR/ssl-cert-keytrustee-pk.pem")" = 400 \
        -a "$(mode_of "$SSLDIR/ssl-cert-keytrustee-ca.pem")" = 400
    # A keytrustee.conf copied from the active names the active: the new certificate is for us.
    sed -i 's/^external_address = .*/external_address = kt-active-elsewhere.example.com/' \
        "$CONFDIR/keytrustee.conf"
    rm -rf "$SSLDIR"
    run "$KTADMIN" init
    check "init on a copied configuration uses this host's name" \
        test "$STATUS" -eq 0 \
        -a "$(conf_value "$CONFDIR/keytrustee.conf" external_address)" = "$(uname -n)"
    run "$KTADMIN" init --external-address localhost
}

test_init_arguments() {
    local arguments
    for arguments in "--port 0" "--port 65536" "--port 80x" "--listen not-an-ip" \
                     "--external-address bad_host!" "--external-address host:0" \
                     "--no-such-option"; do
        # shellcheck disable=SC2086
        run "$KTADMIN" init $arguments
        check "init refuses '$arguments' as a usage error" test "$STATUS" -eq 2 -a -s "$ERR"
    done
    run "$KTADMIN"
    check "ktadmin without a command is a usage error" test "$STATUS" -eq 2
    run "$KTADMIN" --help
    check "ktadmin --help exits 0 with the usage" grep -q "^usage: ktadmin" "$OUT"
}

# ---- ktadmin db --bootstrap ---------------------------------------------------------------------

test_bootstrap() {
    run "$KTADMIN" db --bootstrap --db-connect "postgresql://localhost:11381/keytrustee?host=/tmp"
    check "--db-connect is refused with a clear message" \
        test "$STATUS" -ne 0 -a ! -e "$KEYTRUSTEE_HOME/db/keytrustee.db"
    check "--db-connect message names SQLite and --pg-rootdir" \
        grep -q "keytrustee stores its database in SQLite.*--pg-rootdir" "$ERR"
    run "$KTADMIN" db --bootstrap
    check "db --bootstrap creates the database" \
        test "$STATUS" -eq 0 -a -f "$KEYTRUSTEE_HOME/db/keytrustee.db"
    check "the db directory is 0700" test "$(mode_of "$KEYTRUSTEE_HOME/db")" = 700
    check "keytrustee-db.conf says standalone, port 11381, synchronous no" \
        test "$(conf_value "$KEYTRUSTEE_HOME/db/keytrustee-db.conf" role)" = standalone \
        -a "$(conf_value "$KEYTRUSTEE_HOME/db/keytrustee-db.conf" replication_port)" = 11381 \
        -a "$(conf_value "$KEYTRUSTEE_HOME/db/keytrustee-db.conf" synchronous)" = no
    check "db --bootstrap says what to start next" grep -q "keytrustee-db" "$OUT"
    run "$KTADMIN" db --bootstrap
    check "a second db --bootstrap is refused" test "$STATUS" -ne 0
    check "the refusal says already bootstrapped" stderr_has "already bootstrapped"
    run "$KTADMIN" db --bootstrap --pg-rootdir "$WORK/pair-db" --slave kt02.example.com --port 11391
    check "db --bootstrap --slave writes an active configuration" \
        test "$STATUS" -eq 0 \
        -a "$(conf_value "$WORK/pair-db/keytrustee-db.conf" role)" = active \
        -a "$(conf_value "$WORK/pair-db/keytrustee-db.conf" slave)" = kt02.example.com \
        -a "$(conf_value "$WORK/pair-db/keytrustee-db.conf" replication_port)" = 11391
    run "$KTADMIN" db
    check "db without --bootstrap is a usage error" test "$STATUS" -eq 2
}

# ---- keytrustee-db ------------------------------------------------------------------------------

wait_for_status() { # wait_for_status EXPECTED-ZERO|NONZERO
    for _ in $(seq 1 100); do
        "$KTADMIN" status >"$OUT" 2>"$ERR"
        STATUS=$?
        if [[ "$1" == zero && $STATUS -eq 0 ]] || [[ "$1" == nonzero && $STATUS -ne 0 ]]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start_db() {
    if [[ ! -x "$KEYTRUSTEE_DB" ]]; then
        echo "# $KEYTRUSTEE_DB is missing: build it first" >&2
        return 1
    fi
    "$KEYTRUSTEE_DB" --foreground >"$WORK/keytrustee-db.log" 2>&1 &
    DB_PID=$!
    wait_for_status zero
}

test_status_without_db() {
    run "$KTADMIN" status
    check "status fails while keytrustee-db is stopped" test "$STATUS" -eq 1
    check "the failure says how to start keytrustee-db" stderr_has "keytrustee-db"
}

test_status_with_db() {
    check "keytrustee-db starts and status exits 0" start_db
    run "$KTADMIN" status
    check "status prints the role and writable" grep -q "^role: standalone" "$OUT"
    run "$KTADMIN" status --json
    check "status --json prints JSON" \
        python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["role"] == "standalone"' \
        <"$OUT"
}

# ---- keytrustee-orgtool -------------------------------------------------------------------------

listed_secret() { # listed_secret ORG: the auth secret `list` shows
    "$ORGTOOL" list 2>"$ERR" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]]["auth_secret"])' "$1"
}

secret_is_16_bytes() {
    python3 -c 'import base64, sys
assert len(base64.b64decode(sys.argv[1], validate=True)) == 16' "$1"
}

list_is_like_the_original() {
    "$ORGTOOL" list 2>"$ERR" | python3 -c '
import json, re, sys
org = json.load(sys.stdin)["acme"]
assert sorted(org) == ["auth_secret", "contacts", "creation", "expiration", "key_info", "name",
                       "state", "uuid"], sorted(org)
assert org["contacts"] == ["ops@example.com", "sec@example.com"], org["contacts"]
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", org["creation"]), org["creation"]
assert org["key_info"] is None and org["name"] == "acme"
'
}

test_orgtool_add_list() {
    run "$ORGTOOL" add -n acme -c "ops@example.com, sec@example.com"
    check "orgtool add succeeds" test "$STATUS" -eq 0
    check "orgtool add does not print the secret" test "$(grep -c auth_secret "$OUT")" -eq 0
    run "$ORGTOOL" list
    check "orgtool list prints JSON" python3 -c 'import json,sys; json.load(sys.stdin)' <"$OUT"
    check "orgtool list has the original's fields" list_is_like_the_original
    SECRET="$(listed_secret acme)"
    check "the auth secret is base64 of 16 bytes" secret_is_16_bytes "$SECRET"
    run "$ORGTOOL" add -n acme -c ops@example.com
    check "adding the same org again fails" test "$STATUS" -eq 1 -a -s "$ERR"
    check "the duplicate error says conflict" stderr_has "conflict"
}

test_orgtool_set_auth() {
    run "$ORGTOOL" set-auth -n acme -s "a-new-secret"
    check "set-auth succeeds" test "$STATUS" -eq 0
    check "set-auth changes the listed secret" test "$(listed_secret acme)" = "a-new-secret"
    run "$ORGTOOL" set-auth -n acme -s ""
    check "set-auth with a blank secret succeeds" test "$STATUS" -eq 0
    check "a blank secret lists as empty" test -z "$(listed_secret acme)"
    run "$ORGTOOL" set-auth -n nobody -s "x"
    check "set-auth of an unknown org is not found" test "$STATUS" -eq 1 -a -s "$ERR"
    run "$ORGTOOL" set-auth -n acme -s "$(head -c 129 /dev/zero | tr '\0' a)"
    check "set-auth refuses a secret over 128 bytes" test "$STATUS" -eq 2
}

test_orgtool_refusals() {
    local name
    for name in "bad name" "semi;colon" "" "$(head -c 65 /dev/zero | tr '\0' a)"; do
        run "$ORGTOOL" add -n "$name" -c ops@example.com
        check "orgtool add refuses the org name '${name:0:12}'" test "$STATUS" -eq 2 -a -s "$ERR"
    done
    run "$ORGTOOL" add -n acme2
    check "orgtool add without contacts is a usage error" test "$STATUS" -eq 2
    local unknown=0123456789ABCDEF0123456789ABCDEF01234567
    run "$ORGTOOL" disable-client --fingerprint "$unknown"
    check "disable-client of an unknown fingerprint fails" test "$STATUS" -eq 1
    check "the disable error says not found" stderr_has "not_found"
    run "$ORGTOOL" enable-client --fingerprint "$unknown"
    check "enable-client of an unknown fingerprint fails with not found" \
        test "$STATUS" -eq 1 -a -n "$(grep -i not_found "$ERR")"
    run "$ORGTOOL" disable-client --fingerprint nothex
    check "disable-client refuses a malformed fingerprint" test "$STATUS" -eq 2
    run "$ORGTOOL" list-clients
    check "list-clients prints JSON" python3 -c 'import json,sys; json.load(sys.stdin)' <"$OUT"
}

test_status_after_stop() {
    stop_db
    check "status exits non-zero after keytrustee-db stopped" wait_for_status nonzero
    run "$ORGTOOL" list
    check "orgtool fails clearly without keytrustee-db" \
        test "$STATUS" -eq 1 -a -n "$(grep -i "keytrustee-db" "$ERR")"
}

# A passive node refuses writes with exit status 3 and still serves reads. The pair-db directory
# bootstrapped above is reconfigured as a passive whose active is not running.
test_passive_refuses_writes() {
    cat >"$WORK/pair-db/keytrustee-db.conf" <<CONF
role = passive
master = 127.0.0.1
master_port = 1
replication_port = 11391
synchronous = yes
active_url = https://kt01.example.com:11371
CONF
    "$KEYTRUSTEE_DB" --foreground --pg-rootdir "$WORK/pair-db" >"$WORK/passive.log" 2>&1 &
    DB_PID=$!
    for _ in $(seq 1 100); do
        "$KTADMIN" status >"$OUT" 2>"$ERR"
        STATUS=$?
        grep -q "^role: passive" "$OUT" && break
        sleep 0.1
    done
    check "keytrustee-db comes up as a passive" grep -q "^role: passive" "$OUT"
    check "status exits 1 on a passive cut off from its active" test "$STATUS" -eq 1
    check "and says why" grep -q "^health: the passive is not connected to its active" "$OUT"
    run "$ORGTOOL" add -n acme3 -c ops@example.com
    check "a write on the passive exits 3" test "$STATUS" -eq 3
    check "the refusal says to run it on the active" stderr_has "on the active"
    run "$ORGTOOL" list
    check "list works on the passive" test "$STATUS" -eq 0
    stop_db
}

main() {
    for program in "$KTADMIN" "$ORGTOOL"; do
        if [[ ! -x "$program" ]]; then
            echo "not ok - $program is missing: build it first"
            echo "0 passed, 1 failed"
            exit 1
        fi
    done
    test_init
    test_init_again
    test_init_passive_case
    test_init_arguments
    test_bootstrap
    test_status_without_db
    test_status_with_db
    if [[ -n "$DB_PID" ]]; then
        test_orgtool_add_list
        test_orgtool_set_auth
        test_orgtool_refusals
    fi
    test_status_after_stop
    test_passive_refuses_writes
    check "no sanitizer reported anything from ktadmin or keytrustee-orgtool" \
        test "$SANITIZER_REPORTS" -eq 0
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
}

main "$@"
