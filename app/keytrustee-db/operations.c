/*
 * operations.c — one function per admin op of app.h's table.
 *
 * Each op validates its request strictly (request_fields.c: unknown fields, types, lengths,
 * base64), then reads through the connection's own reader store or hands a write to the writer
 * thread (writer.c), and builds the response. Writes are checked against the node's role first:
 * a passive answers "passive" with the active's URL, so callers can go there.
 *
 * Optional fields and their defaults: org.add contacts ("") and auth_box (none); deposit.put
 * description (""); client.list org (all orgs); deposit.list search (everything).
 *
 * Logging: every request at debug level (op name and the peer's pid, never field values: boxes
 * are ciphertext but still stay out of logs); every failure at warning, internal errors at error,
 * and not_found at info because it is an ordinary answer to a lookup.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/keytrustee-db/service.h"

typedef json_t *(*kt_operation_function)(kt_db_session *session, const json_t *request);

/* ---- shared steps ---------------------------------------------------------------------------- */

kt_store *kt_session_reader(kt_db_session *session, json_t **failure)
{
    if (session->reader != NULL)
        return session->reader;
    kt_store_options options = {.writer = false};
    char error[512];
    if (kt_store_open(&session->reader, session->service->database_path, &options, error,
                      sizeof error) != 0) {
        session->reader = NULL;
        kt_log(KT_LOG_ERROR, "cannot open a reader on %s: %s", session->service->database_path,
               error);
        *failure = kt_response_error("internal", "keytrustee-db cannot read the database; the "
                                                 "details are in its log");
        return NULL;
    }
    return session->reader;
}

static json_t *read_failure(kt_store *reader, const char *op, kt_store_status status)
{
    if (status == KT_STORE_ERROR)
        kt_log(KT_LOG_ERROR, "%s failed: %s", op, kt_store_error_message(reader));
    return kt_response_store_error(status, kt_store_error_message(reader));
}

static json_t *not_writable(const kt_db_service *service, const char *reason, const char *message)
{
    json_t *response = kt_response_error(reason, "%s", message);
    const char *handover_url = kt_replication_glue_handover_url(service->replication);
    if (response != NULL && service->settings.role == KT_ROLE_PASSIVE)
        response = kt_response_attach(response, "active_url",
                                      json_string(service->settings.active_url));
    else if (response != NULL && handover_url != NULL)
        response = kt_response_attach(response, "active_url", json_string(handover_url));
    return response;
}

/* Runs a write through the writer (writer.c); false with *failure set when it was not committed. */
static bool run_write(kt_db_session *session, const char *op, kt_write_function function,
                      void *arguments, json_t **failure)
{
    const char *reason = NULL;
    const char *message = NULL;
    if (!kt_replication_glue_writable(session->service->replication, &reason, &message)) {
        *failure = not_writable(session->service, reason, message);
        return false;
    }
    char text[512];
    kt_store_status status =
        kt_writer_run(session->service->writer, op, function, arguments, text, sizeof text);
    if (status != KT_STORE_OK) {
        *failure = kt_response_store_error(status, text);
        return false;
    }
    return true;
}

/* Collects list results into a JSON array. */
typedef struct list_builder {
    json_t *array;
    bool failed;
} list_builder;

static int append_to_list(list_builder *builder, json_t *object)
{
    if (object == NULL || json_array_append_new(builder->array, object) != 0) {
        builder->failed = true;
        return 1; /* stops the walk */
    }
    return 0;
}

static int visit_org(const kt_org *org, void *context)
{
    return append_to_list(context, kt_org_object(org));
}

static int visit_client(const kt_client_record *client, void *context)
{
    return append_to_list(context, kt_client_object(client));
}

static int visit_deposit(const kt_deposit *deposit, void *context)
{
    return append_to_list(context, kt_deposit_object(deposit, false));
}

/* The response for a finished walk: the list, or the walk's failure. */
static json_t *list_response(kt_store *reader, const char *op, kt_store_status status,
                             list_builder *builder, const char *key)
{
    if (status != KT_STORE_OK && !builder->failed) {
        json_decref(builder->array);
        return read_failure(reader, op, status);
    }
    if (builder->failed) {
        json_decref(builder->array);
        return NULL;
    }
    return kt_response_attach(kt_response_ok(), key, builder->array);
}

/* ---- orgs ------------------------------------------------------------------------------------- */

static kt_store_status write_org_add(kt_store *store, void *arguments)
{
    return kt_store_org_add(store, arguments);
}

static json_t *org_add(kt_db_session *session, const json_t *request)
{
    kt_org org = {.state = KT_STATE_ACTIVE};
    json_t *failure = NULL;
    if (kt_field_text(request, "name", 1, KT_ORG_NAME_MAX, true, NULL, org.name, &failure) != 0 ||
        kt_field_text(request, "contacts", 0, KT_CONTACTS_MAX, true, "", org.contacts,
                      &failure) != 0 ||
        kt_field_base64(request, "auth_box", 0, KT_AUTH_BOX_MAX, true, org.auth_box,
                        &org.auth_box_length, &failure) != 0)
        return failure;
    kt_uuid_generate(org.uuid);
    org.created = (int64_t)time(NULL);
    if (!run_write(session, "org.add", write_org_add, &org, &failure))
        return failure;
    return kt_response_attach(kt_response_ok(), "org", kt_org_object(&org));
}

static json_t *org_get(kt_db_session *session, const json_t *request)
{
    char name[KT_ORG_NAME_MAX + 1];
    json_t *failure = NULL;
    if (kt_field_text(request, "name", 1, KT_ORG_NAME_MAX, true, NULL, name, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    kt_org org;
    kt_store_status status = kt_store_org_get(reader, name, &org);
    if (status != KT_STORE_OK)
        return read_failure(reader, "org.get", status);
    return kt_response_attach(kt_response_ok(), "org", kt_org_object(&org));
}

static json_t *org_list(kt_db_session *session, const json_t *request)
{
    (void)request;
    json_t *failure = NULL;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    list_builder builder = {.array = json_array()};
    if (builder.array == NULL)
        return NULL;
    kt_store_status status = kt_store_org_list(reader, visit_org, &builder);
    return list_response(reader, "org.list", status, &builder, "orgs");
}

typedef struct org_auth_arguments {
    char name[KT_ORG_NAME_MAX + 1];
    unsigned char box[KT_AUTH_BOX_MAX];
    size_t length;
} org_auth_arguments;

static kt_store_status write_org_set_auth(kt_store *store, void *arguments)
{
    const org_auth_arguments *auth = arguments;
    return kt_store_org_set_auth(store, auth->name, auth->box, auth->length);
}

static json_t *org_set_auth(kt_db_session *session, const json_t *request)
{
    org_auth_arguments auth;
    json_t *failure = NULL;
    if (kt_field_text(request, "name", 1, KT_ORG_NAME_MAX, true, NULL, auth.name, &failure) != 0 ||
        kt_field_base64(request, "auth_box", 0, KT_AUTH_BOX_MAX, false, auth.box, &auth.length,
                        &failure) != 0)
        return failure;
    if (!run_write(session, "org.set_auth", write_org_set_auth, &auth, &failure))
        return failure;
    return kt_response_ok();
}

/* ---- clients ---------------------------------------------------------------------------------- */

/* The org is named in the request; its uuid is looked up inside the batch so that an org added
 * by an earlier request of the same batch counts. */
static kt_store_status write_client_add(kt_store *store, void *arguments)
{
    kt_client_record *client = arguments;
    kt_org org;
    kt_store_status status = kt_store_org_get(store, client->org_name, &org);
    if (status != KT_STORE_OK)
        return status;
    memcpy(client->org_uuid, org.uuid, sizeof client->org_uuid);
    return kt_store_client_add(store, client);
}

static json_t *client_add(kt_db_session *session, const json_t *request)
{
    kt_client_record client = {.state = KT_STATE_ACTIVE};
    size_t key_length = 0;
    json_t *failure = NULL;
    if (kt_field_fingerprint(request, "fingerprint", client.fingerprint, &failure) != 0 ||
        kt_field_text(request, "org", 1, KT_ORG_NAME_MAX, true, NULL, client.org_name,
                      &failure) != 0 ||
        kt_field_text(request, "name", 1, KT_CLIENT_NAME_MAX, true, NULL, client.name,
                      &failure) != 0 ||
        kt_field_base64(request, "public_key", KT_SIGN_PUBLIC_BYTES, KT_SIGN_PUBLIC_BYTES, false,
                        client.public_key, &key_length, &failure) != 0)
        return failure;
    char expected[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(expected, client.public_key);
    if (strcmp(expected, client.fingerprint) != 0)
        return kt_response_error("bad_request",
                                 "the fingerprint is not the fingerprint of public_key");
    client.created = (int64_t)time(NULL);
    if (!run_write(session, "client.add", write_client_add, &client, &failure))
        return failure;
    return kt_response_attach(kt_response_ok(), "client", kt_client_object(&client));
}

static json_t *client_get(kt_db_session *session, const json_t *request)
{
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    json_t *failure = NULL;
    if (kt_field_fingerprint(request, "fingerprint", fingerprint, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    kt_client_record client;
    kt_store_status status = kt_store_client_get(reader, fingerprint, &client);
    if (status != KT_STORE_OK)
        return read_failure(reader, "client.get", status);
    return kt_response_attach(kt_response_ok(), "client", kt_client_object(&client));
}

typedef struct client_state_arguments {
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_state state;
} client_state_arguments;

static kt_store_status write_client_set_state(kt_store *store, void *arguments)
{
    const client_state_arguments *change = arguments;
    return kt_store_client_set_state(store, change->fingerprint, change->state);
}

static json_t *client_set_state(kt_db_session *session, const json_t *request)
{
    client_state_arguments change;
    json_t *failure = NULL;
    if (kt_field_fingerprint(request, "fingerprint", change.fingerprint, &failure) != 0 ||
        kt_field_state(request, "state", &change.state, &failure) != 0)
        return failure;
    if (!run_write(session, "client.set_state", write_client_set_state, &change, &failure))
        return failure;
    return kt_response_ok();
}

static json_t *client_list(kt_db_session *session, const json_t *request)
{
    char org[KT_ORG_NAME_MAX + 1];
    json_t *failure = NULL;
    bool all = !kt_field_present(request, "org");
    if (!all && kt_field_text(request, "org", 1, KT_ORG_NAME_MAX, true, NULL, org, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    list_builder builder = {.array = json_array()};
    if (builder.array == NULL)
        return NULL;
    kt_store_status status = kt_store_client_list(reader, all ? NULL : org, visit_client, &builder);
    return list_response(reader, "client.list", status, &builder, "clients");
}

/* ---- deposits --------------------------------------------------------------------------------- */

typedef struct deposit_key {
    char client[KT_FINGERPRINT_CHARS + 1];
    char uuid[KT_UUID_CHARS + 1];
} deposit_key;

static int read_deposit_key(const json_t *request, deposit_key *key, json_t **failure)
{
    if (kt_field_fingerprint(request, "client", key->client, failure) != 0 ||
        kt_field_uuid(request, "uuid", key->uuid, failure) != 0)
        return -1;
    return 0;
}

/* A read names its client and one deposit, by "uuid" or by "handle" (exactly one of them). */
typedef struct deposit_selector {
    char client[KT_FINGERPRINT_CHARS + 1];
    bool by_uuid;
    char uuid[KT_UUID_CHARS + 1];
    char handle[KT_HANDLE_MAX + 1];
} deposit_selector;

static int read_deposit_selector(const json_t *request, const char *op, const char *client_field,
                                 deposit_selector *selector, json_t **failure)
{
    selector->by_uuid = kt_field_present(request, "uuid");
    if (selector->by_uuid == kt_field_present(request, "handle")) {
        *failure = kt_response_error("bad_request", "%s takes either \"uuid\" or \"handle\"", op);
        return -1;
    }
    if (kt_field_fingerprint(request, client_field, selector->client, failure) != 0)
        return -1;
    return selector->by_uuid
               ? kt_field_uuid(request, "uuid", selector->uuid, failure)
               : kt_field_text(request, "handle", 1, KT_HANDLE_MAX, true, NULL, selector->handle,
                               failure);
}

static kt_store_status read_selected_deposit(kt_store *reader, const deposit_selector *selector,
                                             kt_deposit *deposit)
{
    return selector->by_uuid
               ? kt_store_deposit_get(reader, selector->client, selector->uuid, deposit)
               : kt_store_deposit_get_by_handle(reader, selector->client, selector->handle, deposit);
}

static kt_store_status write_deposit_put(kt_store *store, void *arguments)
{
    return kt_store_deposit_put(store, arguments);
}

static int read_new_deposit(const json_t *request, kt_deposit *deposit, json_t **failure)
{
    if (kt_field_fingerprint(request, "client", deposit->client, failure) != 0 ||
        kt_field_uuid(request, "uuid", deposit->uuid, failure) != 0 ||
        kt_field_text(request, "handle", 1, KT_HANDLE_MAX, true, NULL, deposit->handle,
                      failure) != 0 ||
        kt_field_text(request, "description", 0, KT_DESCRIPTION_MAX, false, "",
                      deposit->description, failure) != 0)
        return -1;
    deposit->box = malloc(KT_DEPOSIT_BOX_MAX);
    if (deposit->box == NULL) {
        *failure = kt_response_error("internal", "out of memory");
        return -1;
    }
    return kt_field_base64(request, "box", KT_AEAD_OVERHEAD + 1, KT_DEPOSIT_BOX_MAX, false,
                           deposit->box, &deposit->box_length, failure);
}

static json_t *deposit_put(kt_db_session *session, const json_t *request)
{
    kt_deposit deposit = {.state = KT_STATE_ACTIVE};
    json_t *failure = NULL;
    json_t *response = NULL;
    if (read_new_deposit(request, &deposit, &failure) != 0) {
        response = failure;
    } else {
        deposit.created = (int64_t)time(NULL);
        if (!run_write(session, "deposit.put", write_deposit_put, &deposit, &failure))
            response = failure;
        else
            response = kt_response_attach(kt_response_ok(), "deposit",
                                          kt_deposit_object(&deposit, false));
    }
    kt_deposit_clear(&deposit);
    return response;
}

static json_t *deposit_get(kt_db_session *session, const json_t *request)
{
    deposit_selector selector;
    json_t *failure = NULL;
    if (read_deposit_selector(request, "deposit.get", "client", &selector, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    kt_deposit deposit = {0};
    kt_store_status status = read_selected_deposit(reader, &selector, &deposit);
    json_t *response = status == KT_STORE_OK
                           ? kt_response_attach(kt_response_ok(), "deposit",
                                                kt_deposit_object(&deposit, true))
                           : read_failure(reader, "deposit.get", status);
    kt_deposit_clear(&deposit);
    return response;
}

/* client.deposit: client.get and deposit.get in one call, so that keytrusteed serves a deposit
 * read with one admin-socket round trip. not_found means the client is unknown; an unknown
 * deposit is no error here: the answer then has the client and "deposit": null, because only
 * keytrusteed, after checking the request's signature with the client's key, may say so. */
static json_t *client_deposit(kt_db_session *session, const json_t *request)
{
    deposit_selector selector;
    json_t *failure = NULL;
    if (read_deposit_selector(request, "client.deposit", "fingerprint", &selector, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    kt_client_record client;
    kt_deposit deposit = {0};
    /* One snapshot for both, and the read locks taken once instead of per query. */
    kt_store_status status = kt_store_read_begin(reader);
    if (status == KT_STORE_OK)
        status = kt_store_client_get(reader, selector.client, &client);
    kt_store_status found = KT_STORE_ERROR;
    if (status == KT_STORE_OK)
        found = read_selected_deposit(reader, &selector, &deposit);
    json_t *response = NULL;
    if (status != KT_STORE_OK)
        response = read_failure(reader, "client.deposit", status);
    else if (found == KT_STORE_OK || found == KT_STORE_NOT_FOUND)
        response = kt_response_attach(
            kt_response_attach(kt_response_ok(), "client", kt_client_object(&client)), "deposit",
            found == KT_STORE_OK ? kt_deposit_object(&deposit, true) : json_null());
    else
        response = read_failure(reader, "client.deposit", found);
    kt_store_read_end(reader);
    kt_deposit_clear(&deposit);
    return response;
}

static json_t *deposit_list(kt_db_session *session, const json_t *request)
{
    char client[KT_FINGERPRINT_CHARS + 1];
    char search[KT_DESCRIPTION_MAX + 1];
    json_t *failure = NULL;
    if (kt_field_fingerprint(request, "client", client, &failure) != 0 ||
        kt_field_text(request, "search", 0, KT_DESCRIPTION_MAX, false, "", search, &failure) != 0)
        return failure;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    list_builder builder = {.array = json_array()};
    if (builder.array == NULL)
        return NULL;
    kt_store_status status = kt_store_deposit_list(reader, client, search[0] ? search : NULL,
                                                   visit_deposit, &builder);
    return list_response(reader, "deposit.list", status, &builder, "deposits");
}

typedef struct deposit_state_arguments {
    deposit_key key;
    kt_state state;
} deposit_state_arguments;

static kt_store_status write_deposit_set_state(kt_store *store, void *arguments)
{
    const deposit_state_arguments *change = arguments;
    return kt_store_deposit_set_state(store, change->key.client, change->key.uuid, change->state);
}

static json_t *deposit_set_state(kt_db_session *session, const json_t *request)
{
    deposit_state_arguments change;
    json_t *failure = NULL;
    if (read_deposit_key(request, &change.key, &failure) != 0 ||
        kt_field_state(request, "state", &change.state, &failure) != 0)
        return failure;
    if (!run_write(session, "deposit.set_state", write_deposit_set_state, &change, &failure))
        return failure;
    return kt_response_ok();
}

static kt_store_status write_deposit_purge(kt_store *store, void *arguments)
{
    const deposit_key *key = arguments;
    return kt_store_deposit_purge(store, key->client, key->uuid);
}

static json_t *deposit_purge(kt_db_session *session, const json_t *request)
{
    deposit_key key;
    json_t *failure = NULL;
    if (read_deposit_key(request, &key, &failure) != 0)
        return failure;
    if (!run_write(session, "deposit.purge", write_deposit_purge, &key, &failure))
        return failure;
    return kt_response_ok();
}

/* ---- replication -------------------------------------------------------------------------- */

/* `ktadmin enable-synchronous-replication`: ktadmin has already saved it in keytrustee-db.conf. */
static json_t *replication_set_synchronous(kt_db_session *session, const json_t *request)
{
    const json_t *value = json_object_get(request, "synchronous");
    if (!json_is_boolean(value))
        return kt_response_error("bad_request", "\"synchronous\" must be true or false");
    if (session->service->settings.role != KT_ROLE_ACTIVE)
        return kt_response_error("bad_request",
                                 "this node is %s: synchronous replication is set on the active",
                                 kt_db_role_name(session->service->settings.role));
    session->service->settings.synchronous = json_is_true(value);
    kt_replication_glue_set_synchronous(session->service->replication, json_is_true(value));
    return kt_response_ok();
}

/* ---- dispatch --------------------------------------------------------------------------------- */

typedef struct kt_operation {
    const char *name;
    kt_operation_function function;
    const char *const *fields;
} kt_operation;

#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const kt_operation operations[] = {
    {"status", kt_status_handle, FIELDS(NULL)},
    {"org.add", org_add, FIELDS("name", "contacts", "auth_box")},
    {"org.get", org_get, FIELDS("name")},
    {"org.list", org_list, FIELDS(NULL)},
    {"org.set_auth", org_set_auth, FIELDS("name", "auth_box")},
    {"client.add", client_add, FIELDS("fingerprint", "org", "name", "public_key")},
    {"client.get", client_get, FIELDS("fingerprint")},
    {"client.set_state", client_set_state, FIELDS("fingerprint", "state")},
    {"client.list", client_list, FIELDS("org")},
    {"deposit.put", deposit_put, FIELDS("client", "uuid", "handle", "description", "box")},
    {"deposit.get", deposit_get, FIELDS("client", "uuid", "handle")},
    {"client.deposit", client_deposit, FIELDS("fingerprint", "uuid", "handle")},
    {"deposit.list", deposit_list, FIELDS("client", "search")},
    {"deposit.set_state", deposit_set_state, FIELDS("client", "uuid", "state")},
    {"deposit.purge", deposit_purge, FIELDS("client", "uuid")},
    {"replication.set_synchronous", replication_set_synchronous, FIELDS("synchronous")},
    {"backup", kt_backup_handle, FIELDS(NULL)},
    {"replication.promote", kt_promote_handle, FIELDS("force")},
    {"replication.switchover", kt_switchover_handle, FIELDS("new_active_url")},
};

static const kt_operation *find_operation(const char *name)
{
    for (size_t index = 0; index < sizeof operations / sizeof operations[0]; index++)
        if (strcmp(operations[index].name, name) == 0)
            return &operations[index];
    return NULL;
}

static void log_failure(const char *op, const json_t *response)
{
    const char *code = json_string_value(json_object_get(response, "error"));
    const char *message = json_string_value(json_object_get(response, "message"));
    if (code == NULL || message == NULL)
        return;
    kt_log_level level = strcmp(code, "internal") == 0    ? KT_LOG_ERROR
                         : strcmp(code, "not_found") == 0 ? KT_LOG_INFO
                                                          : KT_LOG_WARNING;
    kt_log(level, "%s: %s: %s", op, code, message);
}

json_t *kt_operation_handle(kt_db_session *session, const json_t *request)
{
    const char *name = json_string_value(json_object_get(request, "op"));
    if (name == NULL) {
        kt_log(KT_LOG_WARNING, "a request without an \"op\" string (peer pid %ld)",
               (long)session->peer_pid);
        return kt_response_error("bad_request", "the request has no \"op\" string");
    }
    const kt_operation *operation = find_operation(name);
    if (operation == NULL) {
        kt_log(KT_LOG_WARNING, "unknown op \"%.64s\" (peer pid %ld)", name,
               (long)session->peer_pid);
        return kt_response_error("bad_request", "unknown op \"%.64s\"", name);
    }
    kt_log(KT_LOG_DEBUG, "request %s (peer pid %ld)", operation->name, (long)session->peer_pid);
    json_t *failure = NULL;
    json_t *response = kt_fields_known(request, operation->name, operation->fields, &failure) == 0
                           ? kt_db_audit_run(session, operation->name, operation->function,
                                             request)
                           : failure;
    if (response != NULL && json_is_false(json_object_get(response, "ok")))
        log_failure(operation->name, response);
    return response;
}
