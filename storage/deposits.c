/*
 * deposits.c — the deposits table: storing a client's sealed deposit, reading it back by uuid or
 * handle, listing a client's deposits, disabling and purging them.
 *
 * Every operation names the owning client and matches on it, so one client can never read, change
 * or even learn of another client's deposit: a uuid that belongs to someone else is NOT_FOUND. The
 * box is an AEAD box sealed by the caller; storage/ only keeps its bytes. Reads allocate the box
 * (kt_deposit_clear frees it); listings carry metadata only.
 */
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

#define DEPOSIT_METADATA "uuid, client, handle, description, created, state"
#define BOX_COLUMN 6

typedef struct deposit_key {
    const char *client;
    const char *uuid;
} deposit_key;

typedef struct deposit_state_change {
    deposit_key key;
    kt_state state;
} deposit_state_change;

typedef struct deposit_walk {
    kt_deposit_visitor visit;
    void *context;
} deposit_walk;

void kt_deposit_clear(kt_deposit *deposit)
{
    if (!deposit) {
        return;
    }
    free(deposit->box);
    deposit->box = NULL;
    deposit->box_length = 0;
}

/* ---- Checks ---------------------------------------------------------------------------------- */

static kt_store_status check_client(kt_store *store, const char *client)
{
    if (kt_fingerprint_acceptable(client)) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID,
                         "the deposit's client must be a fingerprint of %u uppercase hexadecimal "
                         "characters", KT_FINGERPRINT_CHARS);
}

static kt_store_status check_key(kt_store *store, const char *client, const char *uuid)
{
    kt_store_status status = check_client(store, client);
    if (status == KT_STORE_OK && !kt_uuid_acceptable(uuid)) {
        status = kt_store_fail(store, KT_STORE_INVALID, "the deposit uuid is not a version 4 uuid");
    }
    return status;
}

static kt_store_status check_handle(kt_store *store, const char *handle)
{
    const char *problem = kt_text_problem(handle, KT_HANDLE_MAX, KT_TEXT_NO_CONTROL);
    if (!problem) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID,
                         "the deposit handle %s; it must be 1 to %u bytes of UTF-8 without "
                         "control characters", problem, KT_HANDLE_MAX);
}

static kt_store_status check_state(kt_store *store, kt_state state)
{
    if (kt_state_known(state)) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID, "the deposit state must be active or disabled");
}

static kt_store_status check_contents(kt_store *store, const kt_deposit *deposit)
{
    const char *problem = kt_text_problem(deposit->description, KT_DESCRIPTION_MAX,
                                          KT_TEXT_MAY_BE_EMPTY);
    if (problem) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the deposit description %s; it must be at most %u bytes of UTF-8",
                             problem, KT_DESCRIPTION_MAX);
    }
    if (!deposit->box || deposit->box_length < KT_AEAD_OVERHEAD ||
        deposit->box_length > KT_DEPOSIT_BOX_MAX) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the deposit box must be %u to %u bytes (a sealed deposit of at most "
                             "%u bytes)", KT_AEAD_OVERHEAD, KT_DEPOSIT_BOX_MAX, KT_DEPOSIT_MAX);
    }
    return check_state(store, deposit->state);
}

static kt_store_status check_deposit(kt_store *store, const kt_deposit *deposit)
{
    if (!deposit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no deposit was given");
    }
    kt_store_status status = check_key(store, deposit->client, deposit->uuid);
    if (status == KT_STORE_OK) {
        status = check_handle(store, deposit->handle);
    }
    if (status == KT_STORE_OK) {
        status = check_contents(store, deposit);
    }
    return status;
}

/* ---- Reading --------------------------------------------------------------------------------- */

static int read_box(sqlite3_stmt *row, kt_deposit *deposit)
{
    const void *bytes = sqlite3_column_blob(row, BOX_COLUMN);
    int length = sqlite3_column_bytes(row, BOX_COLUMN);
    if (!bytes || length <= 0 || (size_t)length > KT_DEPOSIT_BOX_MAX) {
        return -1;
    }
    deposit->box = malloc((size_t)length);
    if (!deposit->box) {
        return -1;
    }
    memcpy(deposit->box, bytes, (size_t)length);
    deposit->box_length = (size_t)length;
    return 0;
}

static kt_store_status read_deposit(kt_store *store, sqlite3_stmt *row, kt_deposit *deposit,
                                    bool with_box)
{
    memset(deposit, 0, sizeof *deposit);
    if (kt_column_text(row, 0, deposit->uuid, sizeof deposit->uuid) != 0 ||
        kt_column_text(row, 1, deposit->client, sizeof deposit->client) != 0 ||
        kt_column_text(row, 2, deposit->handle, sizeof deposit->handle) != 0 ||
        kt_column_text(row, 3, deposit->description, sizeof deposit->description) != 0 ||
        kt_column_state(row, 5, &deposit->state) != 0 ||
        (with_box && read_box(row, deposit) != 0)) {
        kt_deposit_clear(deposit);
        memset(deposit, 0, sizeof *deposit);
        return kt_store_fail(store, KT_STORE_ERROR,
                             "a stored deposit could not be read (damaged row or out of memory)");
    }
    deposit->created = sqlite3_column_int64(row, 4);
    return KT_STORE_OK;
}

/* Looks up one deposit of `client` by the second key (uuid or handle) the query names. */
static kt_store_status find_deposit(kt_store *store, sqlite3_stmt *query, const char *client,
                                    const char *key, kt_deposit *deposit)
{
    int code = kt_bind_text(query, 1, client);
    if (code == SQLITE_OK) code = kt_bind_text(query, 2, key);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, query, code);
    }
    kt_store_status status = kt_store_step_row(store, query, "looking up the deposit failed");
    if (status == KT_STORE_OK) {
        status = read_deposit(store, query, deposit, true);
        kt_store_statement_done(query);
    }
    return status;
}

kt_store_status kt_store_deposit_get(kt_store *store, const char *client, const char *uuid,
                                     kt_deposit *deposit)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!deposit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no deposit record to fill was given");
    }
    memset(deposit, 0, sizeof *deposit);
    kt_store_status status = check_key(store, client, uuid);
    if (status != KT_STORE_OK) {
        return status;
    }
    sqlite3_stmt *query = kt_store_statement(
        store, KT_SQL_DEPOSIT_GET,
        "SELECT " DEPOSIT_METADATA ", box FROM deposits WHERE client = ?1 AND uuid = ?2");
    if (!query) {
        return KT_STORE_ERROR;
    }
    status = find_deposit(store, query, client, uuid, deposit);
    if (status == KT_STORE_NOT_FOUND) {
        kt_store_fail(store, status, "this client has no deposit %s", uuid);
    }
    return status;
}

kt_store_status kt_store_deposit_get_by_handle(kt_store *store, const char *client,
                                               const char *handle, kt_deposit *deposit)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!deposit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no deposit record to fill was given");
    }
    memset(deposit, 0, sizeof *deposit);
    kt_store_status status = check_client(store, client);
    if (status == KT_STORE_OK) {
        status = check_handle(store, handle);
    }
    if (status != KT_STORE_OK) {
        return status;
    }
    sqlite3_stmt *query = kt_store_statement(
        store, KT_SQL_DEPOSIT_BY_HANDLE,
        "SELECT " DEPOSIT_METADATA ", box FROM deposits WHERE client = ?1 AND handle = ?2");
    if (!query) {
        return KT_STORE_ERROR;
    }
    status = find_deposit(store, query, client, handle, deposit);
    if (status == KT_STORE_NOT_FOUND) {
        kt_store_fail(store, status, "this client has no deposit with that handle");
    }
    return status;
}

static kt_store_status visit_deposit_row(kt_store *store, sqlite3_stmt *row, void *walk_pointer,
                                         bool *stop)
{
    const deposit_walk *walk = walk_pointer;
    kt_deposit deposit;
    kt_store_status status = read_deposit(store, row, &deposit, false);
    if (status == KT_STORE_OK) {
        *stop = walk->visit(&deposit, walk->context) != 0;
    }
    return status;
}

kt_store_status kt_store_deposit_list(kt_store *store, const char *client, const char *search,
                                      kt_deposit_visitor visit, void *context)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_client(store, client);
    if (status != KT_STORE_OK) {
        return status;
    }
    if (!visit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no deposit visitor was given");
    }
    if (search && kt_text_problem(search, KT_DESCRIPTION_MAX, KT_TEXT_MAY_BE_EMPTY)) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the search text must be at most %u bytes of UTF-8",
                             KT_DESCRIPTION_MAX);
    }
    /* instr, not LIKE: '%' and '_' in the search text are ordinary characters */
    sqlite3_stmt *query = kt_store_statement(
        store, KT_SQL_DEPOSIT_LIST,
        "SELECT " DEPOSIT_METADATA " FROM deposits WHERE client = ?1 AND "
        "(?2 IS NULL OR instr(handle, ?2) > 0 OR instr(description, ?2) > 0) "
        "ORDER BY created, rowid");
    if (!query) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(query, 1, client);
    if (code == SQLITE_OK) {
        code = search ? kt_bind_text(query, 2, search) : sqlite3_bind_null(query, 2);
    }
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, query, code);
    }
    deposit_walk walk = {visit, context};
    return kt_store_walk(store, query, "listing the deposits failed", visit_deposit_row, &walk);
}

/* ---- Changes --------------------------------------------------------------------------------- */

static kt_store_status explain_put_failure(kt_store *store, kt_store_status status,
                                           const kt_deposit *deposit)
{
    const char *message = kt_store_error_message(store);
    if (status == KT_STORE_CONFLICT && strstr(message, "deposits.handle")) {
        return kt_store_fail(store, status, "this client already has a deposit with that handle");
    }
    if (status == KT_STORE_CONFLICT) {
        return kt_store_fail(store, status, "a deposit with the uuid %s already exists",
                             deposit->uuid);
    }
    if (status == KT_STORE_INVALID && strstr(message, "FOREIGN KEY")) {
        return kt_store_fail(store, status, "no client has the fingerprint %s", deposit->client);
    }
    return status;
}

static kt_store_status insert_deposit(kt_store *store, const void *arguments)
{
    const kt_deposit *deposit = arguments;
    sqlite3_stmt *insert = kt_store_statement(
        store, KT_SQL_DEPOSIT_INSERT,
        "INSERT INTO deposits (" DEPOSIT_METADATA ", box) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!insert) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(insert, 1, deposit->uuid);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 2, deposit->client);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 3, deposit->handle);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 4, deposit->description);
    if (code == SQLITE_OK) code = sqlite3_bind_int64(insert, 5, deposit->created);
    if (code == SQLITE_OK) code = kt_bind_state(insert, 6, deposit->state);
    if (code == SQLITE_OK) code = kt_bind_blob(insert, 7, deposit->box, deposit->box_length);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, insert, code);
    }
    kt_store_status status = kt_store_execute(store, insert, "storing the deposit failed");
    return status == KT_STORE_OK ? status : explain_put_failure(store, status, deposit);
}

kt_store_status kt_store_deposit_put(kt_store *store, const kt_deposit *deposit)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_deposit(store, deposit);
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_mutate(store, insert_deposit, deposit);
}

static kt_store_status update_state(kt_store *store, const void *arguments)
{
    const deposit_state_change *change = arguments;
    sqlite3_stmt *update = kt_store_statement(
        store, KT_SQL_DEPOSIT_SET_STATE,
        "UPDATE deposits SET state = ?3 WHERE client = ?1 AND uuid = ?2");
    if (!update) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(update, 1, change->key.client);
    if (code == SQLITE_OK) code = kt_bind_text(update, 2, change->key.uuid);
    if (code == SQLITE_OK) code = kt_bind_state(update, 3, change->state);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, update, code);
    }
    kt_store_status status = kt_store_execute(store, update, "changing the deposit's state failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_expect_change(store, "this client has no deposit %s", change->key.uuid);
}

kt_store_status kt_store_deposit_set_state(kt_store *store, const char *client, const char *uuid,
                                           kt_state state)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_key(store, client, uuid);
    if (status == KT_STORE_OK) {
        status = check_state(store, state);
    }
    if (status != KT_STORE_OK) {
        return status;
    }
    deposit_state_change change = {{client, uuid}, state};
    return kt_store_mutate(store, update_state, &change);
}

static kt_store_status delete_deposit(kt_store *store, const void *arguments)
{
    const deposit_key *key = arguments;
    sqlite3_stmt *remove = kt_store_statement(
        store, KT_SQL_DEPOSIT_PURGE, "DELETE FROM deposits WHERE client = ?1 AND uuid = ?2");
    if (!remove) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(remove, 1, key->client);
    if (code == SQLITE_OK) code = kt_bind_text(remove, 2, key->uuid);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, remove, code);
    }
    kt_store_status status = kt_store_execute(store, remove, "purging the deposit failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_expect_change(store, "this client has no deposit %s", key->uuid);
}

kt_store_status kt_store_deposit_purge(kt_store *store, const char *client, const char *uuid)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_key(store, client, uuid);
    if (status != KT_STORE_OK) {
        return status;
    }
    deposit_key key = {client, uuid};
    return kt_store_mutate(store, delete_deposit, &key);
}
