/*
 * replication_glue.c — THE seam between keytrustee-db and replication/.
 *
 * Everything keytrustee-db needs from replication goes through the functions declared in
 * service.h and defined here, and nothing else in keytrustee-db knows replication exists:
 *   start/stop        bring replication/ up for this node's role and down again. Every role runs
 *                     it: a standalone node captures its commits into its log too, so that a
 *                     later `db --bootstrap --slave` style conversion needs no extra copy; an
 *                     active listens on the replication port; a passive connects to its master,
 *                     spools what it is sent and applies it once the active confirms it;
 *   writer_vfs        the SQLite VFS the writer opens with: replication/'s shim, which ships
 *                     each commit's WAL frames inside the commit's final xSync (none on a
 *                     passive, which runs no writer at all);
 *   attach_writer     installs replication/'s commit classifier on the writer store, so a failed
 *                     COMMIT is reported as refused, indeterminate or disk full;
 *   writable          whether writes are accepted now: a passive never; an active only while
 *                     replication says a commit can be made durable on both nodes;
 *   set_synchronous   `ktadmin enable-synchronous-replication` at run time;
 *   status            the "replication" object of the status op (field names in app.h);
 *   role changes      the health check before `ktadmin promote` (is the active reachable), the
 *                     hand-over of `ktadmin switchover` (writes answered "passive" while the
 *                     passive takes everything, then HANDOVER), and on an active made by a
 *                     promotion the fencer: a thread that tells the old active, should it listen
 *                     again, that a newer epoch exists.
 *
 * Order (replication.h): replication starts before the writer store is opened, because the
 * active first reconciles its -wal file with its log; at shutdown the writer store is closed
 * first, because the VFS must outlive every connection that uses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/keytrustee-db/service.h"
#include "crypto/crypto.h"
#include "replication/replication.h"

#define FENCE_INTERVAL_MS 1000
#define PROBE_TIMEOUT_MS  1000

struct kt_replication_glue {
    kt_db_role role;
    kt_repl *replication;
    /* switchover: while set, writes are answered "passive" naming handover_url */
    atomic_bool draining;
    char handover_url[512];
    /* the fencer (an active after a promotion): a thread that tells the old active, whenever it
     * listens again, that a newer epoch exists */
    char fence_host[256];
    char fence_port[16];
    pthread_t fencer;
    bool fencer_started;
    pthread_mutex_t fence_mutex;
    pthread_cond_t fence_stop_changed;
    bool fence_stop;
};

static kt_repl_role replication_role(kt_db_role role)
{
    switch (role) {
    case KT_ROLE_ACTIVE: return KT_REPL_ACTIVE;
    case KT_ROLE_PASSIVE: return KT_REPL_PASSIVE;
    case KT_ROLE_STANDALONE: break;
    }
    return KT_REPL_STANDALONE;
}

/* replication/ logs through keytrustee-db's log, at the matching level. */
static void log_replication(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    kt_log_level mapped = KT_LOG_DEBUG;
    switch (level) {
    case KT_REPL_LOG_ERROR: mapped = KT_LOG_ERROR; break;
    case KT_REPL_LOG_WARNING: mapped = KT_LOG_WARNING; break;
    case KT_REPL_LOG_INFO: mapped = KT_LOG_INFO; break;
    case KT_REPL_LOG_DEBUG: mapped = KT_LOG_DEBUG; break;
    }
    kt_log(mapped, "replication: %s", message);
}

/* The pair secret is the server key file's replication subkey: both nodes have it after the
 * seed's rsync of .keytrustee. */
static kt_server_keys *load_pair_secret(const kt_paths *paths, char *error, size_t error_size)
{
    char path[PATH_MAX];
    kt_server_keys *keys = NULL;
    if (kt_path_join(path, sizeof path, paths->confdir, KT_SERVER_KEY_FILE) != 0) {
        snprintf(error, error_size, "the path %s is too long", paths->confdir);
        return NULL;
    }
    if (kt_server_keys_load(path, &keys, error, error_size) != 0)
        return NULL;
    return keys;
}

/* ---- fencing the old active ------------------------------------------------------------------ */

/* Waits up to `milliseconds` for the stop request; true when stopping. */
static bool fence_pause(kt_replication_glue *glue, int milliseconds)
{
    struct timespec until;
    (void)clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += milliseconds / 1000;
    until.tv_nsec += (long)(milliseconds % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    (void)pthread_mutex_lock(&glue->fence_mutex);
    while (!glue->fence_stop &&
           pthread_cond_timedwait(&glue->fence_stop_changed, &glue->fence_mutex, &until) == 0) {
    }
    bool stop = glue->fence_stop;
    (void)pthread_mutex_unlock(&glue->fence_mutex);
    return stop;
}

/* Whether the connected passive is on the old active's host: then nothing else listens there. */
static bool passive_on_fenced_host(const kt_repl_status *status, const char *host)
{
    size_t length = strlen(host);
    return status->peer_connected && strncmp(status->peer_address, host, length) == 0 &&
           status->peer_address[length] == ':';
}

/* Every second, while this node is an unfenced active: tell whatever active listens at the old
 * active's address that a newer epoch exists (kt_repl_fence_peer). An old active that comes back
 * with its old home is fenced within a second of listening; before that, in synchronous mode it
 * has no passive and refuses writes anyway. */
static void *fencer_main(void *argument)
{
    kt_replication_glue *glue = argument;
    int last = 0;
    while (!fence_pause(glue, FENCE_INTERVAL_MS)) {
        kt_repl_status status;
        kt_repl_get_status(glue->replication, &status);
        if (strcmp(status.state, "fenced") == 0)
            break;
        if (passive_on_fenced_host(&status, glue->fence_host))
            continue;
        char error[512];
        int result = kt_repl_fence_peer(glue->replication, glue->fence_host, glue->fence_port,
                                        error, sizeof error);
        if (result < 0 && last >= 0)
            kt_log(KT_LOG_ERROR, "fencing the old active at %s:%s: %s", glue->fence_host,
                   glue->fence_port, error);
        last = result;
        if (result < 0 && fence_pause(glue, 30 * FENCE_INTERVAL_MS))
            break;
    }
    return NULL;
}

static void start_fencer(kt_replication_glue *glue, const kt_db_settings *settings)
{
    snprintf(glue->fence_host, sizeof glue->fence_host, "%s", settings->former_active);
    snprintf(glue->fence_port, sizeof glue->fence_port, "%ld", settings->former_active_port);
    if (pthread_create(&glue->fencer, NULL, fencer_main, glue) != 0) {
        kt_log(KT_LOG_ERROR, "cannot start the thread that fences the old active at %s:%s; an "
               "old active that comes back is fenced only when a passive of the new epoch meets "
               "it", glue->fence_host, glue->fence_port);
        return;
    }
    glue->fencer_started = true;
    kt_log(KT_LOG_INFO, "fencing the old active at %s:%s whenever it listens", glue->fence_host,
           glue->fence_port);
}

static void stop_fencer(kt_replication_glue *glue)
{
    (void)pthread_mutex_lock(&glue->fence_mutex);
    glue->fence_stop = true;
    (void)pthread_cond_broadcast(&glue->fence_stop_changed);
    (void)pthread_mutex_unlock(&glue->fence_mutex);
    if (glue->fencer_started)
        (void)pthread_join(glue->fencer, NULL);
    glue->fencer_started = false;
}

int kt_replication_glue_start(kt_replication_glue **glue, const kt_db_settings *settings,
                              const kt_paths *paths, char *error, size_t error_size)
{
    char database[PATH_MAX], listen_port[16], master_port[16];
    if (kt_path_join(database, sizeof database, paths->dbdir, KT_DB_FILE_NAME) != 0) {
        snprintf(error, error_size, "the path %s is too long", paths->dbdir);
        return -1;
    }
    kt_server_keys *keys = load_pair_secret(paths, error, error_size);
    if (keys == NULL)
        return -1;
    *glue = calloc(1, sizeof **glue);
    if (*glue == NULL) {
        kt_server_keys_free(keys);
        snprintf(error, error_size, "out of memory starting replication");
        return -1;
    }
    snprintf(listen_port, sizeof listen_port, "%ld", settings->replication_port);
    snprintf(master_port, sizeof master_port, "%ld", settings->master_port);
    kt_repl_config config = {
        .role = replication_role(settings->role),
        .database_path = database,
        .state_directory = paths->dbdir,
        .listen_host = settings->replication_listen,
        .listen_port = listen_port,
        .master_host = settings->master,
        .master_port = master_port,
        .pair_key = keys->replication_key,
        .synchronous = settings->synchronous,
        .log = log_replication,
    };
    (*glue)->role = settings->role;
    atomic_init(&(*glue)->draining, false);
    (void)pthread_mutex_init(&(*glue)->fence_mutex, NULL);
    (void)pthread_cond_init(&(*glue)->fence_stop_changed, NULL);
    int result = kt_repl_start(&(*glue)->replication, &config, error, error_size);
    kt_server_keys_free(keys); /* kt_repl_start copied the pair key */
    if (result != 0) {
        (void)pthread_mutex_destroy(&(*glue)->fence_mutex);
        (void)pthread_cond_destroy(&(*glue)->fence_stop_changed);
        free(*glue);
        *glue = NULL;
        return -1;
    }
    if (settings->role == KT_ROLE_ACTIVE && settings->former_active[0] != '\0')
        start_fencer(*glue, settings);
    return 0;
}

const char *kt_replication_glue_writer_vfs(const kt_replication_glue *glue)
{
    return kt_repl_vfs_name(glue->replication);
}

void kt_replication_glue_attach_writer(kt_replication_glue *glue, kt_store *writer)
{
    kt_store_set_commit_classifier(writer, kt_repl_commit_failure, glue->replication);
}

bool kt_replication_glue_runs_writer(const kt_replication_glue *glue)
{
    return glue->role != KT_ROLE_PASSIVE;
}

bool kt_replication_glue_writable(const kt_replication_glue *glue, const char **reason,
                                  const char **message)
{
    static __thread char sentence[512];
    *reason = NULL;
    *message = NULL;
    if (glue->role == KT_ROLE_PASSIVE) {
        *reason = "passive";
        *message = "this node is the passive; write to the active";
        return false;
    }
    if (atomic_load(&glue->draining)) {
        *reason = "passive";
        *message = "this node is handing the active role over (switchover); write to the new "
                   "active";
        return false;
    }
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    if (status.writable)
        return true;
    if (strcmp(status.state, "fenced") == 0) {
        *reason = "fenced";
        *message = "this node is fenced: another node was promoted to active under a newer "
                   "epoch, so this one takes no writes; write to the active, and rebuild this "
                   "node as its passive (ktadmin init-slave --master ACTIVE)";
        return false;
    }
    snprintf(sentence, sizeof sentence,
             "writes are refused because the pair cannot store them on both nodes now (%s); "
             "existing keys can still be read, retry the write later",
             status.reason[0] != '\0' ? status.reason : status.state);
    *reason = "write_unavailable";
    *message = sentence;
    return false;
}

const char *kt_replication_glue_handover_url(const kt_replication_glue *glue)
{
    return atomic_load(&glue->draining) ? glue->handover_url : NULL;
}

/* Whether a TCP connection to host:port opens within PROBE_TIMEOUT_MS. */
static bool port_answers(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
    if (getaddrinfo(host, port, &hints, &found) != 0)
        return false;
    bool answered = false;
    for (struct addrinfo *at = found; at != NULL && !answered; at = at->ai_next) {
        int fd = socket(at->ai_family, at->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        at->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, at->ai_addr, at->ai_addrlen) == 0) {
            answered = true;
        } else if (errno == EINPROGRESS) {
            struct pollfd entry = {.fd = fd, .events = POLLOUT};
            int code = 0;
            socklen_t size = sizeof code;
            answered = poll(&entry, 1, PROBE_TIMEOUT_MS) == 1 &&
                       getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &size) == 0 && code == 0;
        }
        (void)close(fd);
    }
    freeaddrinfo(found);
    return answered;
}

bool kt_replication_glue_active_reachable(const kt_replication_glue *glue,
                                          const kt_db_settings *settings, char *where,
                                          size_t where_size)
{
    char port[16];
    snprintf(port, sizeof port, "%ld", settings->master_port);
    snprintf(where, where_size, "%s:%s", settings->master, port);
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    if (status.peer_connected)
        return true;
    return port_answers(settings->master, port);
}

int kt_replication_glue_hand_over(kt_replication_glue *glue, const char *new_active_url,
                                  int timeout_ms, int (*flush)(void *context),
                                  void *flush_context, char *error, size_t error_size)
{
    snprintf(glue->handover_url, sizeof glue->handover_url, "%s", new_active_url);
    atomic_store(&glue->draining, true);
    if (flush(flush_context) != 0) {
        atomic_store(&glue->draining, false);
        snprintf(error, error_size, "the writer could not finish the writes under way");
        return -1;
    }
    if (kt_repl_hand_over(glue->replication, timeout_ms, error, error_size) != 0) {
        atomic_store(&glue->draining, false);
        return -1;
    }
    return 0;
}

bool kt_replication_glue_handover_requested(const kt_replication_glue *glue)
{
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    return status.handover_requested;
}

void kt_replication_glue_set_synchronous(kt_replication_glue *glue, bool synchronous)
{
    kt_repl_set_synchronous(glue->replication, synchronous);
    kt_log(KT_LOG_INFO, "synchronous replication %s", synchronous ? "enabled" : "disabled");
}

static json_t *position_object(const kt_repl_position *position)
{
    char hash[KT_REPL_HASH_HEX_CHARS + 1];
    kt_repl_position_hex(position, hash);
    return json_pack("{s:I, s:I, s:s}", "epoch", (json_int_t)position->epoch, "txid",
                     (json_int_t)position->txid, "hash", hash);
}

json_t *kt_replication_glue_status(const kt_replication_glue *glue)
{
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    return json_pack("{s:s, s:s, s:I, s:b, s:b, s:s, s:b, s:s, s:o, s:o, s:I, s:I}",
                     "role", kt_db_role_name(glue->role),
                     "state", status.state,
                     "epoch", (json_int_t)status.epoch,
                     "synchronous", status.synchronous,
                     "writable", glue->role != KT_ROLE_PASSIVE && status.writable,
                     "reason", status.reason,
                     "peer_connected", status.peer_connected,
                     "peer_address", status.peer_address,
                     "position", position_object(&status.position),
                     "peer_position", position_object(&status.peer_position),
                     "lag_transactions", (json_int_t)status.lag_transactions,
                     "lag_ms", (json_int_t)status.lag_ms);
}

void kt_replication_glue_stop(kt_replication_glue *glue)
{
    if (glue == NULL)
        return;
    stop_fencer(glue);
    kt_repl_stop(glue->replication);
    (void)pthread_mutex_destroy(&glue->fence_mutex);
    (void)pthread_cond_destroy(&glue->fence_stop_changed);
    free(glue);
}
