/*
 * deposits.c — a client's deposits: put, get (by uuid or handle), list and search, disable,
 * enable, purge. Every request is authenticated (auth.c) and scoped to the signing client, so a
 * client never sees another's deposits: another client's uuid is simply not found.
 *
 * A deposit's secret is sealed here, before it leaves keytrusteed: XChaCha20-Poly1305 under the
 * server data key with associated data org uuid || 0 || client fingerprint || 0 || deposit uuid,
 * so keytrustee-db (and its disk, and the passive) only ever hold the box, and a box moved to
 * another row does not open. On a read the box is opened into a kt_secret, base64-encoded into
 * another, and both are wiped once the answer is sent. A disabled deposit is refused (403) without
 * being opened.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

#define ASSOCIATED_MAX (KT_UUID_CHARS + 1 + KT_FINGERPRINT_CHARS + 1 + KT_UUID_CHARS)

/* org uuid || 0 || client fingerprint || 0 || deposit uuid */
static size_t associated_data(unsigned char out[ASSOCIATED_MAX], const ktd_client *client,
                              const char *uuid)
{
    size_t length = 0;
    memcpy(out + length, client->org_uuid, KT_UUID_CHARS);
    length += KT_UUID_CHARS;
    out[length++] = 0;
    memcpy(out + length, client->fingerprint, KT_FINGERPRINT_CHARS);
    length += KT_FINGERPRINT_CHARS;
    out[length++] = 0;
    memcpy(out + length, uuid, KT_UUID_CHARS);
    return length + KT_UUID_CHARS;
}

/* {"op": op, "client": fingerprint}; NULL after answering. */
static json_t *client_request(ktd_request *request, const char *op, const ktd_client *client)
{
    json_t *db_request = ktd_db_request(request, op);
    if (db_request != NULL &&
        json_object_set_new(db_request, "client", json_string(client->fingerprint)) != 0) {
        json_decref(db_request);
        ktd_respond_internal(request, "building a deposit request");
        return NULL;
    }
    return db_request;
}

/* Adds a string member; answers 400 when it is not UTF-8 (query values may not be). */
static int set_text(ktd_request *request, json_t *object, const char *name, const char *value)
{
    json_t *text = json_string(value);
    if (text == NULL) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s must be UTF-8 text", name);
        return -1;
    }
    if (json_object_set_new(object, name, text) != 0)
        return ktd_respond_internal(request, "building a deposit request");
    return 0;
}

/* Calls keytrustee-db and answers its refusals; returns the accepted response or NULL. */
static json_t *call_or_respond(ktd_request *request, json_t *db_request, ktd_db_kind kind,
                               const char *not_found)
{
    json_t *response = NULL;
    if (ktd_db_call(request, db_request, kind, &response) != 0)
        return NULL;
    if (ktd_db_error_code(response) != NULL) {
        ktd_respond_db_error(request, response, not_found);
        json_decref(response);
        return NULL;
    }
    return response;
}

/* Whether a query value can go into a JSON request (jansson takes UTF-8 only). */
static bool utf8_text(const char *text)
{
    json_t *value = json_string(text);
    json_decref(value);
    return value != NULL;
}

static bool valid_handle(const char *handle)
{
    size_t length = strlen(handle);
    if (length == 0 || length > KT_HANDLE_MAX)
        return false;
    for (size_t index = 0; index < length; index++)
        if ((unsigned char)handle[index] < 0x20 || handle[index] == 0x7f)
            return false;
    return true;
}

/* ---- Put ------------------------------------------------------------------------------------ */

/* Decodes the "secret" member into a new kt_secret; NULL after answering 400. */
static kt_secret *decode_secret(ktd_request *request, const json_t *body)
{
    const char *text;
    size_t longest = kt_base64_encoded_size(KT_DEPOSIT_MAX) - 1;
    if (ktd_body_string(request, body, "secret", true, 1, longest, false, &text) != 0)
        return NULL;
    kt_secret *secret = kt_secret_new(KT_DEPOSIT_MAX);
    if (secret == NULL) {
        ktd_respond_internal(request, "allocating the deposit secret");
        return NULL;
    }
    size_t length = 0;
    if (kt_base64_decode(secret->bytes, secret->length, &length, text, strlen(text)) != 0 ||
        length == 0) {
        kt_secret_free(secret);
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "the field \"secret\" must be padded base64 of 1 to %u bytes",
                          KT_DEPOSIT_MAX);
        return NULL;
    }
    secret->length = length; /* kt_secret_free wipes the whole allocation regardless */
    return secret;
}

/* Seals the secret for (client, uuid); returns the base64 box (malloc'd) or NULL. */
static char *seal_secret(ktd_request *request, const ktd_client *client, const char *uuid,
                         const kt_secret *secret)
{
    unsigned char associated[ASSOCIATED_MAX];
    size_t associated_length = associated_data(associated, client, uuid);
    size_t box_size = secret->length + KT_AEAD_OVERHEAD;
    unsigned char *box = malloc(box_size);
    size_t text_size = kt_base64_encoded_size(box_size);
    char *text = malloc(text_size);
    size_t box_length = 0;
    if (box == NULL || text == NULL ||
        kt_aead_seal(box, box_size, &box_length, secret->bytes, secret->length, associated,
                     associated_length, request->daemon->keys->data_key) != 0 ||
        kt_base64_encode(text, text_size, box, box_length) != 0) {
        free(text);
        text = NULL;
        ktd_respond_internal(request, "sealing a deposit");
    }
    free(box);
    return text;
}

typedef struct deposit_form {
    const char *handle;
    const char *description;
    char uuid[KT_UUID_CHARS + 1];
    char *box; /* base64 */
} deposit_form;

static int read_deposit_form(ktd_request *request, const ktd_client *client, const json_t *body,
                             deposit_form *form)
{
    if (ktd_body_string(request, body, "handle", true, 1, KT_HANDLE_MAX, true,
                        &form->handle) != 0 ||
        ktd_body_string(request, body, "description", false, 0, KT_DESCRIPTION_MAX, false,
                        &form->description) != 0)
        return -1;
    kt_secret *secret = decode_secret(request, body);
    if (secret == NULL)
        return -1;
    kt_uuid_generate(form->uuid);
    ktd_audit_note_object(form->uuid);
    form->box = seal_secret(request, client, form->uuid, secret);
    kt_secret_free(secret);
    return form->box != NULL ? 0 : -1;
}

static void store_deposit(ktd_request *request, const ktd_client *client, const deposit_form *form)
{
    json_t *db_request = client_request(request, "deposit.put", client);
    if (db_request == NULL)
        return;
    json_t *response = NULL;
    if (json_object_update_new(db_request,
                               json_pack("{s:s, s:s, s:s, s:s}", "uuid", form->uuid, "handle",
                                         form->handle, "description",
                                         form->description != NULL ? form->description : "",
                                         "box", form->box)) != 0)
        ktd_respond_internal(request, "building deposit.put");
    else if (ktd_db_call(request, db_request, KTD_DB_WRITE, &response) != 0)
        ; /* answered */
    else if (ktd_db_error_code(response) != NULL &&
             strcmp(ktd_db_error_code(response), "conflict") == 0)
        ktd_respond_error(request, 409, "conflict", NULL,
                          "this client already has a deposit with the handle \"%s\"",
                          form->handle);
    else if (ktd_db_error_code(response) != NULL)
        ktd_respond_db_error(request, response, "the client disappeared");
    else {
        json_t *deposit = json_object_get(response, "deposit");
        json_t *body = json_pack("{s:s, s:s, s:O}", "uuid", form->uuid, "handle", form->handle,
                                 "created", json_object_get(deposit, "created"));
        if (body == NULL)
            ktd_respond_internal(request, "building the deposit answer");
        else
            ktd_respond_json(request, 201, body);
        json_decref(body);
    }
    json_decref(db_request);
    json_decref(response);
}

void ktd_handle_deposit_put(ktd_request *request, const char *argument)
{
    (void)argument;
    static const char *const fields[] = {"handle", "secret", "description", NULL};
    ktd_client client;
    deposit_form form = {0};
    if (ktd_authenticate(request, KTD_BODY_JSON, &client) != 0)
        return;
    json_t *body = ktd_body_object(request, fields);
    if (body != NULL && read_deposit_form(request, &client, body, &form) == 0)
        store_deposit(request, &client, &form);
    free(form.box);
    json_decref(body); /* the wiping allocator clears the base64 secret */
}

/* ---- Get ------------------------------------------------------------------------------------ */

/* Opens a deposit's box into a new secret; NULL after answering. */
static kt_secret *open_box(ktd_request *request, const ktd_client *client, const json_t *deposit,
                           const char *uuid)
{
    unsigned char associated[ASSOCIATED_MAX];
    size_t associated_length = associated_data(associated, client, uuid);
    unsigned char *box = malloc(KT_DEPOSIT_BOX_MAX);
    size_t box_length = 0;
    kt_secret *secret = NULL;
    if (box == NULL) {
        ktd_respond_internal(request, "allocating a deposit box");
    } else if (kt_json_get_base64(deposit, "box", box, KT_DEPOSIT_BOX_MAX, &box_length) != 0) {
        ktd_respond_internal(request, "decoding a deposit box from keytrustee-db");
    } else if (kt_aead_open(&secret, box, box_length, associated, associated_length,
                            request->daemon->keys->data_key) != 0) {
        kt_log(KT_LOG_ERROR, "deposit %s of client %s does not open: it was altered, moved, or "
                             "sealed with another server key", uuid, client->fingerprint);
        ktd_respond_internal(request, "opening a deposit");
        secret = NULL;
    }
    free(box);
    return secret;
}

/* Base64 of the secret, in a new secret buffer; NULL when memory is short. */
static kt_secret *encode_secret(const kt_secret *secret)
{
    kt_secret *text = kt_secret_new(kt_base64_encoded_size(secret->length));
    if (text != NULL &&
        kt_base64_encode((char *)text->bytes, text->length, secret->bytes, secret->length) != 0) {
        kt_secret_free(text);
        text = NULL;
    }
    return text;
}

static void respond_with_secret(ktd_request *request, const json_t *deposit,
                                const kt_secret *secret)
{
    kt_secret *text = encode_secret(secret);
    json_t *body = text == NULL ? NULL
                                : json_pack("{s:O, s:O, s:O, s:O, s:O, s:s}", "uuid",
                                            json_object_get(deposit, "uuid"), "handle",
                                            json_object_get(deposit, "handle"), "description",
                                            json_object_get(deposit, "description"), "created",
                                            json_object_get(deposit, "created"), "state",
                                            json_object_get(deposit, "state"), "secret",
                                            (const char *)text->bytes);
    if (body == NULL)
        ktd_respond_internal(request, "building the deposit answer");
    else
        ktd_respond_json(request, 200, body);
    json_decref(body); /* the wiping allocator clears the secret's copy */
    kt_secret_free(text);
}

/* Answers a deposit record read with client.deposit. */
static void respond_deposit(ktd_request *request, const ktd_client *client, const json_t *deposit)
{
    const char *uuid = json_string_value(json_object_get(deposit, "uuid"));
    const char *state = json_string_value(json_object_get(deposit, "state"));
    if (uuid == NULL || !kt_uuid_valid(uuid) || state == NULL) {
        ktd_respond_internal(request, "reading deposit.get's deposit");
        return;
    }
    if (strcmp(state, "active") != 0) {
        ktd_respond_error(request, 403, "forbidden", NULL,
                          "the deposit %s is disabled; enable it to read it", uuid);
        return;
    }
    kt_secret *secret = open_box(request, client, deposit, uuid);
    if (secret == NULL)
        return;
    respond_with_secret(request, deposit, secret);
    kt_secret_free(secret);
}

/* Refuses any query parameter on the uuid endpoints. */
static int refuse_query(ktd_request *request)
{
    char error[160];
    if (ktd_query_parse(request->query, NULL, 0, NULL, error, sizeof error) == 0)
        return 0;
    ktd_respond_error(request, 400, "bad_request", NULL, "%s", error);
    return -1;
}

/* Authenticates a uuid endpoint's request; answers 404 for a path segment that is not a uuid. */
static int begin_uuid_request(ktd_request *request, const char *uuid, ktd_client *client)
{
    if (ktd_authenticate(request, KTD_BODY_NONE, client) != 0 || refuse_query(request) != 0)
        return -1;
    if (uuid == NULL || !kt_uuid_valid(uuid)) {
        ktd_respond_error(request, 404, "not_found", NULL,
                          "no deposit with uuid \"%s\" for this client", uuid != NULL ? uuid : "");
        return -1;
    }
    return 0;
}

/* Answers client.deposit's deposit: 404 when there is none for this client. */
static void answer_deposit(ktd_request *request, const ktd_client *client, const json_t *response,
                           const char *key, const char *value)
{
    const json_t *deposit = json_object_get(response, "deposit");
    if (json_is_null(deposit))
        ktd_respond_error(request, 404, "not_found", NULL,
                          "no deposit with %s \"%s\" for this client", key, value);
    else
        respond_deposit(request, client, deposit);
}

/* A deposit read by uuid or handle (a valid one) in one keytrustee-db call, client.deposit: the
 * client's key and state, and the deposit, which is answered only once the request is
 * authenticated and has no query beyond the one `check_query` allows. */
static void read_deposit(ktd_request *request, const char *key, const char *value,
                         bool check_query)
{
    ktd_client client;
    json_t *response = NULL;
    json_t *db_request = ktd_db_request(request, "client.deposit");
    if (db_request == NULL)
        return;
    if (set_text(request, db_request, key, value) == 0 &&
        ktd_authenticate_call(request, KTD_BODY_NONE, db_request, &client, &response) == 0 &&
        (!check_query || refuse_query(request) == 0))
        answer_deposit(request, &client, response, key, value);
    json_decref(db_request);
    json_decref(response); /* holds the box only */
}

void ktd_handle_deposit_get(ktd_request *request, const char *argument)
{
    ktd_client client;
    if (argument != NULL && kt_uuid_valid(argument))
        read_deposit(request, "uuid", argument, true);
    else if (begin_uuid_request(request, argument, &client) == 0) /* answers 401 or 404 */
        ktd_respond_internal(request, "an invalid deposit uuid taken for a valid one");
}

/* ---- List, search, and get by handle -------------------------------------------------------- */

static json_t *listed_deposit(const json_t *deposit)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O}", "uuid", json_object_get(deposit, "uuid"),
                     "handle", json_object_get(deposit, "handle"), "description",
                     json_object_get(deposit, "description"), "created",
                     json_object_get(deposit, "created"), "state",
                     json_object_get(deposit, "state"));
}

static void respond_list(ktd_request *request, const json_t *deposits)
{
    json_t *list = json_array();
    size_t index;
    const json_t *deposit;
    if (!json_is_array(deposits) || list == NULL) {
        json_decref(list);
        ktd_respond_internal(request, "reading deposit.list's deposits");
        return;
    }
    json_array_foreach(deposits, index, deposit) {
        if (json_array_append_new(list, listed_deposit(deposit)) != 0) {
            json_decref(list);
            ktd_respond_internal(request, "building the deposit list");
            return;
        }
    }
    json_t *body = json_pack("{s:o}", "deposits", list);
    if (body == NULL)
        ktd_respond_internal(request, "building the deposit list");
    else
        ktd_respond_json(request, 200, body);
    json_decref(body);
}

static void list_deposits(ktd_request *request, const ktd_client *client, const char *search)
{
    json_t *db_request = client_request(request, "deposit.list", client);
    if (db_request == NULL)
        return;
    json_t *response = NULL;
    if ((search == NULL || set_text(request, db_request, "search", search) == 0) &&
        (response = call_or_respond(request, db_request, KTD_DB_READ, "no such client")) != NULL)
        respond_list(request, json_object_get(response, "deposits"));
    json_decref(db_request);
    json_decref(response);
}

void ktd_handle_deposit_find(ktd_request *request, const char *argument)
{
    (void)argument;
    static const char *const keys[] = {"handle", "search"};
    char *values[2];
    char error[160];
    ktd_client client;
    if (ktd_query_parse(request->query, keys, 2, values, error, sizeof error) == 0) {
        bool by_handle = values[0] != NULL && values[1] == NULL && valid_handle(values[0]) &&
                         utf8_text(values[0]);
        if (by_handle) /* the common read: one keytrustee-db call */
            read_deposit(request, "handle", values[0], false);
        ktd_query_free(values, 2);
        if (by_handle)
            return;
    }
    if (ktd_authenticate(request, KTD_BODY_NONE, &client) != 0)
        return;
    if (ktd_query_parse(request->query, keys, 2, values, error, sizeof error) != 0) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", error);
        return;
    }
    const char *handle = values[0], *search = values[1];
    if (handle != NULL && search != NULL)
        ktd_respond_error(request, 400, "bad_request", NULL, "give handle or search, not both");
    else if (handle != NULL && !valid_handle(handle))
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "a handle is 1 to %u bytes without control characters", KT_HANDLE_MAX);
    else if (search != NULL && strlen(search) > KT_DESCRIPTION_MAX)
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "search is at most %u bytes", KT_DESCRIPTION_MAX);
    else if (handle != NULL && !utf8_text(handle))
        ktd_respond_error(request, 400, "bad_request", NULL, "handle must be UTF-8 text");
    else if (handle != NULL) /* a valid handle alone was read above */
        ktd_respond_internal(request, "a handle read that client.deposit did not take");
    else
        list_deposits(request, &client, search);
    ktd_query_free(values, 2);
}

/* ---- State changes and purge ---------------------------------------------------------------- */

static void set_state(ktd_request *request, const char *uuid, kt_state state)
{
    ktd_client client;
    if (begin_uuid_request(request, uuid, &client) != 0)
        return;
    char not_found[KT_UUID_CHARS + 64];
    snprintf(not_found, sizeof not_found, "no deposit with uuid \"%s\" for this client", uuid);
    json_t *db_request = client_request(request, "deposit.set_state", &client);
    if (db_request == NULL)
        return;
    json_t *response = NULL;
    if (json_object_update_new(db_request, json_pack("{s:s, s:s}", "uuid", uuid, "state",
                                                     kt_state_name(state))) != 0)
        ktd_respond_internal(request, "building deposit.set_state");
    else if ((response = call_or_respond(request, db_request, KTD_DB_WRITE, not_found)) != NULL) {
        json_t *body = json_pack("{s:s, s:s}", "uuid", uuid, "state", kt_state_name(state));
        if (body == NULL)
            ktd_respond_internal(request, "building the state answer");
        else
            ktd_respond_json(request, 200, body);
        json_decref(body);
    }
    json_decref(db_request);
    json_decref(response);
}

void ktd_handle_deposit_disable(ktd_request *request, const char *argument)
{
    set_state(request, argument, KT_STATE_DISABLED);
}

void ktd_handle_deposit_enable(ktd_request *request, const char *argument)
{
    set_state(request, argument, KT_STATE_ACTIVE);
}

void ktd_handle_deposit_purge(ktd_request *request, const char *argument)
{
    ktd_client client;
    if (begin_uuid_request(request, argument, &client) != 0)
        return;
    char not_found[KT_UUID_CHARS + 64];
    snprintf(not_found, sizeof not_found, "no deposit with uuid \"%s\" for this client", argument);
    json_t *db_request = client_request(request, "deposit.purge", &client);
    if (db_request == NULL)
        return;
    json_t *response = NULL;
    if (json_object_set_new(db_request, "uuid", json_string(argument)) != 0)
        ktd_respond_internal(request, "building deposit.purge");
    else if ((response = call_or_respond(request, db_request, KTD_DB_WRITE, not_found)) != NULL) {
        json_t *body = json_pack("{s:s}", "purged", argument);
        if (body == NULL)
            ktd_respond_internal(request, "building the purge answer");
        else
            ktd_respond_json(request, 200, body);
        json_decref(body);
    }
    json_decref(db_request);
    json_decref(response);
}
