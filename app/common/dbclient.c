/*
 * dbclient.c — the client side of keytrustee-db's admin socket, used by keytrusteed, ktadmin and
 * keytrustee-orgtool: connect to $KEYTRUSTEE_HOME/run/keytrustee-db.sock, send a request, wait for
 * the response.
 *
 * A connection that failed once (timeout, framing error, closed socket) is marked broken and
 * refuses further calls: after a timeout the late response could still arrive and would be read as
 * the answer to the next request.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "app/common/app.h"
#include "app/common/internal.h"

#define KT_DB_CALL_DEFAULT_TIMEOUT_MS 30000

struct kt_db_connection {
    int fd;
    bool broken;
};

/* Says what to do about a failed connect, by cause. */
static void describe_connect_failure(const char *path, int code, char *error, size_t error_size)
{
    if (code == ENOENT || code == ECONNREFUSED)
        kt_app_error(error, error_size,
                     "keytrustee-db is not running (nothing listens on %s); start it: "
                     "service keytrustee-db start",
                     path);
    else if (code == EACCES || code == EPERM)
        kt_app_error(error, error_size,
                     "permission denied on %s; run this as the user keytrustee-db runs as (or "
                     "root)",
                     path);
    else
        kt_app_error(error, error_size, "cannot connect to keytrustee-db at %s: %s", path,
                     strerror(code));
}

kt_db_connection *kt_db_connect(const kt_paths *paths, char *error, size_t error_size)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, paths->rundir, KT_DB_SOCKET_FILE) != 0 ||
        strlen(path) >= sizeof address.sun_path) {
        kt_app_error(error, error_size,
                     "the socket path under %s is too long for a unix socket (limit %zu bytes); "
                     "use a shorter KEYTRUSTEE_HOME",
                     paths->rundir, sizeof address.sun_path - 1);
        return NULL;
    }
    memcpy(address.sun_path, path, strlen(path) + 1);
    kt_db_connection *connection = calloc(1, sizeof *connection);
    if (connection == NULL) {
        kt_app_error(error, error_size, "out of memory");
        return NULL;
    }
    connection->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connection->fd < 0) {
        kt_app_error(error, error_size, "cannot create a unix socket: %s", strerror(errno));
        free(connection);
        return NULL;
    }
    int result;
    do {
        result = connect(connection->fd, (const struct sockaddr *)&address, sizeof address);
    } while (result != 0 && errno == EINTR);
    if (result != 0) {
        describe_connect_failure(path, errno, error, error_size);
        (void)close(connection->fd);
        free(connection);
        return NULL;
    }
    return connection;
}

int kt_db_call(kt_db_connection *connection, const json_t *request, int timeout_ms,
               json_t **response, char *error, size_t error_size)
{
    *response = NULL;
    if (connection == NULL || connection->broken) {
        kt_app_error(error, error_size, "the connection to keytrustee-db failed earlier; reconnect");
        return -1;
    }
    char detail[256];
    if (kt_wire_send(connection->fd, request, detail, sizeof detail) != 0) {
        connection->broken = true;
        kt_app_error(error, error_size, "keytrustee-db: %s", detail);
        return -1;
    }
    json_t *answer = NULL;
    int timeout = timeout_ms > 0 ? timeout_ms : KT_DB_CALL_DEFAULT_TIMEOUT_MS;
    if (kt_wire_receive(connection->fd, timeout, &answer, detail, sizeof detail) != 0) {
        connection->broken = true;
        if (errno == ECONNRESET)
            kt_app_error(error, error_size,
                         "keytrustee-db closed the connection without answering (is it stopping? "
                         "see its log)");
        else if (errno == ETIMEDOUT)
            kt_app_error(error, error_size, "keytrustee-db did not answer within %d ms", timeout);
        else
            kt_app_error(error, error_size, "keytrustee-db: %s", detail);
        return -1;
    }
    if (!json_is_boolean(json_object_get(answer, "ok"))) {
        json_decref(answer);
        connection->broken = true;
        kt_app_error(error, error_size, "keytrustee-db sent a response without \"ok\"");
        return -1;
    }
    *response = answer;
    return 0;
}

void kt_db_disconnect(kt_db_connection *connection)
{
    if (connection == NULL)
        return;
    (void)close(connection->fd);
    free(connection);
}
