#!/bin/sh
# ktbackup.sh — the seed's backup command, kept so that operators' cron lines and habits work:
# it runs `ktadmin backup` with the same arguments (--confdir, --output DIR, --roll N, --cleartext,
# -q, -v, and keytrustee's --recipient FILE / --passphrase-file FILE). Backups are encrypted unless
# --cleartext is given; with none of the three, the backup key in
# .keytrustee/backup-recipient.pub is used (see docs/operations.md, "Backups").
#
# ktadmin is looked for next to this script first (make install puts both in $PREFIX/sbin), then
# in $KTADMIN, then on PATH — cron's PATH often lacks /usr/sbin.
here=$(dirname "$0")
if [ -n "${KTADMIN:-}" ]; then
  ktadmin=$KTADMIN
elif [ -x "$here/ktadmin" ]; then
  ktadmin=$here/ktadmin
else
  ktadmin=ktadmin
fi
exec "$ktadmin" backup "$@"
