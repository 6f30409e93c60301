/*
 * audit.c — keytrusteed's side of the audit log (app/common/audit.c writes the chain).
 *
 * Every request to an authenticated endpoint (registration and everything under /v1/deposits) is
 * one audit event, successful or not, so failed authentications are in the log too:
 *   actor   the authenticated client's fingerprint; "unverified <fingerprint>" when X-KT-Client
 *           was well formed but the request did not authenticate; "anonymous" otherwise
 *   action  client.register, deposit.put, deposit.find, deposit.get, deposit.delete,
 *           deposit.disable, deposit.enable ("request" for a path no route knows)
 *   object  the deposit uuid (from the path, or the new one for a put), the query for a find
 *           (handles and search terms are not secret), the fingerprint for a registration
 *   result  "<status>" or "<status> <error code>"
 *   source  the peer address
 * Bodies, secrets, signatures and nonces are never part of an event.
 *
 * Before such a request is handled, ktd_audit_admit reserves room for its event; when the audit
 * backlog is full (the log cannot be written: disk full) the request is refused with 503
 * audit_unavailable rather than served without a record.
 */
#include <stdio.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

#define OBJECT_MAX 200

typedef struct audited_route {
    const char *method;
    const char *pattern;
    const char *action;
} audited_route;

static const audited_route audited_routes[] = {
    {"POST", "/v1/register", "client.register"},
    {"POST", "/v1/deposits", "deposit.put"},
    {"GET", "/v1/deposits", "deposit.find"},
    {"GET", "/v1/deposits/*", "deposit.get"},
    {"DELETE", "/v1/deposits/*", "deposit.delete"},
    {"POST", "/v1/deposits/*/disable", "deposit.disable"},
    {"POST", "/v1/deposits/*/enable", "deposit.enable"},
};

/* The object a handler learnt while answering (a new deposit's uuid). One request runs on one
 * CivetWeb worker thread from start to end. */
static _Thread_local char noted_object[OBJECT_MAX + 1];

void ktd_audit_note_object(const char *object)
{
    snprintf(noted_object, sizeof noted_object, "%s", object != NULL ? object : "");
}

static bool path_is_audited(const char *path)
{
    return path != NULL && (strcmp(path, "/v1/register") == 0 ||
                            strncmp(path, "/v1/deposits", strlen("/v1/deposits")) == 0);
}

bool ktd_audit_admit(ktd_request *request, bool *audited)
{
    noted_object[0] = '\0';
    *audited = path_is_audited(request->path);
    if (!*audited)
        return true;
    if (kt_audit_reserve())
        return true;
    ktd_respond_error(request, 503, "audit_unavailable", NULL,
                      "the audit log cannot be written on this node (see the server log); "
                      "nothing was done");
    return false;
}

static const char *action_for(size_t route_index)
{
    const char *pattern = ktd_route_pattern(route_index);
    const char *method = ktd_route_method(route_index);
    for (size_t index = 0; index < sizeof audited_routes / sizeof audited_routes[0]; index++)
        if (strcmp(audited_routes[index].pattern, pattern) == 0 &&
            strcmp(audited_routes[index].method, method) == 0)
            return audited_routes[index].action;
    return "request";
}

/* The uuid segment of /v1/deposits/<uuid>[/...] into out, or "". */
static void path_uuid(const char *path, char *out, size_t out_size)
{
    const char *prefix = "/v1/deposits/";
    out[0] = '\0';
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return;
    const char *segment = path + strlen(prefix);
    snprintf(out, out_size, "%.*s", (int)strcspn(segment, "/"), segment);
}

static void describe_object(const ktd_request *request, const char *claimed, char *out,
                            size_t out_size)
{
    if (noted_object[0] != '\0')
        snprintf(out, out_size, "%s", noted_object);
    else if (strcmp(request->path, "/v1/register") == 0)
        snprintf(out, out_size, "%s", claimed != NULL ? claimed : "");
    else if (strcmp(request->path, "/v1/deposits") == 0)
        snprintf(out, out_size, "%s", request->query != NULL ? request->query : "");
    else
        path_uuid(request->path, out, out_size);
}

void ktd_audit_request(const ktd_request *request, size_t route_index)
{
    const char *claimed = mg_get_header(request->connection, "X-KT-Client");
    if (claimed != NULL && !kt_fingerprint_valid(claimed))
        claimed = NULL;
    char actor[KT_FINGERPRINT_CHARS + 16];
    if (request->client[0] != '\0')
        snprintf(actor, sizeof actor, "%s", request->client);
    else
        snprintf(actor, sizeof actor, "%s%s", claimed != NULL ? "unverified " : "anonymous",
                 claimed != NULL ? claimed : "");
    char object[OBJECT_MAX + 1];
    describe_object(request, claimed, object, sizeof object);
    char result[64];
    snprintf(result, sizeof result, "%d%s%s", request->status,
             request->error_code != NULL ? " " : "",
             request->error_code != NULL ? request->error_code : "");
    kt_audit_event event = {
        .actor = actor,
        .action = action_for(route_index),
        .object = object,
        .result = result,
        .source = mg_get_request_info(request->connection)->remote_addr,
    };
    kt_audit_record(&event);
}
