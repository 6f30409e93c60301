/*
 * state.c — the failover hint, client.state in the confdir: which key server failed moments ago.
 *
 * When a read had to move from one configured server to the other because the first gave no
 * usable answer, the next invocations of ktclient would pay the same price again (up to the
 * connect timeout, or the short I/O timeout of request.c, per call). So the failed server is
 * written down, and for KT_CLIENT_AVOID_SECONDS reads ask the other server first. The failed one
 * is still asked when the other fails, and as soon as it answers again — or the time runs out —
 * the order goes back to the configured one. Writes ignore the hint: they always start at the
 * configured active, whose answer (or the passive's) is what decides where a write may go.
 *
 * The file holds nothing secret — a URL the client was registered with and a time — and is only a
 * hint: a missing, unreadable or malformed file, or one that group or others may change, is
 * ignored, and failing to write it is not an error. It is written 0600 and atomically, only when
 * the hint changes, and removed when it expires or is disproved. Its text:
 *
 *     # ktclient failover hint (not secret; safe to delete)
 *     avoid = https://kt01.example.com:11371
 *     until = 1764331230
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktclient/internal.h"

#define STATE_HEADER "# ktclient failover hint (not secret; safe to delete)\n"
#define STATE_FILE_MAX 1024u

/* ---- Text ----------------------------------------------------------------------------------- */

/* Reads "KEY = VALUE\n" at *cursor into value (NUL-terminated); -1 when the line is not that. */
static int take_line(const char **cursor, const char *end, const char *key, char *value,
                     size_t value_size)
{
    size_t key_length = strlen(key);
    const char *line = *cursor;
    const char *newline = memchr(line, '\n', (size_t)(end - line));
    if (newline == NULL || (size_t)(newline - line) < key_length + 4 ||
        memcmp(line, key, key_length) != 0 || memcmp(line + key_length, " = ", 3) != 0)
        return -1;
    size_t value_length = (size_t)(newline - line) - key_length - 3;
    if (value_length == 0 || value_length >= value_size)
        return -1;
    memcpy(value, line + key_length + 3, value_length);
    value[value_length] = '\0';
    *cursor = newline + 1;
    return 0;
}

static int parse_time(const char *text, int64_t *value)
{
    int64_t number = 0;
    if (text[0] == '\0' || strlen(text) > 18)
        return -1;
    for (const char *digit = text; *digit != '\0'; digit++) {
        if (*digit < '0' || *digit > '9')
            return -1;
        number = number * 10 + (*digit - '0');
    }
    *value = number;
    return 0;
}

int kt_client_hint_parse(const char *text, size_t length, kt_client_hint *hint)
{
    memset(hint, 0, sizeof *hint);
    size_t header_length = strlen(STATE_HEADER);
    const char *end = text + length;
    const char *cursor = text + header_length;
    char url_text[KT_URL_MAX + 1];
    char time_text[24];
    kt_url url;
    int64_t until = 0;
    if (length < header_length || memcmp(text, STATE_HEADER, header_length) != 0 ||
        take_line(&cursor, end, "avoid", url_text, sizeof url_text) != 0 ||
        take_line(&cursor, end, "until", time_text, sizeof time_text) != 0 || cursor != end ||
        kt_url_parse(url_text, &url, NULL, 0) != 0 || parse_time(time_text, &until) != 0)
        return -1;
    (void)snprintf(hint->avoid, sizeof hint->avoid, "%s", url.text);
    hint->until = until;
    return 0;
}

int kt_client_hint_format(const kt_client_hint *hint, char *out, size_t out_size)
{
    int written = snprintf(out, out_size, STATE_HEADER "avoid = %s\nuntil = %" PRId64 "\n",
                           hint->avoid, hint->until);
    return (written < 0 || (size_t)written >= out_size || hint->avoid[0] == '\0') ? -1 : 0;
}

/* ---- Choosing ------------------------------------------------------------------------------- */

/* The index of the configured server the hint names, or SIZE_MAX. */
static size_t hinted_server(const kt_client_hint *hint, const kt_url *servers,
                            size_t server_count)
{
    kt_url avoided;
    if (hint->avoid[0] == '\0' || kt_url_parse(hint->avoid, &avoided, NULL, 0) != 0)
        return SIZE_MAX;
    for (size_t index = 0; index < server_count; index++)
        if (kt_url_same(&avoided, &servers[index]))
            return index;
    return SIZE_MAX;
}

size_t kt_client_hint_first(const kt_client_hint *hint, const kt_url *servers,
                            size_t server_count, int64_t now)
{
    if (server_count < 2 || now >= hint->until)
        return 0;
    size_t avoided = hinted_server(hint, servers, server_count);
    return avoided == SIZE_MAX ? 0 : 1 - avoided;
}

/* ---- The file ------------------------------------------------------------------------------- */

void kt_client_hint_load(const char *path, kt_client_hint *hint)
{
    memset(hint, 0, sizeof *hint);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return;
    struct stat status;
    char text[STATE_FILE_MAX + 1];
    size_t length = 0;
    if (fstat(fileno(file), &status) == 0 && S_ISREG(status.st_mode) &&
        (status.st_mode & 022) == 0 && status.st_uid == geteuid())
        length = fread(text, 1, sizeof text, file);
    bool failed = ferror(file) != 0;
    (void)fclose(file); /* read only: nothing to lose */
    if (failed || length == 0 || length > STATE_FILE_MAX ||
        kt_client_hint_parse(text, length, hint) != 0)
        memset(hint, 0, sizeof *hint);
}

static void save_hint(const char *path, const kt_client_hint *hint)
{
    char text[STATE_FILE_MAX];
    char error[256];
    if (hint->avoid[0] == '\0') {
        (void)unlink(path); /* a hint that cannot be removed expires by itself */
        return;
    }
    if (kt_client_hint_format(hint, text, sizeof text) == 0)
        (void)kt_write_file_atomic(path, text, strlen(text), 0600, error, sizeof error);
}

void kt_client_hint_learn(const char *path, kt_client_hint *hint,
                          const kt_client_endpoint *endpoint, const kt_client_call *call,
                          int64_t now)
{
    if (path == NULL || path[0] == '\0' || call->write || endpoint->server_count < 2 ||
        call->tried_count == 0)
        return;
    size_t avoided = now < hint->until
                         ? hinted_server(hint, endpoint->servers, endpoint->server_count)
                         : SIZE_MAX;
    kt_client_hint learned = *hint;
    if (call->tried_count == 2 && call->tried_unhealthy[0] && !call->tried_unhealthy[1]) {
        (void)snprintf(learned.avoid, sizeof learned.avoid, "%s",
                       endpoint->servers[call->tried[0]].text);
        learned.until = now + KT_CLIENT_AVOID_SECONDS;
    } else {
        for (size_t index = 0; index < call->tried_count; index++)
            if (call->tried[index] == avoided && !call->tried_unhealthy[index])
                memset(&learned, 0, sizeof learned); /* the avoided server answers again */
        if (avoided == SIZE_MAX && hint->avoid[0] != '\0')
            memset(&learned, 0, sizeof learned); /* expired, or names no configured server */
    }
    if (strcmp(learned.avoid, hint->avoid) == 0 && learned.until == hint->until)
        return;
    *hint = learned;
    save_hint(path, hint);
}
