/*
 * passphrase.c — keys from passphrases, with Argon2id (libsodium's crypto_pwhash, ALG_ARGON2ID13).
 *
 * Used for backups encrypted with `--passphrase-file`. Each file carries its own random salt and
 * the cost it was made with, so a later release can raise the default without making old backups
 * unreadable. The default is libsodium's "moderate" cost (3 passes over 256 MiB, about a second),
 * which an operator pays once per backup or restore and an attacker pays for every guess. A file
 * asking for more than KT_PASSPHRASE_MEMORY_MAX bytes or KT_PASSPHRASE_OPERATIONS_MAX passes is
 * refused rather than obeyed: the cost is read from the file before anything is authenticated.
 */
#include <sodium.h>

#include "crypto/internal.h"

_Static_assert(KT_PASSPHRASE_SALT_BYTES == crypto_pwhash_SALTBYTES, "Argon2id salt size");

kt_passphrase_cost kt_passphrase_default_cost(void)
{
    kt_passphrase_cost cost = {
        .operations = crypto_pwhash_OPSLIMIT_MODERATE,
        .memory_bytes = crypto_pwhash_MEMLIMIT_MODERATE,
    };
    return cost;
}

bool kt_passphrase_cost_acceptable(const kt_passphrase_cost *cost)
{
    return cost->operations >= crypto_pwhash_OPSLIMIT_MIN &&
           cost->operations <= KT_PASSPHRASE_OPERATIONS_MAX &&
           cost->memory_bytes >= crypto_pwhash_MEMLIMIT_MIN &&
           cost->memory_bytes <= KT_PASSPHRASE_MEMORY_MAX;
}

int kt_passphrase_key(kt_secret **key, const kt_secret *passphrase,
                      const unsigned char salt[KT_PASSPHRASE_SALT_BYTES],
                      const kt_passphrase_cost *cost, char *error, size_t error_size)
{
    *key = NULL;
    if (passphrase == NULL || passphrase->length == 0) {
        kt_crypto_error(error, error_size, "the passphrase is empty; put at least one character "
                                           "in the passphrase file");
        return -1;
    }
    if (!kt_passphrase_cost_acceptable(cost)) {
        kt_crypto_error(error, error_size,
                        "the passphrase cost (%llu passes over %llu bytes) is outside what this "
                        "keytrustee accepts; the file was altered or made by another program",
                        (unsigned long long)cost->operations,
                        (unsigned long long)cost->memory_bytes);
        return -1;
    }
    kt_secret *derived = kt_secret_new(KT_KEY_BYTES);
    if (derived == NULL) {
        kt_crypto_error(error, error_size, "out of memory deriving the passphrase key");
        return -1;
    }
    if (crypto_pwhash(derived->bytes, derived->length, (const char *)passphrase->bytes,
                      passphrase->length, salt, (unsigned long long)cost->operations,
                      (size_t)cost->memory_bytes, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        kt_secret_free(derived);
        kt_crypto_error(error, error_size,
                        "Argon2id could not run (it needs %llu MiB of memory); free some memory "
                        "and try again",
                        (unsigned long long)(cost->memory_bytes >> 20));
        return -1;
    }
    *key = derived;
    return 0;
}
