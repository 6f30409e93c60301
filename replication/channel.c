/*
 * channel.c — the replication connection: TCP, both peers proving they hold the pair key, then
 * every message encrypted and authenticated.
 *
 * Frames on the wire: u32 little-endian length, then that many bytes. At most
 * REPL_MAX_MESSAGE_BYTES plus overhead; a longer length closes the connection.
 *
 * Handshake (cleartext frames)
 *   client → server  HELLO      "KTREPL1\0", u8 purpose (stream, base copy or fence),
 *                               client nonce (32)
 *   server → client  CHALLENGE  "KTREPL1\0", server nonce (32), server proof (32)
 *   client → server  PROOF      client proof (32), sent before checking the server's so that
 *                               both sides can log a key mismatch
 *   server → client  READY      the first encrypted frame (empty payload)
 *   proof  = BLAKE2b-256 keyed with the pair key over (label, purpose, client nonce, server nonce),
 *   labels "ktrepl server proof v1" and "ktrepl client proof v1": distinct so one side's proof can
 *   never be replayed as the other's; fresh nonces on both sides so no proof is ever reused. Each
 *   side compares in constant time; a wrong key on either side ends the connection, and the side
 *   that noticed says so in its log (never the key, never a proof).
 * Encrypted frames
 *   Session keys: BLAKE2b-256 keyed with the pair key over ("ktrepl c2s key v1" | "ktrepl s2c key
 *   v1", client nonce, server nonce): one key per direction, new for every connection.
 *   Frame body: ChaCha20-Poly1305 (IETF) of (u8 type, payload), associated data the 4 length
 *   bytes, nonce = 4 zero bytes and a u64 message counter per direction starting at 0. A frame
 *   that fails to decrypt (altered, replayed, reordered, truncated) makes the channel unusable:
 *   the caller closes the connection and logs why.
 * Sockets are non-blocking; every read and write has a deadline, so a peer that stops answering
 * (SIGSTOP, a cut cable) never blocks a thread forever.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/internal.h"

#define HELLO_MAGIC "KTREPL1"
#define NONCE_BYTES 32u
#define PROOF_BYTES 32u
#define TAG_BYTES crypto_aead_chacha20poly1305_ietf_ABYTES
#define READY_TYPE 0

struct repl_channel {
    int fd;
    char peer[64];
    kt_secret *send_key;
    kt_secret *receive_key;
    uint64_t send_counter;
    uint64_t receive_counter;
    /* One thread may send while another receives (walsender.c: the committing thread sends its
     * transaction while the session thread reads acknowledgements): the keys and counters of each
     * direction are separate, and the failure is set once, under this lock. */
    pthread_mutex_t failure_lock;
    bool broken;
    char error[160];
};

static void channel_fail(repl_channel *channel, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void channel_fail(repl_channel *channel, const char *format, ...)
{
    (void)pthread_mutex_lock(&channel->failure_lock);
    if (!channel->broken) { /* the first failure is the one worth saying */
        va_list arguments;
        va_start(arguments, format);
        int written = vsnprintf(channel->error, sizeof channel->error, format, arguments);
        va_end(arguments);
        if (written < 0) {
            channel->error[0] = '\0';
        }
        channel->broken = true;
    }
    (void)pthread_mutex_unlock(&channel->failure_lock);
}

static bool channel_broken(repl_channel *channel)
{
    (void)pthread_mutex_lock(&channel->failure_lock);
    bool broken = channel->broken;
    (void)pthread_mutex_unlock(&channel->failure_lock);
    return broken;
}

/* ---- raw I/O with deadlines ----------------------------------------------------------------- */

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - repl_now_ms();
        if (left < 0) {
            left = 0;
        }
        struct pollfd poller = {fd, events, 0};
        int ready = poll(&poller, 1, (int)left);
        if (ready > 0) {
            return 0;
        }
        if (ready == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

/* Reads exactly `length` bytes before the deadline; -1 with errno (0 when the peer closed). */
static int read_exact(int fd, void *buffer, size_t length, int64_t deadline)
{
    unsigned char *at = buffer;
    while (length > 0) {
        ssize_t got = recv(fd, at, length, 0);
        if (got > 0) {
            at += got;
            length -= (size_t)got;
            continue;
        }
        if (got == 0) {
            errno = 0;
            return -1;
        }
        if (errno == EINTR) {
            continue;
        }
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_fd(fd, POLLIN, deadline) != 0) {
            return -1;
        }
    }
    return 0;
}

static int write_exact(int fd, const void *buffer, size_t length, int64_t deadline)
{
    const unsigned char *at = buffer;
    while (length > 0) {
        ssize_t sent = send(fd, at, length, MSG_NOSIGNAL);
        if (sent > 0) {
            at += sent;
            length -= (size_t)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR) {
            continue;
        }
        if ((sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
            wait_fd(fd, POLLOUT, deadline) != 0) {
            return -1;
        }
    }
    return 0;
}

static const char *io_reason(void)
{
    if (errno == 0) {
        return "closed by the peer";
    }
    if (errno == ETIMEDOUT) {
        return "timed out";
    }
    return strerror(errno);
}

static int send_clear(repl_channel *channel, const void *body, size_t length, int64_t deadline)
{
    unsigned char prefix[4];
    repl_put_le32(prefix, (uint32_t)length);
    if (write_exact(channel->fd, prefix, 4, deadline) != 0 ||
        write_exact(channel->fd, body, length, deadline) != 0) {
        channel_fail(channel, "sending the handshake to %s failed: %s", channel->peer,
                     io_reason());
        return -1;
    }
    return 0;
}

static int receive_clear(repl_channel *channel, void *body, size_t length, int64_t deadline)
{
    unsigned char prefix[4];
    if (read_exact(channel->fd, prefix, 4, deadline) != 0) {
        channel_fail(channel, "handshake with %s failed: %s", channel->peer, io_reason());
        return -1;
    }
    if (repl_get_le32(prefix) != length) {
        channel_fail(channel, "handshake with %s failed: unexpected message", channel->peer);
        return -1;
    }
    if (read_exact(channel->fd, body, length, deadline) != 0) {
        channel_fail(channel, "handshake with %s failed: %s", channel->peer, io_reason());
        return -1;
    }
    return 0;
}

/* ---- keys ----------------------------------------------------------------------------------- */

static void keyed_hash(unsigned char out[32], const kt_secret *key, const char *label,
                       uint8_t purpose, const unsigned char *client_nonce,
                       const unsigned char *server_nonce)
{
    crypto_generichash_state state;
    (void)crypto_generichash_init(&state, key->bytes, key->length, 32);
    (void)crypto_generichash_update(&state, (const unsigned char *)label, strlen(label));
    (void)crypto_generichash_update(&state, &purpose, 1);
    (void)crypto_generichash_update(&state, client_nonce, NONCE_BYTES);
    (void)crypto_generichash_update(&state, server_nonce, NONCE_BYTES);
    (void)crypto_generichash_final(&state, out, 32);
    sodium_memzero(&state, sizeof state);
}

static int derive_session_keys(repl_channel *channel, const kt_secret *pair_key, bool client,
                               uint8_t purpose, const unsigned char *client_nonce,
                               const unsigned char *server_nonce)
{
    kt_secret *c2s = kt_secret_new(crypto_aead_chacha20poly1305_ietf_KEYBYTES);
    kt_secret *s2c = kt_secret_new(crypto_aead_chacha20poly1305_ietf_KEYBYTES);
    if (c2s == NULL || s2c == NULL) {
        kt_secret_free(c2s);
        kt_secret_free(s2c);
        channel_fail(channel, "out of secure memory for session keys");
        return -1;
    }
    keyed_hash(c2s->bytes, pair_key, "ktrepl c2s key v1", purpose, client_nonce, server_nonce);
    keyed_hash(s2c->bytes, pair_key, "ktrepl s2c key v1", purpose, client_nonce, server_nonce);
    channel->send_key = client ? c2s : s2c;
    channel->receive_key = client ? s2c : c2s;
    return 0;
}

/* ---- sockets -------------------------------------------------------------------------------- */

static int set_socket_options(int fd)
{
    int one = 1;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        return -1;
    }
    /* Small frames (acknowledgements, heartbeats) must leave at once. */
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int repl_listen(int *listen_fd, const char *host, const char *port, char *error,
                size_t error_size)
{
    struct addrinfo hints = {0}, *addresses = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int status = getaddrinfo(host, port, &hints, &addresses);
    if (status != 0) {
        repl_error(error, error_size, "cannot resolve the replication address %s:%s: %s",
                   host ? host : "*", port, gai_strerror(status));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *address = addresses; address != NULL; address = address->ai_next) {
        fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
        if (fd < 0) {
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, address->ai_addr, address->ai_addrlen) == 0 && listen(fd, 8) == 0) {
            break;
        }
        (void)close(fd);
        fd = -1;
    }
    freeaddrinfo(addresses);
    if (fd < 0) {
        repl_error(error, error_size, "cannot listen for replication on %s:%s: %m",
                   host ? host : "*", port);
        return -1;
    }
    *listen_fd = fd;
    return 0;
}

static int connect_one(const struct addrinfo *address, int64_t deadline)
{
    int fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) {
        return -1;
    }
    if (set_socket_options(fd) != 0) {
        (void)close(fd);
        return -1;
    }
    if (connect(fd, address->ai_addr, address->ai_addrlen) != 0) {
        int failure = 0;
        socklen_t size = sizeof failure;
        if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &size) != 0 || failure != 0) {
            if (failure != 0) {
                errno = failure;
            }
            int saved = errno;
            (void)close(fd);
            errno = saved;
            return -1;
        }
    }
    return fd;
}

static repl_channel *channel_new(int fd, const char *peer)
{
    repl_channel *channel = calloc(1, sizeof *channel);
    if (channel == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&channel->failure_lock, NULL) != 0) {
        free(channel);
        return NULL;
    }
    channel->fd = fd;
    (void)snprintf(channel->peer, sizeof channel->peer, "%s", peer);
    return channel;
}

/* ---- handshake ------------------------------------------------------------------------------ */

static int client_handshake(repl_channel *channel, const kt_secret *pair_key, uint8_t purpose,
                            int64_t deadline)
{
    unsigned char hello[8 + 1 + NONCE_BYTES];
    unsigned char client_nonce[NONCE_BYTES];
    kt_random(client_nonce, sizeof client_nonce);
    memcpy(hello, HELLO_MAGIC, 8);
    hello[8] = purpose;
    memcpy(hello + 9, client_nonce, NONCE_BYTES);
    unsigned char challenge[8 + NONCE_BYTES + PROOF_BYTES];
    if (send_clear(channel, hello, sizeof hello, deadline) != 0 ||
        receive_clear(channel, challenge, sizeof challenge, deadline) != 0) {
        return -1;
    }
    const unsigned char *server_nonce = challenge + 8;
    unsigned char expected[PROOF_BYTES], proof[PROOF_BYTES];
    keyed_hash(expected, pair_key, "ktrepl server proof v1", purpose, client_nonce, server_nonce);
    keyed_hash(proof, pair_key, "ktrepl client proof v1", purpose, client_nonce, server_nonce);
    /* The proof goes out even when the server's does not hold, so that the server, too, can say
     * in its log that the peer has another key; it reveals nothing the key could be found from. */
    if (send_clear(channel, proof, sizeof proof, deadline) != 0) {
        return -1;
    }
    if (memcmp(challenge, HELLO_MAGIC, 8) != 0 ||
        !kt_equal(expected, challenge + 8 + NONCE_BYTES, PROOF_BYTES)) {
        channel_fail(channel,
                     "replication peer %s does not hold our pair key (wrong server key file?)",
                     channel->peer);
        return -1;
    }
    if (derive_session_keys(channel, pair_key, true, purpose, client_nonce, server_nonce) != 0) {
        return -1;
    }
    uint8_t type = 0;
    unsigned char *payload = NULL;
    size_t length = 0;
    int wait = (int)(deadline - repl_now_ms());
    int got = repl_channel_receive(channel, &type, &payload, &length, wait > 0 ? wait : 0,
                                   wait > 0 ? wait : 0);
    free(payload);
    if (got != 1 || type != READY_TYPE || length != 0) {
        channel_fail(channel, "replication peer %s refused our proof (does it hold the same "
                     "server key file?)", channel->peer);
        return -1;
    }
    return 0;
}

static int server_handshake(repl_channel *channel, const kt_secret *pair_key, uint8_t *purpose,
                            int64_t deadline)
{
    unsigned char hello[8 + 1 + NONCE_BYTES];
    if (receive_clear(channel, hello, sizeof hello, deadline) != 0) {
        return -1;
    }
    if (memcmp(hello, HELLO_MAGIC, 8) != 0 ||
        (hello[8] != REPL_PURPOSE_STREAM && hello[8] != REPL_PURPOSE_BASECOPY &&
         hello[8] != REPL_PURPOSE_FENCE)) {
        channel_fail(channel, "refused replication peer %s: not a keytrustee replication client",
                     channel->peer);
        return -1;
    }
    *purpose = hello[8];
    const unsigned char *client_nonce = hello + 9;
    unsigned char challenge[8 + NONCE_BYTES + PROOF_BYTES];
    memcpy(challenge, HELLO_MAGIC, 8);
    kt_random(challenge + 8, NONCE_BYTES);
    const unsigned char *server_nonce = challenge + 8;
    keyed_hash(challenge + 8 + NONCE_BYTES, pair_key, "ktrepl server proof v1", *purpose,
               client_nonce, server_nonce);
    unsigned char proof[PROOF_BYTES], expected[PROOF_BYTES];
    if (send_clear(channel, challenge, sizeof challenge, deadline) != 0 ||
        receive_clear(channel, proof, sizeof proof, deadline) != 0) {
        return -1;
    }
    keyed_hash(expected, pair_key, "ktrepl client proof v1", *purpose, client_nonce,
               server_nonce);
    if (!kt_equal(expected, proof, PROOF_BYTES)) {
        channel_fail(channel, "refused replication peer %s: it does not hold our pair key",
                     channel->peer);
        return -1;
    }
    if (derive_session_keys(channel, pair_key, false, *purpose, client_nonce, server_nonce) != 0) {
        return -1;
    }
    int wait = (int)(deadline - repl_now_ms());
    return repl_channel_send(channel, READY_TYPE, NULL, 0, wait > 0 ? wait : 1);
}

int repl_channel_connect(repl_channel **out, const char *host, const char *port,
                         const kt_secret *pair_key, uint8_t purpose, int timeout_ms,
                         char *error, size_t error_size)
{
    *out = NULL;
    int64_t deadline = repl_now_ms() + timeout_ms;
    struct addrinfo hints = {0}, *addresses = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int status = getaddrinfo(host, port, &hints, &addresses);
    if (status != 0) {
        repl_error(error, error_size, "cannot resolve the active %s:%s: %s", host, port,
                   gai_strerror(status));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *address = addresses; address && fd < 0; address = address->ai_next) {
        fd = connect_one(address, deadline);
    }
    freeaddrinfo(addresses);
    if (fd < 0) {
        repl_error(error, error_size, "cannot connect to the active %s:%s: %s", host, port,
                   io_reason());
        return -1;
    }
    char peer[64];
    (void)snprintf(peer, sizeof peer, "%s:%s", host, port);
    repl_channel *channel = channel_new(fd, peer);
    if (channel == NULL) {
        (void)close(fd);
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    if (client_handshake(channel, pair_key, purpose, deadline) != 0) {
        repl_error(error, error_size, "%s", channel->error);
        repl_channel_close(channel);
        return -1;
    }
    *out = channel;
    return 0;
}

int repl_channel_accept(repl_channel **out, int fd, const char *peer, const kt_secret *pair_key,
                        uint8_t *purpose, int timeout_ms, char *error, size_t error_size)
{
    *out = NULL;
    if (set_socket_options(fd) != 0) {
        repl_error(error, error_size, "cannot set up the connection from %s: %m", peer);
        return -1;
    }
    repl_channel *channel = channel_new(fd, peer);
    if (channel == NULL) {
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    if (server_handshake(channel, pair_key, purpose, repl_now_ms() + timeout_ms) != 0) {
        repl_error(error, error_size, "%s", channel->error);
        channel->fd = -1; /* the caller's to close */
        repl_channel_close(channel);
        return -1;
    }
    *out = channel;
    return 0;
}

/* ---- encrypted messages --------------------------------------------------------------------- */

static void counter_nonce(unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES],
                          uint64_t counter)
{
    memset(nonce, 0, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
    repl_put_le64(nonce + 4, counter);
}

/* The encrypted frame of one message (malloc'd), or NULL with the channel failed. */
static unsigned char *seal_frame(repl_channel *channel, uint8_t type, const void *payload,
                                 size_t length, size_t *frame_length)
{
    if (length > REPL_MAX_MESSAGE_BYTES) {
        channel_fail(channel, "a message of %zu bytes is too large to send", length);
        return NULL;
    }
    size_t plain_length = 1 + length;
    *frame_length = 4 + plain_length + TAG_BYTES;
    unsigned char *frame = malloc(*frame_length);
    if (frame == NULL) {
        channel_fail(channel, "out of memory sending %zu bytes", length);
        return NULL;
    }
    repl_put_le32(frame, (uint32_t)(plain_length + TAG_BYTES));
    frame[4] = type;
    if (length > 0) {
        memcpy(frame + 5, payload, length);
    }
    unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    counter_nonce(nonce, channel->send_counter++);
    unsigned long long sealed = 0;
    (void)crypto_aead_chacha20poly1305_ietf_encrypt(frame + 4, &sealed, frame + 4, plain_length,
                                                    frame, 4, NULL, nonce,
                                                    channel->send_key->bytes);
    return frame;
}

/* Sends the first `numerator`/`denominator` of the message's frame. */
static int send_part(repl_channel *channel, uint8_t type, const void *payload, size_t length,
                     int timeout_ms, size_t numerator, size_t denominator)
{
    if (channel_broken(channel)) {
        return -1;
    }
    size_t frame_length = 0;
    unsigned char *frame = seal_frame(channel, type, payload, length, &frame_length);
    if (frame == NULL) {
        return -1;
    }
    int64_t deadline = repl_now_ms() + timeout_ms + repl_transfer_allowance_ms(frame_length);
    int result = write_exact(channel->fd, frame, frame_length / denominator * numerator, deadline);
    free(frame);
    if (result != 0) {
        channel_fail(channel, "sending to %s failed: %s", channel->peer, io_reason());
    }
    return result;
}

int repl_channel_send(repl_channel *channel, uint8_t type, const void *payload, size_t length,
                      int timeout_ms)
{
    return send_part(channel, type, payload, length, timeout_ms, 1, 1);
}

int repl_channel_send_torn(repl_channel *channel, uint8_t type, const void *payload,
                           size_t length, int timeout_ms)
{
    return send_part(channel, type, payload, length, timeout_ms, 1, 2);
}

int repl_channel_receive(repl_channel *channel, uint8_t *type, unsigned char **payload,
                         size_t *length, int wait_ms, int complete_ms)
{
    *payload = NULL;
    *length = 0;
    if (channel_broken(channel)) {
        return -1;
    }
    if (wait_fd(channel->fd, POLLIN, repl_now_ms() + wait_ms) != 0) {
        if (errno == ETIMEDOUT) {
            return 0;
        }
        channel_fail(channel, "waiting for %s failed: %m", channel->peer);
        return -1;
    }
    int64_t deadline = repl_now_ms() + complete_ms;
    unsigned char prefix[4];
    if (read_exact(channel->fd, prefix, 4, deadline) != 0) {
        channel_fail(channel, "connection with %s: %s", channel->peer, io_reason());
        return -1;
    }
    uint32_t sealed_length = repl_get_le32(prefix);
    if (sealed_length < 1 + TAG_BYTES || sealed_length > REPL_MAX_MESSAGE_BYTES + 1 + TAG_BYTES) {
        channel_fail(channel, "%s sent a frame of impossible length %u", channel->peer,
                     sealed_length);
        return -1;
    }
    unsigned char *sealed = malloc(sealed_length);
    if (sealed == NULL) {
        channel_fail(channel, "out of memory receiving %u bytes", sealed_length);
        return -1;
    }
    deadline += repl_transfer_allowance_ms(sealed_length);
    if (read_exact(channel->fd, sealed, sealed_length, deadline) != 0) {
        free(sealed);
        channel_fail(channel, "connection with %s: %s", channel->peer, io_reason());
        return -1;
    }
    unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    counter_nonce(nonce, channel->receive_counter++);
    unsigned long long plain_length = 0;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(sealed, &plain_length, NULL, sealed,
                                                  sealed_length, prefix, 4, nonce,
                                                  channel->receive_key->bytes) != 0) {
        free(sealed);
        channel_fail(channel, "a message from %s failed authentication", channel->peer);
        return -1;
    }
    *type = sealed[0];
    memmove(sealed, sealed + 1, (size_t)plain_length - 1);
    *payload = sealed;
    *length = (size_t)plain_length - 1;
    return 1;
}

int repl_channel_fd(const repl_channel *channel) { return channel->fd; }
const char *repl_channel_peer(const repl_channel *channel) { return channel->peer; }

const char *repl_channel_error(repl_channel *channel)
{
    (void)pthread_mutex_lock(&channel->failure_lock); /* written once, before `broken` is set */
    (void)pthread_mutex_unlock(&channel->failure_lock);
    return channel->error;
}

void repl_channel_shutdown(repl_channel *channel)
{
    if (channel != NULL) {
        (void)shutdown(channel->fd, SHUT_RDWR);
    }
}

void repl_channel_close(repl_channel *channel)
{
    if (channel == NULL) {
        return;
    }
    if (channel->fd >= 0) {
        (void)close(channel->fd);
    }
    kt_secret_free(channel->send_key);
    kt_secret_free(channel->receive_key);
    (void)pthread_mutex_destroy(&channel->failure_lock);
    free(channel);
}
