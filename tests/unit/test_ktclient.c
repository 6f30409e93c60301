/*
 * test_ktclient.c — unit tests of the pure pieces of the client library (app/ktclient): the HTTP
 * response parser on good and hostile responses, request formatting, key server URL parsing and
 * percent-encoding, the string to sign of docs/api.md against a fixed expected string, the
 * confdir file formats, the failover rules (which server a call goes to next, and when a refused
 * write means a degraded pair) and the failover hint file. Nothing here touches the network; the
 * CLI against real servers is covered by the integration tests (test_client_e2e.sh,
 * test_failover*.sh).
 */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktclient/internal.h"
#include "tests/unit/unit.h"

/* ---- Helpers --------------------------------------------------------------------------------- */

static kt_http_result parse_text(const char *text, bool closed, kt_http_response *response)
{
    char error[256];
    return kt_http_parse_response((const unsigned char *)text, strlen(text), closed, response,
                                  error, sizeof error);
}

static kt_http_result parse_bytes(const unsigned char *data, size_t length, bool closed)
{
    kt_http_response response = {0};
    char error[256];
    kt_http_result result =
        kt_http_parse_response(data, length, closed, &response, error, sizeof error);
    kt_http_response_clear(&response);
    return result;
}

static kt_http_result result_of(const char *text, bool closed)
{
    return parse_bytes((const unsigned char *)text, strlen(text), closed);
}

static bool body_is(const kt_http_response *response, const char *expected)
{
    return response->body != NULL && response->body->length == strlen(expected) &&
           memcmp(response->body->bytes, expected, response->body->length) == 0;
}

/* A head of `count` filler headers of `width` bytes each, then Content-Length: 0. */
static unsigned char *make_big_head(size_t count, size_t width, size_t *length)
{
    size_t size = 64 + count * (width + 16);
    unsigned char *data = malloc(size);
    if (data == NULL)
        return NULL;
    size_t used = (size_t)snprintf((char *)data, size, "HTTP/1.1 200 OK\r\n");
    for (size_t index = 0; index < count; index++) {
        used += (size_t)snprintf((char *)data + used, size - used, "X-Filler: ");
        memset(data + used, 'a', width);
        used += width;
        data[used++] = '\r';
        data[used++] = '\n';
    }
    used += (size_t)snprintf((char *)data + used, size - used, "Content-Length: 0\r\n\r\n");
    *length = used;
    return data;
}

/* ---- HTTP: good responses -------------------------------------------------------------------- */

TEST(http_content_length_response)
{
    kt_http_response response = {0};
    const char *text = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                       "content-length:  13 \r\n\r\n{\"uuid\": \"x\"}";
    CHECK_EQ_INT(parse_text(text, false, &response), KT_HTTP_COMPLETE);
    CHECK_EQ_INT(response.status, 201);
    CHECK(body_is(&response, "{\"uuid\": \"x\"}"));
    kt_http_response_clear(&response);
    CHECK(response.body == NULL);
}

TEST(http_incomplete_then_complete)
{
    const char *full = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    size_t length = strlen(full);
    for (size_t cut = 0; cut < length; cut++)
        CHECK_EQ_INT(parse_bytes((const unsigned char *)full, cut, false), KT_HTTP_INCOMPLETE);
    CHECK_EQ_INT(parse_bytes((const unsigned char *)full, length, false), KT_HTTP_COMPLETE);
    /* Bytes after the body are ignored: the connection closes anyway. */
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false),
                 KT_HTTP_COMPLETE);
}

TEST(http_reason_phrase_optional)
{
    kt_http_response response = {0};
    CHECK_EQ_INT(parse_text("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", false, &response),
                 KT_HTTP_COMPLETE);
    CHECK_EQ_INT(response.status, 404);
    CHECK_EQ_INT(parse_text("HTTP/1.0 503 \r\nContent-Length: 0\r\n\r\n", false, &response),
                 KT_HTTP_COMPLETE);
    CHECK_EQ_INT(response.status, 503);
    kt_http_response_clear(&response);
}

TEST(http_chunked_body)
{
    kt_http_response response = {0};
    const char *text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
                       "4\r\nWiki\r\n5;name=value\r\npedia\r\nA \r\n in chunks\r\n0\r\n"
                       "X-Trailer: yes\r\n\r\n";
    CHECK_EQ_INT(parse_text(text, false, &response), KT_HTTP_COMPLETE);
    CHECK(body_is(&response, "Wikipedia in chunks"));
    kt_http_response_clear(&response);
    /* Every prefix is incomplete, and truncated once the peer has closed. */
    size_t length = strlen(text);
    for (size_t cut = 0; cut < length; cut++) {
        CHECK_EQ_INT(parse_bytes((const unsigned char *)text, cut, false), KT_HTTP_INCOMPLETE);
        CHECK_EQ_INT(parse_bytes((const unsigned char *)text, cut, true), KT_HTTP_TRUNCATED);
    }
}

TEST(http_body_until_close)
{
    const char *text = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
    CHECK_EQ_INT(result_of(text, false), KT_HTTP_INCOMPLETE);
    kt_http_response response = {0};
    CHECK_EQ_INT(parse_text(text, true, &response), KT_HTTP_COMPLETE);
    CHECK(body_is(&response, "{}"));
    kt_http_response_clear(&response);
}

TEST(http_no_body_statuses)
{
    kt_http_response response = {0};
    CHECK_EQ_INT(parse_text("HTTP/1.1 204 No Content\r\n\r\n", false, &response),
                 KT_HTTP_COMPLETE);
    CHECK(body_is(&response, ""));
    kt_http_response_clear(&response);
}

/* ---- HTTP: hostile responses ----------------------------------------------------------------- */

TEST(http_huge_headers_refused)
{
    size_t length = 0;
    /* 20 KiB of headers: over the 16 KiB head limit, complete or not. */
    unsigned char *data = make_big_head(40, 500, &length);
    REQUIRE(data != NULL);
    CHECK_EQ_INT(parse_bytes(data, length, false), KT_HTTP_MALFORMED);
    CHECK_EQ_INT(parse_bytes(data, KT_HTTP_MAX_HEAD + 10, false), KT_HTTP_MALFORMED);
    free(data);
    /* One 9 KiB line: over the line limit before the head limit is reached. */
    data = make_big_head(1, 9000, &length);
    REQUIRE(data != NULL);
    CHECK_EQ_INT(parse_bytes(data, length, false), KT_HTTP_MALFORMED);
    CHECK_EQ_INT(parse_bytes(data, 8500, false), KT_HTTP_MALFORMED);
    free(data);
    /* 101 short headers. */
    data = make_big_head(101, 4, &length);
    REQUIRE(data != NULL);
    CHECK_EQ_INT(parse_bytes(data, length, false), KT_HTTP_MALFORMED);
    free(data);
    /* 99 short headers plus Content-Length is exactly 100: fine. */
    data = make_big_head(99, 4, &length);
    REQUIRE(data != NULL);
    CHECK_EQ_INT(parse_bytes(data, length, false), KT_HTTP_COMPLETE);
    free(data);
}

TEST(http_bad_status_lines)
{
    static const char *const heads[] = {
        "HTTP/2 200 OK\r\n\r\n",          "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",         "HTTP/1.1  200 OK\r\n\r\n",
        "FOO\r\n\r\n",                     "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",       "HTTP/1.1 600 High\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",  "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",        "HTTP/1.1 200 O\x1bK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",        "HTTP/1.2 200 OK\r\n\r\n",
    };
    for (size_t index = 0; index < sizeof heads / sizeof heads[0]; index++) {
        kt_http_result result = result_of(heads[index], true);
        if (result != KT_HTTP_MALFORMED)
            fprintf(stderr, "    accepted status line %zu\n", index);
        CHECK_EQ_INT(result, KT_HTTP_MALFORMED);
    }
}

TEST(http_bad_content_length)
{
    static const char *const values[] = {
        "-1", "+5", "1e3", "0x10", "", "5, 5", "5 5", "99999999999999999999999999999",
        "18446744073709551617", "1048577", "2000000",
    };
    for (size_t index = 0; index < sizeof values / sizeof values[0]; index++) {
        char text[256];
        snprintf(text, sizeof text, "HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\nhello",
                 values[index]);
        kt_http_result result = result_of(text, true);
        if (result != KT_HTTP_MALFORMED)
            fprintf(stderr, "    accepted Content-Length '%s'\n", values[index]);
        CHECK_EQ_INT(result, KT_HTTP_MALFORMED);
    }
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\n"
                           "hello", true),
                 KT_HTTP_MALFORMED);
    /* The same value twice is allowed (RFC 9110); the limit itself is fine. */
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
                           "hello", true),
                 KT_HTTP_COMPLETE);
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\nhello", false),
                 KT_HTTP_INCOMPLETE);
}

TEST(http_bad_line_endings_and_bytes)
{
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\nContent-Length: 0\n\n", true), KT_HTTP_MALFORMED);
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", true),
                 KT_HTTP_MALFORMED);
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nX-A: b\rc\r\nContent-Length: 0\r\n\r\n", true),
                 KT_HTTP_MALFORMED);
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\n\n", true), KT_HTTP_MALFORMED);
    static const unsigned char with_nul[] = "HTTP/1.1 200 OK\r\nX-A: b\0c\r\n\r\n";
    CHECK_EQ_INT(parse_bytes(with_nul, sizeof with_nul - 1, true), KT_HTTP_MALFORMED);
    /* No blank line ever comes: truncated once closed. */
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", true), KT_HTTP_TRUNCATED);
    CHECK_EQ_INT(result_of("", true), KT_HTTP_TRUNCATED);
}

TEST(http_bad_headers)
{
    static const char *const heads[] = {
        "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: b\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: b\x01\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    };
    for (size_t index = 0; index < sizeof heads / sizeof heads[0]; index++) {
        kt_http_result result = result_of(heads[index], true);
        if (result != KT_HTTP_MALFORMED)
            fprintf(stderr, "    accepted head %zu\n", index);
        CHECK_EQ_INT(result, KT_HTTP_MALFORMED);
    }
}

TEST(http_bad_chunks)
{
    static const char *const bodies[] = {
        "zz\r\nab\r\n0\r\n\r\n",
        "\r\n",
        "-1\r\n\r\n",
        "FFFFFFFFFFFFFFFFFFFFFFFF\r\n",
        "100001\r\n",
        "3\r\nabcd\r\n0\r\n\r\n",
        "3\r\nabc0\r\n\r\n",
        "3 x\r\nabc\r\n0\r\n\r\n",
        "3\nabc\r\n0\r\n\r\n",
    };
    for (size_t index = 0; index < sizeof bodies / sizeof bodies[0]; index++) {
        char text[256];
        snprintf(text, sizeof text, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s",
                 bodies[index]);
        kt_http_result result = result_of(text, true);
        if (result != KT_HTTP_MALFORMED)
            fprintf(stderr, "    accepted chunked body %zu\n", index);
        CHECK_EQ_INT(result, KT_HTTP_MALFORMED);
    }
}

TEST(http_chunks_over_limit)
{
    /* Two chunks of 768 KiB: each under the limit, together over it. */
    size_t chunk = 768u * 1024u;
    size_t size = 128 + 2 * (chunk + 16);
    unsigned char *data = malloc(size);
    REQUIRE(data != NULL);
    size_t used = (size_t)snprintf((char *)data, size,
                                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int index = 0; index < 2; index++) {
        used += (size_t)snprintf((char *)data + used, size - used, "%zx\r\n", chunk);
        memset(data + used, 'x', chunk);
        used += chunk;
        data[used++] = '\r';
        data[used++] = '\n';
    }
    used += (size_t)snprintf((char *)data + used, size - used, "0\r\n\r\n");
    CHECK_EQ_INT(parse_bytes(data, used, true), KT_HTTP_MALFORMED);
    free(data);
}

TEST(http_truncated_and_oversized_bodies)
{
    CHECK_EQ_INT(result_of("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
                 KT_HTTP_TRUNCATED);
    size_t size = KT_HTTP_MAX_BODY + 200;
    unsigned char *data = malloc(size);
    REQUIRE(data != NULL);
    size_t head = (size_t)snprintf((char *)data, size, "HTTP/1.1 200 OK\r\n\r\n");
    memset(data + head, 'x', size - head);
    CHECK_EQ_INT(parse_bytes(data, size, false), KT_HTTP_MALFORMED);
    CHECK_EQ_INT(parse_bytes(data, size, true), KT_HTTP_MALFORMED);
    free(data);
}

/* ---- HTTP: requests -------------------------------------------------------------------------- */

TEST(http_request_format)
{
    kt_request_signature signature = {
        .client = "0123456789ABCDEF0123456789ABCDEF01234567",
        .timestamp = "1764331200",
        .nonce = "AAAAAAAAAAAAAAAAAAAAAA==",
        .signature = "c2ln"};
    const char *body = "{\"a\":1}";
    kt_http_request request = {.method = "POST", .target = "/v1/deposits",
                               .authority = "kt01:11371", .signature = &signature,
                               .body = body, .body_length = strlen(body)};
    kt_secret *bytes = NULL;
    char error[256];
    REQUIRE(kt_http_format_request(&request, &bytes, error, sizeof error) == 0);
    const char *expected =
        "POST /v1/deposits HTTP/1.1\r\nHost: kt01:11371\r\nUser-Agent: ktclient/" KT_VERSION
        "\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
        "Content-Length: 7\r\nX-KT-Client: 0123456789ABCDEF0123456789ABCDEF01234567\r\n"
        "X-KT-Timestamp: 1764331200\r\nX-KT-Nonce: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
        "X-KT-Signature: c2ln\r\nConnection: close\r\n\r\n{\"a\":1}";
    CHECK_EQ_INT(bytes->length, strlen(expected));
    CHECK(bytes->length == strlen(expected) && memcmp(bytes->bytes, expected, bytes->length) == 0);
    kt_secret_free(bytes);

    kt_http_request get = {.method = "GET", .target = "/v1/deposits", .authority = "h:1"};
    REQUIRE(kt_http_format_request(&get, &bytes, error, sizeof error) == 0);
    CHECK(memmem(bytes->bytes, bytes->length, "Content-Length", 14) == NULL);
    kt_secret_free(bytes);

    kt_http_request injected = {.method = "GET", .target = "/x\r\nEvil: 1", .authority = "h:1"};
    CHECK(kt_http_format_request(&injected, &bytes, error, sizeof error) != 0);
    CHECK(bytes == NULL);
}

/* ---- URLs ------------------------------------------------------------------------------------- */

TEST(url_parse_good)
{
    kt_url url;
    char error[256];
    REQUIRE(kt_url_parse("https://kt01.example.com", &url, error, sizeof error) == 0);
    CHECK_EQ_STR(url.host, "kt01.example.com");
    CHECK_EQ_STR(url.port, "11371");
    CHECK_EQ_STR(url.authority, "kt01.example.com:11371");
    CHECK_EQ_STR(url.text, "https://kt01.example.com:11371");

    REQUIRE(kt_url_parse("HTTPS://KT02.Example.COM:443/", &url, error, sizeof error) == 0);
    CHECK_EQ_STR(url.host, "kt02.example.com");
    CHECK_EQ_STR(url.text, "https://kt02.example.com:443");

    REQUIRE(kt_url_parse("https://[::1]:8443", &url, error, sizeof error) == 0);
    CHECK_EQ_STR(url.host, "::1");
    CHECK_EQ_STR(url.port, "8443");
    CHECK_EQ_STR(url.authority, "[::1]:8443");
    CHECK_EQ_STR(url.text, "https://[::1]:8443");

    REQUIRE(kt_url_parse("https://[2001:DB8::7]", &url, error, sizeof error) == 0);
    CHECK_EQ_STR(url.authority, "[2001:db8::7]:11371");

    REQUIRE(kt_url_parse("https://127.0.0.1:65535", &url, error, sizeof error) == 0);
    CHECK_EQ_STR(url.authority, "127.0.0.1:65535");
}

TEST(url_parse_bad)
{
    static const char *const bad[] = {
        "",
        "http://kt01:11371",
        "ftp://kt01",
        "kt01:11371",
        "https://",
        "https://:11371",
        "https://kt01:0",
        "https://kt01:65536",
        "https://kt01:",
        "https://kt01:12a",
        "https://kt01:-1",
        "https://kt01:1234567",
        "https://user@kt01",
        "https://user:pw@kt01:1",
        "https://kt01/path",
        "https://kt01:11371/v1",
        "https://kt01?x=1",
        "https://kt01#frag",
        "https://[::1",
        "https://[zz::1]:1",
        "https://[fe80::1%eth0]:1",
        "https://[]:1",
        "https://-kt01",
        "https://kt 01",
        "https://kt01\n",
    };
    char error[256];
    kt_url url;
    for (size_t index = 0; index < sizeof bad / sizeof bad[0]; index++) {
        error[0] = '\0';
        int result = kt_url_parse(bad[index], &url, error, sizeof error);
        if (result == 0)
            fprintf(stderr, "    accepted URL '%s'\n", bad[index]);
        CHECK(result != 0);
        CHECK(error[0] != '\0');
    }
    CHECK(kt_url_parse(NULL, &url, error, sizeof error) != 0);
    CHECK(kt_url_parse("http://kt01", &url, error, sizeof error) != 0);
    CHECK(strstr(error, "https://") != NULL);
}

TEST(url_same_and_encode)
{
    kt_url a, b, c;
    REQUIRE(kt_url_parse("https://KT01:11371", &a, NULL, 0) == 0);
    REQUIRE(kt_url_parse("https://kt01/", &b, NULL, 0) == 0);
    REQUIRE(kt_url_parse("https://kt01:11372", &c, NULL, 0) == 0);
    CHECK(kt_url_same(&a, &b));
    CHECK(!kt_url_same(&a, &c));

    char out[64];
    REQUIRE(kt_url_encode(out, sizeof out, "disk 1/\xc3\xa4?&=+%~._-") == 0);
    CHECK_EQ_STR(out, "disk%201%2F%C3%A4%3F%26%3D%2B%25~._-");
    CHECK(kt_url_encode(out, 4, "abcd") != 0);
    CHECK(kt_url_encode(out, 4, "a b") != 0);
    REQUIRE(kt_url_encode(out, 4, "abc") == 0);
    CHECK_EQ_STR(out, "abc");
    REQUIRE(kt_url_encode(out, 1, "") == 0);
    CHECK_EQ_STR(out, "");
}

/* ---- Signing ---------------------------------------------------------------------------------- */

TEST(signing_string_fixed)
{
    char text[1024];
    const char *body = "{\"handle\":\"disk1\",\"secret\":\"c2VjcmV0\"}";
    REQUIRE(kt_signing_string(text, sizeof text, "POST", "kt01.example.com:11371",
                              "/v1/deposits?handle=disk1", "1764331200",
                              "AAAAAAAAAAAAAAAAAAAAAA==", body, strlen(body)) == 0);
    /* The hash is `printf '%s' BODY | b2sum -l 256`. docs/api.md shows this very example. */
    CHECK_EQ_STR(text, "keytrustee-request-v2\n"
                       "POST\n"
                       "kt01.example.com:11371\n"
                       "/v1/deposits?handle=disk1\n"
                       "1764331200\n"
                       "AAAAAAAAAAAAAAAAAAAAAA==\n"
                       "6ee9198a7534fdc7b0d77aad5ac0604f91a35305edba787f08c574d9bd499fa6");

    REQUIRE(kt_signing_string(text, sizeof text, "GET", "[::1]:8443", "/v1/deposits", "5",
                              "bm9uY2U=", NULL, 0) == 0);
    CHECK_EQ_STR(text, "keytrustee-request-v2\nGET\n[::1]:8443\n/v1/deposits\n5\nbm9uY2U=\n"
                       "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    CHECK(kt_signing_string(text, 40, "GET", "kt01:11371", "/v1/deposits", "5", "n", NULL, 0) !=
          0);
}

/* docs/api.md's worked example, computed independently (Python's `cryptography` package): the
 * key with seed 32 x 0x41 signing a put to kt01.example.com:11371. Ed25519 is deterministic, so
 * ktclient must produce exactly this signature. */
TEST(request_signature_matches_the_documented_example)
{
    REQUIRE(kt_crypto_init() == 0);
    static const char secret_key_base64[] =
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUHbmV/iUWnRQcq5u7qSuqAfny4ezn30yyrAUZDzf8wfnQ==";
    kt_secret *secret_key = kt_secret_new(KT_SIGN_SECRET_BYTES);
    REQUIRE(secret_key != NULL);
    size_t length = 0;
    REQUIRE(kt_base64_decode(secret_key->bytes, secret_key->length, &length, secret_key_base64,
                             strlen(secret_key_base64)) == 0 &&
            length == KT_SIGN_SECRET_BYTES);
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_sign_public_from_secret(public_key, secret_key);
    kt_fingerprint(fingerprint, public_key);
    CHECK_EQ_STR(fingerprint, "07A035F438B0E322CC07B76952BB18E255CB8D69");
    unsigned char nonce[KT_NONCE_BYTES] = {0};
    const char *body = "{\"handle\":\"disk1\",\"secret\":\"c2VjcmV0\"}";
    kt_request_signature signature;
    REQUIRE(kt_request_sign(&signature, fingerprint, secret_key,
                            "POST", "kt01.example.com:11371", "/v1/deposits", body, strlen(body),
                            1764331200, nonce) == 0);
    CHECK_EQ_STR(signature.signature, "Ps8KGx6QdOlD/XNNQqUylMT22BAlfK5hAM7ktMTmN/xEn0vg5vpW3fvtuslb"
                                      "5cQPL1mc/CDB6dIctEgoZ9OpBw==");
    kt_secret_free(secret_key);
}

TEST(request_signature_verifies)
{
    REQUIRE(kt_crypto_init() == 0);
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    REQUIRE(kt_sign_keypair(public_key, &secret_key) == 0);
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    kt_fingerprint(fingerprint, public_key);
    unsigned char nonce[KT_NONCE_BYTES] = {0};
    kt_request_signature signature;
    const char *body = "{}";
    REQUIRE(kt_request_sign(&signature, fingerprint, secret_key, "POST", "kt01:11371",
                            "/v1/register", body, 2, 1764331200, nonce) == 0);
    CHECK_EQ_STR(signature.client, fingerprint);
    CHECK_EQ_STR(signature.timestamp, "1764331200");
    CHECK_EQ_STR(signature.nonce, "AAAAAAAAAAAAAAAAAAAAAA==");
    CHECK_EQ_INT(strlen(signature.signature), 88);

    char text[512];
    REQUIRE(kt_signing_string(text, sizeof text, "POST", "kt01:11371", "/v1/register",
                              "1764331200", "AAAAAAAAAAAAAAAAAAAAAA==", body, 2) == 0);
    unsigned char raw[KT_SIGNATURE_BYTES];
    size_t raw_length = 0;
    REQUIRE(kt_base64_decode(raw, sizeof raw, &raw_length, signature.signature, 88) == 0);
    CHECK(kt_sign_verify(raw, text, strlen(text), public_key));
    /* The same request for the other node of the pair: the signature does not carry over. */
    char other[512];
    REQUIRE(kt_signing_string(other, sizeof other, "POST", "kt02:11371", "/v1/register",
                              "1764331200", "AAAAAAAAAAAAAAAAAAAAAA==", body, 2) == 0);
    CHECK(!kt_sign_verify(raw, other, strlen(other), public_key));
    text[strlen(text) - 1] ^= 1;
    CHECK(!kt_sign_verify(raw, text, strlen(text), public_key));
    CHECK(kt_request_sign(&signature, "short", secret_key, "GET", "kt01:11371", "/", NULL, 0, 1,
                          nonce) != 0);
    CHECK(kt_request_sign(&signature, fingerprint, secret_key, "GET", "", "/", NULL, 0, 1,
                          nonce) != 0);
    kt_secret_free(secret_key);
}

/* ---- Confdir files ---------------------------------------------------------------------------- */

static const char good_config[] =
    "# comment\n"
    "\n"
    "server = https://kt01.example.com:11371\n"
    "passive_server = https://kt02.example.com:11371\n"
    "  org=acme  \n"
    "name = host one.example.com\n"
    "fingerprint = 0123456789ABCDEF0123456789ABCDEF01234567\n"
    "ca_file = server-ca.pem\n"
    "skip_ssl_check = no";

TEST(config_parse_good_and_round_trip)
{
    kt_client_config config;
    char error[512];
    REQUIRE(kt_client_config_parse(good_config, strlen(good_config), "client.conf", &config,
                                   error, sizeof error) == 0);
    CHECK_EQ_STR(config.server, "https://kt01.example.com:11371");
    CHECK_EQ_STR(config.passive_server, "https://kt02.example.com:11371");
    CHECK_EQ_STR(config.org, "acme");
    CHECK_EQ_STR(config.name, "host one.example.com");
    CHECK_EQ_STR(config.ca_file, "server-ca.pem");
    CHECK(!config.skip_ssl_check);
    CHECK_EQ_INT(config.connect_timeout_ms, 0); /* absent: files written before it existed */

    char text[4096];
    config.connect_timeout_ms = KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS; /* what format writes */
    REQUIRE(kt_client_config_format(&config, text, sizeof text) == 0);
    kt_client_config again;
    REQUIRE(kt_client_config_parse(text, strlen(text), "client.conf", &again, error,
                                   sizeof error) == 0);
    CHECK(memcmp(&config, &again, sizeof config) == 0);
}

TEST(config_parse_bad)
{
    static const char *const replacements[][2] = {
        {"org=acme", "org=acme\norg = other"},
        {"org=acme", "org = acme\ncolour = blue"},
        {"org=acme", "Org = acme"},
        {"org=acme", "org acme"},
        {"org=acme", "org = a\x01" "b"},
        {"0123456789ABCDEF0123456789ABCDEF01234567", "0123456789abcdef0123456789abcdef01234567"},
        {"server = https://kt01.example.com:11371", "server = http://kt01.example.com"},
        {"server = https://kt01.example.com:11371", "server ="},
        {"skip_ssl_check = no", "skip_ssl_check = maybe"},
        {"skip_ssl_check = no", "skip_ssl_check = yes"},
        {"ca_file = server-ca.pem", "ca_file ="},
        {"skip_ssl_check = no", "skip_ssl_check = no\nconnect_timeout_ms = 0"},
        {"skip_ssl_check = no", "skip_ssl_check = no\nconnect_timeout_ms = 60001"},
        {"skip_ssl_check = no", "skip_ssl_check = no\nconnect_timeout_ms = 500ms"},
        {"skip_ssl_check = no", "skip_ssl_check = no\nconnect_timeout_ms = -5"},
        {"skip_ssl_check = no", "skip_ssl_check = no\nconnect_timeout_ms = 5\nconnect_timeout_ms = 6"},
    };
    for (size_t index = 0; index < sizeof replacements / sizeof replacements[0]; index++) {
        char text[2048];
        const char *at = strstr(good_config, replacements[index][0]);
        REQUIRE(at != NULL);
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good_config), good_config,
                 replacements[index][1], at + strlen(replacements[index][0]));
        kt_client_config config;
        char error[512] = "";
        int result = kt_client_config_parse(text, strlen(text), "client.conf", &config, error,
                                            sizeof error);
        if (result == 0)
            fprintf(stderr, "    accepted configuration %zu\n", index);
        CHECK(result != 0);
        CHECK(strstr(error, "client.conf") != NULL);
    }
    kt_client_config config;
    char error[512];
    CHECK(kt_client_config_parse("", 0, "client.conf", &config, error, sizeof error) != 0);
    CHECK(kt_client_config_parse("server = https://a\0", 19, "client.conf", &config, error,
                                 sizeof error) != 0);
}

TEST(client_key_round_trip)
{
    REQUIRE(kt_crypto_init() == 0);
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_secret *secret_key = NULL;
    REQUIRE(kt_sign_keypair(public_key, &secret_key) == 0);
    kt_secret *text = NULL;
    REQUIRE(kt_client_key_format(secret_key, &text) == 0);
    CHECK(text->length == strlen(KT_CLIENT_KEY_PREFIX) + 88 + 1);
    CHECK(memcmp(text->bytes, KT_CLIENT_KEY_PREFIX, strlen(KT_CLIENT_KEY_PREFIX)) == 0);
    CHECK(text->bytes[text->length - 1] == '\n');
    kt_secret *parsed = NULL;
    char error[512];
    REQUIRE(kt_client_key_parse(text, "client.key", &parsed, error, sizeof error) == 0);
    CHECK(parsed->length == secret_key->length &&
          memcmp(parsed->bytes, secret_key->bytes, parsed->length) == 0);
    kt_secret_free(parsed);

    text->bytes[0] = 'K'; /* wrong prefix */
    CHECK(kt_client_key_parse(text, "client.key", &parsed, error, sizeof error) != 0);
    CHECK(parsed == NULL);
    text->bytes[0] = 'k';
    text->length--; /* no newline */
    CHECK(kt_client_key_parse(text, "client.key", &parsed, error, sizeof error) != 0);
    kt_secret_free(text);
    kt_secret_free(secret_key);
}

TEST(sanitize_and_text_checks)
{
    char out[16];
    kt_client_sanitize(out, sizeof out, "a\x1b[31mb\n");
    CHECK_EQ_STR(out, "a?[31mb?");
    kt_client_sanitize(out, 4, "abcdef");
    CHECK_EQ_STR(out, "abc");
    kt_client_sanitize(out, sizeof out, NULL);
    CHECK_EQ_STR(out, "");
    CHECK(kt_client_text_valid("disk1", 255));
    CHECK(kt_client_text_valid("d\xc3\xa4sk", 255));
    CHECK(!kt_client_text_valid("", 255));
    CHECK(!kt_client_text_valid(NULL, 255));
    CHECK(!kt_client_text_valid("a\tb", 255));
    CHECK(!kt_client_text_valid("abcd", 3));
    CHECK(kt_client_text_valid("abc", 3));
}

TEST(config_connect_timeout)
{
    char text[2048];
    snprintf(text, sizeof text, "%s\nconnect_timeout_ms = 250\n", good_config);
    kt_client_config config;
    char error[512];
    REQUIRE(kt_client_config_parse(text, strlen(text), "client.conf", &config, error,
                                   sizeof error) == 0);
    CHECK_EQ_INT(config.connect_timeout_ms, 250);
    REQUIRE(kt_client_config_format(&config, text, sizeof text) == 0);
    CHECK(strstr(text, "\nconnect_timeout_ms = 250\n") != NULL);
    long value = 0;
    CHECK(kt_client_parse_connect_timeout("1", &value) == 0 && value == 1);
    CHECK(kt_client_parse_connect_timeout("60000", &value) == 0 && value == 60000);
    CHECK(kt_client_parse_connect_timeout("0", &value) != 0);
    CHECK(kt_client_parse_connect_timeout("60001", &value) != 0);
    CHECK(kt_client_parse_connect_timeout("", &value) != 0);
    CHECK(kt_client_parse_connect_timeout(" 5", &value) != 0);
    CHECK(kt_client_parse_connect_timeout("1e3", &value) != 0);
    CHECK(kt_client_parse_connect_timeout("99999999999999999999", &value) != 0);
    CHECK(kt_client_parse_connect_timeout(NULL, &value) != 0);
}

/* ---- Failover rules -------------------------------------------------------------------------- */

static kt_url url_of(const char *text)
{
    kt_url url;
    char error[256];
    if (kt_url_parse(text, &url, error, sizeof error) != 0)
        memset(&url, 0, sizeof url);
    return url;
}

/* An attempt at configured server `server` that got no answer. */
static kt_attempt_outcome no_answer(size_t server, kt_tls_failure failure, bool sent)
{
    kt_attempt_outcome outcome;
    memset(&outcome, 0, sizeof outcome);
    outcome.server = server;
    outcome.failure = failure;
    outcome.sent = sent;
    return outcome;
}

/* An attempt at configured server `server` answered with `status` and error `code`. */
static kt_attempt_outcome answer(size_t server, int status, const char *code, const char *active)
{
    kt_attempt_outcome outcome = no_answer(server, KT_TLS_OK, true);
    outcome.http_status = status;
    snprintf(outcome.code, sizeof outcome.code, "%s", code);
    if (active != NULL) {
        outcome.active = url_of(active);
        outcome.has_active = true;
    }
    return outcome;
}

TEST(failover_reads_move_on_transport_failures_and_5xx)
{
    kt_url other = url_of("https://kt02.example.com");
    static const kt_tls_failure failures[] = {KT_TLS_CONNECT_FAILED, KT_TLS_HANDSHAKE_FAILED,
                                              KT_TLS_CERTIFICATE_REJECTED, KT_TLS_TIMEOUT,
                                              KT_TLS_CLOSED, KT_TLS_ERROR};
    for (size_t index = 0; index < sizeof failures / sizeof failures[0]; index++) {
        kt_attempt_outcome before = no_answer(0, failures[index], false);
        kt_attempt_outcome after = no_answer(0, failures[index], true);
        CHECK_EQ_INT(kt_failover_next(false, &before, &other), KT_FAILOVER_OTHER);
        CHECK_EQ_INT(kt_failover_next(false, &after, &other), KT_FAILOVER_OTHER);
        CHECK(kt_failover_unhealthy(&after));
    }
    static const int statuses[] = {500, 502, 503, 504, 507};
    for (size_t index = 0; index < sizeof statuses / sizeof statuses[0]; index++) {
        kt_attempt_outcome outcome = answer(0, statuses[index], "internal", NULL);
        CHECK_EQ_INT(kt_failover_next(false, &outcome, &other), KT_FAILOVER_OTHER);
        CHECK(kt_failover_unhealthy(&outcome));
    }
    kt_attempt_outcome refused = no_answer(0, KT_TLS_CONNECT_FAILED, false);
    CHECK_EQ_INT(kt_failover_next(false, &refused, NULL), KT_FAILOVER_STOP);
}

TEST(failover_reads_stop_on_4xx)
{
    kt_url other = url_of("https://kt02.example.com");
    static const int statuses[] = {400, 401, 403, 404, 405, 409, 413};
    for (size_t index = 0; index < sizeof statuses / sizeof statuses[0]; index++) {
        kt_attempt_outcome outcome = answer(0, statuses[index], "x", NULL);
        CHECK_EQ_INT(kt_failover_next(false, &outcome, &other), KT_FAILOVER_STOP);
        CHECK_EQ_INT(kt_failover_next(true, &outcome, &other), KT_FAILOVER_STOP);
        CHECK(!kt_failover_unhealthy(&outcome));
    }
}

TEST(failover_writes_move_only_when_nothing_was_stored)
{
    kt_url other = url_of("https://KT02.example.com:11371/");
    kt_attempt_outcome refused = no_answer(0, KT_TLS_CONNECT_FAILED, false);
    kt_attempt_outcome handshake = no_answer(0, KT_TLS_HANDSHAKE_FAILED, false);
    kt_attempt_outcome cut_after_send = no_answer(0, KT_TLS_CLOSED, true);
    kt_attempt_outcome timeout_after_send = no_answer(0, KT_TLS_TIMEOUT, true);
    kt_attempt_outcome database_down = answer(0, 503, "unavailable", NULL);
    kt_attempt_outcome fenced = answer(0, 503, "fenced", NULL);
    kt_attempt_outcome indeterminate = answer(0, 503, "indeterminate", NULL);
    kt_attempt_outcome degraded = answer(0, 503, "write_unavailable", NULL);
    kt_attempt_outcome internal = answer(0, 500, "internal", NULL);
    kt_attempt_outcome full = answer(0, 507, "disk_full", NULL);
    CHECK_EQ_INT(kt_failover_next(true, &refused, &other), KT_FAILOVER_OTHER);
    CHECK_EQ_INT(kt_failover_next(true, &handshake, &other), KT_FAILOVER_OTHER);
    CHECK_EQ_INT(kt_failover_next(true, &database_down, &other), KT_FAILOVER_OTHER);
    CHECK_EQ_INT(kt_failover_next(true, &fenced, &other), KT_FAILOVER_OTHER); /* old active */
    CHECK_EQ_INT(kt_failover_next(true, &cut_after_send, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &timeout_after_send, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &indeterminate, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &degraded, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &internal, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &full, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &refused, NULL), KT_FAILOVER_STOP);
}

TEST(failover_a_write_meeting_a_role_change_starts_over_once)
{
    kt_url servers[2] = {url_of("https://kt01.example.com:11371"),
                         url_of("https://kt02.example.com:11371")};
    kt_attempt_outcome ping[2] = {answer(0, 503, "passive", "https://kt02.example.com:11371"),
                                  answer(1, 503, "passive", "https://kt01.example.com:11371")};
    CHECK(kt_failover_role_change(servers, 2, ping, 2));
    kt_attempt_outcome restarting[2] = {answer(0, 503, "passive", "https://kt02.example.com:11371"),
                                        answer(1, 503, "unavailable", NULL)};
    CHECK(kt_failover_role_change(servers, 2, restarting, 2));
    kt_attempt_outcome stranger[2] = {answer(0, 503, "passive", "https://evil.example.com"),
                                      answer(1, 503, "passive", "https://kt01.example.com:11371")};
    CHECK(!kt_failover_role_change(servers, 2, stranger, 2));
    kt_attempt_outcome dead[2] = {no_answer(0, KT_TLS_CONNECT_FAILED, false),
                                  answer(1, 503, "passive", "https://kt01.example.com:11371")};
    CHECK(!kt_failover_role_change(servers, 2, dead, 2)); /* a dead active: exit 3 at once */
    kt_attempt_outcome degraded[2] = {answer(0, 503, "write_unavailable", NULL),
                                      answer(1, 503, "passive", "https://kt01.example.com:11371")};
    CHECK(!kt_failover_role_change(servers, 2, degraded, 2));
    CHECK(!kt_failover_role_change(servers, 2, ping, 1));
    CHECK(!kt_failover_role_change(servers, 1, ping, 2));
}

TEST(failover_writes_follow_a_passive_only_to_the_other_configured_server)
{
    kt_url other = url_of("https://kt02.example.com:11371");
    kt_attempt_outcome names_other = answer(0, 503, "passive", "https://KT02.example.com");
    kt_attempt_outcome names_stranger = answer(0, 503, "passive", "https://evil.example.com");
    kt_attempt_outcome names_other_port = answer(0, 503, "passive", "https://kt02.example.com:1");
    kt_attempt_outcome names_nobody = answer(0, 503, "passive", NULL);
    CHECK_EQ_INT(kt_failover_next(true, &names_other, &other), KT_FAILOVER_OTHER);
    CHECK_EQ_INT(kt_failover_next(true, &names_stranger, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &names_other_port, &other), KT_FAILOVER_STOP);
    CHECK_EQ_INT(kt_failover_next(true, &names_nobody, &other), KT_FAILOVER_OTHER);
    CHECK_EQ_INT(kt_failover_next(true, &names_other, NULL), KT_FAILOVER_STOP);
    /* A read never meets a passive refusal, but a 503 is a 503: it moves. */
    CHECK_EQ_INT(kt_failover_next(false, &names_stranger, &other), KT_FAILOVER_OTHER);
}

TEST(failover_degraded_pair_names_the_node_that_is_down)
{
    kt_url servers[2] = {url_of("https://kt01.example.com"), url_of("https://kt02.example.com")};
    size_t down = 7;

    /* The active (server 0) cannot reach its passive: the passive (1) is down. */
    kt_attempt_outcome active_alone[1] = {answer(0, 503, "write_unavailable", NULL)};
    CHECK(kt_failover_degraded(servers, 2, active_alone, 1, &down));
    CHECK_EQ_INT(down, 1);
    /* Roles reversed in client.conf: the passive (0) named the active (1), which is alone. */
    kt_attempt_outcome via_passive[2] = {answer(0, 503, "passive", "https://kt02.example.com"),
                                         answer(1, 503, "write_unavailable", NULL)};
    CHECK(kt_failover_degraded(servers, 2, via_passive, 2, &down));
    CHECK_EQ_INT(down, 0);
    /* The active (0) is down; the passive (1) says so. */
    kt_attempt_outcome active_down[2] = {no_answer(0, KT_TLS_CONNECT_FAILED, false),
                                         answer(1, 503, "passive", "https://kt01.example.com")};
    CHECK(kt_failover_degraded(servers, 2, active_down, 2, &down));
    CHECK_EQ_INT(down, 0);
    /* The passive (0, first in client.conf) named the active (1), which does not answer. */
    kt_attempt_outcome named_down[2] = {answer(0, 503, "passive", "https://kt02.example.com"),
                                        no_answer(1, KT_TLS_CONNECT_FAILED, false)};
    CHECK(kt_failover_degraded(servers, 2, named_down, 2, &down));
    CHECK_EQ_INT(down, 1);
    /* The active's database service is down: the node is as good as down. */
    kt_attempt_outcome database_down[2] = {answer(0, 503, "unavailable", NULL),
                                           answer(1, 503, "passive", NULL)};
    CHECK(kt_failover_degraded(servers, 2, database_down, 2, &down));
    CHECK_EQ_INT(down, 0);
    /* Only one server configured: its peer is down, but it has no URL here. */
    kt_attempt_outcome single[1] = {answer(0, 503, "write_unavailable", NULL)};
    CHECK(kt_failover_degraded(servers, 1, single, 1, &down));
    CHECK(down == SIZE_MAX);
}

TEST(failover_not_degraded)
{
    kt_url servers[2] = {url_of("https://kt01.example.com"), url_of("https://kt02.example.com")};
    size_t down = 0;
    kt_attempt_outcome both_down[2] = {no_answer(0, KT_TLS_CONNECT_FAILED, false),
                                       no_answer(1, KT_TLS_CONNECT_FAILED, false)};
    CHECK(!kt_failover_degraded(servers, 2, both_down, 2, &down));
    kt_attempt_outcome maybe_stored[1] = {no_answer(0, KT_TLS_TIMEOUT, true)};
    CHECK(!kt_failover_degraded(servers, 2, maybe_stored, 1, &down));
    kt_attempt_outcome stranger[1] = {answer(0, 503, "passive", "https://evil.example.com")};
    CHECK(!kt_failover_degraded(servers, 2, stranger, 1, &down));
    /* Unreachable, and the other is a passive naming a third server: not our pair's state. */
    kt_attempt_outcome third[2] = {no_answer(0, KT_TLS_CONNECT_FAILED, false),
                                   answer(1, 503, "passive", "https://kt03.example.com")};
    CHECK(!kt_failover_degraded(servers, 2, third, 2, &down));
    /* Sent and cut: the write may be stored; never called degraded. */
    kt_attempt_outcome cut[2] = {no_answer(0, KT_TLS_CLOSED, true),
                                 answer(1, 503, "passive", "https://kt01.example.com")};
    CHECK(!kt_failover_degraded(servers, 2, cut, 2, &down));
    kt_attempt_outcome refusals[2] = {answer(0, 403, "forbidden", NULL),
                                      answer(1, 404, "not_found", NULL)};
    CHECK(!kt_failover_degraded(servers, 2, refusals, 2, &down));
}

/* ---- The failover hint (client.state) -------------------------------------------------------- */

TEST(hint_text_round_trip_and_strictness)
{
    kt_client_hint hint = {.until = 1764331230};
    snprintf(hint.avoid, sizeof hint.avoid, "https://kt01.example.com:11371");
    char text[1024];
    REQUIRE(kt_client_hint_format(&hint, text, sizeof text) == 0);
    CHECK(strstr(text, "not secret") != NULL);
    kt_client_hint parsed;
    REQUIRE(kt_client_hint_parse(text, strlen(text), &parsed) == 0);
    CHECK_EQ_STR(parsed.avoid, hint.avoid);
    CHECK_EQ_INT(parsed.until, hint.until);

    static const char *const bad[] = {
        "",
        "avoid = https://kt01.example.com:11371\nuntil = 5\n",
        "# ktclient failover hint (not secret; safe to delete)\navoid = http://kt01\nuntil = 5\n",
        "# ktclient failover hint (not secret; safe to delete)\navoid = https://kt01\nuntil = x\n",
        "# ktclient failover hint (not secret; safe to delete)\navoid = https://kt01\nuntil = 5",
        "# ktclient failover hint (not secret; safe to delete)\navoid = https://kt01\nuntil = 5\n"
        "x\n",
        "# ktclient failover hint (not secret; safe to delete)\nuntil = 5\navoid = https://kt01\n",
    };
    for (size_t index = 0; index < sizeof bad / sizeof bad[0]; index++) {
        CHECK(kt_client_hint_parse(bad[index], strlen(bad[index]), &parsed) != 0);
        CHECK(parsed.avoid[0] == '\0');
    }
    kt_client_hint empty = {.until = 5};
    CHECK(kt_client_hint_format(&empty, text, sizeof text) != 0);
}

TEST(hint_orders_reads_until_it_expires)
{
    kt_url servers[2] = {url_of("https://kt01.example.com"), url_of("https://kt02.example.com")};
    kt_client_hint hint = {.until = 1000};
    snprintf(hint.avoid, sizeof hint.avoid, "https://KT01.example.com:11371");
    CHECK_EQ_INT(kt_client_hint_first(&hint, servers, 2, 999), 1);
    CHECK_EQ_INT(kt_client_hint_first(&hint, servers, 2, 1000), 0);
    CHECK_EQ_INT(kt_client_hint_first(&hint, servers, 1, 999), 0);
    snprintf(hint.avoid, sizeof hint.avoid, "https://kt02.example.com:11371");
    CHECK_EQ_INT(kt_client_hint_first(&hint, servers, 2, 999), 0);
    snprintf(hint.avoid, sizeof hint.avoid, "https://kt03.example.com:11371");
    CHECK_EQ_INT(kt_client_hint_first(&hint, servers, 2, 999), 0);
    kt_client_hint none;
    memset(&none, 0, sizeof none);
    CHECK_EQ_INT(kt_client_hint_first(&none, servers, 2, 0), 0);
}

/* A read that went to tried[0] then tried[1] (count 1 or 2), each healthy or not. */
static kt_client_call read_call(size_t count, size_t first, bool first_unhealthy,
                                bool second_unhealthy)
{
    kt_client_call call;
    memset(&call, 0, sizeof call);
    call.method = "GET";
    call.tried_count = count;
    call.tried[0] = first;
    call.tried[1] = 1 - first;
    call.tried_unhealthy[0] = first_unhealthy;
    call.tried_unhealthy[1] = second_unhealthy;
    return call;
}

TEST(hint_learns_from_reads_and_forgets)
{
    char directory[] = "/tmp/kt-hint-XXXXXX";
    REQUIRE(mkdtemp(directory) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", directory, KT_CLIENT_STATE_FILE);
    kt_client_endpoint endpoint;
    memset(&endpoint, 0, sizeof endpoint);
    endpoint.servers[0] = url_of("https://kt01.example.com");
    endpoint.servers[1] = url_of("https://kt02.example.com");
    endpoint.server_count = 2;
    kt_client_hint hint;
    kt_client_hint_load(path, &hint);
    CHECK(hint.avoid[0] == '\0');

    kt_client_call failed_over = read_call(2, 0, true, false);
    kt_client_hint_learn(path, &hint, &endpoint, &failed_over, 100);
    CHECK_EQ_STR(hint.avoid, "https://kt01.example.com:11371");
    CHECK_EQ_INT(hint.until, 100 + KT_CLIENT_AVOID_SECONDS);
    kt_client_hint loaded;
    kt_client_hint_load(path, &loaded);
    CHECK_EQ_STR(loaded.avoid, hint.avoid);
    struct stat status;
    CHECK(stat(path, &status) == 0 && (status.st_mode & 0777) == 0600);

    kt_client_call from_other = read_call(1, 1, false, false); /* the hint at work */
    kt_client_hint_learn(path, &hint, &endpoint, &from_other, 110);
    CHECK_EQ_STR(hint.avoid, "https://kt01.example.com:11371");

    kt_client_call write_call = read_call(2, 0, true, false);
    write_call.write = true;
    kt_client_hint_learn(path, &hint, &endpoint, &write_call, 110);
    CHECK_EQ_INT(hint.until, 100 + KT_CLIENT_AVOID_SECONDS); /* writes teach nothing */

    kt_client_call back = read_call(2, 1, true, false); /* the other failed, kt01 answered */
    kt_client_hint_learn(path, &hint, &endpoint, &back, 115);
    CHECK_EQ_STR(hint.avoid, "https://kt02.example.com:11371");

    kt_client_call after_expiry = read_call(1, 0, false, false);
    kt_client_hint_learn(path, &hint, &endpoint, &after_expiry, 1000);
    CHECK(hint.avoid[0] == '\0');
    CHECK(stat(path, &status) != 0); /* removed */

    FILE *loose = fopen(path, "w");
    REQUIRE(loose != NULL);
    fputs("# ktclient failover hint (not secret; safe to delete)\navoid = https://kt01\n"
          "until = 99999999999\n", loose);
    REQUIRE(fclose(loose) == 0);
    REQUIRE(chmod(path, 0666) == 0);
    kt_client_hint_load(path, &loaded);
    CHECK(loaded.avoid[0] == '\0'); /* others may write it: ignored */
    REQUIRE(chmod(path, 0600) == 0);
    kt_client_hint_load(path, &loaded);
    CHECK_EQ_STR(loaded.avoid, "https://kt01:11371");
    CHECK(unlink(path) == 0);
    CHECK(rmdir(directory) == 0);
}

int main(void)
{
    /* Secret buffers come from libsodium, which must be initialised first. */
    if (kt_client_library_init() != 0) {
        fprintf(stderr, "cannot initialise libsodium\n");
        return 1;
    }
    return unit_run();
}
