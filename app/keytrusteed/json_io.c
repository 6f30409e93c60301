/*
 * json_io.c — the edges of a request: reading its body and sending the answer.
 *
 * Bodies: a JSON body needs Content-Length (411; chunked transfer is refused the same way), at most
 * 128 KiB (413) and Content-Type application/json (415). The body is read into a kt_secret, since
 * it may carry a deposit or an org auth secret, and parsed as exactly one JSON object with no
 * duplicate keys and no unknown members (400). When a body is refused without being read, the
 * answer says Connection: close, because the unread bytes cannot be skipped safely.
 *
 * Answers: every answer carries Content-Type, an exact Content-Length and Cache-Control: no-store;
 * every error is {"error": code, "message": sentence}, with Retry-After on the 503s that ask for a
 * retry. JSON is serialised into a wiped buffer, and jansson itself allocates through a wiping
 * allocator (ktd_json_use_wiping_allocator) because its strings and parse buffers hold the base64
 * of secrets.
 */
#include <ctype.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/keytrusteed/keytrusteed.h"

#define MESSAGE_MAX 512

/* ---- The wiping allocator ------------------------------------------------------------------- */

static void wiping_free(void *block)
{
    if (block == NULL)
        return;
    kt_wipe(block, malloc_usable_size(block));
    free(block);
}

void ktd_json_use_wiping_allocator(void)
{
    /* Plain malloc keeps blocks compatible with code that frees jansson output with free(). */
    json_set_alloc_funcs(malloc, wiping_free);
}

/* ---- Answers -------------------------------------------------------------------------------- */

int ktd_respond(ktd_request *request, int status, const char *content_type, const void *body,
                size_t length, const ktd_header *headers, size_t header_count)
{
    struct mg_connection *connection = request->connection;
    char length_text[32];
    snprintf(length_text, sizeof length_text, "%zu", length);

    request->status = status;
    if (mg_response_header_start(connection, status) != 0) {
        kt_log(KT_LOG_DEBUG, "an answer was already started for this request (status %d)",
               status);
        return -1;
    }
    int failed = mg_response_header_add(connection, "Content-Type", content_type, -1) != 0;
    failed |= mg_response_header_add(connection, "Content-Length", length_text, -1) != 0;
    failed |= mg_response_header_add(connection, "Cache-Control", "no-store", -1) != 0;
    for (size_t index = 0; index < header_count; index++)
        failed |= mg_response_header_add(connection, headers[index].name, headers[index].value,
                                         -1) != 0;
    if (request->body_unread)
        failed |= mg_response_header_add(connection, "Connection", "close", -1) != 0;
    if (failed)
        kt_log(KT_LOG_WARNING, "could not add a response header (out of memory)");
    /* Head and body in one write: one TLS record (scripts/patches/...-single-write-response). */
    int sent = mg_response_send(connection, body, length);
    if (sent == -4)
        kt_log(KT_LOG_DEBUG, "the answer was not sent: the client went away, or memory is short");
    return sent == 0 ? 0 : -1;
}

/* The answer of last resort, when even building an error body fails. */
static int respond_out_of_memory(ktd_request *request)
{
    static const char body[] =
        "{\"error\":\"internal\",\"message\":\"the server is out of memory\"}";
    kt_log(KT_LOG_ERROR, "out of memory while answering a request");
    return ktd_respond(request, 500, "application/json", body, sizeof body - 1, NULL, 0);
}

int ktd_respond_json(ktd_request *request, int status, const json_t *body)
{
    size_t size = json_dumpb(body, NULL, 0, JSON_COMPACT);
    if (size == 0)
        return respond_out_of_memory(request);
    kt_secret *text = kt_secret_new(size);
    if (text == NULL)
        return respond_out_of_memory(request);
    int result;
    if (json_dumpb(body, (char *)text->bytes, size, JSON_COMPACT) != size)
        result = respond_out_of_memory(request);
    else
        result = ktd_respond(request, status, "application/json", text->bytes, size, NULL, 0);
    kt_secret_free(text);
    return result;
}

/* Seconds a client should wait before retrying, for the 503s that invite a retry. */
static const char *retry_after(const char *code)
{
    if (strcmp(code, "passive") == 0)
        return "1";
    if (strcmp(code, "write_unavailable") == 0 || strcmp(code, "unavailable") == 0)
        return "5";
    return NULL;
}

/* Messages may quote request bytes (a handle, a path); keep them printable ASCII so they are
 * valid UTF-8 and cannot break a terminal or a log line. */
static void make_printable(char *text)
{
    for (unsigned char *byte = (unsigned char *)text; *byte != '\0'; byte++)
        if (*byte < 0x20 || *byte >= 0x7f)
            *byte = '?';
}

static json_t *error_body(const char *code, const json_t *extra, const char *message)
{
    json_t *body = json_pack("{s:s, s:s}", "error", code, "message", message);
    if (body == NULL || extra == NULL)
        return body;
    if (json_object_update(body, (json_t *)extra) != 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static int respond_error_body(ktd_request *request, int status, const char *code,
                              const json_t *extra, const char *message,
                              const ktd_header *headers, size_t header_count)
{
    json_t *body = error_body(code, extra, message);
    if (body == NULL)
        return respond_out_of_memory(request);
    size_t size = json_dumpb(body, NULL, 0, JSON_COMPACT);
    char *text = size > 0 ? malloc(size) : NULL;
    int result;
    if (text == NULL || json_dumpb(body, text, size, JSON_COMPACT) != size)
        result = respond_out_of_memory(request);
    else
        result = ktd_respond(request, status, "application/json", text, size, headers,
                             header_count);
    free(text);
    json_decref(body);
    return result;
}

int ktd_respond_error(ktd_request *request, int status, const char *code, const json_t *extra,
                      const char *format, ...)
{
    char message[MESSAGE_MAX];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    make_printable(message);

    request->error_code = code; /* static strings only: kept for the log and /metrics */
    ktd_header header = {"Retry-After", retry_after(code)};
    return respond_error_body(request, status, code, extra, message, &header,
                              header.value != NULL ? 1 : 0);
}

int ktd_respond_not_allowed(ktd_request *request, const char *allow)
{
    char message[MESSAGE_MAX];
    snprintf(message, sizeof message, "%s is not allowed here; this endpoint accepts %s",
             request->method != NULL ? request->method : "this method", allow);
    make_printable(message);
    ktd_header header = {"Allow", allow};
    return respond_error_body(request, 405, "method_not_allowed", NULL, message, &header, 1);
}

/* ---- Reading the body ----------------------------------------------------------------------- */

/* The value of a header that must appear at most once; *repeated is set when it appears twice. */
static const char *single_header(const struct mg_connection *connection, const char *name,
                                 bool *repeated)
{
    const struct mg_request_info *info = mg_get_request_info(connection);
    const char *value = NULL;
    *repeated = false;
    for (int index = 0; index < info->num_headers; index++) {
        if (strcasecmp(info->http_headers[index].name, name) != 0)
            continue;
        if (value != NULL)
            *repeated = true;
        value = info->http_headers[index].value;
    }
    return value;
}

static bool all_digits(const char *text)
{
    if (*text == '\0')
        return false;
    for (; *text != '\0'; text++)
        if (!isdigit((unsigned char)*text))
            return false;
    return true;
}

static bool is_json_media_type(const char *value)
{
    static const char json_type[] = "application/json";
    if (value == NULL || strncasecmp(value, json_type, sizeof json_type - 1) != 0)
        return false;
    char next = value[sizeof json_type - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* Refusals before reading the body: anything wrong with its framing. Returns the announced length
 * (0 when none), or -1 after answering. */
static long long check_framing(ktd_request *request, ktd_body_kind kind)
{
    bool repeated_length, repeated_transfer;
    const char *length_text = single_header(request->connection, "Content-Length",
                                            &repeated_length);
    const char *transfer = single_header(request->connection, "Transfer-Encoding",
                                         &repeated_transfer);
    if (transfer != NULL || repeated_transfer) {
        request->body_unread = true;
        ktd_respond_error(request, 411, "length_required", NULL,
                          "send the body with a Content-Length header; Transfer-Encoding is "
                          "not accepted");
        return -1;
    }
    if (length_text == NULL) {
        if (kind == KTD_BODY_NONE)
            return 0;
        ktd_respond_error(request, 411, "length_required", NULL,
                          "this request needs a JSON body with a Content-Length header");
        return -1;
    }
    if (repeated_length || !all_digits(length_text) || strlen(length_text) > 18) {
        request->body_unread = true;
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "Content-Length must be one decimal number");
        return -1;
    }
    long long length = strtoll(length_text, NULL, 10);
    if (length > (long long)KTD_BODY_MAX) {
        request->body_unread = true;
        ktd_respond_error(request, 413, "too_large", NULL,
                          "the body is %lld bytes; the limit is %u bytes (128 KiB)", length,
                          KTD_BODY_MAX);
        return -1;
    }
    return length;
}

/* Refusals that depend on the endpoint: a body where none belongs, or one that is not JSON. */
static int check_content(ktd_request *request, ktd_body_kind kind, long long length)
{
    if (kind == KTD_BODY_NONE && length > 0) {
        request->body_unread = true;
        ktd_respond_error(request, 400, "bad_request", NULL, "this endpoint takes no body");
        return -1;
    }
    bool repeated;
    const char *type = single_header(request->connection, "Content-Type", &repeated);
    if (kind == KTD_BODY_JSON && (repeated || !is_json_media_type(type))) {
        request->body_unread = true;
        ktd_respond_error(request, 415, "unsupported_media_type", NULL,
                          "send the body as Content-Type: application/json");
        return -1;
    }
    return 0;
}

/* A client that sent Expect: 100-continue waits for this before sending the body. */
static void accept_expectation(ktd_request *request)
{
    const char *expect = mg_get_header(request->connection, "Expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
        mg_printf(request->connection, "HTTP/1.1 100 Continue\r\n\r\n") <= 0)
        kt_log(KT_LOG_DEBUG, "could not send 100 Continue");
}

static int read_exactly(ktd_request *request, unsigned char *buffer, size_t length)
{
    size_t done = 0;
    while (done < length) {
        size_t chunk = length - done;
        int count = mg_read(request->connection, buffer + done, chunk);
        if (count <= 0)
            return -1;
        done += (size_t)count;
    }
    return 0;
}

int ktd_body_read(ktd_request *request, ktd_body_kind kind)
{
    long long length = check_framing(request, kind);
    if (length < 0 || check_content(request, kind, length) != 0)
        return -1;
    request->body = kt_secret_new((size_t)length);
    if (request->body == NULL) {
        request->body_unread = length > 0;
        return ktd_respond_internal(request, "allocating the request body");
    }
    if (length == 0)
        return 0;
    accept_expectation(request);
    if (read_exactly(request, request->body->bytes, (size_t)length) != 0) {
        request->body_unread = true;
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "the body ended before the %lld bytes that Content-Length announced",
                          length);
        return -1;
    }
    return 0;
}

/* ---- Parsing the body ----------------------------------------------------------------------- */

static bool field_known(const char *name, const char *const *fields)
{
    for (; *fields != NULL; fields++)
        if (strcmp(name, *fields) == 0)
            return true;
    return false;
}

json_t *ktd_body_object(ktd_request *request, const char *const *fields)
{
    json_error_t error;
    json_t *object = json_loadb((const char *)request->body->bytes, request->body->length,
                                JSON_REJECT_DUPLICATES, &error);
    if (object == NULL) {
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "the body is not valid JSON (line %d, column %d): %s", error.line,
                          error.column, error.text);
        return NULL;
    }
    if (!json_is_object(object)) {
        json_decref(object);
        ktd_respond_error(request, 400, "bad_request", NULL, "the body must be a JSON object");
        return NULL;
    }
    const char *name;
    json_t *value;
    json_object_foreach(object, name, value) {
        if (!field_known(name, fields)) {
            ktd_respond_error(request, 400, "bad_request", NULL, "unknown field \"%s\"", name);
            json_decref(object);
            return NULL;
        }
    }
    return object;
}

static bool has_control_characters(const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++) {
        unsigned char byte = (unsigned char)text[index];
        if (byte < 0x20 || byte == 0x7f)
            return true;
    }
    return false;
}

int ktd_body_string(ktd_request *request, const json_t *object, const char *name, bool required,
                    size_t minimum, size_t maximum, bool printable, const char **value)
{
    const json_t *member = json_object_get(object, name);
    *value = NULL;
    if (member == NULL) {
        if (!required)
            return 0;
        ktd_respond_error(request, 400, "bad_request", NULL, "the field \"%s\" is missing", name);
        return -1;
    }
    if (!json_is_string(member)) {
        ktd_respond_error(request, 400, "bad_request", NULL, "the field \"%s\" must be a string",
                          name);
        return -1;
    }
    size_t length = json_string_length(member);
    if (length < minimum || length > maximum) {
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "the field \"%s\" must be %zu to %zu bytes long (it is %zu)", name,
                          minimum, maximum, length);
        return -1;
    }
    if (printable && has_control_characters(json_string_value(member), length)) {
        ktd_respond_error(request, 400, "bad_request", NULL,
                          "the field \"%s\" must not contain control characters", name);
        return -1;
    }
    *value = json_string_value(member);
    return 0;
}
