/*
 * encoding.c — strict base64 (libsodium, standard alphabet, padding required, nothing else
 * accepted) and uppercase hex.
 */
#include <sodium.h>
#include <stdint.h>

#include "crypto/crypto.h"

#define KT_BASE64_VARIANT sodium_base64_VARIANT_ORIGINAL

size_t kt_base64_encoded_size(size_t length)
{
    /* Four characters per three bytes; refuse sizes whose encoding would overflow size_t. */
    if (length > (SIZE_MAX - 1) / 4 * 3 - 3)
        return SIZE_MAX;
    return sodium_base64_ENCODED_LEN(length, KT_BASE64_VARIANT);
}

int kt_base64_encode(char *out, size_t out_size, const void *in, size_t length)
{
    if (out == NULL || out_size < kt_base64_encoded_size(length))
        return -1;
    sodium_bin2base64(out, out_size, in, length, KT_BASE64_VARIANT);
    return 0;
}

int kt_base64_decode(void *out, size_t out_size, size_t *out_length, const char *text,
                     size_t text_length)
{
    size_t decoded_length = 0;
    const char *end = NULL;
    /* libsodium 1.0.18 reads each character as a (signed) char, and its constant-time compares
     * then take every byte from 0x80 to 0xff for a base64 digit: "\xff\xff==" decodes. Refuse
     * any byte with the high bit set first, without a data-dependent branch (the text may be
     * the base64 of a secret). Found by tests/fuzz/fuzz_base64.c. */
    unsigned high_bits = 0;
    for (size_t index = 0; index < text_length; index++)
        high_bits |= (unsigned char)text[index];
    if ((high_bits & 0x80u) != 0)
        return -1;
    /* ignore = NULL: no whitespace allowed. libsodium stops at the first character that is not
     * base64 and reports where; anything left over means junk, so `end` must reach the end. */
    if (sodium_base642bin(out, out_size, text, text_length, NULL, &decoded_length, &end,
                          KT_BASE64_VARIANT) != 0)
        return -1;
    if (end != text + text_length)
        return -1;
    if (out_length != NULL)
        *out_length = decoded_length;
    return 0;
}

/* One hex digit without a data-dependent branch, because hex also encodes secrets. */
static char hex_digit(unsigned nibble)
{
    int value = (int)nibble;
    /* (9 - value) >> 8 is all ones exactly when value > 9: then add the gap from '9' to 'A'. */
    return (char)('0' + value + (((9 - value) >> 8) & ('A' - '9' - 1)));
}

int kt_hex_encode(char *out, size_t out_size, const void *in, size_t length)
{
    if (out == NULL || length > (SIZE_MAX - 1) / 2 || out_size < 2 * length + 1)
        return -1;
    const unsigned char *bytes = in;
    for (size_t index = 0; index < length; index++) {
        out[2 * index] = hex_digit(bytes[index] >> 4);
        out[2 * index + 1] = hex_digit(bytes[index] & 0x0fu);
    }
    out[2 * length] = '\0';
    return 0;
}
