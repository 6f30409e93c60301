/*
 * fuzz_api.c — keytrusteed's handling of one HTTP request: routing, body framing and strict JSON
 * decoding of every endpoint, query strings, the request-signature headers, and the answers
 * (every app/keytrusteed file except main.c, server.c and the TLS files, over fake_civetweb.c).
 *
 * Input: one flag byte, then a request written as text:
 *     METHOD SP TARGET LF  (Name: value LF)*  LF  body
 * Flag bits 0-1 sign the request with ktclient's signer (kt_request_sign): 0 unsigned, 1 as the
 * registered, active client A, 2 as client B (disabled), 3 as A with a timestamp 1000 s old.
 * The node's names are kt01.example.com:11371 (its external_address), 127.0.0.1:11371 (listen)
 * and the machine's host name. Without bit 7 the request carries the input's own Host header(s),
 * or else "Host: kt01.example.com:11371", and is signed for the first Host it carries; with bit 7
 * it is signed for kt01.example.com:11371 but carries only the input's Host headers, if any: a
 * Host rewritten (or removed) after signing.
 * Bits 2-4 make keytrustee-db answer an error (not_found, conflict, passive, write_unavailable,
 * indeterminate, disk_full, or a lost connection); bit 5 applies it to client.get as well, bit 6
 * only from the handler's second call on. A deposit read is one call, client.deposit (the client
 * and the deposit, null for the handle "missing"), faulted like a handler's call. Signing in the harness lets the fuzzer reach the
 * handlers' body decoding behind authentication instead of stopping at a signature it cannot make.
 *
 * keytrustee-db is replaced at the admin-socket call (kt_db_connect/kt_db_call): it knows orgs
 * "acme" (auth secret), "open" (none) and "off" (disabled), clients A and B, and answers deposits
 * with boxes sealed under the server data key, so the handlers open and return real secrets.
 *
 * FUZZ_SHOW=1 prints each request's answer, to see what a seed reaches.
 *
 * Properties checked on every answer: exactly one answer; an expected status; Content-Length equal
 * to the body sent; Cache-Control: no-store; JSON answers are objects and errors carry "error" and
 * "message"; no header value carries a line break (fake_civetweb.c); the org's auth secret never
 * appears in an answer, nor a deposit secret outside a 200 answer to a GET; every keytrustee-db
 * request encodes as an admin-socket message. And the cross-check of client and server: a request
 * signed by ktclient as client A, with no X-KT-* header of the fuzzer's own, is never refused as
 * unauthenticated (401) when keytrustee-db answers normally and Content-Length frames exactly the
 * body that was signed.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"
#include "app/ktclient/internal.h"
#include "tests/fuzz/fake_civetweb.h"
#include "tests/fuzz/fuzz.h"

#define ORG_UUID "0b6f3c55-2d1e-4f7a-8c9b-1a2b3c4d5e6f"
#define DEPOSIT_UUID "5f0c4f4e-8a6b-4c1e-9d2a-3b7e6f1a2c90"
#define ORG_SECRET "s3cret-of-acme-0123"
#define DEPOSIT_SECRET "hunter2-deposit-plaintext"
#define ORG_AUTH_CONTEXT "keytrustee-org-auth"
#define NODE_NAME "kt01.example.com"            /* external_address */
#define NODE_AUTHORITY NODE_NAME ":11371"       /* as ktclient sends it */

typedef struct fuzz_client {
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key;
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    const char *name;
    const char *state;
} fuzz_client;

static ktd_daemon daemon_state;
static fuzz_client clients[2]; /* A (active), B (disabled) */
static char deposit_secret_base64[64];

/* What keytrustee-db does for the current input. */
static struct {
    const char *code;      /* NULL: answer normally */
    bool lose_connection;
    bool include_client_get;
    bool from_second_call;
    unsigned calls;        /* handler calls so far (client.get not counted) */
} fault;

/* ---- set-up ---------------------------------------------------------------------------------- */

static void make_client(fuzz_client *client, unsigned char seed_byte, const char *name,
                        const char *state)
{
    unsigned char seed[crypto_sign_SEEDBYTES];
    memset(seed, seed_byte, sizeof seed);
    client->secret_key = kt_secret_new(KT_SIGN_SECRET_BYTES);
    if (client->secret_key == NULL ||
        crypto_sign_seed_keypair(client->public_key, client->secret_key->bytes, seed) != 0)
        abort();
    kt_fingerprint(client->fingerprint, client->public_key);
    client->name = name;
    client->state = state;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup("fuzz_api");
    char path[4096], error[512];
    snprintf(path, sizeof path, "%s/keytrustee-server.key", fuzz_directory());
    if (kt_server_keys_create(path, error, sizeof error) != 0 ||
        kt_server_keys_load(path, &daemon_state.keys, error, sizeof error) != 0) {
        fprintf(stderr, "fuzz_api: %s\n", error);
        abort();
    }
    snprintf(daemon_state.listen_address, sizeof daemon_state.listen_address, "127.0.0.1");
    daemon_state.port = 11371;
    if (ktd_names_load(&daemon_state, NODE_NAME, "", error, sizeof error) != 0) {
        fprintf(stderr, "fuzz_api: %s\n", error);
        abort();
    }
    ktd_json_use_wiping_allocator();
    /* Seeds 0x41 and 0x42: tests/fuzz/corpus/api was written with these keys. */
    make_client(&clients[0], 0x41, "host-a", "active");
    make_client(&clients[1], 0x42, "host-b", "disabled");
    if (kt_base64_encode(deposit_secret_base64, sizeof deposit_secret_base64, DEPOSIT_SECRET,
                         strlen(DEPOSIT_SECRET)) != 0)
        abort();
    return 0;
}

/* ---- keytrustee-db, faked at the admin-socket call ------------------------------------------- */

static int fake_connection_token;

kt_db_connection *kt_db_connect(const kt_paths *paths, char *error, size_t error_size)
{
    (void)paths;
    (void)error;
    (void)error_size;
    return (kt_db_connection *)&fake_connection_token;
}

void kt_db_disconnect(kt_db_connection *connection)
{
    (void)connection;
}

/* base64 of an AEAD box of `plain` under the data key with `associated`. */
static json_t *sealed(const char *plain, const void *associated, size_t associated_length)
{
    size_t plain_length = strlen(plain);
    unsigned char box[256];
    size_t box_length = 0;
    char text[512];
    if (kt_aead_seal(box, sizeof box, &box_length, plain, plain_length, associated,
                     associated_length, daemon_state.keys->data_key) != 0 ||
        kt_base64_encode(text, sizeof text, box, box_length) != 0)
        abort();
    return json_string(text);
}

static const fuzz_client *client_named(const char *fingerprint)
{
    for (size_t index = 0; fingerprint != NULL && index < 2; index++)
        if (strcmp(clients[index].fingerprint, fingerprint) == 0)
            return &clients[index];
    return NULL;
}

static json_t *client_object(const fuzz_client *client)
{
    char key[64];
    if (kt_base64_encode(key, sizeof key, client->public_key, sizeof client->public_key) != 0)
        abort();
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "fingerprint",
                     client->fingerprint, "org", "acme", "org_uuid", ORG_UUID, "name",
                     client->name, "public_key", key, "created", (json_int_t)1700000000,
                     "state", client->state, "org_state", "active");
}

static json_t *org_object(const char *name)
{
    json_t *box;
    if (strcmp(name, "acme") == 0) {
        unsigned char associated[sizeof ORG_AUTH_CONTEXT + 4];
        memcpy(associated, ORG_AUTH_CONTEXT, sizeof ORG_AUTH_CONTEXT);
        memcpy(associated + sizeof ORG_AUTH_CONTEXT, "acme", 4);
        box = sealed(ORG_SECRET, associated, sizeof associated);
    } else if (strcmp(name, "open") == 0 || strcmp(name, "off") == 0) {
        box = json_string("");
    } else {
        return NULL;
    }
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:o}", "uuid", ORG_UUID, "name", name,
                     "contacts", "ops@example.com", "created", (json_int_t)1700000000, "expires",
                     (json_int_t)0, "state", strcmp(name, "off") == 0 ? "disabled" : "active",
                     "auth_box", box);
}

static json_t *deposit_object(const json_t *request)
{
    const char *client = json_string_value(json_object_get(request, "client"));
    const char *uuid = json_string_value(json_object_get(request, "uuid"));
    const char *handle = json_string_value(json_object_get(request, "handle"));
    if (client == NULL || strlen(client) != KT_FINGERPRINT_CHARS)
        return NULL;
    if (uuid == NULL || strlen(uuid) != KT_UUID_CHARS)
        uuid = DEPOSIT_UUID;
    if (handle == NULL)
        handle = "db-password";
    unsigned char associated[KT_UUID_CHARS + 1 + KT_FINGERPRINT_CHARS + 1 + KT_UUID_CHARS];
    memcpy(associated, ORG_UUID, KT_UUID_CHARS);
    associated[KT_UUID_CHARS] = 0;
    memcpy(associated + KT_UUID_CHARS + 1, client, KT_FINGERPRINT_CHARS);
    associated[KT_UUID_CHARS + 1 + KT_FINGERPRINT_CHARS] = 0;
    memcpy(associated + KT_UUID_CHARS + 2 + KT_FINGERPRINT_CHARS, uuid, KT_UUID_CHARS);
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:o}", "uuid", uuid, "client", client,
                     "handle", handle, "description", "the database password", "created",
                     (json_int_t)1700000000, "state",
                     strcmp(handle, "off") == 0 ? "disabled" : "active", "box",
                     sealed(DEPOSIT_SECRET, associated, sizeof associated));
}

static json_t *refusal(const char *code)
{
    json_t *response = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", code, "message",
                                 "refused by the fuzz harness");
    if (response != NULL && strcmp(code, "passive") == 0)
        json_object_set_new(response, "active_url", json_string("https://active.example:11371"));
    return response;
}

/* The normal answer of keytrustee-db to `op`. */
static json_t *answer(const char *op, const json_t *request)
{
    if (strcmp(op, "status") == 0)
        return json_pack("{s:b, s:s, s:b}", "ok", 1, "role", "standalone", "writable", 1);
    if (strcmp(op, "client.get") == 0) {
        const fuzz_client *client =
            client_named(json_string_value(json_object_get(request, "fingerprint")));
        return client != NULL ? json_pack("{s:b, s:o}", "ok", 1, "client", client_object(client))
                              : refusal("not_found");
    }
    if (strcmp(op, "org.get") == 0) {
        const char *name = json_string_value(json_object_get(request, "name"));
        json_t *org = name != NULL ? org_object(name) : NULL;
        return org != NULL ? json_pack("{s:b, s:o}", "ok", 1, "org", org) : refusal("not_found");
    }
    if (strcmp(op, "client.add") == 0)
        return json_pack("{s:b, s:o}", "ok", 1, "client", client_object(&clients[0]));
    if (strcmp(op, "deposit.put") == 0)
        return json_pack("{s:b, s:{s:I}}", "ok", 1, "deposit", "created",
                         (json_int_t)1700000000);
    if (strcmp(op, "deposit.get") == 0) {
        json_t *deposit = deposit_object(request);
        return deposit != NULL ? json_pack("{s:b, s:o}", "ok", 1, "deposit", deposit)
                               : refusal("bad_request");
    }
    if (strcmp(op, "client.deposit") == 0) { /* a deposit read: client.get + deposit.get */
        const char *fingerprint = json_string_value(json_object_get(request, "fingerprint"));
        const fuzz_client *client = client_named(fingerprint);
        if (client == NULL)
            return refusal("not_found");
        const char *handle = json_string_value(json_object_get(request, "handle"));
        json_t *deposit = NULL;
        if (handle == NULL || strcmp(handle, "missing") != 0) { /* "missing": no such deposit */
            json_t *key = json_deep_copy(request);
            if (key == NULL || json_object_set_new(key, "client", json_string(fingerprint)) != 0)
                abort();
            deposit = deposit_object(key);
            json_decref(key);
            if (deposit == NULL)
                return refusal("bad_request");
        }
        return json_pack("{s:b, s:o, s:o}", "ok", 1, "client", client_object(client), "deposit",
                         deposit != NULL ? deposit : json_null());
    }
    if (strcmp(op, "deposit.list") == 0) {
        json_t *deposit = deposit_object(request);
        if (deposit == NULL)
            return refusal("bad_request");
        json_object_del(deposit, "box");
        return json_pack("{s:b, s:[o]}", "ok", 1, "deposits", deposit);
    }
    if (strcmp(op, "deposit.set_state") == 0 || strcmp(op, "deposit.purge") == 0)
        return json_pack("{s:b}", "ok", 1);
    return refusal("bad_request");
}

int kt_db_call(kt_db_connection *connection, const json_t *request, int timeout_ms,
               json_t **response, char *error, size_t error_size)
{
    (void)connection;
    (void)timeout_ms;
    size_t size = json_dumpb(request, NULL, 0, JSON_COMPACT);
    FUZZ_CHECK(json_is_object(request) && size > 0 && size <= KT_WIRE_MAX,
               "keytrusteed built an admin request that cannot be sent (%zu bytes)", size);
    const char *op = json_string_value(json_object_get(request, "op"));
    FUZZ_CHECK(op != NULL, "an admin request without an op");
    bool is_client_get = strcmp(op, "client.get") == 0;
    bool faulted = fault.code != NULL || fault.lose_connection;
    if (is_client_get) {
        faulted = faulted && fault.include_client_get;
    } else {
        fault.calls++;
        faulted = faulted && (!fault.from_second_call || fault.calls >= 2);
    }
    if (faulted && fault.lose_connection) {
        snprintf(error, error_size, "the connection was closed");
        return -1;
    }
    *response = faulted ? refusal(fault.code) : answer(op, request);
    if (*response == NULL)
        abort();
    return 0;
}

/* ---- the request ----------------------------------------------------------------------------- */

typedef struct parsed_request {
    const uint8_t *input; /* the request as the fuzzer wrote it */
    size_t input_size;
    char *text;        /* the input copied, NUL-terminated pieces point into it */
    char *method;
    char *target;      /* path and query, as signed */
    char *path;
    char *query;       /* NULL without '?' */
    const unsigned char *body;
    size_t body_length;
    char *names[FAKE_HEADERS_MAX];
    char *values[FAKE_HEADERS_MAX];
    size_t header_count;
    bool own_signature_headers;
    const char *own_host;       /* the input's first Host header; NULL when it has none */
    size_t length_headers;      /* Content-Length headers */
    bool length_is_body;        /* the one Content-Length names exactly the body sent */
} parsed_request;

static char *trim_blanks(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t length = strlen(text);
    while (length > 0 && (text[length - 1] == ' ' || text[length - 1] == '\t' ||
                          text[length - 1] == '\r'))
        text[--length] = '\0';
    return text;
}

/* Splits the input the way CivetWeb would hand it over. Returns false when there is no
 * request line. */
static bool parse_request(const uint8_t *data, size_t size, parsed_request *request)
{
    memset(request, 0, sizeof *request);
    request->input = data;
    request->input_size = size;
    request->text = malloc(size + 1);
    if (request->text == NULL)
        abort();
    memcpy(request->text, data, size);
    request->text[size] = '\0';
    char *line_end = memchr(request->text, '\n', size);
    if (line_end == NULL)
        return false;
    *line_end = '\0';
    char *space = strchr(request->text, ' ');
    if (space == NULL)
        return false;
    *space = '\0';
    request->method = request->text;
    request->target = trim_blanks(space + 1);
    char *cursor = line_end + 1;
    char *end = request->text + size;
    while (cursor < end) {
        char *next = memchr(cursor, '\n', (size_t)(end - cursor));
        if (next == NULL)
            next = end;
        *next = '\0';
        if (cursor[0] == '\0' || strcmp(cursor, "\r") == 0) {
            cursor = next + 1;
            break;
        }
        char *colon = strchr(cursor, ':');
        if (colon != NULL && request->header_count < FAKE_HEADERS_MAX - 5) {
            *colon = '\0';
            request->names[request->header_count] = trim_blanks(cursor);
            request->values[request->header_count] = trim_blanks(colon + 1);
            if (strncasecmp(request->names[request->header_count], "X-KT-", 5) == 0)
                request->own_signature_headers = true;
            if (strcasecmp(request->names[request->header_count], "Content-Length") == 0)
                request->length_headers++;
            if (strcasecmp(request->names[request->header_count], "Host") == 0 &&
                request->own_host == NULL)
                request->own_host = request->values[request->header_count];
            request->header_count++;
        }
        cursor = next + 1;
    }
    if (cursor < end) {
        request->body = data + (size_t)(cursor - request->text);
        request->body_length = (size_t)(end - cursor);
    }
    for (size_t index = 0; index < request->header_count; index++) {
        const char *value = request->values[index];
        if (strcasecmp(request->names[index], "Content-Length") == 0 && value[0] != '\0' &&
            strspn(value, "0123456789") == strlen(value) && strlen(value) < 10)
            request->length_is_body = strtoull(value, NULL, 10) == request->body_length;
    }
    /* The target as signed stays whole; CivetWeb gives the handlers path and query apart. */
    request->path = strdup(request->target);
    if (request->path == NULL)
        abort();
    char *question = strchr(request->path, '?');
    if (question != NULL) {
        *question = '\0';
        request->query = question + 1;
    }
    return true;
}

/* The four X-KT-* headers of a request signed by `client`; false when ktclient refuses to sign
 * (a target longer than it ever sends). */
static bool sign_request(const parsed_request *request, const fuzz_client *client,
                         const char *authority, int64_t timestamp,
                         kt_request_signature *signature)
{
    static uint64_t counter;
    unsigned char nonce[KT_NONCE_BYTES] = {0};
    counter++;
    memcpy(nonce, &counter, sizeof counter);
    return kt_request_sign(signature, client->fingerprint, client->secret_key, request->method,
                           authority, request->target, request->body, request->body_length,
                           timestamp, nonce) == 0;
}

/* ---- the answer ------------------------------------------------------------------------------ */

static bool status_expected(int status)
{
    static const int statuses[] = {200, 201, 400, 401, 403, 404, 405, 409,
                                   411, 413, 415, 500, 503, 507};
    for (size_t index = 0; index < sizeof statuses / sizeof statuses[0]; index++)
        if (statuses[index] == status)
            return true;
    return false;
}

static void check_answer(const struct mg_connection *connection, int returned,
                         const parsed_request *request)
{
    FUZZ_CHECK(connection->starts == 1, "%d answers to one request", connection->starts);
    FUZZ_CHECK(returned == connection->status, "ktd_route returned %d for a %d answer", returned,
               connection->status);
    FUZZ_CHECK(status_expected(connection->status), "unexpected status %d", connection->status);
    const char *length = fake_answer_header(connection, "Content-Length");
    FUZZ_CHECK(length != NULL && strtoull(length, NULL, 10) == connection->written_length,
               "Content-Length %s for %zu bytes", length != NULL ? length : "(none)",
               connection->written_length);
    const char *cache = fake_answer_header(connection, "Cache-Control");
    FUZZ_CHECK(cache != NULL && strcmp(cache, "no-store") == 0, "no Cache-Control: no-store");
    const char *type = fake_answer_header(connection, "Content-Type");
    FUZZ_CHECK(type != NULL, "no Content-Type");
    const char *body = connection->written != NULL ? (const char *)connection->written : "";
    if (strcmp(type, "application/json") == 0) {
        json_error_t error;
        json_t *parsed = json_loadb(body, connection->written_length, 0, &error);
        FUZZ_CHECK(json_is_object(parsed), "a JSON answer that is not an object: %s", error.text);
        if (connection->status >= 400)
            FUZZ_CHECK(json_is_string(json_object_get(parsed, "error")) &&
                           json_is_string(json_object_get(parsed, "message")),
                       "an error answer without error and message");
        json_decref(parsed);
    } else {
        FUZZ_CHECK(strncmp(type, "text/plain", 10) == 0 && connection->status == 200,
                   "a %s answer with status %d", type, connection->status);
    }
    /* The answer may quote the request (an unknown path, a handle): only a secret the request
     * itself carried may come back. */
    FUZZ_CHECK(strstr(body, ORG_SECRET) == NULL ||
                   memmem(request->input, request->input_size, ORG_SECRET,
                          strlen(ORG_SECRET)) != NULL,
               "the org's auth secret is in an answer");
    FUZZ_CHECK(strstr(body, deposit_secret_base64) == NULL ||
                   (connection->status == 200 && strcmp(request->method, "GET") == 0) ||
                   memmem(request->input, request->input_size, deposit_secret_base64,
                          strlen(deposit_secret_base64)) != NULL,
               "a deposit secret in a %d answer to %s", connection->status, request->method);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const codes[] = {NULL, "not_found", "conflict", "passive",
                                        "write_unavailable", "indeterminate", "disk_full", NULL};
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    unsigned sign_mode = flags & 3u;
    unsigned fault_mode = (flags >> 2) & 7u;
    memset(&fault, 0, sizeof fault);
    fault.code = codes[fault_mode];
    fault.lose_connection = fault_mode == 7;
    fault.include_client_get = (flags & 0x20) != 0;
    fault.from_second_call = (flags & 0x40) != 0;

    parsed_request request;
    if (!parse_request(data + 1, size - 1, &request)) {
        free(request.text);
        free(request.path);
        return 0;
    }
    struct mg_connection connection;
    fake_request_init(&connection, &daemon_state, request.method, request.path, request.query,
                      request.body, request.body_length);
    bool host_rewritten = (flags & 0x80) != 0;
    if (!host_rewritten && request.own_host == NULL)
        fake_request_header(&connection, "Host", NODE_AUTHORITY);
    const char *signed_host =
        host_rewritten || request.own_host == NULL ? NODE_AUTHORITY : request.own_host;
    kt_request_signature signature;
    bool signed_ok = false;
    if (sign_mode != 0) {
        const fuzz_client *client = &clients[sign_mode == 2 ? 1 : 0];
        int64_t now = (int64_t)time(NULL);
        signed_ok = sign_request(&request, client, signed_host, sign_mode == 3 ? now - 1000 : now,
                                 &signature);
        if (signed_ok) {
            fake_request_header(&connection, "X-KT-Client", signature.client);
            fake_request_header(&connection, "X-KT-Timestamp", signature.timestamp);
            fake_request_header(&connection, "X-KT-Nonce", signature.nonce);
            fake_request_header(&connection, "X-KT-Signature", signature.signature);
        }
    }
    for (size_t index = 0; index < request.header_count; index++)
        fake_request_header(&connection, request.names[index], request.values[index]);

    int status = ktd_route(&connection);
    if (getenv("FUZZ_SHOW") != NULL) /* for checking what a seed reaches */
        fprintf(stderr, "%s %s -> %d %s\n", request.method, request.target, connection.status,
                connection.written != NULL ? (const char *)connection.written : "");
    check_answer(&connection, status, &request);
    /* The client signs the body it sends; the server hashes the Content-Length bytes it reads. */
    bool body_framed = request.length_headers == 0 ? request.body_length == 0
                                                   : request.length_headers == 1 &&
                                                         request.length_is_body;
    if (sign_mode == 1 && signed_ok && body_framed && !request.own_signature_headers &&
        !host_rewritten && request.own_host == NULL && fault_mode == 0 &&
        strcmp(request.path, "/v1/register") != 0)
        FUZZ_CHECK(connection.status != 401, "a request signed by ktclient was refused: %s",
                   connection.written != NULL ? (const char *)connection.written : "");

    fake_request_clear(&connection);
    ktd_nonce_cache_free();
    ktd_rate_reset(); /* each input starts with no failed authentications counted */
    free(request.text);
    free(request.path);
    return 0;
}
