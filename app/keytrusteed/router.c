/*
 * router.c — from a CivetWeb request to the handler that answers it, and the request log.
 *
 * Routes match the raw path (CivetWeb runs with decode_url=no) segment by segment; "*" matches
 * one non-empty segment, handed to the handler (a deposit uuid). A path no route knows is 404; a
 * known path with another method is 405 with an Allow header naming the methods it takes.
 *
 * After the handler, one line per request is logged — at info, or at warning for a 5xx — with
 * the method, path and query (handles and search terms are not secret), status (and error code),
 * duration, the authenticated client's fingerprint and the peer's address. Bodies, signatures and
 * nonces never reach the log. The same moment feeds /metrics (metrics.c): the count by route and
 * status, the duration, and for writes the reason of a refusal.
 *
 * Requests to authenticated endpoints also pass the failed-authentication limiter before the
 * handler (rate_limit.c) and become one audit event after it (audit.c).
 *
 * CivetWeb's own refusals (an unparsable request line, oversized headers, ...) come through
 * ktd_route_http_error and are answered as JSON too.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define ARGUMENT_MAX 64
#define LOGGED_TARGET_MAX 200

typedef struct route {
    const char *pattern;
    const char *method;
    ktd_handler handler;
} route;

static const route routes[] = {
    {"/", "GET", ktd_handle_fingerprint},
    {"/v1/health", "GET", ktd_handle_health},
    {"/v1/status", "GET", ktd_handle_status},
    {"/metrics", "GET", ktd_handle_metrics},
    {"/v1/register", "POST", ktd_handle_register},
    {"/v1/deposits", "GET", ktd_handle_deposit_find},
    {"/v1/deposits", "POST", ktd_handle_deposit_put},
    {"/v1/deposits/*", "GET", ktd_handle_deposit_get},
    {"/v1/deposits/*", "DELETE", ktd_handle_deposit_purge},
    {"/v1/deposits/*/disable", "POST", ktd_handle_deposit_disable},
    {"/v1/deposits/*/enable", "POST", ktd_handle_deposit_enable},
};

#define ROUTE_COUNT (sizeof routes / sizeof routes[0])
_Static_assert(ROUTE_COUNT < KTD_METRIC_ENDPOINTS, "raise KTD_METRIC_ENDPOINTS");

size_t ktd_route_count(void)
{
    return ROUTE_COUNT;
}

const char *ktd_route_pattern(size_t index)
{
    return index < ROUTE_COUNT ? routes[index].pattern : "unmatched";
}

const char *ktd_route_method(size_t index)
{
    return index < ROUTE_COUNT ? routes[index].method : "any";
}

static bool route_writes(size_t index)
{
    return index < ROUTE_COUNT && strcmp(routes[index].method, "GET") != 0;
}

/* Whether `path` has the shape of `pattern`; a '*' segment is copied to `argument`. */
static bool path_matches(const char *pattern, const char *path, char argument[ARGUMENT_MAX])
{
    argument[0] = '\0';
    while (*pattern != '\0' && *path != '\0') {
        if (*pattern == '*') {
            size_t length = strcspn(path, "/");
            if (length == 0 || length >= ARGUMENT_MAX)
                return false;
            memcpy(argument, path, length);
            argument[length] = '\0';
            path += length;
            pattern++;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

/* Appends `method` to the comma-separated `allow` list. */
static void add_allowed(char *allow, size_t allow_size, const char *method)
{
    size_t used = strlen(allow);
    snprintf(allow + used, allow_size - used, "%s%s", used > 0 ? ", " : "", method);
}

/* Answers the request; returns the index of the route that did, or ROUTE_COUNT for none. */
static size_t dispatch(ktd_request *request)
{
    char argument[ARGUMENT_MAX];
    char allow[64] = "";
    if (request->path == NULL || request->method == NULL) {
        ktd_respond_error(request, 400, "bad_request", NULL, "the request has no usable path");
        return ROUTE_COUNT;
    }
    for (size_t index = 0; index < ROUTE_COUNT; index++) {
        if (!path_matches(routes[index].pattern, request->path, argument))
            continue;
        if (strcmp(routes[index].method, request->method) == 0) {
            routes[index].handler(request, argument[0] != '\0' ? argument : NULL);
            return index;
        }
        add_allowed(allow, sizeof allow, routes[index].method);
    }
    if (allow[0] != '\0')
        ktd_respond_not_allowed(request, allow);
    else
        ktd_respond_error(request, 404, "not_found", NULL, "unknown endpoint %s; see docs/api.md",
                          request->path);
    return ROUTE_COUNT;
}

/* ---- The request log ------------------------------------------------------------------------ */

static void copy_printable(char *out, size_t out_size, const char *text)
{
    size_t written = 0;
    for (; text != NULL && *text != '\0' && written + 1 < out_size; text++) {
        unsigned char byte = (unsigned char)*text;
        out[written++] = (byte < 0x20 || byte >= 0x7f) ? '?' : (char)byte;
    }
    out[written] = '\0';
}

/* CLOCK_MONOTONIC cannot fail on Linux; a zero time only spoils the logged duration. */
static void monotonic_now(struct timespec *now)
{
    if (clock_gettime(CLOCK_MONOTONIC, now) != 0)
        memset(now, 0, sizeof *now);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    monotonic_now(&now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void log_request(const ktd_request *request, double seconds)
{
    char target[LOGGED_TARGET_MAX + 1];
    char query[LOGGED_TARGET_MAX + 1];
    char method[16];
    copy_printable(target, sizeof target, request->path != NULL ? request->path : "-");
    copy_printable(query, sizeof query, request->query);
    copy_printable(method, sizeof method, request->method != NULL ? request->method : "-");
    const char *peer = mg_get_request_info(request->connection)->remote_addr;
    kt_log(request->status >= 500 ? KT_LOG_WARNING : KT_LOG_INFO,
           "%s %s%s%s %d%s%s %.1f ms client %s from %s", method, target,
           request->query != NULL ? "?" : "", query, request->status,
           request->error_code != NULL ? " " : "",
           request->error_code != NULL ? request->error_code : "", seconds * 1e3,
           request->client[0] != '\0' ? request->client : "-", peer[0] != '\0' ? peer : "-");
}

static void finish_request(const ktd_request *request, size_t route_index,
                           const struct timespec *start)
{
    double seconds = seconds_since(start);
    log_request(request, seconds);
    ktd_metrics_request(route_index, request->status, seconds, route_writes(route_index),
                        request->error_code);
}

/* ---- CivetWeb callbacks --------------------------------------------------------------------- */

static void request_init(ktd_request *request, struct mg_connection *connection)
{
    const struct mg_request_info *info = mg_get_request_info(connection);
    memset(request, 0, sizeof *request);
    request->connection = connection;
    request->daemon = info->user_data;
    request->method = info->request_method;
    request->path = info->local_uri_raw;
    request->query = info->query_string;
}

int ktd_route(struct mg_connection *connection)
{
    struct timespec start;
    monotonic_now(&start);
    ktd_request request;
    request_init(&request, connection);
    bool audited = false;
    size_t route_index = ROUTE_COUNT;
    if (ktd_audit_admit(&request, &audited) && (!audited || ktd_rate_admit(&request)))
        route_index = dispatch(&request);
    if (request.status == 0)
        ktd_respond_internal(&request, "a handler that did not answer");
    if (audited) {
        ktd_rate_note(&request);
        ktd_audit_request(&request, route_index);
    }
    finish_request(&request, route_index, &start);
    kt_secret_free(request.body);
    return request.status;
}

static const char *code_for_status(int status)
{
    switch (status) {
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 411: return "length_required";
    case 413: return "too_large";
    case 415: return "unsupported_media_type";
    case 503: return "unavailable";
    case 500: return "internal";
    default: return "bad_request"; /* 400, 505 (not HTTP/1.x), and the rest of CivetWeb's */
    }
}

int ktd_route_http_error(struct mg_connection *connection, int status, const char *message)
{
    struct timespec start;
    monotonic_now(&start);
    ktd_request request;
    /* The request line may not have parsed: take nothing from it (CivetWeb does not even reset
     * its path and query pointers between the requests of a connection). */
    memset(&request, 0, sizeof request);
    request.connection = connection;
    request.daemon = mg_get_request_info(connection)->user_data;
    request.body_unread = true; /* CivetWeb closes the connection after its own refusals */
    ktd_respond_error(&request, status, code_for_status(status), NULL,
                      "the request is not valid HTTP/1.1 (%s)", message != NULL ? message : "");
    finish_request(&request, ROUTE_COUNT, &start);
    return 0;
}
