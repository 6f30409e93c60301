/*
 * http.c — a small, defensive HTTP/1.1 client over crypto/'s TLS connection.
 *
 * One request per connection ("Connection: close"): format the request, write it, read the
 * response into a bounded buffer until it is complete, parse it. The parser trusts nothing the
 * server sends, in the manner of OpenSSH's packet code: every length is explicit, nothing relies
 * on NUL termination, and every limit is checked before it can be exceeded.
 *
 *   - the status line and headers together are at most 16 KiB, one line at most 8 KiB, at most
 *     100 headers; every line ends in CRLF (a bare CR or LF is refused); no NUL bytes; header
 *     names are tokens with the colon right after them (no obsolete line folding);
 *   - the status line is "HTTP/1.0" or "HTTP/1.1", a space, three digits 100-599, then a space
 *     and a reason phrase or nothing; interim 1xx responses are refused (we never ask for them);
 *   - Content-Length is decimal digits only, at most 1 MiB, and repeated only with the same value;
 *   - Transfer-Encoding may only be "chunked" (decoded here, sizes checked against the 1 MiB
 *     limit, trailers skipped), and never together with Content-Length;
 *   - without either, the body runs to the close of the connection, still at most 1 MiB (TLS
 *     cannot always tell a clean close from a cut; the JSON parse above catches a cut body);
 *   - the whole response must arrive within 60 s, whatever the per-read timeout.
 *
 * The request and the response pass through kt_secret buffers: a deposit travels inside them.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/ktclient/internal.h"

#define USER_AGENT "ktclient/" KT_VERSION
#define READ_CHUNK (16u * 1024u)
/* A server trickling bytes just inside the per-read timeout is cut off after this long. */
#define RESPONSE_DEADLINE_MS 60000

/* ---- Request ------------------------------------------------------------------------------------ */

static bool header_value_safe(const char *value)
{
    return strpbrk(value, "\r\n") == NULL;
}

/* Formats the request head into out (NULL with out_size 0 to measure). */
static int format_head(char *out, size_t out_size, const kt_http_request *request)
{
    bool has_body = request->body_length > 0 || strcmp(request->method, "POST") == 0;
    char body_headers[96] = "";
    if (has_body)
        (void)snprintf(body_headers, sizeof body_headers,
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                       request->body_length);
    char signing_headers[320] = "";
    if (request->signature != NULL)
        (void)snprintf(signing_headers, sizeof signing_headers,
                       "X-KT-Client: %s\r\nX-KT-Timestamp: %s\r\nX-KT-Nonce: %s\r\n"
                       "X-KT-Signature: %s\r\n",
                       request->signature->client, request->signature->timestamp,
                       request->signature->nonce, request->signature->signature);
    return snprintf(out, out_size,
                    "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " USER_AGENT "\r\n"
                    "Accept: application/json\r\n%s%sConnection: close\r\n\r\n",
                    request->method, request->target, request->authority, body_headers,
                    signing_headers);
}

int kt_http_format_request(const kt_http_request *request, kt_secret **out, char *error,
                           size_t error_size)
{
    *out = NULL;
    if (!header_value_safe(request->method) || !header_value_safe(request->target) ||
        !header_value_safe(request->authority) || strchr(request->target, ' ') != NULL ||
        strlen(request->target) > KT_HTTP_MAX_TARGET) {
        kt_client_error(error, error_size, "internal error: refusing to send a request whose "
                        "line or Host header holds spaces or line breaks, or is too long");
        return -1;
    }
    int head_length = format_head(NULL, 0, request);
    if (head_length < 0 || request->body_length > KT_HTTP_MAX_BODY) {
        kt_client_error(error, error_size, "internal error: the request cannot be formatted");
        return -1;
    }
    kt_secret *buffer = kt_secret_new((size_t)head_length + 1 + request->body_length);
    if (buffer == NULL) {
        kt_client_error(error, error_size, "out of memory formatting a request");
        return -1;
    }
    (void)format_head((char *)buffer->bytes, (size_t)head_length + 1, request);
    if (request->body_length > 0)
        memcpy(buffer->bytes + head_length, request->body, request->body_length);
    buffer->length = (size_t)head_length + request->body_length; /* drop the NUL */
    *out = buffer;
    return 0;
}

/* ---- Response head ----------------------------------------------------------------------------- */

static kt_http_result malformed(char *error, size_t error_size, const char *what)
{
    kt_client_error(error, error_size, "the server's response is not valid HTTP (%s); check that "
                    "the URL names a keytrustee server", what);
    return KT_HTTP_MALFORMED;
}

static bool is_digit(char character)
{
    return character >= '0' && character <= '9';
}

/* RFC 9110 tchar. */
static bool is_token_character(char character)
{
    if ((character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z') ||
        is_digit(character))
        return true;
    return character != '\0' && strchr("!#$%&'*+-.^_`|~", character) != NULL;
}

/* Visible characters, space, tab and obs-text; no controls. */
static bool is_field_character(char character)
{
    unsigned char byte = (unsigned char)character;
    return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
}

static bool all_field_characters(const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++)
        if (!is_field_character(text[index]))
            return false;
    return true;
}

static kt_http_result parse_status_line(const char *line, size_t length,
                                        kt_http_response *response, char *error,
                                        size_t error_size)
{
    if (length < 12 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
        line[8] != ' ' || !is_digit(line[9]) || !is_digit(line[10]) || !is_digit(line[11]) ||
        (length > 12 && line[12] != ' '))
        return malformed(error, error_size, "bad status line");
    if (!all_field_characters(line, length))
        return malformed(error, error_size, "control character in the status line");
    response->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (response->status < 100 || response->status > 599)
        return malformed(error, error_size, "status code out of range");
    if (response->status < 200)
        return malformed(error, error_size, "unexpected interim 1xx response");
    return KT_HTTP_COMPLETE;
}

/* Content-Length: digits only, at most KT_HTTP_MAX_BODY, equal when repeated. */
static kt_http_result parse_content_length(const char *value, size_t length,
                                           kt_http_response *response, char *error,
                                           size_t error_size)
{
    if (length == 0)
        return malformed(error, error_size, "empty Content-Length");
    size_t number = 0;
    for (size_t index = 0; index < length; index++) {
        if (!is_digit(value[index]))
            return malformed(error, error_size, "Content-Length is not a decimal number");
        number = number * 10 + (size_t)(value[index] - '0');
        if (number > KT_HTTP_MAX_BODY)
            return malformed(error, error_size, "Content-Length over the 1 MiB limit");
    }
    if (response->has_length && response->content_length != number)
        return malformed(error, error_size, "conflicting Content-Length headers");
    response->has_length = true;
    response->content_length = number;
    return KT_HTTP_COMPLETE;
}

static kt_http_result parse_transfer_encoding(const char *value, size_t length,
                                              kt_http_response *response, char *error,
                                              size_t error_size)
{
    if (response->chunked)
        return malformed(error, error_size, "repeated Transfer-Encoding");
    if (length != 7 || strncasecmp(value, "chunked", 7) != 0)
        return malformed(error, error_size, "unsupported Transfer-Encoding");
    response->chunked = true;
    return KT_HTTP_COMPLETE;
}

static bool name_is(const char *name, size_t length, const char *expected)
{
    return length == strlen(expected) && strncasecmp(name, expected, length) == 0;
}

static kt_http_result parse_header_line(const char *line, size_t length,
                                        kt_http_response *response, char *error,
                                        size_t error_size)
{
    const char *colon = memchr(line, ':', length);
    if (colon == NULL)
        return malformed(error, error_size, "header line without a colon");
    size_t name_length = (size_t)(colon - line);
    if (name_length == 0)
        return malformed(error, error_size, "empty header name");
    for (size_t index = 0; index < name_length; index++)
        if (!is_token_character(line[index]))
            return malformed(error, error_size, "bad character in a header name");
    const char *value = colon + 1;
    size_t value_length = length - name_length - 1;
    while (value_length > 0 && (value[0] == ' ' || value[0] == '\t')) {
        value++;
        value_length--;
    }
    while (value_length > 0 && (value[value_length - 1] == ' ' || value[value_length - 1] == '\t'))
        value_length--;
    if (!all_field_characters(value, value_length))
        return malformed(error, error_size, "control character in a header value");
    if (name_is(line, name_length, "Content-Length"))
        return parse_content_length(value, value_length, response, error, error_size);
    if (name_is(line, name_length, "Transfer-Encoding"))
        return parse_transfer_encoding(value, value_length, response, error, error_size);
    return KT_HTTP_COMPLETE;
}

/* Checks the framing once the blank line ending the head has been seen. */
static kt_http_result finish_head(kt_http_response *response, size_t head_length, char *error,
                                  size_t error_size)
{
    if (response->chunked && response->has_length)
        return malformed(error, error_size, "both Content-Length and Transfer-Encoding");
    response->head_length = head_length;
    response->has_body = response->status != 204 && response->status != 304;
    return KT_HTTP_COMPLETE;
}

/* One CRLF-terminated line starting at `position`: its length without CRLF, or an error. */
static kt_http_result find_line(const char *data, size_t limit, size_t position,
                                size_t maximum_line, size_t *line_length, char *error,
                                size_t error_size)
{
    const char *newline = memchr(data + position, '\n', limit - position);
    if (newline == NULL)
        return (limit - position > maximum_line)
                   ? malformed(error, error_size, "line longer than the limit")
                   : KT_HTTP_INCOMPLETE;
    size_t end = (size_t)(newline - data);
    if (end == position || data[end - 1] != '\r')
        return malformed(error, error_size, "line not ending in CRLF");
    *line_length = end - 1 - position;
    if (*line_length > maximum_line)
        return malformed(error, error_size, "line longer than the limit");
    if (memchr(data + position, '\r', *line_length) != NULL ||
        memchr(data + position, '\0', *line_length) != NULL)
        return malformed(error, error_size, "stray CR or NUL byte");
    return KT_HTTP_COMPLETE;
}

kt_http_result kt_http_parse_head(const char *data, size_t length, kt_http_response *response,
                                  char *error, size_t error_size)
{
    kt_secret *keep = response->body;
    memset(response, 0, sizeof *response);
    response->body = keep;
    size_t limit = length < KT_HTTP_MAX_HEAD ? length : KT_HTTP_MAX_HEAD;
    size_t position = 0;
    for (size_t line_index = 0;; line_index++) {
        size_t line_length = 0;
        kt_http_result result =
            find_line(data, limit, position, KT_HTTP_MAX_LINE, &line_length, error, error_size);
        if (result == KT_HTTP_INCOMPLETE && length >= KT_HTTP_MAX_HEAD)
            return malformed(error, error_size, "headers larger than 16 KiB");
        if (result != KT_HTTP_COMPLETE)
            return result;
        const char *line = data + position;
        position += line_length + 2;
        if (line_index == 0)
            result = parse_status_line(line, line_length, response, error, error_size);
        else if (line_length == 0)
            return finish_head(response, position, error, error_size);
        else if (line_index > KT_HTTP_MAX_HEADERS)
            return malformed(error, error_size, "more than 100 headers");
        else
            result = parse_header_line(line, line_length, response, error, error_size);
        if (result != KT_HTTP_COMPLETE)
            return result;
    }
}

/* ---- Response body ----------------------------------------------------------------------------- */

static kt_http_result set_body(kt_http_response *response, const unsigned char *bytes,
                               size_t length, char *error, size_t error_size)
{
    response->body = kt_secret_from(bytes, length);
    if (response->body == NULL) {
        kt_client_error(error, error_size, "out of memory reading the server's response");
        return KT_HTTP_MALFORMED;
    }
    return KT_HTTP_COMPLETE;
}

/* Parses the hexadecimal size of a chunk-size line (extensions after ';' are ignored). */
static kt_http_result parse_chunk_size(const char *line, size_t length, size_t room,
                                       size_t *size, char *error, size_t error_size)
{
    size_t index = 0;
    size_t number = 0;
    for (; index < length; index++) {
        char character = line[index];
        int digit = is_digit(character)                   ? character - '0'
                    : (character >= 'a' && character <= 'f') ? character - 'a' + 10
                    : (character >= 'A' && character <= 'F') ? character - 'A' + 10
                                                             : -1;
        if (digit < 0)
            break;
        number = number * 16 + (size_t)digit;
        if (number > room)
            return malformed(error, error_size, "chunked body over the 1 MiB limit");
    }
    if (index == 0)
        return malformed(error, error_size, "chunk size is not hexadecimal");
    while (index < length && (line[index] == ' ' || line[index] == '\t'))
        index++;
    if (index < length && line[index] != ';')
        return malformed(error, error_size, "junk after a chunk size");
    if (!all_field_characters(line, length))
        return malformed(error, error_size, "control character in a chunk extension");
    *size = number;
    return KT_HTTP_COMPLETE;
}

/* Skips trailer lines up to the blank line that ends a chunked body. */
static kt_http_result skip_trailers(const char *data, size_t length, size_t *position,
                                    char *error, size_t error_size)
{
    for (size_t count = 0;; count++) {
        size_t line_length = 0;
        kt_http_result result = find_line(data, length, *position, KT_HTTP_MAX_LINE,
                                          &line_length, error, error_size);
        if (result != KT_HTTP_COMPLETE)
            return result;
        *position += line_length + 2;
        if (line_length == 0)
            return KT_HTTP_COMPLETE;
        if (count >= KT_HTTP_MAX_HEADERS)
            return malformed(error, error_size, "more than 100 trailer lines");
    }
}

/* Walks a chunked body: measures it (out NULL) or copies its data into out. */
static kt_http_result walk_chunks(const unsigned char *data, size_t length, unsigned char *out,
                                  size_t *body_length, char *error, size_t error_size)
{
    const char *text = (const char *)data;
    size_t position = 0;
    size_t total = 0;
    for (;;) {
        size_t line_length = 0;
        kt_http_result result = find_line(text, length, position, KT_HTTP_MAX_CHUNK_LINE,
                                          &line_length, error, error_size);
        if (result != KT_HTTP_COMPLETE)
            return result;
        size_t size = 0;
        result = parse_chunk_size(text + position, line_length, KT_HTTP_MAX_BODY - total, &size,
                                  error, error_size);
        if (result != KT_HTTP_COMPLETE)
            return result;
        position += line_length + 2;
        if (size == 0) {
            *body_length = total;
            return skip_trailers(text, length, &position, error, error_size);
        }
        if (length - position < size + 2)
            return KT_HTTP_INCOMPLETE;
        if (data[position + size] != '\r' || data[position + size + 1] != '\n')
            return malformed(error, error_size, "chunk data not followed by CRLF");
        if (out != NULL)
            memcpy(out + total, data + position, size);
        total += size;
        position += size + 2;
    }
}

static kt_http_result take_chunked_body(kt_http_response *response, const unsigned char *data,
                                        size_t length, char *error, size_t error_size)
{
    size_t body_length = 0;
    kt_http_result result = walk_chunks(data, length, NULL, &body_length, error, error_size);
    if (result != KT_HTTP_COMPLETE)
        return result;
    response->body = kt_secret_new(body_length);
    if (response->body == NULL) {
        kt_client_error(error, error_size, "out of memory reading the server's response");
        return KT_HTTP_MALFORMED;
    }
    return walk_chunks(data, length, response->body->bytes, &body_length, error, error_size);
}

static kt_http_result take_body(kt_http_response *response, const unsigned char *data,
                                size_t length, bool closed, char *error, size_t error_size)
{
    if (!response->has_body)
        return set_body(response, data, 0, error, error_size);
    if (response->has_length) {
        if (length < response->content_length)
            return KT_HTTP_INCOMPLETE;
        return set_body(response, data, response->content_length, error, error_size);
    }
    if (response->chunked)
        return take_chunked_body(response, data, length, error, error_size);
    if (length > KT_HTTP_MAX_BODY)
        return malformed(error, error_size, "body over the 1 MiB limit");
    if (!closed)
        return KT_HTTP_INCOMPLETE;
    return set_body(response, data, length, error, error_size);
}

kt_http_result kt_http_parse_response(const unsigned char *data, size_t length, bool closed,
                                      kt_http_response *response, char *error,
                                      size_t error_size)
{
    kt_http_response_clear(response);
    kt_http_result result = kt_http_parse_head((const char *)data, length, response, error,
                                               error_size);
    if (result == KT_HTTP_COMPLETE)
        result = take_body(response, data + response->head_length,
                           length - response->head_length, closed, error, error_size);
    if (result == KT_HTTP_INCOMPLETE && closed) {
        kt_client_error(error, error_size, "the server closed the connection in the middle of "
                        "its response");
        return KT_HTTP_TRUNCATED;
    }
    return result;
}

void kt_http_response_clear(kt_http_response *response)
{
    kt_secret_free(response->body);
    memset(response, 0, sizeof *response);
}

/* ---- Exchange over TLS ------------------------------------------------------------------------- */

/* Makes room for at least READ_CHUNK more bytes, up to KT_HTTP_MAX_RESPONSE. */
static int grow(kt_secret **buffer, size_t used)
{
    size_t capacity = (*buffer)->length;
    if (capacity - used >= READ_CHUNK || capacity >= KT_HTTP_MAX_RESPONSE)
        return 0;
    size_t larger = capacity * 2 < KT_HTTP_MAX_RESPONSE ? capacity * 2 : KT_HTTP_MAX_RESPONSE;
    kt_secret *bigger = kt_secret_new(larger);
    if (bigger == NULL)
        return -1;
    memcpy(bigger->bytes, (*buffer)->bytes, used);
    kt_secret_free(*buffer);
    *buffer = bigger;
    return 0;
}

static int64_t monotonic_ms(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return 0;
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The bytes of a response as they arrive. */
typedef struct receiver {
    kt_secret *buffer;
    size_t used;
    int64_t deadline;
} receiver;

/* Reads the next bytes: 1 when some arrived, 0 when the peer closed (cleanly or not: the parser
 * decides whether the response was complete), -1 on failure with *failure set. */
static int receive_more(receiver *state, kt_tls_client *connection, kt_tls_failure *failure,
                        char *error, size_t error_size)
{
    *failure = KT_TLS_ERROR;
    if (monotonic_ms() > state->deadline) {
        *failure = KT_TLS_TIMEOUT;
        kt_client_error(error, error_size, "the response took longer than %d s",
                        RESPONSE_DEADLINE_MS / 1000);
        return -1;
    }
    if (grow(&state->buffer, state->used) != 0) {
        kt_client_error(error, error_size, "out of memory reading the server's response");
        return -1;
    }
    if (state->used == state->buffer->length) {
        (void)malformed(error, error_size, "response larger than the limit");
        return -1;
    }
    long count = kt_tls_read(connection, state->buffer->bytes + state->used,
                             state->buffer->length - state->used, failure);
    if (count > 0) {
        state->used += (size_t)count;
        return 1;
    }
    if (count == 0 || *failure == KT_TLS_CLOSED)
        return 0;
    kt_client_error(error, error_size, "reading the server's response failed (%s)",
                    *failure == KT_TLS_TIMEOUT ? "timed out" : "TLS error");
    return -1;
}

/* Reads until the response parses as complete, malformed, or the connection ends. */
static int read_response(kt_tls_client *connection, kt_http_response *response,
                         kt_tls_failure *failure, char *error, size_t error_size)
{
    receiver state = {.buffer = kt_secret_new(4 * READ_CHUNK),
                      .deadline = monotonic_ms() + RESPONSE_DEADLINE_MS};
    if (state.buffer == NULL) {
        *failure = KT_TLS_ERROR;
        kt_client_error(error, error_size, "out of memory reading the server's response");
        return -1;
    }
    kt_http_result result = KT_HTTP_INCOMPLETE;
    int progress = 1;
    while (result == KT_HTTP_INCOMPLETE && progress > 0) {
        progress = receive_more(&state, connection, failure, error, error_size);
        if (progress >= 0)
            result = kt_http_parse_response(state.buffer->bytes, state.used, progress == 0,
                                            response, error, error_size);
    }
    kt_secret_free(state.buffer);
    if (progress < 0)
        return -1;
    if (result == KT_HTTP_COMPLETE) {
        *failure = KT_TLS_OK;
        return 0;
    }
    *failure = result == KT_HTTP_TRUNCATED ? KT_TLS_CLOSED : KT_TLS_ERROR;
    return -1;
}

int kt_http_exchange(const kt_url *url, const kt_tls_options *options,
                     const kt_http_request *request, kt_http_response *response,
                     kt_tls_failure *failure, bool *sent, char *error, size_t error_size)
{
    *failure = KT_TLS_OK;
    *sent = false;
    kt_http_response_clear(response);
    kt_secret *bytes = NULL;
    if (kt_http_format_request(request, &bytes, error, error_size) != 0) {
        *failure = KT_TLS_ERROR;
        return -1;
    }
    kt_tls_client *connection = kt_tls_connect(url->host, url->port, options, failure, error,
                                               error_size);
    if (connection == NULL) {
        kt_secret_free(bytes);
        return -1;
    }
    int result = -1;
    *sent = true; /* from here on the server may receive (part of) the request */
    if (kt_tls_write(connection, bytes->bytes, bytes->length, failure) != 0)
        kt_client_error(error, error_size, "sending the request failed (%s)",
                        *failure == KT_TLS_TIMEOUT ? "timed out" : "connection lost");
    else
        result = read_response(connection, response, failure, error, error_size);
    kt_secret_free(bytes);
    kt_tls_close(connection);
    if (result != 0)
        kt_http_response_clear(response);
    return result;
}
