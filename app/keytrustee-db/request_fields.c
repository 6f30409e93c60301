/*
 * request_fields.c — strict, typed access to the fields of an admin request.
 *
 * Every op lists the fields it accepts; anything else is refused, so a misspelt field is an error
 * instead of a silently ignored value. Each getter checks presence, JSON type, length and format
 * and, on failure, builds the bad_request response naming the field, so the op functions stay a
 * list of calls. Lengths are checked here before anything is copied into storage's fixed-size
 * records; the finer rules (org name characters, uuid version) are storage's, which answers
 * KT_STORE_INVALID with its own sentence.
 */
#include <string.h>

#include "app/keytrustee-db/service.h"

bool kt_field_present(const json_t *request, const char *key)
{
    return json_object_get(request, key) != NULL;
}

int kt_fields_known(const json_t *request, const char *op, const char *const *allowed,
                    json_t **failure)
{
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)request, key, value) {
        (void)value;
        bool known = strcmp(key, "op") == 0;
        for (const char *const *name = allowed; !known && *name != NULL; name++)
            known = strcmp(key, *name) == 0;
        if (!known) {
            *failure = kt_response_error("bad_request", "%s does not take the field \"%.64s\"",
                                         op, key);
            return -1;
        }
    }
    return 0;
}

static bool has_control_character(const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++) {
        unsigned char c = (unsigned char)text[index];
        if (c < 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

/* The string value of a field; NULL with *failure set when it is absent (and required) or not a
 * string. *absent tells the caller to use its fallback. */
static const char *string_field(const json_t *request, const char *key, bool required,
                                bool *absent, size_t *length, json_t **failure)
{
    const json_t *value = json_object_get(request, key);
    *absent = value == NULL;
    if (value == NULL) {
        if (required)
            *failure = kt_response_error("bad_request", "the field \"%s\" is missing", key);
        return NULL;
    }
    if (!json_is_string(value)) {
        *failure = kt_response_error("bad_request", "the field \"%s\" must be a string", key);
        return NULL;
    }
    *length = json_string_length(value);
    return json_string_value(value);
}

int kt_field_text(const json_t *request, const char *key, size_t minimum, size_t maximum,
                  bool no_control, const char *fallback, char *out, json_t **failure)
{
    bool absent = false;
    size_t length = 0;
    const char *text = string_field(request, key, fallback == NULL, &absent, &length, failure);
    if (text == NULL && !absent)
        return -1;
    if (text == NULL && fallback == NULL)
        return -1;
    if (text == NULL) {
        text = fallback;
        length = strlen(fallback);
    }
    if (length < minimum || length > maximum) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must be %zu to %zu bytes long (it is %zu)",
                                     key, minimum, maximum, length);
        return -1;
    }
    /* jansson refuses \u0000 by default, but a request built in-process could still carry one. */
    if (strlen(text) != length || (no_control && has_control_character(text, length))) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must not contain control characters", key);
        return -1;
    }
    memcpy(out, text, length + 1);
    return 0;
}

int kt_field_base64(const json_t *request, const char *key, size_t minimum, size_t maximum,
                    bool optional, unsigned char *out, size_t *length, json_t **failure)
{
    bool absent = false;
    size_t text_length = 0;
    const char *text = string_field(request, key, !optional, &absent, &text_length, failure);
    *length = 0;
    if (text == NULL)
        return absent && optional ? 0 : -1;
    if (kt_json_get_base64(request, key, out, maximum, length) != 0) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must be padded base64 of at most %zu bytes",
                                     key, maximum);
        return -1;
    }
    if (*length < minimum) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must decode to %zu to %zu bytes (it is %zu)",
                                     key, minimum, maximum, *length);
        return -1;
    }
    return 0;
}

int kt_field_fingerprint(const json_t *request, const char *key, char *out, json_t **failure)
{
    if (kt_field_text(request, key, 1, KT_FINGERPRINT_CHARS, true, NULL, out, failure) != 0)
        return -1;
    if (!kt_fingerprint_valid(out)) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must be a fingerprint: %u uppercase hex "
                                     "characters",
                                     key, KT_FINGERPRINT_CHARS);
        return -1;
    }
    return 0;
}

int kt_field_uuid(const json_t *request, const char *key, char *out, json_t **failure)
{
    if (kt_field_text(request, key, 1, KT_UUID_CHARS, true, NULL, out, failure) != 0)
        return -1;
    if (!kt_uuid_valid(out)) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must be a uuid (36 characters, lowercase "
                                     "hex and dashes)",
                                     key);
        return -1;
    }
    return 0;
}

int kt_field_state(const json_t *request, const char *key, kt_state *state, json_t **failure)
{
    char text[16];
    if (kt_field_text(request, key, 1, sizeof text - 1, true, NULL, text, failure) != 0)
        return -1;
    if (kt_state_parse(text, state) != 0) {
        *failure = kt_response_error("bad_request",
                                     "the field \"%s\" must be \"active\" or \"disabled\"", key);
        return -1;
    }
    return 0;
}
