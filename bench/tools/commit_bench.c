/*
 * commit_bench.c — durable commits per second: N writer threads, each committing one key row per
 * transaction, for a fixed time, with every transaction's latency recorded.
 *
 *   commit_bench --backend NAME --target WHERE [--writers N] [--seconds S] [--warmup S]
 *                [--max-per-writer N] [--hang-timeout S] [--option KEY=VALUE]...
 *   commit_bench --list-backends
 *
 * The row is the same shape as the PostgreSQL baseline's (bench/pg_syncrep.sh):
 *   deposits(uuid text primary key, client text, handle text, created bigint, box blob)
 * with a random version-4 uuid, a 40-character client fingerprint per writer, a unique handle and a
 * 100-byte box (about the AEAD box of a small key).
 *
 * Timing: the writers open their connections, meet at a barrier, run `--warmup` seconds unrecorded,
 * then `--seconds` recorded. A transaction is recorded when it starts and ends inside the window;
 * its latency is CLOCK_MONOTONIC from the first attempt to the acknowledged commit (retries after
 * SQLITE_BUSY included). Samples go to per-writer arrays, merged and sorted at the end.
 * ops/s = recorded commits / window length.
 *
 * Output: one JSON line on stdout
 *   {"backend":..,"writers":N,"seconds":S,"commits":C,"ops_per_s":..,"p50_ms":..,"p99_ms":..,
 *    "p999_ms":..,"max_ms":..,"mean_ms":..,"retries":R,"errors":E,"unfinished_writers":U}
 * Exit status: 0 ok; 1 a backend failed to open or a commit failed fatally; 2 usage; 3 some writer
 * was still inside a commit `--hang-timeout` seconds after the window closed (the line is printed
 * all the same, with unfinished_writers > 0: a hung commit is a result, e.g. for a stopped peer).
 *
 * Backends (a table of function pointers; see `bench_backend`):
 *   sqlite      plain SQLite, WAL, synchronous=FULL, one connection per writer with busy_timeout:
 *               the single-node, no-replication limit. --target is the database file.
 *   keytrustee  the storage + replication layer: storage/ and replication/ in this process (the
 *               active), a passive process on loopback (this program again, --passive-node), the
 *               rows group-committed with keytrustee-db's policy; every acknowledged row is fsynced
 *               on both nodes. --target is a new directory for both nodes (see the backend).
 *   keytrustee-admin  end to end: a client of a running keytrustee-db (the active of a
 *               synchronous pair), each writer on its own admin-socket connection sending
 *               deposit.put, so concurrent writers are group-committed and every acknowledged row
 *               is fsynced on both nodes. --target is the active's confdir (.keytrustee).
 *
 *   commit_bench --passive-node DIR --master HOST:PORT   (internal: the keytrustee backend's
 *               passive; reads the pair key on stdin and runs until stdin closes)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "replication/replication.h"
#include "storage/storage.h"

/* ---- the backend interface ------------------------------------------------------------------- */

#define BENCH_MAX_OPTIONS 16
#define BENCH_BOX_BYTES   100u
#define BENCH_CLIENT_CHARS 40u

typedef struct bench_config {
    const char *target;   /* backend-specific: a database path, a socket, a confdir... */
    int writers;
    const char *option_keys[BENCH_MAX_OPTIONS];
    const char *option_values[BENCH_MAX_OPTIONS];
    int option_count;
} bench_config;

/* The value of --option KEY=VALUE, or `fallback`. */
static const char *bench_option(const bench_config *config, const char *key, const char *fallback)
{
    for (int i = config->option_count - 1; i >= 0; i--)
        if (strcmp(config->option_keys[i], key) == 0)
            return config->option_values[i];
    return fallback;
}

typedef struct bench_row {
    char uuid[37];
    char client[BENCH_CLIENT_CHARS + 1];
    char handle[64];
    int64_t created;                     /* unix seconds */
    unsigned char box[BENCH_BOX_BYTES];
    size_t box_length;
} bench_row;

typedef enum bench_put_result {
    BENCH_PUT_OK = 0,      /* committed durably (and, for a replicated backend, acknowledged) */
    BENCH_PUT_RETRY = 1,   /* not committed, transient (busy): the same row is tried again */
    BENCH_PUT_FAILED = 2   /* not committed: counted as an error, the writer goes on */
} bench_put_result;

typedef struct bench_backend {
    const char *name;
    const char *description;
    /* Once, before any writer: create the schema, check the target. 0 or -1 with `error`. */
    int (*prepare)(const bench_config *config, char *error, size_t error_size);
    /* Per writer thread, called on that thread: its own connection. NULL with `error`. */
    void *(*open)(const bench_config *config, int writer, char *error, size_t error_size);
    /* One transaction committing exactly `row`. */
    bench_put_result (*put)(void *connection, const bench_row *row, char *error, size_t error_size);
    void (*close)(void *connection);
    /* Once, after every writer closed (NULL: nothing to do): stop what prepare started. */
    void (*finish)(void);
    /* What is measured, for the report: e.g. "sqlite 3.40.1". */
    const char *(*version)(void);
} bench_backend;

static void sleep_seconds(double seconds);

/* ---- backend: sqlite ------------------------------------------------------------------------- */

static const char sqlite_schema[] =
    "CREATE TABLE IF NOT EXISTS deposits(uuid TEXT PRIMARY KEY, client TEXT NOT NULL, "
    "handle TEXT NOT NULL, created INTEGER NOT NULL, box BLOB NOT NULL)";

typedef struct sqlite_connection {
    sqlite3 *db;
    sqlite3_stmt *insert;
} sqlite_connection;

static int sqlite_exec(sqlite3 *db, const char *sql, char *error, size_t error_size)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK) {
        snprintf(error, error_size, "%s: %s", sql, message != NULL ? message : sqlite3_errmsg(db));
        sqlite3_free(message);
        return -1;
    }
    return 0;
}

static sqlite3 *sqlite_open_configured(const bench_config *config, char *error, size_t error_size)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(config->target, &db, flags, NULL) != SQLITE_OK) {
        snprintf(error, error_size, "cannot open %s: %s", config->target,
                 db != NULL ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s",
             bench_option(config, "synchronous", "FULL"));
    int busy_ms = atoi(bench_option(config, "busy_timeout_ms", "10000"));
    sqlite3_busy_timeout(db, busy_ms > 0 ? busy_ms : 10000);
    if (sqlite_exec(db, "PRAGMA journal_mode=WAL", error, error_size) != 0 ||
        sqlite_exec(db, sql, error, error_size) != 0) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static int sqlite_prepare(const bench_config *config, char *error, size_t error_size)
{
    sqlite3 *db = sqlite_open_configured(config, error, error_size);
    if (db == NULL)
        return -1;
    int result = sqlite_exec(db, sqlite_schema, error, error_size);
    sqlite3_close(db);
    return result;
}

static void *sqlite_open(const bench_config *config, int writer, char *error, size_t error_size)
{
    (void)writer;
    sqlite_connection *connection = calloc(1, sizeof *connection);
    if (connection == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    connection->db = sqlite_open_configured(config, error, error_size);
    if (connection->db == NULL) {
        free(connection);
        return NULL;
    }
    if (sqlite3_prepare_v2(connection->db,
                           "INSERT INTO deposits(uuid, client, handle, created, box) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &connection->insert, NULL) != SQLITE_OK) {
        snprintf(error, error_size, "prepare: %s", sqlite3_errmsg(connection->db));
        sqlite3_close(connection->db);
        free(connection);
        return NULL;
    }
    return connection;
}

static bench_put_result sqlite_put(void *opaque, const bench_row *row, char *error,
                                   size_t error_size)
{
    sqlite_connection *connection = opaque;
    sqlite3_stmt *insert = connection->insert;
    sqlite3_bind_text(insert, 1, row->uuid, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 2, row->client, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 3, row->handle, -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 4, row->created);
    sqlite3_bind_blob(insert, 5, row->box, (int)row->box_length, SQLITE_STATIC);
    int rc = sqlite3_step(insert);
    sqlite3_reset(insert);
    sqlite3_clear_bindings(insert);
    if (rc == SQLITE_DONE)
        return BENCH_PUT_OK;
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        return BENCH_PUT_RETRY;
    snprintf(error, error_size, "insert: %s (%d)", sqlite3_errmsg(connection->db), rc);
    return BENCH_PUT_FAILED;
}

static void sqlite_close_connection(void *opaque)
{
    sqlite_connection *connection = opaque;
    if (connection == NULL)
        return;
    sqlite3_finalize(connection->insert);
    sqlite3_close(connection->db);
    free(connection);
}

static const char *sqlite_version_text(void)
{
    static char text[64];
    snprintf(text, sizeof text, "sqlite %s", sqlite3_libversion());
    return text;
}

static const bench_backend sqlite_backend = {
    .name = "sqlite",
    .description = "plain SQLite WAL synchronous=FULL, one connection per writer (--target FILE; "
                   "--option synchronous=FULL|NORMAL, busy_timeout_ms=N)",
    .prepare = sqlite_prepare,
    .open = sqlite_open,
    .put = sqlite_put,
    .close = sqlite_close_connection,
    .version = sqlite_version_text,
};

/* ---- backend: keytrustee --------------------------------------------------------------------- */

/* The fingerprint that owns every row: a real client, registered once in keytrustee_prepare,
 * because keytrustee-db refuses a deposit whose client does not exist. */
static char keytrustee_client[KT_FINGERPRINT_CHARS + 1];
static kt_paths keytrustee_paths;

static int keytrustee_call(kt_db_connection *connection, json_t *request, json_t **response,
                           char *error, size_t error_size)
{
    int result = request == NULL ? -1
                                 : kt_db_call(connection, request, 30000, response, error,
                                              error_size);
    json_decref(request);
    return result;
}

/* Adds the org "bench" (if missing) and a new client in it, over the admin socket. */
static int keytrustee_prepare(const bench_config *config, char *error, size_t error_size)
{
    if (kt_crypto_init() != 0 ||
        kt_paths_resolve(&keytrustee_paths, config->target, NULL, error, error_size) != 0)
        return -1;
    kt_db_connection *connection = kt_db_connect(&keytrustee_paths, error, error_size);
    if (connection == NULL)
        return -1;
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    char public_text[64];
    json_t *response = NULL;
    int result = -1;
    if (kt_sign_keypair(public_key, &secret_key) != 0 ||
        kt_base64_encode(public_text, sizeof public_text, public_key, sizeof public_key) != 0) {
        snprintf(error, error_size, "cannot make a client key pair");
        goto done;
    }
    kt_secret_free(secret_key);
    kt_fingerprint(keytrustee_client, public_key);
    if (keytrustee_call(connection, json_pack("{s:s, s:s, s:s}", "op", "org.add", "name",
                                              "bench", "contacts", "bench@example.com"),
                        &response, error, error_size) != 0)
        goto done;
    json_decref(response);
    response = NULL;
    if (keytrustee_call(connection,
                        json_pack("{s:s, s:s, s:s, s:s, s:s}", "op", "client.add", "fingerprint",
                                  keytrustee_client, "org", "bench", "name", "commit-bench",
                                  "public_key", public_text),
                        &response, error, error_size) != 0)
        goto done;
    if (!json_is_true(json_object_get(response, "ok"))) {
        snprintf(error, error_size, "client.add refused: %s",
                 json_string_value(json_object_get(response, "message")));
        goto done;
    }
    result = 0;
done:
    json_decref(response);
    kt_db_disconnect(connection);
    return result;
}

static void *keytrustee_open(const bench_config *config, int writer, char *error,
                             size_t error_size)
{
    (void)config;
    (void)writer;
    return kt_db_connect(&keytrustee_paths, error, error_size);
}

static bench_put_result keytrustee_put(void *connection, const bench_row *row, char *error,
                                       size_t error_size)
{
    char box[2 * BENCH_BOX_BYTES];
    if (kt_base64_encode(box, sizeof box, row->box, row->box_length) != 0) {
        snprintf(error, error_size, "cannot encode the box");
        return BENCH_PUT_FAILED;
    }
    json_t *response = NULL;
    if (keytrustee_call(connection,
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "op", "deposit.put", "client",
                                  keytrustee_client, "uuid", row->uuid, "handle", row->handle,
                                  "description", "", "box", box),
                        &response, error, error_size) != 0)
        return BENCH_PUT_FAILED;
    bench_put_result result = BENCH_PUT_OK;
    if (!json_is_true(json_object_get(response, "ok"))) {
        snprintf(error, error_size, "deposit.put: %s: %s",
                 json_string_value(json_object_get(response, "error")),
                 json_string_value(json_object_get(response, "message")));
        result = BENCH_PUT_FAILED;
    }
    json_decref(response);
    return result;
}

static void keytrustee_close(void *connection)
{
    kt_db_disconnect(connection);
}

static const char *keytrustee_version_text(void)
{
    static char text[64];
    snprintf(text, sizeof text, "keytrustee %s (sqlite %s)", KT_VERSION, sqlite3_libversion());
    return text;
}

static const bench_backend keytrustee_backend = {
    .name = "keytrustee-admin",
    .description = "keytrustee-db's group-committing writer through the admin socket, with "
                   "whatever replication the node runs (--target CONFDIR of the active)",
    .prepare = keytrustee_prepare,
    .open = keytrustee_open,
    .put = keytrustee_put,
    .close = keytrustee_close,
    .version = keytrustee_version_text,
};

/* ---- backend: keytrustee (storage/ + replication/ in this process, the passive a process) ---- */

/* The product's write path without the admin socket: this process is the active (kt_repl with the
 * capture VFS, a kt_store writer), and a second process — this program again, started with
 * --passive-node — is the passive, connected over loopback TCP exactly as keytrustee-db's passive
 * connects (replication/walreceiver.c: authenticated, encrypted, spool fsynced before its ACK).
 *
 * The writers' rows reach storage/ by the rules of keytrustee-db's writer (app/keytrustee-db/
 * writer.c): a row that finds nothing queued, the store free and no contention in the last batch
 * is committed on its writer's own thread; otherwise rows queue for the writer thread, which waits
 * up to GROUP_GATHER_US for the writers answered last time to queue again and takes everything
 * queued. Either leader runs each row as kt_store_deposit_put (its own SAVEPOINT inside the
 * batch), commits once — the commit ships the batch to the passive and waits for its fsync — and
 * answers every writer of the batch, each on its own condition variable. The writer thread
 * checkpoints every GROUP_CHECKPOINT_COMMITS commits, after answering. So a row is acknowledged
 * exactly when keytrustee-db would acknowledge it, minus JSON and the admin socket.
 *
 * --target is a directory for the two nodes (created; it must not hold a database yet):
 * TARGET/active and TARGET/passive. --option port=N picks the replication port (default: a free
 * one); --option checkpoint_commits=N changes the checkpoint interval (for experiments). The pair
 * key is random, handed to the passive on its stdin (never on a command line); the passive stops
 * when that pipe closes (this process ended) or on SIGTERM. */

#define GROUP_CHECKPOINT_COMMITS 1000u /* app/keytrustee-db/writer.c: KT_CHECKPOINT_COMMITS */
#define GROUP_GATHER_US 100             /* app/keytrustee-db/writer.c: KT_GATHER_US */
#define PAIR_SETUP_TIMEOUT_MS 60000

typedef struct group_request {
    const bench_row *row;
    kt_store_status status;
    char message[256];
    bool answered;
    pthread_cond_t answer;
    struct group_request *next;
} group_request;

static struct {
    char active_dir[PATH_MAX], passive_dir[PATH_MAX], database[PATH_MAX];
    char port[16];
    kt_secret *pair_key;
    kt_repl *repl;
    kt_store *store;
    char client[KT_FINGERPRINT_CHARS + 1];
    pid_t passive;
    int passive_stdin;
    pthread_t thread; /* the writer thread */
    bool thread_started;
    pthread_mutex_t mutex;
    pthread_cond_t queued;
    group_request *head, *tail;
    unsigned queued_count, gather_target;
    bool store_busy, checkpoint_due, stopping;
    unsigned commits_since_checkpoint, checkpoint_commits;
    uint64_t batches, rows_committed;
} pair = {.passive = -1, .passive_stdin = -1, .mutex = PTHREAD_MUTEX_INITIALIZER,
          .queued = PTHREAD_COND_INITIALIZER};

static void pair_log(void *context, kt_repl_log_level level, const char *message)
{
    if (level <= *(const kt_repl_log_level *)context)
        fprintf(stderr, "commit_bench: %s: %s\n", level == KT_REPL_LOG_ERROR ? "error" : "note",
                message);
}
static const kt_repl_log_level pair_log_level = KT_REPL_LOG_WARNING;

static int make_directory(const char *path, char *error, size_t error_size)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(error, error_size, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A port nobody listens on now (the kernel's pick for port 0). */
static int free_port(char out[16], char *error, size_t error_size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t size = sizeof address;
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) != 0 ||
        getsockname(fd, (struct sockaddr *)&address, &size) != 0) {
        snprintf(error, error_size, "cannot find a free port: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    snprintf(out, 16, "%u", (unsigned)ntohs(address.sin_port));
    return 0;
}

/* Starts this program again as the passive, the pair key on its stdin. */
static int start_passive(char *error, size_t error_size)
{
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        snprintf(error, error_size, "cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    char master[64];
    snprintf(master, sizeof master, "127.0.0.1:%s", pair.port);
    pid_t child = fork();
    if (child < 0) {
        snprintf(error, error_size, "cannot fork the passive: %s", strerror(errno));
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return -1;
    }
    if (child == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (dup2(pipe_fds[0], STDIN_FILENO) < 0)
            _exit(127);
        char *arguments[] = {"commit_bench", "--passive-node", pair.passive_dir, "--master", master,
                             NULL};
        execv("/proc/self/exe", arguments);
        _exit(127);
    }
    close(pipe_fds[0]);
    pair.passive = child;
    pair.passive_stdin = pipe_fds[1];
    if (write(pipe_fds[1], pair.pair_key->bytes, pair.pair_key->length) !=
        (ssize_t)pair.pair_key->length) {
        snprintf(error, error_size, "cannot hand the pair key to the passive: %s",
                 strerror(errno));
        return -1;
    }
    return 0;
}

static void stop_passive(void)
{
    if (pair.passive_stdin >= 0) {
        close(pair.passive_stdin); /* the passive stops at EOF */
        pair.passive_stdin = -1;
    }
    if (pair.passive > 0) {
        for (int i = 0; i < 200; i++) { /* 10 s, then SIGKILL */
            if (waitpid(pair.passive, NULL, WNOHANG) == pair.passive) {
                pair.passive = -1;
                return;
            }
            sleep_seconds(0.05);
        }
        (void)kill(pair.passive, SIGKILL);
        (void)waitpid(pair.passive, NULL, 0);
        pair.passive = -1;
    }
}

/* Waits until the active's replication reports `state` (and writable, when asked). */
static int wait_for_state(const char *state, bool writable, char *error, size_t error_size)
{
    kt_repl_status status;
    for (int waited = 0; waited < PAIR_SETUP_TIMEOUT_MS; waited += 20) {
        kt_repl_get_status(pair.repl, &status);
        if (strcmp(status.state, state) == 0 && (!writable || status.writable))
            return 0;
        if (pair.passive > 0 && waitpid(pair.passive, NULL, WNOHANG) == pair.passive) {
            pair.passive = -1;
            snprintf(error, error_size, "the passive process ended during the set-up");
            return -1;
        }
        sleep_seconds(0.02);
    }
    snprintf(error, error_size, "the pair did not reach %s in %d s (state %s: %s)", state,
             PAIR_SETUP_TIMEOUT_MS / 1000, status.state, status.reason);
    return -1;
}

/* The org and client that own every row (a deposit's client must exist). */
static int add_owner(char *error, size_t error_size)
{
    kt_org org = {.created = (int64_t)time(NULL), .state = KT_STATE_ACTIVE};
    kt_uuid_generate(org.uuid);
    snprintf(org.name, sizeof org.name, "bench");
    snprintf(org.contacts, sizeof org.contacts, "bench@example.com");
    kt_client_record client = {.created = org.created, .state = KT_STATE_ACTIVE};
    kt_secret *secret_key = NULL;
    if (kt_sign_keypair(client.public_key, &secret_key) != 0) {
        snprintf(error, error_size, "cannot make a client key pair");
        return -1;
    }
    kt_secret_free(secret_key);
    kt_fingerprint(client.fingerprint, client.public_key);
    memcpy(client.org_uuid, org.uuid, sizeof client.org_uuid);
    snprintf(client.name, sizeof client.name, "commit-bench");
    if (kt_store_org_add(pair.store, &org) != KT_STORE_OK ||
        kt_store_client_add(pair.store, &client) != KT_STORE_OK) {
        snprintf(error, error_size, "cannot add the bench client: %s",
                 kt_store_error_message(pair.store));
        return -1;
    }
    memcpy(pair.client, client.fingerprint, sizeof pair.client);
    return 0;
}

static void group_commit(group_request *batch)
{
    kt_store_status status = kt_store_begin(pair.store);
    for (group_request *request = batch; status == KT_STORE_OK && request; request = request->next) {
        const bench_row *row = request->row;
        kt_deposit deposit = {.created = row->created, .state = KT_STATE_ACTIVE,
                              .box = (unsigned char *)row->box, .box_length = row->box_length};
        memcpy(deposit.uuid, row->uuid, sizeof deposit.uuid);
        memcpy(deposit.client, pair.client, sizeof deposit.client);
        snprintf(deposit.handle, sizeof deposit.handle, "%s", row->handle);
        request->status = kt_store_deposit_put(pair.store, &deposit);
        if (request->status != KT_STORE_OK)
            snprintf(request->message, sizeof request->message, "%s",
                     kt_store_error_message(pair.store));
    }
    if (status == KT_STORE_OK)
        status = kt_store_commit(pair.store);
    if (status != KT_STORE_OK) {
        for (group_request *request = batch; request; request = request->next) {
            request->status = status;
            snprintf(request->message, sizeof request->message, "commit (%s): %s",
                     kt_store_status_name(status), kt_store_error_message(pair.store));
        }
        kt_store_rollback(pair.store);
        return;
    }
    pair.batches++;
    pair.commits_since_checkpoint++;
}

/* Mutex held: waits at most GROUP_GATHER_US for gather_target queued requests (writer.c). */
static void group_gather(void)
{
    struct timespec deadline;
    if (pair.queued_count >= pair.gather_target || clock_gettime(CLOCK_MONOTONIC, &deadline) != 0)
        return;
    deadline.tv_nsec += GROUP_GATHER_US * 1000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (pair.queued_count < pair.gather_target && !pair.stopping &&
           pthread_cond_clockwait(&pair.queued, &pair.mutex, CLOCK_MONOTONIC, &deadline) == 0) {
    }
}

/* Mutex held, the store free and rows queued: one batch (writer.c's lead_batch). */
static void group_lead(bool gathering)
{
    pair.store_busy = true;
    if (gathering)
        group_gather();
    group_request *batch = pair.head;
    unsigned count = pair.queued_count;
    pair.head = pair.tail = NULL;
    pair.queued_count = 0;
    (void)pthread_mutex_unlock(&pair.mutex);
    group_commit(batch);
    (void)pthread_mutex_lock(&pair.mutex);
    pair.checkpoint_due = pair.commits_since_checkpoint >= pair.checkpoint_commits;
    pair.gather_target = count + pair.queued_count;
    for (group_request *request = batch, *next = NULL; request; request = next) {
        next = request->next;
        request->answered = true;
        pair.rows_committed += request->status == KT_STORE_OK;
        (void)pthread_cond_signal(&request->answer);
    }
    pair.store_busy = false;
    if (pair.head != NULL || pair.checkpoint_due || pair.stopping)
        (void)pthread_cond_signal(&pair.queued);
}

static void *group_writer_main(void *unused)
{
    (void)unused;
    (void)pthread_mutex_lock(&pair.mutex);
    for (;;) {
        while (!(!pair.store_busy && (pair.head != NULL || pair.checkpoint_due)) &&
               !(pair.stopping && !pair.store_busy))
            (void)pthread_cond_wait(&pair.queued, &pair.mutex);
        if (pair.store_busy || (pair.head == NULL && !pair.checkpoint_due))
            break; /* stopping */
        if (pair.head != NULL)
            group_lead(true);
        if (pair.checkpoint_due && !pair.store_busy) {
            pair.store_busy = true;
            pair.checkpoint_due = false;
            (void)pthread_mutex_unlock(&pair.mutex);
            bool done = kt_store_checkpoint(pair.store) == KT_STORE_OK;
            (void)pthread_mutex_lock(&pair.mutex);
            if (done)
                pair.commits_since_checkpoint = 0;
            pair.store_busy = false;
        }
    }
    (void)pthread_mutex_unlock(&pair.mutex);
    return NULL;
}

static void pair_teardown(void)
{
    if (pair.thread_started) {
        (void)pthread_mutex_lock(&pair.mutex);
        pair.stopping = true;
        (void)pthread_cond_signal(&pair.queued);
        (void)pthread_mutex_unlock(&pair.mutex);
        (void)pthread_join(pair.thread, NULL);
        pair.thread_started = false;
    }
    kt_store_close(pair.store); /* before kt_repl_stop: the VFS outlives its connections */
    pair.store = NULL;
    kt_repl_stop(pair.repl);
    pair.repl = NULL;
    stop_passive();
    kt_secret_free(pair.pair_key);
    pair.pair_key = NULL;
}

static int pair_prepare(const bench_config *config, char *error, size_t error_size)
{
    if (kt_crypto_init() != 0) {
        snprintf(error, error_size, "cannot initialise libsodium");
        return -1;
    }
    if (snprintf(pair.active_dir, sizeof pair.active_dir, "%s/active", config->target) >=
            (int)sizeof pair.active_dir ||
        snprintf(pair.passive_dir, sizeof pair.passive_dir, "%s/passive", config->target) >=
            (int)sizeof pair.passive_dir ||
        snprintf(pair.database, sizeof pair.database, "%s/keytrustee.db", pair.active_dir) >=
            (int)sizeof pair.database) {
        snprintf(error, error_size, "the path %s is too long", config->target);
        return -1;
    }
    if (make_directory(config->target, error, error_size) != 0 ||
        make_directory(pair.active_dir, error, error_size) != 0 ||
        make_directory(pair.passive_dir, error, error_size) != 0)
        return -1;
    if (access(pair.database, F_OK) == 0) {
        snprintf(error, error_size, "%s exists: give --target a new directory", pair.database);
        return -1;
    }
    pair.checkpoint_commits = (unsigned)atoi(bench_option(config, "checkpoint_commits", "0"));
    if (pair.checkpoint_commits == 0)
        pair.checkpoint_commits = GROUP_CHECKPOINT_COMMITS;
    const char *port = bench_option(config, "port", NULL);
    if (port != NULL)
        snprintf(pair.port, sizeof pair.port, "%s", port);
    else if (free_port(pair.port, error, error_size) != 0)
        return -1;
    pair.pair_key = kt_secret_new(KT_REPL_PAIR_KEY_BYTES);
    if (pair.pair_key == NULL) {
        snprintf(error, error_size, "out of secure memory");
        return -1;
    }
    kt_random(pair.pair_key->bytes, pair.pair_key->length);
    /* Asynchronous until the passive holds the database: the owner's rows commit alone. */
    kt_repl_config repl_config = {
        .role = KT_REPL_ACTIVE,
        .database_path = pair.database,
        .state_directory = pair.active_dir,
        .listen_host = "127.0.0.1",
        .listen_port = pair.port,
        .pair_key = pair.pair_key,
        .synchronous = false,
        .log = pair_log,
        .log_context = (void *)&pair_log_level,
    };
    if (kt_repl_start(&pair.repl, &repl_config, error, error_size) != 0)
        return -1;
    kt_store_options options = {.writer = true, .create = true,
                                .vfs = kt_repl_vfs_name(pair.repl), .manual_checkpoints = true};
    if (kt_store_open(&pair.store, pair.database, &options, error, error_size) != 0) {
        pair_teardown();
        return -1;
    }
    kt_store_set_commit_classifier(pair.store, kt_repl_commit_failure, pair.repl);
    if (add_owner(error, error_size) != 0 || start_passive(error, error_size) != 0 ||
        wait_for_state("in_sync", false, error, error_size) != 0) {
        pair_teardown();
        return -1;
    }
    kt_repl_set_synchronous(pair.repl, true);
    if (wait_for_state("in_sync", true, error, error_size) != 0) {
        pair_teardown();
        return -1;
    }
    if (pthread_create(&pair.thread, NULL, group_writer_main, NULL) != 0) {
        snprintf(error, error_size, "cannot start the writer thread");
        pair_teardown();
        return -1;
    }
    pair.thread_started = true;
    return 0;
}

static void *pair_open(const bench_config *config, int writer, char *error, size_t error_size)
{
    (void)config;
    (void)writer;
    (void)error;
    (void)error_size;
    return &pair;
}

static bench_put_result pair_put(void *connection, const bench_row *row, char *error,
                                 size_t error_size)
{
    (void)connection;
    group_request request = {.row = row};
    if (pthread_cond_init(&request.answer, NULL) != 0) {
        snprintf(error, error_size, "cannot make a condition variable");
        return BENCH_PUT_FAILED;
    }
    (void)pthread_mutex_lock(&pair.mutex);
    if (pair.tail != NULL)
        pair.tail->next = &request;
    else
        pair.head = &request;
    pair.tail = &request;
    pair.queued_count++;
    if (!pair.store_busy && !pair.checkpoint_due && pair.head == &request &&
        pair.tail == &request && pair.gather_target <= 1) {
        group_lead(false); /* alone: commit on this thread */
    } else {
        if (!pair.store_busy || pair.queued_count >= pair.gather_target)
            (void)pthread_cond_signal(&pair.queued);
        while (!request.answered)
            (void)pthread_cond_wait(&request.answer, &pair.mutex);
    }
    (void)pthread_mutex_unlock(&pair.mutex);
    (void)pthread_cond_destroy(&request.answer);
    if (request.status == KT_STORE_OK)
        return BENCH_PUT_OK;
    snprintf(error, error_size, "%s", request.message);
    return BENCH_PUT_FAILED;
}

static void pair_close(void *connection)
{
    (void)connection;
}

static void pair_finish(void)
{
    if (pair.batches > 0)
        fprintf(stderr, "commit_bench: keytrustee: %" PRIu64 " rows in %" PRIu64
                        " commits (%.2f rows per commit)\n",
                pair.rows_committed, pair.batches,
                (double)pair.rows_committed / (double)pair.batches);
    pair_teardown();
}

/* --passive-node DIR --master HOST:PORT: the passive of the keytrustee backend. */
static int run_passive_node(const char *dir, const char *master)
{
    char host[64], database[PATH_MAX], error[512];
    const char *colon = strrchr(master, ':');
    if (colon == NULL || (size_t)(colon - master) >= sizeof host ||
        snprintf(database, sizeof database, "%s/keytrustee.db", dir) >= (int)sizeof database) {
        fprintf(stderr, "commit_bench --passive-node: bad arguments\n");
        return 2;
    }
    memcpy(host, master, (size_t)(colon - master));
    host[colon - master] = '\0';
    if (kt_crypto_init() != 0)
        return 1;
    kt_secret *key = kt_secret_new(KT_REPL_PAIR_KEY_BYTES);
    if (key == NULL || read(STDIN_FILENO, key->bytes, key->length) != (ssize_t)key->length) {
        fprintf(stderr, "commit_bench --passive-node: no pair key on stdin\n");
        kt_secret_free(key);
        return 1;
    }
    kt_repl_config config = {
        .role = KT_REPL_PASSIVE,
        .database_path = database,
        .state_directory = dir,
        .master_host = host,
        .master_port = colon + 1,
        .pair_key = key,
        .log = pair_log,
        .log_context = (void *)&pair_log_level,
    };
    kt_repl *repl = NULL;
    if (kt_repl_start(&repl, &config, error, sizeof error) != 0) {
        fprintf(stderr, "commit_bench --passive-node: %s\n", error);
        kt_secret_free(key);
        return 1;
    }
    char byte;
    for (;;) { /* until the bench closes the pipe (or ends) */
        ssize_t got = read(STDIN_FILENO, &byte, 1);
        if (got == 0 || (got < 0 && errno != EINTR))
            break;
    }
    kt_repl_stop(repl);
    kt_secret_free(key);
    return 0;
}

static const bench_backend pair_backend = {
    .name = "keytrustee",
    .description = "storage/ + replication/ in this process, a synchronous passive process on "
                   "loopback, keytrustee-db's group commit (--target DIR for both nodes; "
                   "--option port=N, checkpoint_commits=N)",
    .prepare = pair_prepare,
    .open = pair_open,
    .put = pair_put,
    .close = pair_close,
    .finish = pair_finish,
    .version = keytrustee_version_text,
};

/* ---- the backend table: add new backends here ------------------------------------------------ */

static const bench_backend *const backends[] = {
    &sqlite_backend,
    &pair_backend,
    &keytrustee_backend,
};

/* ---- the driver ------------------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct shared_state {
    const bench_backend *backend;
    const bench_config *config;
    pthread_barrier_t ready;
    atomic_bool stop;
    atomic_uint_fast64_t window_start; /* 0 until the warmup is over */
    atomic_uint_fast64_t window_end;   /* 0 until the window closes */
    atomic_bool fatal;
    size_t max_per_writer;
} shared_state;

typedef struct writer_state {
    shared_state *shared;
    int index;
    uint64_t *samples; /* latencies in ns */
    size_t count, capacity;
    uint64_t retries, errors;
    bool opened;
    atomic_bool finished;
    char error[512];
    uint64_t rng[2];
} writer_state;

static uint64_t next_random(uint64_t state[2]) /* xorshift128+ */
{
    uint64_t x = state[0];
    const uint64_t y = state[1];
    state[0] = y;
    x ^= x << 23;
    state[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return state[1] + y;
}

static void make_uuid(uint64_t state[2], char out[37])
{
    unsigned char bytes[16];
    uint64_t a = next_random(state), b = next_random(state);
    memcpy(bytes, &a, 8);
    memcpy(bytes + 8, &b, 8);
    bytes[6] = (unsigned char)((bytes[6] & 0x0f) | 0x40);
    bytes[8] = (unsigned char)((bytes[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[bytes[i] >> 4];
        out[o++] = hex[bytes[i] & 15];
    }
    out[o] = '\0';
}

static bool record(writer_state *writer, uint64_t latency)
{
    if (writer->count == writer->capacity) {
        size_t capacity = writer->capacity == 0 ? 65536 : writer->capacity * 2;
        if (capacity > writer->shared->max_per_writer)
            capacity = writer->shared->max_per_writer;
        if (capacity <= writer->count)
            return false;
        uint64_t *grown = realloc(writer->samples, capacity * sizeof *grown);
        if (grown == NULL)
            return false;
        writer->samples = grown;
        writer->capacity = capacity;
    }
    writer->samples[writer->count++] = latency;
    return true;
}

static void *writer_main(void *argument)
{
    writer_state *writer = argument;
    shared_state *shared = writer->shared;
    void *connection = shared->backend->open(shared->config, writer->index, writer->error,
                                             sizeof writer->error);
    writer->opened = connection != NULL;
    if (connection == NULL)
        atomic_store(&shared->fatal, true);
    pthread_barrier_wait(&shared->ready);
    if (connection == NULL || atomic_load(&shared->fatal)) {
        shared->backend->close(connection);
        atomic_store(&writer->finished, true);
        return NULL;
    }

    bench_row row = {.box_length = BENCH_BOX_BYTES};
    for (unsigned i = 0; i < BENCH_CLIENT_CHARS; i++)
        row.client[i] = "0123456789ABCDEF"[(next_random(writer->rng) >> 7) & 15];
    row.client[BENCH_CLIENT_CHARS] = '\0';
    uint64_t sequence = 0;

    while (!atomic_load_explicit(&shared->stop, memory_order_relaxed)) {
        make_uuid(writer->rng, row.uuid);
        snprintf(row.handle, sizeof row.handle, "bench-%.3d-%.12s-%.8" PRIx64, writer->index % 1000,
                 row.uuid + 24, sequence++ & 0xffffffffu);
        row.created = (int64_t)time(NULL);
        for (size_t i = 0; i < BENCH_BOX_BYTES; i += 8) {
            uint64_t r = next_random(writer->rng);
            memcpy(row.box + i, &r, BENCH_BOX_BYTES - i < 8 ? BENCH_BOX_BYTES - i : 8);
        }

        uint64_t start = now_ns();
        bench_put_result result;
        while ((result = shared->backend->put(connection, &row, writer->error,
                                              sizeof writer->error)) == BENCH_PUT_RETRY) {
            writer->retries++;
            if (atomic_load_explicit(&shared->stop, memory_order_relaxed))
                break;
        }
        uint64_t end = now_ns();
        if (result == BENCH_PUT_FAILED) {
            writer->errors++;
            continue;
        }
        if (result != BENCH_PUT_OK)
            break; /* retrying when the window closed */
        uint64_t window_start = atomic_load_explicit(&shared->window_start, memory_order_relaxed);
        uint64_t window_end = atomic_load_explicit(&shared->window_end, memory_order_relaxed);
        if (window_start != 0 && start >= window_start && (window_end == 0 || end <= window_end)) {
            if (!record(writer, end - start))
                break; /* --max-per-writer reached */
        }
    }
    shared->backend->close(connection);
    atomic_store(&writer->finished, true);
    return NULL;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array (the same rule as bench/benchlib.py). */
static double percentile_ms(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1e6;
}

static void sleep_seconds(double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double parse_number(const char *text, const char *what, double low, double high)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
        fprintf(stderr, "commit_bench: %s must be a number in [%g, %g], not '%s'\n", what, low,
                high, text);
        exit(2);
    }
    return value;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: commit_bench --backend NAME --target WHERE [--writers N] [--seconds S]\n"
            "                    [--warmup S] [--max-per-writer N] [--hang-timeout S]\n"
            "                    [--option KEY=VALUE]...\n"
            "       commit_bench --list-backends\n");
}

int main(int argc, char **argv)
{
    bench_config config = {.writers = 1};
    const char *backend_name = NULL;
    double seconds = 5.0, warmup = 0.5, hang_timeout = 10.0;
    size_t max_per_writer = 20u * 1000u * 1000u;

    if (argc == 5 && strcmp(argv[1], "--passive-node") == 0 && strcmp(argv[3], "--master") == 0)
        return run_passive_node(argv[2], argv[4]);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--list-backends") == 0) {
            for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++)
                printf("%s\t%s\n", backends[b]->name, backends[b]->description);
            return 0;
        }
        if (value == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(arg, "--backend") == 0)
            backend_name = value;
        else if (strcmp(arg, "--target") == 0)
            config.target = value;
        else if (strcmp(arg, "--writers") == 0)
            config.writers = (int)parse_number(value, "--writers", 1, 1024);
        else if (strcmp(arg, "--seconds") == 0)
            seconds = parse_number(value, "--seconds", 0.1, 3600);
        else if (strcmp(arg, "--warmup") == 0)
            warmup = parse_number(value, "--warmup", 0, 600);
        else if (strcmp(arg, "--hang-timeout") == 0)
            hang_timeout = parse_number(value, "--hang-timeout", 0.1, 3600);
        else if (strcmp(arg, "--max-per-writer") == 0)
            max_per_writer = (size_t)parse_number(value, "--max-per-writer", 1, 1e9);
        else if (strcmp(arg, "--option") == 0) {
            const char *equals = strchr(value, '=');
            if (equals == NULL || config.option_count == BENCH_MAX_OPTIONS) {
                fprintf(stderr, "commit_bench: --option wants KEY=VALUE (at most %d)\n",
                        BENCH_MAX_OPTIONS);
                return 2;
            }
            config.option_keys[config.option_count] = strndup(value, (size_t)(equals - value));
            config.option_values[config.option_count++] = equals + 1;
        } else {
            usage();
            return 2;
        }
    }
    if (backend_name == NULL || config.target == NULL) {
        usage();
        return 2;
    }
    const bench_backend *backend = NULL;
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++)
        if (strcmp(backends[b]->name, backend_name) == 0)
            backend = backends[b];
    if (backend == NULL) {
        fprintf(stderr, "commit_bench: no backend '%s' in this build (--list-backends)\n",
                backend_name);
        return 2;
    }

    char error[512] = "";
    if (backend->prepare != NULL && backend->prepare(&config, error, sizeof error) != 0) {
        fprintf(stderr, "commit_bench: %s: %s\n", backend->name, error);
        return 1;
    }

    shared_state shared = {.backend = backend, .config = &config, .max_per_writer = max_per_writer};
    atomic_init(&shared.stop, false);
    atomic_init(&shared.fatal, false);
    atomic_init(&shared.window_start, 0);
    atomic_init(&shared.window_end, 0);
    if (pthread_barrier_init(&shared.ready, NULL, (unsigned)config.writers + 1) != 0) {
        fprintf(stderr, "commit_bench: pthread_barrier_init failed\n");
        return 1;
    }
    writer_state *writers = calloc((size_t)config.writers, sizeof *writers);
    pthread_t *threads = calloc((size_t)config.writers, sizeof *threads);
    if (writers == NULL || threads == NULL) {
        fprintf(stderr, "commit_bench: out of memory\n");
        return 1;
    }
    for (int w = 0; w < config.writers; w++) {
        writers[w].shared = &shared;
        writers[w].index = w;
        atomic_init(&writers[w].finished, false);
        if (getrandom(writers[w].rng, sizeof writers[w].rng, 0) != (ssize_t)sizeof writers[w].rng)
            writers[w].rng[0] = now_ns() ^ (uint64_t)w, writers[w].rng[1] = 0x9e3779b97f4a7c15u;
        writers[w].rng[0] |= 1;
        if (pthread_create(&threads[w], NULL, writer_main, &writers[w]) != 0) {
            fprintf(stderr, "commit_bench: cannot start writer %d\n", w);
            return 1;
        }
    }
    pthread_barrier_wait(&shared.ready);
    if (atomic_load(&shared.fatal)) {
        for (int w = 0; w < config.writers; w++)
            pthread_join(threads[w], NULL);
        if (backend->finish != NULL)
            backend->finish();
        for (int w = 0; w < config.writers; w++)
            if (!writers[w].opened) {
                fprintf(stderr, "commit_bench: %s: writer %d: %s\n", backend->name, w,
                        writers[w].error);
                break;
            }
        return 1;
    }

    sleep_seconds(warmup);
    uint64_t window_start = now_ns();
    atomic_store(&shared.window_start, window_start);
    sleep_seconds(seconds);
    uint64_t window_end = now_ns();
    atomic_store(&shared.window_end, window_end);
    atomic_store(&shared.stop, true);

    /* Wait for the writers, but never longer than --hang-timeout: a commit that hangs (a
     * synchronous peer gone) is reported, not waited for. */
    uint64_t deadline = window_end + (uint64_t)(hang_timeout * 1e9);
    int unfinished = 0;
    for (;;) {
        unfinished = 0;
        for (int w = 0; w < config.writers; w++)
            unfinished += !atomic_load(&writers[w].finished);
        if (unfinished == 0 || now_ns() >= deadline)
            break;
        sleep_seconds(0.005);
    }
    if (unfinished == 0) {
        for (int w = 0; w < config.writers; w++)
            pthread_join(threads[w], NULL);
        if (backend->finish != NULL)
            backend->finish();
    }

    /* The finished writers' arrays are complete; an unfinished writer's count is read as it is
     * (it only appends, and it is stopped before recording anything outside the window). */
    size_t total = 0;
    uint64_t retries = 0, errors = 0;
    for (int w = 0; w < config.writers; w++) {
        total += writers[w].count;
        retries += writers[w].retries;
        errors += writers[w].errors;
    }
    uint64_t *all = malloc((total > 0 ? total : 1) * sizeof *all);
    if (all == NULL) {
        fprintf(stderr, "commit_bench: out of memory\n");
        return 1;
    }
    size_t at = 0;
    long double sum = 0;
    for (int w = 0; w < config.writers; w++) {
        memcpy(all + at, writers[w].samples, writers[w].count * sizeof *all);
        at += writers[w].count;
    }
    for (size_t i = 0; i < total; i++)
        sum += (long double)all[i];
    qsort(all, total, sizeof *all, compare_u64);
    double window = (double)(window_end - window_start) / 1e9;

    const char *first_error = "";
    for (int w = 0; w < config.writers; w++)
        if (writers[w].errors > 0) {
            first_error = writers[w].error;
            break;
        }
    if (errors > 0)
        fprintf(stderr, "commit_bench: %" PRIu64 " failed commits; first: %s\n", errors,
                first_error);

    /* Latency figures are null when nothing committed inside the window. */
    char latency[256] = "\"p50_ms\":null,\"p99_ms\":null,\"p999_ms\":null,\"max_ms\":null,"
                        "\"mean_ms\":null";
    if (total > 0)
        snprintf(latency, sizeof latency,
                 "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,"
                 "\"mean_ms\":%.4f",
                 percentile_ms(all, total, 50.0), percentile_ms(all, total, 99.0),
                 percentile_ms(all, total, 99.9), (double)all[total - 1] / 1e6,
                 (double)(sum / (long double)total) / 1e6);
    printf("{\"backend\":\"%s\",\"version\":\"%s\",\"writers\":%d,\"seconds\":%.3f,"
           "\"commits\":%zu,\"ops_per_s\":%.1f,%s,\"retries\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"unfinished_writers\":%d}\n",
           backend->name, backend->version != NULL ? backend->version() : "", config.writers,
           window, total, (double)total / window, latency, retries, errors, unfinished);
    fflush(stdout);
    if (unfinished > 0)
        _exit(3); /* threads are stuck inside the backend: do not run their cleanup */
    return 0;
}
