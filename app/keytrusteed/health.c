/*
 * health.c — the two unauthenticated endpoints.
 *
 *   GET /?a=fingerprint   the server key fingerprint and a newline, as text/plain: what operators
 *                         and clients compare with `ktadmin init`'s output before trusting a node.
 *                         Both nodes of a pair derive the same key, so both answer the same.
 *   GET /v1/health        {"role", "writable", "version"} from keytrustee-db's status (plus
 *                         "reason" when not writable): 200 while the node serves reads, 503
 *                         "unavailable" when keytrustee-db is down.
 *   GET /v1/health?write=1  the same answer, but 200 only when the node accepts writes now (the
 *                         active of a healthy pair, or a standalone node) and 503 otherwise: for
 *                         load balancers and probes that must find the node writes can go to.
 *                         write=0 is the plain check; any other value or parameter is a 400.
 *
 * Monitoring beyond up/down — role, replication, certificate expiry, counters — is in status.c
 * (/v1/status) and metrics.c (/metrics).
 */
#include <stdio.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

void ktd_handle_fingerprint(ktd_request *request, const char *argument)
{
    (void)argument;
    static const char *const keys[] = {"a"};
    char *values[1];
    char error[160];
    if (ktd_body_read(request, KTD_BODY_NONE) != 0)
        return;
    bool asked = ktd_query_parse(request->query, keys, 1, values, error, sizeof error) == 0 &&
                 values[0] != NULL && strcmp(values[0], "fingerprint") == 0;
    ktd_query_free(values, 1); /* all NULL when the parse failed */
    if (!asked) {
        ktd_respond_error(request, 404, "not_found", NULL,
                          "unknown endpoint; GET /?a=fingerprint answers the server fingerprint");
        return;
    }
    char text[KT_FINGERPRINT_CHARS + 2];
    snprintf(text, sizeof text, "%s\n", request->daemon->keys->fingerprint);
    ktd_respond(request, 200, "text/plain", text, strlen(text), NULL, 0);
}

static void respond_health(ktd_request *request, const json_t *status, bool need_write)
{
    const char *role = json_string_value(json_object_get(status, "role"));
    const json_t *writable = json_object_get(status, "writable");
    if (role == NULL || !json_is_boolean(writable)) {
        ktd_respond_internal(request, "reading keytrustee-db's status");
        return;
    }
    json_t *body = json_pack("{s:s, s:O, s:s}", "role", role, "writable", writable, "version",
                             KT_VERSION);
    const char *reason = json_string_value(json_object_get(status, "reason"));
    if (reason == NULL)
        reason = "unknown";
    if (body != NULL && !json_is_true(writable) &&
        json_object_set_new(body, "reason", json_string(reason)) != 0) {
        json_decref(body);
        body = NULL;
    }
    if (body == NULL) {
        ktd_respond_internal(request, "building the health answer");
        return;
    }
    ktd_respond_json(request, need_write && !json_is_true(writable) ? 503 : 200, body);
    json_decref(body);
}

/* Reads ?write=1 (true) or ?write=0; answers 400 and returns -1 for anything else. */
static int parse_health_query(ktd_request *request, bool *need_write)
{
    static const char *const keys[] = {"write"};
    char *values[1];
    char error[160];
    *need_write = false;
    if (ktd_query_parse(request->query, keys, 1, values, error, sizeof error) != 0) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", error);
        return -1;
    }
    int result = 0;
    if (values[0] != NULL && strcmp(values[0], "1") == 0)
        *need_write = true;
    else if (values[0] != NULL && strcmp(values[0], "0") != 0)
        result = -1;
    ktd_query_free(values, 1);
    if (result != 0)
        ktd_respond_error(request, 400, "bad_request", NULL, "write must be 1 or 0");
    return result;
}

void ktd_handle_health(ktd_request *request, const char *argument)
{
    (void)argument;
    bool need_write = false;
    if (ktd_body_read(request, KTD_BODY_NONE) != 0 || parse_health_query(request, &need_write) != 0)
        return;
    json_t *db_request = ktd_db_request(request, "status");
    json_t *response = NULL;
    if (db_request == NULL)
        return;
    if (ktd_db_call(request, db_request, KTD_DB_READ, &response) == 0) {
        if (ktd_db_error_code(response) != NULL)
            ktd_respond_db_error(request, response, "no status");
        else
            respond_health(request, response, need_write);
    }
    json_decref(db_request);
    json_decref(response);
}
