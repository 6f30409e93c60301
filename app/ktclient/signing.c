/*
 * signing.c — request signatures of docs/api.md ("Request signing").
 *
 * Every request carries X-KT-Client (our fingerprint), X-KT-Timestamp (unix seconds), X-KT-Nonce
 * (16 random bytes, base64) and X-KT-Signature: the base64 Ed25519 signature of
 *
 *     keytrustee-request-v2\n<METHOD>\n<authority>\n<target>\n<timestamp>\n<nonce>\n<body hash>
 *
 * where the authority is the server's host:port exactly as the Host header carries it (kt_url's
 * authority), so the signature is good only on the node it was made for: a request captured on
 * its way to one node of a pair cannot be replayed against the other. The body hash is the
 * lowercase hex of BLAKE2b-256 of the body (of the empty string when there is none) and there is
 * no trailing newline. crypto/'s kt_hex_encode writes uppercase, so the lowercase encoding is
 * written here. The time and nonce are parameters, so tests can build a string with fixed values
 * and compare it byte for byte.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "app/ktclient/internal.h"

/* Room for the fixed lines, method, timestamp, nonce and hash around a target. */
#define SIGNING_OVERHEAD 256u

static void lowercase_hex(char *out, const unsigned char *bytes, size_t length)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < length; index++) {
        out[2 * index] = digits[bytes[index] >> 4];
        out[2 * index + 1] = digits[bytes[index] & 0x0f];
    }
    out[2 * length] = '\0';
}

int kt_signing_string(char *out, size_t out_size, const char *method, const char *authority,
                      const char *target, const char *timestamp, const char *nonce,
                      const void *body, size_t body_length)
{
    unsigned char digest[KT_HASH_BYTES];
    char digest_hex[2 * KT_HASH_BYTES + 1];
    kt_hash(digest, body_length > 0 ? body : "", body_length);
    lowercase_hex(digest_hex, digest, sizeof digest);
    int written = snprintf(out, out_size, "keytrustee-request-v2\n%s\n%s\n%s\n%s\n%s\n%s",
                           method, authority, target, timestamp, nonce, digest_hex);
    return (written < 0 || (size_t)written >= out_size) ? -1 : 0;
}

int kt_request_sign(kt_request_signature *signature, const char *fingerprint,
                    const kt_secret *secret_key, const char *method, const char *authority,
                    const char *target, const void *body, size_t body_length, int64_t timestamp,
                    const unsigned char nonce[KT_NONCE_BYTES])
{
    memset(signature, 0, sizeof *signature);
    if (strlen(fingerprint) != KT_FINGERPRINT_CHARS || strlen(target) > KT_HTTP_MAX_TARGET ||
        authority[0] == '\0' || strlen(authority) > KT_HTTP_MAX_AUTHORITY)
        return -1;
    memcpy(signature->client, fingerprint, KT_FINGERPRINT_CHARS + 1);
    (void)snprintf(signature->timestamp, sizeof signature->timestamp, "%" PRId64, timestamp);
    if (kt_base64_encode(signature->nonce, sizeof signature->nonce, nonce, KT_NONCE_BYTES) != 0)
        return -1;

    char text[KT_HTTP_MAX_TARGET + KT_HTTP_MAX_AUTHORITY + SIGNING_OVERHEAD];
    unsigned char raw[KT_SIGNATURE_BYTES];
    if (kt_signing_string(text, sizeof text, method, authority, target, signature->timestamp,
                          signature->nonce, body, body_length) != 0 ||
        kt_sign(raw, text, strlen(text), secret_key) != 0 ||
        kt_base64_encode(signature->signature, sizeof signature->signature, raw, sizeof raw) != 0)
        return -1;
    return 0;
}
