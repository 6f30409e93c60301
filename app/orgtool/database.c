/*
 * database.c — keytrustee-orgtool's one way to the data: a request on keytrustee-db's admin
 * socket. Turns every failure (service not running, no answer, an error response) into one line
 * on stderr that says what happened and what to do, and an exit code: 3 when the write was refused
 * because this node or the pair cannot take writes now, 1 otherwise.
 *
 * Also the small value checks and formats the commands share: org names and times.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/orgtool/orgtool.h"
#include "storage/storage.h"

#define CALL_TIMEOUT_MS 30000

bool orgtool_org_name_valid(const char *name)
{
    size_t length = strlen(name);
    if (length == 0 || length > KT_ORG_NAME_MAX)
        return false;
    for (size_t index = 0; index < length; index++) {
        unsigned char character = (unsigned char)name[index];
        if (!isalnum(character) && character != '_' && character != '.' && character != '-')
            return false;
    }
    return true;
}

bool orgtool_check_org_name(const char *command, const char *usage, const char *name)
{
    if (name == NULL) {
        orgtool_usage_error(command, usage, "give the org name with -n ORG");
        return false;
    }
    if (orgtool_org_name_valid(name))
        return true;
    orgtool_usage_error(command, usage, "bad org name '%s': use 1 to %u letters, digits, '_', "
                        "'.' or '-' (no spaces)", name, KT_ORG_NAME_MAX);
    return false;
}

void orgtool_format_time(int64_t seconds, char out[32])
{
    struct tm broken_down;
    time_t value = (time_t)seconds;
    if (seconds == 0 || gmtime_r(&value, &broken_down) == NULL ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &broken_down) == 0)
        snprintf(out, 32, "%s", seconds == 0 ? "9999-12-31T23:59:59" : "(invalid time)");
}

/* What to add to keytrustee-db's message so the operator knows what to do next. */
static const char *advice_for(const char *code)
{
    if (strcmp(code, "write_unavailable") == 0)
        return "nothing was changed; writes need both nodes of the pair: retry when the other "
               "node is back";
    if (strcmp(code, "indeterminate") == 0)
        return "the change may or may not have been stored: check with `keytrustee-orgtool "
               "list` before retrying";
    if (strcmp(code, "disk_full") == 0)
        return "nothing was stored: free space on the database's disk and retry";
    if (strcmp(code, "internal") == 0)
        return "see keytrustee-db's log for details";
    return NULL;
}

static int report_passive(const char *command, const json_t *response)
{
    const char *active = json_string_value(json_object_get(response, "active_url"));
    orgtool_fail(command, "this node is the passive, which takes no writes (passive); nothing was "
                 "changed: run the command on the active%s%s%s", active != NULL ? " (" : "",
                 active != NULL ? active : "", active != NULL ? ")" : "");
    return ORGTOOL_EXIT_UNAVAILABLE;
}

static int report_error_response(const char *command, const json_t *response)
{
    const char *code = json_string_value(json_object_get(response, "error"));
    const char *message = json_string_value(json_object_get(response, "message"));
    if (code == NULL)
        code = "internal";
    if (strcmp(code, "passive") == 0)
        return report_passive(command, response);
    const char *advice = advice_for(code);
    orgtool_fail(command, "%s (%s)%s%s", message != NULL ? message : "keytrustee-db refused the "
                 "request", code, advice != NULL ? "; " : "", advice != NULL ? advice : "");
    return strcmp(code, "write_unavailable") == 0 ? ORGTOOL_EXIT_UNAVAILABLE
                                                  : ORGTOOL_EXIT_FAILURE;
}

int orgtool_call(const orgtool_context *context, const char *command, const json_t *request,
                 json_t **response)
{
    char error[PATH_MAX + 256];
    kt_paths paths;
    *response = NULL;
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        orgtool_fail(command, "%s", error);
        return ORGTOOL_EXIT_FAILURE;
    }
    kt_db_connection *connection = kt_db_connect(&paths, error, sizeof error);
    if (connection == NULL) {
        orgtool_fail(command, "%s", error);
        return ORGTOOL_EXIT_FAILURE;
    }
    json_t *answer = NULL;
    int result = kt_db_call(connection, request, CALL_TIMEOUT_MS, &answer, error, sizeof error);
    kt_db_disconnect(connection);
    if (result != 0) {
        orgtool_fail(command, "keytrustee-db did not answer: %s; check that it is running "
                     "(`ktadmin status`)", error);
        return ORGTOOL_EXIT_FAILURE;
    }
    if (!json_is_true(json_object_get(answer, "ok"))) {
        int exit_code = report_error_response(command, answer);
        json_decref(answer);
        return exit_code;
    }
    *response = answer;
    return ORGTOOL_EXIT_OK;
}
