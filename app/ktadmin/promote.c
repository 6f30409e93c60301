/*
 * promote.c — `ktadmin promote [--force]` on the passive, `ktadmin switchover [--new-active-url
 * URL]` on the active: the two ways a node changes role (app/keytrustee-db/role_change.c does the
 * work inside keytrustee-db; replication/promote.c settles the replication state).
 *
 * promote     the passive becomes the active under a new epoch, keeping every transaction that
 *             reached it. Refused while the active still answers (connected to this passive, or
 *             its replication port accepts a connection) unless --force: two actives must never
 *             take writes. The new active starts asynchronous (no passive yet); the old host is
 *             rebuilt with `ktadmin init-slave --master THIS_HOST` and then
 *             `ktadmin enable-synchronous-replication` is run here.
 * switchover  on a healthy synchronous pair: the active stops taking writes (they are answered
 *             "passive", naming the new active, so clients with both URLs follow), waits until the
 *             passive has acknowledged everything, hands over, and restarts as the passive of the
 *             new active, which starts synchronous under a new epoch.
 * Both send one admin op and then follow keytrustee-db's restart through its status until the role
 * changed (or the change reported why it failed), and print the new role and epoch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"

#define CALL_TIMEOUT_MS     20000
#define ROLE_WAIT_POLLS     600 /* x 100 ms */
#define SYNC_WAIT_POLLS     600

static const char promote_usage[] =
    "usage: ktadmin [--confdir DIR] promote [--force]\n"
    "  --force   promote even though the active still answers (it is fenced by the new epoch)\n";

static const char switchover_usage[] =
    "usage: ktadmin [--confdir DIR] switchover [--new-active-url URL]\n"
    "  --new-active-url URL   the passive's URL, where this node sends writers once it is the\n"
    "                         passive; its host is where this node then connects for\n"
    "                         replication (default https://SLAVE:PORT: SLAVE from keytrustee-db.conf,\n"
    "                         PORT from this node's keytrustee.conf). Give it exactly as clients\n"
    "                         were registered with (--passive-server), so that they follow.\n";

/* One call to keytrustee-db; the response (ok or not), or NULL after reporting. */
static json_t *call(const kt_paths *paths, json_t *request, bool quiet)
{
    char error[PATH_MAX + 256];
    json_t *response = NULL;
    kt_db_connection *connection = kt_db_connect(paths, error, sizeof error);
    if (connection == NULL) {
        if (!quiet)
            ktadmin_fail("%s", error);
        json_decref(request);
        return NULL;
    }
    if (request != NULL &&
        kt_db_call(connection, request, CALL_TIMEOUT_MS, &response, error, sizeof error) != 0) {
        if (!quiet)
            ktadmin_fail("keytrustee-db did not answer: %s", error);
        response = NULL;
    }
    json_decref(request);
    kt_db_disconnect(connection);
    return response;
}

static const char *text_of(const json_t *object, const char *key)
{
    const char *text = json_string_value(json_object_get(object, key));
    return text != NULL ? text : "";
}

/* Sends the op; 0 when keytrustee-db accepted it. */
static int send_op(const kt_paths *paths, json_t *request)
{
    json_t *response = call(paths, request, false);
    if (response == NULL)
        return -1;
    int result = 0;
    if (!json_is_true(json_object_get(response, "ok"))) {
        ktadmin_fail("%s", text_of(response, "message"));
        result = -1;
    }
    json_decref(response);
    return result;
}

/* Polls the status until the node runs with `role` (and, when `state` is given, its replication
 * is in that state). Returns the status, or NULL after reporting. */
static json_t *wait_for(const kt_paths *paths, const char *role, const char *state, int polls)
{
    for (int poll = 0; poll < polls; poll++) {
        json_t *status = call(paths, json_pack("{s:s}", "op", "status"), true);
        if (status != NULL) {
            const char *error = text_of(status, "role_change_error");
            if (error[0] != '\0') {
                ktadmin_fail("the role change failed, the node runs as the %s again: %s",
                             text_of(status, "role"), error);
                json_decref(status);
                return NULL;
            }
            json_t *replication = json_object_get(status, "replication");
            if (strcmp(text_of(status, "role"), role) == 0 &&
                (state == NULL || strcmp(text_of(replication, "state"), state) == 0))
                return status;
            json_decref(status);
        }
        (void)usleep(100000);
    }
    ktadmin_fail("keytrustee-db did not come back as the %s%s%s within %d s; see its log "
                 "(logs/keytrustee-db.log)", role, state != NULL ? " in state " : "",
                 state != NULL ? state : "", polls / 10);
    return NULL;
}

static json_int_t epoch_of(const json_t *status)
{
    return json_integer_value(json_object_get(json_object_get(status, "replication"), "epoch"));
}

/* ---- promote ---------------------------------------------------------------------------------- */

int ktadmin_promote(ktadmin_context *context, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"force", no_argument, NULL, 'f'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool force = false;
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'f': force = true; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(promote_usage, stdout); return KTADMIN_EXIT_OK;
        default: ktadmin_option_error("promote", promote_usage, result, argv);
            return KTADMIN_EXIT_USAGE;
        }
    }
    if (ktadmin_no_operands("promote", promote_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_EXIT_USAGE;
    kt_paths paths;
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    if (send_op(&paths, json_pack("{s:s, s:b}", "op", "replication.promote", "force", force)) != 0)
        return KTADMIN_EXIT_FAILURE;
    json_t *status = wait_for(&paths, "active", NULL, ROLE_WAIT_POLLS);
    if (status == NULL)
        return KTADMIN_EXIT_FAILURE;
    json_t *position = json_object_get(json_object_get(status, "replication"), "position");
    printf("Promoted: this node is the active at epoch %lld, transaction %lld. It takes writes "
           "alone until a passive follows it: rebuild the old host with `ktadmin init-slave "
           "--master THIS_HOST`, then run `ktadmin enable-synchronous-replication` here.\n",
           (long long)epoch_of(status),
           (long long)json_integer_value(json_object_get(position, "txid")));
    json_decref(status);
    return KTADMIN_EXIT_OK;
}

/* ---- switchover ------------------------------------------------------------------------------- */

/* https://SLAVE:PORT: SLAVE from keytrustee-db.conf (`db --bootstrap --slave`), PORT from this
 * node's keytrustee.conf (both nodes serve on the same port in the seed's procedure). */
static int default_url(const kt_paths *paths, char *url, size_t url_size)
{
    char path[PATH_MAX], db_path[PATH_MAX], error[PATH_MAX + 256];
    kt_config *config = NULL, *db_config = NULL;
    long port = 0;
    int result = -1;
    if (kt_path_join(path, sizeof path, paths->confdir, KT_CONF_FILE) != 0 ||
        kt_path_join(db_path, sizeof db_path, paths->dbdir, KT_DB_CONF_FILE) != 0 ||
        kt_config_load(path, false, &config, error, sizeof error) != 0 ||
        kt_config_get_long(config, "port", KT_DEFAULT_HTTPS_PORT, 1, 65535, &port, error,
                           sizeof error) != 0 ||
        kt_config_load(db_path, false, &db_config, error, sizeof error) != 0) {
        ktadmin_fail("%s; give the passive's URL with --new-active-url", error);
    } else {
        const char *slave = kt_config_get(db_config, "slave", "");
        bool ipv6 = strchr(slave, ':') != NULL;
        int written = snprintf(url, url_size, "https://%s%s%s:%ld", ipv6 ? "[" : "", slave,
                               ipv6 ? "]" : "", port);
        if (slave[0] == '\0')
            ktadmin_fail("%s names no passive (slave); give the passive's URL with "
                         "--new-active-url", db_path);
        else if (written <= 0 || (size_t)written >= url_size)
            ktadmin_fail("the passive's URL is too long; give it with --new-active-url");
        else
            result = 0;
    }
    kt_config_free(config);
    kt_config_free(db_config);
    return result;
}

int ktadmin_switchover(ktadmin_context *context, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"new-active-url", required_argument, NULL, 'u'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *given_url = NULL;
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'u': given_url = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(switchover_usage, stdout); return KTADMIN_EXIT_OK;
        default: ktadmin_option_error("switchover", switchover_usage, result, argv);
            return KTADMIN_EXIT_USAGE;
        }
    }
    if (ktadmin_no_operands("switchover", switchover_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_EXIT_USAGE;
    kt_paths paths;
    char error[PATH_MAX + 256], url[600];
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    json_t *before = call(&paths, json_pack("{s:s}", "op", "status"), false);
    if (before == NULL)
        return KTADMIN_EXIT_FAILURE;
    if (strcmp(text_of(before, "role"), "active") != 0) {
        ktadmin_fail("this node is the %s: run switchover on the active",
                     text_of(before, "role"));
        json_decref(before);
        return KTADMIN_EXIT_FAILURE;
    }
    int made = given_url != NULL ? (snprintf(url, sizeof url, "%s", given_url) < (int)sizeof url
                                         ? 0 : -1)
                                 : default_url(&paths, url, sizeof url);
    json_decref(before);
    if (made != 0)
        return KTADMIN_EXIT_FAILURE;
    if (send_op(&paths, json_pack("{s:s, s:s}", "op", "replication.switchover", "new_active_url",
                                  url)) != 0)
        return KTADMIN_EXIT_FAILURE;
    json_t *status = wait_for(&paths, "passive", "in_sync", SYNC_WAIT_POLLS);
    if (status == NULL)
        return KTADMIN_EXIT_FAILURE;
    printf("Switched over: %s is the active at epoch %lld; this node is its passive, in sync.\n",
           url, (long long)epoch_of(status));
    json_decref(status);
    return KTADMIN_EXIT_OK;
}
