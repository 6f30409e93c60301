/*
 * metrics.c — GET /metrics: the node's state and its request counters in the Prometheus text
 * exposition format (version 0.0.4), for scraping both nodes of a pair.
 *
 * Counters are kept here with C11 atomics (relaxed: each is an independent count, and a scrape
 * only needs each number to be one that really was), updated by router.c once per request and by
 * db_pool.c once per write sent to keytrustee-db:
 *
 *   keytrustee_http_requests_total{endpoint,method,status}      counter
 *   keytrustee_http_request_duration_seconds{endpoint,method}    histogram
 *   keytrustee_writes_refused_total{reason}                      counter
 *   keytrustee_db_write_duration_seconds                         histogram
 *
 * `endpoint` is a route of router.c with the uuid segment written {uuid} ("unmatched" for paths
 * no route knows), never the raw path: label values must come from a small fixed set, whatever
 * clients send. The node's state is read at scrape time from keytrustee-db's status and the loaded
 * certificate (status.c): keytrustee_up, keytrustee_writable, keytrustee_role, the replication
 * gauges, keytrustee_certificate_expiry_seconds. A gauge keytrustee-db does not report (a
 * standalone node has no peer) is left out rather than given a made-up value. Row counts (orgs,
 * clients, deposits) are not exported: /metrics answers anyone, and they are business data.
 *
 * Names follow Prometheus conventions: the keytrustee_ prefix, base units (seconds), _total on
 * counters, every family introduced by # HELP and # TYPE, histogram buckets cumulative and ending
 * with le="+Inf" equal to _count. tests/tools/prometheus_check.py checks all of that strictly.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define STATUS_SLOTS 600 /* HTTP status codes 0..599 */
#define TEXT_INITIAL (16u * 1024u)
#define TEXT_MAX (4u * 1024u * 1024u)

/* ---- Counters ------------------------------------------------------------------------------- */

static const double bucket_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define BUCKET_COUNT (sizeof bucket_bounds / sizeof bucket_bounds[0])

typedef struct histogram {
    atomic_ulong buckets[BUCKET_COUNT + 1]; /* the last one counts what exceeds every bound */
    atomic_ullong sum_nanoseconds;
} histogram;

static atomic_ulong request_counts[KTD_METRIC_ENDPOINTS][STATUS_SLOTS];
static histogram request_durations[KTD_METRIC_ENDPOINTS];
static histogram db_write_durations;

static const char *const refusal_reasons[] = {"passive", "write_unavailable", "indeterminate",
                                              "disk_full", "unavailable", "fenced"};
#define REFUSAL_COUNT (sizeof refusal_reasons / sizeof refusal_reasons[0])
static atomic_ulong writes_refused[REFUSAL_COUNT];

static void histogram_observe(histogram *target, double seconds)
{
    if (!(seconds >= 0)) /* also catches NaN */
        seconds = 0;
    size_t bucket = 0;
    while (bucket < BUCKET_COUNT && seconds > bucket_bounds[bucket])
        bucket++;
    atomic_fetch_add_explicit(&target->buckets[bucket], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&target->sum_nanoseconds, (unsigned long long)(seconds * 1e9),
                              memory_order_relaxed);
}

void ktd_metrics_request(size_t endpoint, int status, double seconds, bool write,
                         const char *error_code)
{
    if (endpoint >= KTD_METRIC_ENDPOINTS)
        endpoint = KTD_METRIC_ENDPOINTS - 1;
    if (status < 0 || status >= STATUS_SLOTS)
        status = 0;
    atomic_fetch_add_explicit(&request_counts[endpoint][status], 1, memory_order_relaxed);
    histogram_observe(&request_durations[endpoint], seconds);
    if (!write || error_code == NULL)
        return;
    for (size_t index = 0; index < REFUSAL_COUNT; index++)
        if (strcmp(error_code, refusal_reasons[index]) == 0)
            atomic_fetch_add_explicit(&writes_refused[index], 1, memory_order_relaxed);
}

void ktd_metrics_db_write(double seconds)
{
    histogram_observe(&db_write_durations, seconds);
}

/* ---- Text ----------------------------------------------------------------------------------- */

typedef struct text {
    char *data;
    size_t used;
    size_t size;
    bool failed; /* memory ran out or the limit was reached: the scrape answers 500 */
} text;

static void append(text *out, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void append(text *out, const char *format, ...)
{
    for (int tries = 0; tries < 2 && !out->failed; tries++) {
        va_list arguments;
        va_start(arguments, format);
        int written = vsnprintf(out->data + out->used, out->size - out->used, format, arguments);
        va_end(arguments);
        if (written < 0) {
            out->failed = true;
            return;
        }
        if ((size_t)written < out->size - out->used) {
            out->used += (size_t)written;
            return;
        }
        size_t wanted = out->size * 2 > out->used + (size_t)written + 1
                            ? out->size * 2
                            : out->used + (size_t)written + 1;
        char *larger = wanted <= TEXT_MAX ? realloc(out->data, wanted) : NULL;
        if (larger == NULL) {
            out->failed = true;
            return;
        }
        out->data = larger;
        out->size = wanted;
    }
}

static void family(text *out, const char *name, const char *type, const char *help)
{
    append(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A number as Prometheus reads it: integers without a fraction, +Inf/-Inf/NaN spelled its way. */
static void append_value(text *out, double value)
{
    if (isnan(value))
        append(out, "NaN\n");
    else if (isinf(value))
        append(out, "%sInf\n", value > 0 ? "+" : "-");
    else if (value == floor(value) && fabs(value) < 1e15)
        append(out, "%.0f\n", value);
    else
        append(out, "%.9g\n", value);
}

/* A label value with \\, " and newline escaped as the format requires. */
static void append_label_value(text *out, const char *value)
{
    for (const char *character = value; *character != '\0'; character++) {
        if (*character == '\\' || *character == '"')
            append(out, "\\%c", *character);
        else if (*character == '\n')
            append(out, "\\n");
        else
            append(out, "%c", *character);
    }
}

/* The route label: a "*" segment (a deposit uuid) is written "{uuid}". */
static void append_endpoint(text *out, size_t endpoint)
{
    const char *pattern = endpoint < ktd_route_count() ? ktd_route_pattern(endpoint) : "unmatched";
    for (const char *character = pattern; *character != '\0'; character++) {
        if (*character == '*')
            append(out, "{uuid}");
        else
            append(out, "%c", *character);
    }
}

static const char *endpoint_method(size_t endpoint)
{
    return endpoint < ktd_route_count() ? ktd_route_method(endpoint) : "any";
}

/* ---- Request families ----------------------------------------------------------------------- */

static void write_request_counts(text *out)
{
    family(out, "keytrustee_http_requests_total", "counter",
           "HTTPS requests answered, by route, method and status code.");
    for (size_t endpoint = 0; endpoint <= ktd_route_count(); endpoint++) {
        for (int status = 0; status < STATUS_SLOTS; status++) {
            unsigned long count = atomic_load_explicit(&request_counts[endpoint][status],
                                                       memory_order_relaxed);
            if (count == 0)
                continue;
            append(out, "keytrustee_http_requests_total{endpoint=\"");
            append_endpoint(out, endpoint);
            append(out, "\",method=\"%s\",status=\"%d\"} %lu\n", endpoint_method(endpoint),
                   status, count);
        }
    }
}

/* One histogram's samples; `labels` is "" or `name="value",` pairs ending with a comma. */
static void write_histogram(text *out, const char *name, const char *labels,
                            const histogram *source)
{
    unsigned long cumulative = 0;
    for (size_t bucket = 0; bucket <= BUCKET_COUNT; bucket++) {
        cumulative += atomic_load_explicit(&source->buckets[bucket], memory_order_relaxed);
        if (bucket < BUCKET_COUNT)
            append(out, "%s_bucket{%sle=\"%g\"} %lu\n", name, labels, bucket_bounds[bucket],
                   cumulative);
        else
            append(out, "%s_bucket{%sle=\"+Inf\"} %lu\n", name, labels, cumulative);
    }
    size_t label_length = strlen(labels);
    unsigned long long nanoseconds =
        atomic_load_explicit(&source->sum_nanoseconds, memory_order_relaxed);
    append(out, "%s_sum%s%.*s%s ", name, label_length > 0 ? "{" : "",
           label_length > 0 ? (int)label_length - 1 : 0, labels, label_length > 0 ? "}" : "");
    append_value(out, (double)nanoseconds / 1e9);
    append(out, "%s_count%s%.*s%s %lu\n", name, label_length > 0 ? "{" : "",
           label_length > 0 ? (int)label_length - 1 : 0, labels, label_length > 0 ? "}" : "",
           cumulative);
}

static unsigned long histogram_total(const histogram *source)
{
    unsigned long total = 0;
    for (size_t bucket = 0; bucket <= BUCKET_COUNT; bucket++)
        total += atomic_load_explicit(&source->buckets[bucket], memory_order_relaxed);
    return total;
}

static void write_request_durations(text *out)
{
    static const char name[] = "keytrustee_http_request_duration_seconds";
    family(out, name, "histogram",
           "Time from the start of a request to the end of its answer, by route and method.");
    for (size_t endpoint = 0; endpoint <= ktd_route_count(); endpoint++) {
        if (histogram_total(&request_durations[endpoint]) == 0)
            continue;
        text labels = {.data = calloc(1, 256), .size = 256};
        if (labels.data == NULL) {
            out->failed = true;
            return;
        }
        append(&labels, "endpoint=\"");
        append_endpoint(&labels, endpoint);
        append(&labels, "\",method=\"%s\",", endpoint_method(endpoint));
        if (labels.failed)
            out->failed = true;
        else
            write_histogram(out, name, labels.data, &request_durations[endpoint]);
        free(labels.data);
    }
}

static void write_refusals(text *out)
{
    family(out, "keytrustee_writes_refused_total", "counter",
           "Writes (registrations and deposit changes) refused, by reason: passive (sent to the "
           "passive), write_unavailable (the pair is degraded), indeterminate, disk_full, "
           "unavailable (keytrustee-db down), fenced (an old active: another node was promoted).");
    for (size_t index = 0; index < REFUSAL_COUNT; index++)
        append(out, "keytrustee_writes_refused_total{reason=\"%s\"} %lu\n",
               refusal_reasons[index],
               atomic_load_explicit(&writes_refused[index], memory_order_relaxed));
}

static void write_db_durations(text *out)
{
    static const char name[] = "keytrustee_db_write_duration_seconds";
    family(out, name, "histogram",
           "Time keytrustee-db took to answer a write sent by this keytrusteed: queueing, the "
           "commit and, on an active, its synchronous replication to the passive.");
    write_histogram(out, name, "", &db_write_durations);
}

/* ---- Node families -------------------------------------------------------------------------- */

static void gauge(text *out, const char *name, const char *help, double value)
{
    family(out, name, "gauge", help);
    append(out, "%s ", name);
    append_value(out, value);
}

/* A gauge from a number or boolean member of the replication object, when it is there. */
static void replication_gauge(text *out, const json_t *replication, const char *member,
                              const char *name, const char *help, double scale)
{
    const json_t *value = json_object_get(replication, member);
    if (json_is_number(value))
        gauge(out, name, help, json_number_value(value) * scale);
    else if (json_is_boolean(value))
        gauge(out, name, help, json_is_true(value) ? 1 : 0);
}

static void write_roles(text *out, const char *current)
{
    static const char *const roles[] = {"standalone", "active", "passive"};
    family(out, "keytrustee_role", "gauge",
           "1 for the role keytrustee-db reports for this node, 0 for the others.");
    for (size_t index = 0; index < sizeof roles / sizeof roles[0]; index++) {
        append(out, "keytrustee_role{role=\"");
        append_label_value(out, roles[index]);
        append(out, "\"} %d\n", strcmp(roles[index], current) == 0 ? 1 : 0);
    }
}

/* The last backup keytrustee-db reports, when there was one. */
static void write_backup(text *out, const json_t *backup)
{
    const json_t *when = json_object_get(backup, "time");
    const char *result = json_string_value(json_object_get(backup, "result"));
    if (!json_is_integer(when) || result == NULL)
        return;
    gauge(out, "keytrustee_last_backup_timestamp_seconds",
          "When the last backup (ktadmin backup) ran, in unix seconds.",
          (double)json_integer_value(when));
    gauge(out, "keytrustee_last_backup_success", "1 when the last backup succeeded, else 0.",
          strcmp(result, "ok") == 0 ? 1 : 0);
}

static void write_database(text *out, const json_t *status)
{
    bool up = status != NULL;
    gauge(out, "keytrustee_up", "1 when this node serves reads (keytrustee-db answers), else 0.",
          up ? 1 : 0);
    gauge(out, "keytrustee_writable", "1 when this node accepts writes now, else 0.",
          up && json_is_true(json_object_get(status, "writable")) ? 1 : 0);
    const char *role = json_string_value(json_object_get(status, "role"));
    if (role != NULL)
        write_roles(out, role);
    write_backup(out, json_object_get(status, "last_backup"));
    const json_t *replication = json_object_get(status, "replication");
    if (!json_is_object(replication))
        return;
    replication_gauge(out, replication, "peer_connected", "keytrustee_peer_connected",
                      "1 when the replication peer is connected, else 0.", 1);
    replication_gauge(out, replication, "epoch", "keytrustee_replication_epoch",
                      "This node's replication epoch.", 1);
    replication_gauge(out, replication, "synchronous", "keytrustee_replication_synchronous",
                      "1 when commits wait for the passive, else 0.", 1);
    replication_gauge(out, replication, "lag_transactions",
                      "keytrustee_replication_lag_transactions",
                      "Transactions the passive is behind the active.", 1);
    replication_gauge(out, replication, "lag_ms", "keytrustee_replication_lag_seconds",
                      "Age of the oldest transaction the passive does not have or has not "
                      "applied.", 1e-3);
}

static void write_node(text *out, const json_t *status)
{
    family(out, "keytrustee_build_info", "gauge", "Always 1; the version is a label.");
    append(out, "keytrustee_build_info{version=\"");
    append_label_value(out, KT_VERSION);
    append(out, "\"} 1\n");
    gauge(out, "keytrustee_start_time_seconds", "When keytrusteed started, in unix seconds.",
          (double)ktd_started_at());
    write_database(out, status);
    ktd_certificate certificate;
    if (ktd_status_certificate(&certificate)) {
        gauge(out, "keytrustee_certificate_expiry_seconds",
              "Seconds until the served TLS certificate expires (negative once expired).",
              (double)(certificate.not_after - (int64_t)time(NULL)));
        gauge(out, "keytrustee_certificate_expiry_timestamp_seconds",
              "When the served TLS certificate expires, in unix seconds.",
              (double)certificate.not_after);
    }
}

void ktd_handle_metrics(ktd_request *request, const char *argument)
{
    (void)argument;
    char error[160];
    if (ktd_body_read(request, KTD_BODY_NONE) != 0)
        return;
    if (ktd_query_parse(request->query, NULL, 0, NULL, error, sizeof error) != 0) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", error);
        return;
    }
    json_t *status = ktd_status_fetch(request->daemon);
    text out = {.data = malloc(TEXT_INITIAL), .size = TEXT_INITIAL};
    out.failed = out.data == NULL;
    write_node(&out, status);
    write_request_counts(&out);
    write_request_durations(&out);
    write_refusals(&out);
    write_db_durations(&out);
    json_decref(status);
    if (out.failed)
        ktd_respond_internal(request, "formatting /metrics");
    else
        ktd_respond(request, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.used,
                    NULL, 0);
    free(out.data);
}
