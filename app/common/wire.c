/*
 * wire.c — the admin socket's framing: a 4-byte big-endian length (1 .. KT_WIRE_MAX), then that
 * many bytes of JSON holding one object.
 *
 * Both directions work on non-blocking calls (MSG_DONTWAIT) driven by poll(2), whatever mode the
 * descriptor is in, so a peer that stops reading or writing costs a bounded wait: the receive
 * timeout covers the whole message (a peer dribbling one byte a second cannot hold a thread
 * forever), and a send gives up after KT_WIRE_SEND_TIMEOUT_MS. EINTR and short transfers are
 * resumed; MSG_NOSIGNAL turns a vanished peer into EPIPE instead of a SIGPIPE that would kill the
 * daemon.
 *
 * On failure errno tells the caller what happened (the error text says it to a human):
 *   ECONNRESET  the peer closed the connection between messages (a normal end), or reset it
 *   EPROTO      the connection closed in the middle of a message
 *   ETIMEDOUT   the message did not arrive (or could not be sent) in time
 *   EMSGSIZE    the length is 0 or over KT_WIRE_MAX: the stream cannot be trusted any more
 *   EBADMSG     a complete message that is not a JSON object: the stream is still in step, so a
 *               server can answer bad_request and go on
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "app/common/app.h"
#include "app/common/internal.h"

#define KT_WIRE_SEND_TIMEOUT_MS 30000
#define KT_WIRE_HEADER_BYTES 4u

static int64_t monotonic_ms(void)
{
    struct timespec now;
    /* CLOCK_MONOTONIC cannot fail on Linux; 0 would only make timeouts longer. */
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return 0;
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Waits until fd is ready for `events` or the deadline (-1: none) passes. */
static int wait_ready(int fd, short events, int64_t deadline)
{
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - monotonic_ms();
            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            timeout = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd entry = {.fd = fd, .events = events};
        int ready = poll(&entry, 1, timeout);
        if (ready > 0)
            return 0; /* readable, writable, or an error/hang-up the next call will report */
        if (ready == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
}

/* Reads exactly `length` bytes. *received counts what arrived, so the caller can tell a close
 * between messages (nothing read) from one in the middle. A close sets errno to ECONNRESET. */
static int receive_exact(int fd, void *buffer, size_t length, int64_t deadline, size_t *received)
{
    unsigned char *bytes = buffer;
    *received = 0;
    while (*received < length) {
        ssize_t count = recv(fd, bytes + *received, length - *received, MSG_DONTWAIT);
        if (count > 0) {
            *received += (size_t)count;
            continue;
        }
        if (count == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_ready(fd, POLLIN, deadline) != 0)
            return -1;
    }
    return 0;
}

static int send_all(int fd, const unsigned char *bytes, size_t length, int64_t deadline)
{
    size_t sent = 0;
    while (sent < length) {
        ssize_t count = send(fd, bytes + sent, length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (count >= 0) {
            sent += (size_t)count;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_ready(fd, POLLOUT, deadline) != 0)
            return -1;
    }
    return 0;
}

int kt_wire_send(int fd, const json_t *message, char *error, size_t error_size)
{
    if (!json_is_object(message)) {
        kt_app_error(error, error_size, "only a JSON object can be sent");
        errno = EINVAL;
        return -1;
    }
    size_t size = json_dumpb(message, NULL, 0, JSON_COMPACT);
    if (size == 0 || size > KT_WIRE_MAX) {
        kt_app_error(error, error_size, "the message is %zu bytes; the limit is %u", size,
                     KT_WIRE_MAX);
        errno = EMSGSIZE;
        return -1;
    }
    unsigned char *frame = malloc(KT_WIRE_HEADER_BYTES + size);
    if (frame == NULL) {
        kt_app_error(error, error_size, "out of memory sending a %zu-byte message", size);
        errno = ENOMEM;
        return -1;
    }
    frame[0] = (unsigned char)(size >> 24);
    frame[1] = (unsigned char)(size >> 16);
    frame[2] = (unsigned char)(size >> 8);
    frame[3] = (unsigned char)size;
    int result = 0;
    if (json_dumpb(message, (char *)frame + KT_WIRE_HEADER_BYTES, size, JSON_COMPACT) != size) {
        kt_app_error(error, error_size, "cannot encode the message as JSON");
        errno = EINVAL;
        result = -1;
    } else if (send_all(fd, frame, KT_WIRE_HEADER_BYTES + size,
                        monotonic_ms() + KT_WIRE_SEND_TIMEOUT_MS) != 0) {
        int saved = errno;
        kt_app_error(error, error_size, "cannot send the message: %s",
                     saved == ETIMEDOUT ? "the peer stopped reading" : strerror(saved));
        errno = saved;
        result = -1;
    }
    free(frame);
    return result;
}

/* Says why a receive_exact failed, keeping errno meaningful for the caller. */
static void describe_receive_failure(bool in_message, char *error, size_t error_size)
{
    int saved = errno;
    if (saved == ECONNRESET && in_message) {
        kt_app_error(error, error_size, "the connection closed in the middle of a message");
        saved = EPROTO;
    } else if (saved == ECONNRESET) {
        kt_app_error(error, error_size, "the connection was closed");
    } else if (saved == ETIMEDOUT) {
        kt_app_error(error, error_size, "timed out waiting for a message");
    } else {
        kt_app_error(error, error_size, "cannot receive: %s", strerror(saved));
    }
    errno = saved;
}

static int parse_body(const char *body, size_t length, json_t **message, char *error,
                      size_t error_size)
{
    json_error_t problem;
    json_t *parsed = json_loadb(body, length, JSON_REJECT_DUPLICATES, &problem);
    if (parsed == NULL) {
        kt_app_error(error, error_size, "the message is not valid JSON: %s (at byte %d)",
                     problem.text, problem.position);
        errno = EBADMSG;
        return -1;
    }
    if (!json_is_object(parsed)) {
        json_decref(parsed);
        kt_app_error(error, error_size, "the message is JSON but not an object");
        errno = EBADMSG;
        return -1;
    }
    *message = parsed;
    return 0;
}

int kt_wire_receive(int fd, int timeout_ms, json_t **message, char *error, size_t error_size)
{
    *message = NULL;
    int64_t deadline = timeout_ms > 0 ? monotonic_ms() + timeout_ms : -1;
    unsigned char header[KT_WIRE_HEADER_BYTES];
    size_t received = 0;
    if (receive_exact(fd, header, sizeof header, deadline, &received) != 0) {
        describe_receive_failure(received > 0, error, error_size);
        return -1;
    }
    uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 |
                      (uint32_t)header[2] << 8 | (uint32_t)header[3];
    if (length == 0 || length > KT_WIRE_MAX) {
        kt_app_error(error, error_size, "a message of %lu bytes is outside the limits 1 .. %u",
                     (unsigned long)length, KT_WIRE_MAX);
        errno = EMSGSIZE;
        return -1;
    }
    char *body = malloc(length);
    if (body == NULL) {
        kt_app_error(error, error_size, "out of memory receiving a %lu-byte message",
                     (unsigned long)length);
        errno = ENOMEM;
        return -1;
    }
    int result = 0;
    if (receive_exact(fd, body, length, deadline, &received) != 0) {
        describe_receive_failure(true, error, error_size);
        result = -1;
    } else {
        result = parse_body(body, length, message, error, error_size);
    }
    int saved = errno;
    free(body);
    errno = saved;
    return result;
}
