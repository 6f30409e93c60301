#!/usr/bin/env bash
# test_cert.sh — `ktadmin cert show` and `ktadmin cert install` on a running node (keytrustee-db and
# keytrusteed on 127.0.0.11), with certificates made here by openssl: a CA, then server
# certificates for 127.0.0.11.
#   1. cert show describes the self-signed certificate `ktadmin init` made;
#   2. install refuses, naming the check and changing nothing: a key of another certificate, a
#      CA-signed certificate without --ca, the wrong CA, a certificate for another host, an expired
#      one;
#   3. a CA-signed certificate is installed while a client loops on reads: keytrusteed re-reads it
#      (SIGHUP), new connections see it (openssl s_client, curl with the new CA), the files are
#      0400 and the old ones kept in .ssl/previous, and the client keeps working;
#   4. a renewal from the same CA is installed while a client pinned to the CA reads in a loop:
#      new connections get the new certificate, and the pinned client keeps working.
# What happens to reads during the reload is printed (lines starting "# during the reload"):
# keytrusteed's SIGHUP handler (server.c) restarts CivetWeb, so for that moment new connections
# are refused.
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
read_loop loop1 "$KT_WORK/client1"
sleep 1
kt_node_run kt "$KTADMIN" cert install --cert "$PKI/server1.pem" --key "$PKI/server1.key" --ca "$PKI/ca.pem" \
  >"$KT_WORK/install1.out" 2>&1
check "install accepts the CA-signed certificate and reloads keytrusteed" test $? -eq 0
sed 's/^/#   /' "$KT_WORK/install1.out"
sleep 1
stop_loop loop1
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
echo "# during the reload: the client's reads: $reads ok, $fails failed ($(sort -u "$KT_WORK/loop1.err" 2>/dev/null | sed -n 's/.*: \(Connection refused\|closed the connection[^;]*\).*/\1/p' | sort -u | paste -sd, -))"
check "the client read before and after the install" test "$reads" -gt 0
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
check "and keeps working after it" bash -c "'$KTCLIENT' --confdir '$KT_WORK/client2' get --handle k1 | cmp -s - '$KT_WORK/key.bin'"

kt_finish
