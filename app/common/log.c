/*
 * log.c — one line per event, from any thread, to stderr or an append-only file.
 *
 *   2026-11-28T12:00:00.123Z keytrustee-db[1234] info: message
 *
 * Each call formats the whole line first and hands it to the kernel in a single write(2) on a
 * descriptor opened with O_APPEND: lines from different threads (or, for the file, different
 * processes) never interleave, because Linux appends each write(2) to a regular file whole (and a
 * line of at most PIPE_BUF bytes to a pipe). So threads log in parallel: they share a read lock,
 * which only kt_log_open (reopening after logrotate) takes exclusively, so that no line is written
 * to a descriptor being closed. The threshold is read without any lock, so a suppressed level
 * (debug, in production) costs one atomic load; keytrusteed logs every request, and a mutex held
 * across the write had its worker threads queueing on each other. Control characters in the message are replaced by '?'
 * so a hostile value that reaches a message cannot forge extra log lines. The pid is read at every
 * call because the daemons detach (and change pid) after opening their log.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "app/common/app.h"

/* A whole line fits in PIPE_BUF (4096), so even a write to a pipe is atomic. */
#define KT_LOG_LINE_MAX 4096
#define KT_LOG_MESSAGE_MAX 3900

static pthread_rwlock_t log_lock = PTHREAD_RWLOCK_INITIALIZER;
static char log_program[64] = "keytrustee";
static _Atomic int log_threshold = KT_LOG_INFO;
static int log_descriptor = STDERR_FILENO;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

int kt_log_level_parse(const char *text, kt_log_level *level)
{
    if (text == NULL)
        return -1;
    for (int index = KT_LOG_DEBUG; index <= KT_LOG_ERROR; index++) {
        if (strcasecmp(text, level_names[index]) == 0) {
            *level = (kt_log_level)index;
            return 0;
        }
    }
    if (strcasecmp(text, "warn") == 0) {
        *level = KT_LOG_WARNING;
        return 0;
    }
    return -1;
}

int kt_log_open(const char *program, kt_log_level level, const char *path)
{
    int descriptor = STDERR_FILENO;
    if (path != NULL) {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (descriptor < 0)
            return -1;
    }
    if (pthread_rwlock_wrlock(&log_lock) != 0) {
        if (descriptor != STDERR_FILENO)
            (void)close(descriptor);
        return -1;
    }
    /* Reopening (after logrotate) replaces the old file; stderr is never closed. */
    if (log_descriptor != STDERR_FILENO)
        (void)close(log_descriptor);
    log_descriptor = descriptor;
    atomic_store(&log_threshold, (int)level);
    snprintf(log_program, sizeof log_program, "%s", program != NULL ? program : "keytrustee");
    (void)pthread_rwlock_unlock(&log_lock);
    return 0;
}

/* "2026-11-28T12:00:00.123Z" into out. */
static void format_timestamp(char *out, size_t out_size)
{
    struct timespec now;
    struct tm utc;
    size_t length = 0;
    if (clock_gettime(CLOCK_REALTIME, &now) == 0 && gmtime_r(&now.tv_sec, &utc) != NULL)
        length = strftime(out, out_size, "%Y-%m-%dT%H:%M:%S", &utc);
    if (length == 0) {
        snprintf(out, out_size, "0000-00-00T00:00:00.000Z");
        return;
    }
    snprintf(out + length, out_size - length, ".%03dZ", (int)(now.tv_nsec / 1000000L));
}

static void neutralise_control_characters(char *text)
{
    for (unsigned char *cursor = (unsigned char *)text; *cursor != '\0'; cursor++)
        if (*cursor < 0x20 || *cursor == 0x7f)
            *cursor = '?';
}

void kt_log(kt_log_level level, const char *format, ...)
{
    if (level < KT_LOG_DEBUG || level > KT_LOG_ERROR)
        level = KT_LOG_ERROR;
    if ((int)level < atomic_load_explicit(&log_threshold, memory_order_relaxed))
        return;
    int saved_errno = errno; /* callers often log and then report errno */
    char message[KT_LOG_MESSAGE_MAX];
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    if (written < 0)
        snprintf(message, sizeof message, "(unprintable log message)");
    neutralise_control_characters(message);

    char timestamp[32];
    format_timestamp(timestamp, sizeof timestamp);
    char line[KT_LOG_LINE_MAX];
    if (pthread_rwlock_rdlock(&log_lock) != 0) {
        errno = saved_errno;
        return;
    }
    int length = snprintf(line, sizeof line, "%s %s[%ld] %s: %s\n", timestamp, log_program,
                          (long)getpid(), level_names[level], message);
    if (length < 0) {
        length = 0;
    } else if ((size_t)length >= sizeof line) {
        length = (int)sizeof line - 1;
        line[length - 1] = '\n'; /* a cut line still ends the line */
    }
    /* A log that cannot be written has nowhere to report to; the line is dropped. */
    ssize_t ignored = write(log_descriptor, line, (size_t)length);
    (void)ignored;
    (void)pthread_rwlock_unlock(&log_lock);
    errno = saved_errno;
}
