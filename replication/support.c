/*
 * support.c — the plumbing every other file of replication/ stands on: logging through the
 * caller's callback, error sentences, clocks, byte order, bounds-checked buffers, and the file
 * operations whose durability the protocol relies on.
 *
 * Durability rules used throughout the folder
 *   - A file that must survive a crash is fsynced (fdatasync for appends to an existing file).
 *   - A file replaced as a whole is written to "<path>.tmp", fsynced, renamed over <path>, and the
 *     directory is fsynced, so after a crash either the old or the new file is there, whole.
 *   - Encoded integers are little-endian on disk and on the wire, except where SQLite's own
 *     formats say big-endian (walformat.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "replication/internal.h"

void repl_log(const repl_logger *logger, kt_repl_log_level level, const char *format, ...)
{
    if (logger == NULL || logger->function == NULL) {
        return;
    }
    char message[512];
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    if (written < 0) {
        return;
    }
    logger->function(logger->context, level, message);
}

void repl_error(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0) {
        return;
    }
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(error, error_size, format, arguments);
    va_end(arguments);
    if (written < 0) {
        error[0] = '\0';
    }
}

static int64_t clock_ms(clockid_t clock)
{
    struct timespec now;
    if (clock_gettime(clock, &now) != 0) {
        return 0; /* cannot fail for these clocks on Linux */
    }
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

int64_t repl_now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
int64_t repl_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

void repl_sleep_ms(int milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (long)(milliseconds % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

void repl_deadline(struct timespec *deadline, int milliseconds)
{
    if (clock_gettime(CLOCK_MONOTONIC, deadline) != 0) {
        deadline->tv_sec = 0;
        deadline->tv_nsec = 0;
    }
    deadline->tv_sec += milliseconds / 1000;
    deadline->tv_nsec += (long)(milliseconds % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec += 1;
        deadline->tv_nsec -= 1000000000L;
    }
}

bool repl_wait_until(pthread_cond_t *condition, pthread_mutex_t *mutex,
                     const struct timespec *deadline)
{
    return pthread_cond_timedwait(condition, mutex, deadline) != ETIMEDOUT;
}

int repl_condition_init(pthread_cond_t *condition)
{
    pthread_condattr_t attributes;
    if (pthread_condattr_init(&attributes) != 0) {
        return -1;
    }
    int result = pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    if (result == 0) {
        result = pthread_cond_init(condition, &attributes);
    }
    (void)pthread_condattr_destroy(&attributes);
    return result == 0 ? 0 : -1;
}

void repl_put_le32(unsigned char *out, uint32_t value)
{
    for (int index = 0; index < 4; index++) {
        out[index] = (unsigned char)(value >> (8 * index));
    }
}

void repl_put_le64(unsigned char *out, uint64_t value)
{
    for (int index = 0; index < 8; index++) {
        out[index] = (unsigned char)(value >> (8 * index));
    }
}

void repl_put_be32(unsigned char *out, uint32_t value)
{
    for (int index = 0; index < 4; index++) {
        out[index] = (unsigned char)(value >> (24 - 8 * index));
    }
}

uint32_t repl_get_le32(const unsigned char *in)
{
    return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
           (uint32_t)in[3] << 24;
}

uint64_t repl_get_le64(const unsigned char *in)
{
    return (uint64_t)repl_get_le32(in) | (uint64_t)repl_get_le32(in + 4) << 32;
}

uint32_t repl_get_be32(const unsigned char *in)
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 |
           (uint32_t)in[3];
}

/* ---- buffers -------------------------------------------------------------------------------- */

static bool buffer_reserve(repl_buffer *buffer, size_t more)
{
    if (buffer->failed) {
        return false;
    }
    if (more > SIZE_MAX - buffer->length) {
        buffer->failed = true;
        return false;
    }
    size_t needed = buffer->length + more;
    if (needed <= buffer->capacity) {
        return true;
    }
    size_t capacity = buffer->capacity ? buffer->capacity : 256;
    while (capacity < needed) {
        capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
    }
    unsigned char *grown = realloc(buffer->data, capacity);
    if (grown == NULL) {
        buffer->failed = true;
        return false;
    }
    buffer->data = grown;
    buffer->capacity = capacity;
    return true;
}

void repl_buffer_put(repl_buffer *buffer, const void *bytes, size_t length)
{
    if (length == 0 || !buffer_reserve(buffer, length)) {
        return;
    }
    memcpy(buffer->data + buffer->length, bytes, length);
    buffer->length += length;
}

void repl_buffer_put_u8(repl_buffer *buffer, uint8_t value) { repl_buffer_put(buffer, &value, 1); }

void repl_buffer_put_u32(repl_buffer *buffer, uint32_t value)
{
    unsigned char bytes[4];
    repl_put_le32(bytes, value);
    repl_buffer_put(buffer, bytes, sizeof bytes);
}

void repl_buffer_put_u64(repl_buffer *buffer, uint64_t value)
{
    unsigned char bytes[8];
    repl_put_le64(bytes, value);
    repl_buffer_put(buffer, bytes, sizeof bytes);
}

void repl_buffer_free(repl_buffer *buffer)
{
    free(buffer->data);
    memset(buffer, 0, sizeof *buffer);
}

void repl_reader_init(repl_reader *reader, const void *data, size_t length)
{
    reader->data = data;
    reader->length = length;
    reader->offset = 0;
    reader->failed = false;
}

const unsigned char *repl_reader_take(repl_reader *reader, size_t length)
{
    if (reader->failed || length > reader->length - reader->offset) {
        reader->failed = true;
        return NULL;
    }
    const unsigned char *at = reader->data + reader->offset;
    reader->offset += length;
    return at;
}

uint8_t repl_reader_u8(repl_reader *reader)
{
    const unsigned char *at = repl_reader_take(reader, 1);
    return at ? at[0] : 0;
}

uint32_t repl_reader_u32(repl_reader *reader)
{
    const unsigned char *at = repl_reader_take(reader, 4);
    return at ? repl_get_le32(at) : 0;
}

uint64_t repl_reader_u64(repl_reader *reader)
{
    const unsigned char *at = repl_reader_take(reader, 8);
    return at ? repl_get_le64(at) : 0;
}

void repl_reader_copy(repl_reader *reader, void *out, size_t length)
{
    const unsigned char *at = repl_reader_take(reader, length);
    if (at != NULL) {
        memcpy(out, at, length);
    } else {
        memset(out, 0, length);
    }
}

bool repl_reader_done(const repl_reader *reader)
{
    return !reader->failed && reader->offset == reader->length;
}

/* ---- files ---------------------------------------------------------------------------------- */

int repl_write_all(int fd, const void *data, size_t length)
{
    const unsigned char *at = data;
    while (length > 0) {
        ssize_t written = write(fd, at, length);
        if (written < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        at += written;
        length -= (size_t)written;
    }
    return 0;
}

int repl_pwrite_all(int fd, const void *data, size_t length, uint64_t offset)
{
    const unsigned char *at = data;
    while (length > 0) {
        ssize_t written = pwrite(fd, at, length, (off_t)offset);
        if (written < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        at += written;
        length -= (size_t)written;
        offset += (uint64_t)written;
    }
    return 0;
}

long repl_pread_full(int fd, void *data, size_t length, uint64_t offset)
{
    unsigned char *at = data;
    size_t total = 0;
    while (total < length) {
        ssize_t got = pread(fd, at + total, length - total, (off_t)(offset + total));
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (got == 0) {
            break;
        }
        total += (size_t)got;
    }
    return (long)total;
}

int repl_fsync_directory_of(const char *path)
{
    char *copy = repl_string_copy(path);
    if (copy == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) {
        return -1;
    }
    int result = fsync(fd);
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return result;
}

int repl_write_file_atomic(const char *path, const void *data, size_t length)
{
    char *temporary = NULL;
    size_t size = strlen(path) + sizeof ".tmp";
    temporary = malloc(size);
    if (temporary == NULL) {
        errno = ENOMEM;
        return -1;
    }
    (void)snprintf(temporary, size, "%s.tmp", path);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int result = -1;
    if (fd >= 0) {
        if (repl_write_all(fd, data, length) == 0 && fsync(fd) == 0) {
            result = 0;
        }
        int saved = errno;
        if (close(fd) != 0 && result == 0) {
            result = -1;
        } else {
            errno = saved;
        }
    }
    if (result == 0) {
        result = rename(temporary, path);
    }
    if (result == 0) {
        result = repl_fsync_directory_of(path);
    } else {
        int saved = errno;
        (void)unlink(temporary);
        errno = saved;
    }
    free(temporary);
    return result;
}

char *repl_path_join(const char *directory, const char *name)
{
    size_t size = strlen(directory) + 1 + strlen(name) + 1;
    char *path = malloc(size);
    if (path != NULL) {
        (void)snprintf(path, size, "%s/%s", directory, name);
    }
    return path;
}

char *repl_string_copy(const char *text)
{
    if (text == NULL) {
        return NULL;
    }
    size_t size = strlen(text) + 1;
    char *copy = malloc(size);
    if (copy != NULL) {
        memcpy(copy, text, size);
    }
    return copy;
}

/* ---- CRC-32C -------------------------------------------------------------------------------- */

/* Table-driven CRC-32C (Castagnoli), and the same with the SSE 4.2 instruction when the processor
 * has it: a log record carries whole pages, so this runs over every byte a commit writes, twice on
 * the passive; the table costs about 70 us per 24 KiB record, the instruction about 2 us. */
static uint32_t crc32c_table[256];
static bool crc32c_hardware;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_set_up(void)
{
    for (uint32_t index = 0; index < 256; index++) {
        uint32_t value = index;
        for (int bit = 0; bit < 8; bit++) {
            value = (value & 1) ? (value >> 1) ^ 0x82F63B78u : value >> 1;
        }
        crc32c_table[index] = value;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc32c_hardware = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc32c_by_table(uint32_t crc, const unsigned char *at, size_t length)
{
    for (size_t index = 0; index < length; index++) {
        crc = crc32c_table[(crc ^ at[index]) & 0xFF] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_by_instruction(uint32_t crc,
                                                                         const unsigned char *at,
                                                                         size_t length)
{
    uint64_t value = crc;
    for (; length >= 8; at += 8, length -= 8) {
        uint64_t word;
        memcpy(&word, at, sizeof word);
        value = __builtin_ia32_crc32di(value, word);
    }
    crc = (uint32_t)value;
    for (; length > 0; at++, length--) {
        crc = __builtin_ia32_crc32qi(crc, *at);
    }
    return crc;
}
#endif

uint32_t repl_crc32c(uint32_t crc, const void *data, size_t length)
{
    (void)pthread_once(&crc32c_once, crc32c_set_up);
    crc = ~crc;
#if defined(__x86_64__)
    if (crc32c_hardware) {
        return ~crc32c_by_instruction(crc, data, length);
    }
#endif
    return ~crc32c_by_table(crc, data, length);
}
