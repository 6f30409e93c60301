/*
 * transaction.c — how changes reach the database: batches, per-request savepoints, and what a
 * failed COMMIT means.
 *
 * Without an open batch every mutation is its own BEGIN IMMEDIATE ... COMMIT. With a batch open
 * (kt_store_begin) each mutation runs inside SAVEPOINT request ... RELEASE request, so a request
 * that fails (a conflict, a bad argument) is rolled back to its savepoint and the batch goes on;
 * kt_store_commit then makes them all durable with one COMMIT, i.e. one WAL sync and one
 * replication round trip.
 *
 * A COMMIT fails when the WAL cannot be synced (under replication: the passive did not
 * acknowledge). The commit classifier, when set, says what that means; the transaction is then
 * rolled back so the connection stays usable. If SQLite itself abandons the whole batch after an
 * error (an I/O error or a full disk inside a request), the rest of the batch and its commit
 * report that failure instead of silently running outside a transaction.
 */
#include <stdio.h>
#include <string.h>

#include "storage/internal.h"

/* Runs one of the cached transaction-control statements (BEGIN, COMMIT, SAVEPOINT, ...). */
static kt_store_status control(kt_store *store, kt_statement_id id, const char *sql,
                               const char *doing)
{
    sqlite3_stmt *statement = kt_store_statement(store, id, sql);
    if (!statement) {
        return KT_STORE_ERROR;
    }
    return kt_store_execute(store, statement, doing);
}

/* Rolls back the open transaction, if SQLite has not done so already. Keeps the message that
 * explains why, adding to it only when the rollback itself fails. */
static void roll_back(kt_store *store)
{
    if (sqlite3_get_autocommit(store->db)) {
        return;
    }
    char reason[KT_STORE_MESSAGE_SIZE];
    memcpy(reason, store->message, sizeof reason);
    kt_store_status status = control(store, KT_SQL_ROLLBACK, "ROLLBACK", "rolling back failed");
    if (status != KT_STORE_OK) {
        char failure[KT_STORE_MESSAGE_SIZE];
        memcpy(failure, store->message, sizeof failure);
        kt_store_fail(store, status, "%s; then %s", reason, failure);
    }
}

static const char *commit_outcome(kt_store_status status)
{
    switch (status) {
    case KT_STORE_REFUSED: return "the change was refused and not written";
    case KT_STORE_INDETERMINATE: return "whether the change was written cannot be known";
    case KT_STORE_FULL: return "the disk is full and the change was not written";
    default: return "the change was rolled back";
    }
}

static kt_store_status classify_commit_failure(kt_store *store, int sqlite_code)
{
    kt_store_status status;
    if (store->classifier) {
        status = store->classifier(store->classifier_context, sqlite_code);
    } else {
        status = (sqlite_code & 0xff) == SQLITE_FULL ? KT_STORE_FULL : KT_STORE_ERROR;
    }
    return status == KT_STORE_OK ? KT_STORE_ERROR : status; /* a failure is never "ok" */
}

static kt_store_status commit_transaction(kt_store *store)
{
    sqlite3_stmt *commit = kt_store_statement(store, KT_SQL_COMMIT, "COMMIT");
    if (!commit) {
        roll_back(store);
        return KT_STORE_ERROR;
    }
    int code = sqlite3_step(commit);
    if (code == SQLITE_DONE) {
        kt_store_statement_done(commit);
        return KT_STORE_OK;
    }
    kt_store_status status = classify_commit_failure(store, code);
    kt_store_fail(store, status, "the commit failed: %s (%s); %s", sqlite3_errmsg(store->db),
                  sqlite3_errstr(code), commit_outcome(status));
    kt_store_statement_done(commit);
    roll_back(store);
    return status;
}

/* Marks the open batch as abandoned: SQLite rolled it back, or a request could not be undone. */
static void abandon_batch(kt_store *store, kt_store_status status)
{
    roll_back(store);
    store->batch_failure = status == KT_STORE_OK ? KT_STORE_ERROR : status;
    memcpy(store->batch_message, store->message, sizeof store->batch_message);
}

/* Undoes a failed request inside the batch, leaving the batch's earlier requests in place. */
static void undo_request(kt_store *store, kt_store_status status)
{
    if (sqlite3_get_autocommit(store->db)) {
        abandon_batch(store, status);
        return;
    }
    char reason[KT_STORE_MESSAGE_SIZE];
    memcpy(reason, store->message, sizeof reason);
    kt_store_status undone = control(store, KT_SQL_ROLLBACK_TO, "ROLLBACK TO request",
                                     "undoing a failed request failed");
    if (undone == KT_STORE_OK) {
        undone = control(store, KT_SQL_RELEASE, "RELEASE request",
                         "undoing a failed request failed");
    }
    if (undone == KT_STORE_OK) {
        return;
    }
    char failure[KT_STORE_MESSAGE_SIZE];
    memcpy(failure, store->message, sizeof failure);
    kt_store_fail(store, undone, "%s; then %s", reason, failure);
    abandon_batch(store, undone);
}

static kt_store_status mutate_in_batch(kt_store *store, kt_store_change change,
                                       const void *arguments)
{
    if (store->batch_failure != KT_STORE_OK) {
        return kt_store_fail(store, store->batch_failure,
                             "an earlier request in this batch failed and the batch was "
                             "abandoned: %s", store->batch_message);
    }
    kt_store_status status = control(store, KT_SQL_SAVEPOINT, "SAVEPOINT request",
                                     "starting a request failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    status = change(store, arguments);
    if (status == KT_STORE_OK) {
        status = control(store, KT_SQL_RELEASE, "RELEASE request", "finishing a request failed");
    }
    if (status != KT_STORE_OK) {
        undo_request(store, status);
    }
    return status;
}

static kt_store_status mutate_alone(kt_store *store, kt_store_change change, const void *arguments)
{
    kt_store_status status = control(store, KT_SQL_BEGIN, "BEGIN IMMEDIATE",
                                     "beginning a transaction failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    status = change(store, arguments);
    if (status != KT_STORE_OK) {
        roll_back(store);
        return status;
    }
    return commit_transaction(store);
}

static kt_store_status require_writer(kt_store *store)
{
    if (store->writer) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_ERROR,
                         "this store was opened as a reader and cannot change the database");
}

kt_store_status kt_store_mutate(kt_store *store, kt_store_change change, const void *arguments)
{
    kt_store_status status = require_writer(store);
    if (status != KT_STORE_OK) {
        return status;
    }
    if (store->batch_open) {
        return mutate_in_batch(store, change, arguments);
    }
    return mutate_alone(store, change, arguments);
}

kt_store_status kt_store_expect_change(kt_store *store, const char *missing_format, ...)
{
    if (sqlite3_changes(store->db) > 0) {
        return KT_STORE_OK;
    }
    va_list arguments;
    va_start(arguments, missing_format);
    kt_store_vfail(store, KT_STORE_NOT_FOUND, missing_format, arguments);
    va_end(arguments);
    return KT_STORE_NOT_FOUND;
}

/* ---- Batches --------------------------------------------------------------------------------- */

kt_store_status kt_store_begin(kt_store *store)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = require_writer(store);
    if (status != KT_STORE_OK) {
        return status;
    }
    if (store->batch_open) {
        return kt_store_fail(store, KT_STORE_ERROR, "a batch is already open");
    }
    status = control(store, KT_SQL_BEGIN, "BEGIN IMMEDIATE", "beginning a batch failed");
    if (status == KT_STORE_OK) {
        store->batch_open = true;
        store->batch_failure = KT_STORE_OK;
    }
    return status;
}

kt_store_status kt_store_commit(kt_store *store)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!store->batch_open) {
        return kt_store_fail(store, KT_STORE_ERROR, "there is no open batch to commit");
    }
    store->batch_open = false;
    if (store->batch_failure != KT_STORE_OK) {
        roll_back(store);
        return kt_store_fail(store, store->batch_failure, "the batch was not committed: %s",
                             store->batch_message);
    }
    return commit_transaction(store);
}

void kt_store_rollback(kt_store *store)
{
    if (!store || !store->batch_open) {
        return;
    }
    store->batch_open = false;
    roll_back(store);
}

kt_store_status kt_store_read_begin(kt_store *store)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (store->batch_open) {
        return kt_store_fail(store, KT_STORE_ERROR, "a batch is open; read inside it instead");
    }
    return control(store, KT_SQL_READ_BEGIN, "BEGIN DEFERRED", "beginning a read failed");
}

void kt_store_read_end(kt_store *store)
{
    if (!store || store->batch_open || sqlite3_get_autocommit(store->db)) {
        return; /* nothing open (a failed BEGIN, or SQLite ended it after an error) */
    }
    /* A read-only transaction has nothing to commit: ROLLBACK only releases the snapshot. It
     * cannot fail with no statement running; if it did, kt_store_error_message says why, and the
     * next read_begin reports the transaction still open. */
    (void)control(store, KT_SQL_READ_END, "ROLLBACK", "ending a read failed");
}
