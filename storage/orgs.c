/*
 * orgs.c — the orgs table: adding an org, finding it by name or uuid, changing its auth secret box
 * and its state, and listing orgs by name.
 *
 * An org name is its public handle (orgtool and clients' registrations use it), so it is unique and
 * kept to [A-Za-z0-9_.-]. The auth secret is stored only as an AEAD box; a zero-length box means
 * "no secret", kept as NULL in the database.
 */
#include <string.h>

#include "storage/internal.h"

#define ORG_COLUMNS "uuid, name, contacts, created, expires, state, auth_box"

typedef struct org_auth_change {
    const char *name;
    const unsigned char *box;
    size_t length;
} org_auth_change;

typedef struct org_state_change {
    const char *name;
    kt_state state;
} org_state_change;

typedef struct org_walk {
    kt_org_visitor visit;
    void *context;
} org_walk;

/* ---- Checks ---------------------------------------------------------------------------------- */

static kt_store_status check_name(kt_store *store, const char *name)
{
    const char *problem = kt_org_name_problem(name);
    if (!problem) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID,
                         "the org name %s; it must be 1 to %u of A-Z a-z 0-9 _ . -", problem,
                         KT_ORG_NAME_MAX);
}

static kt_store_status check_auth_box(kt_store *store, const unsigned char *box, size_t length)
{
    if (length == 0) {
        return KT_STORE_OK;
    }
    if (!box || length < KT_AEAD_OVERHEAD || length > KT_AUTH_BOX_MAX) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the auth secret box must be %u to %u bytes (a sealed secret of at "
                             "most %u bytes), or empty for no secret", KT_AEAD_OVERHEAD,
                             KT_AUTH_BOX_MAX, KT_AUTH_SECRET_MAX);
    }
    return KT_STORE_OK;
}

static kt_store_status check_state(kt_store *store, kt_state state)
{
    if (kt_state_known(state)) {
        return KT_STORE_OK;
    }
    return kt_store_fail(store, KT_STORE_INVALID, "the org state must be active or disabled");
}

static kt_store_status check_org(kt_store *store, const kt_org *org)
{
    if (!org) {
        return kt_store_fail(store, KT_STORE_INVALID, "no org was given");
    }
    if (!kt_uuid_acceptable(org->uuid)) {
        return kt_store_fail(store, KT_STORE_INVALID, "the org uuid is not a version 4 uuid");
    }
    kt_store_status status = check_name(store, org->name);
    if (status != KT_STORE_OK) {
        return status;
    }
    const char *problem = kt_text_problem(org->contacts, KT_CONTACTS_MAX,
                                          KT_TEXT_MAY_BE_EMPTY | KT_TEXT_NO_CONTROL);
    if (problem) {
        return kt_store_fail(store, KT_STORE_INVALID,
                             "the org contacts %s; at most %u bytes without control characters",
                             problem, KT_CONTACTS_MAX);
    }
    if (org->expires < 0) {
        return kt_store_fail(store, KT_STORE_INVALID, "the org expiry must be 0 (never) or a time");
    }
    status = check_state(store, org->state);
    if (status != KT_STORE_OK) {
        return status;
    }
    return check_auth_box(store, org->auth_box, org->auth_box_length);
}

/* ---- Reading --------------------------------------------------------------------------------- */

static kt_store_status read_org(kt_store *store, sqlite3_stmt *row, kt_org *org)
{
    memset(org, 0, sizeof *org);
    if (kt_column_text(row, 0, org->uuid, sizeof org->uuid) != 0 ||
        kt_column_text(row, 1, org->name, sizeof org->name) != 0 ||
        kt_column_text(row, 2, org->contacts, sizeof org->contacts) != 0 ||
        kt_column_state(row, 5, &org->state) != 0 ||
        kt_column_blob(row, 6, org->auth_box, sizeof org->auth_box, &org->auth_box_length) != 0) {
        memset(org, 0, sizeof *org);
        return kt_store_fail(store, KT_STORE_ERROR,
                             "a stored org does not fit this keytrustee's limits (damaged row?)");
    }
    org->created = sqlite3_column_int64(row, 3);
    org->expires = sqlite3_column_int64(row, 4);
    return KT_STORE_OK;
}

static kt_store_status find_org(kt_store *store, kt_statement_id id, const char *sql,
                                const char *key, kt_org *org)
{
    sqlite3_stmt *query = kt_store_statement(store, id, sql);
    if (!query) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(query, 1, key);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, query, code);
    }
    kt_store_status status = kt_store_step_row(store, query, "looking up the org failed");
    if (status == KT_STORE_OK) {
        status = read_org(store, query, org);
        kt_store_statement_done(query);
    }
    return status;
}

kt_store_status kt_store_org_get(kt_store *store, const char *name, kt_org *org)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!org) {
        return kt_store_fail(store, KT_STORE_INVALID, "no org record to fill was given");
    }
    memset(org, 0, sizeof *org);
    kt_store_status status = check_name(store, name);
    if (status != KT_STORE_OK) {
        return status;
    }
    status = find_org(store, KT_SQL_ORG_BY_NAME,
                      "SELECT " ORG_COLUMNS " FROM orgs WHERE name = ?1", name, org);
    if (status == KT_STORE_NOT_FOUND) {
        kt_store_fail(store, status, "no org is named '%s'", name);
    }
    return status;
}

kt_store_status kt_store_org_get_by_uuid(kt_store *store, const char *uuid, kt_org *org)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!org) {
        return kt_store_fail(store, KT_STORE_INVALID, "no org record to fill was given");
    }
    memset(org, 0, sizeof *org);
    if (!kt_uuid_acceptable(uuid)) {
        return kt_store_fail(store, KT_STORE_INVALID, "the org uuid is not a version 4 uuid");
    }
    kt_store_status status = find_org(store, KT_SQL_ORG_BY_UUID,
                                      "SELECT " ORG_COLUMNS " FROM orgs WHERE uuid = ?1", uuid,
                                      org);
    if (status == KT_STORE_NOT_FOUND) {
        kt_store_fail(store, status, "no org has the uuid %s", uuid);
    }
    return status;
}

static kt_store_status visit_org_row(kt_store *store, sqlite3_stmt *row, void *walk_pointer,
                                     bool *stop)
{
    const org_walk *walk = walk_pointer;
    kt_org org;
    kt_store_status status = read_org(store, row, &org);
    if (status == KT_STORE_OK) {
        *stop = walk->visit(&org, walk->context) != 0;
    }
    return status;
}

kt_store_status kt_store_org_list(kt_store *store, kt_org_visitor visit, void *context)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    if (!visit) {
        return kt_store_fail(store, KT_STORE_INVALID, "no org visitor was given");
    }
    sqlite3_stmt *query = kt_store_statement(store, KT_SQL_ORG_LIST,
                                             "SELECT " ORG_COLUMNS " FROM orgs ORDER BY name");
    if (!query) {
        return KT_STORE_ERROR;
    }
    org_walk walk = {visit, context};
    return kt_store_walk(store, query, "listing the orgs failed", visit_org_row, &walk);
}

/* ---- Changes --------------------------------------------------------------------------------- */

static kt_store_status insert_org(kt_store *store, const void *arguments)
{
    const kt_org *org = arguments;
    sqlite3_stmt *insert = kt_store_statement(
        store, KT_SQL_ORG_INSERT,
        "INSERT INTO orgs (" ORG_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!insert) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(insert, 1, org->uuid);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 2, org->name);
    if (code == SQLITE_OK) code = kt_bind_text(insert, 3, org->contacts);
    if (code == SQLITE_OK) code = sqlite3_bind_int64(insert, 4, org->created);
    if (code == SQLITE_OK) code = sqlite3_bind_int64(insert, 5, org->expires);
    if (code == SQLITE_OK) code = kt_bind_state(insert, 6, org->state);
    if (code == SQLITE_OK) code = kt_bind_blob(insert, 7, org->auth_box, org->auth_box_length);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, insert, code);
    }
    kt_store_status status = kt_store_execute(store, insert, "adding the org failed");
    if (status == KT_STORE_CONFLICT && strstr(kt_store_error_message(store), "orgs.name")) {
        return kt_store_fail(store, status, "an org named '%s' already exists", org->name);
    }
    if (status == KT_STORE_CONFLICT) {
        return kt_store_fail(store, status, "an org with the uuid %s already exists", org->uuid);
    }
    return status;
}

kt_store_status kt_store_org_add(kt_store *store, const kt_org *org)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_org(store, org);
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_mutate(store, insert_org, org);
}

static kt_store_status update_auth(kt_store *store, const void *arguments)
{
    const org_auth_change *change = arguments;
    sqlite3_stmt *update = kt_store_statement(store, KT_SQL_ORG_SET_AUTH,
                                              "UPDATE orgs SET auth_box = ?2 WHERE name = ?1");
    if (!update) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(update, 1, change->name);
    if (code == SQLITE_OK) code = kt_bind_blob(update, 2, change->box, change->length);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, update, code);
    }
    kt_store_status status = kt_store_execute(store, update,
                                              "changing the org's auth secret failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_expect_change(store, "no org is named '%s'", change->name);
}

kt_store_status kt_store_org_set_auth(kt_store *store, const char *name,
                                      const unsigned char *auth_box, size_t auth_box_length)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_name(store, name);
    if (status == KT_STORE_OK) {
        status = check_auth_box(store, auth_box, auth_box_length);
    }
    if (status != KT_STORE_OK) {
        return status;
    }
    org_auth_change change = {name, auth_box, auth_box_length};
    return kt_store_mutate(store, update_auth, &change);
}

static kt_store_status update_state(kt_store *store, const void *arguments)
{
    const org_state_change *change = arguments;
    sqlite3_stmt *update = kt_store_statement(store, KT_SQL_ORG_SET_STATE,
                                              "UPDATE orgs SET state = ?2 WHERE name = ?1");
    if (!update) {
        return KT_STORE_ERROR;
    }
    int code = kt_bind_text(update, 1, change->name);
    if (code == SQLITE_OK) code = kt_bind_state(update, 2, change->state);
    if (code != SQLITE_OK) {
        return kt_store_bind_failed(store, update, code);
    }
    kt_store_status status = kt_store_execute(store, update, "changing the org's state failed");
    if (status != KT_STORE_OK) {
        return status;
    }
    return kt_store_expect_change(store, "no org is named '%s'", change->name);
}

kt_store_status kt_store_org_set_state(kt_store *store, const char *name, kt_state state)
{
    if (!store) {
        return KT_STORE_INVALID;
    }
    kt_store_status status = check_name(store, name);
    if (status == KT_STORE_OK) {
        status = check_state(store, state);
    }
    if (status != KT_STORE_OK) {
        return status;
    }
    org_state_change change = {name, state};
    return kt_store_mutate(store, update_state, &change);
}
