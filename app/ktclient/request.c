/*
 * request.c — one signed API call against the configured servers, with the server selection of
 * ktclient.h, and the translation of every failure into a status and a message that says what
 * happened and what to do.
 *
 * Selection (kept deliberately small; a later change extends it to full failover):
 *   1. The call goes to the first configured server (`server`).
 *   2. A read (GET) that could not connect, lost its connection, timed out, or got a 5xx answer is
 *      sent once more to the other configured server, when there is one.
 *   3. A write that a passive refuses with 503 {"error": "passive", "active": URL} is sent once
 *      more to that URL when it names the other configured server. Other failed writes are not
 *      retried: a write needs both nodes, so the other node could not take it either.
 *   4. No 4xx answer is retried: the other node would give the same one.
 * Every attempt is signed afresh (new timestamp and nonce), so a retry is never a replay.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "app/ktclient/internal.h"

#define MESSAGE_CHARS 320u

/* What one attempt against one server ended with, beyond its status. */
typedef struct attempt_outcome {
    kt_tls_failure failure; /* KT_TLS_OK when the server answered */
    int http_status;
    char code[40];          /* "error" of the answer's JSON body */
    char message[MESSAGE_CHARS];
    kt_url active;          /* from a "passive" refusal */
    bool has_active;
} attempt_outcome;

/* ---- Describing failures ----------------------------------------------------------------------- */

/* crypto/'s TLS messages already name host, port and what to check; add only what they lack. */
static kt_client_status describe_transport(const kt_url *server, const kt_tls_options *tls,
                                           kt_tls_failure failure, const char *reason,
                                           char *error, size_t error_size)
{
    switch (failure) {
    case KT_TLS_CONNECT_FAILED:
    case KT_TLS_HANDSHAKE_FAILED:
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "cannot reach the key server %s: %s", server->text, reason);
    case KT_TLS_CERTIFICATE_REJECTED:
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "refusing the key server %s: %s. This client trusts the CA in %s; "
                              "if the server certificate was replaced on purpose, register again "
                              "with the new CA", server->text, reason,
                              tls->ca_file != NULL ? tls->ca_file : "(none)");
    case KT_TLS_TIMEOUT:
    case KT_TLS_CLOSED:
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "the key server %s did not complete its answer: %s; retry later",
                              server->text, reason);
    default:
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "talking to the key server %s failed: %s", server->text, reason);
    }
}

static kt_client_status describe_unavailable(const kt_url *server, const attempt_outcome *outcome,
                                             char *error, size_t error_size)
{
    const char *code = outcome->code;
    if (strcmp(code, "passive") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: this node (%s) is the passive; the active is %s. "
                              "Retry there, or configure the active as the server",
                              server->text, outcome->has_active ? outcome->active.text : "unknown");
    if (strcmp(code, "write_unavailable") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: the key server pair is degraded (the other node is "
                              "down); existing keys can still be read — retry later");
    if (strcmp(code, "indeterminate") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "the write may or may not have been committed; the nodes settle it "
                              "when they reconnect — read it back (ktclient get or list) before "
                              "retrying");
    if (strcmp(code, "unavailable") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "the database service is not running on %s; start keytrustee-db "
                              "there or retry later", server->text);
    return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                          "the key server %s is unavailable (HTTP %d: %s); retry later",
                          server->text, outcome->http_status, outcome->message);
}

static kt_client_status describe_server_error(const kt_url *server,
                                              const attempt_outcome *outcome, char *error,
                                              size_t error_size)
{
    if (outcome->http_status == 503)
        return describe_unavailable(server, outcome, error, error_size);
    if (outcome->http_status == 507)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: the disk of the key server %s is full; nothing was "
                              "stored — retry once space is freed", server->text);
    if (outcome->http_status == 500)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "the key server %s hit an internal error (%s); details are in its "
                              "log", server->text, outcome->message);
    return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                          "the key server %s answered HTTP %d (%s); retry later", server->text,
                          outcome->http_status, outcome->message);
}

static kt_client_status describe_answer(const kt_url *server, const kt_client_endpoint *endpoint,
                                        const kt_client_call *call,
                                        const attempt_outcome *outcome, char *error,
                                        size_t error_size)
{
    int status = outcome->http_status;
    bool registering = strcmp(call->target, "/v1/register") == 0;
    const char *message = outcome->message;
    if (status >= 500)
        return describe_server_error(server, outcome, error, error_size);
    if (status == 401)
        return kt_client_fail(KT_CLIENT_REFUSED, error, error_size,
                              "authentication refused by %s: %s. Check that this host's clock is "
                              "within 5 minutes of the server's%s%s%s", server->text, message,
                              registering ? "" : " and that client ",
                              registering ? "" : endpoint->fingerprint,
                              registering ? "" : " is registered there");
    if (status == 403 && registering)
        return kt_client_fail(KT_CLIENT_REFUSED, error, error_size,
                              "registration refused by %s: %s. Check the org name and its auth "
                              "secret (keytrustee-orgtool list), and that the org is enabled",
                              server->text, message);
    if (status == 403)
        return kt_client_fail(KT_CLIENT_REFUSED, error, error_size,
                              "refused by %s: %s (this client is %s)", server->text, message,
                              endpoint->fingerprint);
    if (status == 404)
        return kt_client_fail(KT_CLIENT_NOT_FOUND, error, error_size, "not found: %s", message);
    if (status == 409)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size, "conflict: %s", message);
    if (status >= 400)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "the key server %s refused the request (HTTP %d %s): %s",
                              server->text, status, outcome->code, message);
    return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                          "unexpected answer HTTP %d from %s; check that the URL names a "
                          "keytrustee server", status, server->text);
}

/* ---- One attempt --------------------------------------------------------------------------------- */

static void copy_string(char *out, size_t out_size, const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    kt_client_sanitize(out, out_size, value != NULL ? value : "");
}

/* Fills code, message and active from an error answer's JSON body, when it has one. */
static void read_error_body(const kt_http_response *response, attempt_outcome *outcome)
{
    (void)snprintf(outcome->message, sizeof outcome->message, "no explanation given");
    json_error_t json_error;
    json_t *body = json_loadb((const char *)response->body->bytes, response->body->length, 0,
                              &json_error);
    if (json_is_object(body)) {
        copy_string(outcome->code, sizeof outcome->code, body, "error");
        copy_string(outcome->message, sizeof outcome->message, body, "message");
        const char *active = json_string_value(json_object_get(body, "active"));
        outcome->has_active = active != NULL &&
                              kt_url_parse(active, &outcome->active, NULL, 0) == 0;
    }
    json_decref(body);
}

static kt_client_status attempt(const kt_client_endpoint *endpoint, const kt_url *server,
                                kt_client_call *call, attempt_outcome *outcome, char *error,
                                size_t error_size)
{
    memset(outcome, 0, sizeof *outcome);
    unsigned char nonce[KT_NONCE_BYTES];
    kt_random(nonce, sizeof nonce);
    kt_request_signature signature;
    if (kt_request_sign(&signature, endpoint->fingerprint, endpoint->secret_key, call->method,
                        call->target, call->body, call->body_length, (int64_t)time(NULL),
                        nonce) != 0)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "cannot sign the request to %s (bad client key or target)",
                              call->target);
    kt_http_request request = {.method = call->method, .target = call->target,
                               .authority = server->authority, .signature = &signature,
                               .body = call->body, .body_length = call->body_length};
    char reason[256] = "";
    if (kt_http_exchange(server, &endpoint->tls, &request, &call->response, &outcome->failure,
                         reason, sizeof reason) != 0)
        return describe_transport(server, &endpoint->tls, outcome->failure, reason, error,
                                  error_size);
    outcome->http_status = call->response.status;
    if (outcome->http_status >= 200 && outcome->http_status < 300)
        return KT_CLIENT_OK;
    read_error_body(&call->response, outcome);
    kt_http_response_clear(&call->response);
    return describe_answer(server, endpoint, call, outcome, error, error_size);
}

/* ---- Selection --------------------------------------------------------------------------------- */

static bool transport_retriable(kt_tls_failure failure)
{
    return failure == KT_TLS_CONNECT_FAILED || failure == KT_TLS_HANDSHAKE_FAILED ||
           failure == KT_TLS_TIMEOUT || failure == KT_TLS_CLOSED;
}

/* The server to try next after a failed first attempt, or NULL. */
static const kt_url *next_server(const kt_client_endpoint *endpoint, const kt_client_call *call,
                                 const attempt_outcome *outcome)
{
    if (endpoint->server_count < 2)
        return NULL;
    const kt_url *other = &endpoint->servers[1];
    if (!call->write)
        return (transport_retriable(outcome->failure) || outcome->http_status >= 500) ? other
                                                                                       : NULL;
    bool passive = outcome->http_status == 503 && strcmp(outcome->code, "passive") == 0;
    return (passive && outcome->has_active && kt_url_same(&outcome->active, other)) ? other
                                                                                     : NULL;
}

kt_client_status kt_client_perform(const kt_client_endpoint *endpoint, kt_client_call *call,
                                   char *error, size_t error_size)
{
    memset(&call->response, 0, sizeof call->response);
    attempt_outcome outcome;
    char first_error[512] = "";
    kt_client_status status = attempt(endpoint, &endpoint->servers[0], call, &outcome,
                                      first_error, sizeof first_error);
    const kt_url *next = status == KT_CLIENT_OK ? NULL : next_server(endpoint, call, &outcome);
    if (next == NULL) {
        kt_client_error(error, error_size, "%s", first_error);
        return status;
    }
    char second_error[512] = "";
    status = attempt(endpoint, next, call, &outcome, second_error, sizeof second_error);
    if (status != KT_CLIENT_OK)
        kt_client_error(error, error_size, "%s; the other key server failed too: %s",
                        first_error, second_error);
    return status;
}
