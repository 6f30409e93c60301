/*
 * aead.c — XChaCha20-Poly1305 (IETF) boxes: a random 24-byte nonce, the ciphertext and the tag.
 * The nonce is long enough that picking it at random never repeats in practice, so boxes need no
 * counter that would have to survive restarts and failovers.
 */
#include <sodium.h>
#include <stdint.h>

#include "crypto/crypto.h"

_Static_assert(KT_AEAD_NONCE_BYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce size");
_Static_assert(KT_AEAD_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag size");
_Static_assert(KT_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key size");

static bool key_usable(const kt_secret *key)
{
    return key != NULL && key->length == KT_KEY_BYTES;
}

int kt_aead_seal(unsigned char *box, size_t box_size, size_t *box_length, const void *plain,
                 size_t plain_length, const void *associated, size_t associated_length,
                 const kt_secret *key)
{
    if (!key_usable(key) || box == NULL || plain_length > SIZE_MAX - KT_AEAD_OVERHEAD ||
        box_size < plain_length + KT_AEAD_OVERHEAD ||
        plain_length > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX)
        return -1;
    unsigned char *nonce = box;
    randombytes_buf(nonce, KT_AEAD_NONCE_BYTES);
    unsigned long long cipher_length = 0;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(box + KT_AEAD_NONCE_BYTES, &cipher_length,
                                                   plain, plain_length, associated,
                                                   associated_length, NULL, nonce,
                                                   key->bytes) != 0)
        return -1;
    if (box_length != NULL)
        *box_length = KT_AEAD_NONCE_BYTES + (size_t)cipher_length;
    return 0;
}

int kt_aead_open(kt_secret **plain, const unsigned char *box, size_t box_length,
                 const void *associated, size_t associated_length, const kt_secret *key)
{
    if (!key_usable(key) || box == NULL || box_length < KT_AEAD_OVERHEAD)
        return -1;
    kt_secret *opened = kt_secret_new(box_length - KT_AEAD_OVERHEAD);
    if (opened == NULL)
        return -1;
    unsigned long long opened_length = 0;
    const unsigned char *nonce = box;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(opened->bytes, &opened_length, NULL,
                                                   box + KT_AEAD_NONCE_BYTES,
                                                   box_length - KT_AEAD_NONCE_BYTES, associated,
                                                   associated_length, nonce, key->bytes) != 0 ||
        opened_length != opened->length) {
        kt_secret_free(opened);
        return -1;
    }
    *plain = opened;
    return 0;
}
