/*
 * hash.c — BLAKE2b-256 (libsodium's crypto_generichash), one-shot and incremental.
 */
#include <sodium.h>
#include <stdalign.h>

#include "crypto/crypto.h"

/* kt_hash_state is an opaque stand-in for libsodium's state so that crypto.h need not include
 * sodium.h; these keep the two in step. */
_Static_assert(sizeof(crypto_generichash_state) <= sizeof(kt_hash_state),
               "kt_hash_state is too small for crypto_generichash_state");
_Static_assert(alignof(crypto_generichash_state) <= alignof(kt_hash_state),
               "kt_hash_state is not aligned enough for crypto_generichash_state");
_Static_assert(KT_HASH_BYTES >= crypto_generichash_BYTES_MIN &&
               KT_HASH_BYTES <= crypto_generichash_BYTES_MAX, "bad BLAKE2b output length");

void kt_hash(unsigned char out[KT_HASH_BYTES], const void *in, size_t length)
{
    /* Cannot fail for these lengths and no key. */
    (void)crypto_generichash(out, KT_HASH_BYTES, in, length, NULL, 0);
}

void kt_hash_init(kt_hash_state *state)
{
    (void)crypto_generichash_init((crypto_generichash_state *)(void *)state->opaque, NULL, 0,
                                  KT_HASH_BYTES);
}

void kt_hash_update(kt_hash_state *state, const void *in, size_t length)
{
    (void)crypto_generichash_update((crypto_generichash_state *)(void *)state->opaque, in,
                                    length);
}

void kt_hash_final(kt_hash_state *state, unsigned char out[KT_HASH_BYTES])
{
    (void)crypto_generichash_final((crypto_generichash_state *)(void *)state->opaque, out,
                                   KT_HASH_BYTES);
    sodium_memzero(state, sizeof *state);
}
