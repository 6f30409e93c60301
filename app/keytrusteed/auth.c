/*
 * auth.c — who sent a request, per docs/api.md "Request signing".
 *
 * Every API request but the fingerprint and health checks carries X-KT-Client (the client's
 * fingerprint), X-KT-Timestamp, X-KT-Nonce and X-KT-Signature: an Ed25519 signature of
 *
 *     keytrustee-request-v2 \n METHOD \n HOST \n TARGET \n TIMESTAMP \n NONCE \n
 *     hex(BLAKE2b-256(body))
 *
 * where HOST is the Host header and TARGET the path and query, both exactly as sent. A request is
 * accepted when the timestamp is within 300 s of the server clock, the Host header names this
 * node (authority.c), the signature verifies with the client's public key, and the nonce was not
 * seen in that window (nonce_cache.c). The Host check is what stops a request captured on its way
 * to one node of a pair from being replayed against the other, whose nonce cache has not seen it;
 * it comes before the nonce is remembered, so a request refused here uses up nothing. Every
 * failure is 401; the answer names which check failed but never echoes a signature or a nonce,
 * and neither is logged.
 *
 * For a registered client the public key comes from keytrustee-db (client.get, or client.deposit
 * for a deposit read: the client record and the deposit in one admin-socket round trip, so the
 * key and the client's state are never older than the request); a disabled client,
 * or a client of a disabled org, is then refused with 403 — after its signature was checked, so
 * an unauthenticated caller learns nothing about a client's state. Registration verifies with the
 * key in its own body (register.c).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define SIGNING_PREFIX "keytrustee-request-v2"
#define NONCE_TEXT_CHARS 24u
#define SIGNATURE_TEXT_CHARS 88u
#define TIMESTAMP_MAX_CHARS 18u

typedef struct signed_headers {
    const char *fingerprint;
    const char *host;                   /* the Host header as sent: signed */
    char authority[KTD_AUTHORITY_MAX];  /* its canonical form: compared with our names */
    const char *timestamp_text;
    int64_t timestamp;
    const char *nonce_text;
    unsigned char nonce[KTD_NONCE_BYTES];
    unsigned char signature[KT_SIGNATURE_BYTES];
} signed_headers;

/* ---- Reading the headers -------------------------------------------------------------------- */

/* The header's value when it appears exactly once, else NULL. */
static const char *unique_header(const struct mg_connection *connection, const char *name)
{
    const struct mg_request_info *info = mg_get_request_info(connection);
    const char *value = NULL;
    for (int index = 0; index < info->num_headers; index++) {
        if (strcasecmp(info->http_headers[index].name, name) != 0)
            continue;
        if (value != NULL)
            return NULL;
        value = info->http_headers[index].value;
    }
    return value;
}

static int refuse(ktd_request *request, const char *message)
{
    ktd_respond_error(request, 401, "unauthenticated", NULL, "%s", message);
    return -1;
}

const char *ktd_claimed_client(ktd_request *request)
{
    const char *fingerprint = unique_header(request->connection, "X-KT-Client");
    if (fingerprint == NULL || !kt_fingerprint_valid(fingerprint)) {
        refuse(request, "X-KT-Client must be given once, as the client fingerprint (40 uppercase "
                        "hex characters)");
        return NULL;
    }
    return fingerprint;
}

static int parse_timestamp(const char *text, int64_t *timestamp)
{
    size_t length = strlen(text);
    if (length == 0 || length > TIMESTAMP_MAX_CHARS)
        return -1;
    for (size_t index = 0; index < length; index++)
        if (!isdigit((unsigned char)text[index]))
            return -1;
    *timestamp = strtoll(text, NULL, 10);
    return 0;
}

static int decode_exact(const char *text, size_t text_chars, unsigned char *out, size_t out_size)
{
    size_t length = 0;
    if (text == NULL || strlen(text) != text_chars)
        return -1;
    if (kt_base64_decode(out, out_size, &length, text, text_chars) != 0 || length != out_size)
        return -1;
    return 0;
}

static int parse_signed_headers(ktd_request *request, signed_headers *headers)
{
    headers->fingerprint = ktd_claimed_client(request);
    if (headers->fingerprint == NULL)
        return -1;
    headers->timestamp_text = unique_header(request->connection, "X-KT-Timestamp");
    if (headers->timestamp_text == NULL ||
        parse_timestamp(headers->timestamp_text, &headers->timestamp) != 0)
        return refuse(request, "X-KT-Timestamp must be given once, as unix seconds");
    headers->nonce_text = unique_header(request->connection, "X-KT-Nonce");
    if (decode_exact(headers->nonce_text, NONCE_TEXT_CHARS, headers->nonce,
                     sizeof headers->nonce) != 0)
        return refuse(request, "X-KT-Nonce must be given once, as base64 of 16 random bytes");
    headers->host = unique_header(request->connection, "Host");
    if (ktd_authority_canonical(headers->host, KTD_HOST_DEFAULT_PORT, headers->authority,
                                sizeof headers->authority) != 0)
        return refuse(request, "the Host header must be given once, as the HOST[:PORT] of the "
                               "server URL the request was signed for");
    const char *signature = unique_header(request->connection, "X-KT-Signature");
    if (decode_exact(signature, SIGNATURE_TEXT_CHARS, headers->signature,
                     sizeof headers->signature) != 0)
        return refuse(request, "X-KT-Signature must be given once, as base64 of a 64-byte "
                               "Ed25519 signature");
    return 0;
}

/* ---- The string to sign --------------------------------------------------------------------- */

static void body_hash_hex(const ktd_request *request, char out[2 * KT_HASH_BYTES + 1])
{
    unsigned char hash[KT_HASH_BYTES];
    const kt_secret *body = request->body;
    kt_hash(hash, body != NULL ? body->bytes : (const unsigned char *)"",
            body != NULL ? body->length : 0);
    if (kt_hex_encode(out, 2 * KT_HASH_BYTES + 1, hash, sizeof hash) != 0)
        out[0] = '\0';
    for (char *character = out; *character != '\0'; character++)
        *character = (char)tolower((unsigned char)*character);
}

/* The request's string to sign, malloc'd; NULL when memory is short. */
static char *string_to_sign(const ktd_request *request, const signed_headers *headers,
                            size_t *length)
{
    const struct mg_request_info *info = mg_get_request_info(request->connection);
    char body_hash[2 * KT_HASH_BYTES + 1];
    body_hash_hex(request, body_hash);
    const char *separator = request->query != NULL ? "?" : "";
    const char *query = request->query != NULL ? request->query : "";
    int size = snprintf(NULL, 0, "%s\n%s\n%s\n%s%s%s\n%s\n%s\n%s", SIGNING_PREFIX,
                        request->method, headers->host, info->request_uri, separator, query,
                        headers->timestamp_text, headers->nonce_text, body_hash);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (text == NULL)
        return NULL;
    snprintf(text, (size_t)size + 1, "%s\n%s\n%s\n%s%s%s\n%s\n%s\n%s", SIGNING_PREFIX,
             request->method, headers->host, info->request_uri, separator, query,
             headers->timestamp_text, headers->nonce_text, body_hash);
    *length = (size_t)size;
    return text;
}

/* ---- Verification --------------------------------------------------------------------------- */

static int check_clock(ktd_request *request, const signed_headers *headers, int64_t now)
{
    int64_t skew = headers->timestamp - now;
    if (skew >= -KTD_CLOCK_WINDOW && skew <= KTD_CLOCK_WINDOW)
        return 0;
    ktd_respond_error(request, 401, "unauthenticated", NULL,
                      "X-KT-Timestamp is %lld s away from the server clock; the limit is %d s "
                      "(check the client's clock)",
                      (long long)skew, KTD_CLOCK_WINDOW);
    return -1;
}

/* A request signed for another node (or another name) is refused before its signature is even
 * checked: its Host line is not ours, so it was never meant for this node. The canonical
 * authority is safe to quote: ktd_authority_canonical lets through only [a-z0-9._:[\]-]. */
static int check_host(ktd_request *request, const signed_headers *headers)
{
    if (ktd_authority_is_ours(request->daemon, headers->authority))
        return 0;
    ktd_respond_error(request, 401, "unauthenticated", NULL,
                      "this request was signed for another server: Host %.80s is not a name of "
                      "this node. Sign each request for the URL it is sent to; if this node is "
                      "reached under that name (load balancer, NAT), add it to accepted_hosts "
                      "in keytrustee.conf",
                      headers->authority);
    return -1;
}

static int check_signature(ktd_request *request, const signed_headers *headers,
                           const unsigned char public_key[KT_SIGN_PUBLIC_BYTES])
{
    size_t length = 0;
    char *text = string_to_sign(request, headers, &length);
    if (text == NULL)
        return ktd_respond_internal(request, "building the string to sign");
    bool valid = kt_sign_verify(headers->signature, text, length, public_key);
    free(text);
    if (!valid)
        return refuse(request, "the request signature does not verify (sign the method, the "
                               "Host header and the path and query as sent, the timestamp, the "
                               "nonce and the body hash with the client's key)");
    return 0;
}

static int check_nonce(ktd_request *request, const signed_headers *headers, int64_t now)
{
    switch (ktd_nonce_remember(headers->fingerprint, headers->nonce,
                               headers->timestamp + KTD_CLOCK_WINDOW + 1, now)) {
    case KTD_NONCE_FRESH:
        return 0;
    case KTD_NONCE_REPLAYED:
        return refuse(request, "this X-KT-Nonce was already used; sign every request with a "
                               "fresh random nonce");
    case KTD_NONCE_FULL:
    default:
        kt_log(KT_LOG_WARNING, "the replay cache is full; refusing requests until nonces expire");
        ktd_respond_error(request, 503, "unavailable", NULL,
                          "the server is receiving more signed requests than it can track; "
                          "retry shortly");
        return -1;
    }
}

int ktd_verify_signature(ktd_request *request,
                         const unsigned char public_key[KT_SIGN_PUBLIC_BYTES])
{
    signed_headers headers;
    if (parse_signed_headers(request, &headers) != 0)
        return -1;
    char expected[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(expected, public_key);
    if (strcmp(expected, headers.fingerprint) != 0)
        return refuse(request, "X-KT-Client is not the fingerprint of the signing key");
    int64_t now = (int64_t)time(NULL);
    if (check_clock(request, &headers, now) != 0 || check_host(request, &headers) != 0 ||
        check_signature(request, &headers, public_key) != 0 ||
        check_nonce(request, &headers, now) != 0)
        return -1;
    memcpy(request->client, headers.fingerprint, sizeof request->client);
    return 0;
}

/* ---- Registered clients --------------------------------------------------------------------- */

static int copy_string(char *out, size_t out_size, const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    if (value == NULL || strlen(value) >= out_size)
        return -1;
    memcpy(out, value, strlen(value) + 1);
    return 0;
}

int ktd_client_from_json(const json_t *object, ktd_client *client)
{
    size_t key_length = 0;
    const char *state = json_string_value(json_object_get(object, "state"));
    if (copy_string(client->fingerprint, sizeof client->fingerprint, object, "fingerprint") != 0 ||
        copy_string(client->org_uuid, sizeof client->org_uuid, object, "org_uuid") != 0 ||
        copy_string(client->org_name, sizeof client->org_name, object, "org") != 0 ||
        state == NULL || kt_state_parse(state, &client->state) != 0 ||
        !kt_fingerprint_valid(client->fingerprint) || !kt_uuid_valid(client->org_uuid))
        return -1; /* both go, at fixed lengths, into deposits' associated data */
    if (kt_json_get_base64(object, "public_key", client->public_key, sizeof client->public_key,
                           &key_length) != 0 ||
        key_length != KT_SIGN_PUBLIC_BYTES)
        return -1;
    return 0;
}

/* Sends db_request (client.get, or client.deposit) for `fingerprint`; on success *response is
 * keytrustee-db's whole answer, whose "client" is read into `client`. */
static int look_up_client(ktd_request *request, const char *fingerprint, json_t *db_request,
                          ktd_client *client, json_t **response)
{
    *response = NULL;
    int result = -1;
    if (json_object_set_new(db_request, "fingerprint", json_string(fingerprint)) != 0)
        ktd_respond_internal(request, "building the client lookup");
    else if (ktd_db_call(request, db_request, KTD_DB_READ, response) != 0)
        ; /* answered */
    else if (ktd_db_error_code(*response) != NULL &&
             strcmp(ktd_db_error_code(*response), "not_found") == 0)
        refuse(request, "unknown client: this fingerprint is not registered; register first");
    else if (ktd_db_error_code(*response) != NULL)
        ktd_respond_db_error(request, *response, "unknown client");
    else if (ktd_client_from_json(json_object_get(*response, "client"), client) != 0)
        ktd_respond_internal(request, "reading the client record from keytrustee-db");
    else
        result = 0;
    if (result != 0) {
        json_decref(*response);
        *response = NULL;
    }
    return result;
}

/* The state of the client's org: from the client record when keytrustee-db includes it
 * ("org_state"), else from org.get. Returns 0, or -1 after answering. */
static int org_state(ktd_request *request, const json_t *record, const ktd_client *client,
                     kt_state *state)
{
    const char *text = json_string_value(json_object_get(record, "org_state"));
    if (text != NULL)
        return kt_state_parse(text, state) == 0 ? 0 : ktd_respond_internal(request, "org_state");
    json_t *db_request = ktd_db_request(request, "org.get");
    json_t *response = NULL;
    if (db_request == NULL)
        return -1;
    int result = -1;
    if (json_object_set_new(db_request, "name", json_string(client->org_name)) != 0)
        ktd_respond_internal(request, "building org.get");
    else if (ktd_db_call(request, db_request, KTD_DB_READ, &response) != 0)
        ; /* answered */
    else if (ktd_db_error_code(response) != NULL)
        ktd_respond_db_error(request, response, "the client's org no longer exists");
    else if ((text = json_string_value(json_object_get(json_object_get(response, "org"),
                                                       "state"))) == NULL ||
             kt_state_parse(text, state) != 0)
        ktd_respond_internal(request, "reading org.get's org state");
    else
        result = 0;
    json_decref(db_request);
    json_decref(response);
    return result;
}

static int check_enabled(ktd_request *request, const json_t *record, const ktd_client *client)
{
    if (client->state != KT_STATE_ACTIVE) {
        ktd_respond_error(request, 403, "forbidden", NULL,
                          "this client is disabled; ask the administrator of org %s to enable "
                          "it",
                          client->org_name);
        return -1;
    }
    kt_state state;
    if (org_state(request, record, client, &state) != 0)
        return -1;
    if (state != KT_STATE_ACTIVE) {
        ktd_respond_error(request, 403, "forbidden", NULL, "the org %s is disabled",
                          client->org_name);
        return -1;
    }
    return 0;
}

int ktd_authenticate_call(ktd_request *request, ktd_body_kind kind, json_t *db_request,
                          ktd_client *client, json_t **response)
{
    *response = NULL;
    if (ktd_body_read(request, kind) != 0)
        return -1;
    const char *fingerprint = ktd_claimed_client(request);
    if (fingerprint == NULL || look_up_client(request, fingerprint, db_request, client,
                                              response) != 0)
        return -1;
    const json_t *record = json_object_get(*response, "client");
    if (strcmp(client->fingerprint, fingerprint) != 0)
        ktd_respond_internal(request, "keytrustee-db answered for another client");
    else if (ktd_verify_signature(request, client->public_key) == 0 &&
             check_enabled(request, record, client) == 0)
        return 0;
    json_decref(*response);
    *response = NULL;
    return -1;
}

int ktd_authenticate(ktd_request *request, ktd_body_kind kind, ktd_client *client)
{
    json_t *db_request = ktd_db_request(request, "client.get");
    json_t *response = NULL;
    if (db_request == NULL)
        return -1;
    int result = ktd_authenticate_call(request, kind, db_request, client, &response);
    json_decref(db_request);
    json_decref(response);
    return result;
}
