/*
 * fuzz_wire.c — the admin-socket framing (app/common/wire.c, kt_wire_receive).
 *
 * The input is the byte stream a peer sends on the admin socket: it is written into one end of
 * a socketpair, that end is closed, and kt_wire_receive reads messages off the other end until it
 * fails, exactly as keytrustee-db's connection threads do (they go on after EBADMSG and stop on
 * anything else). Every message received must survive a round trip: kt_wire_send on a second
 * socketpair and kt_wire_receive again give an equal JSON object. A failed receive must leave
 * *message NULL and set one of the errno values wire.c documents.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/common/app.h"
#include "tests/fuzz/fuzz.h"

/* The most a socketpair holds without a reader; inputs are cut there so writing never blocks. */
#define STREAM_LIMIT (96u * 1024u)

static void socket_pair(int descriptors[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, descriptors) != 0) {
        abort();
    }
    int size = 4 * STREAM_LIMIT;
    if (setsockopt(descriptors[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size) != 0 ||
        setsockopt(descriptors[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0)
        abort();
}

static void write_all(int descriptor, const uint8_t *data, size_t size)
{
    while (size > 0) {
        ssize_t count = send(descriptor, data, size, MSG_NOSIGNAL);
        if (count < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(count > 0, "the socketpair refused %zu bytes", size);
        data += count;
        size -= (size_t)count;
    }
}

static void check_round_trip(const json_t *message)
{
    int pair[2];
    char error[256];
    socket_pair(pair);
    json_t *echoed = NULL;
    if (kt_wire_send(pair[0], message, error, sizeof error) == 0) {
        FUZZ_CHECK(kt_wire_receive(pair[1], 1000, &echoed, error, sizeof error) == 0,
                   "a sent message does not receive: %s", error);
        FUZZ_CHECK(json_equal(message, echoed), "the message changed in a send/receive");
        json_decref(echoed);
    } else {
        /* Only a message too large for the frame may fail to send. */
        FUZZ_CHECK(errno == EMSGSIZE, "kt_wire_send failed: %s", error);
    }
    (void)close(pair[0]);
    (void)close(pair[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_wire");
    int pair[2];
    socket_pair(pair);
    write_all(pair[0], data, size < STREAM_LIMIT ? size : STREAM_LIMIT);
    (void)close(pair[0]);
    char error[256];
    for (;;) {
        json_t *message = (json_t *)&error; /* must be reset to NULL by kt_wire_receive */
        if (kt_wire_receive(pair[1], 1000, &message, error, sizeof error) != 0) {
            int reason = errno;
            FUZZ_CHECK(message == NULL, "a failed receive left a message");
            FUZZ_CHECK(reason == ECONNRESET || reason == EPROTO || reason == EMSGSIZE ||
                           reason == EBADMSG,
                       "unexpected errno %d (%s) after: %s", reason, strerror(reason), error);
            if (reason != EBADMSG)
                break;
            continue;
        }
        FUZZ_CHECK(json_is_object(message), "a received message is not an object");
        check_round_trip(message);
        json_decref(message);
    }
    (void)close(pair[1]);
    return 0;
}
