/*
 * store.c — opening and closing a kt_store, its messages and its prepared-statement cache.
 *
 * Opening is where the durability promises of storage.h are made and checked: a writer gets WAL
 * journaling (verified, because a VFS without shared memory silently keeps a rollback journal),
 * synchronous=FULL so every commit syncs the WAL (the moment replication ships it), foreign keys,
 * and optionally no automatic checkpoints; then the schema is migrated. A reader is query-only and
 * refuses a schema it does not know.
 *
 * Statements are prepared once per store and kept (SQLITE_PREPARE_PERSISTENT): every request on
 * the hot path only binds, steps and resets.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

#define KT_DEFAULT_BUSY_TIMEOUT_MS 5000

/* A pragma to set and the value it must then report, so a silent refusal is caught. */
typedef struct kt_pragma_setting {
    const char *set;
    const char *query;
    const char *expected;
} kt_pragma_setting;

static const kt_pragma_setting writer_pragmas[] = {
    {"PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1"},
    {"PRAGMA journal_mode = WAL", "PRAGMA journal_mode", "wal"},
    {"PRAGMA synchronous = FULL", "PRAGMA synchronous", "2"},
    /* purged deposits and replaced auth boxes are overwritten, not left in free pages */
    {"PRAGMA secure_delete = FAST", "PRAGMA secure_delete", "2"},
};

/* A new database gets 1 KiB pages, not SQLite's default 4 KiB. Replication ships, hashes, encrypts,
 * spools and fsyncs whole pages (replication/), and one deposit touches three or four leaf pages
 * (the table's, the uuid's and the handle's indexes): 1 KiB pages make every commit's bytes about
 * four times fewer on both nodes. Measured with commit_bench on this 2-core machine, 1 writer:
 * 1,450 commits/s at 4 KiB, 1,880 at 1 KiB (docs/performance.md). A database that exists keeps
 * its page size (SQLite fixes it at creation). */
static const kt_pragma_setting new_database_pragmas[] = {
    {"PRAGMA page_size = 1024", "PRAGMA page_size", "1024"},
};

static const kt_pragma_setting reader_pragmas[] = {
    {"PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1"},
    {"PRAGMA query_only = ON", "PRAGMA query_only", "1"},
};

static const kt_pragma_setting manual_checkpoint_pragmas[] = {
    {"PRAGMA wal_autocheckpoint = 0", "PRAGMA wal_autocheckpoint", "0"},
};

/* ---- Messages -------------------------------------------------------------------------------- */

kt_store_status kt_store_vfail(kt_store *store, kt_store_status status, const char *format,
                               va_list arguments)
{
    if (vsnprintf(store->message, sizeof store->message, format, arguments) < 0) {
        snprintf(store->message, sizeof store->message, "%s", kt_store_status_name(status));
    }
    return status;
}

kt_store_status kt_store_fail(kt_store *store, kt_store_status status, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    kt_store_vfail(store, status, format, arguments);
    va_end(arguments);
    return status;
}

kt_store_status kt_store_status_of(int sqlite_code)
{
    switch (sqlite_code) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return KT_STORE_CONFLICT;
    default:
        break;
    }
    switch (sqlite_code & 0xff) {
    case SQLITE_CONSTRAINT: /* foreign key, CHECK, NOT NULL: the arguments were wrong */
        return KT_STORE_INVALID;
    case SQLITE_FULL:
        return KT_STORE_FULL;
    default:
        return KT_STORE_ERROR;
    }
}

kt_store_status kt_store_fail_sqlite(kt_store *store, int sqlite_code, const char *doing)
{
    return kt_store_fail(store, kt_store_status_of(sqlite_code), "%s: %s (%s)", doing,
                         sqlite3_errmsg(store->db), sqlite3_errstr(sqlite_code));
}

const char *kt_store_error_message(kt_store *store)
{
    if (!store) {
        return "no store";
    }
    return store->message[0] ? store->message : "no error";
}

const char *kt_store_status_name(kt_store_status status)
{
    switch (status) {
    case KT_STORE_OK: return "ok";
    case KT_STORE_NOT_FOUND: return "not_found";
    case KT_STORE_CONFLICT: return "conflict";
    case KT_STORE_INVALID: return "invalid";
    case KT_STORE_REFUSED: return "refused";
    case KT_STORE_INDETERMINATE: return "indeterminate";
    case KT_STORE_FULL: return "full";
    case KT_STORE_ERROR: return "error";
    }
    return "unknown";
}

/* ---- Statement cache ------------------------------------------------------------------------- */

sqlite3_stmt *kt_store_statement(kt_store *store, kt_statement_id id, const char *sql)
{
    sqlite3_stmt *statement = store->statements[id];
    if (statement) {
        if (sqlite3_stmt_busy(statement)) {
            kt_store_fail(store, KT_STORE_ERROR,
                          "a storage query was re-entered from its own listing callback");
            return NULL;
        }
        return statement;
    }
    int code = sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, NULL);
    if (code != SQLITE_OK) {
        kt_store_fail_sqlite(store, code, "preparing a storage query failed");
        return NULL;
    }
    store->statements[id] = statement;
    return statement;
}

void kt_store_statement_done(sqlite3_stmt *statement)
{
    /* sqlite3_reset repeats the error of the last step, which the caller has already handled;
     * clearing bindings cannot fail. */
    (void)sqlite3_reset(statement);
    (void)sqlite3_clear_bindings(statement);
}

kt_store_status kt_store_execute(kt_store *store, sqlite3_stmt *statement, const char *doing)
{
    int code = sqlite3_step(statement);
    kt_store_status status = KT_STORE_OK;
    if (code != SQLITE_DONE) {
        status = kt_store_fail_sqlite(store, code, doing);
    }
    kt_store_statement_done(statement);
    return status;
}

kt_store_status kt_store_step_row(kt_store *store, sqlite3_stmt *statement, const char *doing)
{
    int code = sqlite3_step(statement);
    if (code == SQLITE_ROW) {
        return KT_STORE_OK;
    }
    kt_store_status status = KT_STORE_NOT_FOUND;
    if (code != SQLITE_DONE) {
        status = kt_store_fail_sqlite(store, code, doing);
    }
    kt_store_statement_done(statement);
    return status;
}

kt_store_status kt_store_bind_failed(kt_store *store, sqlite3_stmt *statement, int sqlite_code)
{
    kt_store_status status = kt_store_fail_sqlite(store, sqlite_code,
                                                  "binding a query's values failed");
    kt_store_statement_done(statement);
    return status;
}

kt_store_status kt_store_walk(kt_store *store, sqlite3_stmt *query, const char *doing,
                              kt_row_visit visit_row, void *walk)
{
    bool stop = false;
    while (!stop) {
        kt_store_status status = kt_store_step_row(store, query, doing);
        if (status != KT_STORE_OK) { /* the end of the rows or a failure: already readied */
            return status == KT_STORE_NOT_FOUND ? KT_STORE_OK : status;
        }
        status = visit_row(store, query, walk, &stop);
        if (status != KT_STORE_OK) {
            kt_store_statement_done(query);
            return status;
        }
    }
    kt_store_statement_done(query);
    return KT_STORE_OK;
}

/* ---- Opening --------------------------------------------------------------------------------- */

/* Runs a pragma query and copies the first column of its first row ("" when there is none). */
static int pragma_value(kt_store *store, const char *sql, char *out, size_t size)
{
    sqlite3_stmt *statement = NULL;
    int code = sqlite3_prepare_v2(store->db, sql, -1, &statement, NULL);
    if (code == SQLITE_OK) {
        code = sqlite3_step(statement);
    }
    out[0] = '\0';
    if (code == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(statement, 0);
        snprintf(out, size, "%s", text ? (const char *)text : "");
        code = SQLITE_DONE;
    }
    if (code != SQLITE_DONE) {
        kt_store_fail_sqlite(store, code, sql);
    }
    (void)sqlite3_finalize(statement); /* repeats the step's error, handled above */
    return code == SQLITE_DONE ? 0 : -1;
}

static int apply_pragmas(kt_store *store, const kt_pragma_setting *settings, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        char value[32];
        if (pragma_value(store, settings[index].set, value, sizeof value) != 0 ||
            pragma_value(store, settings[index].query, value, sizeof value) != 0) {
            return -1;
        }
        if (strcmp(value, settings[index].expected) != 0) {
            kt_store_fail(store, KT_STORE_ERROR,
                          "%s did not take effect (the database reports '%s', not '%s'); the "
                          "filesystem or VFS may not support it", settings[index].set, value,
                          settings[index].expected);
            return -1;
        }
    }
    return 0;
}

static int disable_checkpoint_on_close(kt_store *store)
{
    int enabled = 0;
    int code = sqlite3_db_config(store->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &enabled);
    if (code != SQLITE_OK || enabled != 1) {
        kt_store_fail(store, KT_STORE_ERROR, "cannot turn off the checkpoint on close (%s)",
                      sqlite3_errstr(code));
        return -1;
    }
    return apply_pragmas(store, manual_checkpoint_pragmas,
                         sizeof manual_checkpoint_pragmas / sizeof manual_checkpoint_pragmas[0]);
}

static int configure_writer(kt_store *store, const kt_store_options *options)
{
    if (apply_pragmas(store, writer_pragmas, 1) != 0) { /* foreign keys before any migration */
        return -1;
    }
    int version = 0;
    if (kt_schema_read_version(store->db, &version) != 0) {
        kt_store_fail_sqlite(store, sqlite3_extended_errcode(store->db),
                             "reading the schema version failed");
        return -1;
    }
    if (kt_schema_refuse_newer(version, store->message, sizeof store->message) != 0) {
        return -1; /* before WAL mode changes the file */
    }
    int pages = 0;
    if (kt_schema_page_count(store->db, &pages) != 0) {
        kt_store_fail_sqlite(store, sqlite3_extended_errcode(store->db),
                             "reading the database size failed");
        return -1;
    }
    size_t new_count = sizeof new_database_pragmas / sizeof new_database_pragmas[0];
    if (pages == 0 && apply_pragmas(store, new_database_pragmas, new_count) != 0) {
        return -1;
    }
    if (apply_pragmas(store, writer_pragmas + 1,
                      sizeof writer_pragmas / sizeof writer_pragmas[0] - 1) != 0) {
        return -1;
    }
    if (options->manual_checkpoints && disable_checkpoint_on_close(store) != 0) {
        return -1;
    }
    return kt_schema_migrate(store->db, store->message, sizeof store->message);
}

/* A reader never writes the database, not even when it is the last connection to close: SQLite
 * would otherwise checkpoint and delete the -wal then. That matters on a replicated node, where
 * the -wal may hold a commit frame that only replication may settle (replication/vfs_capture.c):
 * keytrustee-db's start-up probe closes before replication has reconciled the -wal. */
static int configure_reader(kt_store *store)
{
    size_t count = sizeof reader_pragmas / sizeof reader_pragmas[0];
    if (apply_pragmas(store, reader_pragmas, count) != 0 ||
        disable_checkpoint_on_close(store) != 0) {
        return -1;
    }
    return kt_schema_check_current(store->db, store->message, sizeof store->message);
}

static int open_connection(kt_store *store, const char *path, const kt_store_options *options)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    if (options->writer && options->create) {
        flags |= SQLITE_OPEN_CREATE;
    }
    int code = sqlite3_open_v2(path, &store->db, flags, options->vfs);
    if (code != SQLITE_OK) {
        const char *reason = store->db ? sqlite3_errmsg(store->db) : sqlite3_errstr(code);
        kt_store_fail(store, KT_STORE_ERROR, "cannot open the database %s: %s", path, reason);
        return -1;
    }
    code = sqlite3_extended_result_codes(store->db, 1);
    if (code == SQLITE_OK) {
        int timeout = options->busy_timeout_ms > 0 ? options->busy_timeout_ms
                                                   : KT_DEFAULT_BUSY_TIMEOUT_MS;
        code = sqlite3_busy_timeout(store->db, timeout);
    }
    if (code != SQLITE_OK) {
        kt_store_fail_sqlite(store, code, "configuring the database connection failed");
        return -1;
    }
    return 0;
}

static void report_open_failure(char *error, size_t error_size, const char *text)
{
    if (error && error_size > 0) {
        snprintf(error, error_size, "%s", text);
    }
}

int kt_store_open(kt_store **out, const char *path, const kt_store_options *options, char *error,
                  size_t error_size)
{
    static const kt_store_options defaults = {0};
    if (!out || !path) {
        report_open_failure(error, error_size, "kt_store_open needs a store pointer and a path");
        return -1;
    }
    *out = NULL;
    options = options ? options : &defaults;
    kt_store *store = calloc(1, sizeof *store);
    if (!store) {
        report_open_failure(error, error_size, "out of memory opening the database");
        return -1;
    }
    store->writer = options->writer;
    int result = open_connection(store, path, options);
    if (result == 0) {
        result = store->writer ? configure_writer(store, options) : configure_reader(store);
    }
    if (result != 0) {
        report_open_failure(error, error_size, store->message);
        kt_store_close(store);
        return -1;
    }
    store->message[0] = '\0';
    *out = store;
    return 0;
}

void kt_store_close(kt_store *store)
{
    if (!store) {
        return;
    }
    if (store->batch_open) {
        kt_store_rollback(store);
    }
    for (size_t index = 0; index < KT_STATEMENT_COUNT; index++) {
        /* finalize repeats the statement's last error, which was handled when it happened */
        (void)sqlite3_finalize(store->statements[index]);
    }
    /* With every statement finalized close cannot be busy; the handle is freed either way. */
    (void)sqlite3_close_v2(store->db);
    free(store);
}

int kt_store_schema_version(kt_store *store)
{
    int version = -1;
    if (!store || kt_schema_read_version(store->db, &version) != 0) {
        return -1;
    }
    return version;
}

void kt_store_set_commit_classifier(kt_store *store, kt_commit_classifier classifier,
                                    void *context)
{
    if (!store) {
        return;
    }
    store->classifier = classifier;
    store->classifier_context = context;
}
