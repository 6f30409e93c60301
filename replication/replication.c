/*
 * replication.c — a node's life: kt_repl_start and kt_repl_stop, the status `ktadmin status`
 * shows, and the commit-failure classifier storage/ calls.
 *
 * Starting an active (or standalone) node
 *   1. the state file gives the epoch (a new node starts at epoch 1 and writes it);
 *   2. the log is opened; a new log gets a genesis: txid 0, a random chain hash (so that no
 *      unrelated database ever shares a position with this one), and as its origin the end of
 *      whatever the -wal already holds (all of that is part of the base content);
 *   3. the -wal is reconciled with the log (vfs_capture.c) — before any connection opens the
 *      database: committed transactions the log lost are added to it, a transaction that was in
 *      flight stays invisible until the passive settles it;
 *   4. the capture VFS is registered; an active starts listening.
 * Failpoints (failpoint.c) are read from the environment by the first kt_repl_start.
 * Stopping syncs an active's log, which synchronous commits append to without a sync.
 * Starting a passive
 *   The state file gives the epoch and the applied position, the spool what was received. The
 *   node asks the active for a full copy when any of them is missing or they disagree, or a copy
 *   was being installed when it stopped. Otherwise confirmed entries not applied yet are applied
 *   before kt_repl_start returns; then the applier and the receiver threads start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replication/internal.h"

#define DEFAULT_HEARTBEAT_MS 200
#define DEFAULT_RETAIN_BYTES (64ull * 1024 * 1024)

const char *kt_repl_role_name(kt_repl_role role)
{
    switch (role) {
    case KT_REPL_STANDALONE: return "standalone";
    case KT_REPL_ACTIVE: return "active";
    case KT_REPL_PASSIVE: return "passive";
    }
    return "unknown";
}

/* ---- configuration -------------------------------------------------------------------------- */

static int check_config(const kt_repl_config *config, char *error, size_t error_size)
{
    if (config->database_path == NULL || config->state_directory == NULL) {
        repl_error(error, error_size, "replication needs the database path and a state directory");
        return -1;
    }
    if (config->role == KT_REPL_STANDALONE) {
        return 0;
    }
    if (config->pair_key == NULL || config->pair_key->length != KT_REPL_PAIR_KEY_BYTES) {
        repl_error(error, error_size, "replication needs the %u-byte pair key",
                   KT_REPL_PAIR_KEY_BYTES);
        return -1;
    }
    if (config->role == KT_REPL_PASSIVE && config->master_host == NULL) {
        repl_error(error, error_size, "a passive needs the active's address (master)");
        return -1;
    }
    return 0;
}

static char *with_suffix(const char *path, const char *suffix)
{
    size_t size = strlen(path) + strlen(suffix) + 1;
    char *joined = malloc(size);
    if (joined != NULL) {
        (void)snprintf(joined, size, "%s%s", path, suffix);
    }
    return joined;
}

static int copy_config(kt_repl *repl, const kt_repl_config *config)
{
    repl->role = config->role;
    repl->database_path = repl_string_copy(config->database_path);
    repl->state_directory = repl_string_copy(config->state_directory);
    repl->wal_path = with_suffix(config->database_path, "-wal");
    repl->spool_path = repl_path_join(config->state_directory, "keytrustee-repl.log");
    repl->state_path = repl_path_join(config->state_directory, "keytrustee-repl.state");
    repl->listen_host = repl_string_copy(config->listen_host ? config->listen_host : "0.0.0.0");
    repl->listen_port = repl_string_copy(config->listen_port ? config->listen_port
                                                             : KT_REPL_DEFAULT_PORT);
    repl->master_host = repl_string_copy(config->master_host);
    repl->master_port = repl_string_copy(config->master_port ? config->master_port
                                                             : KT_REPL_DEFAULT_PORT);
    if (config->pair_key != NULL) {
        repl->pair_key = kt_secret_from(config->pair_key->bytes, config->pair_key->length);
    }
    repl->logger.function = config->log;
    repl->logger.context = config->log_context;
    repl->ack_timeout_ms = config->ack_timeout_ms > 0 ? config->ack_timeout_ms
                                                       : KT_REPL_DEFAULT_ACK_TIMEOUT_MS;
    repl->heartbeat_ms = config->heartbeat_ms > 0 ? config->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
    repl->peer_timeout_ms = repl->heartbeat_ms * 9 / 2;
    repl->retain_bytes = config->retain_bytes ? config->retain_bytes : DEFAULT_RETAIN_BYTES;
    repl->synchronous = config->role == KT_REPL_ACTIVE && config->synchronous;
    repl->listen_fd = -1;
    repl->wake_pipe[0] = repl->wake_pipe[1] = -1;
    bool missing = !repl->database_path || !repl->state_directory || !repl->wal_path ||
                   !repl->spool_path || !repl->state_path || !repl->listen_host ||
                   !repl->listen_port || !repl->master_port ||
                   (config->master_host && !repl->master_host) ||
                   (config->pair_key && !repl->pair_key);
    return missing ? -1 : 0;
}

static void free_node(kt_repl *repl)
{
    repl_apply_close(repl->apply);
    repl_spool_close(repl->spool);
    free(repl->capture); /* only a reconciliation placeholder can be left here */
    kt_secret_free(repl->pair_key);
    free(repl->database_path);
    free(repl->state_directory);
    free(repl->wal_path);
    free(repl->spool_path);
    free(repl->state_path);
    free(repl->listen_host);
    free(repl->listen_port);
    free(repl->master_host);
    free(repl->master_port);
    for (int index = 0; index < 2; index++) {
        if (repl->wake_pipe[index] >= 0) {
            (void)close(repl->wake_pipe[index]);
        }
    }
    (void)pthread_mutex_destroy(&repl->mutex);
    (void)pthread_mutex_destroy(&repl->apply_mutex);
    (void)pthread_cond_destroy(&repl->changed);
    (void)pthread_cond_destroy(&repl->apply_wanted);
    free(repl);
}

/* ---- active and standalone ------------------------------------------------------------------ */

static int load_epoch(kt_repl *repl, char *error, size_t error_size)
{
    repl_state_file state;
    int loaded = repl_state_load(repl->state_path, &state, error, error_size);
    if (loaded < 0) {
        return -1;
    }
    if (loaded == 1) {
        repl->epoch = state.epoch;
        return 0;
    }
    memset(&state, 0, sizeof state);
    state.epoch = 1;
    repl->epoch = 1;
    return repl_state_save(repl->state_path, &state, error, error_size);
}

static int open_log(kt_repl *repl, char *error, size_t error_size)
{
    kt_repl_position genesis = {repl->epoch, 0, {0}};
    kt_random(genesis.hash, sizeof genesis.hash);
    repl_wal_cursor origin;
    unsigned commits = 0;
    if (repl_wal_committed_end(repl->wal_path, &origin, &commits) != 0) {
        repl_error(error, error_size, "cannot read %s: %m", repl->wal_path);
        return -1;
    }
    if (repl_spool_open(&repl->spool, repl->spool_path, &genesis, &origin, &repl->logger, error,
                        error_size) != 0) {
        return -1;
    }
    repl_spool_set_failpoints(repl->spool, REPL_FP_ACTIVE_MID_LOG_RECORD, REPL_FAILPOINT_COUNT);
    return 0;
}

static int start_capturing(kt_repl *repl, char *error, size_t error_size)
{
    if (load_epoch(repl, error, error_size) != 0 || open_log(repl, error, error_size) != 0 ||
        repl_capture_reconcile(repl, error, error_size) != 0 ||
        repl_capture_register(repl, error, error_size) != 0) {
        return -1;
    }
    kt_repl_position tip = repl_spool_tip(repl->spool);
    repl->state = repl->role == KT_REPL_ACTIVE ? REPL_STATE_WAITING : REPL_STATE_STANDALONE;
    repl_log(&repl->logger, KT_REPL_LOG_INFO,
             "replication: %s at epoch %llu, transaction %llu%s", kt_repl_role_name(repl->role),
             (unsigned long long)repl->epoch, (unsigned long long)tip.txid,
             repl->synchronous ? ", synchronous" : "");
    if (repl->role == KT_REPL_ACTIVE) {
        return repl_walsender_start(repl, error, error_size);
    }
    return 0;
}

/* ---- passive -------------------------------------------------------------------------------- */

/* Whether the state file, the spool and the database make a usable whole. */
static bool passive_consistent(kt_repl *repl, const repl_state_file *state, bool spool_existed)
{
    kt_repl_position at;
    if (!spool_existed || state->basecopy_pending || repl->apply == NULL) {
        return false;
    }
    return repl_spool_position_at(repl->spool, state->applied.txid, &at) &&
           repl_position_same(&at, &state->applied);
}

static int start_following(kt_repl *repl, char *error, size_t error_size)
{
    repl_state_file state;
    memset(&state, 0, sizeof state);
    int loaded = repl_state_load(repl->state_path, &state, error, error_size);
    if (loaded < 0) {
        return -1;
    }
    bool spool_existed = access(repl->spool_path, F_OK) == 0;
    kt_repl_position nothing = {0, 0, {0}};
    if (repl_spool_open(&repl->spool, repl->spool_path, &nothing, NULL, &repl->logger, error,
                        error_size) != 0) {
        return -1;
    }
    repl_spool_set_failpoints(repl->spool, REPL_FP_PASSIVE_MID_SPOOL_RECORD,
                              REPL_FP_PASSIVE_BEFORE_SPOOL_SYNC);
    if (access(repl->database_path, F_OK) == 0) {
        char reason[256];
        if (repl_apply_open(&repl->apply, repl->database_path, &repl->logger, reason,
                            sizeof reason) != 0) {
            repl_log(&repl->logger, KT_REPL_LOG_ERROR, "replication: %s", reason);
        }
    }
    kt_repl_position noted = repl_spool_applied(repl->spool);
    if (noted.txid > state.applied.txid) {
        state.applied = noted; /* the spool's APPLIED records run ahead of the state file */
    }
    repl->epoch = state.epoch;
    repl->applied = state.applied;
    repl->needs_basecopy = loaded != 1 || !passive_consistent(repl, &state, spool_existed);
    repl->state = REPL_STATE_CONNECTING;
    repl_log(&repl->logger, KT_REPL_LOG_INFO,
             "replication: passive at epoch %llu, applied %llu, spooled %llu%s",
             (unsigned long long)repl->epoch, (unsigned long long)repl->applied.txid,
             (unsigned long long)repl_spool_tip(repl->spool).txid,
             repl->needs_basecopy ? "; will ask the active for a full copy" : "");
    if (repl_applier_catch_up(repl) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: could not apply every confirmed transaction at start");
    }
    if (repl_applier_start(repl, error, error_size) != 0) {
        return -1;
    }
    return repl_walreceiver_start(repl, error, error_size);
}

/* ---- the contract --------------------------------------------------------------------------- */

int kt_repl_start(kt_repl **out, const kt_repl_config *config, char *error, size_t error_size)
{
    *out = NULL;
    if (check_config(config, error, error_size) != 0 ||
        repl_failpoint_setup(error, error_size) != 0) {
        return -1;
    }
    if (kt_crypto_init() != 0) {
        repl_error(error, error_size, "cannot initialize libsodium");
        return -1;
    }
    kt_repl *repl = calloc(1, sizeof *repl);
    if (repl == NULL) {
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    if (pthread_mutex_init(&repl->mutex, NULL) != 0 ||
        pthread_mutex_init(&repl->apply_mutex, NULL) != 0 ||
        repl_condition_init(&repl->changed) != 0 ||
        repl_condition_init(&repl->apply_wanted) != 0) {
        free(repl);
        repl_error(error, error_size, "cannot create replication locks");
        return -1;
    }
    if (copy_config(repl, config) != 0) {
        free_node(repl);
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    int result = repl->role == KT_REPL_PASSIVE ? start_following(repl, error, error_size)
                                               : start_capturing(repl, error, error_size);
    if (result != 0) {
        kt_repl_stop(repl);
        return -1;
    }
    *out = repl;
    return 0;
}

void kt_repl_stop(kt_repl *repl)
{
    if (repl == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&repl->mutex);
    repl->stopping = true;
    repl_set_state(repl, REPL_STATE_STOPPED, "stopping");
    (void)pthread_mutex_unlock(&repl->mutex);
    repl_walsender_stop(repl);
    repl_walreceiver_stop(repl);
    repl_applier_stop(repl);
    if (repl->role != KT_REPL_PASSIVE && repl->spool != NULL && repl_spool_sync(repl->spool) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: cannot sync the log: %m");
    }
    if (repl->apply != NULL) {
        /* Leave the passive's -wal empty when no reader holds it: the next start (in any role)
         * then finds every applied transaction in the database file. */
        (void)repl_apply_checkpoint(repl->apply, 0);
    }
    repl_capture_unregister(repl);
    free_node(repl);
}

const char *kt_repl_vfs_name(const kt_repl *repl)
{
    return repl->role == KT_REPL_PASSIVE ? NULL : repl_capture_vfs_name(repl->capture);
}

void kt_repl_set_synchronous(kt_repl *repl, bool synchronous)
{
    (void)pthread_mutex_lock(&repl->mutex);
    if (repl->role == KT_REPL_ACTIVE && repl->synchronous != synchronous) {
        repl->synchronous = synchronous;
        repl_log(&repl->logger, KT_REPL_LOG_INFO, "replication: synchronous commits %s",
                 synchronous ? "on" : "off");
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    if (!synchronous && repl->role == KT_REPL_ACTIVE) {
        /* asynchronous: this node's -wal is authoritative, no passive needs asking */
        (void)repl_capture_settle_pending(repl, NULL);
    }
}

kt_store_status kt_repl_commit_failure(void *context, int sqlite_code)
{
    kt_repl *repl = context;
    (void)pthread_mutex_lock(&repl->mutex);
    kt_store_status status;
    if (repl->have_outcome) {
        status = repl->outcome;
        repl->have_outcome = false;
    } else {
        status = (sqlite_code & 0xff) == SQLITE_FULL ? KT_STORE_FULL : KT_STORE_ERROR;
    }
    (void)pthread_mutex_unlock(&repl->mutex);
    return status;
}

/* ---- status --------------------------------------------------------------------------------- */

static int64_t age_of(kt_repl *repl, uint64_t txid)
{
    int64_t appended = repl_spool_entry_time(repl->spool, txid);
    return appended ? repl_now_ms() - appended : 0;
}

static void active_status(kt_repl *repl, kt_repl_status *status)
{
    kt_repl_position tip = repl_spool_tip(repl->spool);
    status->position = tip;
    status->spooled_txid = tip.txid;
    if (repl->role == KT_REPL_STANDALONE) {
        return;
    }
    status->peer_position = repl->peer_acked;
    status->peer_connected = repl->link != NULL;
    if (tip.txid > repl->peer_acked.txid) {
        status->lag_transactions = tip.txid - repl->peer_acked.txid;
        status->lag_ms = age_of(repl, repl->peer_acked.txid + 1);
    }
}

static void passive_status(kt_repl *repl, kt_repl_status *status)
{
    status->position = repl->applied;
    status->peer_position = repl->active_tip;
    status->spooled_txid = repl_spool_tip(repl->spool).txid;
    status->peer_connected = repl->receiver_channel != NULL;
    if (repl->active_tip.txid > repl->applied.txid) {
        status->lag_transactions = repl->active_tip.txid - repl->applied.txid;
        status->lag_ms = age_of(repl, repl->applied.txid + 1);
    }
}

void kt_repl_get_status(kt_repl *repl, kt_repl_status *status)
{
    memset(status, 0, sizeof *status);
    (void)pthread_mutex_lock(&repl->mutex);
    status->role = repl->role;
    status->state = repl_state_name(repl->state);
    status->epoch = repl->epoch;
    status->synchronous = repl->synchronous;
    status->handover_requested = repl->handover_received;
    (void)snprintf(status->peer_address, sizeof status->peer_address, "%s", repl->peer_address);
    if (repl->role == KT_REPL_PASSIVE) {
        passive_status(repl, status);
    } else {
        active_status(repl, status);
    }
    status->writable = repl_syncrep_writable(repl, status->reason, sizeof status->reason);
    (void)pthread_mutex_unlock(&repl->mutex);
}
