/*
 * fsync_latency.c — measures the durable-write latency of the filesystem under a directory: the
 * floor under every synchronous commit (SQLite WAL FULL, PostgreSQL, keytrustee's replicated WAL).
 *
 *   fsync_latency [--count N] [--size BYTES] DIR
 *
 * Creates a temporary file in DIR, then N times: pwrite BYTES (default 4096) at offset 0 (in place:
 * the block is already allocated, as a WAL page rewrite is) and fdatasync, timing each pair with
 * CLOCK_MONOTONIC. One untimed write+fdatasync allocates the block first. The file is removed.
 * Prints one JSON line: {"count":N,"size":B,"p50_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..,
 * "mean_ms":..}. Exit status 0, or 1 with a message on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array (the same rule as bench/benchlib.py). */
static double percentile_ms(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1e6;
}

static long parse_positive(const char *text, const char *what)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value <= 0 || value > INT_MAX) {
        fprintf(stderr, "fsync_latency: %s must be a positive integer, not '%s'\n", what, text);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv)
{
    long count = 2000, size = 4096;
    const char *directory = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = parse_positive(argv[++i], "--count");
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = parse_positive(argv[++i], "--size");
        else if (argv[i][0] != '-' && directory == NULL)
            directory = argv[i];
        else {
            fprintf(stderr, "usage: fsync_latency [--count N] [--size BYTES] DIR\n");
            return 2;
        }
    }
    if (directory == NULL) {
        fprintf(stderr, "usage: fsync_latency [--count N] [--size BYTES] DIR\n");
        return 2;
    }

    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/fsync_latency.XXXXXX", directory) >= (int)sizeof path) {
        fprintf(stderr, "fsync_latency: directory path too long\n");
        return 1;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "fsync_latency: cannot create a file in %s: %s\n", directory,
                strerror(errno));
        return 1;
    }
    unlink(path); /* the inode lives until close; nothing is left behind on a crash */

    unsigned char *block = malloc((size_t)size);
    uint64_t *samples = malloc((size_t)count * sizeof *samples);
    if (block == NULL || samples == NULL) {
        fprintf(stderr, "fsync_latency: out of memory\n");
        return 1;
    }
    for (long i = 0; i < size; i++)
        block[i] = (unsigned char)(i * 131u + 7u);

    if (pwrite(fd, block, (size_t)size, 0) != (ssize_t)size || fdatasync(fd) != 0) {
        fprintf(stderr, "fsync_latency: write/fdatasync failed: %s\n", strerror(errno));
        return 1;
    }
    uint64_t total = 0;
    for (long i = 0; i < count; i++) {
        block[0] = (unsigned char)i; /* a changed page, as a real rewrite */
        uint64_t start = now_ns();
        if (pwrite(fd, block, (size_t)size, 0) != (ssize_t)size || fdatasync(fd) != 0) {
            fprintf(stderr, "fsync_latency: write/fdatasync failed: %s\n", strerror(errno));
            return 1;
        }
        samples[i] = now_ns() - start;
        total += samples[i];
    }
    close(fd);

    qsort(samples, (size_t)count, sizeof *samples, compare_u64);
    printf("{\"count\":%ld,\"size\":%ld,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,"
           "\"max_ms\":%.4f,\"mean_ms\":%.4f}\n",
           count, size, percentile_ms(samples, (size_t)count, 50.0),
           percentile_ms(samples, (size_t)count, 99.0), percentile_ms(samples, (size_t)count, 99.9),
           (double)samples[count - 1] / 1e6, (double)total / (double)count / 1e6);
    free(samples);
    free(block);
    return fflush(stdout) == 0 ? 0 : 1;
}
