/*
 * role_change.c — a node changes role: `ktadmin promote` (passive → active under a new epoch) and
 * `ktadmin switchover` (the active hands over to its passive, then follows it).
 *
 * How a role changes. The admin op only checks and records what must happen (service->
 * role_change) and raises SIGUSR1; main then stops everything exactly as at SIGTERM (admin socket,
 * writer, replication: no connection has the database open), calls kt_role_change_perform, and
 * starts everything again from keytrustee-db.conf in the same process (same pid, same instance
 * lock). Restarting rather than switching threads in place keeps replication.h's order: replication
 * starts before any connection opens the database. keytrusteed sees keytrustee-db away for that
 * moment (its requests get 503 "unavailable", which clients with both URLs take to the other node)
 * and reconnects by itself.
 *
 * Promotion (perform_promotion): kt_repl_promote settles the passive's spool (every spooled
 * transaction is kept, confirmed or not: see replication/promote.c for why that keeps every write
 * answered ok and no refused one) and writes epoch + 1; then keytrustee-db.conf is rewritten:
 *   role = active, replication_port = the old master_port (both nodes use one replication port),
 *   replication_listen = keytrusteed's `listen` address from keytrustee.conf (as db --bootstrap),
 *   slave = former_active = the old master, former_active_port = its port (the fencer tells an old
 *   active that comes back there that a newer epoch exists), synchronous = no after a promotion
 *   (no passive yet: synchronous writes would all be refused; `ktadmin enable-synchronous-
 *   replication` once the old host is rebuilt as the passive), yes after a switchover (the old
 *   active follows at once); master, master_port and active_url are removed.
 * The conf is the commit point: a crash before it leaves a consistent passive of the new epoch (it
 * follows no older active); promoting it again finishes the job.
 *
 * Demotion (switchover, on the old active once HANDOVER is sent): keytrustee-db.conf becomes
 *   role = passive, master = the new active's host (the host of its URL), master_port =
 *   this node's replication_port, active_url = the new active's URL; slave, synchronous and
 *   former_active* are removed. The node then starts as a passive of the newer epoch; its log is an
 *   active's, not a spool, so it receives a full copy of the new active's database (replication.c:
 *   a passive whose state and log disagree asks for one) and follows from there.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/keytrustee-db/service.h"
#include "replication/replication.h"

#define HANDOVER_TIMEOUT_MS 10000
#define WATCH_INTERVAL_US   50000

/* Records the change and wakes main (which waits for signals); false when one is pending. */
static bool request_change(kt_db_service *service, const kt_role_change *change)
{
    (void)pthread_mutex_lock(&service->role_mutex);
    bool free_slot = service->role_change.kind == KT_ROLE_CHANGE_NONE;
    if (free_slot) {
        service->role_change = *change;
        service->role_change_error[0] = '\0'; /* the status must not show an older failure */
    }
    (void)pthread_mutex_unlock(&service->role_mutex);
    if (free_slot && kill(getpid(), SIGUSR1) != 0)
        kt_log(KT_LOG_ERROR, "cannot signal the main thread for the role change");
    return free_slot;
}

/* ---- promote ---------------------------------------------------------------------------------- */

json_t *kt_promote_handle(kt_db_session *session, const json_t *request)
{
    kt_db_service *service = session->service;
    const json_t *force = json_object_get(request, "force");
    if (force != NULL && !json_is_boolean(force))
        return kt_response_error("bad_request", "\"force\" must be true or false");
    if (service->settings.role != KT_ROLE_PASSIVE)
        return kt_response_error("bad_request",
                                 "this node is the %s: only a passive can be promoted",
                                 kt_db_role_name(service->settings.role));
    char where[300];
    if (!json_is_true(force) &&
        kt_replication_glue_active_reachable(service->replication, &service->settings, where,
                                             sizeof where))
        return kt_response_error(
            "conflict",
            "the active at %s still answers: promoting now would leave two actives. Use `ktadmin "
            "switchover` on the active for a planned change; if that node is really lost (or "
            "about to be shut down for good), promote with --force: the old active is fenced by "
            "the new epoch whenever it meets this node",
            where);
    kt_role_change change = {.kind = KT_ROLE_CHANGE_PROMOTE, .synchronous = false};
    if (!request_change(service, &change))
        return kt_response_error("conflict", "a role change is already under way");
    kt_log(KT_LOG_WARNING, "promotion requested%s: restarting as the active under a new epoch",
           json_is_true(force) ? " with --force" : "");
    return kt_response_ok();
}

/* ---- switchover ------------------------------------------------------------------------------- */

/* The host of an https:// URL ("https://HOST[:PORT][/...]", HOST may be "[IPV6]"). */
static int url_host(const char *url, char *host, size_t host_size)
{
    static const char scheme[] = "https://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return -1;
    const char *start = url + sizeof scheme - 1;
    const char *end;
    if (*start == '[') {
        start++;
        end = strchr(start, ']');
    } else {
        end = start + strcspn(start, ":/");
    }
    if (end == NULL || end == start || (size_t)(end - start) + 1 > host_size)
        return -1;
    memcpy(host, start, (size_t)(end - start));
    host[end - start] = '\0';
    return 0;
}

/* Runs in a batch, holding the writer store: once its batch has committed, every write queued
 * before the hand-over began has been committed (or refused) and answered. */
static kt_store_status writer_barrier(kt_store *store, void *arguments)
{
    (void)store;
    (void)arguments;
    return KT_STORE_OK;
}

static int writer_barrier_run(void *context)
{
    kt_db_service *service = context;
    char message[256];
    return kt_writer_run(service->writer, "switchover", writer_barrier, NULL, message,
                         sizeof message) == KT_STORE_OK
               ? 0
               : -1;
}

json_t *kt_switchover_handle(kt_db_session *session, const json_t *request)
{
    kt_db_service *service = session->service;
    json_t *failure = NULL;
    char url[512];
    if (kt_field_text(request, "new_active_url", 8, 500, true, NULL, url, &failure) != 0)
        return failure;
    if (service->settings.role != KT_ROLE_ACTIVE)
        return kt_response_error("bad_request",
                                 "this node is the %s: run switchover on the active",
                                 kt_db_role_name(service->settings.role));
    kt_role_change change = {.kind = KT_ROLE_CHANGE_DEMOTE};
    if (url_host(url, change.master, sizeof change.master) != 0)
        return kt_response_error("bad_request", "\"new_active_url\" must be https://HOST:PORT, "
                                                "the passive's URL");
    json_t *replication = kt_replication_glue_status(service->replication);
    const char *state = json_string_value(json_object_get(replication, "state"));
    bool in_sync = state != NULL && strcmp(state, "in_sync") == 0 &&
                   json_is_true(json_object_get(replication, "synchronous"));
    json_t *refusal = NULL;
    if (!in_sync)
        refusal = kt_response_error("write_unavailable",
                                    "switchover needs a healthy synchronous pair (replication is "
                                    "%s%s); fix the pair first, or promote the passive if the "
                                    "active is lost",
                                    state != NULL ? state : "unknown",
                                    json_is_true(json_object_get(replication, "synchronous"))
                                        ? ""
                                        : ", not synchronous");
    json_decref(replication);
    if (refusal != NULL)
        return refusal;
    snprintf(change.active_url, sizeof change.active_url, "%s", url);
    /* Writes reach the writer only after the writable check, which answers "passive" from the
     * moment the hand-over begins; a write that passed the check just before is flushed by the
     * barrier, and kt_repl_hand_over then waits for the passive's acknowledgement of the log's
     * tip, which includes it. (A write the barrier missed would still be safe: it can commit only
     * once the passive spooled it, and a promotion keeps every spooled transaction.) */
    char error[512];
    if (kt_replication_glue_hand_over(service->replication, url, HANDOVER_TIMEOUT_MS,
                                      writer_barrier_run, service, error, sizeof error) != 0)
        return kt_response_error("write_unavailable", "switchover abandoned: %s", error);
    if (!request_change(service, &change))
        return kt_response_error("conflict", "a role change is already under way");
    kt_log(KT_LOG_WARNING, "switchover: handed over to %s; restarting as its passive", url);
    return kt_response_ok();
}

/* Passive: polls for the active's HANDOVER, then asks for a promotion (synchronous: the old
 * active follows at once). Runs until main stops it or the promotion is requested. */
static void *watch_handover(void *argument)
{
    kt_db_service *service = argument;
    for (;;) {
        (void)usleep(WATCH_INTERVAL_US);
        (void)pthread_mutex_lock(&service->role_mutex);
        bool stopping = service->watch_stop;
        (void)pthread_mutex_unlock(&service->role_mutex);
        if (stopping)
            return NULL;
        if (kt_replication_glue_handover_requested(service->replication)) {
            kt_role_change change = {.kind = KT_ROLE_CHANGE_PROMOTE, .synchronous = true};
            if (request_change(service, &change))
                kt_log(KT_LOG_WARNING, "switchover: the active handed over; restarting as the "
                                       "active under a new epoch");
            return NULL;
        }
    }
}

void kt_role_change_watch_start(kt_db_service *service)
{
    service->watch_stop = false;
    service->watch_started = false;
    if (service->settings.role != KT_ROLE_PASSIVE)
        return;
    if (pthread_create(&service->watcher, NULL, watch_handover, service) != 0) {
        kt_log(KT_LOG_ERROR, "cannot start the thread that watches for a switchover; `ktadmin "
                             "switchover` on the active will time out, `ktadmin promote` works");
        return;
    }
    service->watch_started = true;
}

void kt_role_change_watch_stop(kt_db_service *service)
{
    (void)pthread_mutex_lock(&service->role_mutex);
    service->watch_stop = true;
    (void)pthread_mutex_unlock(&service->role_mutex);
    if (service->watch_started)
        (void)pthread_join(service->watcher, NULL);
    service->watch_started = false;
}

/* ---- carrying it out (main, with everything stopped) ------------------------------------------- */

static void log_replication(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    kt_log(level == KT_REPL_LOG_ERROR     ? KT_LOG_ERROR
           : level == KT_REPL_LOG_WARNING ? KT_LOG_WARNING
                                          : KT_LOG_INFO,
           "%s", message);
}

/* The address keytrusteed binds (keytrustee.conf `listen`): an active listens for its passive
 * there too, as `ktadmin db --bootstrap` sets it, so two nodes on one machine do not collide. */
static int https_listen_address(const kt_db_service *service, char *listen, size_t listen_size,
                                char *error, size_t error_size)
{
    char path[PATH_MAX];
    kt_config *config = NULL;
    if (kt_path_join(path, sizeof path, service->paths.confdir, KT_CONF_FILE) != 0 ||
        kt_config_load(path, true, &config, error, error_size) != 0) {
        if (error[0] == '\0')
            snprintf(error, error_size, "the configuration directory's path is too long");
        return -1;
    }
    snprintf(listen, listen_size, "%s", kt_config_get(config, "listen", "0.0.0.0"));
    kt_config_free(config);
    return 0;
}

/* Rewrites keytrustee-db.conf for the new role and saves it atomically. */
static int rewrite_conf(kt_db_service *service, const kt_role_change *change, bool promote,
                        char *error, size_t error_size)
{
    char path[PATH_MAX], port[16];
    if (kt_path_join(path, sizeof path, service->paths.dbdir, KT_DB_CONF_FILE) != 0) {
        snprintf(error, error_size, "the database directory's path is too long");
        return -1;
    }
    char listen[256];
    if (https_listen_address(service, listen, sizeof listen, error, error_size) != 0)
        return -1;
    kt_config *config = NULL;
    if (kt_config_load(path, false, &config, error, error_size) != 0)
        return -1;
    const kt_db_settings *old = &service->settings;
    int failed = 0;
    if (promote) {
        snprintf(port, sizeof port, "%ld", old->master_port);
        failed |= kt_config_set(config, "role", "active");
        failed |= kt_config_set(config, "replication_port", port);
        failed |= kt_config_set(config, "replication_listen", listen);
        failed |= kt_config_set(config, "slave", old->master);
        failed |= kt_config_set(config, "former_active", old->master);
        failed |= kt_config_set(config, "former_active_port", port);
        failed |= kt_config_set(config, "synchronous", change->synchronous ? "yes" : "no");
        failed |= kt_config_set(config, "master", NULL);
        failed |= kt_config_set(config, "master_port", NULL);
        failed |= kt_config_set(config, "active_url", NULL);
    } else {
        snprintf(port, sizeof port, "%ld", old->replication_port);
        failed |= kt_config_set(config, "role", "passive");
        failed |= kt_config_set(config, "master", change->master);
        failed |= kt_config_set(config, "master_port", port);
        failed |= kt_config_set(config, "active_url", change->active_url);
        failed |= kt_config_set(config, "slave", NULL);
        failed |= kt_config_set(config, "synchronous", NULL);
        failed |= kt_config_set(config, "former_active", NULL);
        failed |= kt_config_set(config, "former_active_port", NULL);
    }
    int result = -1;
    if (failed != 0)
        snprintf(error, error_size, "out of memory editing %s", path);
    else
        result = kt_config_save(config, path, error, error_size);
    kt_config_free(config);
    return result;
}

static int perform_promotion(kt_db_service *service, const kt_role_change *change, char *error,
                             size_t error_size)
{
    kt_repl_config config = {
        .role = KT_REPL_PASSIVE,
        .database_path = service->database_path,
        .state_directory = service->paths.dbdir,
        .log = log_replication,
    };
    kt_repl_promotion promotion;
    if (kt_repl_promote(&config, &promotion, error, error_size) != 0)
        return -1;
    if (rewrite_conf(service, change, true, error, error_size) != 0)
        return -1;
    kt_log(KT_LOG_WARNING,
           "promoted: this node is the active at epoch %llu from transaction %llu (%llu spooled "
           "transactions applied, %llu of them not yet confirmed by the old active)",
           (unsigned long long)promotion.epoch, (unsigned long long)promotion.position.txid,
           (unsigned long long)promotion.applied_at_promotion,
           (unsigned long long)promotion.kept_unconfirmed);
    return 0;
}

int kt_role_change_perform(kt_db_service *service)
{
    (void)pthread_mutex_lock(&service->role_mutex);
    kt_role_change change = service->role_change;
    service->role_change.kind = KT_ROLE_CHANGE_NONE;
    service->role_change_error[0] = '\0';
    (void)pthread_mutex_unlock(&service->role_mutex);
    char error[PATH_MAX + 512];
    int result = 0;
    if (change.kind == KT_ROLE_CHANGE_PROMOTE)
        result = perform_promotion(service, &change, error, sizeof error);
    else if (change.kind == KT_ROLE_CHANGE_DEMOTE)
        result = rewrite_conf(service, &change, false, error, sizeof error);
    if (result != 0) {
        kt_log(KT_LOG_ERROR, "the role change failed, starting again as the %s: %s",
               kt_db_role_name(service->settings.role), error);
        (void)pthread_mutex_lock(&service->role_mutex);
        snprintf(service->role_change_error, sizeof service->role_change_error, "%.500s", error);
        (void)pthread_mutex_unlock(&service->role_mutex);
    }
    return result;
}
