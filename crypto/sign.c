/*
 * sign.c — Ed25519 signatures and the fingerprints that name public keys.
 */
#include <sodium.h>

#include "crypto/crypto.h"

_Static_assert(KT_SIGN_PUBLIC_BYTES == crypto_sign_PUBLICKEYBYTES, "Ed25519 public key size");
_Static_assert(KT_SIGN_SECRET_BYTES == crypto_sign_SECRETKEYBYTES, "Ed25519 secret key size");
_Static_assert(KT_SIGNATURE_BYTES == crypto_sign_BYTES, "Ed25519 signature size");

/* The fingerprint shows the first 20 bytes of the hash: 160 bits, as many as a SHA-1 name. */
#define KT_FINGERPRINT_BYTES (KT_FINGERPRINT_CHARS / 2)

int kt_sign_keypair(unsigned char public_key[KT_SIGN_PUBLIC_BYTES], kt_secret **secret_key)
{
    kt_secret *secret = kt_secret_new(KT_SIGN_SECRET_BYTES);
    if (secret == NULL)
        return -1;
    if (crypto_sign_keypair(public_key, secret->bytes) != 0) {
        kt_secret_free(secret);
        return -1;
    }
    *secret_key = secret;
    return 0;
}

void kt_sign_public_from_secret(unsigned char public_key[KT_SIGN_PUBLIC_BYTES],
                                const kt_secret *secret_key)
{
    /* libsodium's secret key ends with the public key; this copies it out. */
    (void)crypto_sign_ed25519_sk_to_pk(public_key, secret_key->bytes);
}

int kt_sign(unsigned char signature[KT_SIGNATURE_BYTES], const void *message, size_t length,
            const kt_secret *secret_key)
{
    if (secret_key == NULL || secret_key->length != KT_SIGN_SECRET_BYTES)
        return -1;
    return crypto_sign_detached(signature, NULL, message, length, secret_key->bytes) == 0 ? 0
                                                                                           : -1;
}

bool kt_sign_verify(const unsigned char signature[KT_SIGNATURE_BYTES], const void *message,
                    size_t length, const unsigned char public_key[KT_SIGN_PUBLIC_BYTES])
{
    return crypto_sign_verify_detached(signature, message, length, public_key) == 0;
}

void kt_fingerprint(char out[KT_FINGERPRINT_CHARS + 1],
                    const unsigned char public_key[KT_SIGN_PUBLIC_BYTES])
{
    unsigned char hash[KT_HASH_BYTES];
    kt_hash(hash, public_key, KT_SIGN_PUBLIC_BYTES);
    /* Cannot fail: the output size is exactly right. */
    (void)kt_hex_encode(out, KT_FINGERPRINT_CHARS + 1, hash, KT_FINGERPRINT_BYTES);
}

bool kt_fingerprint_valid(const char *text)
{
    if (text == NULL)
        return false;
    for (size_t index = 0; index < KT_FINGERPRINT_CHARS; index++) {
        char character = text[index];
        if (!((character >= '0' && character <= '9') || (character >= 'A' && character <= 'F')))
            return false; /* also stops at a NUL of a short string */
    }
    return text[KT_FINGERPRINT_CHARS] == '\0';
}
