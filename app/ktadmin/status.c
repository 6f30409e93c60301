/*
 * status.c — `ktadmin status [--json]`: asks keytrustee-db over its admin socket how this node is
 * doing and prints it for a person (or, with --json, the status object for a script).
 *
 * Exit status, for monitoring: 0 when the node is healthy, 1 when keytrustee-db cannot be reached
 * or the node is not doing its whole job (see unhealthy_reason: a standalone or active node that
 * cannot take writes, an active whose passive is away, a passive cut off from its active).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/ktadmin/ktadmin.h"

#define STATUS_TIMEOUT_MS 10000

static const char status_usage[] =
    "usage: ktadmin [--confdir DIR] status [--json]\n"
    "  --json   print keytrustee-db's status object as JSON\n"
    "exit status: 0 healthy; 1 keytrustee-db unreachable, the node cannot take writes, or its\n"
    "             peer is not connected (a degraded pair)\n";

static ktadmin_parse_result parse_status_options(ktadmin_context *context, int argc, char **argv,
                                                 bool *json_output)
{
    static const struct option long_options[] = {
        {"json", no_argument, NULL, 'j'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'j': *json_output = true; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(status_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("status", status_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    return ktadmin_no_operands("status", status_usage, argc, argv);
}

/* Sends {"op": "status"}; returns the ok response, or NULL after reporting why there is none. */
static json_t *request_status(const ktadmin_context *context)
{
    char error[PATH_MAX + 256];
    kt_paths paths;
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return NULL;
    }
    kt_db_connection *connection = kt_db_connect(&paths, error, sizeof error);
    if (connection == NULL) {
        ktadmin_fail("%s", error);
        return NULL;
    }
    json_t *request = json_pack("{s:s}", "op", "status");
    json_t *response = NULL;
    int result = request == NULL ? -1
                                 : kt_db_call(connection, request, STATUS_TIMEOUT_MS, &response,
                                              error, sizeof error);
    json_decref(request);
    kt_db_disconnect(connection);
    if (result != 0) {
        ktadmin_fail("keytrustee-db did not answer: %s", request == NULL ? "out of memory" : error);
        return NULL;
    }
    if (!json_is_true(json_object_get(response, "ok"))) {
        const char *message = json_string_value(json_object_get(response, "message"));
        ktadmin_fail("keytrustee-db refused the status request: %s",
                     message != NULL ? message : "no reason given");
        json_decref(response);
        return NULL;
    }
    return response;
}

static const char *text_field(const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL ? value : "(unknown)";
}

/* Healthy means the node does its whole job: a standalone node takes writes; an active takes
 * writes and has its passive connected (an async active with its passive away still takes writes,
 * but the pair is degraded and monitoring should say so); a passive is receiving from its active.
 * Returns NULL when healthy, otherwise why not. */
static const char *unhealthy_reason(const json_t *status)
{
    const char *role = text_field(status, "role");
    const json_t *replication = json_object_get(status, "replication");
    bool peer_connected = json_is_true(json_object_get(replication, "peer_connected"));
    bool writable = json_is_true(json_object_get(status, "writable"));
    if (strcmp(role, "passive") == 0)
        return peer_connected ? NULL : "the passive is not connected to its active";
    if (!writable)
        return "the node cannot take writes";
    if (strcmp(role, "active") == 0 && !peer_connected)
        return "the active's passive is not connected: the pair is degraded";
    return NULL;
}

/* Prints one member of the replication object: scalars as they are, objects indented. */
static void print_member(const char *key, const json_t *value, int depth)
{
    printf("%*s%s:", depth * 2, "", key);
    if (json_is_object(value)) {
        putchar('\n');
        const char *member_key;
        const json_t *member;
        json_object_foreach((json_t *)value, member_key, member)
            print_member(member_key, member, depth + 1);
        return;
    }
    if (json_is_string(value)) {
        printf(" %s\n", json_string_value(value));
        return;
    }
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
    printf(" %s\n", text != NULL ? text : "?");
    free(text);
}

static void print_status(const json_t *status)
{
    const json_t *counts = json_object_get(status, "counts");
    printf("role: %s\n", text_field(status, "role"));
    if (json_is_true(json_object_get(status, "writable")))
        printf("writable: yes\n");
    else
        printf("writable: no (%s)\n", text_field(status, "reason"));
    if (json_object_get(status, "active_url") != NULL)
        printf("active: %s\n", text_field(status, "active_url"));
    if (json_object_get(status, "role_change_error") != NULL)
        printf("last role change failed: %s\n", text_field(status, "role_change_error"));
    printf("version: %s\n", text_field(status, "version"));
    printf("schema version: %lld\n",
           (long long)json_integer_value(json_object_get(status, "schema_version")));
    printf("orgs: %lld\nclients: %lld\ndeposits: %lld\n",
           (long long)json_integer_value(json_object_get(counts, "orgs")),
           (long long)json_integer_value(json_object_get(counts, "clients")),
           (long long)json_integer_value(json_object_get(counts, "deposits")));
    const json_t *replication = json_object_get(status, "replication");
    if (json_is_object(replication) && json_object_size(replication) > 0)
        print_member("replication", replication, 0);
    else
        printf("replication: none\n");
}

static int print_json(json_t *status)
{
    json_object_del(status, "ok");
    if (json_dumpf(status, stdout, JSON_INDENT(4) | JSON_SORT_KEYS) != 0 || putchar('\n') == EOF) {
        ktadmin_fail("cannot write the status to standard output");
        return -1;
    }
    return 0;
}

int ktadmin_status(ktadmin_context *context, int argc, char **argv)
{
    bool json_output = false;
    ktadmin_parse_result parsed = parse_status_options(context, argc, argv, &json_output);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    json_t *status = request_status(context);
    if (status == NULL)
        return KTADMIN_EXIT_FAILURE;
    const char *reason = unhealthy_reason(status);
    int printed = 0;
    if (json_output)
        printed = print_json(status);
    else {
        print_status(status);
        printf("health: %s\n", reason == NULL ? "ok" : reason);
    }
    json_decref(status);
    bool healthy = reason == NULL;
    return healthy && printed == 0 ? KTADMIN_EXIT_OK : KTADMIN_EXIT_FAILURE;
}
