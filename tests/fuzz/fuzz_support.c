/*
 * fuzz_support.c — the helpers of fuzz.h, linked into every fuzz target.
 *
 * Temporary files live in one directory per process under $TMPDIR (mkdtemp, mode 0700) that an
 * atexit handler removes, so parallel fuzzing jobs never share a file and nothing is left behind
 * after a normal exit. A crash leaves the directory; it only ever holds fuzz inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "tests/fuzz/fuzz.h"

static char directory[PATH_MAX];

void fuzz_fail(const char *file, int line, const char *condition, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "\nFUZZ CHECK FAILED at %s:%d: %s\n  ", file, line, condition);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
    abort();
}

static void remove_directory(void)
{
    if (directory[0] == '\0')
        return;
    DIR *listing = opendir(directory);
    if (listing != NULL) {
        const struct dirent *entry;
        while ((entry = readdir(listing)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            char path[PATH_MAX];
            if (snprintf(path, sizeof path, "%s/%s", directory, entry->d_name) < (int)sizeof path)
                (void)unlink(path); /* best effort: a leftover file in /tmp harms nothing */
        }
        (void)closedir(listing);
    }
    (void)rmdir(directory);
}

const char *fuzz_directory(void)
{
    if (directory[0] != '\0')
        return directory;
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    if (snprintf(directory, sizeof directory, "%s/kt-fuzz.XXXXXX", base) >= (int)sizeof directory ||
        mkdtemp(directory) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    if (atexit(remove_directory) != 0) {
        fputs("fuzz: atexit failed\n", stderr);
        abort();
    }
    return directory;
}

void fuzz_setup(const char *program)
{
    static bool done;
    if (done)
        return;
    done = true;
    if (kt_crypto_init() != 0) {
        fputs("fuzz: kt_crypto_init failed\n", stderr);
        abort();
    }
    const char *keep = getenv("FUZZ_LOG");
    const char *path = keep != NULL && keep[0] == '1' ? NULL : "/dev/null";
    if (kt_log_open(program, KT_LOG_DEBUG, path) != 0) {
        perror("fuzz: kt_log_open");
        abort();
    }
    (void)fuzz_directory();
}

const char *fuzz_file_write(const char *name, const void *data, size_t size, unsigned mode)
{
    static char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", fuzz_directory(), name) >= (int)sizeof path) {
        fputs("fuzz: path too long\n", stderr);
        abort();
    }
    (void)unlink(path); /* a fresh file, so `mode` applies even if the last one differed */
    int descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (descriptor < 0 || fchmod(descriptor, (mode_t)mode) != 0) {
        perror("fuzz: creating the input file");
        abort();
    }
    const uint8_t *bytes = data;
    size_t written = 0;
    while (written < size) {
        ssize_t count = write(descriptor, bytes + written, size - written);
        if (count < 0 && errno == EINTR)
            continue;
        if (count <= 0) {
            perror("fuzz: writing the input file");
            abort();
        }
        written += (size_t)count;
    }
    if (close(descriptor) != 0) {
        perror("fuzz: closing the input file");
        abort();
    }
    return path;
}

char *fuzz_file_read(const char *path, size_t *size)
{
    FILE *stream = fopen(path, "rb");
    if (stream == NULL) {
        perror("fuzz: reading back a file");
        abort();
    }
    size_t capacity = 4096, used = 0;
    char *buffer = malloc(capacity + 1);
    for (;;) {
        if (buffer == NULL) {
            fputs("fuzz: out of memory\n", stderr);
            abort();
        }
        used += fread(buffer + used, 1, capacity - used, stream);
        if (used < capacity)
            break;
        capacity *= 2;
        buffer = realloc(buffer, capacity + 1);
    }
    if (ferror(stream) || fclose(stream) != 0) {
        perror("fuzz: reading back a file");
        abort();
    }
    buffer[used] = '\0';
    *size = used;
    return buffer;
}

uint8_t fuzz_take_byte(fuzz_reader *reader)
{
    if (reader->size == 0)
        return 0;
    uint8_t byte = reader->data[0];
    reader->data++;
    reader->size--;
    return byte;
}

const uint8_t *fuzz_take(fuzz_reader *reader, size_t wanted, size_t *taken)
{
    const uint8_t *start = reader->data;
    *taken = wanted < reader->size ? wanted : reader->size;
    reader->data += *taken;
    reader->size -= *taken;
    return start;
}

char *fuzz_take_string(fuzz_reader *reader, uint8_t separator)
{
    const uint8_t *end = memchr(reader->data, separator, reader->size);
    size_t length = end != NULL ? (size_t)(end - reader->data) : reader->size;
    char *text = malloc(length + 1);
    if (text == NULL) {
        fputs("fuzz: out of memory\n", stderr);
        abort();
    }
    memcpy(text, reader->data, length);
    text[length] = '\0';
    size_t consumed = end != NULL ? length + 1 : length;
    reader->data += consumed;
    reader->size -= consumed;
    return text;
}
