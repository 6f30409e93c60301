/*
 * syncrep.c — the commit path, run inside the writer's xSync of the -wal (vfs_capture.c); the
 * counterpart of PostgreSQL's syncrep.c.
 *
 * Synchronous mode (active, after `ktadmin enable-synchronous-replication`)
 *   The capture wrote the transaction's commit frame "held" (vfs_capture.c): until it is released
 *   no SQLite connection, in any process, after any crash, takes the transaction as committed.
 *   1. Wait, at most until the commit's deadline (ack_timeout_ms from its start), for the passive
 *      to be in_sync and to have acknowledged everything committed before. No passive connected
 *      at all: refuse at once.
 *   2. Send the encoded transaction to the passive from this thread (walsender.c,
 *      repl_walsender_send_inflight: the stream session's own sends wait on the same lock), and
 *      note it in the "in-flight" slot, where the session reports its acknowledgement.
 *   3. Sync the -wal locally while the transaction travels (one fsync here, one on the passive,
 *      at the same time).
 *   4. Wait for the passive's acknowledgement (spooled and fsynced there), its refusal, the loss
 *      of the link, or the deadline.
 *   5. Append the transaction to the log, without a sync, then release the commit frame, and only
 *      then return OK: SQLite makes the commit visible. The next transaction sent carries the
 *      confirmation, or the session sends it (walsender.c, "confirming").
 *   Why the log needs no sync of its own: a released commit frame is proof that the passive
 *   acknowledged it, so after a crash startup rebuilds whatever the log lost from the -wal (and
 *   the log is synced before SQLite starts a new -wal generation over old frames); a commit frame
 *   still held is settled by the passive at the next handshake (vfs_capture.c).
 * Asynchronous mode and standalone nodes: sync locally, release a held frame, append to the log
 * with a sync, return OK; the session streams from the log afterwards (the passive may lag).
 *
 * What a failure means (the classifier, replication.c, reports it to storage/)
 *   REFUSED        the passive cannot have it: never handed to the session, or the passive
 *                  refused it (NACK), or no passive was in sync before the deadline.
 *   INDETERMINATE  it may have reached the passive (sending it started) but no
 *                  acknowledgement came: ack lost, link lost, local failure after sending.
 *                  The link is then reset; at the next handshake the passive drops it unless the
 *                  active's log has the same transaction (guarantee 4 in replication.h).
 *   FULL           the passive's disk (NACK) or the log's disk is full.
 * In every failure before the log append vfs_capture.c cuts the transaction out of the -wal before
 * COMMIT returns, so after any crash it does not come back on the active either. A failure after
 * the log append (the release could not be written) leaves it in the -wal and the log, and stops
 * every later commit until a restart, whose startup releases it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

#define COMPACTION_MARGIN_ENTRIES 256u

static void inflight_clear(repl_inflight *inflight)
{
    memset(inflight, 0, sizeof *inflight);
}

/* Holds repl->mutex. True once the passive holds everything before `tip` and is in sync. */
static bool wait_in_sync(kt_repl *repl, const kt_repl_position *tip,
                         const struct timespec *deadline, const char **why)
{
    for (;;) {
        if (repl->stopping) {
            *why = "replication is stopping";
            return false;
        }
        if (repl->state == REPL_STATE_FENCED) {
            *why = "this node is fenced: a node with a newer epoch exists";
            return false;
        }
        if (repl->state == REPL_STATE_WAITING) {
            *why = "the passive is not connected";
            return false;
        }
        if (repl->state == REPL_STATE_IN_SYNC && repl->peer_acked.txid == tip->txid &&
            repl->link != NULL && repl->link_generation != 0) {
            return true;
        }
        if (!repl_wait_until(&repl->changed, &repl->mutex, deadline)) {
            *why = "the passive did not catch up in time";
            return false;
        }
    }
}

/* Holds repl->mutex. Waits for the in-flight transaction's fate; returns the failure, or
 * KT_STORE_OK once acknowledged. */
static kt_store_status wait_acknowledged(kt_repl *repl, const struct timespec *deadline,
                                         const char **why)
{
    repl_inflight *inflight = &repl->inflight;
    for (;;) {
        if (inflight->acknowledged) {
            return KT_STORE_OK;
        }
        if (inflight->refused) {
            *why = inflight->nack_reason == REPL_NACK_FULL ? "the passive's disk is full"
                                                           : "the passive refused it";
            return inflight->nack_reason == REPL_NACK_FULL ? KT_STORE_FULL : KT_STORE_REFUSED;
        }
        if (inflight->link_lost || repl->stopping) {
            *why = "the link to the passive was lost";
            return inflight->maybe_sent ? KT_STORE_INDETERMINATE : KT_STORE_REFUSED;
        }
        if (!repl_wait_until(&repl->changed, &repl->mutex, deadline)) {
            *why = "the passive did not acknowledge in time";
            return inflight->maybe_sent ? KT_STORE_INDETERMINATE : KT_STORE_REFUSED;
        }
    }
}

/* Holds repl->mutex. Ends the in-flight slot after a failure; a transaction that may have
 * reached the passive resets the link, so the next handshake settles it. */
static void abandon_inflight(kt_repl *repl)
{
    if (repl->inflight.maybe_sent && repl->link != NULL) {
        repl->link_generation = 0; /* the session notices and closes */
        repl_walsender_wake(repl);
    }
    inflight_clear(&repl->inflight);
}

/* Holds repl->mutex. Clients retry refused writes: say it once, then at most every 10 s with
 * the number of refusals in between. */
static bool refusal_worth_logging(kt_repl *repl)
{
    int64_t now = repl_now_ms();
    if (repl->refusals_logged_at != 0 && now - repl->refusals_logged_at < 10000) {
        repl->refusals_unlogged++;
        return false;
    }
    if (repl->refusals_unlogged > 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: %llu more writes were refused in the last %lld s",
                 (unsigned long long)repl->refusals_unlogged,
                 (long long)(now - repl->refusals_logged_at) / 1000);
    }
    repl->refusals_logged_at = now;
    repl->refusals_unlogged = 0;
    return true;
}

/* Holds repl->mutex (released while sending). Sends the transaction to the passive from this,
 * the committing thread. -1 only when nothing was sent (out of memory); a failed send resets the
 * link, and waiting for the acknowledgement then finds the link lost: indeterminate. */
static int send_inflight(kt_repl *repl, const repl_entry *entry)
{
    repl_buffer message = {0};
    repl_msg_tx tx = {false, *entry};
    repl_encode_tx(&message, &tx);
    if (message.failed) {
        repl_buffer_free(&message);
        return -1;
    }
    inflight_clear(&repl->inflight);
    repl->inflight.active = true;
    repl->inflight.txid = entry->txid;
    memcpy(repl->inflight.hash, entry->hash, KT_HASH_BYTES);
    (void)repl_walsender_send_inflight(repl, message.data, message.length);
    repl_buffer_free(&message);
    return 0;
}

void repl_syncrep_compact(kt_repl *repl)
{
    if (repl_spool_bytes(repl->spool) <= 2 * repl->retain_bytes) {
        return;
    }
    /* Keep what a passive that went away may need (retain_bytes of the newest entries), but no
     * more than the connected passive needs: what follows its acknowledged position, with a
     * margin for its confirmations, which lag. A compaction copies what it keeps, so keeping
     * little keeps it cheap. */
    uint64_t keep_from = repl_spool_retention_point(repl->spool, repl->retain_bytes);
    (void)pthread_mutex_lock(&repl->mutex);
    uint64_t acked = repl->link != NULL ? repl->peer_acked.txid : 0;
    (void)pthread_mutex_unlock(&repl->mutex);
    if (acked > COMPACTION_MARGIN_ENTRIES && acked + 1 - COMPACTION_MARGIN_ENTRIES > keep_from) {
        keep_from = acked + 1 - COMPACTION_MARGIN_ENTRIES;
    }
    if (repl_spool_compact(repl->spool, keep_from) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: compacting the log failed: %m");
    }
}

/* The log append that makes a transaction committed; returns 0 or the failure's outcome. A
 * synchronous commit's append is not synced (see the top of this file). */
static kt_store_status append_to_log(kt_repl *repl, const repl_entry *entry, bool synchronous)
{
    if (repl_spool_append(repl->spool, entry, !synchronous) == 0) {
        return KT_STORE_OK;
    }
    bool full = errno == ENOSPC || errno == EDQUOT;
    repl_log(&repl->logger, KT_REPL_LOG_ERROR,
             "replication: cannot append transaction %llu to the log: %m",
             (unsigned long long)entry->txid);
    if (synchronous) {
        return KT_STORE_INDETERMINATE; /* the passive holds it, unconfirmed */
    }
    return full ? KT_STORE_FULL : KT_STORE_REFUSED;
}

/* Step 1: may this commit go ahead, and if synchronous, hand it to the session. Returns NULL, or
 * why it is refused (nothing was sent). */
static const char *admit(kt_repl *repl, const repl_entry *entry, bool synchronous,
                         const struct timespec *deadline)
{
    const char *why = NULL;
    kt_repl_position tip = repl_spool_tip(repl->spool);
    (void)pthread_mutex_lock(&repl->mutex);
    repl->have_outcome = false;
    if (repl->state == REPL_STATE_FENCED) {
        why = "this node is fenced: a node with a newer epoch exists";
    } else if (synchronous && !wait_in_sync(repl, &tip, deadline, &why)) {
        /* why is set */
    } else if (synchronous && send_inflight(repl, entry) != 0) {
        why = "out of memory";
    }
    bool say = why != NULL && refusal_worth_logging(repl);
    (void)pthread_mutex_unlock(&repl->mutex);
    if (say) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: write refused: %s", why);
    }
    return why;
}

/* Steps 3 and 4: after the local sync (`rc`), what became of the transaction. */
static kt_store_status await_fate(kt_repl *repl, const repl_entry *entry, int rc,
                                  bool synchronous, const struct timespec *deadline)
{
    const char *why = NULL;
    kt_store_status fate = KT_STORE_OK;
    (void)pthread_mutex_lock(&repl->mutex);
    if (rc != SQLITE_OK) {
        why = "the local -wal sync failed";
        fate = repl->inflight.maybe_sent ? KT_STORE_INDETERMINATE
               : (rc & 0xff) == SQLITE_FULL ? KT_STORE_FULL
                                            : KT_STORE_REFUSED;
    } else if (synchronous) {
        fate = wait_acknowledged(repl, deadline, &why);
    }
    if (fate != KT_STORE_OK && synchronous) {
        abandon_inflight(repl);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    if (fate != KT_STORE_OK) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: transaction %llu %s: %s",
                 (unsigned long long)entry->txid,
                 fate == KT_STORE_INDETERMINATE ? "is indeterminate" : "was refused", why);
    }
    return fate;
}

/* Step 5: the log append that makes the transaction committed. */
static kt_store_status make_committed(kt_repl *repl, const repl_entry *entry, bool synchronous)
{
    kt_store_status fate = append_to_log(repl, entry, synchronous);
    (void)pthread_mutex_lock(&repl->mutex);
    if (fate != KT_STORE_OK) {
        repl->inflight.maybe_sent = repl->inflight.maybe_sent || synchronous;
        abandon_inflight(repl);
    } else {
        inflight_clear(&repl->inflight);
        if (!synchronous) {
            repl_walsender_wake(repl); /* stream it */
        } /* synchronous: the next TX confirms it, or the session after CONFIRM_DELAY_MS */
        (void)pthread_cond_broadcast(&repl->changed);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    return fate;
}

/* Holds repl->mutex for the read. Synchronous when this node must wait for the passive. */
static bool commit_is_synchronous(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    bool synchronous = repl->role == KT_REPL_ACTIVE && repl->synchronous;
    (void)pthread_mutex_unlock(&repl->mutex);
    return synchronous;
}

bool repl_syncrep_holds_commits(kt_repl *repl)
{
    return commit_is_synchronous(repl);
}

/* Steps 1 to 4: the transaction reaches the passive (synchronous) and this node's disk. */
static kt_store_status ship_and_sync(kt_repl *repl, const repl_entry *entry,
                                     const repl_commit_io *io, bool synchronous,
                                     const struct timespec *deadline, int *rc)
{
    repl_failpoint(REPL_FP_ACTIVE_BEFORE_SHIP);
    if (synchronous && !io->held) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: write refused: synchronous replication was turned on during it");
        return KT_STORE_REFUSED;
    }
    if (admit(repl, entry, synchronous, deadline) != NULL) {
        return KT_STORE_REFUSED;
    }
    *rc = io->local_sync(io->context); /* while the transaction travels */
    if (*rc == SQLITE_OK) {
        repl_failpoint(REPL_FP_ACTIVE_AFTER_LOCAL_SYNC);
    }
    return await_fate(repl, entry, *rc, synchronous, deadline);
}

int repl_syncrep_commit(kt_repl *repl, const repl_frames *frames, const repl_wal_cursor *end,
                        const repl_commit_io *io, kt_store_status *outcome, bool *logged)
{
    *logged = false;
    struct timespec deadline; /* send, write and fsync on the passive, acknowledge */
    repl_deadline(&deadline, repl->ack_timeout_ms + repl_transfer_allowance_ms(frames->length));
    bool synchronous = commit_is_synchronous(repl);
    kt_repl_position tip = repl_spool_tip(repl->spool);
    repl_entry entry;
    repl_entry_build(&entry, repl->epoch, &tip, frames, end);
    int rc = SQLITE_OK;
    kt_store_status fate = ship_and_sync(repl, &entry, io, synchronous, &deadline, &rc);
    if (fate == KT_STORE_OK && io->held && !synchronous && io->release(io->context) != 0) {
        fate = KT_STORE_REFUSED; /* asynchronous: released before the log knows it */
    }
    if (fate == KT_STORE_OK) {
        repl_failpoint(REPL_FP_ACTIVE_AFTER_ACK);
        fate = make_committed(repl, &entry, synchronous);
        *logged = fate == KT_STORE_OK;
    }
    if (*logged) {
        repl_failpoint(REPL_FP_ACTIVE_AFTER_LOG);
    }
    if (*logged && io->held && synchronous && io->release(io->context) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot release committed transaction %llu in the -wal: %m; "
                 "refusing every write until keytrustee-db restarts",
                 (unsigned long long)entry.txid);
        fate = KT_STORE_INDETERMINATE;
    }
    if (fate != KT_STORE_OK) {
        *outcome = fate;
        return rc != SQLITE_OK ? rc : SQLITE_IOERR_FSYNC;
    }
    if (repl->role == KT_REPL_STANDALONE) {
        repl_syncrep_compact(repl); /* an active's listener thread does it, off the commit path */
    }
    return SQLITE_OK;
}

int repl_syncrep_before_wal_reset(kt_repl *repl)
{
    if (repl_spool_sync(repl->spool) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot sync the log before a new -wal generation: %m");
        return -1;
    }
    return 0;
}

void repl_syncrep_acknowledged(kt_repl *repl, const kt_repl_position *acked)
{
    repl_inflight *inflight = &repl->inflight;
    if (inflight->active && acked->txid == inflight->txid &&
        memcmp(acked->hash, inflight->hash, KT_HASH_BYTES) == 0) {
        inflight->acknowledged = true;
        (void)pthread_cond_broadcast(&repl->changed);
    }
}

void repl_syncrep_refused(kt_repl *repl, uint64_t txid, uint8_t reason)
{
    repl_inflight *inflight = &repl->inflight;
    if (inflight->active && txid == inflight->txid) {
        inflight->refused = true;
        inflight->nack_reason = reason;
        (void)pthread_cond_broadcast(&repl->changed);
    }
}

void repl_syncrep_link_lost(kt_repl *repl)
{
    if (repl->inflight.active) {
        repl->inflight.link_lost = true;
    }
    (void)pthread_cond_broadcast(&repl->changed);
}

bool repl_syncrep_writable(kt_repl *repl, char *reason, size_t reason_size)
{
    const char *why = NULL;
    if (repl->role == KT_REPL_PASSIVE) {
        why = "this node is the passive";
    } else if (repl->stopping) {
        why = "replication is stopping";
    } else if (repl->state == REPL_STATE_FENCED) {
        why = "fenced: a node with a newer epoch exists";
    } else if (repl->pending.present) {
        why = "the transaction that was in flight when this node stopped waits for the passive";
    } else if (repl->role == KT_REPL_ACTIVE && repl->synchronous) {
        if (repl->state == REPL_STATE_WAITING) {
            why = "the passive is not connected";
        } else if (repl->state != REPL_STATE_IN_SYNC) {
            why = "the passive is not in sync yet";
        }
    }
    (void)snprintf(reason, reason_size, "%s", why ? why : "");
    return why == NULL;
}
