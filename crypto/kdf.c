/*
 * kdf.c — keys derived from a master key and a name, for keys that must be found again from the
 * name alone rather than stored (ktclient's per-mount-point keys).
 *
 * The derived key is BLAKE2b-256 keyed by the master key (libsodium's crypto_generichash with a
 * key: a PRF, as in BLAKE2's keyed mode) over
 *
 *     label || 0x00 || name
 *
 * The label says what the key is for ("keytrustee-mount-key-v1") so that keys of one purpose can
 * never equal keys of another; the NUL between label and name keeps (label, name) pairs apart even
 * when one label is a prefix of another. libsodium's crypto_kdf was not used because its context is
 * fixed at 8 bytes and its subkey id is a number, and here the name is free text up to 255 bytes.
 *
 * The input is assembled in a kt_secret only because a name may be meaningful to an attacker
 * (it is not a secret, but there is no reason to leave copies of it around either).
 */
#include <sodium.h>
#include <string.h>

#include "crypto/crypto.h"

_Static_assert(KT_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
                   KT_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
               "a master key must be a valid BLAKE2b key");

int kt_derive_key(kt_secret **derived, const kt_secret *master, const char *label,
                  const void *name, size_t name_length)
{
    *derived = NULL;
    if (master == NULL || master->length != KT_KEY_BYTES || label == NULL || label[0] == '\0' ||
        (name == NULL && name_length > 0) || name_length > KT_DERIVE_NAME_MAX)
        return -1;
    size_t label_length = strlen(label);
    if (label_length > KT_DERIVE_NAME_MAX)
        return -1;
    kt_secret *input = kt_secret_new(label_length + 1 + name_length);
    kt_secret *output = kt_secret_new(KT_KEY_BYTES);
    int result = -1;
    if (input != NULL && output != NULL) {
        memcpy(input->bytes, label, label_length);
        input->bytes[label_length] = 0;
        if (name_length > 0)
            memcpy(input->bytes + label_length + 1, name, name_length);
        result = crypto_generichash(output->bytes, output->length, input->bytes, input->length,
                                    master->bytes, master->length) == 0
                     ? 0
                     : -1;
    }
    kt_secret_free(input);
    if (result != 0) {
        kt_secret_free(output);
        return -1;
    }
    *derived = output;
    return 0;
}
