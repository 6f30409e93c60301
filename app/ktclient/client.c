/*
 * client.c — a registered client: loading its confdir, and the deposit operations (put, get by
 * uuid or handle, list, delete) as JSON calls of docs/api.md.
 *
 * Opening checks everything it can before any network traffic: client.conf parses, client.key is
 * private and well formed, the key matches the fingerprint in client.conf, the server URLs parse.
 * Arguments are checked against the server's limits (handle 1-255 bytes without control
 * characters, deposit 1 byte to 64 KiB, description at most 1024 bytes) so a bad argument is a
 * usage error here, not a 400 there.
 *
 * Every read also feeds the failover hint (client.state, state.c), so that later calls skip a
 * server that just failed; the hint is loaded at open and only orders the configured servers.
 *
 * Deposit content is handled only in kt_secret buffers and jansson memory, which
 * kt_client_library_init makes wipe on free; the base64 text of a fetched secret is also wiped
 * explicitly as soon as it is decoded.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "app/ktclient/internal.h"

struct kt_client {
    kt_client_config config;
    char ca_path[PATH_MAX];
    char state_path[PATH_MAX]; /* client.state: the failover hint */
    kt_client_hint hint;
    kt_secret *secret_key;
    kt_client_endpoint endpoint;
};

/* ---- Opening ----------------------------------------------------------------------------------- */

static int join_path(char *out, size_t out_size, const char *directory, const char *name,
                     char *error, size_t error_size)
{
    int written = snprintf(out, out_size, "%s/%s", directory, name);
    if (written < 0 || (size_t)written >= out_size) {
        kt_client_error(error, error_size, "the path %s/%s is too long", directory, name);
        return -1;
    }
    return 0;
}

static int check_key_matches(const kt_client *client, const char *key_path, char *error,
                             size_t error_size)
{
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_sign_public_from_secret(public_key, client->secret_key);
    kt_fingerprint(fingerprint, public_key);
    if (strcmp(fingerprint, client->config.fingerprint) != 0) {
        kt_client_error(error, error_size, "%s belongs to client %s, but client.conf names %s; "
                        "restore the matching files or register again", key_path, fingerprint,
                        client->config.fingerprint);
        return -1;
    }
    return 0;
}

/* Fills the endpoint: servers, TLS options and credentials. */
static int set_endpoint(kt_client *client, const char *confdir, char *error, size_t error_size)
{
    kt_client_endpoint *endpoint = &client->endpoint;
    const kt_client_config *config = &client->config;
    if (kt_url_parse(config->server, &endpoint->servers[0], error, error_size) != 0)
        return -1;
    endpoint->server_count = 1;
    if (config->passive_server[0] != '\0') {
        if (kt_url_parse(config->passive_server, &endpoint->servers[1], error, error_size) != 0)
            return -1;
        if (!kt_url_same(&endpoint->servers[0], &endpoint->servers[1]))
            endpoint->server_count = 2;
    }
    if (!config->skip_ssl_check) {
        if (config->ca_file[0] == '/')
            (void)snprintf(client->ca_path, sizeof client->ca_path, "%s", config->ca_file);
        else if (join_path(client->ca_path, sizeof client->ca_path, confdir, config->ca_file,
                           error, error_size) != 0)
            return -1;
        endpoint->tls.ca_file = client->ca_path;
    }
    endpoint->tls.skip_verify = config->skip_ssl_check;
    kt_client_endpoint_timeouts(endpoint, config->connect_timeout_ms);
    endpoint->fingerprint = config->fingerprint;
    endpoint->secret_key = client->secret_key;
    if (join_path(client->state_path, sizeof client->state_path, confdir, KT_CLIENT_STATE_FILE,
                  error, error_size) != 0)
        return -1;
    kt_client_hint_load(client->state_path, &client->hint);
    endpoint->first_read = kt_client_hint_first(&client->hint, endpoint->servers,
                                                endpoint->server_count, (int64_t)time(NULL));
    return 0;
}

kt_client *kt_client_open(const char *confdir, char *error, size_t error_size)
{
    char conf_path[PATH_MAX];
    char key_path[PATH_MAX];
    if (confdir == NULL || confdir[0] == '\0') {
        kt_client_error(error, error_size, "no configuration directory given");
        return NULL;
    }
    if (join_path(conf_path, sizeof conf_path, confdir, KT_CLIENT_CONF_FILE, error,
                  error_size) != 0 ||
        join_path(key_path, sizeof key_path, confdir, KT_CLIENT_KEY_FILE, error, error_size) != 0)
        return NULL;
    kt_client *client = calloc(1, sizeof *client);
    if (client == NULL) {
        kt_client_error(error, error_size, "out of memory");
        return NULL;
    }
    if (kt_client_config_load(conf_path, &client->config, error, error_size) != 0 ||
        kt_client_key_load(key_path, &client->secret_key, error, error_size) != 0 ||
        check_key_matches(client, key_path, error, error_size) != 0 ||
        set_endpoint(client, confdir, error, error_size) != 0) {
        kt_client_close(client);
        return NULL;
    }
    return client;
}

void kt_client_close(kt_client *client)
{
    if (client == NULL)
        return;
    kt_secret_free(client->secret_key);
    kt_wipe(client, sizeof *client);
    free(client);
}

const char *kt_client_fingerprint(const kt_client *client)
{
    return client->config.fingerprint;
}

bool kt_client_skips_ssl_check(const kt_client *client)
{
    return client->config.skip_ssl_check;
}

kt_client_status kt_client_set_connect_timeout(kt_client *client, long milliseconds, char *error,
                                               size_t error_size)
{
    if (milliseconds < 1 || milliseconds > KT_CLIENT_MAX_CONNECT_TIMEOUT_MS)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the connect timeout must be 1 to %d milliseconds",
                              KT_CLIENT_MAX_CONNECT_TIMEOUT_MS);
    kt_client_endpoint_timeouts(&client->endpoint, milliseconds);
    return KT_CLIENT_OK;
}

/* ---- JSON helpers ------------------------------------------------------------------------------ */

/* Parses a successful answer's body as a JSON object; NULL (with the message) when it is not. */
static json_t *answer_object(const kt_client_call *call, char *error, size_t error_size)
{
    json_error_t json_error;
    const kt_secret *body = call->response.body;
    json_t *object = json_loadb((const char *)body->bytes, body->length, JSON_REJECT_DUPLICATES,
                                &json_error);
    kt_wipe(&json_error, sizeof json_error); /* its text may quote the body */
    if (!json_is_object(object)) {
        json_decref(object);
        kt_client_error(error, error_size, "the key server's answer to %s %s is not the JSON "
                        "object the API describes; check that client and server versions match",
                        call->method, call->target);
        return NULL;
    }
    return object;
}

static kt_client_status perform_and_parse(kt_client *client, kt_client_call *call,
                                          json_t **answer, char *error, size_t error_size)
{
    *answer = NULL;
    kt_client_status status = kt_client_perform(&client->endpoint, call, error, error_size);
    int64_t now = (int64_t)time(NULL);
    kt_client_hint_learn(client->state_path, &client->hint, &client->endpoint, call, now);
    client->endpoint.first_read = kt_client_hint_first(&client->hint, client->endpoint.servers,
                                                       client->endpoint.server_count, now);
    if (status != KT_CLIENT_OK)
        return status;
    *answer = answer_object(call, error, error_size);
    kt_http_response_clear(&call->response);
    return *answer != NULL ? KT_CLIENT_OK : KT_CLIENT_ERROR;
}

bool kt_client_handle_valid(const char *handle)
{
    return kt_client_text_valid(handle, KT_CLIENT_MAX_HANDLE);
}

/* ---- Put --------------------------------------------------------------------------------------- */

static kt_client_status check_put_arguments(const char *handle, size_t length,
                                            const char *description, char *error,
                                            size_t error_size)
{
    if (!kt_client_handle_valid(handle))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "a handle must be 1 to %u bytes without control characters",
                              KT_CLIENT_MAX_HANDLE);
    if (length == 0 || length > KT_CLIENT_MAX_SECRET)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "a deposit must hold 1 byte to 64 KiB; this one has %zu bytes",
                              length);
    if (description != NULL && description[0] != '\0' &&
        !kt_client_text_valid(description, KT_CLIENT_MAX_DESCRIPTION))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "a description must be at most %u bytes without control "
                              "characters", KT_CLIENT_MAX_DESCRIPTION);
    return KT_CLIENT_OK;
}

/* The JSON body of a put, in a secret buffer. */
static kt_secret *put_body(const char *handle, const void *secret, size_t length,
                           const char *description)
{
    kt_secret *encoded = kt_secret_new(kt_base64_encoded_size(length));
    json_t *object = json_object();
    kt_secret *body = NULL;
    if (encoded != NULL && object != NULL &&
        kt_base64_encode((char *)encoded->bytes, encoded->length, secret, length) == 0 &&
        json_object_set_new(object, "handle", json_string(handle)) == 0 &&
        json_object_set_new(object, "secret", json_string((char *)encoded->bytes)) == 0 &&
        (description == NULL || description[0] == '\0' ||
         json_object_set_new(object, "description", json_string(description)) == 0))
        body = kt_client_json_dump(object);
    json_decref(object);
    kt_secret_free(encoded);
    return body;
}

kt_client_status kt_client_put(kt_client *client, const char *handle, const void *secret,
                               size_t length, const char *description,
                               char uuid[KT_UUID_CHARS + 1], char *error, size_t error_size)
{
    if (handle != NULL && strcmp(handle, KT_CLIENT_MASTER_HANDLE) == 0)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the handle " KT_CLIENT_MASTER_HANDLE " is reserved for the client's "
                              "master key (ktclient mount-key); choose another handle");
    return kt_client_put_on(&client->endpoint, handle, secret, length, description, uuid, error,
                            error_size);
}

kt_client_status kt_client_put_on(const kt_client_endpoint *endpoint, const char *handle,
                                  const void *secret, size_t length, const char *description,
                                  char uuid[KT_UUID_CHARS + 1], char *error, size_t error_size)
{
    kt_client_status status = check_put_arguments(handle, length, description, error, error_size);
    if (status != KT_CLIENT_OK)
        return status;
    kt_secret *body = put_body(handle, secret, length, description);
    if (body == NULL)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "out of memory preparing the deposit");
    kt_client_call call = {.method = "POST", .target = "/v1/deposits", .body = body->bytes,
                           .body_length = body->length, .write = true};
    status = kt_client_perform(endpoint, &call, error, error_size);
    kt_secret_free(body);
    if (status != KT_CLIENT_OK)
        return status;
    json_t *answer = answer_object(&call, error, error_size);
    kt_http_response_clear(&call.response);
    if (answer == NULL)
        return KT_CLIENT_ERROR;
    const char *created = json_string_value(json_object_get(answer, "uuid"));
    if (created == NULL || !kt_uuid_valid(created))
        status = kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                "the key server stored the deposit but answered without a valid "
                                "uuid; find it with ktclient list --search");
    else
        memcpy(uuid, created, KT_UUID_CHARS + 1);
    json_decref(answer);
    return status;
}

/* ---- Get --------------------------------------------------------------------------------------- */

/* Decodes the "secret" field of a fetched deposit and wipes its base64 text. */
static kt_client_status take_secret(json_t *answer, kt_secret **secret, char *error,
                                    size_t error_size)
{
    json_t *field = json_object_get(answer, "secret");
    const char *text = json_string_value(field);
    if (text == NULL)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "the key server's answer holds no deposit content");
    size_t text_length = json_string_length(field);
    kt_secret *decoded = kt_secret_new(text_length / 4 * 3 + 3);
    size_t length = 0;
    kt_client_status status = KT_CLIENT_OK;
    if (decoded == NULL ||
        kt_base64_decode(decoded->bytes, decoded->length, &length, text, text_length) != 0)
        status = kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                "the deposit content in the key server's answer is not base64");
    else if ((*secret = kt_secret_from(decoded->bytes, length)) == NULL)
        status = kt_client_fail(KT_CLIENT_ERROR, error, error_size, "out of memory");
    kt_wipe((char *)text, text_length); /* jansson's own copy; it is not read again */
    kt_secret_free(decoded);
    return status;
}

static kt_client_status get_target(kt_client *client, const char *target, kt_secret **secret,
                                   char *error, size_t error_size)
{
    kt_client_call call = {.method = "GET", .target = target};
    json_t *answer = NULL;
    kt_client_status status = perform_and_parse(client, &call, &answer, error, error_size);
    if (status == KT_CLIENT_OK)
        status = take_secret(answer, secret, error, error_size);
    json_decref(answer);
    return status;
}

kt_client_status kt_client_get_by_uuid(kt_client *client, const char *uuid, kt_secret **secret,
                                       char *error, size_t error_size)
{
    *secret = NULL;
    if (!kt_uuid_valid(uuid))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "not a deposit uuid (36 lowercase hex characters and dashes)");
    char target[64];
    (void)snprintf(target, sizeof target, "/v1/deposits/%s", uuid);
    return get_target(client, target, secret, error, error_size);
}

kt_client_status kt_client_get_by_handle(kt_client *client, const char *handle,
                                         kt_secret **secret, char *error, size_t error_size)
{
    *secret = NULL;
    if (!kt_client_handle_valid(handle))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "a handle must be 1 to %u bytes without control characters",
                              KT_CLIENT_MAX_HANDLE);
    char target[KT_HTTP_MAX_TARGET];
    int written = snprintf(target, sizeof target, "/v1/deposits?handle=");
    if (written < 0 ||
        kt_url_encode(target + written, sizeof target - (size_t)written, handle) != 0)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size, "the handle is too long");
    return get_target(client, target, secret, error, error_size);
}

/* ---- List -------------------------------------------------------------------------------------- */

/* Reads one listed deposit; -1 when a field is missing or of the wrong type. */
static int read_listed(const json_t *item, kt_client_deposit *deposit)
{
    json_t *description = json_object_get(item, "description");
    json_t *created = json_object_get(item, "created");
    deposit->uuid = json_string_value(json_object_get(item, "uuid"));
    deposit->handle = json_string_value(json_object_get(item, "handle"));
    deposit->state = json_string_value(json_object_get(item, "state"));
    deposit->description = json_is_string(description) ? json_string_value(description) : "";
    deposit->created = json_is_integer(created) ? (int64_t)json_integer_value(created) : 0;
    bool description_ok = description == NULL || json_is_null(description) ||
                          json_is_string(description);
    return (deposit->uuid != NULL && deposit->handle != NULL && deposit->state != NULL &&
            json_is_integer(created) && description_ok)
               ? 0
               : -1;
}

static kt_client_status walk_list(const json_t *answer, kt_client_list_callback callback,
                                  void *context, char *error, size_t error_size)
{
    const json_t *deposits = json_object_get(answer, "deposits");
    if (!json_is_array(deposits))
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "the key server's list has no \"deposits\" array");
    size_t index;
    const json_t *item;
    json_array_foreach(deposits, index, item) {
        kt_client_deposit deposit;
        if (!json_is_object(item) || read_listed(item, &deposit) != 0)
            return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                  "entry %zu of the key server's list is not a deposit", index);
        if (callback(&deposit, context) != 0)
            break;
    }
    return KT_CLIENT_OK;
}

kt_client_status kt_client_list(kt_client *client, const char *search,
                                kt_client_list_callback callback, void *context, char *error,
                                size_t error_size)
{
    char target[KT_HTTP_MAX_TARGET] = "/v1/deposits";
    if (search != NULL && search[0] != '\0') {
        if (!kt_client_text_valid(search, KT_CLIENT_MAX_DESCRIPTION))
            return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                                  "a search must be at most %u bytes without control characters",
                                  KT_CLIENT_MAX_DESCRIPTION);
        size_t used = strlen(target);
        (void)snprintf(target + used, sizeof target - used, "?search=");
        used = strlen(target);
        if (kt_url_encode(target + used, sizeof target - used, search) != 0)
            return kt_client_fail(KT_CLIENT_USAGE, error, error_size, "the search is too long");
    }
    kt_client_call call = {.method = "GET", .target = target};
    json_t *answer = NULL;
    kt_client_status status = perform_and_parse(client, &call, &answer, error, error_size);
    if (status == KT_CLIENT_OK)
        status = walk_list(answer, callback, context, error, error_size);
    json_decref(answer);
    return status;
}

/* ---- Delete ------------------------------------------------------------------------------------ */

/* Finds whether a listed deposit is the master key deposit with the uuid in context. */
typedef struct master_search {
    const char *uuid;
    bool is_master;
} master_search;

static int match_master(const kt_client_deposit *deposit, void *context)
{
    master_search *search = context;
    if (strcmp(deposit->uuid, search->uuid) == 0 &&
        strcmp(deposit->handle, KT_CLIENT_MASTER_HANDLE) == 0)
        search->is_master = true;
    return search->is_master ? 1 : 0;
}

kt_client_status kt_client_delete(kt_client *client, const char *uuid, char *error,
                                  size_t error_size)
{
    if (!kt_uuid_valid(uuid))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "not a deposit uuid (36 lowercase hex characters and dashes)");
    master_search search = {.uuid = uuid};
    kt_client_status found = kt_client_list(client, KT_CLIENT_MASTER_HANDLE, match_master,
                                            &search, error, error_size);
    if (found != KT_CLIENT_OK)
        return found;
    if (search.is_master)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "refusing to delete %s: it is this client's master key, and every "
                              "mount key (ktclient mount-key) derives from it", uuid);
    char target[64];
    (void)snprintf(target, sizeof target, "/v1/deposits/%s", uuid);
    kt_client_call call = {.method = "DELETE", .target = target, .write = true};
    json_t *answer = NULL;
    kt_client_status status = perform_and_parse(client, &call, &answer, error, error_size);
    json_decref(answer);
    return status;
}

const kt_client_endpoint *kt_client_endpoint_of(const kt_client *client)
{
    return &client->endpoint;
}
