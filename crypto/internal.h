/*
 * internal.h — helpers shared between the files of crypto/ and used nowhere else.
 *
 * Nothing here is part of the contract in crypto.h; other folders must not include this file.
 */
#ifndef KT_CRYPTO_INTERNAL_H
#define KT_CRYPTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/x509.h>

#include "crypto/crypto.h"

/* Writes one formatted sentence into error (when error is not NULL and error_size > 0). */
void kt_crypto_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads the whole of an open file into a new secret buffer, refusing files longer than
 * max_length. `path` is used only in error text. The descriptor stays open. */
int kt_read_secret_descriptor(int descriptor, const char *path, size_t max_length,
                              kt_secret **out, char *error, size_t error_size);

/* Like kt_write_file_atomic, but fails with EEXIST (and says so) when `path` already exists,
 * without ever replacing it: the final step is a rename that refuses to overwrite. */
int kt_write_file_new(const char *path, const void *data, size_t length, unsigned mode,
                      char *error, size_t error_size);

/* An mbedTLS random generator: CTR_DRBG seeded from mbedTLS's entropy collector. */
typedef struct kt_mbedtls_random {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} kt_mbedtls_random;

/* Initialises and seeds; on failure the structure is already freed. */
int kt_mbedtls_random_init(kt_mbedtls_random *random, const char *personalization);
void kt_mbedtls_random_free(kt_mbedtls_random *random);

/* "AA:BB:..." (95 characters and a NUL): the SHA-256 of a certificate's DER (x509.c). */
void kt_x509_format_fingerprint(const mbedtls_x509_buf *der, char out[96]);

#endif /* KT_CRYPTO_INTERNAL_H */
