/*
 * status.c — what keytrusteed knows about its node, for monitoring: GET /v1/status, the facts
 * /metrics reports, and the monitor thread that logs every change of role, replication state,
 * peer connection and writability that keytrustee-db reports.
 *
 * Sources
 *   - keytrustee-db's status op (app/common/app.h): role, writable and why not, counts, and the
 *     replication object (state, epoch, peer, positions, lag). Fetched on a connection of its own
 *     for each /v1/status or /metrics request, so that a database that is down shows up as
 *     "database": "down" in the answer instead of turning the request into a 503.
 *   - The certificate new connections get (server.c calls ktd_status_note_certificate after the
 *     start and after every SIGHUP reload that was accepted), not the file on disk, which may
 *     hold a replacement that was refused.
 *   - The time keytrusteed started.
 *
 * /v1/status answers anyone, like /v1/health: it holds no secret, and a monitor or a load balancer
 * must be able to read it without a client key. The row counts (orgs, clients, deposits) are
 * business data rather than health data, so they are included only when the request comes from
 * the node itself (a loopback address); elsewhere "counts" is null. So are the last backup's path
 * and message (they name server directories); its time and result are for everyone.
 *
 * The monitor thread asks keytrustee-db for its status once a second and logs each change it sees,
 * with the reason keytrustee-db gives: a node turning passive, a peer lost or back, writes refused
 * or accepted again, keytrustee-db stopping or coming back. Only this thread compares states, so
 * the log tells the changes in the order they were seen.
 */
#include <mbedtls/x509_crt.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define STATUS_TIMEOUT_MS 5000
#define MONITOR_PERIOD_MS 1000

static pthread_mutex_t facts_lock = PTHREAD_MUTEX_INITIALIZER;
static ktd_certificate loaded_certificate; /* under facts_lock */
static bool certificate_known;             /* under facts_lock */
static int64_t started_at;                 /* set once, before any thread reads it */

/* ---- The certificate ------------------------------------------------------------------------ */

/* mbedTLS's broken-down UTC time as unix seconds. */
static int64_t unix_time(const mbedtls_x509_time *when)
{
    struct tm parts;
    memset(&parts, 0, sizeof parts);
    parts.tm_year = when->year - 1900;
    parts.tm_mon = when->mon - 1;
    parts.tm_mday = when->day;
    parts.tm_hour = when->hour;
    parts.tm_min = when->min;
    parts.tm_sec = when->sec;
    return (int64_t)timegm(&parts);
}

void ktd_status_note_certificate(const kt_secret *pem)
{
    /* mbedTLS parses PEM only with its terminating NUL counted; the key in front is skipped. */
    kt_secret *text = kt_secret_new(pem->length + 1);
    mbedtls_x509_crt chain;
    mbedtls_x509_crt_init(&chain);
    if (text != NULL) {
        memcpy(text->bytes, pem->bytes, pem->length);
        if (mbedtls_x509_crt_parse(&chain, text->bytes, text->length) == 0) {
            ktd_certificate noted = {.not_after = unix_time(&chain.valid_to)};
            if (mbedtls_x509_dn_gets(noted.subject, sizeof noted.subject, &chain.subject) < 0)
                snprintf(noted.subject, sizeof noted.subject, "?");
            pthread_mutex_lock(&facts_lock);
            loaded_certificate = noted;
            certificate_known = true;
            pthread_mutex_unlock(&facts_lock);
        } else {
            kt_log(KT_LOG_WARNING, "status: cannot read the served certificate's expiry");
        }
    }
    mbedtls_x509_crt_free(&chain);
    kt_secret_free(text);
}

bool ktd_status_certificate(ktd_certificate *certificate)
{
    pthread_mutex_lock(&facts_lock);
    bool known = certificate_known;
    if (known)
        *certificate = loaded_certificate;
    pthread_mutex_unlock(&facts_lock);
    return known;
}

int64_t ktd_started_at(void)
{
    return started_at;
}

/* ---- keytrustee-db's status ----------------------------------------------------------------- */

/* One status call on `connection`; the response when it is ok, else NULL. */
static json_t *call_status(kt_db_connection *connection, char *error, size_t error_size)
{
    json_t *request = json_pack("{s:s}", "op", "status");
    json_t *response = NULL;
    if (request == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    int called = kt_db_call(connection, request, STATUS_TIMEOUT_MS, &response, error, error_size);
    json_decref(request);
    if (called != 0)
        return NULL;
    if (!json_is_true(json_object_get(response, "ok"))) {
        const char *message = json_string_value(json_object_get(response, "message"));
        snprintf(error, error_size, "keytrustee-db refused its status: %s",
                 message != NULL ? message : "no message");
        json_decref(response);
        return NULL;
    }
    return response;
}

json_t *ktd_status_fetch(const ktd_daemon *daemon)
{
    char error[256] = "";
    kt_db_connection *connection = kt_db_connect(&daemon->paths, error, sizeof error);
    if (connection == NULL)
        return NULL;
    json_t *status = call_status(connection, error, sizeof error);
    kt_db_disconnect(connection);
    if (status == NULL)
        kt_log(KT_LOG_DEBUG, "status: %s", error);
    return status;
}

/* ---- The /v1/status answer ------------------------------------------------------------------ */

static bool from_loopback(const ktd_request *request)
{
    const char *address = mg_get_request_info(request->connection)->remote_addr;
    return strncmp(address, "127.", 4) == 0 || strcmp(address, "::1") == 0 ||
           strncmp(address, "::ffff:127.", 11) == 0;
}

/* A copy of object[key], or JSON null when it is absent or an empty string. */
static json_t *member_or_null(const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL || (json_is_string(value) && json_string_length(value) == 0))
        return json_null();
    return json_deep_copy(value);
}

/* role, database, serves_reads, writable, reason, reason_message, active_url. */
static json_t *database_fields(const json_t *db)
{
    if (db == NULL)
        return json_pack("{s:n, s:s, s:b, s:b, s:s, s:s, s:n}", "role", "database", "down",
                         "serves_reads", 0, "writable", 0, "reason", "database_down",
                         "reason_message",
                         "keytrustee-db does not answer on this node: it serves neither reads "
                         "nor writes", "active_url");
    const json_t *replication = json_object_get(db, "replication");
    return json_pack("{s:o, s:s, s:b, s:o, s:o, s:o, s:o}", "role", member_or_null(db, "role"),
                     "database", "up", "serves_reads", 1, "writable",
                     json_boolean(json_is_true(json_object_get(db, "writable"))), "reason",
                     member_or_null(db, "reason"), "reason_message",
                     member_or_null(replication, "reason"), "active_url",
                     member_or_null(db, "active_url"));
}

/* state, epoch, synchronous, peer, position, peer_position, lag_transactions, lag_seconds. */
static json_t *replication_fields(const json_t *db)
{
    const json_t *replication = json_object_get(db, "replication");
    const json_t *lag_ms = json_object_get(replication, "lag_ms");
    json_t *lag_seconds =
        json_is_number(lag_ms) ? json_real(json_number_value(lag_ms) / 1000.0) : json_null();
    return json_pack("{s:o, s:o, s:o, s:{s:o, s:o}, s:o, s:o, s:o, s:o}", "state",
                     member_or_null(replication, "state"), "epoch",
                     member_or_null(replication, "epoch"), "synchronous",
                     member_or_null(replication, "synchronous"), "peer", "connected",
                     member_or_null(replication, "peer_connected"), "address",
                     member_or_null(replication, "peer_address"), "position",
                     member_or_null(replication, "position"), "peer_position",
                     member_or_null(replication, "peer_position"), "lag_transactions",
                     member_or_null(replication, "lag_transactions"), "lag_seconds", lag_seconds);
}

/* keytrustee-db's last_backup: its time and result for anyone, its path and message (which name
 * server directories) for loopback callers only; null when there was no backup. */
static json_t *last_backup_field(const json_t *db, bool local)
{
    const json_t *backup = json_object_get(db, "last_backup");
    if (!json_is_object(backup))
        return json_null();
    if (local)
        return json_deep_copy(backup);
    return json_pack("{s:o, s:o}", "time", member_or_null(backup, "time"), "result",
                     member_or_null(backup, "result"));
}

static json_t *certificate_field(void)
{
    ktd_certificate certificate;
    if (!ktd_status_certificate(&certificate))
        return json_null();
    return json_pack("{s:s, s:I, s:I}", "subject", certificate.subject, "not_after",
                     (json_int_t)certificate.not_after, "expires_in_seconds",
                     (json_int_t)(certificate.not_after - (int64_t)time(NULL)));
}

/* uptime, version, fingerprint, certificate, counts, last_backup. */
static json_t *node_fields(const ktd_request *request, const json_t *db)
{
    int64_t now = (int64_t)time(NULL);
    bool local = from_loopback(request);
    json_t *counts = db != NULL && local ? member_or_null(db, "counts") : json_null();
    return json_pack("{s:I, s:I, s:s, s:s, s:o, s:o, s:o}", "started", (json_int_t)started_at,
                     "uptime_seconds", (json_int_t)(now - started_at), "version", KT_VERSION,
                     "server_fingerprint", request->daemon->keys->fingerprint, "certificate",
                     certificate_field(), "counts", counts, "last_backup",
                     last_backup_field(db, local));
}

static json_t *status_body(const ktd_request *request, const json_t *db)
{
    json_t *body = database_fields(db);
    json_t *replication = replication_fields(db);
    json_t *node = node_fields(request, db);
    if (body == NULL || replication == NULL || node == NULL ||
        json_object_update(body, replication) != 0 || json_object_update(body, node) != 0) {
        json_decref(body);
        body = NULL;
    }
    json_decref(replication);
    json_decref(node);
    return body;
}

void ktd_handle_status(ktd_request *request, const char *argument)
{
    (void)argument;
    char error[160];
    if (ktd_body_read(request, KTD_BODY_NONE) != 0)
        return;
    if (ktd_query_parse(request->query, NULL, 0, NULL, error, sizeof error) != 0) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", error);
        return;
    }
    json_t *db = ktd_status_fetch(request->daemon);
    json_t *body = status_body(request, db);
    if (body == NULL)
        ktd_respond_internal(request, "building the status answer");
    else
        ktd_respond_json(request, 200, body);
    json_decref(body);
    json_decref(db);
}

/* ---- The monitor thread --------------------------------------------------------------------- */

/* What the monitor saw last: the fields whose changes are logged. */
typedef struct observation {
    bool database_up;
    char role[16];
    char state[40];
    int peer_connected; /* -1: not reported (standalone) */
    char peer_address[64];
    bool writable;
    char reason[160];   /* why not writable: code, and replication's text when it has one */
} observation;

static struct {
    pthread_t thread;
    bool running;
    bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    const ktd_daemon *daemon;
    observation last;
    bool observed;
} monitor = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void copy_member(char *out, size_t out_size, const json_t *object, const char *key,
                        const char *fallback)
{
    const char *value = json_string_value(json_object_get(object, key));
    snprintf(out, out_size, "%s", value != NULL ? value : fallback);
}

static void observe(const json_t *db, observation *seen)
{
    memset(seen, 0, sizeof *seen);
    seen->database_up = db != NULL;
    seen->peer_connected = -1;
    if (db == NULL)
        return;
    const json_t *replication = json_object_get(db, "replication");
    copy_member(seen->role, sizeof seen->role, db, "role", "?");
    copy_member(seen->state, sizeof seen->state, replication, "state", "?");
    copy_member(seen->peer_address, sizeof seen->peer_address, replication, "peer_address", "");
    const json_t *connected = json_object_get(replication, "peer_connected");
    if (json_is_boolean(connected))
        seen->peer_connected = json_is_true(connected) ? 1 : 0;
    seen->writable = json_is_true(json_object_get(db, "writable"));
    if (!seen->writable) {
        char code[40], text[112];
        copy_member(code, sizeof code, db, "reason", "unknown");
        copy_member(text, sizeof text, replication, "reason", "");
        snprintf(seen->reason, sizeof seen->reason, "%s%s%s", code, text[0] != '\0' ? ": " : "",
                 text);
    }
}

static void log_first(const observation *now)
{
    if (!now->database_up) {
        kt_log(KT_LOG_WARNING, "node status: keytrustee-db does not answer; this node serves "
               "neither reads nor writes until it does");
        return;
    }
    kt_log(KT_LOG_INFO, "node status: role %s, replication %s, peer %s, %s%s", now->role,
           now->state,
           now->peer_connected < 0 ? "none" : now->peer_connected ? "connected" : "not connected",
           now->writable ? "writable" : "writes refused: ", now->reason);
}

static void log_peer_change(const observation *before, const observation *now)
{
    if (now->peer_connected == before->peer_connected)
        return;
    if (now->peer_connected == 1)
        kt_log(KT_LOG_INFO, "peer connected%s%s (replication %s)",
               now->peer_address[0] != '\0' ? " from " : "", now->peer_address, now->state);
    else if (now->peer_connected == 0)
        kt_log(KT_LOG_WARNING, "peer %s lost (replication %s%s%s)",
               before->peer_address[0] != '\0' ? before->peer_address : "connection",
               now->state, now->writable ? "" : "; ", now->reason);
}

static void log_changes(const observation *before, const observation *now)
{
    if (before->database_up != now->database_up) {
        if (now->database_up)
            kt_log(KT_LOG_INFO, "keytrustee-db answers again: role %s, %s%s", now->role,
                   now->writable ? "writable" : "writes refused: ", now->reason);
        else
            kt_log(KT_LOG_WARNING, "keytrustee-db stopped answering: this node serves neither "
                   "reads nor writes until it is back");
        return;
    }
    if (!now->database_up)
        return;
    if (strcmp(before->role, now->role) != 0)
        kt_log(KT_LOG_WARNING, "role changed: %s -> %s", before->role, now->role);
    if (strcmp(before->state, now->state) != 0)
        kt_log(KT_LOG_INFO, "replication state: %s -> %s%s%s%s", before->state, now->state,
               now->writable ? "" : " (", now->writable ? "" : now->reason,
               now->writable ? "" : ")");
    log_peer_change(before, now);
    if (before->writable != now->writable)
        kt_log(now->writable ? KT_LOG_INFO : KT_LOG_WARNING, "%s%s",
               now->writable ? "writes accepted again" : "writes refused from now on: ",
               now->reason);
    else if (!now->writable && strcmp(before->reason, now->reason) != 0)
        kt_log(KT_LOG_WARNING, "writes still refused, now because: %s", now->reason);
}

/* Fetches the status on the monitor's connection (reconnecting as needed) and logs changes. */
static void poll_once(kt_db_connection **connection)
{
    char error[256] = "";
    if (*connection == NULL)
        *connection = kt_db_connect(&monitor.daemon->paths, error, sizeof error);
    json_t *db = *connection != NULL ? call_status(*connection, error, sizeof error) : NULL;
    if (db == NULL && *connection != NULL) {
        kt_db_disconnect(*connection);
        *connection = NULL;
    }
    observation now;
    observe(db, &now);
    json_decref(db);
    if (!monitor.observed)
        log_first(&now);
    else
        log_changes(&monitor.last, &now);
    monitor.last = now;
    monitor.observed = true;
}

/* Waits one period, or less when asked to stop; returns true when stopping. */
static bool wait_period(void)
{
    struct timespec until;
    if (clock_gettime(CLOCK_REALTIME, &until) != 0)
        return true;
    until.tv_sec += MONITOR_PERIOD_MS / 1000;
    pthread_mutex_lock(&monitor.lock);
    while (!monitor.stopping) {
        if (pthread_cond_timedwait(&monitor.wake, &monitor.lock, &until) != 0)
            break; /* timed out */
    }
    bool stopping = monitor.stopping;
    pthread_mutex_unlock(&monitor.lock);
    return stopping;
}

static void *monitor_main(void *unused)
{
    (void)unused;
    kt_db_connection *connection = NULL;
    do {
        poll_once(&connection);
    } while (!wait_period());
    kt_db_disconnect(connection);
    return NULL;
}

int ktd_monitor_start(const ktd_daemon *daemon)
{
    started_at = (int64_t)time(NULL);
    monitor.daemon = daemon;
    monitor.stopping = false;
    int failed = pthread_create(&monitor.thread, NULL, monitor_main, NULL);
    if (failed != 0) {
        kt_log(KT_LOG_ERROR, "cannot start the status monitor thread (%s); role and peer changes "
               "will not be logged", strerror(failed));
        return -1;
    }
    monitor.running = true;
    return 0;
}

void ktd_monitor_stop(void)
{
    if (!monitor.running)
        return;
    pthread_mutex_lock(&monitor.lock);
    monitor.stopping = true;
    pthread_cond_signal(&monitor.wake);
    pthread_mutex_unlock(&monitor.lock);
    int failed = pthread_join(monitor.thread, NULL);
    if (failed != 0)
        kt_log(KT_LOG_WARNING, "status monitor thread: join failed (%s)", strerror(failed));
    monitor.running = false;
}
