/*
 * secret.c — library start-up, guarded memory for secrets, constant-time comparison, randomness
 * and random (version 4) UUIDs.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

int kt_crypto_init(void)
{
    /* sodium_init returns 1 when already initialised, which is fine. */
    return sodium_init() < 0 ? -1 : 0;
}

kt_secret *kt_secret_new(size_t length)
{
    kt_secret *secret = calloc(1, sizeof *secret);
    if (secret == NULL)
        return NULL;
    /* Always allocate at least one byte so that `bytes` is a real guarded allocation. */
    secret->bytes = sodium_malloc(length > 0 ? length : 1);
    if (secret->bytes == NULL) {
        free(secret);
        return NULL;
    }
    /* sodium_malloc fills with 0xdb to expose uninitialised use; callers are promised zeros. */
    sodium_memzero(secret->bytes, length > 0 ? length : 1);
    secret->length = length;
    return secret;
}

kt_secret *kt_secret_from(const void *bytes, size_t length)
{
    kt_secret *secret = kt_secret_new(length);
    if (secret != NULL && length > 0)
        memcpy(secret->bytes, bytes, length);
    return secret;
}

void kt_secret_free(kt_secret *secret)
{
    if (secret == NULL)
        return;
    sodium_free(secret->bytes); /* zeroes before unmapping */
    free(secret);
}

void kt_wipe(void *buffer, size_t length)
{
    if (buffer != NULL)
        sodium_memzero(buffer, length);
}

bool kt_equal(const void *a, const void *b, size_t length)
{
    return sodium_memcmp(a, b, length) == 0;
}

void kt_random(void *buffer, size_t length)
{
    randombytes_buf(buffer, length);
}

void kt_uuid_generate(char out[KT_UUID_CHARS + 1])
{
    unsigned char bytes[16];
    randombytes_buf(bytes, sizeof bytes);
    bytes[6] = (unsigned char)((bytes[6] & 0x0f) | 0x40); /* version 4 */
    bytes[8] = (unsigned char)((bytes[8] & 0x3f) | 0x80); /* RFC 4122 variant */

    static const char digits[] = "0123456789abcdef";
    size_t position = 0;
    for (size_t index = 0; index < sizeof bytes; index++) {
        if (index == 4 || index == 6 || index == 8 || index == 10)
            out[position++] = '-';
        out[position++] = digits[bytes[index] >> 4];
        out[position++] = digits[bytes[index] & 0x0f];
    }
    out[position] = '\0';
}

bool kt_uuid_valid(const char *text)
{
    if (text == NULL)
        return false;
    for (size_t index = 0; index < KT_UUID_CHARS; index++) {
        char character = text[index];
        bool dash_position = index == 8 || index == 13 || index == 18 || index == 23;
        if (dash_position) {
            if (character != '-')
                return false;
        } else if (!((character >= '0' && character <= '9') ||
                     (character >= 'a' && character <= 'f'))) {
            return false; /* also stops at a NUL of a short string */
        }
    }
    return text[KT_UUID_CHARS] == '\0';
}
