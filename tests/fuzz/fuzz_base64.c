/*
 * fuzz_base64.c — the strict base64 decoder (crypto/encoding.c, kt_base64_decode) and its use in
 * JSON fields (app/common/json.c, kt_json_get_base64), through which every box, public key, nonce
 * and signature from outside enters.
 *
 * Input: one byte for the output buffer size, then the text. Properties: the decoder never writes
 * more than the buffer it is given (ASan sees the exact-size heap buffer); whatever it accepts
 * re-encodes to exactly the input (strict: no whitespace, padding required, no second spelling of
 * the same bytes); kt_json_get_base64 agrees with kt_base64_decode on the same string.
 */
#include <stdlib.h>
#include <string.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_base64");
    if (size < 1)
        return 0;
    size_t room = data[0];
    const char *text = (const char *)data + 1;
    size_t length = size - 1;
    unsigned char *out = malloc(room > 0 ? room : 1);
    if (out == NULL)
        abort();
    size_t decoded = 0;
    int result = kt_base64_decode(out, room, &decoded, text, length);
    if (result == 0) {
        FUZZ_CHECK(decoded <= room, "decoded %zu bytes into %zu", decoded, room);
        size_t encoded_size = kt_base64_encoded_size(decoded);
        char *again = malloc(encoded_size);
        if (again == NULL)
            abort();
        FUZZ_CHECK(kt_base64_encode(again, encoded_size, out, decoded) == 0, "re-encoding failed");
        FUZZ_CHECK(strlen(again) == length && memcmp(again, text, length) == 0,
                   "accepted a second spelling of %zu bytes", decoded);
        free(again);
    }
    /* The same text as a JSON string member (only when it is valid UTF-8 without NUL). */
    json_t *object = json_object();
    json_t *value = json_stringn(text, length);
    if (object != NULL && value != NULL && json_object_set_new(object, "box", value) == 0) {
        size_t json_length = 0;
        int json_result = kt_json_get_base64(object, "box", out, room, &json_length);
        if (length == 0)
            FUZZ_CHECK(json_result == 0 && json_length == 0, "an empty string is an empty value");
        else
            FUZZ_CHECK(json_result == result && (result != 0 || json_length == decoded),
                       "kt_json_get_base64 and kt_base64_decode disagree");
    } else if (value != NULL && object == NULL) {
        json_decref(value);
    }
    json_decref(object);
    free(out);
    return 0;
}
