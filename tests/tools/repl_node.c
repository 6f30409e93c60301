/*
 * repl_node.c — one replication node for tests: storage/ + replication/ in one small process,
 * driven through a unix socket with a line protocol, so that shell scripts can write, read,
 * kill -9 and restart nodes.
 *
 *   repl_node run --role active|passive|standalone --dir DIR --key-file FILE --control SOCKET
 *                 [--listen HOST:PORT] [--master HOST:PORT] [--sync] [--ack-timeout MS]
 *                 [--heartbeat MS] [--retain BYTES] [--cache-pages N]
 *   repl_node ctl SOCKET COMMAND...   sends one command, prints the answer; exit 0 when it
 *                                     starts with "ok"
 *   repl_node write SOCKET PREFIX COUNT OUTFILE [BIG_EVERY]
 *                                     COUNT puts PREFIX-1.. one after the other from outside the
 *                                     node, each answer appended to OUTFILE ("KEY ANSWER"; none =
 *                                     no answer, unsent = node unreachable); stops at the first
 *                                     write without an answer
 *   repl_node basecopy --master HOST:PORT --key-file FILE --dir DIR     (ktadmin init-slave)
 *   repl_node checksum DB             page checksum (kt_repl_database_checksum)
 *   repl_node rows DB                 BLAKE2b of every row of kv and of orgs, in key order
 *   repl_node genkey FILE             writes a random pair key (64 hex digits)
 *
 * Commands (one line each, one line answered):
 *   put KEY VALUE     INSERT OR REPLACE into kv, its own transaction
 *                     → ok | refused | indeterminate | full | error TEXT
 *   big KEY N         N rows of 2 KiB in one transaction (spills past a small page cache)
 *   org NAME          kt_store_org_add through storage/ (the writer keytrustee-db uses)
 *   exec SQL...       the rest of the line through the writer as one transaction (a schema
 *                     change); VACUUM on its own
 *   bench N           N single-row commits in a row → ok commits=N failed=F per_second=R
 *   get KEY           → ok VALUE | missing
 *   present K1 K2...  → ok 1 0 1 ... (whether kv holds each key, in one read transaction)
 *   count             → ok ROWS
 *   checksum | rows   → ok HEX
 *   integrity         PRAGMA integrity_check → ok ok | error FIRST-LINE
 *   status            → ok role=... state=... epoch=... txid=... hash=... acked=... spooled=...
 *                       peer=0|1 lag=N writable=0|1 reason=...
 *   checkpoint        PRAGMA wal_checkpoint(TRUNCATE) on the writer
 *   sync on|off       kt_repl_set_synchronous
 * A commit answered ok passes kt_repl_failpoint("active-before-answer") first: the step between
 * COMMIT returning and the client's answer, which only the caller of replication/ can reach.
 * The database is DIR/keytrustee.db; replication keeps its files in DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "replication/replication.h"
#include "storage/storage.h"

#define CONTROL_LINE_BYTES 16384

typedef struct node {
    kt_repl *repl;
    sqlite3 *writer;     /* kv table, through the replication VFS (active, standalone) */
    kt_store *store;     /* storage/'s writer on the same database, same VFS */
    sqlite3 *reader;     /* passive: plain reader */
    char db_path[4096];
    char name[32];
    int cache_pages;
} node;

static volatile sig_atomic_t stop_requested;

static void on_signal(int signal_number)
{
    (void)signal_number;
    stop_requested = 1;
}

static void log_line(void *context, kt_repl_log_level level, const char *message)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    struct timespec now;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    fprintf(stderr, "%lld.%03ld %s %s: %s\n", (long long)now.tv_sec, now.tv_nsec / 1000000,
            (const char *)context, names[level], message);
}

static int split_address(const char *text, char *host, size_t host_size, char *port,
                         size_t port_size)
{
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= host_size || strlen(colon + 1) >= port_size) {
        return -1;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static kt_secret *read_key(const char *path)
{
    FILE *file = fopen(path, "re");
    char hex[80] = "";
    if (file == NULL) {
        return NULL;
    }
    if (fscanf(file, "%64s", hex) != 1) {
        hex[0] = '\0';
    }
    (void)fclose(file);
    if (strlen(hex) != 64) {
        return NULL;
    }
    kt_secret *key = kt_secret_new(32);
    for (int index = 0; key != NULL && index < 32; index++) {
        unsigned value = 0;
        if (sscanf(hex + 2 * index, "%2x", &value) != 1) {
            kt_secret_free(key);
            return NULL;
        }
        key->bytes[index] = (unsigned char)value;
    }
    return key;
}

/* ---- the writer ----------------------------------------------------------------------------- */

static int open_writer(node *self, const char *vfs, char *error, size_t error_size)
{
    int rc = sqlite3_open_v2(self->db_path, &self->writer,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE,
                             vfs);
    char sql[256];
    (void)snprintf(sql, sizeof sql,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                   "PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=%d; "
                   "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB)",
                   self->cache_pages);
    int enabled = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_db_config(self->writer, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &enabled);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_busy_timeout(self->writer, 5000);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(self->writer, sql, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        (void)snprintf(error, error_size, "cannot open the writer: %s",
                       self->writer ? sqlite3_errmsg(self->writer) : sqlite3_errstr(rc));
        return -1;
    }
    kt_store_options options = {true, true, vfs, true, 5000};
    if (kt_store_open(&self->store, self->db_path, &options, error, error_size) != 0) {
        return -1;
    }
    kt_store_set_commit_classifier(self->store, kt_repl_commit_failure, self->repl);
    return 0;
}

static const char *outcome_word(kt_store_status status)
{
    switch (status) {
    case KT_STORE_OK: return "ok";
    case KT_STORE_REFUSED: return "refused";
    case KT_STORE_INDETERMINATE: return "indeterminate";
    case KT_STORE_FULL: return "full";
    default: return "error";
    }
}

/* The answer to a COMMIT (or an autocommit statement) that returned `rc`. */
static void answer_commit(node *self, int rc, char *answer, size_t answer_size)
{
    if (rc == SQLITE_OK) {
        kt_repl_failpoint("active-before-answer");
        (void)snprintf(answer, answer_size, "ok");
        return;
    }
    kt_store_status status =
        kt_repl_commit_failure(self->repl, sqlite3_extended_errcode(self->writer));
    (void)snprintf(answer, answer_size, "%s", outcome_word(status));
    if (status == KT_STORE_ERROR) {
        (void)snprintf(answer, answer_size, "error %s", sqlite3_errmsg(self->writer));
    }
    if (!sqlite3_get_autocommit(self->writer)) {
        (void)sqlite3_exec(self->writer, "ROLLBACK", NULL, NULL, NULL);
    }
}

/* Runs statements as one transaction; the answer names the commit's outcome. */
static void run_transaction(node *self, sqlite3_stmt *statement, int rows, const char *key,
                            char *answer, size_t answer_size)
{
    if (self->writer == NULL) {
        (void)snprintf(answer, answer_size, "error not a writer");
        return;
    }
    int rc = sqlite3_exec(self->writer, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int row = 0; rc == SQLITE_OK && row < rows; row++) {
        char row_key[300];
        (void)snprintf(row_key, sizeof row_key, rows == 1 ? "%s" : "%s-%d", key, row);
        (void)sqlite3_bind_text(statement, 1, row_key, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(statement) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(self->writer);
        (void)sqlite3_reset(statement);
    }
    if (rc != SQLITE_OK) {
        (void)snprintf(answer, answer_size, "error %s", sqlite3_errmsg(self->writer));
        (void)sqlite3_exec(self->writer, "ROLLBACK", NULL, NULL, NULL);
        return;
    }
    answer_commit(self, sqlite3_exec(self->writer, "COMMIT", NULL, NULL, NULL), answer,
                  answer_size);
}

static void command_put(node *self, const char *key, const char *value, char *answer,
                        size_t answer_size)
{
    sqlite3_stmt *statement = NULL;
    if (self->writer == NULL ||
        sqlite3_prepare_v2(self->writer, "INSERT OR REPLACE INTO kv VALUES (?1, ?2)", -1,
                           &statement, NULL) != SQLITE_OK) {
        (void)snprintf(answer, answer_size, "error cannot write here");
        return;
    }
    (void)sqlite3_bind_text(statement, 2, value, -1, SQLITE_TRANSIENT);
    run_transaction(self, statement, 1, key, answer, answer_size);
    (void)sqlite3_finalize(statement);
}

static void command_big(node *self, const char *key, int rows, char *answer, size_t answer_size)
{
    sqlite3_stmt *statement = NULL;
    if (self->writer == NULL ||
        sqlite3_prepare_v2(self->writer, "INSERT OR REPLACE INTO kv VALUES (?1, randomblob(2048))",
                           -1, &statement, NULL) != SQLITE_OK) {
        (void)snprintf(answer, answer_size, "error cannot write here");
        return;
    }
    run_transaction(self, statement, rows, key, answer, answer_size);
    (void)sqlite3_finalize(statement);
}

static int compare_doubles(const void *left, const void *right)
{
    double a = *(const double *)left, b = *(const double *)right;
    return (a > b) - (a < b);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* N single-row commits, one after the other, with a TRUNCATE checkpoint every 1,000 as
 * keytrustee-db's writer does: how many synchronous commits a second, and their latency. */
static void command_bench(node *self, int commits, char *answer, size_t answer_size)
{
    double *latency = calloc(commits > 0 ? (size_t)commits : 1, sizeof *latency);
    if (latency == NULL || commits <= 0) {
        free(latency);
        (void)snprintf(answer, answer_size, "error bench needs a count");
        return;
    }
    struct timespec start, one;
    (void)clock_gettime(CLOCK_MONOTONIC, &start);
    int failed = 0;
    for (int index = 0; index < commits; index++) {
        char key[64];
        (void)snprintf(key, sizeof key, "bench-%d", index);
        (void)clock_gettime(CLOCK_MONOTONIC, &one);
        command_put(self, key, "value", answer, answer_size);
        if (index % 1000 == 999 && self->writer != NULL) {
            (void)sqlite3_exec(self->writer, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        }
        latency[index] = seconds_since(&one) * 1000;
        failed += strcmp(answer, "ok") != 0;
    }
    double seconds = seconds_since(&start);
    qsort(latency, (size_t)commits, sizeof *latency, compare_doubles);
    (void)snprintf(answer, answer_size,
                   "ok commits=%d failed=%d seconds=%.3f per_second=%.0f p50_ms=%.3f "
                   "p99_ms=%.3f max_ms=%.3f",
                   commits, failed, seconds, seconds > 0 ? commits / seconds : 0.0,
                   latency[commits / 2], latency[(size_t)commits * 99 / 100],
                   latency[commits - 1]);
    free(latency);
}

/* SQL text through the writer as one transaction (a schema change, say); VACUUM, which cannot
 * run inside a transaction, on its own. */
static void command_exec(node *self, const char *sql, char *answer, size_t answer_size)
{
    if (self->writer == NULL || sql == NULL) {
        (void)snprintf(answer, answer_size, "error not a writer");
        return;
    }
    bool vacuum = strncmp(sql, "VACUUM", 6) == 0;
    int rc = vacuum ? SQLITE_OK : sqlite3_exec(self->writer, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK && !vacuum) {
        rc = sqlite3_exec(self->writer, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            (void)snprintf(answer, answer_size, "error %s", sqlite3_errmsg(self->writer));
            (void)sqlite3_exec(self->writer, "ROLLBACK", NULL, NULL, NULL);
            return;
        }
        rc = sqlite3_exec(self->writer, "COMMIT", NULL, NULL, NULL);
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_exec(self->writer, sql, NULL, NULL, NULL);
    }
    answer_commit(self, rc, answer, answer_size);
}

static void command_org(node *self, const char *name, char *answer, size_t answer_size)
{
    if (self->store == NULL) {
        (void)snprintf(answer, answer_size, "error not a writer");
        return;
    }
    kt_org org;
    memset(&org, 0, sizeof org);
    kt_uuid_generate(org.uuid);
    (void)snprintf(org.name, sizeof org.name, "%s", name);
    (void)snprintf(org.contacts, sizeof org.contacts, "%s@example.com", name);
    org.created = time(NULL);
    org.state = KT_STATE_ACTIVE;
    kt_store_status status = kt_store_org_add(self->store, &org);
    if (status == KT_STORE_OK) {
        kt_repl_failpoint("active-before-answer");
    }
    if (status == KT_STORE_OK || status == KT_STORE_REFUSED || status == KT_STORE_INDETERMINATE ||
        status == KT_STORE_FULL) {
        (void)snprintf(answer, answer_size, "%s", outcome_word(status));
    } else {
        (void)snprintf(answer, answer_size, "error %s", kt_store_error_message(self->store));
    }
}

/* ---- reading -------------------------------------------------------------------------------- */

static sqlite3 *reading_connection(node *self)
{
    if (self->writer != NULL) {
        return self->writer;
    }
    if (self->reader == NULL &&
        sqlite3_open_v2(self->db_path, &self->reader, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        (void)sqlite3_close(self->reader);
        self->reader = NULL;
    }
    if (self->reader != NULL) {
        (void)sqlite3_busy_timeout(self->reader, 5000);
    }
    return self->reader;
}

static void command_get(node *self, const char *key, char *answer, size_t answer_size)
{
    sqlite3 *db = reading_connection(self);
    sqlite3_stmt *statement = NULL;
    if (db == NULL ||
        sqlite3_prepare_v2(db, "SELECT value FROM kv WHERE key = ?1", -1, &statement, NULL) !=
            SQLITE_OK) {
        (void)snprintf(answer, answer_size, "missing");
        return;
    }
    (void)sqlite3_bind_text(statement, 1, key, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(statement) == SQLITE_ROW) {
        (void)snprintf(answer, answer_size, "ok %s", (const char *)sqlite3_column_text(statement, 0));
    } else {
        (void)snprintf(answer, answer_size, "missing");
    }
    (void)sqlite3_finalize(statement);
}

static void command_count(node *self, char *answer, size_t answer_size)
{
    sqlite3 *db = reading_connection(self);
    sqlite3_stmt *statement = NULL;
    if (db == NULL ||
        sqlite3_prepare_v2(db, "SELECT count(*) FROM kv", -1, &statement, NULL) != SQLITE_OK ||
        sqlite3_step(statement) != SQLITE_ROW) {
        (void)snprintf(answer, answer_size, "ok 0");
    } else {
        (void)snprintf(answer, answer_size, "ok %lld", sqlite3_column_int64(statement, 0));
    }
    (void)sqlite3_finalize(statement);
}

static void command_integrity(node *self, char *answer, size_t answer_size)
{
    sqlite3 *db = reading_connection(self);
    sqlite3_stmt *statement = NULL;
    if (db == NULL ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &statement, NULL) != SQLITE_OK ||
        sqlite3_step(statement) != SQLITE_ROW) {
        (void)snprintf(answer, answer_size, "error cannot run integrity_check");
    } else {
        const unsigned char *first = sqlite3_column_text(statement, 0);
        bool good = first != NULL && strcmp((const char *)first, "ok") == 0;
        (void)snprintf(answer, answer_size, "%s %s", good ? "ok" : "error",
                       first ? (const char *)first : "");
    }
    (void)sqlite3_finalize(statement);
}

/* "present K1 K2 ...": one digit per key, 1 when kv holds it, in one read transaction. */
static void command_present(node *self, char *keys, char *answer, size_t answer_size)
{
    sqlite3 *db = reading_connection(self);
    sqlite3_stmt *statement = NULL;
    if (db == NULL ||
        sqlite3_prepare_v2(db, "SELECT 1 FROM kv WHERE key = ?1", -1, &statement, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        (void)sqlite3_finalize(statement);
        (void)snprintf(answer, answer_size, "error cannot read");
        return;
    }
    size_t used = (size_t)snprintf(answer, answer_size, "ok");
    char *save = NULL;
    for (char *key = strtok_r(keys, " \n", &save); key && used + 3 < answer_size;
         key = strtok_r(NULL, " \n", &save)) {
        (void)sqlite3_bind_text(statement, 1, key, -1, SQLITE_TRANSIENT);
        bool found = sqlite3_step(statement) == SQLITE_ROW;
        (void)sqlite3_reset(statement);
        used += (size_t)snprintf(answer + used, answer_size - used, " %d", found ? 1 : 0);
    }
    (void)sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    (void)sqlite3_finalize(statement);
}

/* BLAKE2b over every row of kv and orgs, in key order: "the same rows" as a single value. */
static int rows_digest(const char *db_path, char *out, size_t out_size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *statement = NULL;
    kt_hash_state state;
    kt_hash_init(&state);
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    const char *sql = "SELECT 'kv', key, hex(value) FROM kv UNION ALL "
                      "SELECT 'org', name, uuid || contacts FROM orgs ORDER BY 1, 2";
    if (rc == SQLITE_OK) {
        (void)sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_prepare_v2(db, sql, -1, &statement, NULL);
        if (rc != SQLITE_OK) { /* no orgs table (storage never ran here) */
            rc = sqlite3_prepare_v2(db, "SELECT 'kv', key, hex(value) FROM kv ORDER BY 2", -1,
                                    &statement, NULL);
        }
    }
    while (rc == SQLITE_OK && sqlite3_step(statement) == SQLITE_ROW) {
        for (int column = 0; column < 3; column++) {
            const unsigned char *text = sqlite3_column_text(statement, column);
            kt_hash_update(&state, text ? text : (const unsigned char *)"", text ? strlen((const char *)text) + 1 : 1);
        }
    }
    (void)sqlite3_finalize(statement);
    (void)sqlite3_close(db);
    unsigned char hash[KT_HASH_BYTES];
    kt_hash_final(&state, hash);
    if (rc != SQLITE_OK) {
        return -1;
    }
    for (size_t index = 0; index < KT_HASH_BYTES && 2 * index + 2 < out_size; index++) {
        (void)snprintf(out + 2 * index, 3, "%02x", hash[index]);
    }
    return 0;
}

static void command_status(node *self, char *answer, size_t answer_size)
{
    kt_repl_status status;
    kt_repl_get_status(self->repl, &status);
    char reason[sizeof status.reason];
    (void)snprintf(reason, sizeof reason, "%s", status.reason[0] ? status.reason : "-");
    for (char *at = reason; *at; at++) {
        *at = *at == ' ' ? '_' : *at;
    }
    char hash[KT_REPL_HASH_HEX_CHARS + 1];
    kt_repl_position_hex(&status.position, hash);
    (void)snprintf(answer, answer_size,
                   "ok role=%s state=%s epoch=%llu txid=%llu hash=%s acked=%llu spooled=%llu "
                   "peer=%d lag=%llu writable=%d reason=%s",
                   kt_repl_role_name(status.role), status.state,
                   (unsigned long long)status.epoch, (unsigned long long)status.position.txid, hash,
                   (unsigned long long)status.peer_position.txid,
                   (unsigned long long)status.spooled_txid, status.peer_connected ? 1 : 0,
                   (unsigned long long)status.lag_transactions, status.writable ? 1 : 0, reason);
}

/* The commands whose argument is the rest of the line; false when `line` is none of them. */
static bool execute_rest(node *self, char *line, char *answer, size_t answer_size)
{
    char *rest = strchr(line, ' ');
    if (rest == NULL) {
        return false;
    }
    *rest++ = '\0';
    rest[strcspn(rest, "\n")] = '\0';
    if (strcmp(line, "exec") == 0) {
        command_exec(self, rest, answer, answer_size);
    } else if (strcmp(line, "present") == 0) {
        command_present(self, rest, answer, answer_size);
    } else {
        rest[-1] = ' ';
        return false;
    }
    return true;
}

static void execute(node *self, char *line, char *answer, size_t answer_size)
{
    if (execute_rest(self, line, answer, answer_size)) {
        return;
    }
    char *words[4] = {NULL, NULL, NULL, NULL};
    char *save = NULL;
    for (int index = 0; index < 4; index++) {
        words[index] = strtok_r(index == 0 ? line : NULL, index == 2 ? "\n" : " \n", &save);
    }
    const char *command = words[0] ? words[0] : "";
    char hex[KT_REPL_HASH_HEX_CHARS + 1], error[256];
    if (strcmp(command, "integrity") == 0) {
        command_integrity(self, answer, answer_size);
    } else if (strcmp(command, "put") == 0 && words[1] && words[2]) {
        command_put(self, words[1], words[2], answer, answer_size);
    } else if (strcmp(command, "big") == 0 && words[1] && words[2]) {
        command_big(self, words[1], atoi(words[2]), answer, answer_size);
    } else if (strcmp(command, "org") == 0 && words[1]) {
        command_org(self, words[1], answer, answer_size);
    } else if (strcmp(command, "bench") == 0 && words[1]) {
        command_bench(self, atoi(words[1]), answer, answer_size);
    } else if (strcmp(command, "get") == 0 && words[1]) {
        command_get(self, words[1], answer, answer_size);
    } else if (strcmp(command, "count") == 0) {
        command_count(self, answer, answer_size);
    } else if (strcmp(command, "checksum") == 0) {
        if (kt_repl_database_checksum(self->db_path, hex, error, sizeof error) == 0) {
            (void)snprintf(answer, answer_size, "ok %s", hex);
        } else {
            (void)snprintf(answer, answer_size, "error %s", error);
        }
    } else if (strcmp(command, "rows") == 0) {
        if (rows_digest(self->db_path, hex, sizeof hex) == 0) {
            (void)snprintf(answer, answer_size, "ok %s", hex);
        } else {
            (void)snprintf(answer, answer_size, "error cannot read rows");
        }
    } else if (strcmp(command, "status") == 0) {
        command_status(self, answer, answer_size);
    } else if (strcmp(command, "checkpoint") == 0 && self->writer) {
        int rc = sqlite3_exec(self->writer, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        (void)snprintf(answer, answer_size, rc == SQLITE_OK ? "ok" : "error %s",
                       sqlite3_errmsg(self->writer));
    } else if (strcmp(command, "sync") == 0 && words[1]) {
        kt_repl_set_synchronous(self->repl, strcmp(words[1], "on") == 0);
        (void)snprintf(answer, answer_size, "ok");
    } else {
        (void)snprintf(answer, answer_size, "error unknown command");
    }
}

/* ---- the control socket --------------------------------------------------------------------- */

static int listen_control(const char *path)
{
    struct sockaddr_un address = {0};
    address.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address.sun_path) {
        return -1;
    }
    strcpy(address.sun_path, path);
    (void)unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 8) != 0) {
        if (fd >= 0) {
            (void)close(fd);
        }
        return -1;
    }
    return fd;
}

static void serve_client(node *self, int client)
{
    char line[CONTROL_LINE_BYTES];
    size_t used = 0;
    while (used < sizeof line - 1) {
        ssize_t got = read(client, line + used, sizeof line - 1 - used);
        if (got <= 0) {
            break;
        }
        used += (size_t)got;
        if (memchr(line, '\n', used) != NULL) {
            break;
        }
    }
    line[used] = '\0';
    char answer[CONTROL_LINE_BYTES];
    execute(self, line, answer, sizeof answer);
    size_t length = strlen(answer);
    answer[length++] = '\n';
    (void)!write(client, answer, length);
}

static void serve(node *self, int listener)
{
    while (!stop_requested) {
        struct pollfd poller = {listener, POLLIN, 0};
        if (poll(&poller, 1, 200) <= 0) {
            continue;
        }
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client >= 0) {
            serve_client(self, client);
            (void)close(client);
        }
    }
}

/* ---- commands ------------------------------------------------------------------------------- */

static const char *option(int argc, char **argv, const char *name)
{
    for (int index = 2; index < argc - 1; index++) {
        if (strcmp(argv[index], name) == 0) {
            return argv[index + 1];
        }
    }
    return NULL;
}

static bool flag(int argc, char **argv, const char *name)
{
    for (int index = 2; index < argc; index++) {
        if (strcmp(argv[index], name) == 0) {
            return true;
        }
    }
    return false;
}

static int run(int argc, char **argv)
{
    const char *role = option(argc, argv, "--role"), *dir = option(argc, argv, "--dir");
    const char *key_file = option(argc, argv, "--key-file");
    const char *control = option(argc, argv, "--control");
    if (!role || !dir || !key_file || !control) {
        fprintf(stderr, "repl_node run: --role, --dir, --key-file and --control are required\n");
        return 2;
    }
    node self;
    memset(&self, 0, sizeof self);
    (void)snprintf(self.db_path, sizeof self.db_path, "%s/keytrustee.db", dir);
    (void)snprintf(self.name, sizeof self.name, "%s", role);
    self.cache_pages = option(argc, argv, "--cache-pages") ? atoi(option(argc, argv, "--cache-pages")) : 2000;
    kt_secret *key = read_key(key_file);
    char listen_host[256] = "127.0.0.1", listen_port[32] = "11381";
    char master_host[256] = "", master_port[32] = "11381";
    if (option(argc, argv, "--listen") &&
        split_address(option(argc, argv, "--listen"), listen_host, sizeof listen_host,
                      listen_port, sizeof listen_port) != 0) {
        return 2;
    }
    if (option(argc, argv, "--master") &&
        split_address(option(argc, argv, "--master"), master_host, sizeof master_host,
                      master_port, sizeof master_port) != 0) {
        return 2;
    }
    kt_repl_config config;
    memset(&config, 0, sizeof config);
    config.role = strcmp(role, "active") == 0    ? KT_REPL_ACTIVE
                  : strcmp(role, "passive") == 0 ? KT_REPL_PASSIVE
                                                 : KT_REPL_STANDALONE;
    config.database_path = self.db_path;
    config.state_directory = dir;
    config.listen_host = listen_host;
    config.listen_port = listen_port;
    config.master_host = master_host[0] ? master_host : NULL;
    config.master_port = master_port;
    config.pair_key = key;
    config.synchronous = flag(argc, argv, "--sync");
    config.ack_timeout_ms = option(argc, argv, "--ack-timeout") ? atoi(option(argc, argv, "--ack-timeout")) : 0;
    config.heartbeat_ms = option(argc, argv, "--heartbeat") ? atoi(option(argc, argv, "--heartbeat")) : 0;
    config.retain_bytes = option(argc, argv, "--retain") ? strtoull(option(argc, argv, "--retain"), NULL, 10) : 0;
    config.log = log_line;
    config.log_context = self.name;
    char error[512];
    if (kt_repl_start(&self.repl, &config, error, sizeof error) != 0) {
        fprintf(stderr, "repl_node: %s\n", error);
        kt_secret_free(key);
        return 1;
    }
    if (config.role != KT_REPL_PASSIVE &&
        open_writer(&self, kt_repl_vfs_name(self.repl), error, sizeof error) != 0) {
        fprintf(stderr, "repl_node: %s\n", error);
        kt_store_close(self.store);
        (void)sqlite3_close(self.writer);
        kt_repl_stop(self.repl);
        kt_secret_free(key);
        return 1;
    }
    int listener = listen_control(control);
    if (listener < 0) {
        fprintf(stderr, "repl_node: cannot listen on %s\n", control);
        return 1;
    }
    fprintf(stderr, "repl_node: %s ready\n", role);
    serve(&self, listener);
    (void)close(listener);
    (void)unlink(control);
    kt_store_close(self.store);
    (void)sqlite3_close(self.writer);
    (void)sqlite3_close(self.reader);
    kt_repl_stop(self.repl);
    kt_secret_free(key);
    return 0;
}

/* Sends one command line and reads the one-line answer ("" when the node closed the connection
 * without one). Returns -1 when the node could not be reached (nothing was sent). */
static int ask(const char *socket_path, const char *line, char *answer, size_t answer_size)
{
    struct sockaddr_un address = {0};
    address.sun_family = AF_UNIX;
    (void)snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        if (fd >= 0) {
            (void)close(fd);
        }
        return -1;
    }
    (void)!write(fd, line, strlen(line));
    size_t used = 0;
    ssize_t got;
    while (used < answer_size - 1 &&
           (got = read(fd, answer + used, answer_size - 1 - used)) > 0) {
        used += (size_t)got;
    }
    answer[used] = '\0';
    (void)close(fd);
    return 0;
}

static int control_command(int argc, char **argv)
{
    if (argc < 4) {
        return 2;
    }
    char line[CONTROL_LINE_BYTES] = "";
    for (int index = 3; index < argc; index++) {
        (void)strncat(line, argv[index], sizeof line - strlen(line) - 2);
        (void)strncat(line, index + 1 < argc ? " " : "\n", sizeof line - strlen(line) - 1);
    }
    char answer[CONTROL_LINE_BYTES];
    if (ask(argv[2], line, answer, sizeof answer) != 0) {
        printf("error cannot reach %s\n", argv[2]);
        return 1;
    }
    fputs(answer, stdout);
    return strncmp(answer, "ok", 2) == 0 ? 0 : 1;
}

/* repl_node write SOCKET PREFIX COUNT OUTFILE [BIG_EVERY]: COUNT writes one after the other, each
 * answer appended to OUTFILE as "KEY ANSWER" as soon as it arrives (none: sent, no answer;
 * unsent: the node could not be reached, the write never left). Every BIG_EVERY-th write is a
 * transaction larger than the page cache. Stops after the first write that got no answer. */
static int write_command(int argc, char **argv)
{
    if (argc < 6) {
        return 2;
    }
    int count = atoi(argv[4]), big_every = argc > 6 ? atoi(argv[6]) : 0;
    FILE *out = fopen(argv[5], "ae");
    if (out == NULL) {
        return 1;
    }
    for (int index = 1; index <= count; index++) {
        char line[300], answer[256], key[200];
        (void)snprintf(key, sizeof key, "%s-%d", argv[3], index);
        bool big = big_every > 0 && index % big_every == 0;
        (void)snprintf(line, sizeof line, big ? "big %s 40\n" : "put %s v%d\n", key, index);
        int reached = ask(argv[2], line, answer, sizeof answer);
        answer[strcspn(answer, " \n")] = '\0';
        const char *word = reached != 0 ? "unsent" : answer[0] ? answer : "none";
        /* a big write's rows are KEY-0 ... KEY-39: the first one stands for the transaction */
        fprintf(out, "%s%s %s\n", key, big ? "-0" : "", word);
        (void)fflush(out);
        if (reached != 0 || answer[0] == '\0') {
            break;
        }
    }
    return fclose(out) == 0 ? 0 : 1;
}

static int basecopy_command(int argc, char **argv)
{
    const char *master = option(argc, argv, "--master"), *dir = option(argc, argv, "--dir");
    const char *key_file = option(argc, argv, "--key-file");
    char host[256], port[32], db_path[4096], error[512];
    if (!master || !dir || !key_file ||
        split_address(master, host, sizeof host, port, sizeof port) != 0) {
        return 2;
    }
    (void)snprintf(db_path, sizeof db_path, "%s/keytrustee.db", dir);
    kt_secret *key = read_key(key_file);
    kt_repl_config config;
    memset(&config, 0, sizeof config);
    config.role = KT_REPL_PASSIVE;
    config.database_path = db_path;
    config.state_directory = dir;
    config.master_host = host;
    config.master_port = port;
    config.pair_key = key;
    config.log = log_line;
    config.log_context = "basecopy";
    int result = kt_repl_base_copy(&config, error, sizeof error);
    if (result != 0) {
        fprintf(stderr, "repl_node: %s\n", error);
    }
    kt_secret_free(key);
    return result == 0 ? 0 : 1;
}

static int genkey_command(const char *path)
{
    unsigned char key[32];
    kt_random(key, sizeof key);
    FILE *file = fopen(path, "we");
    if (file == NULL) {
        return 1;
    }
    for (size_t index = 0; index < sizeof key; index++) {
        fprintf(file, "%02x", key[index]);
    }
    fprintf(file, "\n");
    return fclose(file) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (argc < 2 || kt_crypto_init() != 0) {
        fprintf(stderr, "usage: repl_node run|ctl|basecopy|checksum|rows|genkey ...\n");
        return 2;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    (void)sigaction(SIGTERM, &action, NULL);
    (void)sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
    const char *command = argv[1];
    char hex[KT_REPL_HASH_HEX_CHARS + 1], error[512];
    if (strcmp(command, "run") == 0) {
        return run(argc, argv);
    }
    if (strcmp(command, "ctl") == 0) {
        return control_command(argc, argv);
    }
    if (strcmp(command, "write") == 0) {
        return write_command(argc, argv);
    }
    if (strcmp(command, "basecopy") == 0) {
        return basecopy_command(argc, argv);
    }
    if (strcmp(command, "checksum") == 0 && argc == 3) {
        if (kt_repl_database_checksum(argv[2], hex, error, sizeof error) != 0) {
            fprintf(stderr, "%s\n", error);
            return 1;
        }
        printf("%s\n", hex);
        return 0;
    }
    if (strcmp(command, "rows") == 0 && argc == 3) {
        if (rows_digest(argv[2], hex, sizeof hex) != 0) {
            return 1;
        }
        printf("%s\n", hex);
        return 0;
    }
    if (strcmp(command, "genkey") == 0 && argc == 3) {
        return genkey_command(argv[2]);
    }
    fprintf(stderr, "usage: repl_node run|ctl|basecopy|checksum|rows|genkey ...\n");
    return 2;
}
