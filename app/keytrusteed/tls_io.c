/*
 * tls_io.c — keytrusteed's own mbedtls_net_recv, which CivetWeb's TLS layer reads through.
 *
 * Why this exists: CivetWeb 1.15's mbedTLS glue (mod_mbedtls.inl) runs the TLS handshake on a
 * non-blocking socket in a loop that retries on MBEDTLS_ERR_SSL_WANT_READ without waiting and
 * without a timeout. A client that opens a TCP connection and sends nothing therefore pins a
 * worker thread at 100% CPU for as long as it stays connected; sixteen such connections stop the
 * server, and mg_stop waits for them forever.
 *
 * CivetWeb hands mbedtls_net_recv to mbedtls_ssl_set_bio. Because civetweb.o is linked into this
 * executable, defining the function here makes CivetWeb use this version instead of libmbedtls's
 * (libmbedtls itself never calls it). It behaves like the original, except that where the original
 * returns WANT_READ at once on an empty non-blocking socket, this one waits for data with poll()
 * for up to KTD_RECEIVE_TIMEOUT_MS and then fails with MBEDTLS_ERR_SSL_TIMEOUT, which ends the
 * handshake (or the connection). After the handshake CivetWeb polls before reading, so this only
 * waits when a TLS record arrives in pieces.
 *
 * The right long-term fix is in CivetWeb's handshake loop (poll with a timeout and watch the stop
 * flag); once the fetched CivetWeb carries it, this file can go.
 */
#include <errno.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <poll.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

#define KTD_RECEIVE_TIMEOUT_MS 10000

/* Waits until the socket is readable: 1 ready, 0 timed out, -1 error. */
static int wait_readable(int descriptor)
{
    struct pollfd poll_descriptor = {.fd = descriptor, .events = POLLIN};
    for (;;) {
        int ready = poll(&poll_descriptor, 1, KTD_RECEIVE_TIMEOUT_MS);
        if (ready >= 0)
            return ready > 0 ? 1 : 0;
        if (errno != EINTR)
            return -1;
    }
}

int mbedtls_net_recv(void *context, unsigned char *buffer, size_t length)
{
    int descriptor = ((mbedtls_net_context *)context)->fd;
    if (descriptor < 0)
        return MBEDTLS_ERR_NET_INVALID_CONTEXT;
    for (;;) {
        ssize_t count = read(descriptor, buffer, length);
        if (count >= 0)
            return (int)count; /* 0: the peer closed */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ready = wait_readable(descriptor);
            if (ready > 0)
                continue;
            return ready == 0 ? MBEDTLS_ERR_SSL_TIMEOUT : MBEDTLS_ERR_NET_RECV_FAILED;
        }
        if (errno == EPIPE || errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}
