/*
 * sealed.c — X25519 key pairs and keys sealed to a public key, for backups.
 *
 * `ktadmin backup-key generate` makes a pair; the public half stays on the key servers and the
 * secret half goes offline. `ktadmin backup --recipient FILE` draws a random key for each backup
 * file, encrypts the file with it (stream.c) and seals that key to the public key with libsodium's
 * sealed box (crypto_box_seal: an ephemeral X25519 key, XSalsa20-Poly1305). Only the holder of the
 * secret key can open the sealed key, and the server that made the backup cannot read it back.
 */
#include <sodium.h>
#include <string.h>

#include "crypto/crypto.h"

_Static_assert(KT_SEAL_PUBLIC_BYTES == crypto_box_PUBLICKEYBYTES, "X25519 public key size");
_Static_assert(KT_SEAL_SECRET_BYTES == crypto_box_SECRETKEYBYTES, "X25519 secret key size");
_Static_assert(KT_SEALED_KEY_BYTES == KT_KEY_BYTES + crypto_box_SEALBYTES, "sealed key size");

int kt_seal_keypair(unsigned char public_key[KT_SEAL_PUBLIC_BYTES], kt_secret **secret_key)
{
    *secret_key = kt_secret_new(KT_SEAL_SECRET_BYTES);
    if (*secret_key == NULL)
        return -1;
    if (crypto_box_keypair(public_key, (*secret_key)->bytes) != 0) {
        kt_secret_free(*secret_key);
        *secret_key = NULL;
        return -1;
    }
    return 0;
}

int kt_seal_public_from_secret(unsigned char public_key[KT_SEAL_PUBLIC_BYTES],
                               const kt_secret *secret_key)
{
    if (secret_key == NULL || secret_key->length != KT_SEAL_SECRET_BYTES)
        return -1;
    return crypto_scalarmult_base(public_key, secret_key->bytes) == 0 ? 0 : -1;
}

int kt_seal_key(unsigned char sealed[KT_SEALED_KEY_BYTES], const kt_secret *key,
                const unsigned char public_key[KT_SEAL_PUBLIC_BYTES])
{
    if (key == NULL || key->length != KT_KEY_BYTES)
        return -1;
    return crypto_box_seal(sealed, key->bytes, key->length, public_key) == 0 ? 0 : -1;
}

int kt_unseal_key(kt_secret **key, const unsigned char sealed[KT_SEALED_KEY_BYTES],
                  const kt_secret *secret_key)
{
    *key = NULL;
    unsigned char public_key[KT_SEAL_PUBLIC_BYTES];
    if (kt_seal_public_from_secret(public_key, secret_key) != 0)
        return -1;
    kt_secret *opened = kt_secret_new(KT_KEY_BYTES);
    if (opened == NULL)
        return -1;
    if (crypto_box_seal_open(opened->bytes, sealed, KT_SEALED_KEY_BYTES, public_key,
                             secret_key->bytes) != 0) {
        kt_secret_free(opened);
        return -1;
    }
    *key = opened;
    return 0;
}

void kt_seal_key_id(unsigned char id[KT_SEAL_KEY_ID_BYTES],
                    const unsigned char public_key[KT_SEAL_PUBLIC_BYTES])
{
    static const char label[] = "keytrustee-backup-key-id-v1";
    unsigned char digest[KT_HASH_BYTES];
    kt_hash_state state;
    kt_hash_init(&state);
    kt_hash_update(&state, label, sizeof label - 1);
    kt_hash_update(&state, public_key, KT_SEAL_PUBLIC_BYTES);
    kt_hash_final(&state, digest);
    memcpy(id, digest, KT_SEAL_KEY_ID_BYTES);
}
