/*
 * fields.c — checking the fields callers hand to storage/, binding them to statements, and copying
 * columns back into the fixed-size records of storage.h.
 *
 * Text is checked to be valid UTF-8 within its byte limit, because everything stored is later sent
 * as JSON, where invalid UTF-8 would make a row impossible to list. Records use fixed arrays, so
 * reads refuse a stored value that does not fit instead of cutting it short.
 */
#include <stdint.h>
#include <string.h>

#include "storage/internal.h"

/* The lead byte of each multi-byte UTF-8 sequence: its marker bits, the sequence length, and the
 * smallest code point that needs that length (anything smaller is an overlong form). */
typedef struct utf8_form {
    unsigned char mask;
    unsigned char marker;
    size_t length;
    uint32_t smallest;
} utf8_form;

static const utf8_form utf8_forms[] = {
    {0xE0, 0xC0, 2, 0x80},
    {0xF0, 0xE0, 3, 0x800},
    {0xF8, 0xF0, 4, 0x10000},
};

/* The length of the valid UTF-8 sequence at `text`, or 0 when it is not one (overlong forms,
 * surrogates and code points past U+10FFFF are refused). */
static size_t utf8_sequence_length(const unsigned char *text, size_t available)
{
    if (text[0] < 0x80) {
        return 1;
    }
    const utf8_form *form = NULL;
    for (size_t index = 0; index < sizeof utf8_forms / sizeof utf8_forms[0]; index++) {
        if ((text[0] & utf8_forms[index].mask) == utf8_forms[index].marker) {
            form = &utf8_forms[index];
            break;
        }
    }
    if (!form || form->length > available) {
        return 0;
    }
    uint32_t point = text[0] & (0x7Fu >> form->length);
    for (size_t index = 1; index < form->length; index++) {
        if ((text[index] & 0xC0) != 0x80) {
            return 0;
        }
        point = (point << 6) | (text[index] & 0x3Fu);
    }
    if (point < form->smallest || point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF)) {
        return 0;
    }
    return form->length;
}

static bool is_control(unsigned char byte)
{
    return byte < 0x20 || byte == 0x7F;
}

const char *kt_text_problem(const char *text, size_t max_bytes, unsigned rules)
{
    if (!text) {
        return "is missing";
    }
    size_t length = strnlen(text, max_bytes + 1);
    if (length > max_bytes) {
        return "is too long";
    }
    if (length == 0 && !(rules & KT_TEXT_MAY_BE_EMPTY)) {
        return "is empty";
    }
    const unsigned char *bytes = (const unsigned char *)text;
    for (size_t index = 0; index < length;) {
        if ((rules & KT_TEXT_NO_CONTROL) && is_control(bytes[index])) {
            return "contains a control character";
        }
        size_t step = utf8_sequence_length(bytes + index, length - index);
        if (step == 0) {
            return "is not valid UTF-8";
        }
        index += step;
    }
    return NULL;
}

static bool is_org_name_character(char character)
{
    return (character >= 'A' && character <= 'Z') || (character >= 'a' && character <= 'z') ||
           (character >= '0' && character <= '9') || character == '_' || character == '.' ||
           character == '-';
}

const char *kt_org_name_problem(const char *name)
{
    const char *problem = kt_text_problem(name, KT_ORG_NAME_MAX, 0);
    if (problem) {
        return problem;
    }
    for (const char *cursor = name; *cursor; cursor++) {
        if (!is_org_name_character(*cursor)) {
            return "may hold only letters, digits, '_', '.' and '-'";
        }
    }
    return NULL;
}

const char *kt_state_name(kt_state state)
{
    return state == KT_STATE_DISABLED ? "disabled" : "active";
}

bool kt_state_known(kt_state state)
{
    return state == KT_STATE_ACTIVE || state == KT_STATE_DISABLED;
}

bool kt_uuid_acceptable(const char *text)
{
    return text && strnlen(text, KT_UUID_CHARS + 1) == KT_UUID_CHARS && kt_uuid_valid(text);
}

bool kt_fingerprint_acceptable(const char *text)
{
    return text && strnlen(text, KT_FINGERPRINT_CHARS + 1) == KT_FINGERPRINT_CHARS &&
           kt_fingerprint_valid(text);
}

int kt_state_parse(const char *text, kt_state *state)
{
    if (!text || !state) {
        return -1;
    }
    if (strcmp(text, "active") == 0) {
        *state = KT_STATE_ACTIVE;
    } else if (strcmp(text, "disabled") == 0) {
        *state = KT_STATE_DISABLED;
    } else {
        return -1;
    }
    return 0;
}

/* ---- Binding (values stay valid until the statement is stepped, so SQLITE_STATIC) ------------ */

int kt_bind_text(sqlite3_stmt *statement, int index, const char *text)
{
    return sqlite3_bind_text(statement, index, text, -1, SQLITE_STATIC);
}

int kt_bind_blob(sqlite3_stmt *statement, int index, const void *bytes, size_t length)
{
    if (length == 0) {
        return sqlite3_bind_null(statement, index);
    }
    return sqlite3_bind_blob64(statement, index, bytes, length, SQLITE_STATIC);
}

int kt_bind_state(sqlite3_stmt *statement, int index, kt_state state)
{
    return sqlite3_bind_text(statement, index, kt_state_name(state), -1, SQLITE_STATIC);
}

/* ---- Reading --------------------------------------------------------------------------------- */

int kt_column_text(sqlite3_stmt *row, int column, char *out, size_t size)
{
    out[0] = '\0';
    if (sqlite3_column_type(row, column) == SQLITE_NULL) {
        return 0;
    }
    const unsigned char *text = sqlite3_column_text(row, column);
    int length = sqlite3_column_bytes(row, column);
    if (!text || length < 0 || (size_t)length >= size) {
        return -1;
    }
    memcpy(out, text, (size_t)length);
    out[length] = '\0';
    return 0;
}

int kt_column_blob(sqlite3_stmt *row, int column, unsigned char *out, size_t size,
                   size_t *length)
{
    *length = 0;
    if (sqlite3_column_type(row, column) == SQLITE_NULL) {
        return 0;
    }
    const void *bytes = sqlite3_column_blob(row, column);
    int count = sqlite3_column_bytes(row, column);
    if (count < 0 || (size_t)count > size || (count > 0 && !bytes)) {
        return -1;
    }
    if (count > 0) {
        memcpy(out, bytes, (size_t)count);
    }
    *length = (size_t)count;
    return 0;
}

int kt_column_state(sqlite3_stmt *row, int column, kt_state *state)
{
    const unsigned char *text = sqlite3_column_text(row, column);
    return kt_state_parse((const char *)text, state);
}
