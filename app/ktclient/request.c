/*
 * request.c — one signed API call against the configured servers, with the failover of ktclient.h,
 * and the translation of every failure into a status and a message that says what happened and
 * what to do.
 *
 * Selection (the rules themselves are in failover.c):
 *   1. Writes go to the first configured server (`server`, the active). Reads go to it too, unless
 *      the failover hint (client.state, state.c) says it failed moments ago: then they ask the
 *      other server first.
 *   2. After a failed attempt, kt_failover_next says whether to ask the other configured server.
 *      There are at most two attempts per call, one per server: no retry loops. The one
 *      exception: a write both of whose attempts met a role change under way (each node naming
 *      the other as the active, or one restarting: kt_failover_role_change) starts over once,
 *      a second later; neither attempt stored anything.
 *   3. A read attempt that still has another server to fall back on gets a short I/O timeout (the
 *      connect timeout, at least 1 s): a node that accepts connections but does not answer (a
 *      stopped process, a cut network path behind a load balancer) costs at most that long. The
 *      last attempt of a call gets the full timeout, since nothing is left to fall back on.
 *   4. A write refused because the pair is degraded (kt_failover_degraded) is reported in one
 *      line naming the node that is down and saying that existing keys still work; the status is
 *      KT_CLIENT_UNAVAILABLE (exit 3).
 * Every attempt is signed afresh (new timestamp and nonce), so a retry is never a replay.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "app/ktclient/internal.h"

#define IO_TIMEOUT_MS 15000      /* a write may wait for the passive's acknowledgement */
#define QUICK_IO_MINIMUM_MS 1000 /* the short I/O timeout of a read that can fall back */
#define ATTEMPT_ERROR_CHARS 640

void kt_client_endpoint_timeouts(kt_client_endpoint *endpoint, long connect_timeout_ms)
{
    int connect = connect_timeout_ms > 0 ? (int)connect_timeout_ms
                                         : KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    endpoint->tls.connect_timeout_ms = connect;
    endpoint->tls.io_timeout_ms = IO_TIMEOUT_MS;
    endpoint->quick_io_timeout_ms = connect > QUICK_IO_MINIMUM_MS ? connect : QUICK_IO_MINIMUM_MS;
}

/* ---- Describing failures ----------------------------------------------------------------------- */

/* crypto/'s TLS messages already name host, port and what to check; add only what they lack. */
static kt_client_status describe_transport(const kt_url *server, const kt_tls_options *tls,
                                           const kt_client_call *call,
                                           const kt_attempt_outcome *outcome, const char *reason,
                                           char *error, size_t error_size)
{
    switch (outcome->failure) {
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
        if (call->write && outcome->sent)
            return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                                  "the key server %s did not complete its answer (%s): the write "
                                  "may or may not have been stored; read it back (ktclient get "
                                  "or list) before retrying", server->text, reason);
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "the key server %s did not complete its answer: %s; retry later",
                              server->text, reason);
    default:
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "talking to the key server %s failed: %s", server->text, reason);
    }
}

static kt_client_status describe_unavailable(const kt_url *server,
                                             const kt_attempt_outcome *outcome, char *error,
                                             size_t error_size)
{
    const char *code = outcome->code;
    if (strcmp(code, "passive") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: %s is the passive and names %s as the active, and "
                              "no active this client was registered with took the write; check "
                              "the roles with ktadmin status on each node, or register again with "
                              "--server set to the active", server->text,
                              outcome->has_active ? outcome->active.text : "no server");
    if (strcmp(code, "write_unavailable") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: the key server pair is degraded (the other node is "
                              "down); existing keys can still be read; retry later");
    if (strcmp(code, "fenced") == 0)
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: %s is fenced: another node was promoted to active "
                              "under a newer epoch and this one takes no writes; existing keys "
                              "can still be read; register with --server set to the active",
                              server->text);
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
                                              const kt_attempt_outcome *outcome, char *error,
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
                                        const kt_attempt_outcome *outcome, char *error,
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
static void read_error_body(const kt_http_response *response, kt_attempt_outcome *outcome)
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

static kt_client_status attempt(const kt_client_endpoint *endpoint, size_t server_index,
                                bool quick, kt_client_call *call, kt_attempt_outcome *outcome,
                                char *error, size_t error_size)
{
    const kt_url *server = &endpoint->servers[server_index];
    memset(outcome, 0, sizeof *outcome);
    outcome->server = server_index;
    unsigned char nonce[KT_NONCE_BYTES];
    kt_random(nonce, sizeof nonce);
    kt_request_signature signature;
    /* Signed for this server alone: the next attempt, on the other node, signs anew. */
    if (kt_request_sign(&signature, endpoint->fingerprint, endpoint->secret_key, call->method,
                        server->authority, call->target, call->body, call->body_length,
                        (int64_t)time(NULL), nonce) != 0) {
        outcome->failure = KT_TLS_ERROR;
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "cannot sign the request to %s (bad client key or target)",
                              call->target);
    }
    kt_http_request request = {.method = call->method, .target = call->target,
                               .authority = server->authority, .signature = &signature,
                               .body = call->body, .body_length = call->body_length};
    kt_tls_options tls = endpoint->tls;
    if (quick && endpoint->quick_io_timeout_ms > 0)
        tls.io_timeout_ms = endpoint->quick_io_timeout_ms;
    char reason[256] = "";
    if (kt_http_exchange(server, &tls, &request, &call->response, &outcome->failure,
                         &outcome->sent, reason, sizeof reason) != 0)
        return describe_transport(server, &endpoint->tls, call, outcome, reason, error,
                                  error_size);
    outcome->http_status = call->response.status;
    if (outcome->http_status >= 200 && outcome->http_status < 300)
        return KT_CLIENT_OK;
    read_error_body(&call->response, outcome);
    kt_http_response_clear(&call->response);
    return describe_answer(server, endpoint, call, outcome, error, error_size);
}

/* ---- After the last attempt -------------------------------------------------------------------- */

static kt_client_status describe_degraded(const kt_client_endpoint *endpoint,
                                          const kt_attempt_outcome *outcomes, size_t count,
                                          size_t down, char *error, size_t error_size)
{
    if (down == SIZE_MAX) /* one server configured: it answered, its peer is not ours to name */
        return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                              "write refused: the key server pair is degraded: the other node of "
                              "%s is down or unreachable. Existing keys still work (reads are "
                              "served); new keys and client registrations wait until both nodes "
                              "are up, then writes resume by themselves",
                              endpoint->servers[outcomes[count - 1].server].text);
    const kt_url *survivor = &endpoint->servers[1 - down];
    return kt_client_fail(KT_CLIENT_UNAVAILABLE, error, error_size,
                          "write refused: the key server pair is degraded: %s is down or "
                          "unreachable. Existing keys still work (reads are served by %s); new "
                          "keys and client registrations wait until both nodes are up, then "
                          "writes resume by themselves",
                          endpoint->servers[down].text, survivor->text);
}

static bool followed_passive(const kt_attempt_outcome *outcome)
{
    return outcome->failure == KT_TLS_OK && outcome->http_status == 503 &&
           strcmp(outcome->code, "passive") == 0;
}

/* The message of a call whose last attempt failed with `status`. */
static kt_client_status explain_failure(const kt_client_endpoint *endpoint,
                                        const kt_client_call *call,
                                        const kt_attempt_outcome *outcomes,
                                        char errors[2][ATTEMPT_ERROR_CHARS], size_t count,
                                        kt_client_status status, char *error, size_t error_size)
{
    size_t down = SIZE_MAX;
    if (call->write &&
        kt_failover_degraded(endpoint->servers, endpoint->server_count, outcomes, count, &down))
        return describe_degraded(endpoint, outcomes, count, down, error, error_size);
    if (count == 1 || followed_passive(&outcomes[0]))
        kt_client_error(error, error_size, "%s", errors[count - 1]);
    else
        kt_client_error(error, error_size, "%s (asked after %s failed: %s)", errors[1],
                        endpoint->servers[outcomes[0].server].text, errors[0]);
    return status;
}

static void record_attempt(kt_client_call *call, const kt_attempt_outcome *outcome)
{
    if (call->tried_count >= 2)
        return;
    call->tried[call->tried_count] = outcome->server;
    call->tried_unhealthy[call->tried_count] = kt_failover_unhealthy(outcome);
    call->tried_count++;
}

kt_client_status kt_client_perform(const kt_client_endpoint *endpoint, kt_client_call *call,
                                   char *error, size_t error_size)
{
    memset(&call->response, 0, sizeof call->response);
    call->tried_count = 0;
    kt_attempt_outcome outcomes[2];
    char errors[2][ATTEMPT_ERROR_CHARS];
    size_t server = call->write || endpoint->first_read >= endpoint->server_count
                        ? 0
                        : endpoint->first_read;
    size_t count = 0;
    kt_client_status status;
    bool started_over = false;
    for (;;) {
        bool last = count + 1 >= endpoint->server_count;
        status = attempt(endpoint, server, !call->write && !last, call, &outcomes[count],
                         errors[count], sizeof errors[count]);
        record_attempt(call, &outcomes[count]);
        count++;
        if (status == KT_CLIENT_OK)
            return KT_CLIENT_OK;
        if (last || kt_failover_next(call->write, &outcomes[count - 1],
                                     &endpoint->servers[1 - server]) == KT_FAILOVER_STOP) {
            if (started_over || !call->write ||
                !kt_failover_role_change(endpoint->servers, endpoint->server_count, outcomes,
                                         count))
                break;
            started_over = true; /* a role change under way: once more, from the start */
            struct timespec pause = {KT_FAILOVER_ROLE_CHANGE_PAUSE_MS / 1000, 0};
            (void)nanosleep(&pause, NULL);
            count = 0;
            call->tried_count = 0;
            server = 0;
            continue;
        }
        server = 1 - server;
    }
    return explain_failure(endpoint, call, outcomes, errors, count, status, error, error_size);
}
