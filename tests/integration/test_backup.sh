#!/usr/bin/env bash
# test_backup.sh — backups and restore on a real pair set up by the seed's procedure
# (tests/lib/pair.sh: keytrustee01 on 127.0.0.11 active, keytrustee02 on 127.0.0.12 passive,
# synchronous replication):
#   1. keys written; the passive and the active backed up hot (encrypted to a backup key) while a
#      loop of writes runs, which never fails; both backups verify;
#   2. more keys written; the passive's home destroyed; the passive restored from its backup on the
#      same address: it rejoins by itself, catches up by streaming (the active says "stream", not a
#      full copy) and holds every key, including those written after the backup, byte for byte;
#      writes go on through the pair;
#   3. a tampered, truncated, extended, wrongly-keyed or wrong-passphrase backup is refused by
#      verify and restore with the reason, and restore leaves the empty home untouched; restore
#      refuses a home that is not empty;
#   4. cleartext only with --cleartext (and a warning); the default recipient; a passphrase
#      backup; --roll keeps the newest N; the outcome of the last backup in the status op.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pair.sh"

KTADMIN=$KT_BIN/ktadmin
KTCLIENT=$KT_BIN/ktclient
KEYS=$KT_WORK/backup-keys

pair_setup_with_org
secret=$PAIR_ORG_SECRET
client=$KT_WORK/client
pair_register_client "$client"

# A client directory that talks to the passive only.
only_b=$KT_WORK/only_b
mkdir -p "$only_b" && chmod 700 "$only_b"
cp -p "$client/client.key" "$client/server-ca.pem" "$only_b/"
grep -v '^server\|^passive_server' "$client/client.conf" >"$only_b/client.conf"
echo "server = $B_URL" >>"$only_b/client.conf"
chmod 600 "$only_b/client.conf"

# put_keys NAME...: random keys stored under those handles; their bytes kept in $KT_WORK/NAME.bin.
put_keys() {
  local name
  for name in "$@"; do
    head -c 2000 /dev/urandom >"$KT_WORK/$name.bin"
    "$KTCLIENT" --confdir "$client" put --handle "$name" --file "$KT_WORK/$name.bin" >/dev/null 2>>"$KT_WORK/put.err" || return 1
  done
}
# every_key_on_passive NAME...: each key read from the passive alone equals what was put.
every_key_on_passive() {
  local name
  for name in "$@"; do
    "$KTCLIENT" --confdir "$only_b" get --handle "$name" >"$KT_WORK/got.bin" 2>>"$KT_WORK/get.err" || return 1
    cmp -s "$KT_WORK/$name.bin" "$KT_WORK/got.bin" || return 1
  done
}
# last_backup_is NODE FIELD VALUE: the status op's last_backup.FIELD on that node.
last_backup_is() {
  local value
  value=$(on_node "$1" "$KTADMIN" status --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin)["last_backup"]; print(d and d.get(sys.argv[1]))' "$2")
  [ "$value" = "$3" ]
}
# header_is FILE HEX: bytes 8 and 9 of the file (format version, protection).
header_is() { [ "$(od -An -tx1 -j8 -N2 "$1" | tr -d ' ')" = "$2" ]; }
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }

# ---- 1. hot backups of both nodes ------------------------------------------------------------

check "three keys are put before the backup" put_keys before1 before2 before3
check "backup-key generate writes the pair" \
  bash -c "'$KTADMIN' backup-key generate --output '$KEYS' >'$KT_WORK/keygen.out'"
check "the secret half is 0600" mode_is "$KEYS/keytrustee-backup.key" 600
check "and the operator is told to keep it offline" grep -q offline "$KT_WORK/keygen.out"

# A loop of writes on the active while both nodes are backed up.
rm -f "$KT_WORK/writer.stop"
kt_start writer bash -c "
  i=0
  while [ ! -e '$KT_WORK/writer.stop' ]; do
    i=\$((i + 1))
    head -c 100 /dev/urandom >'$KT_WORK/loop.bin'
    if '$KTCLIENT' --confdir '$client' put --handle loop\$i --file '$KT_WORK/loop.bin' >/dev/null 2>>'$KT_WORK/loop.err'
    then echo ok >>'$KT_WORK/loop.results'; else echo fail >>'$KT_WORK/loop.results'; fi
  done"
sleep 0.5
# The passive's backup goes off the host (--output): its home is destroyed below.
passive_backup=$(on_node b "$KTADMIN" backup --recipient "$KEYS/keytrustee-backup.pub" \
  --output "$KT_WORK/offsite" 2>"$KT_WORK/backup_b.err")
check "the passive is backed up while writes go on (it prints the file)" test -f "$passive_backup"
active_backup=$(on_node a "$KTADMIN" backup --recipient "$KEYS/keytrustee-backup.pub" -v 2>"$KT_WORK/backup_a.err")
check "the active is backed up while writes go on" test -f "$active_backup"
sleep 0.5
touch "$KT_WORK/writer.stop"
for _ in $(seq 1 100); do kt_alive writer || break; sleep 0.1; done
kt_stop writer
check "no write failed during the backups" \
  bash -c "[ -s '$KT_WORK/loop.results' ] && ! grep -q fail '$KT_WORK/loop.results'"
echo "# $(grep -c ok "$KT_WORK/loop.results") writes during the backups"
check "-v describes the backup" grep -q "backed up the active node at transaction" "$KT_WORK/backup_a.err"
check "by default backups go to \$KEYTRUSTEE_HOME/backups" test "$(dirname "$active_backup")" = "$A_HOME/backups"
check "which is 0700" mode_is "$A_HOME/backups" 700
check "and the backup 0600" mode_is "$active_backup" 600
check "--output makes its directory 0700 too" mode_is "$KT_WORK/offsite" 700
check "the backup copy inside the db directory is gone" bash -c "! ls -d '$B_HOME'/db/backup-* 2>/dev/null"
check "the file is a format 1 backup encrypted to the backup key" header_is "$passive_backup" 0102
check "the server key is not readable in the file" \
  bash -c "! grep -q keytrustee-server-key-v1 '$passive_backup'"
"$KTADMIN" backup verify "$passive_backup" --secret-key "$KEYS/keytrustee-backup.key" >"$KT_WORK/verify_b.out" 2>&1
check "the passive's backup verifies" test $? -eq 0
check "verify names the role and what it holds" \
  bash -c "grep -q 'passive' '$KT_WORK/verify_b.out' && grep -q 'deposits' '$KT_WORK/verify_b.out'"
"$KTADMIN" backup verify "$active_backup" --secret-key "$KEYS/keytrustee-backup.key" >"$KT_WORK/verify_a.out" 2>&1
check "the active's backup verifies" test $? -eq 0
check "the status op records the last backup's result" last_backup_is b result ok
check "and its path" last_backup_is b path "$passive_backup"

# ---- 2. the passive is lost and restored -----------------------------------------------------

check "three more keys are put after the backup" put_keys after1 after2 after3
pair_stop b api KILL
pair_stop b db KILL
rm -rf "$B_HOME"
check "the passive's home is gone" test ! -e "$B_HOME"
on_node b "$KTADMIN" restore "$passive_backup" --secret-key "$KEYS/keytrustee-backup.key" >"$KT_WORK/restore_b.out" 2>&1
check "the passive is restored from its backup" test $? -eq 0
check "restore says it was the passive and what happens next" \
  bash -c "grep -q 'passive node' '$KT_WORK/restore_b.out' && grep -q 'catches up' '$KT_WORK/restore_b.out'"
check "restored modes: home 0700" mode_is "$B_HOME" 700
check "server key 0600" mode_is "$B_HOME/.keytrustee/keytrustee-server.key" 600
check "TLS key 0400" mode_is "$B_HOME/.keytrustee/.ssl/ssl-cert-keytrustee-pk.pem" 400
check "the replication state came back with the database" \
  bash -c "[ -s '$B_HOME/db/keytrustee-repl.state' ] && [ -s '$B_HOME/db/keytrustee-repl.log' ]"
log_lines_before=$(wc -l <"$KT_WORK/db_a.log")
pair_start_db b
pair_start_api b
check "the restored passive rejoins the active and is in sync" pair_wait_state b in_sync
check "the active is in sync with it" pair_wait_state a in_sync
tail -n +"$((log_lines_before + 1))" "$KT_WORK/db_a.log" | grep -i 'stream\|base copy' | sed 's/^/#   active: /' | tail -3
check "it caught up by streaming what was written since the backup (no full copy)" \
  bash -c "tail -n +$((log_lines_before + 1)) '$KT_WORK/db_a.log' | grep -q 'stream' &&
           ! tail -n +$((log_lines_before + 1)) '$KT_WORK/db_a.log' | grep -q 'base copy'"
check "the passive alone holds every key, before and after the backup, byte for byte" \
  every_key_on_passive before1 before2 before3 after1 after2 after3
loop_count=$(grep -c ok "$KT_WORK/loop.results")
check "and every key written during the backup ($loop_count)" bash -c "
  for i in \$(seq 1 $loop_count); do '$KTCLIENT' --confdir '$only_b' get --handle loop\$i >/dev/null 2>&1 || exit 1; done"
resumed=
for _ in $(seq 1 50); do put_keys after4 && { resumed=1; break; }; sleep 0.1; done
check "writes go on through the restored pair" test -n "$resumed"
check "and reach the restored passive" bash -c \
  "for i in \$(seq 1 50); do '$KTCLIENT' --confdir '$only_b' get --handle after4 >'$KT_WORK/after4.got' 2>/dev/null && cmp -s '$KT_WORK/after4.got' '$KT_WORK/after4.bin' && exit 0; sleep 0.1; done; exit 1"
dump() { sqlite3 "file:$1/db/keytrustee.db?mode=ro" "select uuid,name,state,hex(auth_box) from orgs order by uuid; select fingerprint,org_uuid,state from clients order by fingerprint; select uuid,client,handle,state,hex(box) from deposits order by uuid;" 2>&1; }
same_content() {
  for _ in $(seq 1 50); do [ "$(dump "$A_HOME")" = "$(dump "$B_HOME")" ] && return 0; sleep 0.1; done
  return 1
}
check "both databases hold the same rows" same_content

# ---- 3. bad backups are refused, nothing changes ---------------------------------------------

size=$(stat -c %s "$passive_backup")
cp "$passive_backup" "$KT_WORK/tampered.ktbackup"
python3 - "$KT_WORK/tampered.ktbackup" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) // 2] ^= 0x01
open(path, "wb").write(data)
PY
head -c $((size - 1000)) "$passive_backup" >"$KT_WORK/truncated.ktbackup"
cp "$passive_backup" "$KT_WORK/extended.ktbackup"; echo extra >>"$KT_WORK/extended.ktbackup"
"$KTADMIN" backup-key generate --output "$KT_WORK/other-keys" >/dev/null
empty=$KT_WORK/empty-home
# refused NAME FILE PATTERN [OPTIONS...]: verify and restore both fail naming PATTERN, and the
# empty home stays as it was.
refused() {
  local name=$1 file=$2 pattern=$3; shift 3
  "$KTADMIN" backup verify "$file" "$@" >"$KT_WORK/$name.verify" 2>&1
  check "verify refuses the $name backup" test $? -eq 1
  check "verify says why ($name: $pattern)" grep -qi "$pattern" "$KT_WORK/$name.verify"
  sed 's/^/#   /' "$KT_WORK/$name.verify"
  mkdir -p "$empty" && chmod 700 "$empty"
  KEYTRUSTEE_HOME=$empty "$KTADMIN" restore "$file" "$@" >"$KT_WORK/$name.restore" 2>&1
  check "restore refuses the $name backup" test $? -eq 1
  check "restore says why and that nothing changed ($name)" \
    bash -c "grep -qi '$pattern' '$KT_WORK/$name.restore' && grep -q 'nothing was changed' '$KT_WORK/$name.restore'"
  check "the home is untouched ($name)" test -z "$(ls -A "$empty")"
}
refused tampered "$KT_WORK/tampered.ktbackup" "altered" --secret-key "$KEYS/keytrustee-backup.key"
refused truncated "$KT_WORK/truncated.ktbackup" "truncated" --secret-key "$KEYS/keytrustee-backup.key"
refused extended "$KT_WORK/extended.ktbackup" "after the end" --secret-key "$KEYS/keytrustee-backup.key"
refused wrong-key "$passive_backup" "encrypted to backup key" --secret-key "$KT_WORK/other-keys/keytrustee-backup.key"
refused no-key "$passive_backup" "give its secret key"
printf 'not a backup\n' >"$KT_WORK/junk.ktbackup"
refused junk "$KT_WORK/junk.ktbackup" "not a keytrustee backup"

KEYTRUSTEE_HOME=$A_HOME "$KTADMIN" restore "$passive_backup" --secret-key "$KEYS/keytrustee-backup.key" >"$KT_WORK/busy.restore" 2>&1
check "restore refuses a home that is not empty" \
  bash -c "[ $? -eq 1 ] && grep -q 'not empty' '$KT_WORK/busy.restore'"
check "and the active still answers" pair_wait_state a in_sync

# ---- 4. protection choices, roll, outcome ----------------------------------------------------

on_node a "$KTADMIN" backup --output "$KT_WORK/plain" >"$KT_WORK/none.out" 2>&1
check "without a protection option or a default recipient the backup is refused" \
  bash -c "[ $? -eq 1 ] && grep -q -- '--cleartext' '$KT_WORK/none.out' && ! ls '$KT_WORK'/plain/*.ktbackup 2>/dev/null"
check "the failed backup is recorded for the status op" last_backup_is a result failed
plain=$(on_node a "$KTADMIN" backup --output "$KT_WORK/plain" --cleartext 2>"$KT_WORK/plain.err")
check "--cleartext writes an unencrypted backup" header_is "$plain" 0100
check "with a warning" grep -qi "NOT encrypted" "$KT_WORK/plain.err"
check "the cleartext backup verifies without a key" "$KTADMIN" backup verify -q "$plain"
cp "$KEYS/keytrustee-backup.pub" "$A_HOME/.keytrustee/backup-recipient.pub"
default=$(on_node a "$KTADMIN" backup --output "$KT_WORK/default" 2>/dev/null)
check "with .keytrustee/backup-recipient.pub the default is encrypted to it" \
  bash -c "[ -f '$default' ] && '$KTADMIN' backup verify '$default' --secret-key '$KEYS/keytrustee-backup.key' | grep -q 'backup-key'"
printf 'correct horse battery staple\n' >"$KT_WORK/passphrase"; chmod 600 "$KT_WORK/passphrase"
printf 'wrong\n' >"$KT_WORK/wrong-passphrase"; chmod 600 "$KT_WORK/wrong-passphrase"
phrase=$(on_node a "$KTADMIN" backup --output "$KT_WORK/phrase" --passphrase-file "$KT_WORK/passphrase" 2>/dev/null)
check "a passphrase backup verifies with its passphrase" \
  "$KTADMIN" backup verify -q "$phrase" --passphrase-file "$KT_WORK/passphrase"
refused wrong-passphrase "$phrase" "passphrase does not open" --passphrase-file "$KT_WORK/wrong-passphrase"
chmod 644 "$KT_WORK/passphrase"
"$KTADMIN" backup verify "$phrase" --passphrase-file "$KT_WORK/passphrase" >"$KT_WORK/loose.out" 2>&1
check "a passphrase file others can read is refused with the chmod that fixes it" \
  bash -c "[ $? -eq 1 ] && grep -q 'chmod 600' '$KT_WORK/loose.out'"
for _ in 1 2 3 4; do on_node a "$KTADMIN" backup --output "$KT_WORK/roll" --roll 2 -q; done
check "-q prints nothing" test -z "$(on_node a "$KTADMIN" backup --output "$KT_WORK/roll" --roll 2 -q)"
check "--roll 2 keeps the newest two" test "$(ls "$KT_WORK/roll" | grep -c '\.ktbackup$')" -eq 2
newest=$(on_node a "$KTADMIN" backup --output "$KT_WORK/roll" --roll 2)
check "and the one just written is among them" test -f "$newest"
check "the status op shows the last backup's path" last_backup_is a path "$newest"
check "ktbackup.sh is the same command" bash -c \
  "KEYTRUSTEE_HOME=$A_HOME KTADMIN=$KTADMIN '$KT_ROOT/scripts/ktbackup.sh' --output '$KT_WORK/wrapper' --cleartext -q && ls '$KT_WORK'/wrapper/*.ktbackup >/dev/null"

kt_finish
