/*
 * support.c — small helpers of the client library: library start-up (crypto/ and a jansson
 * allocator that wipes what it frees), error text, making server text safe to print, and the
 * check for names and handles, JSON serialization into secret buffers, and timeout arguments.
 *
 * Why wipe jansson's memory: a fetched deposit arrives as a base64 string inside JSON. jansson's
 * parser copies it into scratch buffers and a string value before we decode it into a kt_secret;
 * with this allocator every one of those copies is zeroed when jansson frees it.
 */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "app/ktclient/internal.h"

static void *wiping_malloc(size_t size)
{
    return malloc(size);
}

static void wiping_free(void *pointer)
{
    if (pointer == NULL)
        return;
    kt_wipe(pointer, malloc_usable_size(pointer));
    free(pointer);
}

int kt_client_library_init(void)
{
    if (kt_crypto_init() != 0)
        return -1;
    json_set_alloc_funcs(wiping_malloc, wiping_free);
    return 0;
}

static void format_error(char *error, size_t error_size, const char *format, va_list arguments)
    __attribute__((format(printf, 3, 0)));

static void format_error(char *error, size_t error_size, const char *format, va_list arguments)
{
    if (error == NULL || error_size == 0)
        return;
    int written = vsnprintf(error, error_size, format, arguments);
    if (written < 0)
        error[0] = '\0';
}

void kt_client_error(char *error, size_t error_size, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    format_error(error, error_size, format, arguments);
    va_end(arguments);
}

kt_client_status kt_client_fail(kt_client_status status, char *error, size_t error_size,
                                const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    format_error(error, error_size, format, arguments);
    va_end(arguments);
    return status;
}

void kt_client_sanitize(char *out, size_t out_size, const char *text)
{
    if (out == NULL || out_size == 0)
        return;
    size_t written = 0;
    for (size_t index = 0; text != NULL && text[index] != '\0' && written + 1 < out_size;
         index++) {
        unsigned char byte = (unsigned char)text[index];
        /* Printable ASCII and UTF-8 bytes pass; control characters (escape sequences start with
         * one) become '?'. 0x80-0x9f alone are C1 controls only in Latin-1, harmless in UTF-8. */
        out[written++] = (byte < 0x20 || byte == 0x7f) ? '?' : (char)byte;
    }
    out[written] = '\0';
}

bool kt_client_text_valid(const char *text, size_t maximum)
{
    if (text == NULL)
        return false;
    size_t length = strnlen(text, maximum + 1);
    if (length == 0 || length > maximum)
        return false;
    for (size_t index = 0; index < length; index++) {
        unsigned char byte = (unsigned char)text[index];
        if (byte < 0x20 || byte == 0x7f)
            return false;
    }
    return true;
}

kt_secret *kt_client_json_dump(const json_t *object)
{
    size_t length = json_dumpb(object, NULL, 0, JSON_COMPACT);
    if (length == 0)
        return NULL;
    kt_secret *text = kt_secret_new(length);
    if (text != NULL && json_dumpb(object, (char *)text->bytes, length, JSON_COMPACT) != length) {
        kt_secret_free(text);
        text = NULL;
    }
    return text;
}

int kt_client_parse_connect_timeout(const char *text, long *milliseconds)
{
    long value = 0;
    if (text == NULL || text[0] == '\0' || strlen(text) > 6)
        return -1;
    for (const char *digit = text; *digit != '\0'; digit++) {
        if (*digit < '0' || *digit > '9')
            return -1;
        value = value * 10 + (*digit - '0');
    }
    if (value < 1 || value > KT_CLIENT_MAX_CONNECT_TIMEOUT_MS)
        return -1;
    *milliseconds = value;
    return 0;
}
