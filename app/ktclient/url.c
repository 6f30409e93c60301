/*
 * url.c — key server URLs and percent-encoding.
 *
 * A key server is named by https://HOST[:PORT] with an optional trailing slash: HOST is a DNS
 * name, an IPv4 address or an IPv6 address in brackets; PORT defaults to 11371. Anything else —
 * plain http://, user names, paths, queries, fragments, IPv6 zone ids — is refused with a message
 * showing the accepted form, because a URL we half understand could send keys elsewhere. The
 * parsed URL is normalized (lowercase host, explicit port) so two spellings of one server
 * compare equal, which server selection relies on when a passive names the active.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "app/ktclient/internal.h"

#define URL_FORM "https://HOST[:PORT] (for example https://kt01.example.com:11371)"

static bool is_digit(char character)
{
    return character >= '0' && character <= '9';
}

static bool is_letter(char character)
{
    return (character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z');
}

static bool is_name_character(char character)
{
    return is_letter(character) || is_digit(character) || character == '-' || character == '.';
}

static char lowercase(char character)
{
    return (character >= 'A' && character <= 'Z') ? (char)(character - 'A' + 'a') : character;
}

/* Copies host[0..length) lowercased into url->host after checking it. */
static int take_host(kt_url *url, const char *host, size_t length, bool bracketed, char *error,
                     size_t error_size)
{
    if (length == 0 || length >= sizeof url->host) {
        kt_client_error(error, error_size, "the server URL needs a host name of 1 to %zu "
                        "characters; give " URL_FORM, sizeof url->host - 1);
        return -1;
    }
    for (size_t index = 0; index < length; index++)
        url->host[index] = lowercase(host[index]);
    url->host[length] = '\0';
    if (bracketed) {
        struct in6_addr address;
        if (inet_pton(AF_INET6, url->host, &address) != 1) {
            kt_client_error(error, error_size, "'[%s]' in the server URL is not an IPv6 address; "
                            "give https://[ADDRESS]:PORT", url->host);
            return -1;
        }
        return 0;
    }
    for (size_t index = 0; index < length; index++) {
        if (!is_name_character(url->host[index])) {
            kt_client_error(error, error_size, "the server URL's host '%s' contains '%c'; give "
                            URL_FORM " without a user name, path or query", url->host,
                            url->host[index]);
            return -1;
        }
    }
    if (url->host[0] == '-' || url->host[0] == '.') {
        kt_client_error(error, error_size, "'%s' is not a host name; give " URL_FORM, url->host);
        return -1;
    }
    return 0;
}

/* Parses the host part at *cursor and moves the cursor past it. */
static int parse_host(kt_url *url, const char **cursor, char *error, size_t error_size)
{
    const char *start = *cursor;
    if (*start == '[') {
        const char *close = strchr(start, ']');
        if (close == NULL) {
            kt_client_error(error, error_size, "the IPv6 address in the server URL has no closing "
                            "']'; give https://[ADDRESS]:PORT");
            return -1;
        }
        *cursor = close + 1;
        return take_host(url, start + 1, (size_t)(close - start - 1), true, error, error_size);
    }
    size_t length = strcspn(start, ":/?#@");
    if (start[length] == '@') {
        kt_client_error(error, error_size, "the server URL contains a user name ('@'); give "
                        URL_FORM);
        return -1;
    }
    *cursor = start + length;
    return take_host(url, start, length, false, error, error_size);
}

/* Parses ":PORT" when present and moves the cursor past it. */
static int parse_port(kt_url *url, const char **cursor, char *error, size_t error_size)
{
    unsigned long port = KT_CLIENT_DEFAULT_PORT;
    if (**cursor == ':') {
        const char *digits = *cursor + 1;
        size_t count = 0;
        port = 0;
        while (is_digit(digits[count]) && count < 6) {
            port = port * 10 + (unsigned long)(digits[count] - '0');
            count++;
        }
        if (count == 0 || count > 5 || port == 0 || port > 65535) {
            kt_client_error(error, error_size, "the port in the server URL must be a number from "
                            "1 to 65535; give " URL_FORM);
            return -1;
        }
        *cursor = digits + count;
    }
    (void)snprintf(url->port, sizeof url->port, "%lu", port);
    return 0;
}

static int parse_scheme(const char *text, const char **rest, char *error, size_t error_size)
{
    if (strncasecmp(text, "https://", 8) == 0) {
        *rest = text + 8;
        return 0;
    }
    if (strncasecmp(text, "http://", 7) == 0)
        kt_client_error(error, error_size, "refusing the plain http:// URL '%s': the key server "
                        "speaks only HTTPS; use https://", text);
    else
        kt_client_error(error, error_size, "'%s' is not a key server URL; give " URL_FORM, text);
    return -1;
}

/* Builds authority and text from host and port. */
static int normalize(kt_url *url, char *error, size_t error_size)
{
    bool ipv6 = strchr(url->host, ':') != NULL;
    int written = snprintf(url->authority, sizeof url->authority, ipv6 ? "[%s]:%s" : "%s:%s",
                           url->host, url->port);
    if (written < 0 || (size_t)written >= sizeof url->authority)
        goto too_long;
    written = snprintf(url->text, sizeof url->text, "https://%s", url->authority);
    if (written < 0 || (size_t)written >= sizeof url->text)
        goto too_long;
    return 0;
too_long:
    kt_client_error(error, error_size, "the server URL is too long");
    return -1;
}

int kt_url_parse(const char *text, kt_url *url, char *error, size_t error_size)
{
    memset(url, 0, sizeof *url);
    if (text == NULL || text[0] == '\0') {
        kt_client_error(error, error_size, "no server URL given; give " URL_FORM);
        return -1;
    }
    if (strnlen(text, KT_URL_MAX + 1) > KT_URL_MAX || !kt_client_text_valid(text, KT_URL_MAX)) {
        kt_client_error(error, error_size, "the server URL is longer than %u characters or holds "
                        "control characters; give " URL_FORM, KT_URL_MAX);
        return -1;
    }
    const char *cursor = NULL;
    if (parse_scheme(text, &cursor, error, error_size) != 0 ||
        parse_host(url, &cursor, error, error_size) != 0 ||
        parse_port(url, &cursor, error, error_size) != 0)
        return -1;
    if (*cursor == '/')
        cursor++;
    if (*cursor != '\0') {
        kt_client_error(error, error_size, "unexpected '%s' at the end of the server URL '%s'; give "
                        URL_FORM " without a path, query or fragment", cursor, text);
        return -1;
    }
    return normalize(url, error, error_size);
}

bool kt_url_same(const kt_url *a, const kt_url *b)
{
    return strcasecmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0;
}

int kt_url_encode(char *out, size_t out_size, const char *text)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t written = 0;
    for (size_t index = 0; text[index] != '\0'; index++) {
        char character = text[index];
        bool unreserved = is_letter(character) || is_digit(character) || character == '-' ||
                          character == '.' || character == '_' || character == '~';
        size_t needed = unreserved ? 1 : 3;
        if (out_size - written <= needed) /* keep room for the NUL */
            return -1;
        if (unreserved) {
            out[written++] = character;
        } else {
            unsigned char byte = (unsigned char)character;
            out[written++] = '%';
            out[written++] = digits[byte >> 4];
            out[written++] = digits[byte & 0x0f];
        }
    }
    if (out_size == 0)
        return -1;
    out[written] = '\0';
    return 0;
}
