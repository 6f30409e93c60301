/*
 * fuzz_http_response.c — ktclient's HTTP/1.1 response parser (app/ktclient/http.c:
 * kt_http_parse_head, kt_http_parse_response), which reads whatever a server, or anything that
 * answers on its port, sends back.
 *
 * Input: two bytes choosing a split point, then the bytes of the response. The client parses the
 * bytes received so far after every read until the answer is complete, so the parser must be
 * consistent across prefixes: if the prefix up to the split point is already COMPLETE, the whole
 * input gives the same status and body (bytes after a response never change it), and a MALFORMED
 * prefix stays MALFORMED. A complete response's body is then treated as the client treats an
 * error answer: parsed as JSON and its message sanitised for the terminal.
 */
#include <stdlib.h>
#include <string.h>

#include "app/ktclient/internal.h"
#include "tests/fuzz/fuzz.h"

static void use_body(const kt_http_response *response)
{
    json_error_t error;
    json_t *answer = json_loadb((const char *)response->body->bytes, response->body->length, 0,
                                &error);
    const char *message = json_string_value(json_object_get(answer, "message"));
    if (message != NULL) {
        char clean[256];
        kt_client_sanitize(clean, sizeof clean, message);
        for (const unsigned char *byte = (const unsigned char *)clean; *byte != '\0'; byte++)
            FUZZ_CHECK(*byte >= 0x20 && *byte != 0x7f, "a control byte survived sanitising");
    }
    json_decref(answer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_http_response");
    if (size < 2)
        return 0;
    size_t split = ((size_t)data[0] << 8 | data[1]);
    data += 2;
    size -= 2;
    if (split > size)
        split = size;

    char error[256];
    kt_http_response head = {0};
    (void)kt_http_parse_head((const char *)data, size, &head, error, sizeof error);

    kt_http_response prefix = {0}, whole = {0};
    kt_http_result early = kt_http_parse_response(data, split, false, &prefix, error, sizeof error);
    kt_http_result open = kt_http_parse_response(data, size, false, &whole, error, sizeof error);
    if (early == KT_HTTP_COMPLETE) {
        FUZZ_CHECK(open == KT_HTTP_COMPLETE, "complete at %zu bytes but %d at %zu", split, open,
                   size);
        FUZZ_CHECK(prefix.status == whole.status && prefix.body->length == whole.body->length &&
                       memcmp(prefix.body->bytes, whole.body->bytes, whole.body->length) == 0,
                   "more bytes changed a complete response");
    }
    if (early == KT_HTTP_MALFORMED)
        FUZZ_CHECK(open == KT_HTTP_MALFORMED, "malformed at %zu bytes but %d at %zu", split, open,
                   size);
    if (open == KT_HTTP_COMPLETE) {
        FUZZ_CHECK(whole.body != NULL && whole.status >= 200 && whole.status <= 599,
                   "a complete response without a body or with status %d", whole.status);
        use_body(&whole);
    }
    kt_http_response closed = {0};
    kt_http_result ended = kt_http_parse_response(data, size, true, &closed, error, sizeof error);
    FUZZ_CHECK(ended != KT_HTTP_INCOMPLETE, "incomplete after the connection closed");
    if (open == KT_HTTP_COMPLETE)
        FUZZ_CHECK(ended == KT_HTTP_COMPLETE && closed.body->length == whole.body->length,
                   "closing the connection changed a complete response");
    kt_http_response_clear(&head);
    kt_http_response_clear(&prefix);
    kt_http_response_clear(&whole);
    kt_http_response_clear(&closed);
    return 0;
}
