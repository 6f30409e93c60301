/*
 * internal.h — what the files of storage/ share with one another and nothing outside storage/ may
 * include: the kt_store structure, the prepared-statement cache, the transaction wrapper every
 * mutation runs through, and the helpers that check fields and copy columns.
 *
 * Each operation file (orgs.c, clients.c, deposits.c, maintenance.c) keeps its own SQL next to the
 * code that binds it; the statement cache only needs a slot number per statement, listed here.
 */
#ifndef KT_STORAGE_INTERNAL_H
#define KT_STORAGE_INTERNAL_H

#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "storage/storage.h"

/* One slot per cached statement. */
typedef enum kt_statement_id {
    KT_SQL_BEGIN,
    KT_SQL_COMMIT,
    KT_SQL_ROLLBACK,
    KT_SQL_SAVEPOINT,
    KT_SQL_RELEASE,
    KT_SQL_ROLLBACK_TO,
    KT_SQL_ORG_INSERT,
    KT_SQL_ORG_BY_NAME,
    KT_SQL_ORG_BY_UUID,
    KT_SQL_ORG_SET_AUTH,
    KT_SQL_ORG_SET_STATE,
    KT_SQL_ORG_LIST,
    KT_SQL_CLIENT_INSERT,
    KT_SQL_CLIENT_GET,
    KT_SQL_CLIENT_SET_STATE,
    KT_SQL_CLIENT_LIST_ALL,
    KT_SQL_CLIENT_LIST_ORG,
    KT_SQL_DEPOSIT_INSERT,
    KT_SQL_DEPOSIT_GET,
    KT_SQL_DEPOSIT_BY_HANDLE,
    KT_SQL_DEPOSIT_LIST,
    KT_SQL_DEPOSIT_SET_STATE,
    KT_SQL_DEPOSIT_PURGE,
    KT_SQL_COUNT_ROWS,
    KT_SQL_READ_BEGIN,
    KT_SQL_READ_END,
    KT_STATEMENT_COUNT
} kt_statement_id;

#define KT_STORE_MESSAGE_SIZE 512u

struct kt_store {
    sqlite3 *db;
    bool writer;
    bool batch_open;
    /* KT_STORE_OK, or the status of the failure that made SQLite abandon the open batch. */
    kt_store_status batch_failure;
    char batch_message[KT_STORE_MESSAGE_SIZE];
    kt_commit_classifier classifier;
    void *classifier_context;
    sqlite3_stmt *statements[KT_STATEMENT_COUNT];
    char message[KT_STORE_MESSAGE_SIZE];
};

/* ---- store.c: messages and the statement cache ----------------------------------------------- */

/* Records the message for kt_store_error_message and returns `status`. */
kt_store_status kt_store_fail(kt_store *store, kt_store_status status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
kt_store_status kt_store_vfail(kt_store *store, kt_store_status status, const char *format,
                               va_list arguments) __attribute__((format(printf, 3, 0)));
/* The status an SQLite result code stands for: constraint kinds, disk full, everything else. */
kt_store_status kt_store_status_of(int sqlite_code);
/* Records "<doing>: <SQLite's message>" and returns kt_store_status_of(sqlite_code). */
kt_store_status kt_store_fail_sqlite(kt_store *store, int sqlite_code, const char *doing);

/* The cached statement for `id`, prepared from `sql` on first use; NULL (message set) when it
 * cannot be prepared or is still in use by an outer call (a visitor re-entering its own list). */
sqlite3_stmt *kt_store_statement(kt_store *store, kt_statement_id id, const char *sql);
/* Resets a cached statement and clears its bindings so it is ready for the next use. */
void kt_store_statement_done(sqlite3_stmt *statement);
/* Steps a bound statement that returns no rows, then readies it again. */
kt_store_status kt_store_execute(kt_store *store, sqlite3_stmt *statement, const char *doing);
/* Steps a bound query once: OK on a row (read it, then call kt_store_statement_done), NOT_FOUND
 * when there is none (statement already done), another status on failure (already done). */
kt_store_status kt_store_step_row(kt_store *store, sqlite3_stmt *statement, const char *doing);

/* Readies `statement` again and records why binding its values failed. */
kt_store_status kt_store_bind_failed(kt_store *store, sqlite3_stmt *statement, int sqlite_code);

/* Steps a bound query to its end, calling `visit_row` for each row until it sets *stop; the
 * statement is readied again in every case. NOT_FOUND never comes back: no rows is OK. */
typedef kt_store_status (*kt_row_visit)(kt_store *store, sqlite3_stmt *row, void *walk,
                                        bool *stop);
kt_store_status kt_store_walk(kt_store *store, sqlite3_stmt *query, const char *doing,
                              kt_row_visit visit_row, void *walk);

/* ---- transaction.c: every mutation runs through here ----------------------------------------- */

typedef kt_store_status (*kt_store_change)(kt_store *store, const void *arguments);
/* Runs `change` as one request: in its own SAVEPOINT inside an open batch, otherwise in its own
 * BEGIN IMMEDIATE ... COMMIT with a failed commit classified. A failing request leaves nothing. */
kt_store_status kt_store_mutate(kt_store *store, kt_store_change change, const void *arguments);
/* After an UPDATE or DELETE: OK when it changed a row, otherwise NOT_FOUND with the message. */
kt_store_status kt_store_expect_change(kt_store *store, const char *missing_format, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- schema.c -------------------------------------------------------------------------------- */

int kt_schema_read_version(sqlite3 *db, int *version);
int kt_schema_page_count(sqlite3 *db, int *pages); /* 0 for a new, empty file */
/* 0 when this build knows schema `version`; -1 with the "upgrade keytrustee" message otherwise. */
int kt_schema_refuse_newer(int version, char *error, size_t error_size);
/* Refuses a database newer than this build, then applies the missing migrations, each in its own
 * transaction. Returns 0, or -1 with the message in `error`. */
int kt_schema_migrate(sqlite3 *db, char *error, size_t error_size);
/* For readers: 0 when the schema is exactly what this build knows, -1 with a message otherwise. */
int kt_schema_check_current(sqlite3 *db, char *error, size_t error_size);

/* ---- fields.c: validation, binding, reading -------------------------------------------------- */

typedef enum kt_text_rule {
    KT_TEXT_MAY_BE_EMPTY = 1u << 0,
    KT_TEXT_NO_CONTROL = 1u << 1, /* no byte below 0x20 and no DEL */
} kt_text_rule;

/* NULL when `text` is valid UTF-8 of at most `max_bytes` bytes obeying `rules`; otherwise a short
 * phrase saying what is wrong ("is empty", "is longer than 255 bytes", ...). */
const char *kt_text_problem(const char *text, size_t max_bytes, unsigned rules);
/* NULL when `name` is 1..KT_ORG_NAME_MAX characters of [A-Za-z0-9_.-]. */
const char *kt_org_name_problem(const char *name);

bool kt_state_known(kt_state state); /* ACTIVE or DISABLED, not some other number */
/* kt_uuid_valid / kt_fingerprint_valid, reading no further than the identifier's length + 1. */
bool kt_uuid_acceptable(const char *text);
bool kt_fingerprint_acceptable(const char *text);

int kt_bind_text(sqlite3_stmt *statement, int index, const char *text);
int kt_bind_blob(sqlite3_stmt *statement, int index, const void *bytes, size_t length);
int kt_bind_state(sqlite3_stmt *statement, int index, kt_state state);

/* Column copies: 0, or -1 when the stored value does not fit (a damaged row) or memory is short. */
int kt_column_text(sqlite3_stmt *row, int column, char *out, size_t size);
int kt_column_blob(sqlite3_stmt *row, int column, unsigned char *out, size_t size,
                   size_t *length);
int kt_column_state(sqlite3_stmt *row, int column, kt_state *state);

#endif /* KT_STORAGE_INTERNAL_H */
