/*
 * fake_civetweb.c — the CivetWeb functions keytrusteed's request code calls, over an in-memory
 * request (see fake_civetweb.h).
 *
 * Behaviour follows CivetWeb 1.15 where keytrusteed depends on it: mg_get_header returns the first
 * header of that name (case-insensitive); mg_read returns at most the bytes the client sent and 0
 * at the end; an answer is started once, its headers added, then sent, then its body written.
 * The fake also enforces what a real connection would suffer from: a header name or value with a
 * CR or LF (response splitting), an answer started twice, or body bytes written before the
 * headers are fuzz failures.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tests/fuzz/fake_civetweb.h"
#include "tests/fuzz/fuzz.h"

void fake_request_init(struct mg_connection *connection, void *user_data, const char *method,
                       const char *path, const char *query, const unsigned char *body,
                       size_t body_length)
{
    memset(connection, 0, sizeof *connection);
    connection->info.request_method = method;
    connection->info.request_uri = path;
    connection->info.local_uri_raw = path;
    connection->info.local_uri = path;
    connection->info.http_version = "1.1";
    connection->info.query_string = query;
    snprintf(connection->info.remote_addr, sizeof connection->info.remote_addr, "192.0.2.7");
    connection->info.remote_port = 40000;
    connection->info.server_port = 11371;
    connection->info.is_ssl = 1;
    connection->info.content_length = -1;
    connection->info.user_data = user_data;
    connection->body = body;
    connection->body_length = body_length;
}

void fake_request_header(struct mg_connection *connection, const char *name, const char *value)
{
    if (connection->info.num_headers >= FAKE_HEADERS_MAX)
        return;
    struct mg_header *header = &connection->info.http_headers[connection->info.num_headers++];
    header->name = name;
    header->value = value;
    if (strcasecmp(name, "Content-Length") == 0)
        connection->info.content_length = strtoll(value, NULL, 10);
}

const char *fake_answer_header(const struct mg_connection *connection, const char *name)
{
    for (size_t index = 0; index < connection->header_count; index++)
        if (strcasecmp(connection->header_names[index], name) == 0)
            return connection->header_values[index];
    return NULL;
}

void fake_request_clear(struct mg_connection *connection)
{
    free(connection->written);
    connection->written = NULL;
}

/* ---- the CivetWeb API ------------------------------------------------------------------------ */

const struct mg_request_info *mg_get_request_info(const struct mg_connection *connection)
{
    return &connection->info;
}

const char *mg_get_header(const struct mg_connection *connection, const char *name)
{
    for (int index = 0; index < connection->info.num_headers; index++)
        if (strcasecmp(connection->info.http_headers[index].name, name) == 0)
            return connection->info.http_headers[index].value;
    return NULL;
}

int mg_read(struct mg_connection *connection, void *buffer, size_t length)
{
    size_t left = connection->body_length - connection->body_read;
    size_t count = length < left ? length : left;
    if (count > 0)
        memcpy(buffer, connection->body + connection->body_read, count);
    connection->body_read += count;
    return (int)count;
}

int mg_response_header_start(struct mg_connection *connection, int status)
{
    connection->starts++;
    FUZZ_CHECK(connection->starts == 1, "a second answer was started (status %d after %d)",
               status, connection->status);
    connection->status = status;
    return 0;
}

static bool has_line_break(const char *text)
{
    return strpbrk(text, "\r\n") != NULL;
}

int mg_response_header_add(struct mg_connection *connection, const char *name, const char *value,
                           int value_length)
{
    FUZZ_CHECK(connection->starts == 1 && !connection->headers_sent,
               "a header added outside an answer");
    FUZZ_CHECK(value_length == -1, "keytrusteed passes NUL-terminated values");
    FUZZ_CHECK(!has_line_break(name) && !has_line_break(value),
               "a header with a line break (response splitting): %s", name);
    if (connection->header_count >= FAKE_ANSWER_HEADERS)
        return -4;
    snprintf(connection->header_names[connection->header_count], 64, "%s", name);
    snprintf(connection->header_values[connection->header_count], 256, "%s", value);
    connection->header_count++;
    return 0;
}

int mg_response_header_send(struct mg_connection *connection)
{
    FUZZ_CHECK(connection->starts == 1 && !connection->headers_sent, "headers sent twice");
    connection->headers_sent = true;
    return 0;
}

int mg_write(struct mg_connection *connection, const void *buffer, size_t length)
{
    FUZZ_CHECK(connection->headers_sent, "body bytes written before the headers");
    unsigned char *grown = realloc(connection->written, connection->written_length + length + 1);
    if (grown == NULL)
        abort();
    memcpy(grown + connection->written_length, buffer, length);
    connection->written = grown;
    connection->written_length += length;
    connection->written[connection->written_length] = '\0';
    return (int)length;
}

/* keytrustee's CivetWeb patch (scripts/patches/civetweb-1.15-single-write-response.patch): the
 * head and the body in one write. */
int mg_response_send(struct mg_connection *connection, const void *body, size_t length)
{
    if (mg_response_header_send(connection) != 0)
        return -1;
    if (length > 0 && mg_write(connection, body, length) != (int)length)
        return -4;
    return 0;
}

int mg_printf(struct mg_connection *connection, const char *format, ...)
{
    (void)connection;
    char text[256];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(text, sizeof text, format, arguments);
    va_end(arguments);
    /* Only "HTTP/1.1 100 Continue" goes this way, before the answer. */
    FUZZ_CHECK(strncmp(text, "HTTP/1.1 100 ", 13) == 0, "unexpected mg_printf: %s", text);
    return length;
}
