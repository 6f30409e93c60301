/*
 * kt_db_call.c — test helper: sends one request to keytrustee-db's admin socket and prints the
 * response.
 *
 *   kt_db_call [--confdir DIR] 'JSON-REQUEST'
 *
 * The socket is found the way every program finds it (--confdir, else $KEYTRUSTEE_HOME). The
 * request is sent as given (it must be a JSON object); the response is printed as one line of
 * compact JSON with sorted keys. Exit status: 0 when a response arrived (whatever its "ok"),
 * 1 when none did, 2 for a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/common/app.h"

static int call(const kt_paths *paths, const json_t *request)
{
    char error[512];
    kt_db_connection *connection = kt_db_connect(paths, error, sizeof error);
    if (connection == NULL) {
        fprintf(stderr, "kt_db_call: %s\n", error);
        return 1;
    }
    json_t *response = NULL;
    int result = kt_db_call(connection, request, 0, &response, error, sizeof error);
    kt_db_disconnect(connection);
    if (result != 0) {
        fprintf(stderr, "kt_db_call: %s\n", error);
        return 1;
    }
    char *text = json_dumps(response, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(response);
    if (text == NULL) {
        fprintf(stderr, "kt_db_call: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *confdir = NULL;
    int first = 1;
    if (argc == 4 && strcmp(argv[1], "--confdir") == 0) {
        confdir = argv[2];
        first = 3;
    }
    if (argc != first + 1) {
        fprintf(stderr, "usage: kt_db_call [--confdir DIR] 'JSON-REQUEST'\n");
        return 2;
    }
    char error[512];
    kt_paths paths;
    if (kt_paths_resolve(&paths, confdir, NULL, error, sizeof error) != 0) {
        fprintf(stderr, "kt_db_call: %s\n", error);
        return 2;
    }
    json_error_t problem;
    json_t *request = json_loads(argv[first], JSON_REJECT_DUPLICATES, &problem);
    if (!json_is_object(request)) {
        fprintf(stderr, "kt_db_call: the request is not a JSON object: %s\n",
                request == NULL ? problem.text : "another JSON value");
        json_decref(request);
        return 2;
    }
    int status = call(&paths, request);
    json_decref(request);
    return status;
}
