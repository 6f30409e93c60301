/*
 * server_keys.c — the server's master secret file (.keytrustee/keytrustee-server.key) and the
 * keys derived from it. The file holds one line, "keytrustee-server-key-v1 <base64>\n"; every key
 * the server uses comes from that one secret through libsodium's KDF, so a copy of the file (the
 * passive's rsync during seeding) reproduces all of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/internal.h"

static const char key_file_prefix[] = "keytrustee-server-key-v1 ";
#define PREFIX_LENGTH    (sizeof key_file_prefix - 1)
#define BASE64_LENGTH    44u /* base64 of KT_KEY_BYTES with padding, without NUL */
#define LINE_LENGTH      (PREFIX_LENGTH + BASE64_LENGTH + 1)
/* Read a little more than a valid file can hold so that a longer file reports as malformed. */
#define READ_LIMIT       4096u
static const char kdf_context[] = "ktserver";

enum subkey_id { SUBKEY_DATA = 1, SUBKEY_SIGNING_SEED = 2, SUBKEY_REPLICATION = 3 };

_Static_assert(sizeof kdf_context - 1 == crypto_kdf_CONTEXTBYTES, "KDF context is 8 bytes");
_Static_assert(KT_KEY_BYTES == crypto_kdf_KEYBYTES, "master secret is a KDF key");
_Static_assert(KT_KEY_BYTES == crypto_sign_SEEDBYTES, "a subkey seeds the signing key");

int kt_server_keys_create(const char *path, char *error, size_t error_size)
{
    kt_secret *master = kt_secret_new(KT_KEY_BYTES);
    kt_secret *line = kt_secret_new(LINE_LENGTH + 1); /* + NUL written by the encoder */
    int result = -1;
    if (master == NULL || line == NULL) {
        kt_crypto_error(error, error_size, "out of locked memory while creating %s", path);
        goto done;
    }
    kt_random(master->bytes, master->length);
    memcpy(line->bytes, key_file_prefix, PREFIX_LENGTH);
    if (kt_base64_encode((char *)line->bytes + PREFIX_LENGTH, BASE64_LENGTH + 1, master->bytes,
                         master->length) != 0) {
        kt_crypto_error(error, error_size, "internal error encoding the key for %s", path);
        goto done;
    }
    line->bytes[LINE_LENGTH - 1] = '\n';
    result = kt_write_file_new(path, line->bytes, LINE_LENGTH, 0600, error, error_size);
done:
    kt_secret_free(line);
    kt_secret_free(master);
    return result;
}

/* The key file must be private to its owner: anything else means the secret may have leaked or
 * may be replaced by someone else. */
static int check_permissions(int descriptor, const char *path, char *error, size_t error_size)
{
    struct stat status;
    if (fstat(descriptor, &status) != 0) {
        kt_crypto_error(error, error_size, "could not examine %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned mode = (unsigned)status.st_mode & 07777u;
    if ((mode & 077u) == 0)
        return 0;
    const char *kind = (mode & 044u) ? "readable" : (mode & 022u) ? "writable" : "accessible";
    kt_crypto_error(error, error_size,
                    "%s is %s by group or others (mode %04o); run: chmod 600 %s", path, kind,
                    mode, path);
    return -1;
}

/* Checks the line format and decodes the master secret. */
static kt_secret *parse_key_file(const kt_secret *contents, const char *path, char *error,
                                 size_t error_size)
{
    const char *text = (const char *)contents->bytes;
    kt_secret *master = NULL;
    size_t decoded_length = 0;
    bool well_formed = contents->length == LINE_LENGTH &&
                       memcmp(text, key_file_prefix, PREFIX_LENGTH) == 0 &&
                       text[LINE_LENGTH - 1] == '\n' &&
                       (master = kt_secret_new(KT_KEY_BYTES)) != NULL &&
                       kt_base64_decode(master->bytes, master->length, &decoded_length,
                                        text + PREFIX_LENGTH, BASE64_LENGTH) == 0 &&
                       decoded_length == KT_KEY_BYTES;
    if (!well_formed) {
        kt_secret_free(master);
        /* The text itself is secret, so the message only describes what was expected. */
        kt_crypto_error(error, error_size,
                        "%s is not a valid keytrustee server key file (expected the single line "
                        "\"keytrustee-server-key-v1 <base64 of 32 bytes>\"); restore it from "
                        "the backup of the .keytrustee directory",
                        path);
        return NULL;
    }
    return master;
}

static kt_secret *derive(const kt_secret *master, enum subkey_id id)
{
    kt_secret *subkey = kt_secret_new(KT_KEY_BYTES);
    if (subkey == NULL)
        return NULL;
    if (crypto_kdf_derive_from_key(subkey->bytes, subkey->length, (uint64_t)id, kdf_context,
                                   master->bytes) != 0) {
        kt_secret_free(subkey);
        return NULL;
    }
    return subkey;
}

static kt_server_keys *derive_all(const kt_secret *master)
{
    kt_server_keys *keys = calloc(1, sizeof *keys);
    if (keys == NULL)
        return NULL;
    kt_secret *seed = derive(master, SUBKEY_SIGNING_SEED);
    keys->data_key = derive(master, SUBKEY_DATA);
    keys->replication_key = derive(master, SUBKEY_REPLICATION);
    keys->signing_secret = kt_secret_new(KT_SIGN_SECRET_BYTES);
    bool ready = seed != NULL && keys->data_key != NULL && keys->replication_key != NULL &&
                 keys->signing_secret != NULL &&
                 crypto_sign_seed_keypair(keys->signing_public, keys->signing_secret->bytes,
                                          seed->bytes) == 0;
    kt_secret_free(seed);
    if (!ready) {
        kt_server_keys_free(keys);
        return NULL;
    }
    kt_fingerprint(keys->fingerprint, keys->signing_public);
    return keys;
}

int kt_server_keys_load(const char *path, kt_server_keys **keys, char *error, size_t error_size)
{
    int descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (descriptor < 0) {
        int saved_errno = errno;
        kt_crypto_error(error, error_size, "could not open the server key file %s: %s%s", path,
                        strerror(saved_errno),
                        saved_errno == ENOENT ? "; create it with the server's init step or "
                                                "copy the .keytrustee directory from the active"
                                              : "");
        return -1;
    }
    kt_secret *contents = NULL;
    int checked = check_permissions(descriptor, path, error, error_size);
    if (checked == 0)
        checked = kt_read_secret_descriptor(descriptor, path, READ_LIMIT, &contents, error,
                                            error_size);
    (void)close(descriptor); /* read-only: nothing to lose on close */
    if (checked != 0)
        return -1;

    kt_secret *master = parse_key_file(contents, path, error, error_size);
    kt_secret_free(contents);
    if (master == NULL)
        return -1;
    kt_server_keys *derived = derive_all(master);
    kt_secret_free(master);
    if (derived == NULL) {
        kt_crypto_error(error, error_size, "out of locked memory while deriving keys from %s",
                        path);
        return -1;
    }
    *keys = derived;
    return 0;
}

void kt_server_keys_free(kt_server_keys *keys)
{
    if (keys == NULL)
        return;
    kt_secret_free(keys->data_key);
    kt_secret_free(keys->signing_secret);
    kt_secret_free(keys->replication_key);
    kt_wipe(keys, sizeof *keys);
    free(keys);
}
