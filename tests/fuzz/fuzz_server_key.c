/*
 * fuzz_server_key.c — the server key file loader (crypto/server_keys.c, kt_server_keys_load),
 * which every daemon runs on .keytrustee/keytrustee-server.key at start.
 *
 * Input: one byte whose low bit picks the file mode (0600, or 0640 which must be refused), then
 * the file. Properties: a file readable by the group is always refused; an accepted file is the
 * single canonical line, so its base64 re-encodes to the same text; the keys derived from it are
 * consistent (the fingerprint is that of the signing key).
 */
#include <string.h>

#include "crypto/crypto.h"
#include "tests/fuzz/fuzz.h"

#define PREFIX "keytrustee-server-key-v1 "

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_server_key");
    if (size < 1)
        return 0;
    unsigned mode = (data[0] & 1) ? 0640 : 0600;
    const char *path = fuzz_file_write("keytrustee-server.key", data + 1, size - 1, mode);
    kt_server_keys *keys = NULL;
    char error[512];
    if (kt_server_keys_load(path, &keys, error, sizeof error) != 0) {
        FUZZ_CHECK(keys == NULL, "a refused key file still produced keys");
        return 0;
    }
    FUZZ_CHECK(mode == 0600, "a key file of mode %o was accepted", mode);
    const char *text = (const char *)data + 1;
    size_t length = size - 1;
    FUZZ_CHECK(length == strlen(PREFIX) + 45 && memcmp(text, PREFIX, strlen(PREFIX)) == 0 &&
                   text[length - 1] == '\n',
               "a key file that is not the single line was accepted");
    unsigned char master[KT_KEY_BYTES];
    char again[64];
    size_t decoded = 0;
    FUZZ_CHECK(kt_base64_decode(master, sizeof master, &decoded, text + strlen(PREFIX), 44) == 0 &&
                   decoded == KT_KEY_BYTES &&
                   kt_base64_encode(again, sizeof again, master, sizeof master) == 0 &&
                   memcmp(again, text + strlen(PREFIX), 44) == 0,
               "the accepted key does not re-encode to itself");
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(fingerprint, keys->signing_public);
    FUZZ_CHECK(strcmp(fingerprint, keys->fingerprint) == 0, "fingerprint mismatch");
    kt_wipe(master, sizeof master);
    kt_server_keys_free(keys);
    return 0;
}
