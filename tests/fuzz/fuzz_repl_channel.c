/*
 * fuzz_repl_channel.c — the replication connection (replication/channel.c): the handshake on
 * both sides, and the encrypted frames after it, over real loopback TCP.
 *
 * Input: one mode byte, then what the peer sends. The harness plays the peer on a thread.
 *   mode 0  the peer is a client sending the input as raw bytes: repl_channel_accept must refuse
 *           it (it cannot prove it holds the pair key) without hanging or overrunning a buffer.
 *   mode 1  the peer is a server answering with the input as raw bytes: repl_channel_connect must
 *           refuse it likewise.
 *   mode 2  the peer is a client holding the pair key: it completes the handshake, then sends the
 *           input as a list of records [u8 kind][u16 length LE][bytes]; kind 0xff writes the bytes
 *           raw onto the connection, 0xfe re-sends the previous encrypted frame (a replay), any
 *           other kind is sent as an encrypted message of that type.
 *   mode 3  the same with the harness as the server and the channel as the client.
 * In modes 2 and 3 the harness speaks the protocol as channel.c's header describes it (written
 * again here from that description); a handshake that then fails means the two disagree.
 *
 * Properties: raw peers never get a channel; with an authenticated peer, the messages received
 * are exactly the encrypted frames sent before the first raw or replayed bytes — same order, type
 * and payload — and nothing after them is accepted (no forged, replayed or reordered frame gets
 * through). Every payload received is also handed to the message decoders of protocol.c.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/internal.h"
#include "tests/fuzz/fuzz.h"

#define MAGIC "KTREPL1" /* with its NUL: 8 bytes */
#define NONCE_BYTES 32u
#define TAG_BYTES crypto_aead_chacha20poly1305_ietf_ABYTES
#define MAX_FRAMES 64
#define TIMEOUT_MS 2000

static int listener = -1;
static char port_text[16];
static kt_secret *pair_key;

/* ---- the peer's side of the protocol ------------------------------------------------------- */

typedef struct peer {
    int fd;
    int mode;
    uint8_t purpose;
    const uint8_t *data;
    size_t size;
    unsigned char send_key[32], receive_key[32];
    uint64_t send_counter, receive_counter;
    bool handshake_done;
    /* What was sent as valid encrypted messages before the first raw or replayed bytes. */
    size_t valid_count;
    uint8_t types[MAX_FRAMES];
    unsigned char digests[MAX_FRAMES][32];
    bool tampered;
} peer;

static void keyed_hash(unsigned char out[32], const char *label, uint8_t purpose,
                       const unsigned char *client_nonce, const unsigned char *server_nonce)
{
    crypto_generichash_state state;
    if (crypto_generichash_init(&state, pair_key->bytes, pair_key->length, 32) != 0 ||
        crypto_generichash_update(&state, (const unsigned char *)label, strlen(label)) != 0 ||
        crypto_generichash_update(&state, &purpose, 1) != 0 ||
        crypto_generichash_update(&state, client_nonce, NONCE_BYTES) != 0 ||
        crypto_generichash_update(&state, server_nonce, NONCE_BYTES) != 0 ||
        crypto_generichash_final(&state, out, 32) != 0)
        abort();
}

static bool send_bytes(int fd, const void *data, size_t length)
{
    const unsigned char *at = data;
    while (length > 0) {
        ssize_t sent = send(fd, at, length, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return false;
        at += sent;
        length -= (size_t)sent;
    }
    return true;
}

/* libFuzzer's timers interrupt system calls now and then (EINTR, seen after ~250,000 runs of
 * make fuzz-long): the harness's own waits, accepts and connects go on through them. */
static bool wait_ready(int fd, short events)
{
    struct pollfd poller = {fd, events, 0};
    int ready;
    do {
        ready = poll(&poller, 1, TIMEOUT_MS);
    } while (ready < 0 && errno == EINTR);
    return ready > 0;
}

static int accept_connection(void)
{
    int fd;
    do {
        fd = accept(listener, NULL, NULL);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/* An interrupted connect goes on in the background: wait for it and take its outcome. */
static int connect_to(int fd, const struct sockaddr_in *address)
{
    if (connect(fd, (const struct sockaddr *)address, sizeof *address) == 0)
        return 0;
    if (errno != EINTR)
        return -1;
    int failure = 0;
    socklen_t size = sizeof failure;
    if (!wait_ready(fd, POLLOUT) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &size) != 0)
        return -1;
    if (failure != 0) {
        errno = failure;
        return -1;
    }
    return 0;
}

static bool receive_bytes(int fd, void *data, size_t length)
{
    unsigned char *at = data;
    while (length > 0) {
        if (!wait_ready(fd, POLLIN))
            return false;
        ssize_t got = recv(fd, at, length, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        at += got;
        length -= (size_t)got;
    }
    return true;
}

static bool send_clear(int fd, const void *body, size_t length)
{
    unsigned char prefix[4];
    repl_put_le32(prefix, (uint32_t)length);
    return send_bytes(fd, prefix, 4) && send_bytes(fd, body, length);
}

static bool receive_clear(int fd, void *body, size_t length)
{
    unsigned char prefix[4];
    return receive_bytes(fd, prefix, 4) && repl_get_le32(prefix) == length &&
           receive_bytes(fd, body, length);
}

static void frame_nonce(unsigned char nonce[12], uint64_t counter)
{
    memset(nonce, 0, 12);
    repl_put_le64(nonce + 4, counter);
}

/* Builds an encrypted frame; returns its length (4 + 1 + length + tag). */
static size_t seal_frame(peer *self, uint8_t type, const uint8_t *payload, size_t length,
                         unsigned char *frame)
{
    size_t plain_length = 1 + length;
    repl_put_le32(frame, (uint32_t)(plain_length + TAG_BYTES));
    frame[4] = type;
    if (length > 0)
        memcpy(frame + 5, payload, length);
    unsigned char nonce[12];
    frame_nonce(nonce, self->send_counter++);
    unsigned long long sealed = 0;
    if (crypto_aead_chacha20poly1305_ietf_encrypt(frame + 4, &sealed, frame + 4, plain_length,
                                                  frame, 4, NULL, nonce, self->send_key) != 0)
        abort();
    return 4 + (size_t)sealed;
}

static bool receive_ready(peer *self)
{
    unsigned char prefix[4], sealed[64];
    if (!receive_bytes(self->fd, prefix, 4) || repl_get_le32(prefix) != 1 + TAG_BYTES ||
        !receive_bytes(self->fd, sealed, 1 + TAG_BYTES))
        return false;
    unsigned char nonce[12], plain[1];
    unsigned long long plain_length = 0;
    frame_nonce(nonce, self->receive_counter++);
    return crypto_aead_chacha20poly1305_ietf_decrypt(plain, &plain_length, NULL, sealed,
                                                     1 + TAG_BYTES, prefix, 4, nonce,
                                                     self->receive_key) == 0 &&
           plain_length == 1 && plain[0] == 0;
}

static bool client_handshake(peer *self)
{
    unsigned char hello[8 + 1 + NONCE_BYTES], challenge[8 + NONCE_BYTES + 32], proof[32];
    memcpy(hello, MAGIC, 8);
    hello[8] = self->purpose;
    kt_random(hello + 9, NONCE_BYTES);
    if (!send_clear(self->fd, hello, sizeof hello) ||
        !receive_clear(self->fd, challenge, sizeof challenge))
        return false;
    keyed_hash(proof, "ktrepl client proof v1", self->purpose, hello + 9, challenge + 8);
    keyed_hash(self->send_key, "ktrepl c2s key v1", self->purpose, hello + 9, challenge + 8);
    keyed_hash(self->receive_key, "ktrepl s2c key v1", self->purpose, hello + 9, challenge + 8);
    return send_clear(self->fd, proof, sizeof proof) && receive_ready(self);
}

static bool server_handshake(peer *self)
{
    unsigned char hello[8 + 1 + NONCE_BYTES], challenge[8 + NONCE_BYTES + 32], proof[32];
    if (!receive_clear(self->fd, hello, sizeof hello))
        return false;
    self->purpose = hello[8];
    memcpy(challenge, MAGIC, 8);
    kt_random(challenge + 8, NONCE_BYTES);
    keyed_hash(challenge + 8 + NONCE_BYTES, "ktrepl server proof v1", self->purpose, hello + 9,
               challenge + 8);
    keyed_hash(self->send_key, "ktrepl s2c key v1", self->purpose, hello + 9, challenge + 8);
    keyed_hash(self->receive_key, "ktrepl c2s key v1", self->purpose, hello + 9, challenge + 8);
    if (!send_clear(self->fd, challenge, sizeof challenge) ||
        !receive_clear(self->fd, proof, sizeof proof))
        return false;
    unsigned char ready[4 + 1 + TAG_BYTES];
    size_t length = seal_frame(self, 0, NULL, 0, ready);
    return send_bytes(self->fd, ready, length);
}

/* Sends the input's records after the handshake. */
static void send_records(peer *self)
{
    fuzz_reader reader = {self->data, self->size};
    unsigned char *frame = malloc(4 + 1 + 65535 + TAG_BYTES);
    unsigned char *previous = malloc(4 + 1 + 65535 + TAG_BYTES);
    size_t previous_length = 0;
    if (frame == NULL || previous == NULL)
        abort();
    while (reader.size > 0) {
        uint8_t kind = fuzz_take_byte(&reader);
        size_t length = fuzz_take_byte(&reader);
        length |= (size_t)fuzz_take_byte(&reader) << 8;
        size_t taken = 0;
        const uint8_t *bytes = fuzz_take(&reader, length, &taken);
        bool sent;
        if (kind == 0xff) {
            self->tampered = self->tampered || taken > 0;
            sent = send_bytes(self->fd, bytes, taken);
        } else if (kind == 0xfe) {
            self->tampered = self->tampered || previous_length > 0;
            sent = send_bytes(self->fd, previous, previous_length);
        } else {
            size_t frame_length = seal_frame(self, kind, bytes, taken, frame);
            if (!self->tampered && self->valid_count < MAX_FRAMES) {
                self->types[self->valid_count] = kind;
                crypto_generichash(self->digests[self->valid_count], 32, bytes, taken, NULL, 0);
                self->valid_count++;
            } else {
                self->tampered = true; /* past MAX_FRAMES: stop predicting */
            }
            sent = send_bytes(self->fd, frame, frame_length);
            memcpy(previous, frame, frame_length);
            previous_length = frame_length;
        }
        if (!sent)
            break;
    }
    free(frame);
    free(previous);
}

/* Small writes must leave at once, as the channel's own do: no Nagle delay on loopback. */
static void no_delay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        abort();
}

static void *peer_main(void *context)
{
    peer *self = context;
    if (self->mode == 1 || self->mode == 3) {
        if (!wait_ready(listener, POLLIN) || (self->fd = accept_connection()) < 0)
            return NULL;
    }
    no_delay(self->fd);
    if (self->mode == 0 || self->mode == 1) {
        (void)send_bytes(self->fd, self->data, self->size);
    } else {
        self->handshake_done =
            self->mode == 2 ? client_handshake(self) : server_handshake(self);
        if (self->handshake_done)
            send_records(self);
    }
    (void)shutdown(self->fd, SHUT_WR);
    unsigned char sink[4096];
    while (receive_bytes(self->fd, sink, 1)) /* until the channel side closes */
        ;
    return NULL;
}

/* ---- the channel's side ---------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup("fuzz_repl_channel");
    unsigned char key[32];
    memset(key, 0x5a, sizeof key);
    pair_key = kt_secret_from(key, sizeof key);
    char error[256];
    if (pair_key == NULL || repl_listen(&listener, "127.0.0.1", "0", error, sizeof error) != 0) {
        fprintf(stderr, "fuzz_repl_channel: %s\n", error);
        abort();
    }
    struct sockaddr_in address;
    socklen_t size = sizeof address;
    if (getsockname(listener, (struct sockaddr *)&address, &size) != 0)
        abort();
    snprintf(port_text, sizeof port_text, "%u", (unsigned)ntohs(address.sin_port));
    return 0;
}

static void decode_payload(uint8_t type, const unsigned char *payload, size_t length)
{
    union {
        repl_msg_position position;
        repl_msg_decision decision;
        repl_msg_tx tx;
        repl_msg_ack ack;
        repl_msg_nack nack;
        repl_msg_basecopy_begin begin;
    } message;
    switch (type) {
    case REPL_MSG_POSITION:
        (void)repl_decode_position_msg(payload, length, &message.position);
        break;
    case REPL_MSG_DECISION: (void)repl_decode_decision(payload, length, &message.decision); break;
    case REPL_MSG_TX: (void)repl_decode_tx(payload, length, &message.tx); break;
    case REPL_MSG_NACK: (void)repl_decode_nack(payload, length, &message.nack); break;
    case REPL_MSG_BASECOPY_BEGIN:
        (void)repl_decode_basecopy_begin(payload, length, &message.begin);
        break;
    default: (void)repl_decode_ack(payload, length, &message.ack); break;
    }
}

/* Receives until the channel fails, checking each message against what the peer sent. */
static void receive_all(repl_channel *channel, const peer *other)
{
    size_t received = 0;
    for (;;) {
        uint8_t type = 0;
        unsigned char *payload = NULL;
        size_t length = 0;
        int got = repl_channel_receive(channel, &type, &payload, &length, TIMEOUT_MS, TIMEOUT_MS);
        if (got != 1) {
            free(payload);
            break;
        }
        unsigned char digest[32];
        crypto_generichash(digest, 32, payload, length, NULL, 0);
        FUZZ_CHECK(received < other->valid_count || other->valid_count == MAX_FRAMES,
                   "message %zu accepted after the first raw or replayed bytes", received);
        if (received < other->valid_count)
            FUZZ_CHECK(type == other->types[received] &&
                           memcmp(digest, other->digests[received], 32) == 0,
                       "message %zu differs from the frame sent", received);
        decode_payload(type, payload, length);
        received++;
        free(payload);
    }
    if (!other->tampered)
        FUZZ_CHECK(received == other->valid_count, "%zu of %zu messages arrived", received,
                   other->valid_count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    peer other;
    memset(&other, 0, sizeof other);
    other.fd = -1;
    other.mode = data[0] & 3;
    other.purpose = (data[0] & 4) ? REPL_PURPOSE_BASECOPY : REPL_PURPOSE_STREAM;
    other.data = data + 1;
    other.size = size - 1;

    int channel_fd = -1;
    if (other.mode == 0 || other.mode == 2) {
        /* The peer connects; the channel side accepts. */
        struct sockaddr_in address = {.sin_family = AF_INET,
                                      .sin_port = htons((uint16_t)atoi(port_text)),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        other.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(other.fd >= 0, "socket: %s", strerror(errno));
        /* Hundreds of connections a second leave tens of thousands of TIME-WAIT entries between
         * 127.0.0.1 and the listener; after a couple of minutes connect found no free source
         * port (make fuzz-long, not a defect of the channel). Each run connects from its own
         * source address in 127.0.1.0/24, so the harness's connections never compete for the
         * ports of the 127.0.0.1 connections the channel makes itself in modes 1 and 3. */
        static unsigned source_index;
        struct sockaddr_in source = {.sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(0x7f000100u | (1 + source_index++ % 254))};
        FUZZ_CHECK(bind(other.fd, (struct sockaddr *)&source, sizeof source) == 0, "bind: %s",
                   strerror(errno));
        FUZZ_CHECK(connect_to(other.fd, &address) == 0, "connect to the channel's listener: %s",
                   strerror(errno));
        channel_fd = accept_connection();
        FUZZ_CHECK(channel_fd >= 0, "accept: %s", strerror(errno));
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, peer_main, &other) != 0)
        abort();

    repl_channel *channel = NULL;
    char error[256];
    int result;
    if (other.mode == 0 || other.mode == 2) {
        uint8_t purpose = 0;
        result = repl_channel_accept(&channel, channel_fd, "fuzz-peer", pair_key, &purpose,
                                     TIMEOUT_MS, error, sizeof error);
        if (result != 0)
            (void)close(channel_fd); /* still ours after a refused handshake */
    } else {
        result = repl_channel_connect(&channel, "127.0.0.1", port_text, pair_key, other.purpose,
                                      TIMEOUT_MS, error, sizeof error);
    }
    if (other.mode < 2) {
        FUZZ_CHECK(result != 0, "a peer without the pair key got a channel");
    } else {
        FUZZ_CHECK(result == 0, "the handshake with a peer holding the key failed: %s", error);
        receive_all(channel, &other);
    }
    repl_channel_close(channel);
    if (pthread_join(thread, NULL) != 0)
        abort();
    FUZZ_CHECK(other.mode < 2 || other.handshake_done, "the peer's handshake did not finish");
    if (other.fd >= 0)
        (void)close(other.fd);
    return 0;
}
