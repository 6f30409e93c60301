/*
 * stream.c — encryption of long streams in authenticated pieces (libsodium's
 * crypto_secretstream_xchacha20poly1305), for backup files.
 *
 * A stream starts with a 24-byte header (a random nonce) and is a sequence of messages, each
 * XChaCha20-Poly1305 with KT_STREAM_OVERHEAD bytes of tag. The state chains the messages: one
 * removed, repeated or moved makes every later one fail, and the last message carries the FINAL
 * tag, so a stream cut after any message is told from a complete one. Each message may also
 * authenticate associated data (the backup file's cleartext header goes with the first).
 *
 * The state holds the key, so it lives in a kt_secret. A key check value lets a reader tell a
 * wrong key from altered data before decrypting anything: BLAKE2b keyed by the stream key over a
 * fixed label; it says nothing about the key beyond "this is it".
 */
#include <sodium.h>
#include <stdlib.h>

#include "crypto/crypto.h"

_Static_assert(KT_STREAM_HEADER_BYTES == crypto_secretstream_xchacha20poly1305_HEADERBYTES,
               "secretstream header size");
_Static_assert(KT_STREAM_OVERHEAD == crypto_secretstream_xchacha20poly1305_ABYTES,
               "secretstream overhead");
_Static_assert(KT_KEY_BYTES == crypto_secretstream_xchacha20poly1305_KEYBYTES,
               "secretstream key size");

struct kt_stream {
    kt_secret *state; /* crypto_secretstream_xchacha20poly1305_state */
    bool finished;    /* the FINAL message went through: nothing may follow */
};

static crypto_secretstream_xchacha20poly1305_state *state_of(kt_stream *stream)
{
    return (crypto_secretstream_xchacha20poly1305_state *)(void *)stream->state->bytes;
}

static kt_stream *stream_new(void)
{
    kt_stream *stream = calloc(1, sizeof *stream);
    if (stream == NULL)
        return NULL;
    stream->state = kt_secret_new(sizeof(crypto_secretstream_xchacha20poly1305_state));
    if (stream->state == NULL) {
        free(stream);
        return NULL;
    }
    return stream;
}

void kt_stream_free(kt_stream *stream)
{
    if (stream == NULL)
        return;
    kt_secret_free(stream->state);
    free(stream);
}

int kt_stream_encrypt_start(kt_stream **out, unsigned char header[KT_STREAM_HEADER_BYTES],
                            const kt_secret *key)
{
    *out = NULL;
    if (key == NULL || key->length != KT_KEY_BYTES)
        return -1;
    kt_stream *stream = stream_new();
    if (stream == NULL)
        return -1;
    if (crypto_secretstream_xchacha20poly1305_init_push(state_of(stream), header, key->bytes) !=
        0) {
        kt_stream_free(stream);
        return -1;
    }
    *out = stream;
    return 0;
}

int kt_stream_decrypt_start(kt_stream **out, const unsigned char header[KT_STREAM_HEADER_BYTES],
                            const kt_secret *key)
{
    *out = NULL;
    if (key == NULL || key->length != KT_KEY_BYTES)
        return -1;
    kt_stream *stream = stream_new();
    if (stream == NULL)
        return -1;
    if (crypto_secretstream_xchacha20poly1305_init_pull(state_of(stream), header, key->bytes) !=
        0) {
        kt_stream_free(stream);
        return -1;
    }
    *out = stream;
    return 0;
}

int kt_stream_encrypt(kt_stream *stream, unsigned char *out, const void *in, size_t length,
                      const void *associated, size_t associated_length, bool last)
{
    if (stream->finished)
        return -1;
    unsigned char tag = last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                             : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    if (crypto_secretstream_xchacha20poly1305_push(state_of(stream), out, NULL, in, length,
                                                   associated, associated_length, tag) != 0)
        return -1;
    stream->finished = last;
    return 0;
}

int kt_stream_decrypt(kt_stream *stream, unsigned char *out, size_t *out_length,
                      const unsigned char *in, size_t length, const void *associated,
                      size_t associated_length, bool *last)
{
    unsigned long long plain_length = 0;
    unsigned char tag = 0;
    if (stream->finished || length < KT_STREAM_OVERHEAD ||
        crypto_secretstream_xchacha20poly1305_pull(state_of(stream), out, &plain_length, &tag,
                                                   in, length, associated,
                                                   associated_length) != 0)
        return -1;
    if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE &&
        tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL)
        return -1;
    *last = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
    stream->finished = *last;
    *out_length = (size_t)plain_length;
    return 0;
}

void kt_stream_key_check(unsigned char out[KT_STREAM_KEY_CHECK_BYTES], const kt_secret *key)
{
    static const char label[] = "keytrustee-stream-key-check-v1";
    /* Cannot fail: the output and key lengths are within BLAKE2b's limits. */
    (void)crypto_generichash(out, KT_STREAM_KEY_CHECK_BYTES, (const unsigned char *)label,
                             sizeof label - 1, key->bytes, key->length);
}
