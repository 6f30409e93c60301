/*
 * test_crypto.c — unit tests of crypto/: encodings, hashing, signatures, AEAD boxes, the server
 * key file, atomic files, self-signed certificates and the TLS client. The TLS tests run a small
 * mbedTLS server in a thread on loopback, with certificates made by kt_x509_self_signed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "crypto/crypto.h"
#include "tests/unit/unit.h"

/* ---- Helpers --------------------------------------------------------------------------------- */

typedef struct temp_dir {
    char path[64];
} temp_dir;

static bool temp_dir_make(temp_dir *dir)
{
    snprintf(dir->path, sizeof dir->path, "/tmp/kt-test-crypto-XXXXXX");
    return mkdtemp(dir->path) != NULL;
}

/* Removes the directory and the plain files in it (the tests make nothing deeper). */
static void temp_dir_remove(temp_dir *dir)
{
    DIR *handle = opendir(dir->path);
    if (handle != NULL) {
        struct dirent *entry;
        while ((entry = readdir(handle)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            char file[512];
            snprintf(file, sizeof file, "%s/%s", dir->path, entry->d_name);
            if (unlink(file) != 0)
                fprintf(stderr, "    could not remove %s\n", file);
        }
        closedir(handle);
    }
    if (rmdir(dir->path) != 0)
        fprintf(stderr, "    could not remove %s\n", dir->path);
}

static int count_entries(const char *path)
{
    DIR *handle = opendir(path);
    if (handle == NULL)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(handle)) != NULL)
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
            count++;
    closedir(handle);
    return count;
}

static void join_path(char *out, size_t size, const temp_dir *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir->path, name);
}

static bool write_text(const char *path, const void *data, size_t length, mode_t mode)
{
    int descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (descriptor < 0)
        return false;
    bool ok = fchmod(descriptor, mode) == 0 && write(descriptor, data, length) == (ssize_t)length;
    return close(descriptor) == 0 && ok;
}

/* Reads at most size - 1 bytes and NUL-terminates; returns the length or -1. */
static long read_text(const char *path, char *out, size_t size)
{
    int descriptor = open(path, O_RDONLY);
    if (descriptor < 0)
        return -1;
    ssize_t got = read(descriptor, out, size - 1);
    close(descriptor);
    if (got < 0)
        return -1;
    out[got] = '\0';
    return (long)got;
}

static unsigned file_mode(const char *path)
{
    struct stat status;
    if (stat(path, &status) != 0)
        return 0xffffffffu;
    return (unsigned)status.st_mode & 07777u;
}

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static kt_secret *random_key(void)
{
    kt_secret *key = kt_secret_new(KT_KEY_BYTES);
    if (key != NULL)
        kt_random(key->bytes, key->length);
    return key;
}

/* ---- Secure memory, random, uuid, equal ------------------------------------------------------ */

TEST(secret_buffers)
{
    kt_secret *secret = kt_secret_new(100);
    REQUIRE(secret != NULL);
    CHECK_EQ_INT(secret->length, 100);
    unsigned char zeros[100] = {0};
    CHECK(memcmp(secret->bytes, zeros, sizeof zeros) == 0);
    kt_secret_free(secret);

    kt_secret *empty = kt_secret_new(0);
    REQUIRE(empty != NULL);
    CHECK_EQ_INT(empty->length, 0);
    CHECK(empty->bytes != NULL);
    kt_secret_free(empty);

    kt_secret *copy = kt_secret_from("abc", 3);
    REQUIRE(copy != NULL);
    CHECK_EQ_INT(copy->length, 3);
    CHECK(memcmp(copy->bytes, "abc", 3) == 0);
    kt_secret_free(copy);
    kt_secret_free(NULL);

    unsigned char buffer[8];
    memset(buffer, 0x55, sizeof buffer);
    kt_wipe(buffer, sizeof buffer);
    CHECK(memcmp(buffer, zeros, sizeof buffer) == 0);
}

TEST(random_bytes_differ)
{
    unsigned char first[32], second[32];
    kt_random(first, sizeof first);
    kt_random(second, sizeof second);
    CHECK(memcmp(first, second, sizeof first) != 0);
}

TEST(equal_is_exact)
{
    unsigned char a[32], b[32];
    kt_random(a, sizeof a);
    memcpy(b, a, sizeof a);
    CHECK(kt_equal(a, b, sizeof a));
    b[31] ^= 1;
    CHECK(!kt_equal(a, b, sizeof a));
    b[31] ^= 1;
    b[0] ^= 0x80;
    CHECK(!kt_equal(a, b, sizeof a));
    CHECK(kt_equal(a, b, 0));
}

TEST(uuid_format_and_uniqueness)
{
    enum { COUNT = 1000 };
    static char uuids[COUNT][KT_UUID_CHARS + 1];
    for (int i = 0; i < COUNT; i++) {
        kt_uuid_generate(uuids[i]);
        CHECK_EQ_INT(strlen(uuids[i]), KT_UUID_CHARS);
        CHECK(kt_uuid_valid(uuids[i]));
        CHECK(uuids[i][14] == '4');
        CHECK(strchr("89ab", uuids[i][19]) != NULL);
    }
    int duplicates = 0;
    for (int i = 0; i < COUNT; i++)
        for (int j = i + 1; j < COUNT; j++)
            duplicates += strcmp(uuids[i], uuids[j]) == 0;
    CHECK_EQ_INT(duplicates, 0);

    CHECK(kt_uuid_valid("0f8fad5b-d9cb-469f-a165-70867728950e"));
    CHECK(!kt_uuid_valid("0F8FAD5B-D9CB-469F-A165-70867728950E"));  /* uppercase */
    CHECK(!kt_uuid_valid("0f8fad5bd-9cb-469f-a165-70867728950e"));  /* dash moved */
    CHECK(!kt_uuid_valid("0f8fad5b-d9cb-469f-a165-70867728950"));   /* short */
    CHECK(!kt_uuid_valid("0f8fad5b-d9cb-469f-a165-70867728950e0")); /* long */
    CHECK(!kt_uuid_valid("0f8fad5b-d9cb-469f-a165-70867728950g"));  /* not hex */
    CHECK(!kt_uuid_valid(""));
    CHECK(!kt_uuid_valid(NULL));
}

/* ---- Encodings ------------------------------------------------------------------------------- */

TEST(base64_known_values)
{
    char out[16];
    CHECK_EQ_INT(kt_base64_encoded_size(0), 1);
    CHECK_EQ_INT(kt_base64_encoded_size(1), 5);
    CHECK_EQ_INT(kt_base64_encoded_size(6), 9);
    CHECK_EQ_INT(kt_base64_encoded_size(32), 45);
    CHECK_EQ_INT(kt_base64_encode(out, sizeof out, "foobar", 6), 0);
    CHECK_EQ_STR(out, "Zm9vYmFy");
    CHECK_EQ_INT(kt_base64_encode(out, sizeof out, "fo", 2), 0);
    CHECK_EQ_STR(out, "Zm8=");
    CHECK_EQ_INT(kt_base64_encode(out, sizeof out, "", 0), 0);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(kt_base64_encode(out, 8, "foobar", 6), -1); /* needs 9 */
    CHECK_EQ_INT(kt_base64_encode(out, 9, "foobar", 6), 0);
}

TEST(base64_round_trip)
{
    unsigned char data[64], decoded[64];
    char text[128];
    for (size_t length = 0; length <= sizeof data; length++) {
        kt_random(data, length);
        CHECK_EQ_INT(kt_base64_encode(text, sizeof text, data, length), 0);
        CHECK_EQ_INT(strlen(text) + 1, kt_base64_encoded_size(length));
        CHECK_EQ_INT(strlen(text) % 4, 0);
        size_t decoded_length = 999;
        CHECK_EQ_INT(kt_base64_decode(decoded, sizeof decoded, &decoded_length, text, strlen(text)),
                     0);
        CHECK_EQ_INT(decoded_length, length);
        CHECK(memcmp(decoded, data, length) == 0);
    }
}

static int decode(const char *text, size_t out_size)
{
    unsigned char out[64];
    size_t length = 0;
    return kt_base64_decode(out, out_size, &length, text, strlen(text));
}

TEST(base64_rejects_bad_input)
{
    CHECK_EQ_INT(decode("Zm9vYmFy", 64), 0);  /* the control: valid */
    CHECK_EQ_INT(decode("Zm9v!mFy", 64), -1); /* bad character */
    CHECK_EQ_INT(decode("Zm9vYmF", 64), -1);  /* missing padding */
    CHECK_EQ_INT(decode("Zm8", 64), -1);      /* missing padding */
    CHECK_EQ_INT(decode("Zm8=", 64), 0);
    CHECK_EQ_INT(decode("Zm8=x", 64), -1);    /* trailing junk */
    CHECK_EQ_INT(decode("Zm8=Zm8=", 64), -1); /* data after padding */
    CHECK_EQ_INT(decode("Zm8=\n", 64), -1);   /* trailing newline */
    CHECK_EQ_INT(decode("Zm9v YmFy", 64), -1); /* whitespace */
    CHECK_EQ_INT(decode(" Zm9vYmFy", 64), -1);
    CHECK_EQ_INT(decode("Zm9=", 64), -1);     /* non-zero leftover bits */
    CHECK_EQ_INT(decode("Zm8==", 64), -1);    /* too much padding */
    CHECK_EQ_INT(decode("-_-_", 64), -1);     /* URL-safe alphabet */
    CHECK_EQ_INT(decode("Zm9vYmFy", 6), 0);
    CHECK_EQ_INT(decode("Zm9vYmFy", 5), -1);  /* out buffer too small */

    /* The length bounds the input: a NUL or junk beyond it is not read, inside it is refused. */
    unsigned char out[8];
    size_t length = 0;
    CHECK_EQ_INT(kt_base64_decode(out, sizeof out, &length, "Zm8=junk", 4), 0);
    CHECK_EQ_INT(length, 2);
    CHECK_EQ_INT(kt_base64_decode(out, sizeof out, &length, "Zm8=\0AAA", 8), -1);
}

TEST(hex_encoding)
{
    char out[16];
    const unsigned char bytes[] = {0x00, 0xab, 0xff, 0x10, 0x9a};
    CHECK_EQ_INT(kt_hex_encode(out, sizeof out, bytes, sizeof bytes), 0);
    CHECK_EQ_STR(out, "00ABFF109A");
    CHECK_EQ_INT(kt_hex_encode(out, 10, bytes, sizeof bytes), -1); /* needs 11 */
    CHECK_EQ_INT(kt_hex_encode(out, 11, bytes, sizeof bytes), 0);
    CHECK_EQ_INT(kt_hex_encode(out, 1, bytes, 0), 0);
    CHECK_EQ_STR(out, "");

    int mismatches = 0;
    for (unsigned value = 0; value < 256; value++) {
        unsigned char byte = (unsigned char)value;
        char expected[3];
        snprintf(expected, sizeof expected, "%02X", value);
        CHECK_EQ_INT(kt_hex_encode(out, 3, &byte, 1), 0);
        mismatches += strcmp(out, expected) != 0;
    }
    CHECK_EQ_INT(mismatches, 0);
}

/* ---- Hashing --------------------------------------------------------------------------------- */

TEST(hash_known_value_and_incremental)
{
    unsigned char digest[KT_HASH_BYTES];
    char hex[2 * KT_HASH_BYTES + 1];
    kt_hash(digest, "", 0);
    CHECK_EQ_INT(kt_hex_encode(hex, sizeof hex, digest, sizeof digest), 0);
    /* BLAKE2b-256 of the empty string. */
    CHECK_EQ_STR(hex, "0E5751C026E543B2E8AB2EB06099DAA1D1E5DF47778F7787FAAB45CDF12FE3A8");

    unsigned char data[1000];
    kt_random(data, sizeof data);
    unsigned char whole[KT_HASH_BYTES], pieces[KT_HASH_BYTES];
    kt_hash(whole, data, sizeof data);
    kt_hash_state state;
    kt_hash_init(&state);
    kt_hash_update(&state, data, 1);
    kt_hash_update(&state, data + 1, 500);
    kt_hash_update(&state, data + 501, sizeof data - 501);
    kt_hash_final(&state, pieces);
    CHECK(memcmp(whole, pieces, sizeof whole) == 0);
    data[999] ^= 1;
    kt_hash(pieces, data, sizeof data);
    CHECK(memcmp(whole, pieces, sizeof whole) != 0);
}

/* ---- Signatures ------------------------------------------------------------------------------ */

TEST(sign_and_verify)
{
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    REQUIRE(kt_sign_keypair(public_key, &secret_key) == 0);
    CHECK_EQ_INT(secret_key->length, KT_SIGN_SECRET_BYTES);

    unsigned char derived[KT_SIGN_PUBLIC_BYTES];
    kt_sign_public_from_secret(derived, secret_key);
    CHECK(memcmp(derived, public_key, sizeof derived) == 0);

    char message[] = "deposit 42 for org acme";
    unsigned char signature[KT_SIGNATURE_BYTES];
    CHECK_EQ_INT(kt_sign(signature, message, strlen(message), secret_key), 0);
    CHECK(kt_sign_verify(signature, message, strlen(message), public_key));

    message[0] ^= 1;
    CHECK(!kt_sign_verify(signature, message, strlen(message), public_key));
    message[0] ^= 1;
    CHECK(!kt_sign_verify(signature, message, strlen(message) - 1, public_key));
    signature[10] ^= 0x04;
    CHECK(!kt_sign_verify(signature, message, strlen(message), public_key));
    signature[10] ^= 0x04;
    CHECK(kt_sign_verify(signature, message, strlen(message), public_key));

    unsigned char other_public[KT_SIGN_PUBLIC_BYTES];
    kt_secret *other_secret = NULL;
    REQUIRE(kt_sign_keypair(other_public, &other_secret) == 0);
    CHECK(!kt_sign_verify(signature, message, strlen(message), other_public));

    kt_secret *short_key = kt_secret_new(32);
    CHECK_EQ_INT(kt_sign(signature, message, strlen(message), short_key), -1);
    kt_secret_free(short_key);
    kt_secret_free(other_secret);
    kt_secret_free(secret_key);
}

TEST(fingerprint_format_and_stability)
{
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    REQUIRE(kt_sign_keypair(public_key, &secret_key) == 0);
    char first[KT_FINGERPRINT_CHARS + 1], second[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(first, public_key);
    kt_fingerprint(second, public_key);
    CHECK_EQ_INT(strlen(first), KT_FINGERPRINT_CHARS);
    CHECK(kt_fingerprint_valid(first));
    CHECK_EQ_STR(first, second);

    /* Definition: uppercase hex of the first 20 bytes of BLAKE2b-256(public key). */
    unsigned char digest[32];
    crypto_generichash(digest, sizeof digest, public_key, sizeof public_key, NULL, 0);
    char expected[2 * 32 + 1];
    sodium_bin2hex(expected, sizeof expected, digest, 20);
    for (char *c = expected; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    CHECK_EQ_STR(first, expected);

    public_key[0] ^= 1;
    kt_fingerprint(second, public_key);
    CHECK(strcmp(first, second) != 0);

    CHECK(kt_fingerprint_valid("0123456789ABCDEF0123456789ABCDEF01234567"));
    CHECK(!kt_fingerprint_valid("0123456789abcdef0123456789ABCDEF01234567"));
    CHECK(!kt_fingerprint_valid("0123456789ABCDEF0123456789ABCDEF0123456"));
    CHECK(!kt_fingerprint_valid("0123456789ABCDEF0123456789ABCDEF012345678"));
    CHECK(!kt_fingerprint_valid("0123456789ABCDEF0123456789ABCDEF0123456G"));
    CHECK(!kt_fingerprint_valid(NULL));
    kt_secret_free(secret_key);
}

/* ---- Named key derivation ------------------------------------------------------------------- */

/* Expected values from Python's hashlib.blake2b(b"keytrustee-mount-key-v1\0" + name,
 * key=bytes(range(32)), digest_size=32): an implementation independent of libsodium. */
TEST(derive_key_known_answers_and_separation)
{
    kt_secret *master = kt_secret_new(KT_KEY_BYTES);
    REQUIRE(master != NULL);
    for (size_t index = 0; index < KT_KEY_BYTES; index++)
        master->bytes[index] = (unsigned char)index;
    kt_secret *first = NULL, *again = NULL, *empty = NULL, *other = NULL, *relabeled = NULL;
    REQUIRE(kt_derive_key(&first, master, "keytrustee-mount-key-v1", "data01", 6) == 0);
    char hex[2 * KT_KEY_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, first->bytes, first->length);
    CHECK_EQ_STR(hex, "d648afbed5ebe4914414eb7d2e3f3091ab5b7bbda443a2cb4da9b888a63ec941");
    REQUIRE(kt_derive_key(&empty, master, "keytrustee-mount-key-v1", NULL, 0) == 0);
    sodium_bin2hex(hex, sizeof hex, empty->bytes, empty->length);
    CHECK_EQ_STR(hex, "a569d118ecc15d9f566d57c71c67a00652a543d8001aa7c8b14167646c5cf99f");

    REQUIRE(kt_derive_key(&again, master, "keytrustee-mount-key-v1", "data01", 6) == 0);
    CHECK(kt_equal(first->bytes, again->bytes, KT_KEY_BYTES));
    REQUIRE(kt_derive_key(&other, master, "keytrustee-mount-key-v1", "data02", 6) == 0);
    CHECK(!kt_equal(first->bytes, other->bytes, KT_KEY_BYTES));
    /* label "a" + name "bc" must differ from label "ab" + name "c": the NUL separates them. */
    kt_secret *split_one = NULL, *split_two = NULL;
    REQUIRE(kt_derive_key(&split_one, master, "a", "bc", 2) == 0);
    REQUIRE(kt_derive_key(&split_two, master, "ab", "c", 1) == 0);
    CHECK(!kt_equal(split_one->bytes, split_two->bytes, KT_KEY_BYTES));
    master->bytes[0] ^= 1;
    REQUIRE(kt_derive_key(&relabeled, master, "keytrustee-mount-key-v1", "data01", 6) == 0);
    CHECK(!kt_equal(first->bytes, relabeled->bytes, KT_KEY_BYTES));
    kt_secret_free(first);
    kt_secret_free(again);
    kt_secret_free(empty);
    kt_secret_free(other);
    kt_secret_free(relabeled);
    kt_secret_free(split_one);
    kt_secret_free(split_two);
    kt_secret_free(master);
}

TEST(derive_key_refuses_bad_arguments)
{
    kt_secret *master = kt_secret_new(KT_KEY_BYTES);
    kt_secret *short_master = kt_secret_new(16);
    REQUIRE(master != NULL && short_master != NULL);
    kt_secret *derived = (kt_secret *)master; /* must be reset to NULL on failure */
    CHECK(kt_derive_key(&derived, short_master, "label", "x", 1) == -1);
    CHECK(derived == NULL);
    CHECK(kt_derive_key(&derived, master, "", "x", 1) == -1);
    CHECK(kt_derive_key(&derived, master, NULL, "x", 1) == -1);
    CHECK(kt_derive_key(&derived, master, "label", NULL, 1) == -1);
    CHECK(kt_derive_key(&derived, NULL, "label", "x", 1) == -1);
    static char long_name[KT_DERIVE_NAME_MAX + 1];
    memset(long_name, 'n', sizeof long_name);
    CHECK(kt_derive_key(&derived, master, "label", long_name, sizeof long_name) == -1);
    CHECK(kt_derive_key(&derived, master, "label", long_name, KT_DERIVE_NAME_MAX) == 0);
    kt_secret_free(derived);
    kt_secret_free(master);
    kt_secret_free(short_master);
}

/* ---- AEAD ------------------------------------------------------------------------------------ */

TEST(aead_round_trip)
{
    kt_secret *key = random_key();
    REQUIRE(key != NULL);
    const char plain[] = "the deposit: a 256-bit volume key";
    const char associated[] = "org|fingerprint|deposit";
    unsigned char box[sizeof plain + KT_AEAD_OVERHEAD];
    size_t box_length = 0;
    REQUIRE(kt_aead_seal(box, sizeof box, &box_length, plain, sizeof plain, associated,
                         strlen(associated), key) == 0);
    CHECK_EQ_INT(box_length, sizeof plain + KT_AEAD_OVERHEAD);
    CHECK(memmem(box, box_length, "volume key", 10) == NULL); /* really encrypted */

    kt_secret *opened = NULL;
    REQUIRE(kt_aead_open(&opened, box, box_length, associated, strlen(associated), key) == 0);
    CHECK_EQ_INT(opened->length, sizeof plain);
    CHECK(memcmp(opened->bytes, plain, sizeof plain) == 0);
    kt_secret_free(opened);

    /* Random nonces: sealing the same text twice gives different boxes. */
    unsigned char again[sizeof box];
    REQUIRE(kt_aead_seal(again, sizeof again, &box_length, plain, sizeof plain, associated,
                         strlen(associated), key) == 0);
    CHECK(memcmp(box, again, sizeof box) != 0);

    /* Empty plaintext and no associated data. */
    unsigned char small[KT_AEAD_OVERHEAD];
    REQUIRE(kt_aead_seal(small, sizeof small, &box_length, "", 0, NULL, 0, key) == 0);
    CHECK_EQ_INT(box_length, KT_AEAD_OVERHEAD);
    REQUIRE(kt_aead_open(&opened, small, box_length, NULL, 0, key) == 0);
    CHECK_EQ_INT(opened->length, 0);
    kt_secret_free(opened);
    kt_secret_free(key);
}

TEST(aead_refuses_tampering)
{
    kt_secret *key = random_key();
    kt_secret *other_key = random_key();
    REQUIRE(key != NULL && other_key != NULL);
    const char plain[] = "secret";
    const char associated[] = "row-1";
    unsigned char box[sizeof plain + KT_AEAD_OVERHEAD];
    size_t box_length = 0;
    REQUIRE(kt_aead_seal(box, sizeof box, &box_length, plain, sizeof plain, associated,
                         strlen(associated), key) == 0);
    kt_secret *opened = NULL;

    CHECK_EQ_INT(kt_aead_open(&opened, box, box_length, "row-2", 5, key), -1);   /* wrong AD */
    CHECK_EQ_INT(kt_aead_open(&opened, box, box_length, NULL, 0, key), -1);      /* no AD */
    CHECK_EQ_INT(kt_aead_open(&opened, box, box_length, associated, strlen(associated), other_key),
                 -1); /* wrong key */
    CHECK_EQ_INT(kt_aead_open(&opened, box, box_length - 1, associated, strlen(associated), key),
                 -1); /* truncated */
    CHECK_EQ_INT(kt_aead_open(&opened, box, KT_AEAD_OVERHEAD - 1, associated, strlen(associated),
                              key),
                 -1); /* shorter than the overhead */
    int accepted_flips = 0;
    for (size_t index = 0; index < box_length; index++) {
        box[index] ^= 0x01; /* nonce, ciphertext and tag alike */
        if (kt_aead_open(&opened, box, box_length, associated, strlen(associated), key) == 0) {
            accepted_flips++;
            kt_secret_free(opened);
        }
        box[index] ^= 0x01;
    }
    CHECK_EQ_INT(accepted_flips, 0);
    CHECK(opened == NULL);

    /* The control: unaltered, it opens. */
    REQUIRE(kt_aead_open(&opened, box, box_length, associated, strlen(associated), key) == 0);
    kt_secret_free(opened);

    unsigned char small[sizeof box - 1];
    CHECK_EQ_INT(kt_aead_seal(small, sizeof small, &box_length, plain, sizeof plain, NULL, 0, key),
                 -1); /* box too small */
    kt_secret *short_key = kt_secret_new(16);
    CHECK_EQ_INT(kt_aead_seal(box, sizeof box, &box_length, plain, sizeof plain, NULL, 0,
                              short_key),
                 -1);
    kt_secret_free(short_key);
    kt_secret_free(other_key);
    kt_secret_free(key);
}

/* ---- Server keys ----------------------------------------------------------------------------- */

TEST(server_keys_create_and_load)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], copy[128], text[256], error[512] = "";
    join_path(path, sizeof path, &dir, "keytrustee-server.key");
    join_path(copy, sizeof copy, &dir, "copy.key");

    CHECK_EQ_INT(kt_server_keys_create(path, error, sizeof error), 0);
    CHECK_EQ_INT(file_mode(path), 0600);
    CHECK_EQ_INT(read_text(path, text, sizeof text), 70);
    CHECK(strncmp(text, "keytrustee-server-key-v1 ", 25) == 0);
    CHECK(text[69] == '\n');
    CHECK_EQ_INT(count_entries(dir.path), 1); /* no temporary file left behind */

    kt_server_keys *first = NULL, *second = NULL, *copied = NULL;
    REQUIRE(kt_server_keys_load(path, &first, error, sizeof error) == 0);
    REQUIRE(kt_server_keys_load(path, &second, error, sizeof error) == 0);
    CHECK(kt_fingerprint_valid(first->fingerprint));
    CHECK_EQ_STR(first->fingerprint, second->fingerprint);
    CHECK_EQ_INT(first->data_key->length, KT_KEY_BYTES);
    CHECK_EQ_INT(first->replication_key->length, KT_KEY_BYTES);
    CHECK_EQ_INT(first->signing_secret->length, KT_SIGN_SECRET_BYTES);
    CHECK(kt_equal(first->data_key->bytes, second->data_key->bytes, KT_KEY_BYTES));
    CHECK(!kt_equal(first->data_key->bytes, first->replication_key->bytes, KT_KEY_BYTES));

    /* The signing key really belongs to the public key and fingerprint. */
    unsigned char derived[KT_SIGN_PUBLIC_BYTES];
    kt_sign_public_from_secret(derived, first->signing_secret);
    CHECK(memcmp(derived, first->signing_public, sizeof derived) == 0);
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(fingerprint, first->signing_public);
    CHECK_EQ_STR(fingerprint, first->fingerprint);

    /* The passive's copy of .keytrustee gives the same keys. */
    REQUIRE(write_text(copy, text, 70, 0600));
    REQUIRE(kt_server_keys_load(copy, &copied, error, sizeof error) == 0);
    CHECK_EQ_STR(copied->fingerprint, first->fingerprint);
    CHECK(kt_equal(copied->data_key->bytes, first->data_key->bytes, KT_KEY_BYTES));
    CHECK(kt_equal(copied->replication_key->bytes, first->replication_key->bytes, KT_KEY_BYTES));

    /* A second server gets other keys. */
    char other_path[128];
    kt_server_keys *other = NULL;
    join_path(other_path, sizeof other_path, &dir, "other.key");
    REQUIRE(kt_server_keys_create(other_path, error, sizeof error) == 0);
    REQUIRE(kt_server_keys_load(other_path, &other, error, sizeof error) == 0);
    CHECK(strcmp(other->fingerprint, first->fingerprint) != 0);
    CHECK(!kt_equal(other->data_key->bytes, first->data_key->bytes, KT_KEY_BYTES));

    kt_server_keys_free(other);
    kt_server_keys_free(copied);
    kt_server_keys_free(second);
    kt_server_keys_free(first);
    kt_server_keys_free(NULL);
    temp_dir_remove(&dir);
}

TEST(server_keys_derivation_is_the_documented_one)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], error[512] = "";
    join_path(path, sizeof path, &dir, "keytrustee-server.key");
    unsigned char master[32];
    for (unsigned i = 0; i < sizeof master; i++)
        master[i] = (unsigned char)i;
    char line[128] = "keytrustee-server-key-v1 ";
    sodium_bin2base64(line + 25, sizeof line - 25, master, sizeof master,
                      sodium_base64_VARIANT_ORIGINAL);
    strcat(line, "\n");
    REQUIRE(write_text(path, line, strlen(line), 0600));

    kt_server_keys *keys = NULL;
    REQUIRE(kt_server_keys_load(path, &keys, error, sizeof error) == 0);
    unsigned char expected[32], seed[32], public_key[32], secret_key[64];
    crypto_kdf_derive_from_key(expected, 32, 1, "ktserver", master);
    CHECK(memcmp(keys->data_key->bytes, expected, 32) == 0);
    crypto_kdf_derive_from_key(expected, 32, 3, "ktserver", master);
    CHECK(memcmp(keys->replication_key->bytes, expected, 32) == 0);
    crypto_kdf_derive_from_key(seed, 32, 2, "ktserver", master);
    crypto_sign_seed_keypair(public_key, secret_key, seed);
    CHECK(memcmp(keys->signing_public, public_key, 32) == 0);
    CHECK(memcmp(keys->signing_secret->bytes, secret_key, 64) == 0);
    kt_server_keys_free(keys);
    temp_dir_remove(&dir);
}

TEST(server_keys_create_refuses_existing_file)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], before[256], after[256], error[512] = "";
    join_path(path, sizeof path, &dir, "keytrustee-server.key");
    REQUIRE(kt_server_keys_create(path, error, sizeof error) == 0);
    REQUIRE(read_text(path, before, sizeof before) == 70);
    CHECK_EQ_INT(kt_server_keys_create(path, error, sizeof error), -1);
    CHECK(strstr(error, "already exists") != NULL);
    CHECK(strstr(error, path) != NULL);
    CHECK_EQ_INT(read_text(path, after, sizeof after), 70);
    CHECK_EQ_STR(after, before);
    CHECK_EQ_INT(count_entries(dir.path), 1);

    char missing_dir[192];
    snprintf(missing_dir, sizeof missing_dir, "%s/no-such-dir/key", dir.path);
    CHECK_EQ_INT(kt_server_keys_create(missing_dir, error, sizeof error), -1);
    CHECK(strstr(error, "no-such-dir") != NULL);
    temp_dir_remove(&dir);
}

TEST(server_keys_load_refuses_open_permissions)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], expected[512], error[512] = "";
    join_path(path, sizeof path, &dir, "keytrustee-server.key");
    REQUIRE(kt_server_keys_create(path, error, sizeof error) == 0);
    kt_server_keys *keys = NULL;

    REQUIRE(chmod(path, 0644) == 0);
    CHECK_EQ_INT(kt_server_keys_load(path, &keys, error, sizeof error), -1);
    CHECK(keys == NULL);
    snprintf(expected, sizeof expected,
             "%s is readable by group or others (mode 0644); run: chmod 600 %s", path, path);
    CHECK_EQ_STR(error, expected);

    REQUIRE(chmod(path, 0620) == 0);
    CHECK_EQ_INT(kt_server_keys_load(path, &keys, error, sizeof error), -1);
    CHECK(strstr(error, "writable by group or others (mode 0620)") != NULL);
    CHECK(strstr(error, "chmod 600") != NULL);

    REQUIRE(chmod(path, 0604) == 0);
    CHECK_EQ_INT(kt_server_keys_load(path, &keys, error, sizeof error), -1);

    REQUIRE(chmod(path, 0400) == 0); /* owner-only read is fine */
    CHECK_EQ_INT(kt_server_keys_load(path, &keys, error, sizeof error), 0);
    kt_server_keys_free(keys);

    char missing[160];
    join_path(missing, sizeof missing, &dir, "missing.key");
    keys = NULL;
    CHECK_EQ_INT(kt_server_keys_load(missing, &keys, error, sizeof error), -1);
    CHECK(strstr(error, missing) != NULL);
    CHECK(keys == NULL);
    temp_dir_remove(&dir);
}

/* Loads `contents` as a key file and expects a refusal that does not echo the secret. */
static void expect_corrupted(const temp_dir *dir, const char *contents, size_t length,
                             const char *secret_part)
{
    char path[128], error[512] = "";
    join_path(path, sizeof path, dir, "bad.key");
    if (!write_text(path, contents, length, 0600)) {
        CHECK(!"could not write the test file");
        return;
    }
    kt_server_keys *keys = NULL;
    int result = kt_server_keys_load(path, &keys, error, sizeof error);
    CHECK_EQ_INT(result, -1);
    CHECK(keys == NULL);
    CHECK(strstr(error, "not a valid keytrustee server key file") != NULL);
    CHECK(strstr(error, secret_part) == NULL);
    if (result == 0)
        kt_server_keys_free(keys);
}

TEST(server_keys_load_refuses_corrupted_files)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], good[256], bad[256], error[512] = "";
    join_path(path, sizeof path, &dir, "keytrustee-server.key");
    REQUIRE(kt_server_keys_create(path, error, sizeof error) == 0);
    REQUIRE(read_text(path, good, sizeof good) == 70);
    char secret_part[21];
    memcpy(secret_part, good + 30, 20);
    secret_part[20] = '\0';

    memcpy(bad, good, 71);
    bad[40] = '!'; /* not base64 */
    expect_corrupted(&dir, bad, 70, secret_part);
    expect_corrupted(&dir, good, 69, secret_part); /* no newline */
    memcpy(bad, good, 70);
    memcpy(bad + 70, "x\n", 2);
    expect_corrupted(&dir, bad, 72, secret_part); /* trailing junk */
    memcpy(bad, good, 71);
    bad[23] = '2'; /* keytrustee-server-key-v2 */
    expect_corrupted(&dir, bad, 70, secret_part);
    memcpy(bad, good, 71);
    bad[68] = bad[68] == 'A' ? 'B' : 'A'; /* '=' replaced: padding missing */
    if (good[68] == '=')
        expect_corrupted(&dir, bad, 70, secret_part);
    memcpy(bad, good, 71);
    bad[24] = '\t'; /* wrong separator */
    expect_corrupted(&dir, bad, 70, secret_part);
    expect_corrupted(&dir, "", 0, secret_part);
    expect_corrupted(&dir, "keytrustee-server-key-v1 AAAA\n", 30, secret_part);

    /* A file far too large is refused before it is read. */
    static char large[10000];
    memset(large, 'A', sizeof large);
    char large_path[128];
    join_path(large_path, sizeof large_path, &dir, "large.key");
    REQUIRE(write_text(large_path, large, sizeof large, 0600));
    kt_server_keys *keys = NULL;
    CHECK_EQ_INT(kt_server_keys_load(large_path, &keys, error, sizeof error), -1);
    CHECK(strstr(error, "larger than") != NULL);

    /* The control: the good file still loads. */
    CHECK_EQ_INT(kt_server_keys_load(path, &keys, error, sizeof error), 0);
    kt_server_keys_free(keys);
    temp_dir_remove(&dir);
}

/* ---- Files ----------------------------------------------------------------------------------- */

TEST(atomic_write_and_secret_read)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char path[128], text[64], error[512] = "";
    join_path(path, sizeof path, &dir, "file");
    mode_t old_umask = umask(077); /* the mode must not depend on the umask */

    CHECK_EQ_INT(kt_write_file_atomic(path, "first", 5, 0644, error, sizeof error), 0);
    CHECK_EQ_INT(file_mode(path), 0644);
    CHECK_EQ_INT(read_text(path, text, sizeof text), 5);
    CHECK_EQ_STR(text, "first");
    CHECK_EQ_INT(kt_write_file_atomic(path, "second!", 7, 0600, error, sizeof error), 0);
    CHECK_EQ_INT(file_mode(path), 0600);
    CHECK_EQ_INT(read_text(path, text, sizeof text), 7);
    CHECK_EQ_STR(text, "second!");
    CHECK_EQ_INT(kt_write_file_atomic(path, "", 0, 0640, error, sizeof error), 0);
    CHECK_EQ_INT(file_mode(path), 0640);
    CHECK_EQ_INT(read_text(path, text, sizeof text), 0);
    CHECK_EQ_INT(count_entries(dir.path), 1);
    umask(old_umask);

    CHECK_EQ_INT(kt_write_file_atomic(path, "secret", 6, 0600, error, sizeof error), 0);
    kt_secret *secret = NULL;
    REQUIRE(kt_read_secret_file(path, 100, &secret, error, sizeof error) == 0);
    CHECK_EQ_INT(secret->length, 6);
    CHECK(memcmp(secret->bytes, "secret", 6) == 0);
    kt_secret_free(secret);
    REQUIRE(kt_read_secret_file(path, 6, &secret, error, sizeof error) == 0);
    kt_secret_free(secret);
    secret = NULL;
    CHECK_EQ_INT(kt_read_secret_file(path, 5, &secret, error, sizeof error), -1);
    CHECK(secret == NULL);
    CHECK(strstr(error, "larger than 5 bytes") != NULL);

    char missing[192];
    snprintf(missing, sizeof missing, "%s/missing/file", dir.path);
    CHECK_EQ_INT(kt_write_file_atomic(missing, "x", 1, 0600, error, sizeof error), -1);
    CHECK(strstr(error, "No such file or directory") != NULL);
    CHECK_EQ_INT(kt_read_secret_file(missing, 10, &secret, error, sizeof error), -1);
    CHECK(strstr(error, missing) != NULL);
    CHECK_EQ_INT(kt_read_secret_file(dir.path, 10, &secret, error, sizeof error), -1);
    temp_dir_remove(&dir);
}

/* ---- X.509 ----------------------------------------------------------------------------------- */

/* Parses a certificate file with mbedTLS and checks it against itself as the trust anchor for
 * `name`; returns the verification flags, or 0xffffffff when it cannot be parsed. */
static uint32_t self_verify_flags(const char *cert_path, const char *name)
{
    mbedtls_x509_crt certificate;
    mbedtls_x509_crt_init(&certificate);
    uint32_t flags = 0xffffffffu;
    if (mbedtls_x509_crt_parse_file(&certificate, cert_path) == 0)
        (void)mbedtls_x509_crt_verify(&certificate, &certificate, NULL, name, &flags, NULL, NULL);
    mbedtls_x509_crt_free(&certificate);
    return flags;
}

static bool key_matches_certificate(const char *cert_path, const char *key_path)
{
    mbedtls_x509_crt certificate;
    mbedtls_pk_context key;
    mbedtls_x509_crt_init(&certificate);
    mbedtls_pk_init(&key);
    bool matches = mbedtls_x509_crt_parse_file(&certificate, cert_path) == 0 &&
                   mbedtls_pk_parse_keyfile(&key, key_path, NULL) == 0 &&
                   mbedtls_pk_check_pair(&certificate.pk, &key) == 0 && certificate.ca_istrue;
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&certificate);
    return matches;
}

TEST(x509_self_signed_for_address)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char cert[128], key[128], error[512] = "";
    join_path(cert, sizeof cert, &dir, "cert.pem");
    join_path(key, sizeof key, &dir, "key.pem");
    int64_t now = (int64_t)time(NULL);
    REQUIRE(kt_x509_self_signed("127.0.0.11", false, 30, cert, key, error, sizeof error) == 0);
    CHECK_EQ_INT(file_mode(key), 0600);
    CHECK_EQ_INT(file_mode(cert), 0644);
    CHECK(key_matches_certificate(cert, key));

    kt_x509_info info;
    REQUIRE(kt_x509_info_read(cert, &info, error, sizeof error) == 0);
    CHECK_EQ_STR(info.subject, "CN=127.0.0.11");
    CHECK_EQ_STR(info.issuer, "CN=127.0.0.11");
    CHECK(info.not_before <= now && info.not_before > now - 2 * 3600);
    CHECK(info.not_after >= now + 30 * 86400 - 5 && info.not_after <= now + 30 * 86400 + 5);
    CHECK_EQ_INT(strlen(info.sha256_fingerprint), 95);
    CHECK(info.sha256_fingerprint[2] == ':' && info.sha256_fingerprint[92] == ':');

    /* mbedTLS on its own checks host names against dNSName entries only: an address is not
     * accepted by name (the TLS client handles iPAddress entries itself). */
    CHECK(self_verify_flags(cert, NULL) == 0);
    CHECK(self_verify_flags(cert, "127.0.0.11") & MBEDTLS_X509_BADCERT_CN_MISMATCH);

    char text[4096];
    CHECK(read_text(cert, text, sizeof text) > 0 &&
          strncmp(text, "-----BEGIN CERTIFICATE-----", 27) == 0);
    CHECK(read_text(key, text, sizeof text) > 0 && strstr(text, "PRIVATE KEY-----") != NULL);
    temp_dir_remove(&dir);
}

TEST(x509_self_signed_for_name_with_loopback)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char cert[128], key[128], error[512] = "";
    join_path(cert, sizeof cert, &dir, "cert.pem");
    join_path(key, sizeof key, &dir, "key.pem");
    REQUIRE(kt_x509_self_signed("kt01.example.com", true, 365, cert, key, error, sizeof error) ==
            0);
    CHECK_EQ_INT(file_mode(key), 0600);
    CHECK(key_matches_certificate(cert, key));
    kt_x509_info info;
    REQUIRE(kt_x509_info_read(cert, &info, error, sizeof error) == 0);
    CHECK_EQ_STR(info.subject, "CN=kt01.example.com");
    CHECK(info.not_after > (int64_t)time(NULL) + 364 * 86400);
    CHECK_EQ_INT(self_verify_flags(cert, "kt01.example.com"), 0);
    CHECK_EQ_INT(self_verify_flags(cert, "localhost"), 0);
    CHECK(self_verify_flags(cert, "kt02.example.com") & MBEDTLS_X509_BADCERT_CN_MISMATCH);

    /* Regenerating replaces both files with a new key. */
    char first_key[1024], second_key[1024];
    REQUIRE(read_text(key, first_key, sizeof first_key) > 0);
    REQUIRE(kt_x509_self_signed("kt01.example.com", true, 365, cert, key, error, sizeof error) ==
            0);
    REQUIRE(read_text(key, second_key, sizeof second_key) > 0);
    CHECK(strcmp(first_key, second_key) != 0);
    CHECK(key_matches_certificate(cert, key));
    temp_dir_remove(&dir);
}

TEST(x509_refuses_bad_requests)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char cert[128], key[128], error[512] = "";
    join_path(cert, sizeof cert, &dir, "cert.pem");
    join_path(key, sizeof key, &dir, "key.pem");
    CHECK_EQ_INT(kt_x509_self_signed("a,CN=evil", false, 30, cert, key, error, sizeof error), -1);
    CHECK(strstr(error, "a,CN=evil") != NULL);
    CHECK_EQ_INT(kt_x509_self_signed("", false, 30, cert, key, error, sizeof error), -1);
    CHECK_EQ_INT(kt_x509_self_signed("1:2:3", false, 30, cert, key, error, sizeof error), -1);
    CHECK_EQ_INT(kt_x509_self_signed("host", false, 0, cert, key, error, sizeof error), -1);
    CHECK_EQ_INT(count_entries(dir.path), 0);

    kt_x509_info info;
    CHECK_EQ_INT(kt_x509_info_read(cert, &info, error, sizeof error), -1);
    CHECK(strstr(error, cert) != NULL);
    REQUIRE(write_text(cert, "not a certificate\n", 18, 0644));
    CHECK_EQ_INT(kt_x509_info_read(cert, &info, error, sizeof error), -1);

    /* IPv6 literals are fine. */
    CHECK_EQ_INT(kt_x509_self_signed("::1", false, 1, cert, key, error, sizeof error), 0);
    temp_dir_remove(&dir);
}

/* ---- A TLS server for the client tests ------------------------------------------------------- */

typedef enum serve_mode {
    SERVE_ECHO,   /* echo everything until the client closes */
    SERVE_SILENT, /* handshake, then read without ever answering */
    SERVE_CLOSE,  /* handshake, then close_notify and close */
    SERVE_PLAIN,  /* no TLS: answer with plain HTTP and close */
} serve_mode;

typedef struct test_server {
    int listener;
    char port[16];
    serve_mode mode;
    char cert_path[128];
    char key_path[128];
    pthread_t thread;
    int handshake_result; /* 0 when the server completed a handshake */
} test_server;

static int test_random(void *context, unsigned char *out, size_t length)
{
    (void)context;
    randombytes_buf(out, length);
    return 0;
}

static int accept_one(int listener)
{
    struct pollfd entry = {.fd = listener, .events = POLLIN};
    if (poll(&entry, 1, 10000) != 1) /* never hang a test run */
        return -1;
    int connection = accept(listener, NULL, NULL);
    if (connection >= 0) {
        struct timeval timeout = {.tv_sec = 10};
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }
    return connection;
}

static void serve_tls(test_server *server, mbedtls_net_context *connection)
{
    mbedtls_ssl_config config;
    mbedtls_ssl_context ssl;
    mbedtls_x509_crt certificate;
    mbedtls_pk_context key;
    mbedtls_ssl_config_init(&config);
    mbedtls_ssl_init(&ssl);
    mbedtls_x509_crt_init(&certificate);
    mbedtls_pk_init(&key);
    int ret = mbedtls_x509_crt_parse_file(&certificate, server->cert_path);
    if (ret == 0)
        ret = mbedtls_pk_parse_keyfile(&key, server->key_path, NULL);
    if (ret == 0)
        ret = mbedtls_ssl_config_defaults(&config, MBEDTLS_SSL_IS_SERVER,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret == 0) {
        mbedtls_ssl_conf_rng(&config, test_random, NULL);
        ret = mbedtls_ssl_conf_own_cert(&config, &certificate, &key);
    }
    if (ret == 0)
        ret = mbedtls_ssl_setup(&ssl, &config);
    if (ret == 0) {
        mbedtls_ssl_set_bio(&ssl, connection, mbedtls_net_send, mbedtls_net_recv, NULL);
        while ((ret = mbedtls_ssl_handshake(&ssl)) == MBEDTLS_ERR_SSL_WANT_READ ||
               ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        }
        server->handshake_result = ret;
    }
    unsigned char buffer[4096];
    if (ret == 0 && server->mode == SERVE_ECHO) {
        int got;
        while ((got = mbedtls_ssl_read(&ssl, buffer, sizeof buffer)) > 0)
            for (int done = 0, sent; done < got; done += sent)
                if ((sent = mbedtls_ssl_write(&ssl, buffer + done, (size_t)(got - done))) <= 0)
                    break;
    } else if (ret == 0 && server->mode == SERVE_SILENT) {
        while (mbedtls_ssl_read(&ssl, buffer, sizeof buffer) > 0) {
        }
    } else if (ret == 0 && server->mode == SERVE_CLOSE) {
        mbedtls_ssl_close_notify(&ssl);
    }
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&certificate);
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&config);
}

static void *server_main(void *argument)
{
    test_server *server = argument;
    mbedtls_net_context connection;
    mbedtls_net_init(&connection);
    connection.fd = accept_one(server->listener);
    if (connection.fd >= 0) {
        if (server->mode == SERVE_PLAIN) {
            const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            unsigned char request[512];
            (void)recv(connection.fd, request, sizeof request, 0);
            (void)send(connection.fd, reply, sizeof reply - 1, MSG_NOSIGNAL);
        } else {
            serve_tls(server, &connection);
        }
    }
    mbedtls_net_free(&connection);
    return NULL;
}

/* Listens on address:0 and starts the thread that serves one connection. */
static bool server_start(test_server *server, const char *address, const char *cert_path,
                         const char *key_path, serve_mode mode)
{
    memset(server, 0, sizeof *server);
    server->mode = mode;
    server->handshake_result = -1;
    snprintf(server->cert_path, sizeof server->cert_path, "%s", cert_path);
    snprintf(server->key_path, sizeof server->key_path, "%s", key_path);
    struct sockaddr_in socket_address = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, address, &socket_address.sin_addr) != 1)
        return false;
    server->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t length = sizeof socket_address;
    if (server->listener < 0 ||
        bind(server->listener, (struct sockaddr *)&socket_address, sizeof socket_address) != 0 ||
        listen(server->listener, 4) != 0 ||
        getsockname(server->listener, (struct sockaddr *)&socket_address, &length) != 0) {
        if (server->listener >= 0)
            close(server->listener);
        return false;
    }
    snprintf(server->port, sizeof server->port, "%u", (unsigned)ntohs(socket_address.sin_port));
    if (pthread_create(&server->thread, NULL, server_main, server) != 0) {
        close(server->listener);
        return false;
    }
    return true;
}

static void server_stop(test_server *server)
{
    pthread_join(server->thread, NULL);
    close(server->listener);
}

/* Certificates shared by the TLS tests: one for kt01.example.com plus the loopback names, one
 * for 127.0.0.11 only, and an unrelated one that plays the wrong CA. */
typedef struct tls_files {
    temp_dir dir;
    char loopback_cert[128], loopback_key[128];
    char address_cert[128], address_key[128];
    char other_cert[128], other_key[128];
} tls_files;

static bool tls_files_make(tls_files *files)
{
    char error[512] = "";
    if (!temp_dir_make(&files->dir))
        return false;
    join_path(files->loopback_cert, sizeof files->loopback_cert, &files->dir, "loop.pem");
    join_path(files->loopback_key, sizeof files->loopback_key, &files->dir, "loop.key");
    join_path(files->address_cert, sizeof files->address_cert, &files->dir, "addr.pem");
    join_path(files->address_key, sizeof files->address_key, &files->dir, "addr.key");
    join_path(files->other_cert, sizeof files->other_cert, &files->dir, "other.pem");
    join_path(files->other_key, sizeof files->other_key, &files->dir, "other.key");
    bool made = kt_x509_self_signed("kt01.example.com", true, 30, files->loopback_cert,
                                    files->loopback_key, error, sizeof error) == 0 &&
                kt_x509_self_signed("127.0.0.11", false, 30, files->address_cert,
                                    files->address_key, error, sizeof error) == 0 &&
                kt_x509_self_signed("kt01.example.com", true, 30, files->other_cert,
                                    files->other_key, error, sizeof error) == 0;
    if (!made)
        fprintf(stderr, "    %s\n", error);
    return made;
}

/* Connects with the given CA to a fresh server and returns the failure; on success also checks
 * an echo when the server echoes. */
static kt_tls_failure try_connect(const char *listen_address, const char *host,
                                  const char *cert, const char *key, const char *ca_file,
                                  bool skip_verify, char *error, size_t error_size)
{
    test_server server;
    if (!server_start(&server, listen_address, cert, key, SERVE_ECHO)) {
        snprintf(error, error_size, "test server did not start");
        return KT_TLS_ERROR;
    }
    kt_tls_options options = {.ca_file = ca_file, .skip_verify = skip_verify};
    kt_tls_failure failure = KT_TLS_ERROR;
    kt_tls_client *client = kt_tls_connect(host, server.port, &options, &failure, error,
                                           error_size);
    if (client != NULL) {
        CHECK_EQ_INT(failure, KT_TLS_OK);
        const char message[] = "hello keytrustee";
        char reply[64] = "";
        CHECK_EQ_INT(kt_tls_write(client, message, sizeof message - 1, &failure), 0);
        size_t have = 0;
        while (have < sizeof message - 1) {
            long got = kt_tls_read(client, reply + have, sizeof reply - 1 - have, &failure);
            if (got <= 0)
                break;
            have += (size_t)got;
        }
        CHECK_EQ_STR(reply, message);
        kt_tls_close(client);
        CHECK_EQ_INT(server.handshake_result, 0);
    }
    server_stop(&server);
    return failure;
}

/* ---- TLS client ------------------------------------------------------------------------------ */

TEST(tls_connect_to_closed_port_fails_fast)
{
    /* Take an ephemeral port and release it, so nothing listens there. */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t length = sizeof address;
    REQUIRE(probe >= 0 && bind(probe, (struct sockaddr *)&address, sizeof address) == 0 &&
            getsockname(probe, (struct sockaddr *)&address, &length) == 0);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)ntohs(address.sin_port));
    close(probe);

    kt_tls_options options = {.skip_verify = true, .connect_timeout_ms = 2000};
    kt_tls_failure failure = KT_TLS_OK;
    char error[512] = "";
    int64_t start = monotonic_ms();
    kt_tls_client *client = kt_tls_connect("127.0.0.1", port, &options, &failure, error,
                                           sizeof error);
    int64_t elapsed = monotonic_ms() - start;
    CHECK(client == NULL);
    CHECK_EQ_INT(failure, KT_TLS_CONNECT_FAILED);
    CHECK(elapsed < 1000);
    CHECK(strstr(error, "Connection refused") != NULL);
    CHECK(strstr(error, port) != NULL);
    kt_tls_close(client);
}

TEST(tls_connect_timeout_on_silent_address)
{
    /* A listener whose backlog is full leaves further connects unanswered (SYNs are dropped),
     * which is what a dead node looks like. */
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t length = sizeof address;
    REQUIRE(listener >= 0 && bind(listener, (struct sockaddr *)&address, sizeof address) == 0 &&
            listen(listener, 0) == 0 &&
            getsockname(listener, (struct sockaddr *)&address, &length) == 0);
    int fillers[4];
    int filler_count = 0;
    for (; filler_count < 4; filler_count++) {
        fillers[filler_count] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fillers[filler_count], (struct sockaddr *)&address, sizeof address);
    }
    usleep(50000);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)ntohs(address.sin_port));
    kt_tls_options options = {.skip_verify = true, .connect_timeout_ms = 300,
                              .io_timeout_ms = 300};
    kt_tls_failure failure = KT_TLS_OK;
    char error[512] = "";
    int64_t start = monotonic_ms();
    kt_tls_client *client = kt_tls_connect("127.0.0.1", port, &options, &failure, error,
                                           sizeof error);
    int64_t elapsed = monotonic_ms() - start;
    CHECK(client == NULL);
    /* Depending on the kernel the connect itself or the handshake waits: both are bounded. */
    CHECK(failure == KT_TLS_CONNECT_FAILED || failure == KT_TLS_TIMEOUT);
    CHECK(elapsed >= 250 && elapsed < 2000);
    kt_tls_close(client);
    for (int i = 0; i < filler_count; i++)
        close(fillers[i]);
    close(listener);
}

TEST(tls_handshake_and_echo_with_pinned_certificate)
{
    tls_files files;
    REQUIRE(tls_files_make(&files));
    char error[512] = "";
    /* 127.0.0.1 is an iPAddress entry of the loopback certificate. */
    CHECK_EQ_INT(try_connect("127.0.0.1", "127.0.0.1", files.loopback_cert, files.loopback_key,
                             files.loopback_cert, false, error, sizeof error),
                 KT_TLS_OK);
    if (error[0] != '\0')
        fprintf(stderr, "    %s\n", error);
    /* localhost is a dNSName entry. */
    error[0] = '\0';
    CHECK_EQ_INT(try_connect("127.0.0.1", "localhost", files.loopback_cert, files.loopback_key,
                             files.loopback_cert, false, error, sizeof error),
                 KT_TLS_OK);
    /* An address certificate without loopback names: only its own address matches. */
    CHECK_EQ_INT(try_connect("127.0.0.11", "127.0.0.11", files.address_cert, files.address_key,
                             files.address_cert, false, error, sizeof error),
                 KT_TLS_OK);
    temp_dir_remove(&files.dir);
}

TEST(tls_rejects_wrong_ca_and_wrong_name)
{
    tls_files files;
    REQUIRE(tls_files_make(&files));
    char error[512] = "";
    CHECK_EQ_INT(try_connect("127.0.0.1", "127.0.0.1", files.loopback_cert, files.loopback_key,
                             files.other_cert, false, error, sizeof error),
                 KT_TLS_CERTIFICATE_REJECTED);
    CHECK(strstr(error, "is not signed by the CA in") != NULL);
    CHECK(strstr(error, files.other_cert) != NULL);

    error[0] = '\0';
    CHECK_EQ_INT(try_connect("127.0.0.1", "127.0.0.1", files.address_cert, files.address_key,
                             files.address_cert, false, error, sizeof error),
                 KT_TLS_CERTIFICATE_REJECTED);
    CHECK(strstr(error, "is not issued for \"127.0.0.1\"") != NULL);

    error[0] = '\0';
    CHECK_EQ_INT(try_connect("127.0.0.11", "127.0.0.11", files.loopback_cert, files.loopback_key,
                             files.loopback_cert, false, error, sizeof error),
                 KT_TLS_CERTIFICATE_REJECTED);
    CHECK(strstr(error, "is not issued for") != NULL);

    /* skip_verify accepts any certificate. */
    CHECK_EQ_INT(try_connect("127.0.0.1", "127.0.0.1", files.loopback_cert, files.loopback_key,
                             files.other_cert, true, error, sizeof error),
                 KT_TLS_OK);
    CHECK_EQ_INT(try_connect("127.0.0.1", "127.0.0.1", files.address_cert, files.address_key,
                             NULL, true, error, sizeof error),
                 KT_TLS_OK);
    temp_dir_remove(&files.dir);
}

TEST(tls_reports_bad_ca_file)
{
    kt_tls_options options = {.ca_file = "/nonexistent/ca.pem"};
    kt_tls_failure failure = KT_TLS_OK;
    char error[512] = "";
    kt_tls_client *client = kt_tls_connect("127.0.0.1", "9", &options, &failure, error,
                                           sizeof error);
    CHECK(client == NULL);
    CHECK_EQ_INT(failure, KT_TLS_ERROR);
    CHECK(strstr(error, "/nonexistent/ca.pem") != NULL);
    CHECK(strstr(error, "--cacert") != NULL);

    options.ca_file = NULL;
    client = kt_tls_connect("127.0.0.1", "9", &options, &failure, error, sizeof error);
    CHECK(client == NULL);
    CHECK_EQ_INT(failure, KT_TLS_ERROR);

    unsigned char buffer[4];
    CHECK_EQ_INT(kt_tls_write(NULL, "x", 1, &failure), -1);
    CHECK_EQ_INT(kt_tls_read(NULL, buffer, sizeof buffer, &failure), -1);
    CHECK_EQ_INT(failure, KT_TLS_ERROR);
}

TEST(tls_read_timeout_and_peer_close)
{
    tls_files files;
    REQUIRE(tls_files_make(&files));
    kt_tls_options options = {.ca_file = files.loopback_cert, .io_timeout_ms = 300};
    kt_tls_failure failure = KT_TLS_ERROR;
    char error[512] = "";
    unsigned char buffer[64];

    test_server server;
    REQUIRE(server_start(&server, "127.0.0.1", files.loopback_cert, files.loopback_key,
                         SERVE_SILENT));
    kt_tls_client *client = kt_tls_connect("127.0.0.1", server.port, &options, &failure, error,
                                           sizeof error);
    CHECK(client != NULL);
    if (client != NULL) {
        int64_t start = monotonic_ms();
        CHECK_EQ_INT(kt_tls_read(client, buffer, sizeof buffer, &failure), -1);
        int64_t elapsed = monotonic_ms() - start;
        CHECK_EQ_INT(failure, KT_TLS_TIMEOUT);
        CHECK(elapsed >= 250 && elapsed < 3000);
        kt_tls_close(client);
    }
    server_stop(&server);

    REQUIRE(server_start(&server, "127.0.0.1", files.loopback_cert, files.loopback_key,
                         SERVE_CLOSE));
    client = kt_tls_connect("127.0.0.1", server.port, &options, &failure, error, sizeof error);
    CHECK(client != NULL);
    if (client != NULL) {
        CHECK_EQ_INT(kt_tls_read(client, buffer, 0, &failure), -1); /* not mistaken for a close */
        CHECK_EQ_INT(failure, KT_TLS_ERROR);
        CHECK_EQ_INT(kt_tls_read(client, buffer, sizeof buffer, &failure), 0);
        CHECK_EQ_INT(failure, KT_TLS_CLOSED);
        kt_tls_close(client);
    }
    server_stop(&server);
    temp_dir_remove(&files.dir);
}

TEST(tls_handshake_with_plain_server_fails)
{
    test_server server;
    REQUIRE(server_start(&server, "127.0.0.1", "", "", SERVE_PLAIN));
    kt_tls_options options = {.skip_verify = true, .io_timeout_ms = 2000};
    kt_tls_failure failure = KT_TLS_OK;
    char error[512] = "";
    kt_tls_client *client = kt_tls_connect("127.0.0.1", server.port, &options, &failure, error,
                                           sizeof error);
    CHECK(client == NULL);
    CHECK_EQ_INT(failure, KT_TLS_HANDSHAKE_FAILED);
    CHECK(strstr(error, "handshake") != NULL);
    kt_tls_close(client);
    server_stop(&server);
}

TEST(tls_large_echo)
{
    tls_files files;
    REQUIRE(tls_files_make(&files));
    test_server server;
    REQUIRE(server_start(&server, "127.0.0.1", files.loopback_cert, files.loopback_key,
                         SERVE_ECHO));
    kt_tls_options options = {.ca_file = files.loopback_cert};
    kt_tls_failure failure = KT_TLS_ERROR;
    char error[512] = "";
    kt_tls_client *client = kt_tls_connect("127.0.0.1", server.port, &options, &failure, error,
                                           sizeof error);
    CHECK(client != NULL);
    if (client != NULL) {
        static unsigned char sent[40000], received[40000];
        kt_random(sent, sizeof sent);
        CHECK_EQ_INT(kt_tls_write(client, sent, sizeof sent, &failure), 0);
        size_t have = 0;
        while (have < sizeof received) {
            long got = kt_tls_read(client, received + have, sizeof received - have, &failure);
            if (got <= 0)
                break;
            have += (size_t)got;
        }
        CHECK_EQ_INT(have, sizeof sent);
        CHECK(memcmp(sent, received, sizeof sent) == 0);
        kt_tls_close(client);
    }
    server_stop(&server);
    temp_dir_remove(&files.dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the test server writes with plain write() */
    if (kt_crypto_init() != 0) {
        fprintf(stderr, "kt_crypto_init failed\n");
        return 1;
    }
    return unit_run();
}

/* Freed secrets are recycled by size class: a recycled buffer must come back all zeros, whatever
 * its previous owner wrote into all of its capacity, and of the length asked for. */
TEST(secret_recycled_buffers_are_zeroed)
{
    for (int round = 0; round < 3; round++) {
        kt_secret *first = kt_secret_new(100);
        REQUIRE(first != NULL);
        memset(first->bytes, 0xAA, 128); /* the whole 128-byte size class */
        kt_secret_free(first);
        kt_secret *second = kt_secret_new(120);
        REQUIRE(second != NULL);
        CHECK_EQ_INT(second->length, 120);
        bool zero = true;
        for (size_t i = 0; i < second->length; i++)
            zero = zero && second->bytes[i] == 0;
        CHECK(zero);
        kt_secret_free(second);
    }
    kt_secret *empty = kt_secret_new(0);
    CHECK(empty != NULL && empty->bytes != NULL && empty->length == 0);
    kt_secret_free(empty);
    kt_secret *large = kt_secret_new(512 * 1024); /* past the largest class: not cached */
    CHECK(large != NULL && large->length == 512 * 1024 && large->bytes[512 * 1024 - 1] == 0);
    kt_secret_free(large);
}

/* ---- Backup encryption: sealed keys, passphrase keys, streams -------------------------------- */

TEST(sealed_key_opens_only_with_its_secret_key)
{
    unsigned char public_key[KT_SEAL_PUBLIC_BYTES], derived[KT_SEAL_PUBLIC_BYTES];
    unsigned char other_public[KT_SEAL_PUBLIC_BYTES], sealed[KT_SEALED_KEY_BYTES];
    kt_secret *secret_key = NULL, *other_secret = NULL, *opened = NULL;
    kt_secret *key = random_key();
    REQUIRE(key != NULL);
    REQUIRE(kt_seal_keypair(public_key, &secret_key) == 0);
    REQUIRE(kt_seal_keypair(other_public, &other_secret) == 0);
    CHECK(kt_seal_public_from_secret(derived, secret_key) == 0);
    CHECK(memcmp(derived, public_key, sizeof derived) == 0);
    REQUIRE(kt_seal_key(sealed, key, public_key) == 0);
    CHECK(kt_unseal_key(&opened, sealed, secret_key) == 0);
    CHECK(opened != NULL && opened->length == KT_KEY_BYTES &&
          memcmp(opened->bytes, key->bytes, KT_KEY_BYTES) == 0);
    kt_secret_free(opened);
    opened = NULL;
    CHECK(kt_unseal_key(&opened, sealed, other_secret) == -1 && opened == NULL);
    sealed[KT_SEALED_KEY_BYTES - 1] ^= 1;
    CHECK(kt_unseal_key(&opened, sealed, secret_key) == -1 && opened == NULL);
    unsigned char id[KT_SEAL_KEY_ID_BYTES], again[KT_SEAL_KEY_ID_BYTES];
    unsigned char other_id[KT_SEAL_KEY_ID_BYTES];
    kt_seal_key_id(id, public_key);
    kt_seal_key_id(again, public_key);
    kt_seal_key_id(other_id, other_public);
    CHECK(memcmp(id, again, sizeof id) == 0);
    CHECK(memcmp(id, other_id, sizeof id) != 0);
    kt_secret_free(key);
    kt_secret_free(secret_key);
    kt_secret_free(other_secret);
}

TEST(passphrase_key_is_argon2id_with_bounded_cost)
{
    unsigned char salt[KT_PASSPHRASE_SALT_BYTES] = {1, 2, 3};
    kt_passphrase_cost cheap = {.operations = 1, .memory_bytes = 8192};
    kt_secret *phrase = kt_secret_from("correct horse", 13);
    kt_secret *other = kt_secret_from("correct horsf", 13);
    kt_secret *first = NULL, *second = NULL, *third = NULL, *refused = NULL;
    char error[256];
    REQUIRE(phrase != NULL && other != NULL);
    CHECK(kt_passphrase_key(&first, phrase, salt, &cheap, error, sizeof error) == 0);
    CHECK(kt_passphrase_key(&second, phrase, salt, &cheap, error, sizeof error) == 0);
    CHECK(kt_passphrase_key(&third, other, salt, &cheap, error, sizeof error) == 0);
    REQUIRE(first != NULL && second != NULL && third != NULL);
    CHECK(first->length == KT_KEY_BYTES && memcmp(first->bytes, second->bytes, KT_KEY_BYTES) == 0);
    CHECK(memcmp(first->bytes, third->bytes, KT_KEY_BYTES) != 0);
    /* The same as libsodium's Argon2id13 with those parameters. */
    unsigned char expected[KT_KEY_BYTES];
    CHECK(crypto_pwhash(expected, sizeof expected, "correct horse", 13, salt, 1, 8192,
                        crypto_pwhash_ALG_ARGON2ID13) == 0);
    CHECK(memcmp(expected, first->bytes, KT_KEY_BYTES) == 0);
    kt_passphrase_cost greedy = {.operations = 3, .memory_bytes = KT_PASSPHRASE_MEMORY_MAX + 1};
    kt_passphrase_cost none = {.operations = 0, .memory_bytes = 8192};
    CHECK(!kt_passphrase_cost_acceptable(&greedy) && !kt_passphrase_cost_acceptable(&none));
    CHECK(kt_passphrase_key(&refused, phrase, salt, &greedy, error, sizeof error) == -1);
    CHECK(refused == NULL && strstr(error, "outside") != NULL);
    kt_passphrase_cost standard = kt_passphrase_default_cost();
    CHECK(kt_passphrase_cost_acceptable(&standard) && standard.memory_bytes >= (64u << 20));
    kt_secret *empty = kt_secret_new(0);
    CHECK(kt_passphrase_key(&refused, empty, salt, &cheap, error, sizeof error) == -1);
    kt_secret_free(empty);
    kt_secret_free(phrase);
    kt_secret_free(other);
    kt_secret_free(first);
    kt_secret_free(second);
    kt_secret_free(third);
}

/* Encrypts three messages ("one", "two", "three"; the last marked last) into `boxes`. */
static bool encrypt_three(const kt_secret *key, unsigned char header[KT_STREAM_HEADER_BYTES],
                          unsigned char boxes[3][5 + KT_STREAM_OVERHEAD], size_t lengths[3])
{
    static const char *const words[] = {"one", "two", "three"};
    kt_stream *stream = NULL;
    if (kt_stream_encrypt_start(&stream, header, key) != 0)
        return false;
    bool good = true;
    for (int index = 0; index < 3; index++) {
        lengths[index] = strlen(words[index]) + KT_STREAM_OVERHEAD;
        good = good && kt_stream_encrypt(stream, boxes[index], words[index], strlen(words[index]),
                                         index == 0 ? "ad" : NULL, index == 0 ? 2 : 0,
                                         index == 2) == 0;
    }
    good = good && kt_stream_encrypt(stream, boxes[0], "x", 1, NULL, 0, false) == -1;
    kt_stream_free(stream);
    return good;
}

/* Decrypts boxes in the given order; returns how many opened, *last whether the final did. */
static int decrypt_sequence(const kt_secret *key, const unsigned char *header,
                            unsigned char boxes[3][5 + KT_STREAM_OVERHEAD], const size_t *lengths,
                            const int *order, int count, bool *last)
{
    kt_stream *stream = NULL;
    unsigned char plain[8];
    size_t plain_length = 0;
    int opened = 0;
    *last = false;
    if (kt_stream_decrypt_start(&stream, header, key) != 0)
        return -1;
    for (int index = 0; index < count; index++) {
        int which = order[index];
        if (kt_stream_decrypt(stream, plain, &plain_length, boxes[which], lengths[which],
                              opened == 0 ? "ad" : NULL, opened == 0 ? 2 : 0, last) != 0)
            break;
        opened++;
    }
    kt_stream_free(stream);
    return opened;
}

TEST(stream_detects_tampering_reordering_truncation_and_wrong_keys)
{
    unsigned char header[KT_STREAM_HEADER_BYTES], boxes[3][5 + KT_STREAM_OVERHEAD];
    size_t lengths[3];
    bool last = false;
    kt_secret *key = random_key(), *other = random_key();
    REQUIRE(key != NULL && other != NULL);
    REQUIRE(encrypt_three(key, header, boxes, lengths));
    const int in_order[] = {0, 1, 2}, swapped[] = {0, 2, 1}, repeated[] = {0, 0};
    CHECK(decrypt_sequence(key, header, boxes, lengths, in_order, 3, &last) == 3 && last);
    CHECK(decrypt_sequence(key, header, boxes, lengths, in_order, 2, &last) == 2 && !last);
    CHECK(decrypt_sequence(key, header, boxes, lengths, swapped, 3, &last) == 1);
    CHECK(decrypt_sequence(key, header, boxes, lengths, repeated, 2, &last) == 1);
    CHECK(decrypt_sequence(other, header, boxes, lengths, in_order, 3, &last) == 0);
    boxes[1][2] ^= 0x40;
    CHECK(decrypt_sequence(key, header, boxes, lengths, in_order, 3, &last) == 1);
    unsigned char check[KT_STREAM_KEY_CHECK_BYTES], again[KT_STREAM_KEY_CHECK_BYTES];
    unsigned char other_check[KT_STREAM_KEY_CHECK_BYTES];
    kt_stream_key_check(check, key);
    kt_stream_key_check(again, key);
    kt_stream_key_check(other_check, other);
    CHECK(memcmp(check, again, sizeof check) == 0 && memcmp(check, other_check, sizeof check) != 0);
    kt_secret_free(key);
    kt_secret_free(other);
}

TEST(x509_server_check_names_the_failed_check)
{
    temp_dir dir;
    REQUIRE(temp_dir_make(&dir));
    char cert[128], key[128], other_cert[128], other_key[128], error[1024];
    join_path(cert, sizeof cert, &dir, "cert.pem");
    join_path(key, sizeof key, &dir, "key.pem");
    join_path(other_cert, sizeof other_cert, &dir, "other.pem");
    join_path(other_key, sizeof other_key, &dir, "other-key.pem");
    REQUIRE(kt_x509_self_signed("127.0.0.11", true, 30, cert, key, error, sizeof error) == 0);
    REQUIRE(kt_x509_self_signed("kt01.example.com", false, 30, other_cert, other_key, error,
                                sizeof error) == 0);
    kt_x509_server_check check = {.cert_path = cert, .key_path = key, .host = "127.0.0.11",
                                  .now = (int64_t)time(NULL)};
    CHECK(kt_x509_check_server(&check, error, sizeof error) == 0);
    check.host = "127.0.0.12";
    CHECK(kt_x509_check_server(&check, error, sizeof error) == -1 &&
          strstr(error, "not issued for \"127.0.0.12\"") != NULL);
    check.host = "127.0.0.11";
    check.key_path = other_key;
    CHECK(kt_x509_check_server(&check, error, sizeof error) == -1 &&
          strstr(error, "does not belong") != NULL);
    check.key_path = key;
    check.now = (int64_t)time(NULL) + 60 * 86400;
    CHECK(kt_x509_check_server(&check, error, sizeof error) == -1 &&
          strstr(error, "expired") != NULL);
    check.now = (int64_t)time(NULL);
    check.ca_path = other_cert;
    CHECK(kt_x509_check_server(&check, error, sizeof error) == -1 &&
          strstr(error, "does not verify") != NULL);
    kt_x509_names names;
    REQUIRE(kt_x509_names_read(other_cert, &names, error, sizeof error) == 0);
    CHECK(names.count == 1 && strcmp(names.names[0], "DNS:kt01.example.com") == 0);
    CHECK(kt_x509_names_match(&names, "KT01.example.com") && !kt_x509_names_match(&names, "kt01"));
    kt_x509_names wildcard = {.count = 1};
    snprintf(wildcard.names[0], sizeof wildcard.names[0], "DNS:*.example.com");
    CHECK(kt_x509_names_match(&wildcard, "kt02.example.com"));
    CHECK(!kt_x509_names_match(&wildcard, "a.b.example.com") &&
          !kt_x509_names_match(&wildcard, "example.com"));
    temp_dir_remove(&dir);
}
