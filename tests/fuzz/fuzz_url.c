/*
 * fuzz_url.c — ktclient's server URL parser and percent-encoder (app/ktclient/url.c), which read
 * client.conf, the command line and the "active" URL a passive server sends in a 503 answer.
 *
 * Properties: a parsed URL is normalised (its text parses again to the same host, port, authority
 * and text, and compares equal with kt_url_same); the normalised text is https:// and holds no
 * user name, path, query or fragment; kt_url_encode leaves only unreserved characters and '%XX',
 * never writes past its buffer (the output lands in a buffer of exactly the size allowed) and
 * decodes back to the input.
 */
#include <stdlib.h>
#include <string.h>

#include "app/ktclient/internal.h"
#include "tests/fuzz/fuzz.h"

static int hex_value(char digit)
{
    if (digit >= '0' && digit <= '9')
        return digit - '0';
    return digit >= 'A' && digit <= 'F' ? digit - 'A' + 10 : -1;
}

static void check_encoding(const char *text, size_t room)
{
    char *out = malloc(room > 0 ? room : 1);
    if (out == NULL)
        abort();
    if (kt_url_encode(out, room, text) == 0) {
        size_t decoded = 0;
        for (const char *cursor = out; *cursor != '\0'; cursor++, decoded++) {
            char expected = text[decoded];
            if (*cursor == '%') {
                int high = hex_value(cursor[1]), low = hex_value(cursor[2]);
                FUZZ_CHECK(high >= 0 && low >= 0, "a bad escape in the encoding");
                FUZZ_CHECK((char)(high * 16 + low) == expected, "an escape decodes wrongly");
                cursor += 2;
            } else {
                FUZZ_CHECK(strchr("-._~", *cursor) != NULL ||
                               (*cursor >= '0' && *cursor <= '9') ||
                               (*cursor >= 'a' && *cursor <= 'z') ||
                               (*cursor >= 'A' && *cursor <= 'Z'),
                           "a reserved character %02x left unescaped", (unsigned char)*cursor);
                FUZZ_CHECK(*cursor == expected, "a character changed in the encoding");
            }
        }
        FUZZ_CHECK(text[decoded] == '\0', "the encoding lost characters");
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_url");
    fuzz_reader reader = {data, size};
    size_t room = fuzz_take_byte(&reader);
    char *text = fuzz_take_string(&reader, 0);
    kt_url url;
    char error[512];
    if (kt_url_parse(text, &url, error, sizeof error) == 0) {
        FUZZ_CHECK(strncmp(url.text, "https://", 8) == 0, "normalised to %s", url.text);
        FUZZ_CHECK(strpbrk(url.text + 8, "@/?#") == NULL, "%s keeps a user, path or query",
                   url.text);
        kt_url again;
        FUZZ_CHECK(kt_url_parse(url.text, &again, error, sizeof error) == 0,
                   "the normalised %s does not parse: %s", url.text, error);
        FUZZ_CHECK(strcmp(url.host, again.host) == 0 && strcmp(url.port, again.port) == 0 &&
                       strcmp(url.authority, again.authority) == 0 &&
                       strcmp(url.text, again.text) == 0 && kt_url_same(&url, &again),
                   "%s normalises to %s", url.text, again.text);
    }
    check_encoding(text, room);
    check_encoding(text, 3 * strlen(text) + 1);
    free(text);
    return 0;
}
