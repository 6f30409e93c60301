/*
 * backup.c — the backup op, and the last backup's outcome for the status op.
 *
 * `ktadmin backup` asks keytrustee-db for a consistent copy of what only keytrustee-db may read
 * while it runs: the database and the replication state beside it. keytrustee-db writes the copy
 * into a new private directory (mkdtemp, 0700) inside the database directory and answers with its
 * path; ktadmin packs it, with .keytrustee, into the backup file and removes the directory.
 *
 *   request  {"op": "backup"}
 *   response {"ok": true, "directory": PATH, "files": [NAME...], "role", "epoch",
 *             "position": {epoch, txid, hash}, "schema_version", "version", "sqlite_version",
 *             "time"}
 *
 * Files written: keytrustee.db (always), keytrustee-repl.state and keytrustee-repl.log (when the
 * node has them: replication/replication.h names them). The copy is what a restored node needs
 * to take up where the copy was made: on a passive, the handshake then streams what the active
 * committed since (or sends a full copy when the active no longer has that history).
 *
 * Consistency. The database is copied page for page with SQLite's backup API from a read
 * transaction on a connection of our own (never the writer), so writes go on during the copy;
 * page-for-page matters because a passive re-applies whole page images on top of it. What must
 * agree with that snapshot differs by role:
 *   - standalone or active: the replication log's tip must be exactly the snapshot's position, or
 *     the restored node's log and database would disagree. Both are taken in one moment inside a
 *     batch (kt_writer_run): only the batch's leader, which alone holds the writer store, commits
 *     or appends to the log, and it runs our function before its batch commits, so no commit is
 *     in flight. In that moment we note the log's
 *     length (later appends are not copied), read the state file, and start the read transaction.
 *     The writer waits only for that, not for the copy.
 *   - passive: the log (its spool) and the state file may only say what the database holds at
 *     least, never more (replication/apply.c: APPLIED records follow the data). So they are read
 *     first and the snapshot is started after them: it holds at least what they say. Re-applying
 *     transactions the snapshot already holds is harmless (apply.c), and a torn record at the end
 *     of the copied spool is cut off when the restored node opens it (spool.c).
 * "position" is the replication status read in that moment (on a passive, before the state
 * files): the snapshot holds at least that position.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/keytrustee-db/service.h"

#ifndef KT_VERSION
#define KT_VERSION "unknown"
#endif

#define REPLICATION_LOG_FILE   "keytrustee-repl.log"
#define REPLICATION_STATE_FILE "keytrustee-repl.state"
#define STATE_FILE_MAX         4096u
#define COPY_BUFFER_BYTES      (1u << 20)
#define SOURCE_BUSY_TIMEOUT_MS 5000

typedef struct backup_run {
    kt_db_service *service;
    char directory[PATH_MAX];
    sqlite3 *source;          /* our own reader connection; holds the snapshot */
    bool snapshot_open;
    uint32_t schema_cookie;   /* PRAGMA schema_version of the snapshot */
    int schema_version;       /* PRAGMA user_version: keytrustee's schema version */
    int log_fd;               /* the replication log as of the moment, -1 when none */
    uint64_t log_length;
    char state[STATE_FILE_MAX];
    size_t state_length;
    bool has_state;
    json_t *replication;      /* replication status at the moment */
    bool captured;
    char error[512];
} backup_run;

/* ---- small file helpers --------------------------------------------------------------------- */

static void set_error(backup_run *run, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(backup_run *run, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    (void)vsnprintf(run->error, sizeof run->error, format, arguments);
    va_end(arguments);
}

static int join(char *out, const char *directory, const char *name, backup_run *run)
{
    if (kt_path_join(out, PATH_MAX, directory, name) == 0)
        return 0;
    set_error(run, "the path %s/%s is too long", directory, name);
    return -1;
}


static int create_file(const char *path, backup_run *run)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        set_error(run, "cannot create %s: %s", path, strerror(errno));
    return fd;
}

static int finish_file(int fd, const char *path, backup_run *run)
{
    if (fsync(fd) != 0) {
        set_error(run, "cannot flush %s: %s", path, strerror(errno));
        (void)close(fd);
        return -1;
    }
    if (close(fd) != 0) {
        set_error(run, "cannot close %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Reads a whole small file; *present is false when it does not exist. */
static int read_small_file(const char *path, char *buffer, size_t size, size_t *length,
                           bool *present, backup_run *run)
{
    *present = false;
    *length = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        set_error(run, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t got = 0;
    while (*length < size && (got = read(fd, buffer + *length, size - *length)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        *length += (size_t)got;
    }
    (void)close(fd);
    if (got < 0 || *length == size) {
        set_error(run, "cannot read %s (unreadable or too long)", path);
        return -1;
    }
    *present = true;
    return 0;
}

/* ---- the moment ----------------------------------------------------------------------------- */

static int open_source(backup_run *run)
{
    int code = sqlite3_open_v2(run->service->database_path, &run->source,
                               SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (code == SQLITE_OK)
        code = sqlite3_busy_timeout(run->source, SOURCE_BUSY_TIMEOUT_MS);
    if (code == SQLITE_OK)
        code = sqlite3_exec(run->source, "PRAGMA query_only = ON", NULL, NULL, NULL);
    if (code != SQLITE_OK) {
        set_error(run, "cannot open %s for reading: %s",
                 run->service->database_path, sqlite3_errstr(code));
        return -1;
    }
    return 0;
}

/* One integer from a pragma, read inside the snapshot. */
static int read_pragma(sqlite3 *source, const char *sql, int64_t *value)
{
    sqlite3_stmt *statement = NULL;
    int code = sqlite3_prepare_v2(source, sql, -1, &statement, NULL);
    if (code == SQLITE_OK) {
        code = sqlite3_step(statement) == SQLITE_ROW ? SQLITE_OK : SQLITE_ERROR;
        *value = sqlite3_column_int64(statement, 0);
    }
    (void)sqlite3_finalize(statement);
    return code;
}

/* Starts the read transaction that is the snapshot, and reads its schema cookie and version. */
static int begin_snapshot(backup_run *run)
{
    int64_t cookie = 0, version = 0;
    int code = sqlite3_exec(run->source, "BEGIN; SELECT count(*) FROM sqlite_master", NULL,
                            NULL, NULL);
    run->snapshot_open = code == SQLITE_OK;
    if (code == SQLITE_OK)
        code = read_pragma(run->source, "PRAGMA schema_version", &cookie);
    if (code == SQLITE_OK)
        code = read_pragma(run->source, "PRAGMA user_version", &version);
    run->schema_cookie = (uint32_t)cookie;
    run->schema_version = (int)version;
    if (code != SQLITE_OK) {
        set_error(run, "cannot start a read of %s: %s",
                 run->service->database_path, sqlite3_errmsg(run->source));
        return -1;
    }
    return 0;
}

static int open_log(backup_run *run)
{
    char path[PATH_MAX];
    if (join(path, run->service->paths.dbdir, REPLICATION_LOG_FILE, run) != 0)
        return -1;
    run->log_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (run->log_fd < 0) {
        if (errno == ENOENT)
            return 0;
        set_error(run, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat status;
    if (fstat(run->log_fd, &status) != 0) {
        set_error(run, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    run->log_length = (uint64_t)status.st_size;
    return 0;
}

/* Status first, then the state file and the log, then the snapshot (see the top of the file). */
static int capture(backup_run *run)
{
    char path[PATH_MAX];
    run->replication = kt_replication_glue_status(run->service->replication);
    if (run->replication == NULL) {
        set_error(run, "out of memory reading the replication status");
        return -1;
    }
    if (join(path, run->service->paths.dbdir, REPLICATION_STATE_FILE, run) != 0 ||
        read_small_file(path, run->state, sizeof run->state, &run->state_length, &run->has_state,
                        run) != 0 ||
        open_log(run) != 0 || begin_snapshot(run) != 0)
        return -1;
    run->captured = true;
    return 0;
}

/* Runs inside a batch, holding the writer store: between two batches' commits. */
static kt_store_status capture_on_writer(kt_store *store, void *arguments)
{
    (void)store;
    (void)capture(arguments);
    return KT_STORE_OK;
}

static int capture_moment(backup_run *run)
{
    if (!kt_replication_glue_runs_writer(run->service->replication))
        return capture(run);
    char message[512];
    /* The batch's own commit may fail for other requests in it; the moment taken before it is
     * consistent either way (a failed commit is neither visible nor logged). */
    (void)kt_writer_run(run->service->writer, "backup", capture_on_writer, run, message,
                        sizeof message);
    if (!run->captured && run->error[0] == '\0')
        set_error(run, "the writer did not run the backup: %s", message);
    return run->captured ? 0 : -1;
}

/* ---- writing the copy ----------------------------------------------------------------------- */

static int write_state_copy(backup_run *run)
{
    char path[PATH_MAX];
    if (!run->has_state)
        return 0;
    if (join(path, run->directory, REPLICATION_STATE_FILE, run) != 0)
        return -1;
    int fd = create_file(path, run);
    if (fd < 0)
        return -1;
    if (kt_write_all(fd, run->state, run->state_length) != 0) {
        set_error(run, "cannot write %s: %s", path, strerror(errno));
        (void)close(fd);
        return -1;
    }
    return finish_file(fd, path, run);
}

static int copy_log_bytes(int in, int out, uint64_t length, unsigned char *buffer)
{
    for (uint64_t offset = 0; offset < length;) {
        size_t want = length - offset < COPY_BUFFER_BYTES ? (size_t)(length - offset)
                                                          : COPY_BUFFER_BYTES;
        ssize_t got = pread(in, buffer, want, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got == 0 ? 0 : -1; /* shorter now (a passive cut its tail): keep what was read */
        if (kt_write_all(out, buffer, (size_t)got) != 0)
            return -1;
        offset += (uint64_t)got;
    }
    return 0;
}

static int write_log_copy(backup_run *run)
{
    char path[PATH_MAX];
    if (run->log_fd < 0)
        return 0;
    if (join(path, run->directory, REPLICATION_LOG_FILE, run) != 0)
        return -1;
    unsigned char *buffer = malloc(COPY_BUFFER_BYTES);
    int fd = buffer != NULL ? create_file(path, run) : -1;
    if (buffer == NULL)
        set_error(run, "out of memory copying the replication log");
    if (fd < 0) {
        free(buffer);
        return -1;
    }
    int result = copy_log_bytes(run->log_fd, fd, run->log_length, buffer);
    free(buffer);
    if (result != 0) {
        set_error(run, "cannot copy the replication log to %s: %s",
                 path, strerror(errno));
        (void)close(fd);
        return -1;
    }
    return finish_file(fd, path, run);
}

/* The backup API bumps the copy's schema cookie; put the snapshot's back (offset 40, big-endian)
 * so the copy holds exactly the source's content, then make it durable. */
static int seal_database_copy(const char *path, uint32_t cookie, backup_run *run)
{
    unsigned char bytes[4] = {(unsigned char)(cookie >> 24), (unsigned char)(cookie >> 16),
                              (unsigned char)(cookie >> 8), (unsigned char)cookie};
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || pwrite(fd, bytes, sizeof bytes, 40) != (ssize_t)sizeof bytes) {
        set_error(run, "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0)
            (void)close(fd);
        return -1;
    }
    return finish_file(fd, path, run);
}

static int write_database_copy(backup_run *run)
{
    char path[PATH_MAX];
    sqlite3 *copy = NULL;
    if (join(path, run->directory, KT_DB_FILE_NAME, run) != 0)
        return -1;
    int code = sqlite3_open_v2(path, &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                                SQLITE_OPEN_NOMUTEX, NULL);
    if (code == SQLITE_OK) {
        sqlite3_backup *backup = sqlite3_backup_init(copy, "main", run->source, "main");
        if (backup == NULL) {
            code = sqlite3_errcode(copy);
        } else {
            code = sqlite3_backup_step(backup, -1);
            int finished = sqlite3_backup_finish(backup);
            code = code == SQLITE_DONE ? finished : code;
        }
    }
    if (code != SQLITE_OK)
        set_error(run, "cannot copy the database into %s: %s", path,
                 sqlite3_errstr(code));
    if (sqlite3_close(copy) != SQLITE_OK && code == SQLITE_OK) {
        set_error(run, "cannot close the copy %s", path);
        code = SQLITE_ERROR;
    }
    return code == SQLITE_OK ? seal_database_copy(path, run->schema_cookie, run) : -1;
}

static int write_copy(backup_run *run)
{
    if (write_state_copy(run) != 0 || write_log_copy(run) != 0 ||
        write_database_copy(run) != 0)
        return -1;
    int fd = open(run->directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        set_error(run, "cannot flush %s: %s", run->directory,
                 strerror(errno));
        if (fd >= 0)
            (void)close(fd);
        return -1;
    }
    (void)close(fd);
    return 0;
}

/* ---- the op --------------------------------------------------------------------------------- */

static int make_directory(backup_run *run)
{
    if (snprintf(run->directory, sizeof run->directory, "%s/backup-XXXXXX",
                 run->service->paths.dbdir) >= (int)sizeof run->directory) {
        set_error(run, "the database directory path is too long");
        return -1;
    }
    if (mkdtemp(run->directory) == NULL) {
        set_error(run, "cannot create a directory in %s: %s",
                 run->service->paths.dbdir, strerror(errno));
        run->directory[0] = '\0';
        return -1;
    }
    return 0;
}

/* Removes the directory and what this op wrote into it (after a failure). */
static void remove_directory(const backup_run *run)
{
    static const char *const names[] = {KT_DB_FILE_NAME, REPLICATION_LOG_FILE,
                                        REPLICATION_STATE_FILE, KT_DB_FILE_NAME "-journal",
                                        KT_DB_FILE_NAME "-wal", KT_DB_FILE_NAME "-shm"};
    char path[PATH_MAX];
    if (run->directory[0] == '\0')
        return;
    for (size_t index = 0; index < sizeof names / sizeof names[0]; index++)
        if (kt_path_join(path, sizeof path, run->directory, names[index]) == 0)
            (void)unlink(path);
    if (rmdir(run->directory) != 0)
        kt_log(KT_LOG_WARNING, "backup: cannot remove %s: %s", run->directory, strerror(errno));
}

static json_t *file_list(const backup_run *run)
{
    json_t *files = json_array();
    if (files == NULL || json_array_append_new(files, json_string(KT_DB_FILE_NAME)) != 0 ||
        (run->has_state && json_array_append_new(files, json_string(REPLICATION_STATE_FILE)) != 0) ||
        (run->log_fd >= 0 && json_array_append_new(files, json_string(REPLICATION_LOG_FILE)) != 0)) {
        json_decref(files);
        return NULL;
    }
    return files;
}

static json_t *success(const backup_run *run)
{
    const json_t *replication = run->replication;
    json_t *response = json_pack(
        "{s:b, s:s, s:s, s:O, s:O, s:i, s:s, s:s, s:I}", "ok", 1, "directory", run->directory,
        "role", kt_db_role_name(run->service->settings.role), "epoch",
        json_object_get(replication, "epoch"), "position",
        json_object_get(replication, "position"), "schema_version",
        run->schema_version, "version", KT_VERSION, "sqlite_version",
        sqlite3_libversion(), "time", (json_int_t)time(NULL));
    return kt_response_attach(response, "files", file_list(run));
}

static void release(backup_run *run)
{
    if (run->snapshot_open)
        (void)sqlite3_exec(run->source, "COMMIT", NULL, NULL, NULL);
    (void)sqlite3_close(run->source);
    if (run->log_fd >= 0)
        (void)close(run->log_fd);
    json_decref(run->replication);
}

json_t *kt_backup_handle(kt_db_session *session, const json_t *request)
{
    (void)request;
    backup_run run = {.service = session->service, .log_fd = -1};
    int result = make_directory(&run);
    if (result == 0)
        result = open_source(&run);
    if (result == 0)
        result = capture_moment(&run);
    if (result == 0)
        result = write_copy(&run);
    json_t *response = result == 0 ? success(&run) : NULL;
    release(&run);
    if (response != NULL) {
        kt_log(KT_LOG_INFO, "backup: copied the database and replication state into %s",
               run.directory);
        return response;
    }
    kt_log(KT_LOG_ERROR, "backup failed: %s", run.error[0] ? run.error : "out of memory");
    remove_directory(&run);
    return kt_response_error("internal", "the backup copy failed: %s",
                             run.error[0] ? run.error : "out of memory");
}

/* ---- the last backup, for the status op ----------------------------------------------------- */

/* {"time", "result", "path"[, "message"]} from KT_LAST_BACKUP_FILE in the home, which
 * `ktadmin backup` writes after each run; JSON null when there is none or it cannot be read. */
json_t *kt_last_backup_object(const kt_paths *paths)
{
    char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, paths->home, KT_LAST_BACKUP_FILE) != 0)
        return json_null();
    json_t *saved = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    const json_t *time_value = json_object_get(saved, "time");
    const json_t *result = json_object_get(saved, "result");
    const json_t *file = json_object_get(saved, "path");
    const json_t *message = json_object_get(saved, "message");
    json_t *object = NULL;
    if (json_is_integer(time_value) && json_is_string(result) &&
        (json_is_string(file) || json_is_null(file)))
        object = json_pack("{s:O, s:O, s:O}", "time", time_value, "result", result, "path", file);
    if (object != NULL && json_is_string(message) &&
        json_object_set_new(object, "message", json_string(json_string_value(message))) != 0) {
        json_decref(object);
        object = NULL;
    }
    json_decref(saved);
    return object != NULL ? object : json_null();
}
