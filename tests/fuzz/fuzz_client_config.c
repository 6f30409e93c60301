/*
 * fuzz_client_config.c — the files of a ktclient confdir: client.conf (kt_client_config_parse)
 * and client.key (kt_client_key_parse) of app/ktclient/config.c, and the failover hint
 * client.state (kt_client_hint_parse, app/ktclient/state.c).
 *
 * The input is tried as each file. Properties: an accepted client.conf formats to text that
 * parses again and formats to the same text (what `ktclient register` writes is what it reads);
 * an accepted client.key formats back to exactly the input, so there is one spelling per key; an
 * accepted client.state formats to text that reads back as the same hint, and a refused one
 * leaves no hint behind.
 */
#include <stdlib.h>
#include <string.h>

#include "app/ktclient/internal.h"
#include "tests/fuzz/fuzz.h"

#define FORMATTED_MAX 8192

static void check_config(const uint8_t *data, size_t size)
{
    kt_client_config config;
    char error[512];
    if (kt_client_config_parse((const char *)data, size, "client.conf", &config, error,
                               sizeof error) != 0)
        return;
    char *first = malloc(FORMATTED_MAX), *second = malloc(FORMATTED_MAX);
    if (first == NULL || second == NULL)
        abort();
    FUZZ_CHECK(kt_client_config_format(&config, first, FORMATTED_MAX) == 0,
               "an accepted config does not format");
    kt_client_config again;
    FUZZ_CHECK(kt_client_config_parse(first, strlen(first), "client.conf", &again, error,
                                      sizeof error) == 0,
               "a formatted config does not parse: %s\n%s", error, first);
    FUZZ_CHECK(kt_client_config_format(&again, second, FORMATTED_MAX) == 0,
               "a re-read config does not format");
    FUZZ_CHECK(strcmp(first, second) == 0, "format(parse(format(c))) differs:\n%s\n%s", first,
               second);
    free(first);
    free(second);
}

static void check_key(const uint8_t *data, size_t size)
{
    kt_secret *text = kt_secret_from(data, size);
    if (text == NULL)
        abort();
    kt_secret *key = NULL, *formatted = NULL;
    char error[512];
    if (kt_client_key_parse(text, "client.key", &key, error, sizeof error) == 0) {
        FUZZ_CHECK(key->length == KT_SIGN_SECRET_BYTES, "a key of %zu bytes", key->length);
        FUZZ_CHECK(kt_client_key_format(key, &formatted) == 0, "an accepted key does not format");
        FUZZ_CHECK(formatted->length == size && memcmp(formatted->bytes, data, size) == 0,
                   "a second spelling of a client key was accepted");
    }
    kt_secret_free(formatted);
    kt_secret_free(key);
    kt_secret_free(text);
}

static void check_hint(const uint8_t *data, size_t size)
{
    kt_client_hint hint;
    char formatted[FORMATTED_MAX];
    if (kt_client_hint_parse((const char *)data, size, &hint) != 0) {
        FUZZ_CHECK(hint.avoid[0] == '\0', "a refused client.state left a hint");
        return;
    }
    FUZZ_CHECK(strnlen(hint.avoid, sizeof hint.avoid) < sizeof hint.avoid, "an unterminated URL");
    if (hint.avoid[0] == '\0')
        return; /* "no hint" has no file text */
    FUZZ_CHECK(kt_client_hint_format(&hint, formatted, sizeof formatted) == 0,
               "an accepted hint does not format");
    kt_client_hint again;
    FUZZ_CHECK(kt_client_hint_parse(formatted, strlen(formatted), &again) == 0 &&
                   strcmp(again.avoid, hint.avoid) == 0 && again.until == hint.until,
               "a formatted hint reads back differently:\n%s", formatted);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_client_config");
    check_config(data, size);
    check_key(data, size);
    check_hint(data, size);
    return 0;
}
