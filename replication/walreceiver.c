/*
 * walreceiver.c — the passive's connection to the active (PostgreSQL's walreceiver.c plays this
 * part): one thread that connects, hands over its position, follows the active's decision, then
 * spools, acknowledges and confirms for as long as the connection lives.
 *
 * Session
 *   connect    authenticated channel to master_host:master_port; on failure retry after a pause
 *              that grows from 100 ms to 1 s (5 s after a refusal, state diverged).
 *   POSITION   has_state (a usable database, log and state file), epoch, confirmed and tip.
 *   DECISION   REFUSE: log it, state diverged. An active of an older epoch: refuse it, diverged
 *              (guarantee 5: never acknowledge an older epoch). A newer epoch: adopt it.
 *              STREAM: drop the spooled entries after keep_through (unconfirmed by definition:
 *              the active never asks for less than what it confirmed) and stream.
 *              BASECOPY: receive the copy, verify it, install it (basecopy.c), acknowledge it.
 *   streaming  TX         must follow the spool's tip (else NACK order, close); appended and
 *                         fdatasynced, then ACK. An uncommitted TX (a synchronous commit in
 *                         flight) from an active whose epoch is older than ours: NACK epoch.
 *                         A TX marked committed confirms itself.
 *              CONFIRM    the active committed up to (txid, hash): recorded, applier woken.
 *              HEARTBEAT  the active's tip; when the spool holds it with the same hash it is
 *                         confirmed too (the confirmation rides on the heartbeat when the
 *                         CONFIRM was lost with a connection).
 *              A HEARTBEAT goes back every heartbeat interval; an active silent for peer_timeout
 *              is dropped and reconnected to.
 * Anything that fails to decode or authenticate closes the connection, and the reason is logged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

#define CONNECT_TIMEOUT_MS 2000
#define DECISION_TIMEOUT_MS 5000
#define BASECOPY_BEGIN_TIMEOUT_MS 120000
#define DIVERGED_PAUSE_MS 5000
#define SPOOL_AHEAD_BYTES (256u << 10)

typedef struct receiver {
    kt_repl *repl;
    repl_channel *channel;
    int64_t last_heard_ms;
    int64_t last_heartbeat_ms;
} receiver;

static bool stopping(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    bool result = repl->stopping;
    (void)pthread_mutex_unlock(&repl->mutex);
    return result;
}

static void set_state(kt_repl *repl, repl_state state, const char *why)
{
    (void)pthread_mutex_lock(&repl->mutex);
    if (!repl->stopping) {
        repl_set_state(repl, state, why);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

/* Sleeps up to `milliseconds`, returning early when replication stops. */
static void pause_ms(kt_repl *repl, int milliseconds)
{
    struct timespec deadline;
    repl_deadline(&deadline, milliseconds);
    (void)pthread_mutex_lock(&repl->mutex);
    while (!repl->stopping && repl_wait_until(&repl->changed, &repl->mutex, &deadline)) {
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

static void diverged(kt_repl *repl, const char *why)
{
    repl_log(&repl->logger, KT_REPL_LOG_ERROR, "replication: %s", why);
    set_state(repl, REPL_STATE_DIVERGED, why);
}

static int send_payload(receiver *session, uint8_t type, const repl_buffer *payload)
{
    if (payload->failed) {
        return -1;
    }
    if (repl_channel_send(session->channel, type, payload->data, payload->length,
                          session->repl->peer_timeout_ms) != 0) {
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                 repl_channel_error(session->channel));
        return -1;
    }
    return 0;
}

static int send_position(receiver *session, uint8_t type, const kt_repl_position *position)
{
    kt_repl *repl = session->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    repl_msg_ack ack = {*position, repl->applied.txid};
    (void)pthread_mutex_unlock(&repl->mutex);
    repl_buffer message = {0};
    repl_encode_ack(&message, &ack);
    int result = send_payload(session, type, &message);
    repl_buffer_free(&message);
    return result;
}

static int send_nack(receiver *session, uint64_t txid, uint8_t reason)
{
    repl_msg_nack nack = {txid, reason};
    repl_buffer message = {0};
    repl_encode_nack(&message, &nack);
    int result = send_payload(session, REPL_MSG_NACK, &message);
    repl_buffer_free(&message);
    return result;
}

/* Receives one message of `expected` type, skipping heartbeats; 0 or -1 (logged). */
static int receive_expected(receiver *session, uint8_t expected, unsigned char **payload,
                            size_t *length, int timeout_ms)
{
    int64_t deadline = repl_now_ms() + timeout_ms;
    for (;;) {
        uint8_t type = 0;
        int64_t left = deadline - repl_now_ms();
        int got = left > 0 ? repl_channel_receive(session->channel, &type, payload, length,
                                                  (int)left, session->repl->peer_timeout_ms)
                           : 0;
        if (got <= 0) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                     got < 0 ? repl_channel_error(session->channel)
                             : "the active did not answer in time");
            return -1;
        }
        if (type == expected) {
            return 0;
        }
        free(*payload);
        *payload = NULL;
        if (type != REPL_MSG_HEARTBEAT) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                     "replication: the active sent message type %u out of turn", type);
            return -1;
        }
    }
}

/* ---- handshake ------------------------------------------------------------------------------ */

static void build_position(kt_repl *repl, repl_msg_position *position)
{
    memset(position, 0, sizeof *position);
    (void)pthread_mutex_lock(&repl->mutex);
    position->has_state = !repl->needs_basecopy;
    position->epoch = repl->epoch;
    (void)pthread_mutex_unlock(&repl->mutex);
    position->tip = repl_spool_tip(repl->spool);
    if (!repl_spool_position_at(repl->spool, repl_spool_confirmed(repl->spool),
                                &position->confirmed)) {
        position->confirmed = repl_spool_base(repl->spool);
    }
    position->sqlite_version = (uint32_t)sqlite3_libversion_number();
}

static int adopt_epoch(kt_repl *repl, uint64_t epoch)
{
    (void)pthread_mutex_lock(&repl->mutex);
    uint64_t mine = repl->epoch;
    (void)pthread_mutex_unlock(&repl->mutex);
    if (epoch == mine) {
        return 0;
    }
    (void)pthread_mutex_lock(&repl->apply_mutex);
    (void)pthread_mutex_lock(&repl->mutex);
    repl_state_file state = {epoch, repl->applied, repl->needs_basecopy};
    (void)pthread_mutex_unlock(&repl->mutex);
    char error[256];
    int result = repl_state_save(repl->state_path, &state, error, sizeof error);
    if (result == 0) {
        (void)pthread_mutex_lock(&repl->mutex);
        repl->epoch = epoch;
        (void)pthread_mutex_unlock(&repl->mutex);
        repl_log(&repl->logger, KT_REPL_LOG_INFO, "replication: now at epoch %llu",
                 (unsigned long long)epoch);
    } else {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR, "replication: %s", error);
    }
    (void)pthread_mutex_unlock(&repl->apply_mutex);
    return result;
}

/* Drops what the active says is not part of its history. */
static int keep_through(receiver *session, const kt_repl_position *keep)
{
    kt_repl *repl = session->repl;
    kt_repl_position at;
    if (!repl_spool_position_at(repl->spool, keep->txid, &at) || !repl_position_same(&at, keep)) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: the active asked to keep transaction %llu, which is not here",
                 (unsigned long long)keep->txid);
        return -1;
    }
    kt_repl_position tip = repl_spool_tip(repl->spool);
    if (tip.txid > keep->txid) {
        if (repl_spool_truncate_after(repl->spool, keep->txid) != 0) {
            repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                     "replication: cannot drop unconfirmed transactions: %m");
            return -1;
        }
        repl_log(&repl->logger, KT_REPL_LOG_INFO,
                 "replication: dropped %llu unconfirmed transaction(s) the active did not commit",
                 (unsigned long long)(tip.txid - keep->txid));
    }
    return 0;
}

static int receive_basecopy(receiver *session)
{
    kt_repl *repl = session->repl;
    unsigned char *payload = NULL;
    size_t length = 0;
    char error[256] = "out of memory";
    repl_msg_basecopy_begin begin;
    set_state(repl, REPL_STATE_BASECOPY, "the active sends a full copy");
    if (receive_expected(session, REPL_MSG_BASECOPY_BEGIN, &payload, &length,
                         BASECOPY_BEGIN_TIMEOUT_MS) != 0) {
        return -1;
    }
    char *temp_path = repl_path_join(repl->state_directory, "keytrustee-repl-basecopy.tmp");
    int result = temp_path == NULL ? -1
                                   : repl_basecopy_receive(session->channel, payload, length,
                                                           temp_path, &begin,
                                                           repl->peer_timeout_ms * 10, error,
                                                           sizeof error);
    free(payload);
    if (result == 0) {
        result = repl_basecopy_install(repl, temp_path, &begin, error, sizeof error);
    }
    free(temp_path);
    if (result != 0) {
        char why[320];
        (void)snprintf(why, sizeof why, "installing a full copy failed: %s", error);
        diverged(repl, why); /* a pause before the next (whole) copy */
        return -2;
    }
    repl_log(&repl->logger, KT_REPL_LOG_INFO,
             "replication: installed a full copy at transaction %llu",
             (unsigned long long)begin.position.txid);
    return send_position(session, REPL_MSG_ACK, &begin.position);
}

/* Returns 0 to stream, -1 to reconnect, -2 to reconnect after a long pause. */
static int handshake(receiver *session)
{
    kt_repl *repl = session->repl;
    repl_msg_position position;
    build_position(repl, &position);
    repl_buffer message = {0};
    repl_encode_position_msg(&message, &position);
    int sent = send_payload(session, REPL_MSG_POSITION, &message);
    repl_buffer_free(&message);
    unsigned char *payload = NULL;
    size_t length = 0;
    repl_msg_decision decision;
    if (sent != 0 ||
        receive_expected(session, REPL_MSG_DECISION, &payload, &length, DECISION_TIMEOUT_MS) != 0) {
        return -1;
    }
    int decoded = repl_decode_decision(payload, length, &decision);
    free(payload);
    if (decoded != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: malformed decision");
        return -1;
    }
    char why[256];
    if (decision.kind == REPL_DECIDE_REFUSE) {
        (void)snprintf(why, sizeof why, "the active refused this passive: %s", decision.reason);
        diverged(repl, why);
        return -2;
    }
    if (decision.epoch < position.epoch) {
        (void)snprintf(why, sizeof why,
                       "the active is at epoch %llu, older than this node's %llu: not following it",
                       (unsigned long long)decision.epoch, (unsigned long long)position.epoch);
        diverged(repl, why);
        return -2;
    }
    if (adopt_epoch(repl, decision.epoch) != 0) {
        return -1;
    }
    if (decision.kind == REPL_DECIDE_BASECOPY) {
        int received = receive_basecopy(session);
        if (received != 0) {
            return received;
        }
    } else if (keep_through(session, &decision.keep_through) != 0) {
        return -1;
    }
    (void)pthread_mutex_lock(&repl->mutex);
    repl->active_tip = decision.active_tip;
    (void)pthread_mutex_unlock(&repl->mutex);
    set_state(repl, REPL_STATE_CATCHUP, "receiving what this node misses");
    return 0;
}

/* ---- streaming ------------------------------------------------------------------------------ */

static void wake_applier(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    (void)pthread_cond_signal(&repl->apply_wanted);
    (void)pthread_mutex_unlock(&repl->mutex);
}

/* Confirms up to `position` if the spool holds it; notes the active's tip. */
static int confirm(receiver *session, const kt_repl_position *position, bool must_hold)
{
    kt_repl *repl = session->repl;
    kt_repl_position at;
    bool held = repl_spool_position_at(repl->spool, position->txid, &at) &&
                repl_position_same(&at, position);
    if (!held) {
        if (must_hold) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                     "replication: the active confirmed transaction %llu, which is not spooled",
                     (unsigned long long)position->txid);
            return -1;
        }
        return 0;
    }
    if (repl_spool_confirm(repl->spool, position->txid, position->hash) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR, "replication: cannot record a confirmation: %m");
        return -1;
    }
    wake_applier(repl);
    return 0;
}

static void note_active_tip(receiver *session, const kt_repl_position *tip)
{
    kt_repl *repl = session->repl;
    kt_repl_position spooled = repl_spool_tip(repl->spool);
    (void)pthread_mutex_lock(&repl->mutex);
    if (tip->txid >= repl->active_tip.txid) {
        repl->active_tip = *tip;
    }
    if (repl->state == REPL_STATE_CATCHUP && repl_position_same(&spooled, &repl->active_tip)) {
        repl_set_state(repl, REPL_STATE_IN_SYNC, "this node holds everything the active committed");
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

static int handle_tx(receiver *session, const unsigned char *payload, size_t length)
{
    kt_repl *repl = session->repl;
    repl_msg_tx tx;
    if (repl_decode_tx(payload, length, &tx) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: a transaction from the active failed to decode");
        return -1;
    }
    repl_entry *entry = &tx.entry;
    (void)pthread_mutex_lock(&repl->mutex);
    uint64_t epoch = repl->epoch;
    (void)pthread_mutex_unlock(&repl->mutex);
    if (!tx.committed && entry->epoch < epoch) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: refusing transaction %llu from an active of epoch %llu (ours %llu)",
                 (unsigned long long)entry->txid, (unsigned long long)entry->epoch,
                 (unsigned long long)epoch);
        (void)send_nack(session, entry->txid, REPL_NACK_EPOCH);
        return -1;
    }
    if (!tx.committed && entry->txid > 1) {
        /* The active sends a transaction only once the one before it committed: this one
         * confirms it (walsender.c, "confirming"). Recorded before the append, whose fdatasync
         * then makes both durable. */
        kt_repl_position previous = {entry->epoch, entry->txid - 1, {0}};
        memcpy(previous.hash, entry->prev, KT_HASH_BYTES);
        if (confirm(session, &previous, false) != 0) {
            return -1;
        }
    }
    if (repl_spool_append(repl->spool, entry, true) != 0) {
        bool order = errno == EINVAL;
        bool full = errno == ENOSPC || errno == EDQUOT;
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot spool transaction %llu: %s", (unsigned long long)entry->txid,
                 order ? "it does not follow the spool's tip" : strerror(errno));
        (void)send_nack(session, entry->txid,
                        order ? REPL_NACK_ORDER : full ? REPL_NACK_FULL : REPL_NACK_IO);
        return -1;
    }
    kt_repl_position position = repl_entry_position(entry);
    repl_failpoint(REPL_FP_PASSIVE_AFTER_SPOOL_SYNC);
    if (send_position(session, REPL_MSG_ACK, &position) != 0) {
        return -1;
    }
    /* Between this transaction and the next: room for the next ones, off the commit's path. */
    repl_spool_preallocate_ahead(repl->spool, SPOOL_AHEAD_BYTES);
    if (tx.committed) {
        note_active_tip(session, &position);
        return confirm(session, &position, true);
    }
    return 0;
}

static int handle_message(receiver *session, uint8_t type, const unsigned char *payload,
                          size_t length)
{
    repl_msg_ack ack;
    switch (type) {
    case REPL_MSG_TX:
        return handle_tx(session, payload, length);
    case REPL_MSG_CONFIRM:
    case REPL_MSG_HEARTBEAT:
        if (repl_decode_ack(payload, length, &ack) != 0) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                     "replication: a message from the active failed to decode");
            return -1;
        }
        if (confirm(session, &ack.position, type == REPL_MSG_CONFIRM) != 0) {
            return -1;
        }
        note_active_tip(session, &ack.position);
        return 0;
    case REPL_MSG_HANDOVER: /* switchover: everything is confirmed, this node takes over */
        if (repl_decode_ack(payload, length, &ack) != 0 ||
            confirm(session, &ack.position, true) != 0) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                     "replication: a hand-over from the active could not be taken");
            return -1;
        }
        note_active_tip(session, &ack.position);
        (void)pthread_mutex_lock(&session->repl->mutex);
        session->repl->handover_received = true;
        (void)pthread_mutex_unlock(&session->repl->mutex);
        repl_log(&session->repl->logger, KT_REPL_LOG_INFO,
                 "replication: the active handed over at transaction %llu",
                 (unsigned long long)ack.position.txid);
        return 0;
    default:
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                 "replication: the active sent unexpected message type %u", type);
        return -1;
    }
}

static int heartbeat_if_due(receiver *session)
{
    int64_t now = repl_now_ms();
    if (now - session->last_heartbeat_ms < session->repl->heartbeat_ms) {
        return 0;
    }
    session->last_heartbeat_ms = now;
    kt_repl_position tip = repl_spool_tip(session->repl->spool);
    return send_position(session, REPL_MSG_HEARTBEAT, &tip);
}

static void stream(receiver *session)
{
    kt_repl *repl = session->repl;
    session->last_heard_ms = repl_now_ms();
    while (!stopping(repl)) {
        if (heartbeat_if_due(session) != 0) {
            return;
        }
        int64_t since = repl_now_ms() - session->last_heartbeat_ms;
        int wait_ms = (int)(repl->heartbeat_ms - since);
        uint8_t type = 0;
        unsigned char *payload = NULL;
        size_t length = 0;
        int got = repl_channel_receive(session->channel, &type, &payload, &length,
                                       wait_ms > 0 ? wait_ms : 0, repl->peer_timeout_ms);
        if (got < 0) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                     repl_channel_error(session->channel));
            return;
        }
        if (got == 1) {
            session->last_heard_ms = repl_now_ms();
            int result = handle_message(session, type, payload, length);
            free(payload);
            if (result != 0) {
                return;
            }
        } else if (repl_now_ms() - session->last_heard_ms > repl->peer_timeout_ms) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                     "replication: the active has been silent for %d ms; reconnecting",
                     repl->peer_timeout_ms);
            return;
        }
    }
}

/* ---- the thread ----------------------------------------------------------------------------- */

static int run_session(kt_repl *repl, repl_channel *channel)
{
    receiver session = {repl, channel, 0, 0};
    (void)pthread_mutex_lock(&repl->mutex);
    bool stop = repl->stopping;
    if (!stop) {
        repl->receiver_channel = channel;
        (void)snprintf(repl->peer_address, sizeof repl->peer_address, "%s",
                       repl_channel_peer(channel));
        repl_set_state(repl, REPL_STATE_HANDSHAKE, "connected to the active");
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    int result = stop ? -1 : handshake(&session);
    if (result == 0) {
        stream(&session);
    }
    (void)pthread_mutex_lock(&repl->mutex);
    repl->receiver_channel = NULL;
    repl->peer_address[0] = '\0';
    if (repl->state != REPL_STATE_DIVERGED && !repl->stopping) {
        repl_set_state(repl, REPL_STATE_CONNECTING, "the connection to the active ended");
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    return result;
}

static void *receiver_main(void *argument)
{
    kt_repl *repl = argument;
    int pause = 100;
    int64_t last_complaint = 0;
    while (!stopping(repl)) {
        (void)pthread_mutex_lock(&repl->mutex);
        if (repl->state == REPL_STATE_DIVERGED) {
            repl_set_state(repl, REPL_STATE_CONNECTING, "trying the active again");
        }
        (void)pthread_mutex_unlock(&repl->mutex);
        char error[256];
        repl_channel *channel = NULL;
        if (repl_channel_connect(&channel, repl->master_host, repl->master_port, repl->pair_key,
                                 REPL_PURPOSE_STREAM, CONNECT_TIMEOUT_MS, error,
                                 sizeof error) != 0) {
            if (repl_now_ms() - last_complaint > 30000) {
                repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: %s", error);
                last_complaint = repl_now_ms();
            }
            pause_ms(repl, pause);
            pause = pause * 2 > 1000 ? 1000 : pause * 2;
            continue;
        }
        last_complaint = 0;
        int result = run_session(repl, channel);
        repl_channel_close(channel);
        pause = 100;
        pause_ms(repl, result == -2 ? DIVERGED_PAUSE_MS : pause);
    }
    return NULL;
}

int repl_walreceiver_start(kt_repl *repl, char *error, size_t error_size)
{
    if (pthread_create(&repl->receiver, NULL, receiver_main, repl) != 0) {
        repl_error(error, error_size, "cannot start the replication receiver thread");
        return -1;
    }
    repl->receiver_started = true;
    return 0;
}

void repl_walreceiver_stop(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    repl->stopping = true;
    repl_channel_shutdown(repl->receiver_channel);
    (void)pthread_cond_broadcast(&repl->changed);
    (void)pthread_mutex_unlock(&repl->mutex);
    if (repl->receiver_started) {
        (void)pthread_join(repl->receiver, NULL);
        repl->receiver_started = false;
    }
}
