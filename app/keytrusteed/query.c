/*
 * query.c — query strings, parsed strictly.
 *
 * A query is key=value pairs joined by '&', percent-encoded as application/x-www-form-urlencoded
 * ('+' is a space, so a literal '+' must be sent as %2B). Each endpoint names the keys it takes;
 * an unknown or repeated key, a malformed %XX escape or an escaped NUL is refused, so a typo never
 * turns into a silently different request. Empty pairs ("a=1&&b=2", a trailing '&') are skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

static int hex_value(char digit)
{
    if (digit >= '0' && digit <= '9')
        return digit - '0';
    if (digit >= 'a' && digit <= 'f')
        return digit - 'a' + 10;
    if (digit >= 'A' && digit <= 'F')
        return digit - 'A' + 10;
    return -1;
}

/* The byte of two hex digits, or -1. */
static int hex_pair(char high, char low)
{
    int high_value = hex_value(high), low_value = hex_value(low);
    return high_value < 0 || low_value < 0 ? -1 : high_value * 16 + low_value;
}

/* Decodes text[0, length) into a new string; NULL on a bad escape, %00 or memory shortage. */
static char *percent_decode(const char *text, size_t length)
{
    char *out = malloc(length + 1);
    if (out == NULL)
        return NULL;
    size_t written = 0;
    for (size_t index = 0; index < length; index++) {
        char character = text[index];
        if (character == '+') {
            character = ' ';
        } else if (character == '%') {
            int decoded = index + 2 < length ? hex_pair(text[index + 1], text[index + 2]) : -1;
            if (decoded <= 0) { /* malformed, or %00 */
                free(out);
                return NULL;
            }
            character = (char)decoded;
            index += 2;
        }
        out[written++] = character;
    }
    out[written] = '\0';
    return out;
}

static long key_index(const char *key, const char *const *keys, size_t count)
{
    for (size_t index = 0; index < count; index++)
        if (strcmp(key, keys[index]) == 0)
            return (long)index;
    return -1;
}

/* Stores one "key=value" pair. Returns 0, or -1 with the reason in error. */
static int store_pair(const char *pair, size_t length, const char *const *keys, size_t count,
                      char **values, char *error, size_t error_size)
{
    const char *equals = memchr(pair, '=', length);
    size_t key_length = equals != NULL ? (size_t)(equals - pair) : length;
    char *key = percent_decode(pair, key_length);
    char *value = equals != NULL ? percent_decode(equals + 1, length - key_length - 1)
                                 : percent_decode("", 0);
    int result = -1;
    if (key == NULL || value == NULL) {
        snprintf(error, error_size, "the query string has a malformed %%XX escape");
    } else {
        long index = key_index(key, keys, count);
        if (index < 0) {
            snprintf(error, error_size, "unknown query parameter \"%.64s\"", key);
        } else if (values[index] != NULL) {
            snprintf(error, error_size, "the query parameter \"%s\" is given twice", key);
        } else {
            values[index] = value;
            value = NULL;
            result = 0;
        }
    }
    free(key);
    free(value);
    return result;
}

int ktd_query_parse(const char *query, const char *const *keys, size_t count, char **values,
                    char *error, size_t error_size)
{
    for (size_t index = 0; index < count; index++)
        values[index] = NULL;
    if (query == NULL)
        return 0;
    const char *cursor = query;
    while (*cursor != '\0') {
        size_t length = strcspn(cursor, "&");
        if (length > 0 &&
            store_pair(cursor, length, keys, count, values, error, error_size) != 0) {
            ktd_query_free(values, count);
            return -1;
        }
        cursor += length;
        if (*cursor == '&')
            cursor++;
    }
    return 0;
}

void ktd_query_free(char **values, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        free(values[index]);
        values[index] = NULL;
    }
}
