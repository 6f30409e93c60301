/*
 * config.c — keytrustee.conf and keytrustee-db.conf: one `key = value` per line.
 *
 * The format is deliberately small and strict (see app.h): blank lines and '#' comments are
 * skipped, keys are [a-z0-9_]+, a value runs to the end of the line with the blanks around it
 * trimmed. Anything else — a line without '=', a bad key, a key given twice — is an error that
 * names the file and the line, because a silently ignored typo in a server's settings is worse than
 * a refusal to start. Entries keep their insertion order so that a file written by ktadmin reads the
 * same way every time; saving goes through kt_write_file_atomic so a crash never leaves half a file.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/common/app.h"
#include "app/common/internal.h"
#include "crypto/crypto.h"

/* Longest line accepted; settings are host names, ports and words. */
#define KT_CONFIG_LINE_MAX 4096u

typedef struct kt_config_entry {
    char *key;
    char *value;
    unsigned line; /* where it was read, 0 when set by the program */
} kt_config_entry;

struct kt_config {
    kt_config_entry *entries;
    size_t count;
    size_t capacity;
    char *path; /* the file it was loaded from, for error text; NULL for a new config */
};

kt_config *kt_config_new(void)
{
    return calloc(1, sizeof(kt_config));
}

void kt_config_free(kt_config *config)
{
    if (config == NULL)
        return;
    for (size_t index = 0; index < config->count; index++) {
        free(config->entries[index].key);
        free(config->entries[index].value);
    }
    free(config->entries);
    free(config->path);
    free(config);
}

static bool key_valid(const char *key, size_t length)
{
    if (length == 0)
        return false;
    for (size_t index = 0; index < length; index++) {
        char c = key[index];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static bool is_blank(char c)
{
    /* '\r' counts as a blank so a file edited on Windows does not smuggle it into values. */
    return c == ' ' || c == '\t' || c == '\r';
}

/* A value can be written and read back unchanged: no line breaks, no blanks at either end. */
static bool value_valid(const char *value)
{
    if (strpbrk(value, "\n\r") != NULL)
        return false;
    size_t length = strlen(value);
    return length == 0 || (!is_blank(value[0]) && !is_blank(value[length - 1]));
}

static kt_config_entry *find_entry(const kt_config *config, const char *key)
{
    for (size_t index = 0; index < config->count; index++)
        if (strcmp(config->entries[index].key, key) == 0)
            return &config->entries[index];
    return NULL;
}

static int append_entry(kt_config *config, const char *key, size_t key_length, const char *value,
                        unsigned line)
{
    if (config->count == config->capacity) {
        size_t capacity = config->capacity == 0 ? 8 : config->capacity * 2;
        kt_config_entry *grown = realloc(config->entries, capacity * sizeof *grown);
        if (grown == NULL)
            return -1;
        config->entries = grown;
        config->capacity = capacity;
    }
    char *key_copy = strndup(key, key_length);
    char *value_copy = strdup(value);
    if (key_copy == NULL || value_copy == NULL) {
        free(key_copy);
        free(value_copy);
        return -1;
    }
    config->entries[config->count++] = (kt_config_entry){key_copy, value_copy, line};
    return 0;
}

int kt_config_set(kt_config *config, const char *key, const char *value)
{
    if (config == NULL || key == NULL || !key_valid(key, strlen(key)) ||
        (value != NULL && !value_valid(value))) {
        errno = EINVAL;
        return -1;
    }
    kt_config_entry *entry = find_entry(config, key);
    if (value == NULL) {
        if (entry != NULL) {
            size_t index = (size_t)(entry - config->entries);
            free(entry->key);
            free(entry->value);
            memmove(entry, entry + 1, (config->count - index - 1) * sizeof *entry);
            config->count--;
        }
        return 0;
    }
    if (entry == NULL)
        return append_entry(config, key, strlen(key), value, 0);
    char *copy = strdup(value);
    if (copy == NULL)
        return -1;
    free(entry->value);
    entry->value = copy;
    return 0;
}

const char *kt_config_get(const kt_config *config, const char *key, const char *fallback)
{
    if (config == NULL)
        return fallback;
    const kt_config_entry *entry = find_entry(config, key);
    return entry != NULL ? entry->value : fallback;
}

/* Trims blanks at both ends of line[0..length) in place; returns the start. */
static char *trim(char *text, size_t *length)
{
    while (*length > 0 && is_blank(text[0])) {
        text++;
        (*length)--;
    }
    while (*length > 0 && is_blank(text[*length - 1]))
        (*length)--;
    text[*length] = '\0';
    return text;
}

/* Parses one line (without its '\n') into the config. */
static int parse_line(kt_config *config, const char *path, unsigned number, char *line,
                      size_t length, char *error, size_t error_size)
{
    if (strlen(line) != length) {
        kt_app_error(error, error_size, "%s:%u: the line contains a NUL byte", path, number);
        return -1;
    }
    char *text = trim(line, &length);
    if (length == 0 || text[0] == '#')
        return 0;
    char *equals = strchr(text, '=');
    if (equals == NULL) {
        kt_app_error(error, error_size, "%s:%u: expected `key = value`, found \"%.60s\"", path,
                     number, text);
        return -1;
    }
    size_t key_length = (size_t)(equals - text);
    while (key_length > 0 && is_blank(text[key_length - 1]))
        key_length--;
    if (!key_valid(text, key_length)) {
        kt_app_error(error, error_size,
                     "%s:%u: the key \"%.*s\" is not made of a-z, 0-9 and _ only", path, number,
                     (int)(key_length < 60 ? key_length : 60), text);
        return -1;
    }
    size_t value_length = length - (size_t)(equals + 1 - text);
    char *value = trim(equals + 1, &value_length);
    text[key_length] = '\0';
    const kt_config_entry *earlier = find_entry(config, text);
    if (earlier != NULL) {
        kt_app_error(error, error_size, "%s:%u: the key %s is given twice (first on line %u)",
                     path, number, text, earlier->line);
        return -1;
    }
    if (append_entry(config, text, key_length, value, number) != 0) {
        kt_app_error(error, error_size, "%s:%u: out of memory", path, number);
        return -1;
    }
    return 0;
}

static int parse_stream(kt_config *config, FILE *stream, const char *path, char *error,
                        size_t error_size)
{
    char *line = NULL;
    size_t line_size = 0;
    unsigned number = 0;
    int result = 0;
    for (;;) {
        errno = 0;
        ssize_t length = getline(&line, &line_size, stream);
        if (length < 0) {
            if (errno != 0 || ferror(stream)) {
                kt_app_error(error, error_size, "cannot read %s: %s", path,
                             strerror(errno != 0 ? errno : EIO));
                result = -1;
            }
            break;
        }
        number++;
        if (length > 0 && line[length - 1] == '\n')
            line[--length] = '\0';
        if ((size_t)length > KT_CONFIG_LINE_MAX) {
            kt_app_error(error, error_size, "%s:%u: the line is longer than %u bytes", path,
                         number, KT_CONFIG_LINE_MAX);
            result = -1;
            break;
        }
        if (parse_line(config, path, number, line, (size_t)length, error, error_size) != 0) {
            result = -1;
            break;
        }
    }
    free(line);
    return result;
}

int kt_config_load(const char *path, bool missing_ok, kt_config **config, char *error,
                   size_t error_size)
{
    *config = NULL;
    kt_config *loaded = kt_config_new();
    if (loaded == NULL || (loaded->path = strdup(path)) == NULL) {
        kt_config_free(loaded);
        kt_app_error(error, error_size, "out of memory loading %s", path);
        return -1;
    }
    FILE *stream = fopen(path, "re");
    if (stream == NULL) {
        if (errno == ENOENT && missing_ok) {
            *config = loaded;
            return 0;
        }
        kt_app_error(error, error_size, "cannot open %s: %s", path, strerror(errno));
        kt_config_free(loaded);
        return -1;
    }
    int result = parse_stream(loaded, stream, path, error, error_size);
    if (fclose(stream) != 0 && result == 0) {
        kt_app_error(error, error_size, "cannot read %s: %s", path, strerror(errno));
        result = -1;
    }
    if (result != 0) {
        kt_config_free(loaded);
        return -1;
    }
    *config = loaded;
    return 0;
}

/* "file:line: key" for a value read from a file, "key" for one the program set. */
static void describe_key(const kt_config *config, const kt_config_entry *entry, char *out,
                         size_t out_size)
{
    if (config->path != NULL && entry->line > 0)
        snprintf(out, out_size, "%s:%u: %s", config->path, entry->line, entry->key);
    else
        snprintf(out, out_size, "%s", entry->key);
}

int kt_config_get_long(const kt_config *config, const char *key, long fallback, long minimum,
                       long maximum, long *value, char *error, size_t error_size)
{
    const kt_config_entry *entry = config != NULL ? find_entry(config, key) : NULL;
    if (entry == NULL) {
        *value = fallback;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long parsed = strtol(entry->value, &end, 10);
    bool is_number = entry->value[0] != '\0' && *end == '\0' && errno == 0 &&
                     entry->value[0] != ' ' && entry->value[0] != '+';
    if (!is_number || parsed < minimum || parsed > maximum) {
        char where[PATH_MAX + 128];
        describe_key(config, entry, where, sizeof where);
        kt_app_error(error, error_size, "%s = \"%.40s\" is not a whole number from %ld to %ld",
                     where, entry->value, minimum, maximum);
        return -1;
    }
    *value = parsed;
    return 0;
}

/* The whole file as text: "key = value\n" per entry. */
static char *serialise(const kt_config *config, size_t *length)
{
    size_t total = 1;
    for (size_t index = 0; index < config->count; index++)
        total += strlen(config->entries[index].key) + strlen(config->entries[index].value) + 4;
    char *text = malloc(total);
    if (text == NULL)
        return NULL;
    size_t used = 0;
    for (size_t index = 0; index < config->count; index++) {
        const kt_config_entry *entry = &config->entries[index];
        int written = snprintf(text + used, total - used, "%s = %s\n", entry->key, entry->value);
        if (written < 0 || (size_t)written >= total - used) {
            free(text);
            return NULL;
        }
        used += (size_t)written;
    }
    text[used] = '\0';
    *length = used;
    return text;
}

int kt_config_save(const kt_config *config, const char *path, char *error, size_t error_size)
{
    size_t length = 0;
    char *text = serialise(config, &length);
    if (text == NULL) {
        kt_app_error(error, error_size, "out of memory writing %s", path);
        return -1;
    }
    int result = kt_write_file_atomic(path, text, length, 0600, error, error_size);
    free(text);
    return result;
}
