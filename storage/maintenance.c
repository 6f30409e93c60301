/*
 * maintenance.c — what operators and the owner of the writer run now and then: row counts for
 * status pages, an integrity check, and the WAL checkpoint.
 *
 * With manual_checkpoints the writer never checkpoints by itself, so kt_store_checkpoint is the one
 * place the WAL is folded back into the database file (and truncated); replication/ decides when.
 */
#include "storage/internal.h"

kt_store_status kt_store_count(kt_store *store, kt_store_counts *counts)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!counts) {
        return kt_store_fail(store, KT_STORE_INVALID, "no counts to fill were given");
    }
    sqlite3_stmt *query = kt_store_statement(
        store, KT_SQL_COUNT_ROWS,
        "SELECT (SELECT count(*) FROM orgs), (SELECT count(*) FROM clients), "
        "(SELECT count(*) FROM deposits)");
    if (!query) {
        return KT_STORE_ERROR;
    }
    kt_store_status status = kt_store_step_row(store, query, "counting rows failed");
    if (status == KT_STORE_OK) {
        counts->orgs = sqlite3_column_int64(query, 0);
        counts->clients = sqlite3_column_int64(query, 1);
        counts->deposits = sqlite3_column_int64(query, 2);
        kt_store_statement_done(query);
    } else if (status == KT_STORE_NOT_FOUND) { /* an aggregate always has a row */
        status = kt_store_fail(store, KT_STORE_ERROR, "counting rows returned nothing");
    }
    return status;
}

/* Steps a one-off statement to its first row; NOT_FOUND when it has none. */
static kt_store_status first_row(kt_store *store, const char *sql, sqlite3_stmt **statement)
{
    int code = sqlite3_prepare_v2(store->db, sql, -1, statement, NULL);
    if (code == SQLITE_OK) {
        code = sqlite3_step(*statement);
    }
    if (code == SQLITE_ROW) {
        return KT_STORE_OK;
    }
    if (code == SQLITE_DONE) {
        return KT_STORE_NOT_FOUND;
    }
    return kt_store_fail_sqlite(store, code, sql);
}

kt_store_status kt_store_integrity_check(kt_store *store)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    sqlite3_stmt *statement = NULL;
    kt_store_status status = first_row(store, "PRAGMA integrity_check", &statement);
    if (status == KT_STORE_OK) {
        const unsigned char *result = sqlite3_column_text(statement, 0);
        if (!result || sqlite3_stricmp((const char *)result, "ok") != 0) {
            status = kt_store_fail(store, KT_STORE_ERROR, "the integrity check found a problem: %s",
                                   result ? (const char *)result : "(no text)");
        }
    } else if (status == KT_STORE_NOT_FOUND) {
        status = kt_store_fail(store, KT_STORE_ERROR, "the integrity check returned nothing");
    }
    (void)sqlite3_finalize(statement); /* repeats the step's error, handled above */
    return status;
}

/* The three numbers PRAGMA wal_checkpoint reports: busy flag, WAL frames, frames checkpointed. */
static kt_store_status read_checkpoint(kt_store *store, sqlite3_stmt *row)
{
    int busy = sqlite3_column_int(row, 0);
    int frames = sqlite3_column_int(row, 1);
    int copied = sqlite3_column_int(row, 2);
    if (busy) {
        return kt_store_fail(store, KT_STORE_ERROR,
                             "the checkpoint could not finish: readers or a writer held the WAL "
                             "(%d of %d frames copied); try again later", copied, frames);
    }
    return KT_STORE_OK;
}

kt_store_status kt_store_checkpoint(kt_store *store)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!store->writer) {
        return kt_store_fail(store, KT_STORE_ERROR, "only the writer checkpoints the database");
    }
    if (store->batch_open) {
        return kt_store_fail(store, KT_STORE_ERROR, "cannot checkpoint inside an open batch");
    }
    sqlite3_stmt *statement = NULL;
    kt_store_status status = first_row(store, "PRAGMA wal_checkpoint(TRUNCATE)", &statement);
    if (status == KT_STORE_OK) {
        status = read_checkpoint(store, statement);
    } else if (status == KT_STORE_NOT_FOUND) {
        status = kt_store_fail(store, KT_STORE_ERROR, "the checkpoint reported nothing");
    }
    (void)sqlite3_finalize(statement); /* repeats the step's error, handled above */
    return status;
}
