/*
 * json.c — binary values in JSON objects: boxes and public keys travel as standard padded base64
 * strings (crypto.h's strict codec, so whitespace or a missing '=' is refused, never guessed at);
 * and text quoted from a peer made safe to put in a JSON string.
 */
#include <stdlib.h>
#include <string.h>

#include "app/common/app.h"
#include "crypto/crypto.h"

int kt_json_get_base64(const json_t *object, const char *key, unsigned char *out, size_t out_size,
                       size_t *length)
{
    const json_t *value = json_object_get(object, key);
    if (!json_is_string(value))
        return -1;
    const char *text = json_string_value(value);
    size_t text_length = json_string_length(value);
    if (text_length == 0) {
        *length = 0;
        return 0;
    }
    /* Cheap bound first: base64 of out_size bytes never needs more than this many characters. */
    if (text_length / 4 * 3 > out_size + 2)
        return -1;
    return kt_base64_decode(out, out_size, length, text, text_length);
}

int kt_json_set_base64(json_t *object, const char *key, const void *bytes, size_t length)
{
    size_t size = kt_base64_encoded_size(length);
    if (size == SIZE_MAX)
        return -1;
    char *text = malloc(size);
    if (text == NULL)
        return -1;
    int result = -1;
    if (kt_base64_encode(text, size, bytes, length) == 0)
        result = json_object_set_new(object, key, json_string(text));
    free(text);
    return result == 0 ? 0 : -1;
}

void kt_text_make_printable(char *text)
{
    for (unsigned char *byte = (unsigned char *)text; *byte != '\0'; byte++)
        if (*byte < 0x20 || *byte >= 0x7f)
            *byte = '?';
}
