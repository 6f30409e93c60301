#!/usr/bin/env bash
# test_cert.sh — `ktadmin cert show` and `ktadmin cert install` on a running node (keytrustee-db and
# keytrusteed on 127.0.0.11), with certificates made here by openssl: a CA, then server
# certificates for 127.0.0.11.
#   1. cert show describes the self-signed certificate `ktadmin init` made;
#   2. install refuses, naming the check and changing nothing: a key of another certificate, a
#      CA-signed certificate without --ca, the wrong CA, a certificate for another host, an expired
#      one;
#   3. a CA-signed certificate is installed while a client loops on reads (a new connection each)
#      and another client holds one keep-alive TLS connection, making a request every 0.2 s:
#      keytrusteed re-reads it (SIGHUP) in place; new connections see it (openssl s_client, curl
#      with the new CA), the files are 0400 and the old ones kept in .ssl/previous, no read of the
#      looping client fails, and the keep-alive client goes on on the same TCP connection, with the
#      session (and certificate) it had before;
#   4. a renewal from the same CA is installed while a client pinned to the CA reads in a loop:
#      new connections get the new certificate, and the pinned client keeps working;
#   5. install --no-reload changes only the files and prints the kill -HUP command; running it
#      makes keytrusteed serve them;
#   6. a key that does not belong to the certificate, put in .ssl/ by hand, is refused on SIGHUP
#      with a log line saying why: the running certificate keeps serving new and established
#      connections; putting the good files back and SIGHUP serves them again;
#   7. a certificate issued by an intermediate CA, given with the intermediate after it, is
#      reloaded and served with its chain: clients pinned to the root CA verify it;
#   8. keytrusteed stops cleanly after the reloads (under ASan: no leak, no error).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nodes.sh"

KTADMIN=$KT_BIN/ktadmin
KTCLIENT=$KT_BIN/ktclient
ADDRESS=127.0.0.11
PORT=$(kt_free_port)
PKI=$KT_WORK/pki
mkdir -p "$PKI"

kt_node_start kt "$ADDRESS" "$PORT" || { echo "Bail out! the node did not start"; exit 1; }
HOME_KT=$(kt_node_home kt)
SSL=$HOME_KT/.keytrustee/.ssl
URL=$(kt_node_url kt)

# ---- certificates, made with openssl ---------------------------------------------------------

# new_key NAME: an EC P-256 key in $PKI/NAME.key.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null; }
# new_ca NAME: a self-signed CA certificate $PKI/NAME.pem with key $PKI/NAME.key.
new_ca() {
  new_key "$1" && openssl req -x509 -new -key "$PKI/$1.key" -out "$PKI/$1.pem" -days 30 \
    -subj "/CN=$1" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
}
# issue NAME CA HOST [openssl ca date options...]: a server certificate $PKI/NAME.pem for IP HOST.
issue() {
  local name=$1 ca=$2 host=$3; shift 3
  new_key "$name" || return 1
  openssl req -new -key "$PKI/$name.key" -out "$PKI/$name.csr" -subj "/CN=$host" 2>/dev/null || return 1
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$host" >"$PKI/$name.ext"
  if [ $# -eq 0 ]; then
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.pem" -CAkey "$PKI/$ca.key" -CAcreateserial \
      -out "$PKI/$name.pem" -days 10 -extfile "$PKI/$name.ext" 2>/dev/null
  else
    printf '[ca]\ndefault_ca=c\n[c]\ndatabase=%s/index.txt\nnew_certs_dir=%s\nserial=%s/serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n' \
      "$PKI" "$PKI" "$PKI" >"$PKI/ca.cnf"
    : >"$PKI/index.txt"; echo 1000 >"$PKI/serial"
    openssl ca -batch -config "$PKI/ca.cnf" -cert "$PKI/$ca.pem" -keyfile "$PKI/$ca.key" -in "$PKI/$name.csr" \
      -out "$PKI/$name.pem" -extfile "$PKI/$name.ext" -notext "$@" >/dev/null 2>&1
  fi
}
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
served_fingerprint() {
  openssl s_client -connect "$ADDRESS:$PORT" -servername "$ADDRESS" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
}
ssl_sums() { sha256sum "$SSL"/*.pem; }
API_LOG=$KT_WORK/kt-api.log

# keepalive.py HOST PORT DIR NAME: one TLS connection (no certificate check: it reports the
# SHA-256 of the certificate its session holds instead), GET /v1/health over it every 0.2 s as
# HTTP/1.1 keep-alive until DIR/NAME.stop exists. One line per request in DIR/NAME.out:
# "ok before|after LOCALPORT FINGERPRINT" ("after" once DIR/NAME.installed exists); DIR/NAME.ready
# after the first. Never reconnects: any failure ends it with status 1.
cat >"$KT_WORK/keepalive.py" <<'PY'
import hashlib, os, socket, ssl, sys, time
host, port, work, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
path = lambda suffix: os.path.join(work, name + "." + suffix)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
connection = context.wrap_socket(socket.create_connection((host, port), timeout=10))
out = open(path("out"), "a", buffering=1)
def request():
    connection.sendall(b"GET /v1/health HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            raise OSError("the server closed the connection")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if " 200 " not in lines[0] + " ":
        raise OSError("status " + lines[0])
    if fields.get("connection", "").lower() == "close":
        raise OSError("the server asked to close the connection")
    length = int(fields["content-length"])
    while len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            raise OSError("the server closed the connection mid-body")
        body += chunk
try:
    for count in range(3000):
        if os.path.exists(path("stop")):
            break
        phase = "after" if os.path.exists(path("installed")) else "before"
        request()
        digest = hashlib.sha256(connection.getpeercert(binary_form=True)).hexdigest().upper()
        fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        out.write("ok %s %d %s\n" % (phase, connection.getsockname()[1], fingerprint))
        open(path("ready"), "a").close()
        time.sleep(0.2)
except Exception as failure:
    out.write("error %s\n" % failure)
    sys.exit(1)
connection.close()
PY
# keepalive_start NAME / keepalive_after NAME COUNT (wait for COUNT requests after .installed) /
# keepalive_stop NAME (returns the client's exit status)
keepalive_start() {
  rm -f "$KT_WORK/$1".*
  kt_start "$1" python3 "$KT_WORK/keepalive.py" "$ADDRESS" "$PORT" "$KT_WORK" "$1"
  kt_wait_file "$KT_WORK/$1.ready"
}
keepalive_after() {
  for _ in $(seq 1 200); do
    [ "$(grep -c '^ok after' "$KT_WORK/$1.out")" -ge "$2" ] && return 0
    grep -q '^error' "$KT_WORK/$1.out" && return 1
    sleep 0.1
  done
  return 1
}
keepalive_stop() {
  touch "$KT_WORK/$1.stop"
  for _ in $(seq 1 100); do kt_alive "$1" || break; sleep 0.1; done
  kt_stop "$1"
}
# keepalive_ports NAME: how many local ports (TCP connections) its requests went over.
keepalive_ports() { awk '$1 == "ok" { print $3 }' "$KT_WORK/$1.out" | sort -u | wc -l; }
# keepalive_fingerprints NAME: the certificates its session presented, one per line.
keepalive_fingerprints() { awk '$1 == "ok" { print $4 }' "$KT_WORK/$1.out" | sort -u; }
# wait_log COUNT PATTERN: until the daemon's log holds COUNT lines matching PATTERN.
wait_log() {
  for _ in $(seq 1 200); do
    [ "$(grep -c "$2" "$API_LOG")" -ge "$1" ] && return 0
    sleep 0.05
  done
  return 1
}

new_ca ca && new_ca other-ca || { echo "Bail out! openssl could not make the CAs"; exit 1; }
issue server1 ca "$ADDRESS" && issue server2 ca "$ADDRESS" && issue wronghost ca 127.0.0.99 &&
  issue expired ca "$ADDRESS" -startdate 20200101000000Z -enddate 20200201000000Z ||
  { echo "Bail out! openssl could not issue the certificates"; exit 1; }

# ---- 1. show ---------------------------------------------------------------------------------

"$KTADMIN" --confdir "$HOME_KT/.keytrustee" cert show >"$KT_WORK/show1.out" 2>&1
check "cert show describes the installed certificate" test $? -eq 0
check "it is self-signed for $ADDRESS, with its names and expiry" bash -c \
  "grep -q 'self-signed' '$KT_WORK/show1.out' && grep -q 'IP:$ADDRESS' '$KT_WORK/show1.out' && grep -q 'days left' '$KT_WORK/show1.out'"
check "its fingerprint is the one served" bash -c \
  "grep -qi \"\$(openssl x509 -in '$SSL/ssl-cert-keytrustee.pem' -noout -fingerprint -sha256 | cut -d= -f2)\" '$KT_WORK/show1.out'"
"$KTADMIN" --confdir "$HOME_KT/.keytrustee" cert show --json >"$KT_WORK/show1.json"
check "cert show --json" python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['self_signed'] and 'IP:$ADDRESS' in d['names']" "$KT_WORK/show1.json"

# ---- 2. refusals -----------------------------------------------------------------------------

before=$(ssl_sums)
# refused NAME PATTERN ARGS...: install fails naming PATTERN and .ssl is unchanged.
refused() {
  local name=$1 pattern=$2; shift 2
  kt_node_run kt "$KTADMIN" cert install "$@" >"$KT_WORK/$name.out" 2>&1
  check "install refuses $name" test $? -eq 1
  check "and says why ($pattern)" grep -qi "$pattern" "$KT_WORK/$name.out"
  sed 's/^/#   /' "$KT_WORK/$name.out"
  check "and .ssl is unchanged ($name)" test "$(ssl_sums)" = "$before"
}
refused "a key of another certificate" "does not belong" --cert "$PKI/server1.pem" --key "$PKI/server2.key" --ca "$PKI/ca.pem"
refused "a CA-signed certificate without --ca" "give that CA's certificate with --ca" --cert "$PKI/server1.pem" --key "$PKI/server1.key"
refused "the wrong CA" "does not verify against the CA" --cert "$PKI/server1.pem" --key "$PKI/server1.key" --ca "$PKI/other-ca.pem"
refused "a certificate for another host" "not issued for \"$ADDRESS\"" --cert "$PKI/wronghost.pem" --key "$PKI/wronghost.key" --ca "$PKI/ca.pem"
refused "an expired certificate" "expired" --cert "$PKI/expired.pem" --key "$PKI/expired.key" --ca "$PKI/ca.pem"

# ---- 3. a CA-signed certificate, installed under a client's reads ----------------------------

org_secret=$(kt_node_org kt acme)
# A client that pins both the current self-signed certificate and the new CA, so it is served
# before and after.
cat "$SSL/ssl-cert-keytrustee-ca.pem" "$PKI/ca.pem" >"$KT_WORK/both.pem"
"$KTCLIENT" --confdir "$KT_WORK/client1" register --server "$URL" --org acme --auth "$org_secret" \
  --cacert "$KT_WORK/both.pem" >/dev/null 2>"$KT_WORK/register1.err"
check "a client registers, pinning the old certificate and the new CA" test $? -eq 0
head -c 500 /dev/urandom >"$KT_WORK/key.bin"
"$KTCLIENT" --confdir "$KT_WORK/client1" put --handle k1 --file "$KT_WORK/key.bin" >/dev/null

# read_loop NAME CONFDIR: reads k1 in a loop, one ok/fail line each, until NAME.stop exists.
read_loop() {
  rm -f "$KT_WORK/$1.stop" "$KT_WORK/$1.reads"
  kt_start "$1" bash -c "
    while [ ! -e '$KT_WORK/$1.stop' ]; do
      if '$KTCLIENT' --confdir '$2' get --handle k1 >/dev/null 2>>'$KT_WORK/$1.err'
      then echo ok >>'$KT_WORK/$1.reads'; else echo fail >>'$KT_WORK/$1.reads'; fi
    done"
}
stop_loop() {
  touch "$KT_WORK/$1.stop"
  for _ in $(seq 1 100); do kt_alive "$1" || break; sleep 0.1; done
  kt_stop "$1"
}
self_signed=$(fingerprint "$SSL/ssl-cert-keytrustee.pem")
check "keytrusteed serves the self-signed certificate" test "$(served_fingerprint)" = "$self_signed"
keepalive_start ka1
check "a keep-alive client is connected and served" grep -q '^ok before' "$KT_WORK/ka1.out"
read_loop loop1 "$KT_WORK/client1"
sleep 1
kt_node_run kt "$KTADMIN" cert install --cert "$PKI/server1.pem" --key "$PKI/server1.key" --ca "$PKI/ca.pem" \
  >"$KT_WORK/install1.out" 2>&1
check "install accepts the CA-signed certificate and reloads keytrusteed" test $? -eq 0
sed 's/^/#   /' "$KT_WORK/install1.out"
touch "$KT_WORK/ka1.installed"
check "the keep-alive client makes requests after the install" keepalive_after ka1 5
sleep 1
stop_loop loop1
keepalive_stop ka1
check "the keep-alive client never failed" test $? -eq 0
sed -n 's/^error/#   keep-alive client: error/p' "$KT_WORK/ka1.out"
echo "# keep-alive client: $(grep -c '^ok before' "$KT_WORK/ka1.out") requests before the install, $(grep -c '^ok after' "$KT_WORK/ka1.out") after, over $(keepalive_ports ka1) TCP connection(s)"
check "all its requests, before and after, went over one TCP connection" test "$(keepalive_ports ka1)" -eq 1
check "its session kept the self-signed certificate it was set up with" \
  test "$(keepalive_fingerprints ka1)" = "$self_signed"
check "keytrusteed logged the in-place reload" grep -q "new connections get the re-read certificate (SHA-256 $(fingerprint "$PKI/server1.pem"))" "$API_LOG"
check "keytrusteed did not restart its server" test "$(grep -c 'listening on https' "$API_LOG")" -eq 1
check "new connections see the new certificate" test "$(served_fingerprint)" = "$(fingerprint "$PKI/server1.pem")"
check "curl pinned to the new CA connects" \
  curl -sS --max-time 5 --cacert "$PKI/ca.pem" -o /dev/null "$URL/?a=fingerprint"
check "openssl s_client verifies the chain against the CA" bash -c \
  "openssl s_client -connect $ADDRESS:$PORT -servername $ADDRESS -CAfile '$PKI/ca.pem' -verify_return_error </dev/null 2>&1 | grep -q 'Verify return code: 0 (ok)'"
check "the CA file clients pin is now the CA" test "$(fingerprint "$SSL/ssl-cert-keytrustee-ca.pem")" = "$(fingerprint "$PKI/ca.pem")"
check "the installed files are 0400" bash -c \
  "[ \$(stat -c %a '$SSL/ssl-cert-keytrustee.pem') = 400 ] && [ \$(stat -c %a '$SSL/ssl-cert-keytrustee-pk.pem') = 400 ] && [ \$(stat -c %a '$SSL/ssl-cert-keytrustee-ca.pem') = 400 ]"
check "the previous files are kept in .ssl/previous" test -s "$SSL/previous/ssl-cert-keytrustee.pem"
reads=$(grep -c ok "$KT_WORK/loop1.reads"); fails=$(grep -c fail "$KT_WORK/loop1.reads")
echo "# during the reload: the client's reads: $reads ok, $fails failed"
sort -u "$KT_WORK/loop1.err" 2>/dev/null | head -5 | sed 's/^/#   /'
check "the client read before and after the install" test "$reads" -gt 0
check "none of its reads failed: new connections were never refused" test "$fails" -eq 0
check "the client keeps working after it" bash -c "'$KTCLIENT' --confdir '$KT_WORK/client1' get --handle k1 | cmp -s - '$KT_WORK/key.bin'"
kt_node_run kt "$KTADMIN" cert show >"$KT_WORK/show2.out"
check "cert show names the CA as issuer" bash -c "grep -q 'issuer: CN=ca' '$KT_WORK/show2.out' && ! grep -q self-signed '$KT_WORK/show2.out'"

# ---- 4. a renewal from the same CA, under a client pinned to the CA --------------------------

"$KTCLIENT" --confdir "$KT_WORK/client2" register --server "$URL" --org acme --auth "$org_secret" \
  --cacert "$PKI/ca.pem" >/dev/null 2>"$KT_WORK/register2.err"
check "a client pinned to the CA alone registers" test $? -eq 0
"$KTCLIENT" --confdir "$KT_WORK/client2" put --handle k1 --file "$KT_WORK/key.bin" >/dev/null
read_loop loop2 "$KT_WORK/client2"
sleep 1
kt_node_run kt "$KTADMIN" cert install --cert "$PKI/server2.pem" --key "$PKI/server2.key" --ca "$PKI/ca.pem" \
  >"$KT_WORK/install2.out" 2>&1
check "the renewed certificate is installed" test $? -eq 0
sleep 1
stop_loop loop2
check "new connections see the renewed certificate" test "$(served_fingerprint)" = "$(fingerprint "$PKI/server2.pem")"
reads=$(grep -c ok "$KT_WORK/loop2.reads"); fails=$(grep -c fail "$KT_WORK/loop2.reads")
echo "# during the reload: the pinned client's reads: $reads ok, $fails failed"
check "the client pinned to the CA read before and after the renewal" test "$reads" -gt 0
check "none of its reads failed" test "$fails" -eq 0
check "and keeps working after it" bash -c "'$KTCLIENT' --confdir '$KT_WORK/client2' get --handle k1 | cmp -s - '$KT_WORK/key.bin'"

# ---- 5. --no-reload installs only, and prints the command that reloads ----------------------

kt_node_run kt "$KTADMIN" cert install --cert "$PKI/server1.pem" --key "$PKI/server1.key" --ca "$PKI/ca.pem" \
  --no-reload >"$KT_WORK/install3.out" 2>&1
check "install --no-reload succeeds" test $? -eq 0
sed 's/^/#   /' "$KT_WORK/install3.out"
check "and keytrusteed still serves the certificate it had" \
  test "$(served_fingerprint)" = "$(fingerprint "$PKI/server2.pem")"
reload_command=$(sed -n 's/.*`\(kill -HUP [^`]*\)`.*/\1/p' "$KT_WORK/install3.out")
check "it prints the kill -HUP command for the running keytrusteed" \
  test "$reload_command" = "kill -HUP $(kt_pid kt-api)"
reloads=$(grep -c 'new connections get the re-read certificate' "$API_LOG")
bash -c "$reload_command"
check "running that command reloads keytrusteed" wait_log $((reloads + 1)) 'new connections get the re-read certificate'
check "which then serves the installed certificate" \
  test "$(served_fingerprint)" = "$(fingerprint "$PKI/server1.pem")"

# ---- 6. a bad pair put in .ssl/ by hand is refused on SIGHUP ---------------------------------

serving=$(fingerprint "$PKI/server1.pem")
mkdir -p "$KT_WORK/good"
cp -p "$SSL/ssl-cert-keytrustee.pem" "$SSL/ssl-cert-keytrustee-pk.pem" "$KT_WORK/good/"
keepalive_start ka2
# overwrite FILE SOURCE: replace a 0400 .ssl file's contents, keeping its owner and mode.
overwrite() { chmod u+w "$1" && cat "$2" >"$1" && chmod 0400 "$1"; }
overwrite "$SSL/ssl-cert-keytrustee-pk.pem" "$PKI/server2.key" # server1's certificate, server2's key
refusals=$(grep -c 'refused the new certificate' "$API_LOG")
kill -HUP "$(kt_pid kt-api)"
check "keytrusteed refuses the mismatched pair on SIGHUP" wait_log $((refusals + 1)) 'refused the new certificate'
check "and logs why, saying the old certificate still serves" \
  grep -q 'SIGHUP: refused the new certificate, still serving the previous one: .*does not belong to the certificate' "$API_LOG"
grep 'refused the new certificate' "$API_LOG" | tail -1 | sed 's/^/#   /'
touch "$KT_WORK/ka2.installed"
check "the established connection keeps working after the refusal" keepalive_after ka2 3
check "new connections still get the previous certificate" test "$(served_fingerprint)" = "$serving"
check "curl pinned to the CA still connects" \
  curl -sS --max-time 5 --cacert "$PKI/ca.pem" -o /dev/null "$URL/v1/health"
check "keytrusteed is still running" kt_alive kt-api
overwrite "$SSL/ssl-cert-keytrustee-pk.pem" "$KT_WORK/good/ssl-cert-keytrustee-pk.pem"
reloads=$(grep -c 'new connections get the re-read certificate' "$API_LOG")
kill -HUP "$(kt_pid kt-api)"
check "with the good key back, SIGHUP reloads it" wait_log $((reloads + 1)) 'new connections get the re-read certificate'
check "and it is served" test "$(served_fingerprint)" = "$serving"
keepalive_stop ka2
check "the keep-alive client never failed through both SIGHUPs" test $? -eq 0
check "over one TCP connection" test "$(keepalive_ports ka2)" -eq 1

# ---- 7. a certificate from an intermediate CA: the chain is reloaded and served -------------

new_key intermediate &&
  openssl req -new -key "$PKI/intermediate.key" -out "$PKI/intermediate.csr" -subj "/CN=intermediate" 2>/dev/null &&
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$PKI/intermediate.ext" &&
  openssl x509 -req -in "$PKI/intermediate.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/intermediate.pem" -days 20 -extfile "$PKI/intermediate.ext" 2>/dev/null &&
  issue server3 intermediate "$ADDRESS" && cat "$PKI/server3.pem" "$PKI/intermediate.pem" >"$PKI/server3-chain.pem"
check "openssl made an intermediate CA and a certificate from it" test $? -eq 0
kt_node_run kt "$KTADMIN" cert install --cert "$PKI/server3-chain.pem" --key "$PKI/server3.key" --ca "$PKI/ca.pem" \
  >"$KT_WORK/install4.out" 2>&1
check "a certificate followed by its intermediate is installed and reloaded" test $? -eq 0
sed 's/^/#   /' "$KT_WORK/install4.out"
check "new connections get the new server certificate" test "$(served_fingerprint)" = "$(fingerprint "$PKI/server3.pem")"
openssl s_client -connect "$ADDRESS:$PORT" -servername "$ADDRESS" -showcerts </dev/null >"$KT_WORK/chain.out" 2>&1
check "and the intermediate after it (-showcerts: two certificates)" \
  test "$(grep -c 'BEGIN CERTIFICATE' "$KT_WORK/chain.out")" -eq 2
check "which verify against the root CA alone" bash -c \
  "openssl s_client -connect $ADDRESS:$PORT -servername $ADDRESS -CAfile '$PKI/ca.pem' -verify_return_error </dev/null 2>&1 | grep -q 'Verify return code: 0 (ok)'"
check "curl pinned to the root CA connects" \
  curl -sS --max-time 5 --cacert "$PKI/ca.pem" -o /dev/null "$URL/v1/health"

# ---- 8. a clean stop ---------------------------------------------------------------------------

kt_stop kt-api
check "keytrusteed stops cleanly after the reloads" test $? -eq 0
check "with no sanitizer report in its log" bash -c "! grep -q 'AddressSanitizer\|LeakSanitizer\|runtime error:' '$API_LOG'"

kt_finish
