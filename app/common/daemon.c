/*
 * daemon.c — what a service does to run in the background: a pid file that refuses to overwrite a
 * live process's, and the classic detach (fork, setsid, fork, stdio to /dev/null); and
 * kt_write_all, the one loop over short writes and EINTR that every program of app/ uses.
 *
 * Callers detach before they start threads or open SQLite databases: neither survives fork().
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "app/common/app.h"
#include "app/common/internal.h"
#include "crypto/crypto.h"

/* The pid named by an existing pid file, or 0 when there is none or it holds no valid pid. */
static pid_t read_pidfile(const char *path)
{
    FILE *stream = fopen(path, "re");
    if (stream == NULL)
        return 0;
    char text[32] = {0};
    size_t length = fread(text, 1, sizeof text - 1, stream);
    (void)fclose(stream); /* read-only: nothing to lose */
    text[length] = '\0';
    char *end = NULL;
    errno = 0;
    long pid = strtol(text, &end, 10);
    if (errno != 0 || end == text || (*end != '\n' && *end != '\0') || pid <= 0 ||
        pid > (long)INT32_MAX)
        return 0;
    return (pid_t)pid;
}

static bool process_alive(pid_t pid)
{
    /* EPERM: the process exists but belongs to someone else — still alive. */
    return kill(pid, 0) == 0 || errno == EPERM;
}

int kt_pidfile_write(const char *path, char *error, size_t error_size)
{
    pid_t existing = read_pidfile(path);
    if (existing > 0 && existing != getpid() && process_alive(existing)) {
        kt_app_error(error, error_size,
                     "%s names process %ld, which is running; stop it first (if that process is "
                     "not a keytrustee service, remove the file)",
                     path, (long)existing);
        return -1;
    }
    char text[32];
    int length = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (length < 0 || (size_t)length >= sizeof text) {
        kt_app_error(error, error_size, "cannot format the pid");
        return -1;
    }
    return kt_write_file_atomic(path, text, (size_t)length, 0644, error, error_size);
}

/* Forks; the parent exits at once, the child returns 0. */
static int fork_and_leave_parent(char *error, size_t error_size)
{
    pid_t child = fork();
    if (child < 0) {
        kt_app_error(error, error_size, "cannot fork to run in the background: %s",
                     strerror(errno));
        return -1;
    }
    if (child > 0)
        _exit(0);
    return 0;
}

static int redirect_stdio(char *error, size_t error_size)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) {
        kt_app_error(error, error_size, "cannot open /dev/null: %s", strerror(errno));
        return -1;
    }
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (dup2(null, fd) < 0) {
            kt_app_error(error, error_size, "cannot redirect descriptor %d: %s", fd,
                         strerror(errno));
            (void)close(null);
            return -1;
        }
    }
    if (null > STDERR_FILENO)
        (void)close(null);
    return 0;
}

int kt_daemonize(char *error, size_t error_size)
{
    /* stdio buffers would otherwise be flushed twice, once by each process. */
    (void)fflush(NULL);
    if (fork_and_leave_parent(error, error_size) != 0)
        return -1;
    if (setsid() < 0) {
        kt_app_error(error, error_size, "cannot start a new session: %s", strerror(errno));
        return -1;
    }
    /* The second fork makes sure the daemon is not a session leader and can never get a
     * controlling terminal back. */
    if (fork_and_leave_parent(error, error_size) != 0)
        return -1;
    if (chdir("/") != 0) {
        kt_app_error(error, error_size, "cannot change to /: %s", strerror(errno));
        return -1;
    }
    return redirect_stdio(error, error_size);
}

int kt_write_all(int fd, const void *data, size_t length)
{
    const unsigned char *cursor = data;
    while (length > 0) {
        ssize_t written = write(fd, cursor, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        cursor += written;
        length -= (size_t)written;
    }
    return 0;
}
