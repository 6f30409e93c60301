/*
 * config.c — the files of a client's confdir: client.conf and client.key.
 *
 * client.conf holds one `key = value` per line (blank lines and lines starting with '#' are
 * ignored; keys are [a-z0-9_]+; values run to the end of the line, surrounding blanks trimmed),
 * the format of keytrustee's server configuration. Every key must be one this version knows and
 * appear at most once, so a typo is an error naming the file and line instead of a setting
 * silently ignored. Values are checked as they are read: URLs parse, the fingerprint is 40
 * uppercase hex characters, exactly one of ca_file and skip_ssl_check = yes is set, and the
 * optional connect_timeout_ms (files written before it existed lack it) is 1 to 60000.
 *
 * client.conf is refused when group or others may change it: it names the server and the CA this
 * client trusts, so whoever can change it can redirect the client's deposits.
 *
 * client.key is the single line "keytrustee-client-key-v1 <base64 of the 64-byte Ed25519 secret
 * key>\n". It is read into a kt_secret and refused when group or others can access it, as ssh
 * refuses a private key with loose permissions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/ktclient/internal.h"

#define MAX_CONFIG_FILE (64u * 1024u)
#define MAX_KEY_FILE 1024u
#define KEY_BASE64_CHARS 88u /* base64 of KT_SIGN_SECRET_BYTES */

/* ---- client.conf ------------------------------------------------------------------------------ */

typedef struct config_line {
    const char *path;
    size_t number;
    char key[32];
    const char *value;
    size_t value_length;
} config_line;

static bool is_blank(char character)
{
    return character == ' ' || character == '\t' || character == '\r';
}

static bool is_key_character(char character)
{
    return (character >= 'a' && character <= 'z') || (character >= '0' && character <= '9') ||
           character == '_';
}

/* Copies the value into out, refusing values that are too long or hold control characters. */
static int copy_value(const config_line *line, char *out, size_t out_size, char *error,
                      size_t error_size)
{
    if (line->value_length >= out_size) {
        kt_client_error(error, error_size, "%s line %zu: the value of %s is longer than %zu "
                        "characters", line->path, line->number, line->key, out_size - 1);
        return -1;
    }
    memcpy(out, line->value, line->value_length);
    out[line->value_length] = '\0';
    if (line->value_length > 0 && !kt_client_text_valid(out, out_size - 1)) {
        kt_client_error(error, error_size, "%s line %zu: the value of %s holds control "
                        "characters", line->path, line->number, line->key);
        return -1;
    }
    return 0;
}

static int set_url(const config_line *line, char *out, size_t out_size, bool optional,
                   char *error, size_t error_size)
{
    if (copy_value(line, out, out_size, error, error_size) != 0)
        return -1;
    if (optional && out[0] == '\0')
        return 0;
    kt_url url;
    char reason[256];
    if (kt_url_parse(out, &url, reason, sizeof reason) != 0) {
        kt_client_error(error, error_size, "%s line %zu: %s: %s", line->path, line->number,
                        line->key, reason);
        return -1;
    }
    return 0;
}

static int set_yes_no(const config_line *line, bool *out, char *error, size_t error_size)
{
    if (line->value_length == 3 && memcmp(line->value, "yes", 3) == 0)
        *out = true;
    else if (line->value_length == 2 && memcmp(line->value, "no", 2) == 0)
        *out = false;
    else {
        kt_client_error(error, error_size, "%s line %zu: %s must be yes or no", line->path,
                        line->number, line->key);
        return -1;
    }
    return 0;
}

static int set_fingerprint(const config_line *line, kt_client_config *config, char *error,
                           size_t error_size)
{
    if (copy_value(line, config->fingerprint, sizeof config->fingerprint, error, error_size) != 0)
        return -1;
    if (!kt_fingerprint_valid(config->fingerprint)) {
        kt_client_error(error, error_size, "%s line %zu: fingerprint must be 40 uppercase hex "
                        "characters", line->path, line->number);
        return -1;
    }
    return 0;
}

static int set_connect_timeout(const config_line *line, kt_client_config *config, char *error,
                               size_t error_size)
{
    char text[16];
    if (copy_value(line, text, sizeof text, error, error_size) != 0)
        return -1;
    if (kt_client_parse_connect_timeout(text, &config->connect_timeout_ms) != 0) {
        kt_client_error(error, error_size, "%s line %zu: connect_timeout_ms must be a number of "
                        "milliseconds from 1 to %d", line->path, line->number,
                        KT_CLIENT_MAX_CONNECT_TIMEOUT_MS);
        return -1;
    }
    return 0;
}

static int apply_line(const config_line *line, kt_client_config *config, char *error,
                      size_t error_size)
{
    const char *key = line->key;
    if (strcmp(key, "server") == 0)
        return set_url(line, config->server, sizeof config->server, false, error, error_size);
    if (strcmp(key, "passive_server") == 0)
        return set_url(line, config->passive_server, sizeof config->passive_server, true, error,
                       error_size);
    if (strcmp(key, "org") == 0)
        return copy_value(line, config->org, sizeof config->org, error, error_size);
    if (strcmp(key, "name") == 0)
        return copy_value(line, config->name, sizeof config->name, error, error_size);
    if (strcmp(key, "fingerprint") == 0)
        return set_fingerprint(line, config, error, error_size);
    if (strcmp(key, "ca_file") == 0)
        return copy_value(line, config->ca_file, sizeof config->ca_file, error, error_size);
    if (strcmp(key, "skip_ssl_check") == 0)
        return set_yes_no(line, &config->skip_ssl_check, error, error_size);
    if (strcmp(key, "connect_timeout_ms") == 0)
        return set_connect_timeout(line, config, error, error_size);
    kt_client_error(error, error_size, "%s line %zu: unknown key '%s'", line->path, line->number,
                    key);
    return -1;
}

static const char *const known_keys[] = {"server", "passive_server", "org", "name",
                                         "fingerprint", "ca_file", "skip_ssl_check",
                                         "connect_timeout_ms"};
#define KNOWN_KEY_COUNT (sizeof known_keys / sizeof known_keys[0])

/* Marks the key as seen; -1 when it was seen before. Unknown keys pass (apply_line names them). */
static int mark_seen(const char *key, bool seen[KNOWN_KEY_COUNT])
{
    for (size_t index = 0; index < KNOWN_KEY_COUNT; index++) {
        if (strcmp(key, known_keys[index]) == 0) {
            if (seen[index])
                return -1;
            seen[index] = true;
        }
    }
    return 0;
}

/* Splits one non-blank, non-comment line (without its newline) into key and value. */
static int split_line(const char *text, size_t length, config_line *line, char *error,
                      size_t error_size)
{
    size_t key_length = 0;
    while (key_length < length && is_key_character(text[key_length]))
        key_length++;
    size_t position = key_length;
    while (position < length && is_blank(text[position]))
        position++;
    if (key_length == 0 || key_length >= sizeof line->key || position >= length ||
        text[position] != '=') {
        kt_client_error(error, error_size, "%s line %zu: expected 'key = value' with a key of "
                        "lowercase letters, digits and '_'", line->path, line->number);
        return -1;
    }
    memcpy(line->key, text, key_length);
    line->key[key_length] = '\0';
    position++;
    while (position < length && is_blank(text[position]))
        position++;
    size_t end = length;
    while (end > position && is_blank(text[end - 1]))
        end--;
    line->value = text + position;
    line->value_length = end - position;
    return 0;
}

static int check_complete(const kt_client_config *config, const char *path, char *error,
                          size_t error_size)
{
    const char *missing = config->server[0] == '\0'        ? "server"
                          : config->org[0] == '\0'         ? "org"
                          : config->name[0] == '\0'        ? "name"
                          : config->fingerprint[0] == '\0' ? "fingerprint"
                                                           : NULL;
    if (missing != NULL) {
        kt_client_error(error, error_size, "%s has no %s; register again with ktclient register",
                        path, missing);
        return -1;
    }
    if ((config->ca_file[0] != '\0') == config->skip_ssl_check) {
        kt_client_error(error, error_size, "%s must set exactly one of ca_file and "
                        "skip_ssl_check = yes", path);
        return -1;
    }
    return 0;
}

int kt_client_config_parse(const char *text, size_t length, const char *path,
                           kt_client_config *config, char *error, size_t error_size)
{
    memset(config, 0, sizeof *config);
    if (memchr(text, '\0', length) != NULL) {
        kt_client_error(error, error_size, "%s holds a NUL byte; it is not a client.conf", path);
        return -1;
    }
    bool seen[KNOWN_KEY_COUNT] = {false};
    config_line line = {.path = path};
    for (size_t position = 0; position < length;) {
        const char *start = text + position;
        const char *newline = memchr(start, '\n', length - position);
        size_t line_length = newline != NULL ? (size_t)(newline - start) : length - position;
        position += line_length + (newline != NULL ? 1 : 0);
        line.number++;
        size_t skip = 0;
        while (skip < line_length && is_blank(start[skip]))
            skip++;
        if (skip == line_length || start[skip] == '#')
            continue;
        if (split_line(start + skip, line_length - skip, &line, error, error_size) != 0)
            return -1;
        if (mark_seen(line.key, seen) != 0) {
            kt_client_error(error, error_size, "%s line %zu: %s is given twice", path,
                            line.number, line.key);
            return -1;
        }
        if (apply_line(&line, config, error, error_size) != 0)
            return -1;
    }
    return check_complete(config, path, error, error_size);
}

int kt_client_config_format(const kt_client_config *config, char *out, size_t out_size)
{
    /* "key =" alone for an empty value, so no line ends in a blank. */
    const char *passive = config->passive_server;
    const char *ca_file = config->ca_file;
    long timeout = config->connect_timeout_ms > 0 ? config->connect_timeout_ms
                                                  : KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    int written = snprintf(out, out_size,
                           "# keytrustee client configuration, written by ktclient register.\n"
                           "server = %s\npassive_server =%s%s\norg = %s\nname = %s\n"
                           "fingerprint = %s\nca_file =%s%s\nskip_ssl_check = %s\n"
                           "connect_timeout_ms = %ld\n",
                           config->server, passive[0] != '\0' ? " " : "", passive, config->org,
                           config->name, config->fingerprint, ca_file[0] != '\0' ? " " : "",
                           ca_file, config->skip_ssl_check ? "yes" : "no", timeout);
    return (written < 0 || (size_t)written >= out_size) ? -1 : 0;
}

int kt_client_config_load(const char *path, kt_client_config *config, char *error,
                          size_t error_size)
{
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        if (errno == ENOENT)
            kt_client_error(error, error_size, "%s does not exist: this directory holds no "
                            "registered client; register first with ktclient --confdir DIR "
                            "register --server URL --org ORG --auth SECRET", path);
        else
            kt_client_error(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat status;
    if (fstat(fileno(file), &status) != 0 || !S_ISREG(status.st_mode) ||
        (status.st_mode & 022) != 0) {
        (void)fclose(file);
        kt_client_error(error, error_size, "%s must be a regular file that only its owner can "
                        "change (it names the server and the CA to trust); fix it with: "
                        "chmod 600 %s", path, path);
        return -1;
    }
    char *text = malloc(MAX_CONFIG_FILE + 1);
    size_t length = text != NULL ? fread(text, 1, MAX_CONFIG_FILE + 1, file) : 0;
    bool failed = text == NULL || ferror(file) != 0;
    (void)fclose(file);
    int result = -1;
    if (failed || length > MAX_CONFIG_FILE)
        kt_client_error(error, error_size, "cannot read %s%s", path,
                        failed ? "" : ": it is larger than 64 KiB");
    else
        result = kt_client_config_parse(text, length, path, config, error, error_size);
    free(text);
    return result;
}

/* ---- client.key ------------------------------------------------------------------------------- */

int kt_client_key_format(const kt_secret *secret_key, kt_secret **text)
{
    size_t prefix_length = strlen(KT_CLIENT_KEY_PREFIX);
    *text = kt_secret_new(prefix_length + KEY_BASE64_CHARS + 2);
    if (*text == NULL)
        return -1;
    char *out = (char *)(*text)->bytes;
    memcpy(out, KT_CLIENT_KEY_PREFIX, prefix_length);
    if (kt_base64_encode(out + prefix_length, KEY_BASE64_CHARS + 1, secret_key->bytes,
                         secret_key->length) != 0 ||
        strlen(out + prefix_length) != KEY_BASE64_CHARS) {
        kt_secret_free(*text);
        *text = NULL;
        return -1;
    }
    out[prefix_length + KEY_BASE64_CHARS] = '\n';
    (*text)->length = prefix_length + KEY_BASE64_CHARS + 1; /* the NUL is not written */
    return 0;
}

static bool key_text_framed(const kt_secret *text)
{
    size_t prefix_length = strlen(KT_CLIENT_KEY_PREFIX);
    return text->length == prefix_length + KEY_BASE64_CHARS + 1 &&
           memcmp(text->bytes, KT_CLIENT_KEY_PREFIX, prefix_length) == 0 &&
           text->bytes[text->length - 1] == '\n';
}

int kt_client_key_parse(const kt_secret *text, const char *path, kt_secret **secret_key,
                        char *error, size_t error_size)
{
    *secret_key = NULL;
    kt_secret *key = kt_secret_new(KT_SIGN_SECRET_BYTES);
    if (key == NULL) {
        kt_client_error(error, error_size, "out of memory loading %s", path);
        return -1;
    }
    size_t decoded = 0;
    if (!key_text_framed(text) ||
        kt_base64_decode(key->bytes, key->length, &decoded,
                         (const char *)text->bytes + strlen(KT_CLIENT_KEY_PREFIX),
                         KEY_BASE64_CHARS) != 0 ||
        decoded != KT_SIGN_SECRET_BYTES) {
        kt_secret_free(key);
        kt_client_error(error, error_size, "%s is not a keytrustee client key (expected the "
                        "line \"" KT_CLIENT_KEY_PREFIX "<base64>\"); restore it from a backup "
                        "or register again", path);
        return -1;
    }
    *secret_key = key;
    return 0;
}

int kt_client_key_load(const char *path, kt_secret **secret_key, char *error, size_t error_size)
{
    *secret_key = NULL;
    struct stat status;
    if (stat(path, &status) != 0) {
        kt_client_error(error, error_size, "cannot read the client key %s: %s", path,
                        strerror(errno));
        return -1;
    }
    if (!S_ISREG(status.st_mode) || (status.st_mode & 077) != 0) {
        kt_client_error(error, error_size, "the client key %s must be a regular file that only "
                        "its owner can access; fix it with: chmod 600 %s", path, path);
        return -1;
    }
    kt_secret *text = NULL;
    if (kt_read_secret_file(path, MAX_KEY_FILE, &text, error, error_size) != 0)
        return -1;
    int result = kt_client_key_parse(text, path, secret_key, error, error_size);
    kt_secret_free(text);
    return result;
}
