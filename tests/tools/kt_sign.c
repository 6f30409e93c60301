/*
 * kt_sign.c — signs keytrustee API requests for shell tests, so that curl can be the client.
 *
 *   kt_sign keygen DIR
 *       creates an Ed25519 key pair, writes the secret key to DIR/key (mode 0600, base64 of the
 *       64-byte libsodium secret key) and prints "FINGERPRINT PUBLIC_KEY_BASE64".
 *   kt_sign headers DIR METHOD AUTHORITY TARGET BODYFILE
 *       prints the Host header and the four signature headers of docs/api.md, one "Name: value"
 *       per line, for a request to the server AUTHORITY (host:port, as in the URL: it becomes the
 *       Host header, which is signed) with that method, target (path and query exactly as curl
 *       will send them) and the body in BODYFILE ("" or /dev/null for none).
 *       KT_SIGN_TIME=SECONDS replaces the current time (for stale-timestamp tests).
 *
 * It is written from docs/api.md alone, independently of ktclient, so that the server and the
 * client library are each checked against the document rather than against each other.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"

#define KEY_FILE_MAX 256
#define BODY_MAX (4u * 1024u * 1024u)

static int fail(const char *message, const char *detail)
{
    fprintf(stderr, "kt_sign: %s%s%s\n", message, detail != NULL ? ": " : "",
            detail != NULL ? detail : "");
    return 1;
}

static int key_path(char *out, size_t out_size, const char *directory)
{
    int written = snprintf(out, out_size, "%s/key", directory);
    return written < 0 || (size_t)written >= out_size ? -1 : 0;
}

/* Writes the base64 text in `text` and a newline (the buffer has room for it). */
static int write_key_line(const char *path, kt_secret *text, char *error, size_t error_size)
{
    size_t length = strlen((const char *)text->bytes);
    text->bytes[length] = '\n';
    return kt_write_file_atomic(path, text->bytes, length + 1, 0600, error, error_size);
}

static int keygen(const char *directory)
{
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    char path[4096], error[512], fingerprint[KT_FINGERPRINT_CHARS + 1];
    char public_text[64];
    if (key_path(path, sizeof path, directory) != 0)
        return fail("directory path too long", directory);
    if (kt_sign_keypair(public_key, &secret_key) != 0)
        return fail("cannot make a key pair", NULL);
    kt_secret *text = kt_secret_new(kt_base64_encoded_size(KT_SIGN_SECRET_BYTES) + 1);
    int status = 1;
    if (text == NULL ||
        kt_base64_encode((char *)text->bytes, text->length, secret_key->bytes,
                         secret_key->length) != 0)
        fail("cannot encode the key", NULL);
    else if (write_key_line(path, text, error, sizeof error) != 0)
        fail("cannot write the key", error);
    else if (kt_base64_encode(public_text, sizeof public_text, public_key, sizeof public_key) != 0)
        fail("cannot encode the public key", NULL);
    else {
        kt_fingerprint(fingerprint, public_key);
        printf("%s %s\n", fingerprint, public_text);
        status = 0;
    }
    kt_secret_free(text);
    kt_secret_free(secret_key);
    return status;
}

static kt_secret *load_key(const char *directory)
{
    char path[4096], error[512];
    kt_secret *text = NULL;
    if (key_path(path, sizeof path, directory) != 0 ||
        kt_read_secret_file(path, KEY_FILE_MAX, &text, error, sizeof error) != 0) {
        fail("cannot read the key", error);
        return NULL;
    }
    size_t length = text->length;
    while (length > 0 && (text->bytes[length - 1] == '\n' || text->bytes[length - 1] == '\r'))
        length--;
    kt_secret *key = kt_secret_new(KT_SIGN_SECRET_BYTES);
    size_t decoded = 0;
    if (key == NULL || kt_base64_decode(key->bytes, key->length, &decoded,
                                        (const char *)text->bytes, length) != 0 ||
        decoded != KT_SIGN_SECRET_BYTES) {
        fail("the key file is not base64 of a 64-byte key", path);
        kt_secret_free(key);
        key = NULL;
    }
    kt_secret_free(text);
    return key;
}

/* Reads the whole body file (NULL/empty name: no body). */
static int read_body(const char *path, unsigned char **body, size_t *length)
{
    *body = malloc(BODY_MAX);
    *length = 0;
    if (*body == NULL)
        return -1;
    if (path == NULL || path[0] == '\0')
        return 0;
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return -1;
    *length = fread(*body, 1, BODY_MAX, file);
    int failed = ferror(file);
    if (fclose(file) != 0 || failed)
        return -1;
    return 0;
}

static void lowercase_hex(char *out, const unsigned char *bytes, size_t length)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < length; index++) {
        out[2 * index] = digits[bytes[index] >> 4];
        out[2 * index + 1] = digits[bytes[index] & 0x0f];
    }
    out[2 * length] = '\0';
}

static int64_t signing_time(void)
{
    const char *forced = getenv("KT_SIGN_TIME");
    return forced != NULL ? strtoll(forced, NULL, 10) : (int64_t)time(NULL);
}

static int print_headers(const kt_secret *key, const char *method, const char *authority,
                         const char *target, const unsigned char *body, size_t body_length)
{
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES], nonce[16], hash[KT_HASH_BYTES];
    unsigned char signature[KT_SIGNATURE_BYTES];
    char fingerprint[KT_FINGERPRINT_CHARS + 1], nonce_text[32], signature_text[128];
    char hash_text[2 * KT_HASH_BYTES + 1], timestamp[32];
    kt_sign_public_from_secret(public_key, key);
    kt_fingerprint(fingerprint, public_key);
    kt_random(nonce, sizeof nonce);
    kt_hash(hash, body, body_length);
    lowercase_hex(hash_text, hash, sizeof hash);
    snprintf(timestamp, sizeof timestamp, "%" PRId64, signing_time());
    if (kt_base64_encode(nonce_text, sizeof nonce_text, nonce, sizeof nonce) != 0)
        return fail("cannot encode the nonce", NULL);
    size_t size = strlen(method) + strlen(authority) + strlen(target) + 256;
    char *text = malloc(size);
    if (text == NULL)
        return fail("out of memory", NULL);
    int length = snprintf(text, size, "keytrustee-request-v2\n%s\n%s\n%s\n%s\n%s\n%s", method,
                          authority, target, timestamp, nonce_text, hash_text);
    int status = 1;
    if (length < 0 || kt_sign(signature, text, (size_t)length, key) != 0 ||
        kt_base64_encode(signature_text, sizeof signature_text, signature, sizeof signature) != 0)
        fail("cannot sign", NULL);
    else {
        printf("Host: %s\nX-KT-Client: %s\nX-KT-Timestamp: %s\nX-KT-Nonce: %s\n"
               "X-KT-Signature: %s\n",
               authority, fingerprint, timestamp, nonce_text, signature_text);
        status = 0;
    }
    free(text);
    return status;
}

static int headers(const char *directory, const char *method, const char *authority,
                   const char *target, const char *body_path)
{
    unsigned char *body = NULL;
    size_t body_length = 0;
    kt_secret *key = load_key(directory);
    int status = 1;
    if (key == NULL)
        status = 1;
    else if (read_body(body_path, &body, &body_length) != 0)
        fail("cannot read the body file", strerror(errno));
    else
        status = print_headers(key, method, authority, target, body, body_length);
    free(body);
    kt_secret_free(key);
    return status;
}

int main(int argc, char **argv)
{
    if (kt_crypto_init() != 0)
        return fail("libsodium failed to initialise", NULL);
    if (argc == 3 && strcmp(argv[1], "keygen") == 0)
        return keygen(argv[2]);
    if (argc == 7 && strcmp(argv[1], "headers") == 0)
        return headers(argv[2], argv[3], argv[4], argv[5], argv[6]);
    fprintf(stderr, "usage: kt_sign keygen DIR | kt_sign headers DIR METHOD AUTHORITY TARGET "
                    "BODYFILE\n");
    return 2;
}
