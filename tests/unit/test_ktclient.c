/*
 * test_ktclient.c — unit tests of the pure pieces of the client library (app/ktclient): the HTTP
 * response parser on good and hostile responses, request formatting, key server URL parsing and
 * percent-encoding, the string to sign of docs/api.md against a fixed expected string, and the
 * confdir file formats. Nothing here touches the network; the CLI against a real server is
 * covered by the integration tests.
 */
#include <stdint.h>

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
    REQUIRE(kt_signing_string(text, sizeof text, "POST", "/v1/deposits?handle=disk1",
                              "1764331200", "AAAAAAAAAAAAAAAAAAAAAA==", body, strlen(body)) == 0);
    /* The hash is `printf '%s' BODY | b2sum -l 256`. */
    CHECK_EQ_STR(text, "keytrustee-request-v1\n"
                       "POST\n"
                       "/v1/deposits?handle=disk1\n"
                       "1764331200\n"
                       "AAAAAAAAAAAAAAAAAAAAAA==\n"
                       "6ee9198a7534fdc7b0d77aad5ac0604f91a35305edba787f08c574d9bd499fa6");

    REQUIRE(kt_signing_string(text, sizeof text, "GET", "/v1/deposits", "5", "bm9uY2U=", NULL,
                              0) == 0);
    CHECK_EQ_STR(text, "keytrustee-request-v1\nGET\n/v1/deposits\n5\nbm9uY2U=\n"
                       "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    CHECK(kt_signing_string(text, 40, "GET", "/v1/deposits", "5", "n", NULL, 0) != 0);
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
    REQUIRE(kt_request_sign(&signature, fingerprint, secret_key, "POST", "/v1/register", body, 2,
                            1764331200, nonce) == 0);
    CHECK_EQ_STR(signature.client, fingerprint);
    CHECK_EQ_STR(signature.timestamp, "1764331200");
    CHECK_EQ_STR(signature.nonce, "AAAAAAAAAAAAAAAAAAAAAA==");
    CHECK_EQ_INT(strlen(signature.signature), 88);

    char text[512];
    REQUIRE(kt_signing_string(text, sizeof text, "POST", "/v1/register", "1764331200",
                              "AAAAAAAAAAAAAAAAAAAAAA==", body, 2) == 0);
    unsigned char raw[KT_SIGNATURE_BYTES];
    size_t raw_length = 0;
    REQUIRE(kt_base64_decode(raw, sizeof raw, &raw_length, signature.signature, 88) == 0);
    CHECK(kt_sign_verify(raw, text, strlen(text), public_key));
    text[strlen(text) - 1] ^= 1;
    CHECK(!kt_sign_verify(raw, text, strlen(text), public_key));
    CHECK(kt_request_sign(&signature, "short", secret_key, "GET", "/", NULL, 0, 1, nonce) != 0);
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

    char text[4096];
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

int main(void)
{
    /* Secret buffers come from libsodium, which must be initialised first. */
    if (kt_client_library_init() != 0) {
        fprintf(stderr, "cannot initialise libsodium\n");
        return 1;
    }
    return unit_run();
}
