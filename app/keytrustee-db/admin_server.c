/*
 * admin_server.c — keytrustee-db's admin socket: $KEYTRUSTEE_HOME/run/keytrustee-db.sock.
 *
 * One accept thread, and one thread per connection. A connection thread owns its session: the
 * socket, and a reader kt_store opened on its first read (storage.h: a store is used by one thread
 * at a time, and WAL gives each reader a consistent snapshot beside the writer). Writes leave the
 * connection thread only through the writer (writer.c): committed on this thread when it is
 * alone, else queued for the writer thread's next batch.
 *
 * Between requests every thread waits in poll(2) on its socket and on the service's stop pipe;
 * main closes the pipe's write end to stop them all at once. A request that has started is always
 * finished and answered first: that is what "finish in-flight requests" means at shutdown.
 *
 * The socket file is 0600 inside a 0700 directory, and each peer's uid is checked again with
 * SO_PEERCRED: only the service's own user (or root) may talk to the database.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "app/keytrustee-db/service.h"

#define KT_ADMIN_MAX_CONNECTIONS 128u
#define KT_ADMIN_BACKLOG 64
/* Once the first byte of a request is readable, the whole request must arrive within this. */
#define KT_ADMIN_MESSAGE_TIMEOUT_MS 10000

struct kt_admin_server {
    kt_db_service *service;
    int listen_fd;
    bool socket_created; /* the socket file is ours to unlink */
    bool started;
    pthread_t accept_thread;
    pthread_mutex_t mutex;
    pthread_cond_t changed; /* the connection count went down */
    unsigned connections;
};

typedef struct kt_admin_connection {
    kt_admin_server *server;
    int fd;
    pid_t peer_pid;
    uid_t peer_uid;
} kt_admin_connection;

/* ---- binding ---------------------------------------------------------------------------------- */

static int fill_address(struct sockaddr_un *address, const char *path, char *error,
                        size_t error_size)
{
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) {
        snprintf(error, error_size,
                 "the socket path %s is longer than a unix socket allows (%zu bytes); use a "
                 "shorter KEYTRUSTEE_HOME",
                 path, sizeof address->sun_path - 1);
        return -1;
    }
    memcpy(address->sun_path, path, strlen(path) + 1);
    return 0;
}

/* Removes a socket file left by a keytrustee-db that died, after making sure nobody answers. */
static int remove_stale_socket(const char *path, const struct sockaddr_un *address, char *error,
                               size_t error_size)
{
    struct stat status;
    if (lstat(path, &status) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(error, error_size, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(status.st_mode)) {
        snprintf(error, error_size, "%s exists and is not a socket; move it away", path);
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        snprintf(error, error_size, "cannot create a unix socket: %s", strerror(errno));
        return -1;
    }
    int result = connect(probe, (const struct sockaddr *)address, sizeof *address);
    int code = errno;
    (void)close(probe);
    if (result == 0) {
        snprintf(error, error_size, "another keytrustee-db answers on %s; stop it first", path);
        return -1;
    }
    if (code != ECONNREFUSED) {
        snprintf(error, error_size, "cannot check the existing socket %s: %s", path,
                 strerror(code));
        return -1;
    }
    if (unlink(path) != 0) {
        snprintf(error, error_size, "cannot remove the stale socket %s: %s", path,
                 strerror(errno));
        return -1;
    }
    kt_log(KT_LOG_INFO, "removed the stale socket %s (nobody answered on it)", path);
    return 0;
}

static int listen_on(kt_admin_server *server, const struct sockaddr_un *address, char *error,
                     size_t error_size)
{
    const char *path = server->service->socket_path;
    server->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (server->listen_fd < 0) {
        snprintf(error, error_size, "cannot create a unix socket: %s", strerror(errno));
        return -1;
    }
    /* The umask closes the window between bind and chmod. */
    mode_t saved = umask(0177);
    int result = bind(server->listen_fd, (const struct sockaddr *)address, sizeof *address);
    int code = errno;
    umask(saved);
    if (result != 0) {
        snprintf(error, error_size, "cannot bind %s: %s", path, strerror(code));
        return -1;
    }
    server->socket_created = true;
    if (chmod(path, 0600) != 0) {
        snprintf(error, error_size, "cannot set mode 0600 on %s: %s", path, strerror(errno));
        return -1;
    }
    if (listen(server->listen_fd, KT_ADMIN_BACKLOG) != 0) {
        snprintf(error, error_size, "cannot listen on %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void release(kt_admin_server *server)
{
    if (server->listen_fd >= 0)
        (void)close(server->listen_fd);
    if (server->socket_created && unlink(server->service->socket_path) != 0 && errno != ENOENT)
        kt_log(KT_LOG_WARNING, "cannot remove %s: %s", server->service->socket_path,
               strerror(errno));
    (void)pthread_mutex_destroy(&server->mutex);
    (void)pthread_cond_destroy(&server->changed);
    free(server);
}

int kt_admin_server_bind(kt_admin_server **server_out, kt_db_service *service, char *error,
                         size_t error_size)
{
    *server_out = NULL;
    kt_admin_server *server = calloc(1, sizeof *server);
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    server->service = service;
    server->listen_fd = -1;
    if (pthread_mutex_init(&server->mutex, NULL) != 0 ||
        pthread_cond_init(&server->changed, NULL) != 0) {
        free(server);
        snprintf(error, error_size, "cannot set up the admin server's mutex");
        return -1;
    }
    struct sockaddr_un address;
    if (fill_address(&address, service->socket_path, error, error_size) != 0 ||
        remove_stale_socket(service->socket_path, &address, error, error_size) != 0 ||
        listen_on(server, &address, error, error_size) != 0) {
        release(server);
        return -1;
    }
    *server_out = server;
    return 0;
}

/* ---- one connection --------------------------------------------------------------------------- */

/* Waits for a request or for the stop pipe; true when a request (or EOF) is ready to read. */
static bool wait_for_request(int fd, int stop_fd)
{
    struct pollfd entries[2] = {{.fd = fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
    for (;;) {
        int ready = poll(entries, 2, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0 || entries[1].revents != 0)
            return false;
        if (entries[0].revents != 0)
            return true;
    }
}

static bool send_response(kt_admin_connection *connection, const json_t *response)
{
    char error[256];
    if (kt_wire_send(connection->fd, response, error, sizeof error) != 0) {
        kt_log(KT_LOG_WARNING, "cannot answer peer pid %ld: %s", (long)connection->peer_pid,
               error);
        return false;
    }
    return true;
}

/* A request that could not be read: answer bad_request when the peer can still hear it. Returns
 * true when the connection stays usable (a whole message that was not a JSON object). */
static bool handle_bad_message(kt_admin_connection *connection, int code, const char *error)
{
    if (code == ECONNRESET) {
        kt_log(KT_LOG_DEBUG, "peer pid %ld closed the connection", (long)connection->peer_pid);
        return false;
    }
    kt_log(KT_LOG_WARNING, "bad request from peer pid %ld: %s", (long)connection->peer_pid,
           error);
    if (code != EBADMSG && code != EMSGSIZE && code != ETIMEDOUT)
        return false;
    json_t *response = kt_response_error("bad_request", "%s", error);
    bool sent = response != NULL && send_response(connection, response);
    json_decref(response);
    return code == EBADMSG && sent;
}

static void serve(kt_admin_connection *connection, kt_db_session *session)
{
    int stop_fd = connection->server->service->stop_read;
    while (wait_for_request(connection->fd, stop_fd)) {
        json_t *request = NULL;
        char error[512];
        if (kt_wire_receive(connection->fd, KT_ADMIN_MESSAGE_TIMEOUT_MS, &request, error,
                            sizeof error) != 0) {
            if (handle_bad_message(connection, errno, error))
                continue;
            return;
        }
        json_t *response = kt_operation_handle(session, request);
        json_decref(request);
        if (response == NULL) {
            kt_log(KT_LOG_ERROR, "out of memory building a response; closing the connection");
            return;
        }
        bool sent = send_response(connection, response);
        json_decref(response);
        if (!sent)
            return;
    }
}

static void *connection_main(void *context)
{
    kt_admin_connection *connection = context;
    kt_admin_server *server = connection->server;
    kt_db_session session = {.service = server->service,
                             .peer_pid = connection->peer_pid,
                             .peer_uid = connection->peer_uid,
                             .peer_is_api = kt_db_peer_is_api(connection->peer_pid)};
    serve(connection, &session);
    kt_store_close(session.reader);
    (void)close(connection->fd);
    free(connection);
    (void)pthread_mutex_lock(&server->mutex);
    server->connections--;
    (void)pthread_cond_broadcast(&server->changed);
    (void)pthread_mutex_unlock(&server->mutex);
    return NULL;
}

/* Only our own user (or root) may use the database; the file mode says so, this makes sure. */
static bool peer_allowed(int fd, pid_t *peer_pid, uid_t *peer_uid)
{
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
        kt_log(KT_LOG_WARNING, "cannot read an admin peer's credentials: %s", strerror(errno));
        return false;
    }
    *peer_pid = credentials.pid;
    *peer_uid = credentials.uid;
    if (credentials.uid != 0 && credentials.uid != geteuid()) {
        kt_log(KT_LOG_WARNING, "refused an admin connection from uid %lu (pid %ld)",
               (unsigned long)credentials.uid, (long)credentials.pid);
        return false;
    }
    return true;
}

static void start_connection(kt_admin_server *server, int fd)
{
    kt_admin_connection *connection = calloc(1, sizeof *connection);
    if (connection == NULL || !peer_allowed(fd, &connection->peer_pid, &connection->peer_uid)) {
        free(connection);
        (void)close(fd);
        return;
    }
    connection->server = server;
    connection->fd = fd;
    pthread_attr_t attributes;
    pthread_t thread;
    int result = pthread_attr_init(&attributes);
    if (result == 0) {
        (void)pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        (void)pthread_mutex_lock(&server->mutex);
        result = pthread_create(&thread, &attributes, connection_main, connection);
        if (result == 0)
            server->connections++;
        (void)pthread_mutex_unlock(&server->mutex);
        (void)pthread_attr_destroy(&attributes);
    }
    if (result != 0) {
        kt_log(KT_LOG_ERROR, "cannot start a connection thread: %s", strerror(result));
        free(connection);
        (void)close(fd);
    }
}

/* ---- the accept loop -------------------------------------------------------------------------- */

/* Waits up to `milliseconds` for the stop pipe; true when stopping. */
static bool stop_requested(int stop_fd, int milliseconds)
{
    struct pollfd entry = {.fd = stop_fd, .events = POLLIN};
    return poll(&entry, 1, milliseconds) > 0;
}

static bool at_capacity(kt_admin_server *server)
{
    (void)pthread_mutex_lock(&server->mutex);
    bool full = server->connections >= KT_ADMIN_MAX_CONNECTIONS;
    (void)pthread_mutex_unlock(&server->mutex);
    return full;
}

static void accept_one(kt_admin_server *server)
{
    int fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        start_connection(server, fd);
        return;
    }
    if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
        return;
    kt_log(KT_LOG_ERROR, "accept on %s failed: %s", server->service->socket_path,
           strerror(errno));
    /* Out of descriptors or memory: back off instead of spinning. */
    (void)stop_requested(server->service->stop_read, 100);
}

static void *accept_main(void *context)
{
    kt_admin_server *server = context;
    int stop_fd = server->service->stop_read;
    struct pollfd entries[2] = {{.fd = server->listen_fd, .events = POLLIN},
                                {.fd = stop_fd, .events = POLLIN}};
    for (;;) {
        if (at_capacity(server)) {
            if (stop_requested(stop_fd, 50))
                break;
            continue;
        }
        int ready = poll(entries, 2, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0) {
            kt_log(KT_LOG_ERROR, "poll on the admin socket failed: %s", strerror(errno));
            if (stop_requested(stop_fd, 100))
                break;
            continue;
        }
        if (entries[1].revents != 0)
            break;
        if (entries[0].revents != 0)
            accept_one(server);
    }
    return NULL;
}

int kt_admin_server_start(kt_admin_server *server, char *error, size_t error_size)
{
    int result = pthread_create(&server->accept_thread, NULL, accept_main, server);
    if (result != 0) {
        snprintf(error, error_size, "cannot start the accept thread: %s", strerror(result));
        return -1;
    }
    server->started = true;
    return 0;
}

void kt_admin_server_stop(kt_admin_server *server)
{
    if (server == NULL)
        return;
    if (server->started) {
        int result = pthread_join(server->accept_thread, NULL);
        if (result != 0)
            kt_log(KT_LOG_ERROR, "cannot join the accept thread: %s", strerror(result));
    }
    /* Nothing new is accepted now; connection threads finish their request and see the pipe. */
    (void)pthread_mutex_lock(&server->mutex);
    while (server->connections > 0)
        (void)pthread_cond_wait(&server->changed, &server->mutex);
    (void)pthread_mutex_unlock(&server->mutex);
    release(server);
}
