/*
 * clients.c — the clients table: registering a client (an Ed25519 public key named by its
 * fingerprint) under an org, finding it, enabling or disabling it, and listing clients.
 *
 * Reads join the org so callers get the org's name with the client. A client's fingerprint must be
 * the fingerprint of its public key: storage/ checks that, so no row can claim another identity.
 */
#include <string.h>

#include "storage/internal.h"

#define CLIENT_SELECT                                                                          \
    "SELECT c.fingerprint, c.org_uuid, o.name, c.name, c.public_key, c.created, c.state, "     \
    "o.state "                                                                                 \
    "FROM clients AS c JOIN orgs AS o ON o.uuid = c.org_uuid "

typedef struct client_state_change {
    const char *fingerprint;
    kt_state state;
} client_state_change;

typedef struct client_walk {
    kt_client_visitor visit;
    void *context;
} client_walk;

/* ---- Checks ---------------------------------------------------------------------------------- */

static kt_store_status check_fingerprint(kt_store *store, const char *fingerprint)
{
    if (kt_fingerprint_acceptable(fingerprint)) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID,
                         "the client fingerprint must be %u uppercase hexadecimal characters",
                         KT_FINGERPRINT_CHARS);
}

static kt_store_status check_state(kt_store *store, kt_state state)
{
    if (kt_state_known(state)) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID, "the client state must be active or disabled");
}

static kt_store_status check_identity(kt_store *store, const kt_client_record *client)
{
    char expected[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(expected, client->public_key);
    if (strcmp(expected, client->fingerprint) == 0) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID,
                         "the client fingerprint %s is not the fingerprint of its public key",
                         client->fingerprint);
}

static kt_store_status check_client(kt_store *store, const kt_client_record *client)
{
    if (!client) {
        return kt_store_fail(store, KT_STORE_INVALID, "no client was given");
    }
    kt_store_status status = check_fingerprint(store, client->fingerprint);
    if (status != KT_STORE_OK) {
        return status;
    }
    if (!kt_uuid_acceptable(client->org_uuid)) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the client's org uuid is not a version 4 uuid");
    }
    const char *problem = kt_text_problem(client->name, KT_CLIENT_NAME_MAX,
                                          KT_TEXT_MAY_BE_EMPTY | KT_TEXT_NO_CONTROL);
    if (problem) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the client name %s; at most %u bytes without control characters",
                             problem, KT_CLIENT_NAME_MAX);
    }
    status = check_state(store, client->state);
    if (status != KT_STORE_OK) {
        return status;
    }
    return check_identity(store, client);
}

/* ---- Reading --------------------------------------------------------------------------------- */

static kt_store_status read_client(kt_store *store, sqlite3_stmt *row, kt_client_record *client)
{
    memset(client, 0, sizeof *client);
    size_t key_length = 0;
    if (kt_column_text(row, 0, client->fingerprint, sizeof client->fingerprint) != 0 ||
        kt_column_text(row, 1, client->org_uuid, sizeof client->org_uuid) != 0 ||
        kt_column_text(row, 2, client->org_name, sizeof client->org_name) != 0 ||
        kt_column_text(row, 3, client->name, sizeof client->name) != 0 ||
        kt_column_blob(row, 4, client->public_key, sizeof client->public_key, &key_length) != 0 ||
        key_length != sizeof client->public_key || kt_column_state(row, 6, &client->state) != 0 ||
        kt_column_state(row, 7, &client->org_state) != 0) {
        memset(client, 0, sizeof *client);
        return kt_store_fail(store, KT_STORE_ERROR,
                             "a stored client does not fit this keytrustee's limits "
                             "(damaged row?)");
    }
    client->created = sqlite3_column_int64(row, 5);
    return KT_STORE_OK;
}

kt_store_status kt_store_client_get(kt_store *store, const char *fingerprint,
                                    kt_client_record *client)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!client) {
        return kt_store_fail(store, KT_STORE_INVALID, "no client record to fill was given");
    }
    memset(client, 0, sizeof *client);
    kt_store_status status = check_fingerprint(store, fingerprint);
    if (status != KT_STORE_OK) {
        return status;
    }
    sqlite3_stmt *query = kt_store_statement(store, KT_SQL_CLIENT_GET,
                                             CLIENT_SELECT "WHERE c.fingerprint = ?1");
    if (!query) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(query, 1, fingerprint);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, query, code);
    }
    status = kt_store_step_row(store, query, "looking up the client failed");
    if (status == KT_STORE_OK) {
        status = read_client(store, query, client);
        kt_store_statement_done(query);
    } else if (status == KT_STORE_NOT_FOUND) {
        kt_store_fail(store, status, "no client has the fingerprint %s", fingerprint);
    }
    return status;
}

static kt_store_status visit_client_row(kt_store *store, sqlite3_stmt *row, void *walk_pointer,
                                        bool *stop)
{
    const client_walk *walk = walk_pointer;
    kt_client_record client;
    kt_store_status status = read_client(store, row, &client);
    if (status == KT_STORE_OK) {
        *stop = walk->visit(&client, walk->context) != 0;
    }
    return status;
}

/* The listing query: every client, or those of the org named `org_name` (which must exist). */
static sqlite3_stmt *list_query(kt_store *store, const char *org_name, kt_store_status *status)
{
    if (!org_name) {
        *status = KT_STORE_OK;
        return kt_store_statement(store, KT_SQL_CLIENT_LIST_ALL,
                                  CLIENT_SELECT "ORDER BY o.name, c.created, c.fingerprint");
    }
    kt_org org;
    *status = kt_store_org_get(store, org_name, &org);
    if (*status != KT_STORE_OK) {
        return NULL;
    }
    sqlite3_stmt *query = kt_store_statement(
        store, KT_SQL_CLIENT_LIST_ORG,
        CLIENT_SELECT "WHERE c.org_uuid = ?1 ORDER BY c.created, c.fingerprint");
    if (!query) {
        return NULL;
    }
    int code = sqlite3_bind_text(query, 1, org.uuid, -1, SQLITE_TRANSIENT);
    if (code != SQLITE_OK) {
        *status = kt_store_bind_failed(store, query, code);
        return NULL;
    }
    return query;
}

kt_store_status kt_store_client_list(kt_store *store, const char *org_name,
                                     kt_client_visitor visit, void *context)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!visit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no client visitor was given");
    }
    kt_store_status status = KT_STORE_ERROR;
    sqlite3_stmt *query = list_query(store, org_name, &status);
    if (!query) {
        return status == KT_STORE_OK ? KT_STORE_ERROR : status;
    }
    client_walk walk = {visit, context};
    return kt_store_walk(store, query, "listing the clients failed", visit_client_row, &walk);
}

/* ---- Changes --------------------------------------------------------------------------------- */

static kt_store_status insert_client(kt_store *store, const void *arguments)
{
    const kt_client_record *client = arguments;
    sqlite3_stmt *insert = kt_store_statement(
        store, KT_SQL_CLIENT_INSERT,
        "INSERT INTO clients (fingerprint, org_uuid, name, public_key, created, state) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!insert) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(insert, 1, client->fingerprint);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 2, client->org_uuid);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 3, client->name);
    if (code == SQLITE_OK) code = kt_bind_blob(insert, 4, client->public_key, KT_SIGN_PUBLIC_BYTES);
    if (code == SQLITE_OK) code = sqlite3_bind_int64(insert, 5, client->created);
    if (code == SQLITE_OK) code = kt_bind_state(insert, 6, client->state);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, insert, code);
    }
    kt_store_status status = kt_store_execute(store, insert, "registering the client failed");
    if (status == KT_STORE_CONFLICT) {
        return kt_store_fail(store, status,
                             "a client with the fingerprint %s is already registered",
                             client->fingerprint);
    }
    if (status == KT_STORE_INVALID && strstr(kt_store_error_message(store), "FOREIGN KEY")) {
        return kt_store_fail(store, status, "no org has the uuid %s", client->org_uuid);
    }
    return status;
}

kt_store_status kt_store_client_add(kt_store *store, const kt_client_record *client)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_client(store, client);
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_mutate(store, insert_client, client);
}

static kt_store_status update_state(kt_store *store, const void *arguments)
{
    const client_state_change *change = arguments;
    sqlite3_stmt *update = kt_store_statement(
        store, KT_SQL_CLIENT_SET_STATE, "UPDATE clients SET state = ?2 WHERE fingerprint = ?1");
    if (!update) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(update, 1, change->fingerprint);
    if (code == SQLITE_OK) code = kt_bind_state(update, 2, change->state);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, update, code);
    }
    kt_store_status status = kt_store_execute(store, update, "changing the client's state failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_expect_change(store, "no client has the fingerprint %s", change->fingerprint);
}

kt_store_status kt_store_client_set_state(kt_store *store, const char *fingerprint,
                                          kt_state state)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_fingerprint(store, fingerprint);
    if (status == KT_STORE_OK) {
        status = check_state(store, state);
    }
    if (status != KT_STORE_OK) {
        return status;
    }
    client_state_change change = {fingerprint, state};
    return kt_store_mutate(store, update_state, &change);
}
