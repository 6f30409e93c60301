/*
 * walsender.c — the active's side of replication: the listener on the replication port and one
 * session per connection (PostgreSQL's walsender.c plays this part).
 *
 * The listener accepts connections and gives each a session thread, so that a slow or hostile
 * peer never holds up the port. It also compacts the log (at most once a second), off the commit
 * path. A session authenticates the peer (channel.c) and then serves one
 * of three purposes:
 *   base copy  a full copy for `ktadmin init-slave` (basecopy.c), then the connection ends;
 *   fence      a promoted node presents its epoch (promote.c); a newer one fences this node
 *              (serve_fence), then the connection ends;
 *   stream     the passive's connection: handshake, then streaming for as long as it lives.
 * At most one stream session is "the link": a newer authenticated passive connection replaces
 * the older one (the old one is presumed dead; the passive only ever has one).
 *
 * The stream session
 *   handshake  receives the passive's POSITION and decides (decide()). First, a transaction left
 *              pending at this node's last stop is settled: committed if the passive's tip is
 *              that transaction, cut off otherwise (vfs_capture.c). Then:
 *                - SQLite version differs                       → refuse
 *                - passive epoch newer than ours                 → refuse, and fence this node
 *                - passive has no database or log                → base copy
 *                - passive's tip is in our log with the same hash → stream from its tip
 *                - passive confirmed more than we ever committed → refuse (an operator must
 *                  decide: copying over it would lose transactions clients were told committed)
 *                - passive's confirmed position is in our log     → stream from there, the
 *                  passive drops its unconfirmed entries (settles indeterminate commits)
 *                - otherwise (log compacted past it, or forked)   → base copy
 *   streaming  one loop, one thread, in this order of priority: entries of the log the passive
 *              lacks (catch-up, asynchronous commits), the confirmation of what committed since, a
 *              heartbeat every heartbeat interval. It reads acknowledgements in between. A
 *              synchronous commit's transaction is sent by the committing thread itself, under the
 *              session's send lock (repl_walsender_send_inflight). State catchup becomes in_sync
 *              once the passive has acknowledged our tip.
 *   confirming a synchronous transaction T+1 is sent only once T committed, so the passive takes
 *              it as T's confirmation too (walreceiver.c). The session sends a CONFIRM only when
 *              no TX has carried it CONFIRM_DELAY_MS after T's acknowledgement: under load that
 *              is one message and one wake-up of each node less per commit; when writes stop,
 *              the last one is confirmed a moment later (the passive applies every 50 ms
 *              anyway), or by the next heartbeat if its commit had not reached the log by then.
 *   ending     on a send or receive failure, a message that fails to decode, a NACK, a peer
 *              silent for peer_timeout (SIGSTOP, cable; plus the transfer allowance of a TX sent
 *              and not yet answered, so that a big transaction is not taken for a dead peer),
 *              a reset requested by the commit path, or
 *              replacement. The in-flight commit is told the link was lost.
 * Locking: sessions read and change kt_repl's fields under repl->mutex; every socket operation
 * happens without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/internal.h"

#define HANDSHAKE_TIMEOUT_MS 5000
#define BASECOPY_ACK_TIMEOUT_MS (10 * 60 * 1000)
#define MAX_SESSIONS 8
#define CONFIRM_DELAY_MS 2

struct repl_session {
    kt_repl *repl;
    int fd;                  /* the socket (the channel owns it once it exists) */
    repl_channel *channel;
    char peer[64];
    pthread_t thread;
    bool done;
    uint64_t generation;
    int wake[2];
    repl_session *next;
    /* One sender at a time on the channel: this session's thread, or a committing thread sending
     * its transaction (repl_walsender_send_inflight). Taken after repl->mutex, never before it.
     * It also guards the quiet allowance. */
    pthread_mutex_t send_lock;
    bool send_lock_ready;
    /* stream state: written by whoever holds send_lock, read by the session thread */
    _Atomic uint64_t next_send;
    uint64_t confirm_sent;   /* the passive knows everything up to here committed (repl->mutex) */
    int64_t confirm_due_ms;  /* session thread: when to send a CONFIRM no TX has carried; 0 none */
    int64_t last_heard_ms;
    int64_t last_heartbeat_ms;
    int quiet_allowance_ms;  /* the passive may be busy this much longer with a big transaction:
                                set when a TX has been sent, counted from then (quiet_since_ms),
                                cleared by the ACK of the last TX sent or a NACK only (a HEARTBEAT
                                the passive sent before reading the TX says nothing about how
                                long it takes) */
    int64_t quiet_since_ms;
};

/* ---- the link ------------------------------------------------------------------------------- */

void repl_walsender_wake(kt_repl *repl)
{
    repl_session *link = repl->link;
    if (link != NULL && link->wake[1] >= 0) {
        char byte = 1;
        if (write(link->wake[1], &byte, 1) < 0 && errno != EAGAIN) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: cannot wake the sender: %m");
        }
    }
}

static bool is_link(const repl_session *session)
{
    kt_repl *repl = session->repl;
    return !repl->stopping && repl->link == session &&
           repl->link_generation == session->generation;
}

static bool become_link(repl_session *session)
{
    kt_repl *repl = session->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    bool ok = !repl->stopping;
    if (ok) {
        if (repl->link != NULL) {
            repl_log(&repl->logger, KT_REPL_LOG_INFO,
                     "replication: passive connection from %s replaces the one from %s",
                     session->peer, repl->link->peer);
            repl_walsender_wake(repl);
            repl_syncrep_link_lost(repl);
        }
        if (repl->state != REPL_STATE_WAITING && repl->state != REPL_STATE_FENCED) {
            repl_set_state(repl, REPL_STATE_WAITING, "a new passive connection replaces the old");
        }
        repl->link = session;
        session->generation = ++repl->link_counter;
        repl->link_generation = session->generation;
        (void)snprintf(repl->peer_address, sizeof repl->peer_address, "%s", session->peer);
        if (repl->state == REPL_STATE_WAITING) {
            repl_set_state(repl, REPL_STATE_HANDSHAKE, "a passive connected");
        }
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    return ok;
}

static void leave_link(repl_session *session, const char *why)
{
    kt_repl *repl = session->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    if (repl->link == session) {
        repl->link = NULL;
        repl->link_generation = 0;
        repl->peer_address[0] = '\0';
        if (repl->state != REPL_STATE_FENCED && !repl->stopping) {
            repl_set_state(repl, REPL_STATE_WAITING, why);
        }
        repl_syncrep_link_lost(repl);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

static void set_link_state(repl_session *session, repl_state state, const char *why)
{
    kt_repl *repl = session->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    if (is_link(session) && repl->state != REPL_STATE_FENCED) {
        repl_set_state(repl, state, why);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

/* Holds repl->mutex. catchup becomes in_sync once the passive acknowledged our tip. */
static void maybe_in_sync(repl_session *session)
{
    kt_repl *repl = session->repl;
    kt_repl_position tip = repl_spool_tip(repl->spool);
    if (repl->state == REPL_STATE_CATCHUP && is_link(session) &&
        repl_position_same(&repl->peer_acked, &tip)) {
        repl_set_state(repl, REPL_STATE_IN_SYNC, "the passive holds everything committed");
    }
}

/* ---- handshake ------------------------------------------------------------------------------ */

static void refuse(repl_msg_decision *decision, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void refuse(repl_msg_decision *decision, const char *format, ...)
{
    decision->kind = REPL_DECIDE_REFUSE;
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(decision->reason, sizeof decision->reason, format, arguments);
    va_end(arguments);
    if (written < 0) {
        decision->reason[0] = '\0';
    }
}

static void decide(kt_repl *repl, const repl_msg_position *passive, repl_msg_decision *decision)
{
    memset(decision, 0, sizeof *decision);
    if (passive->epoch <= repl->epoch) { /* a transaction held at the last stop: ask the passive */
        kt_repl_position none = {0, UINT64_MAX, {0}};
        (void)repl_capture_settle_pending(repl, passive->has_state ? &passive->tip : &none);
    }
    (void)pthread_mutex_lock(&repl->mutex);
    decision->epoch = repl->epoch;
    bool fenced = repl->state == REPL_STATE_FENCED;
    if (!fenced && passive->epoch > repl->epoch) {
        repl_set_state(repl, REPL_STATE_FENCED, "the passive carries a newer epoch");
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    kt_repl_position tip = repl_spool_tip(repl->spool), at;
    decision->active_tip = tip;
    if (fenced) {
        refuse(decision, "the active is fenced: a node with a newer epoch exists");
    } else if (passive->epoch > decision->epoch) {
        refuse(decision, "the passive has epoch %llu, newer than the active's %llu",
               (unsigned long long)passive->epoch, (unsigned long long)decision->epoch);
    } else if (passive->sqlite_version != (uint32_t)sqlite3_libversion_number()) {
        refuse(decision, "SQLite versions differ (active %d, passive %u): install the same one",
               sqlite3_libversion_number(), passive->sqlite_version);
    } else if (!passive->has_state) {
        decision->kind = REPL_DECIDE_BASECOPY;
    } else if (passive->tip.txid <= tip.txid &&
               repl_spool_position_at(repl->spool, passive->tip.txid, &at) &&
               repl_position_same(&at, &passive->tip)) {
        decision->kind = REPL_DECIDE_STREAM;
        decision->keep_through = passive->tip;
    } else if (passive->confirmed.txid > tip.txid) {
        refuse(decision,
               "the passive holds %llu confirmed transactions, more than the active's %llu: "
               "the active lost data; restore it from the passive",
               (unsigned long long)passive->confirmed.txid, (unsigned long long)tip.txid);
    } else if (repl_spool_position_at(repl->spool, passive->confirmed.txid, &at) &&
               repl_position_same(&at, &passive->confirmed)) {
        decision->kind = REPL_DECIDE_STREAM;
        decision->keep_through = passive->confirmed;
    } else {
        decision->kind = REPL_DECIDE_BASECOPY;
    }
}

static const char *decision_text(const repl_msg_decision *decision)
{
    switch (decision->kind) {
    case REPL_DECIDE_STREAM: return "stream";
    case REPL_DECIDE_BASECOPY: return "base copy";
    default: return "refuse";
    }
}

static int send_message(repl_session *session, uint8_t type, const repl_buffer *payload)
{
    if (payload->failed) {
        repl_log(&session->repl->logger, KT_REPL_LOG_ERROR, "replication: out of memory");
        return -1;
    }
    (void)pthread_mutex_lock(&session->send_lock);
    int result = repl_channel_send(session->channel, type, payload->data, payload->length,
                                   session->repl->peer_timeout_ms);
    (void)pthread_mutex_unlock(&session->send_lock);
    if (result != 0) {
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                 repl_channel_error(session->channel));
    }
    return result;
}

/* Receives one message of `expected` type within the timeout, skipping heartbeats. */
static int receive_expected(repl_session *session, uint8_t expected, unsigned char **payload,
                            size_t *length, int timeout_ms)
{
    int64_t deadline = repl_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - repl_now_ms();
        uint8_t type = 0;
        int got = left > 0 ? repl_channel_receive(session->channel, &type, payload, length,
                                                  (int)left, session->repl->peer_timeout_ms)
                           : 0;
        if (got < 0) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                     repl_channel_error(session->channel));
            return -1;
        }
        if (got == 0) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                     "replication: %s did not answer in time", session->peer);
            return -1;
        }
        if (type == expected) {
            return 0;
        }
        free(*payload);
        *payload = NULL;
        if (type != REPL_MSG_HEARTBEAT) {
            repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                     "replication: %s sent message type %u out of turn", session->peer, type);
            return -1;
        }
    }
}

static int send_basecopy(repl_session *session, kt_repl_position *position)
{
    char error[256];
    if (repl_basecopy_send(session->repl, session->channel, error, sizeof error, position) != 0) {
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                 "replication: base copy to %s failed: %s", session->peer, error);
        return -1;
    }
    unsigned char *payload = NULL;
    size_t length = 0;
    repl_msg_ack ack;
    if (receive_expected(session, REPL_MSG_ACK, &payload, &length, BASECOPY_ACK_TIMEOUT_MS) != 0) {
        return -1;
    }
    int decoded = repl_decode_ack(payload, length, &ack);
    free(payload);
    if (decoded != 0 || !repl_position_same(&ack.position, position)) {
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING,
                 "replication: %s did not confirm the base copy", session->peer);
        return -1;
    }
    repl_log(&session->repl->logger, KT_REPL_LOG_INFO,
             "replication: %s installed a base copy at transaction %llu", session->peer,
             (unsigned long long)position->txid);
    return 0;
}

static int handshake(repl_session *session)
{
    kt_repl *repl = session->repl;
    unsigned char *payload = NULL;
    size_t length = 0;
    repl_msg_position passive;
    if (receive_expected(session, REPL_MSG_POSITION, &payload, &length, HANDSHAKE_TIMEOUT_MS) != 0) {
        return -1;
    }
    int decoded = repl_decode_position_msg(payload, length, &passive);
    free(payload);
    if (decoded != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: %s sent a malformed position",
                 session->peer);
        return -1;
    }
    repl_msg_decision decision;
    decide(repl, &passive, &decision);
    repl_log(&repl->logger, decision.kind == REPL_DECIDE_REFUSE ? KT_REPL_LOG_ERROR
                                                                : KT_REPL_LOG_INFO,
             "replication: passive %s at transaction %llu (confirmed %llu), active at %llu: %s%s%s",
             session->peer, (unsigned long long)passive.tip.txid,
             (unsigned long long)passive.confirmed.txid,
             (unsigned long long)decision.active_tip.txid, decision_text(&decision),
             decision.reason[0] ? ": " : "", decision.reason);
    repl_buffer message = {0};
    repl_encode_decision(&message, &decision);
    int sent = send_message(session, REPL_MSG_DECISION, &message);
    repl_buffer_free(&message);
    if (sent != 0 || decision.kind == REPL_DECIDE_REFUSE) {
        return -1;
    }
    kt_repl_position start = decision.keep_through;
    session->confirm_sent = passive.confirmed.txid;
    if (decision.kind == REPL_DECIDE_BASECOPY) {
        set_link_state(session, REPL_STATE_BASECOPY, "the passive needs a full copy");
        if (send_basecopy(session, &start) != 0) {
            return -1;
        }
        session->confirm_sent = start.txid;
    }
    session->next_send = start.txid + 1;
    set_link_state(session, REPL_STATE_CATCHUP, "streaming what the passive misses");
    (void)pthread_mutex_lock(&repl->mutex);
    repl->peer_acked = start;
    maybe_in_sync(session);
    (void)pthread_mutex_unlock(&repl->mutex);
    return 0;
}

/* ---- streaming ------------------------------------------------------------------------------ */

typedef enum stream_work {
    WORK_NONE,
    WORK_LOGGED,
    WORK_CONFIRM,
    WORK_HANDOVER
} stream_work;

/* Holds repl->mutex. Picks the most urgent thing to send. A confirmation waits until it is due
 * (see "confirming" above): a TX may carry it first. */
static stream_work pick_work(repl_session *session, kt_repl_position *confirm)
{
    kt_repl *repl = session->repl;
    kt_repl_position tip = repl_spool_tip(repl->spool);
    repl_inflight *inflight = &repl->inflight;
    if (session->next_send <= tip.txid) {
        return WORK_LOGGED;
    }
    bool waits = session->confirm_due_ms != 0 && repl_now_ms() < session->confirm_due_ms;
    if (session->confirm_sent < tip.txid && !waits) {
        *confirm = tip;
        return WORK_CONFIRM;
    }
    if (!waits) {
        session->confirm_due_ms = 0; /* carried by a TX, or nothing committed (yet) */
    }
    if (repl->handover_wanted && !repl->handover_sent && !inflight->active &&
        repl->peer_acked.txid == tip.txid) { /* switchover: the passive holds everything */
        *confirm = tip;
        return WORK_HANDOVER;
    }
    return WORK_NONE;
}

/* A TX of `length` bytes was just sent (send_lock held): the passive may now be silent while it
 * reads, writes and fsyncs it. Allowances of TX messages sent back to back add up. */
static void allow_quiet(repl_session *session, size_t length)
{
    int64_t now = repl_now_ms();
    int64_t left = session->quiet_allowance_ms > 0
                       ? session->quiet_since_ms + session->quiet_allowance_ms - now
                       : 0;
    int64_t allowance = (left > 0 ? left : 0) + repl_transfer_allowance_ms(length);
    session->quiet_allowance_ms = allowance > 3600000 ? 3600000 : (int)allowance;
    session->quiet_since_ms = now;
}

/* Holds repl->mutex, the link current (syncrep.c checked it). The committing thread writes its
 * transaction to the passive itself instead of handing it to the session thread: that hand-off
 * was one thread wake-up on every commit's path (commit_bench: 20 us with 1 writer, 120 us with 8
 * writers competing for the 2 cores). repl->mutex is released during the send (socket operations
 * never hold it) and held again on return. On a failure the link is reset: the transaction may
 * have reached the passive, and the next handshake settles it. */
int repl_walsender_send_inflight(kt_repl *repl, const unsigned char *message, size_t length)
{
    repl_session *session = repl->link;
    uint64_t generation = repl->link_generation;
    repl->inflight.maybe_sent = true; /* from here on the passive may have it */
    if (session->confirm_sent + 1 < repl->inflight.txid) {
        session->confirm_sent = repl->inflight.txid - 1; /* this TX confirms its predecessor */
    }
    (void)pthread_mutex_lock(&session->send_lock);
    (void)pthread_mutex_unlock(&repl->mutex);
    int result = -1;
    if (session->channel != NULL) {
        /* Counted as sent before it is: the session thread may read the passive's ACK before
         * this thread returns from the send, and checks it against next_send. A failed send
         * resets the link, so the count does not outlive it. */
        session->next_send++;
        allow_quiet(session, length);
        if (repl_failpoint_fires(REPL_FP_ACTIVE_MID_SEND)) {
            (void)repl_channel_send_torn(session->channel, REPL_MSG_TX, message, length,
                                         repl->peer_timeout_ms);
            repl_failpoint_kill(REPL_FP_ACTIVE_MID_SEND);
        }
        result = repl_channel_send(session->channel, REPL_MSG_TX, message, length,
                                   repl->peer_timeout_ms);
        if (result != 0) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                     repl_channel_error(session->channel));
        }
    }
    (void)pthread_mutex_unlock(&session->send_lock);
    (void)pthread_mutex_lock(&repl->mutex);
    if (result != 0 && repl->link == session && repl->link_generation == generation) {
        repl->link_generation = 0; /* the session notices and closes */
        repl_walsender_wake(repl);
    }
    return result;
}

static int send_logged(repl_session *session)
{
    kt_repl *repl = session->repl;
    repl_msg_tx tx = {true, {0}};
    if (repl_spool_read(repl->spool, session->next_send, &tx.entry) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: transaction %llu is no longer in the log; the passive will need "
                 "a full copy",
                 (unsigned long long)session->next_send);
        return -1;
    }
    repl_buffer message = {0};
    repl_encode_tx(&message, &tx);
    int result = send_message(session, REPL_MSG_TX, &message);
    (void)pthread_mutex_lock(&session->send_lock);
    allow_quiet(session, message.length);
    (void)pthread_mutex_unlock(&session->send_lock);
    repl_buffer_free(&message);
    repl_entry_free(&tx.entry);
    if (result == 0) {
        (void)pthread_mutex_lock(&repl->mutex);
        session->confirm_sent = session->next_send; /* sent as committed */
        (void)pthread_mutex_unlock(&repl->mutex);
        session->next_send++;
    }
    return result;
}

static int send_position(repl_session *session, uint8_t type, const kt_repl_position *position)
{
    repl_msg_ack ack = {*position, 0};
    repl_buffer message = {0};
    repl_encode_ack(&message, &ack);
    int result = send_message(session, type, &message);
    repl_buffer_free(&message);
    return result;
}

static int do_work(repl_session *session, stream_work work, const kt_repl_position *confirm)
{
    int result = 0;
    switch (work) {
    case WORK_LOGGED:
        result = send_logged(session);
        break;
    case WORK_CONFIRM:
        if (repl_failpoint_fires(REPL_FP_ACTIVE_BEFORE_CONFIRM)) {
            repl_sleep_ms(100); /* lets the committing thread answer its client first */
            repl_failpoint_kill(REPL_FP_ACTIVE_BEFORE_CONFIRM);
        }
        result = send_position(session, REPL_MSG_CONFIRM, confirm);
        if (result == 0) {
            (void)pthread_mutex_lock(&session->repl->mutex);
            if (session->confirm_sent < confirm->txid) {
                session->confirm_sent = confirm->txid;
            }
            (void)pthread_mutex_unlock(&session->repl->mutex);
            session->confirm_due_ms = 0;
        }
        break;
    case WORK_HANDOVER:
        result = send_position(session, REPL_MSG_HANDOVER, confirm);
        if (result == 0) {
            (void)pthread_mutex_lock(&session->repl->mutex);
            session->repl->handover_sent = true;
            (void)pthread_mutex_unlock(&session->repl->mutex);
        }
        break;
    case WORK_NONE:
        break;
    }
    return result;
}

static int handle_ack(repl_session *session, const unsigned char *payload, size_t length)
{
    kt_repl *repl = session->repl;
    repl_msg_ack ack;
    if (repl_decode_ack(payload, length, &ack) != 0 || ack.position.txid >= session->next_send) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: %s acknowledged something never sent", session->peer);
        return -1;
    }
    (void)pthread_mutex_lock(&session->send_lock);
    if (ack.position.txid + 1 >= session->next_send) {
        session->quiet_allowance_ms = 0; /* every TX sent is answered */
    }
    (void)pthread_mutex_unlock(&session->send_lock);
    (void)pthread_mutex_lock(&repl->mutex);
    if (ack.position.txid >= repl->peer_acked.txid) {
        repl->peer_acked = ack.position;
    }
    repl_syncrep_acknowledged(repl, &ack.position);
    if (repl->synchronous) {
        session->confirm_due_ms = repl_now_ms() + CONFIRM_DELAY_MS;
    }
    maybe_in_sync(session);
    (void)pthread_cond_broadcast(&repl->changed);
    (void)pthread_mutex_unlock(&repl->mutex);
    return 0;
}

static int handle_message(repl_session *session, uint8_t type, const unsigned char *payload,
                          size_t length)
{
    kt_repl *repl = session->repl;
    session->last_heard_ms = repl_now_ms();
    if (type == REPL_MSG_NACK) {
        (void)pthread_mutex_lock(&session->send_lock);
        session->quiet_allowance_ms = 0;
        (void)pthread_mutex_unlock(&session->send_lock);
    }
    if (type == REPL_MSG_ACK) {
        return handle_ack(session, payload, length);
    }
    if (type == REPL_MSG_HEARTBEAT) {
        repl_msg_ack heartbeat;
        if (repl_decode_ack(payload, length, &heartbeat) != 0) {
            return -1;
        }
        (void)pthread_mutex_lock(&repl->mutex);
        repl->peer_applied = heartbeat.applied_txid;
        (void)pthread_mutex_unlock(&repl->mutex);
        return 0;
    }
    if (type == REPL_MSG_NACK) {
        repl_msg_nack nack;
        if (repl_decode_nack(payload, length, &nack) != 0) {
            return -1;
        }
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: the passive refused transaction %llu (reason %u)",
                 (unsigned long long)nack.txid, nack.reason);
        (void)pthread_mutex_lock(&repl->mutex);
        repl_syncrep_refused(repl, nack.txid, nack.reason);
        (void)pthread_mutex_unlock(&repl->mutex);
        return -1;
    }
    repl_log(&repl->logger, KT_REPL_LOG_WARNING,
             "replication: %s sent unexpected message type %u", session->peer, type);
    return -1;
}

static void drain(int fd)
{
    char bytes[64];
    while (read(fd, bytes, sizeof bytes) > 0) {
    }
}

/* Waits for a message or a wake-up (at most wait_ms) and handles what came. */
static int wait_and_receive(repl_session *session, int wait_ms)
{
    struct pollfd polls[2] = {{repl_channel_fd(session->channel), POLLIN, 0},
                              {session->wake[0], POLLIN, 0}};
    int ready = poll(polls, 2, wait_ms);
    if (ready < 0) {
        return errno == EINTR ? 0 : -1;
    }
    if (polls[1].revents & POLLIN) {
        drain(session->wake[0]);
    }
    if (polls[0].revents == 0) {
        return 0;
    }
    uint8_t type = 0;
    unsigned char *payload = NULL;
    size_t length = 0;
    int got = repl_channel_receive(session->channel, &type, &payload, &length, 0,
                                   session->repl->peer_timeout_ms);
    if (got < 0) {
        repl_log(&session->repl->logger, KT_REPL_LOG_WARNING, "replication: %s",
                 repl_channel_error(session->channel));
        return -1;
    }
    int result = got == 1 ? handle_message(session, type, payload, length) : 0;
    free(payload);
    return result;
}

static int heartbeat_if_due(repl_session *session)
{
    int64_t now = repl_now_ms();
    if (now - session->last_heartbeat_ms < session->repl->heartbeat_ms) {
        return 0;
    }
    session->last_heartbeat_ms = now;
    kt_repl_position tip = repl_spool_tip(session->repl->spool);
    return send_position(session, REPL_MSG_HEARTBEAT, &tip);
}

/* Silent for longer than peer_timeout, or, while a TX waits for its answer, than peer_timeout
 * after the allowance for that TX ran out. */
static bool passive_silent(repl_session *session)
{
    int64_t now = repl_now_ms();
    int timeout = session->repl->peer_timeout_ms;
    if (now - session->last_heard_ms <= timeout) {
        return false;
    }
    (void)pthread_mutex_lock(&session->send_lock);
    bool silent = session->quiet_allowance_ms == 0 ||
                  now - session->quiet_since_ms > timeout + session->quiet_allowance_ms;
    (void)pthread_mutex_unlock(&session->send_lock);
    return silent;
}

static const char *stream(repl_session *session)
{
    kt_repl *repl = session->repl;
    session->last_heard_ms = repl_now_ms();
    for (;;) {
        kt_repl_position confirm;
        (void)pthread_mutex_lock(&repl->mutex);
        bool current = is_link(session);
        stream_work work = current ? pick_work(session, &confirm) : WORK_NONE;
        (void)pthread_mutex_unlock(&repl->mutex);
        if (!current) {
            return "the link was reset";
        }
        if (do_work(session, work, &confirm) != 0 ||
            heartbeat_if_due(session) != 0) {
            return "sending to the passive failed";
        }
        int64_t now = repl_now_ms();
        int wait_ms = work != WORK_NONE ? 0
                                        : (int)(repl->heartbeat_ms - (now - session->last_heartbeat_ms));
        if (work == WORK_NONE && session->confirm_due_ms != 0 &&
            session->confirm_due_ms - now < wait_ms) {
            wait_ms = (int)(session->confirm_due_ms - now);
        }
        if (wait_and_receive(session, wait_ms > 0 ? wait_ms : 0) != 0) {
            return "the connection to the passive failed";
        }
        if (passive_silent(session)) {
            repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                     "replication: the passive %s has been silent for %d ms; dropping it",
                     session->peer, repl->peer_timeout_ms);
            return "the passive stopped answering";
        }
    }
}

/* ---- sessions ------------------------------------------------------------------------------- */

static void serve_stream(repl_session *session)
{
    if (!become_link(session)) {
        return;
    }
    const char *why = "the handshake failed";
    if (handshake(session) == 0) {
        why = stream(session);
    }
    leave_link(session, why);
}

static void serve_basecopy(repl_session *session)
{
    kt_repl_position position;
    repl_log(&session->repl->logger, KT_REPL_LOG_INFO, "replication: sending a base copy to %s",
             session->peer);
    (void)send_basecopy(session, &position);
}

/* A promoted node presents its epoch (kt_repl_fence_peer): one POSITION, one DECISION. Only the
 * epochs are compared: a fence connection never becomes the link, never settles a pending
 * transaction, never changes anything on a node of the same or a newer epoch. */
static void serve_fence(repl_session *session)
{
    kt_repl *repl = session->repl;
    unsigned char *payload = NULL;
    size_t length = 0;
    repl_msg_position position;
    if (receive_expected(session, REPL_MSG_POSITION, &payload, &length, HANDSHAKE_TIMEOUT_MS) != 0) {
        return;
    }
    int decoded = repl_decode_position_msg(payload, length, &position);
    free(payload);
    if (decoded != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: a malformed epoch from %s",
                 session->peer);
        return;
    }
    repl_msg_decision decision;
    memset(&decision, 0, sizeof decision);
    (void)pthread_mutex_lock(&repl->mutex);
    decision.epoch = repl->epoch;
    if (position.epoch > repl->epoch && repl->state != REPL_STATE_FENCED) {
        char why[160];
        (void)snprintf(why, sizeof why, "%s was promoted under epoch %llu", session->peer,
                       (unsigned long long)position.epoch);
        repl_set_state(repl, REPL_STATE_FENCED, why);
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    decision.active_tip = repl_spool_tip(repl->spool);
    refuse(&decision, position.epoch > decision.epoch ? "fenced: a node with a newer epoch exists"
                                                       : "this active's epoch is not older");
    repl_buffer message = {0};
    repl_encode_decision(&message, &decision);
    (void)send_message(session, REPL_MSG_DECISION, &message);
    repl_buffer_free(&message);
}

static void *session_main(void *argument)
{
    repl_session *session = argument;
    kt_repl *repl = session->repl;
    char error[256];
    uint8_t purpose = 0;
    repl_channel *channel = NULL;
    if (repl_channel_accept(&channel, session->fd, session->peer, repl->pair_key, &purpose,
                            HANDSHAKE_TIMEOUT_MS, error, sizeof error) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: %s", error);
        (void)pthread_mutex_lock(&repl->mutex);
        (void)close(session->fd); /* under the mutex: stop may be shutting it down */
        session->fd = -1;
        session->done = true;
        (void)pthread_mutex_unlock(&repl->mutex);
        return NULL;
    }
    session->channel = channel;
    if (purpose == REPL_PURPOSE_BASECOPY) {
        serve_basecopy(session);
    } else if (purpose == REPL_PURPOSE_FENCE) {
        serve_fence(session);
    } else {
        serve_stream(session);
    }
    (void)pthread_mutex_lock(&repl->mutex);
    (void)pthread_mutex_lock(&session->send_lock); /* a committing thread may still be sending */
    repl_channel_close(session->channel);
    session->channel = NULL;
    session->fd = -1;
    session->done = true;
    (void)pthread_mutex_unlock(&session->send_lock);
    (void)pthread_mutex_unlock(&repl->mutex);
    return NULL;
}

static void session_free(repl_session *session)
{
    if (session->send_lock_ready) {
        (void)pthread_mutex_destroy(&session->send_lock);
    }
    if (session->wake[0] >= 0) {
        (void)close(session->wake[0]);
    }
    if (session->wake[1] >= 0) {
        (void)close(session->wake[1]);
    }
    free(session);
}

/* Joins and frees finished sessions (all of them when `all`). Must not hold repl->mutex. */
static void reap_sessions(kt_repl *repl, bool all)
{
    repl_session *finished = NULL;
    (void)pthread_mutex_lock(&repl->mutex);
    repl_session **link = &repl->sessions;
    while (*link != NULL) {
        repl_session *session = *link;
        if (all || session->done) {
            *link = session->next;
            session->next = finished;
            finished = session;
        } else {
            link = &session->next;
        }
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    while (finished != NULL) {
        repl_session *next = finished->next;
        (void)pthread_join(finished->thread, NULL);
        session_free(finished);
        finished = next;
    }
}

static void peer_name(const struct sockaddr_storage *address, socklen_t size, char *out,
                      size_t out_size)
{
    char host[48], port[8];
    if (getnameinfo((const struct sockaddr *)address, size, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        (void)snprintf(out, out_size, "unknown peer");
        return;
    }
    (void)snprintf(out, out_size, "%s:%s", host, port);
}

static size_t session_count(const kt_repl *repl)
{
    size_t count = 0;
    for (const repl_session *session = repl->sessions; session; session = session->next) {
        count++;
    }
    return count;
}

static void accept_one(kt_repl *repl)
{
    struct sockaddr_storage address;
    socklen_t size = sizeof address;
    int fd = accept4(repl->listen_fd, (struct sockaddr *)&address, &size, SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    repl_session *session = calloc(1, sizeof *session);
    if (session == NULL) {
        (void)close(fd);
        return;
    }
    session->repl = repl;
    session->fd = fd;
    session->wake[0] = session->wake[1] = -1;
    session->send_lock_ready = pthread_mutex_init(&session->send_lock, NULL) == 0;
    peer_name(&address, size, session->peer, sizeof session->peer);
    (void)pthread_mutex_lock(&repl->mutex);
    bool ok = session->send_lock_ready && !repl->stopping && session_count(repl) < MAX_SESSIONS &&
              pipe2(session->wake, O_NONBLOCK | O_CLOEXEC) == 0 &&
              pthread_create(&session->thread, NULL, session_main, session) == 0;
    if (ok) {
        session->next = repl->sessions;
        repl->sessions = session;
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    if (!ok) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: turned away a connection from %s (busy or stopping)",
                 session->peer);
        (void)close(fd);
        session_free(session);
    }
}

static void *listener_main(void *argument)
{
    kt_repl *repl = argument;
    for (;;) {
        struct pollfd polls[2] = {{repl->listen_fd, POLLIN, 0}, {repl->wake_pipe[0], POLLIN, 0}};
        int ready = poll(polls, 2, 1000);
        reap_sessions(repl, false);
        (void)pthread_mutex_lock(&repl->mutex);
        bool stopping = repl->stopping;
        (void)pthread_mutex_unlock(&repl->mutex);
        if (stopping) {
            return NULL;
        }
        if (ready > 0 && (polls[0].revents & POLLIN)) {
            accept_one(repl);
        }
        repl_syncrep_compact(repl); /* here rather than in a commit: see spool.c */
    }
}

int repl_walsender_start(kt_repl *repl, char *error, size_t error_size)
{
    if (repl_listen(&repl->listen_fd, repl->listen_host, repl->listen_port, error, error_size) !=
        0) {
        return -1;
    }
    if (pipe2(repl->wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        repl_error(error, error_size, "cannot create a pipe: %m");
        return -1;
    }
    if (pthread_create(&repl->listener, NULL, listener_main, repl) != 0) {
        repl_error(error, error_size, "cannot start the replication listener thread");
        return -1;
    }
    repl->listener_started = true;
    repl_log(&repl->logger, KT_REPL_LOG_INFO,
             "replication: active listening on %s:%s", repl->listen_host ? repl->listen_host : "*",
             repl->listen_port);
    return 0;
}

void repl_walsender_stop(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    repl->stopping = true;
    for (repl_session *session = repl->sessions; session; session = session->next) {
        if (session->fd >= 0) {
            (void)shutdown(session->fd, SHUT_RDWR);
        }
        if (session->wake[1] >= 0) {
            char byte = 1;
            (void)!write(session->wake[1], &byte, 1);
        }
    }
    (void)pthread_cond_broadcast(&repl->changed);
    (void)pthread_mutex_unlock(&repl->mutex);
    if (repl->listener_started) {
        char byte = 1;
        (void)!write(repl->wake_pipe[1], &byte, 1);
        (void)pthread_join(repl->listener, NULL);
        repl->listener_started = false;
    }
    reap_sessions(repl, true);
    if (repl->listen_fd >= 0) {
        (void)close(repl->listen_fd);
        repl->listen_fd = -1;
    }
}
