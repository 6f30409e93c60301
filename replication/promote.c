/*
 * promote.c — a passive becomes the active under a new epoch (kt_repl_promote), and an active of
 * an older epoch that comes back is told so (kt_repl_fence_peer).
 *
 * Promotion runs on a stopped node (no kt_repl, no connection to the database): keytrustee-db calls
 * it between stopping its passive and starting its active. Steps, each one durable before the next:
 *   1. the state file and the spool are opened; a passive that never finished its first copy, or
 *      whose state and spool disagree, is refused (it does not hold a usable history);
 *   2. EVERY entry of the spool not applied yet is applied to the database, the unconfirmed ones
 *      included. Why keep them: the active answers a client once the passive has acknowledged a
 *      transaction (spooled and fsynced), before its CONFIRM travels; a spooled but unconfirmed
 *      entry may therefore be a write a client was told is stored. A write the active refused
 *      never reached the spool (a refusal means it was never sent, or the passive NACKed it, or no
 *      passive was in sync), so keeping the spool keeps no refused write. An entry the active
 *      reported as indeterminate (sent, no acknowledgement in time) survives if it was spooled:
 *      indeterminate means either outcome is allowed. The spool's entries form one chain, so what
 *      is kept is a prefix-closed history: the new active continues that chain;
 *   3. the -wal is checkpointed into the database and truncated;
 *   4. the state file is written with epoch = old epoch + 1 and applied = the spool's tip. A crash
 *      here leaves a consistent passive of the new epoch (which no longer follows the old active:
 *      guarantee 5); promoting again is safe;
 *   5. the log is rewritten empty with the tip as its base and the (now empty) -wal's end as its
 *      origin: what an active needs to start (replication.c). The caller then switches its role to
 *      active (keytrustee-db: keytrustee-db.conf) and starts the node as the active.
 *
 * Fencing: an old active that comes back does not know a newer epoch exists until someone tells
 * it. kt_repl_fence_peer connects to it for the purpose "fence" and presents this node's epoch;
 * an older active (walsender.c, serve_fence) enters the state "fenced" and refuses every write
 * from then on. Nothing is sent but the position message, and the peer compares only epochs: a
 * fence connection never replaces its link to a passive nor settles anything, so probing a
 * healthy active of the same or a newer epoch does it no harm.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replication/internal.h"

#define FENCE_CONNECT_TIMEOUT_MS 1000
#define FENCE_ANSWER_TIMEOUT_MS  3000

typedef struct promotion {
    const kt_repl_config *config;
    repl_logger logger;
    char *spool_path;
    char *state_path;
    char *wal_path;
    repl_spool *spool;
    repl_apply *apply;
    repl_state_file state;
} promotion;

static void promotion_close(promotion *run)
{
    repl_apply_close(run->apply);
    repl_spool_close(run->spool);
    free(run->spool_path);
    free(run->state_path);
    free(run->wal_path);
}

static int open_history(promotion *run, char *error, size_t error_size)
{
    int loaded = repl_state_load(run->state_path, &run->state, error, error_size);
    if (loaded < 0) {
        return -1;
    }
    if (loaded == 0 || run->state.basecopy_pending || access(run->spool_path, F_OK) != 0) {
        repl_error(error, error_size,
                   "this node never finished its copy from the active (no usable replication "
                   "state in %s): it cannot be promoted", run->config->state_directory);
        return -1;
    }
    if (repl_spool_open(&run->spool, run->spool_path, NULL, NULL, &run->logger, error,
                        error_size) != 0) {
        return -1;
    }
    kt_repl_position noted = repl_spool_applied(run->spool), at;
    if (noted.txid > run->state.applied.txid) {
        run->state.applied = noted;
    }
    if (!repl_spool_position_at(run->spool, run->state.applied.txid, &at) ||
        !repl_position_same(&at, &run->state.applied)) {
        repl_error(error, error_size,
                   "the replication state and log in %s disagree about what this node applied: "
                   "it cannot be promoted safely", run->config->state_directory);
        return -1;
    }
    return repl_apply_open(&run->apply, run->config->database_path, &run->logger, error,
                           error_size);
}

/* Step 2: every spooled entry after the applied position, one commit each. */
static int apply_spool(promotion *run, kt_repl_promotion *result, char *error, size_t error_size)
{
    kt_repl_position tip = repl_spool_tip(run->spool);
    uint64_t confirmed = repl_spool_confirmed(run->spool);
    for (uint64_t txid = run->state.applied.txid + 1; txid <= tip.txid; txid++) {
        repl_entry entry;
        if (repl_spool_read(run->spool, txid, &entry) != 0) {
            repl_error(error, error_size, "cannot read transaction %llu from %s",
                       (unsigned long long)txid, run->spool_path);
            return -1;
        }
        int applied = repl_apply_entries(run->apply, &entry, 1, error, error_size);
        repl_entry_free(&entry);
        if (applied != 0) {
            return -1;
        }
        result->applied_at_promotion++;
        if (txid > confirmed) {
            result->kept_unconfirmed++;
        }
    }
    if (repl_apply_checkpoint(run->apply, 0) != 0) {
        repl_error(error, error_size, "cannot checkpoint %s after applying the spool",
                   run->config->database_path);
        return -1;
    }
    return 0;
}

/* Steps 4 and 5. */
static int become_active(promotion *run, kt_repl_promotion *result, char *error,
                         size_t error_size)
{
    kt_repl_position tip = repl_spool_tip(run->spool);
    repl_state_file state = {run->state.epoch + 1, tip, false};
    if (repl_state_save(run->state_path, &state, error, error_size) != 0) {
        return -1;
    }
    repl_apply_close(run->apply);
    run->apply = NULL;
    repl_wal_cursor origin;
    unsigned commits = 0;
    if (repl_wal_committed_end(run->wal_path, &origin, &commits) != 0) {
        repl_error(error, error_size, "cannot read %s: %m", run->wal_path);
        return -1;
    }
    if (repl_spool_reset(run->spool, &tip, &origin) != 0) {
        repl_error(error, error_size, "cannot rewrite the replication log %s: %m",
                   run->spool_path);
        return -1;
    }
    result->epoch = state.epoch;
    result->position = tip;
    result->position.epoch = state.epoch;
    return 0;
}

int kt_repl_promote(const kt_repl_config *config, kt_repl_promotion *result, char *error,
                    size_t error_size)
{
    memset(result, 0, sizeof *result);
    if (config->database_path == NULL || config->state_directory == NULL) {
        repl_error(error, error_size, "promotion needs the database path and the state directory");
        return -1;
    }
    promotion run = {.config = config, .logger = {config->log, config->log_context}};
    run.spool_path = repl_path_join(config->state_directory, "keytrustee-repl.log");
    run.state_path = repl_path_join(config->state_directory, "keytrustee-repl.state");
    size_t wal_size = strlen(config->database_path) + sizeof "-wal";
    run.wal_path = malloc(wal_size);
    if (run.spool_path == NULL || run.state_path == NULL || run.wal_path == NULL) {
        promotion_close(&run);
        repl_error(error, error_size, "out of memory promoting this node");
        return -1;
    }
    (void)snprintf(run.wal_path, wal_size, "%s-wal", config->database_path);
    int status = open_history(&run, error, error_size) == 0 &&
                         apply_spool(&run, result, error, error_size) == 0 &&
                         become_active(&run, result, error, error_size) == 0
                     ? 0
                     : -1;
    if (status == 0) {
        repl_log(&run.logger, KT_REPL_LOG_INFO,
                 "replication: promoted to epoch %llu at transaction %llu (%llu applied now, %llu "
                 "of them spooled but not yet confirmed by the old active)",
                 (unsigned long long)result->epoch, (unsigned long long)result->position.txid,
                 (unsigned long long)result->applied_at_promotion,
                 (unsigned long long)result->kept_unconfirmed);
    }
    promotion_close(&run);
    return status;
}

/* ---- switchover ---------------------------------------------------------------------------- */

int kt_repl_hand_over(kt_repl *repl, int timeout_ms, char *error, size_t error_size)
{
    if (repl->role != KT_REPL_ACTIVE) {
        repl_error(error, error_size, "only the active hands over");
        return -1;
    }
    int64_t deadline = repl_now_ms() + timeout_ms;
    (void)pthread_mutex_lock(&repl->mutex);
    repl->handover_wanted = true;
    repl->handover_sent = false;
    repl_walsender_wake(repl);
    while (!repl->handover_sent && repl_now_ms() < deadline) {
        (void)pthread_mutex_unlock(&repl->mutex);
        repl_sleep_ms(10);
        (void)pthread_mutex_lock(&repl->mutex);
    }
    bool sent = repl->handover_sent;
    if (!sent) {
        repl->handover_wanted = false;
        repl_error(error, error_size,
                   "the passive did not acknowledge every transaction within %d ms (replication "
                   "%s): the roles were not changed", timeout_ms, repl_state_name(repl->state));
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    if (sent) {
        repl_log(&repl->logger, KT_REPL_LOG_INFO,
                 "replication: handed over to the passive at transaction %llu",
                 (unsigned long long)repl_spool_tip(repl->spool).txid);
    }
    return sent ? 0 : -1;
}

/* ---- fencing -------------------------------------------------------------------------------- */

/* What a passive of this node's epoch would present: a usable state, the log's tip. */
static void own_position(kt_repl *repl, repl_msg_position *position)
{
    memset(position, 0, sizeof *position);
    (void)pthread_mutex_lock(&repl->mutex);
    position->epoch = repl->epoch;
    (void)pthread_mutex_unlock(&repl->mutex);
    position->has_state = true;
    position->tip = repl_spool_tip(repl->spool);
    position->confirmed = position->tip;
    position->sqlite_version = (uint32_t)sqlite3_libversion_number();
}

int kt_repl_fence_peer(kt_repl *repl, const char *host, const char *port, char *error,
                       size_t error_size)
{
    error[0] = '\0';
    if (repl->role != KT_REPL_ACTIVE || repl->spool == NULL || repl->pair_key == NULL ||
        host == NULL) {
        repl_error(error, error_size, "only a running active with a peer address can fence");
        return -1;
    }
    repl_msg_position position;
    own_position(repl, &position);
    repl_channel *channel = NULL;
    if (port == NULL) {
        port = KT_REPL_DEFAULT_PORT;
    }
    if (repl_channel_connect(&channel, host, port, repl->pair_key,
                             REPL_PURPOSE_FENCE, FENCE_CONNECT_TIMEOUT_MS, error,
                             error_size) != 0) {
        return 0; /* nobody there: nothing to fence */
    }
    repl_buffer message = {0};
    repl_encode_position_msg(&message, &position);
    int result = -1;
    uint8_t type = 0;
    unsigned char *payload = NULL;
    size_t length = 0;
    repl_msg_decision decision;
    if (message.failed ||
        repl_channel_send(channel, REPL_MSG_POSITION, message.data, message.length,
                          FENCE_ANSWER_TIMEOUT_MS) != 0) {
        repl_error(error, error_size, "cannot send this node's epoch to %s: %s",
                   host, repl_channel_error(channel));
    } else {
        int got;
        do {
            free(payload);
            payload = NULL;
            got = repl_channel_receive(channel, &type, &payload, &length, FENCE_ANSWER_TIMEOUT_MS,
                                       FENCE_ANSWER_TIMEOUT_MS);
        } while (got == 1 && type == REPL_MSG_HEARTBEAT);
        if (got != 1 || type != REPL_MSG_DECISION ||
            repl_decode_decision(payload, length, &decision) != 0) {
            repl_error(error, error_size, "%s did not answer this node's epoch",
                       host);
        } else if (decision.epoch < position.epoch && decision.kind == REPL_DECIDE_REFUSE) {
            result = 1;
            repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                     "replication: fenced an active of epoch %llu at %s (this node's epoch is "
                     "%llu): it takes no more writes",
                     (unsigned long long)decision.epoch, host,
                     (unsigned long long)position.epoch);
        } else {
            repl_error(error, error_size,
                       "%s answers as an active of epoch %llu, not older than this node's %llu: "
                       "two nodes claim the active role; stop one of them",
                       host, (unsigned long long)decision.epoch,
                       (unsigned long long)position.epoch);
        }
    }
    free(payload);
    repl_buffer_free(&message);
    repl_channel_close(channel);
    return result;
}
