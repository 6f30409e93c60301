/*
 * db_pool.c — keytrusteed's only way to the data: admin-socket calls to keytrustee-db.
 *
 * Each CivetWeb worker thread keeps one kt_db_connection in a pthread key (closed by the key's
 * destructor when the thread ends), so requests never wait for each other's connection. When a
 * call fails on a connection that had worked before — keytrustee-db was restarted, say — the
 * connection is dropped and the call is made once more on a new one. A failure on a new connection
 * means keytrustee-db is not there: 503 "unavailable".
 *
 * Repeating a write is only safe when its first answer was lost, not its effect: a repeated
 * deposit.put or client.add may then find its own row (conflict) and a repeated purge may find
 * nothing (not_found). Those answers to a repeated write therefore become "indeterminate", as does
 * a write whose connection broke and could not be replaced: the write may or may not have been
 * committed, and the client must read it back.
 *
 * This file also turns keytrustee-db's error codes into the HTTP answers of docs/api.md.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define UNAVAILABLE_MESSAGE "the database service (keytrustee-db) is not running on this node"
#define INDETERMINATE_MESSAGE                                                                     \
    "the write may or may not have been committed; the nodes settle it when they reconnect; "    \
    "read it back before retrying"

static pthread_key_t connection_key;
static pthread_once_t connection_key_once = PTHREAD_ONCE_INIT;
static int connection_key_status = -1;

static void close_thread_connection(void *connection)
{
    kt_db_disconnect(connection);
}

static void create_connection_key(void)
{
    connection_key_status = pthread_key_create(&connection_key, close_thread_connection);
}

/* This thread's connection, connecting when there is none (*fresh is then true). */
static kt_db_connection *thread_connection(const kt_paths *paths, bool *fresh, char *error,
                                           size_t error_size)
{
    kt_db_connection *connection = pthread_getspecific(connection_key);
    *fresh = connection == NULL;
    if (connection != NULL)
        return connection;
    connection = kt_db_connect(paths, error, error_size);
    if (connection == NULL)
        return NULL;
    if (pthread_setspecific(connection_key, connection) != 0) {
        kt_db_disconnect(connection);
        snprintf(error, error_size, "cannot keep the connection for this thread");
        return NULL;
    }
    return connection;
}

static void drop_thread_connection(void)
{
    kt_db_connection *connection = pthread_getspecific(connection_key);
    if (pthread_setspecific(connection_key, NULL) == 0)
        kt_db_disconnect(connection);
}

static const char *operation_of(const json_t *db_request)
{
    const char *op = json_string_value(json_object_get(db_request, "op"));
    return op != NULL ? op : "?";
}

/* A repeated write that finds its own effect cannot tell whether the first attempt committed. */
static void settle_repeated_write(json_t **response)
{
    const char *code = ktd_db_error_code(*response);
    if (code == NULL || (strcmp(code, "conflict") != 0 && strcmp(code, "not_found") != 0))
        return;
    json_t *indeterminate = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", "indeterminate",
                                      "message", INDETERMINATE_MESSAGE);
    if (indeterminate == NULL)
        return;
    json_decref(*response);
    *response = indeterminate;
}

static int respond_lost(ktd_request *request, ktd_db_kind kind, bool sent)
{
    if (kind == KTD_DB_WRITE && sent)
        ktd_respond_error(request, 503, "indeterminate", NULL, INDETERMINATE_MESSAGE);
    else
        ktd_respond_error(request, 503, "unavailable", NULL, UNAVAILABLE_MESSAGE);
    return -1;
}

/* kt_db_call, timing writes for /metrics (keytrustee_db_write_duration_seconds). */
static int call_timed(kt_db_connection *connection, const json_t *db_request, ktd_db_kind kind,
                      json_t **response, char *error, size_t error_size)
{
    struct timespec start, end;
    bool timed = kind == KTD_DB_WRITE && clock_gettime(CLOCK_MONOTONIC, &start) == 0;
    int result = kt_db_call(connection, db_request, KTD_DB_TIMEOUT_MS, response, error,
                            error_size);
    if (timed && result == 0 && clock_gettime(CLOCK_MONOTONIC, &end) == 0)
        ktd_metrics_db_write((double)(end.tv_sec - start.tv_sec) +
                             (double)(end.tv_nsec - start.tv_nsec) / 1e9);
    return result;
}

int ktd_db_call(ktd_request *request, const json_t *db_request, ktd_db_kind kind,
                json_t **response)
{
    char error[256] = "";
    bool sent = false; /* a write went out on a connection that then broke */
    *response = NULL;
    if (pthread_once(&connection_key_once, create_connection_key) != 0 ||
        connection_key_status != 0)
        return ktd_respond_internal(request, "creating the per-thread connection key");
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh;
        kt_db_connection *connection =
            thread_connection(&request->daemon->paths, &fresh, error, sizeof error);
        if (connection == NULL)
            break;
        if (call_timed(connection, db_request, kind, response, error, sizeof error) == 0) {
            if (attempt > 0 && kind == KTD_DB_WRITE)
                settle_repeated_write(response);
            return 0;
        }
        drop_thread_connection();
        sent = true;
        kt_log(KT_LOG_WARNING, "keytrustee-db call %s failed: %s", operation_of(db_request),
               error);
        if (fresh)
            break;
    }
    kt_log(KT_LOG_WARNING, "keytrustee-db is unreachable: %s", error);
    return respond_lost(request, kind, sent);
}

const char *ktd_db_error_code(const json_t *response)
{
    if (json_is_true(json_object_get(response, "ok")))
        return NULL;
    const char *code = json_string_value(json_object_get(response, "error"));
    return code != NULL ? code : "internal";
}

static void respond_passive(ktd_request *request, const json_t *response)
{
    const char *active = json_string_value(json_object_get(response, "active_url"));
    json_t *extra = active != NULL ? json_pack("{s:s}", "active", active) : NULL;
    ktd_respond_error(request, 503, "passive", extra,
                      "this node is the passive; send the request to the active%s%s",
                      active != NULL ? " at " : "", active != NULL ? active : "");
    json_decref(extra);
}

static const char *db_message(const json_t *response)
{
    const char *message = json_string_value(json_object_get(response, "message"));
    return message != NULL ? message : "no message";
}

void ktd_respond_db_error(ktd_request *request, const json_t *response, const char *not_found)
{
    const char *code = ktd_db_error_code(response);
    if (code == NULL) {
        ktd_respond_internal(request, "an accepted keytrustee-db answer taken for a refusal");
    } else if (strcmp(code, "bad_request") == 0) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", db_message(response));
    } else if (strcmp(code, "not_found") == 0) {
        ktd_respond_error(request, 404, "not_found", NULL, "%s", not_found);
    } else if (strcmp(code, "conflict") == 0) {
        ktd_respond_error(request, 409, "conflict", NULL, "%s", db_message(response));
    } else if (strcmp(code, "passive") == 0) {
        respond_passive(request, response);
    } else if (strcmp(code, "write_unavailable") == 0) {
        ktd_respond_error(request, 503, "write_unavailable", NULL,
                          "the pair cannot make a write durable on both nodes now (a node is "
                          "down); existing keys can still be read; retry later");
    } else if (strcmp(code, "fenced") == 0) {
        ktd_respond_error(request, 503, "fenced", NULL, "%s", db_message(response));
    } else if (strcmp(code, "indeterminate") == 0) {
        ktd_respond_error(request, 503, "indeterminate", NULL, INDETERMINATE_MESSAGE);
    } else if (strcmp(code, "disk_full") == 0) {
        ktd_respond_error(request, 507, "disk_full", NULL,
                          "the server's disk is full; the write was not stored");
    } else {
        kt_log(KT_LOG_ERROR, "keytrustee-db refused a request with %s: %s", code,
               db_message(response));
        ktd_respond_error(request, 500, "internal", NULL,
                          "internal error in keytrustee-db; details are in its log");
    }
}

json_t *ktd_db_request(ktd_request *request, const char *op)
{
    json_t *db_request = json_pack("{s:s}", "op", op);
    if (db_request == NULL)
        ktd_respond_internal(request, "building a keytrustee-db request");
    return db_request;
}

int ktd_respond_internal(ktd_request *request, const char *what)
{
    kt_log(KT_LOG_ERROR, "internal error: %s failed", what);
    ktd_respond_error(request, 500, "internal", NULL,
                      "internal error; details are in the keytrusteed log");
    return -1;
}
