/*
 * fuzz.h — what the libFuzzer targets in tests/fuzz/ share.
 *
 * Each target is one file, fuzz_NAME.c, defining LLVMFuzzerTestOneInput (and, when it needs
 * set-up, LLVMFuzzerInitialize). It is compiled with clang under ASan + UBSan together with our
 * libraries (Makefile: "fuzzing"), and its seed corpus lives in tests/fuzz/corpus/NAME/. A target
 * checks more than "does not crash": where a parser has an inverse (an encoder, a formatter) it
 * checks the round trip, and FUZZ_CHECK turns a broken property into a crash that libFuzzer saves.
 *
 * Helpers here:
 *   fuzz_setup         once per process: libsodium, logging to /dev/null at debug level (so the
 *                      log formatting of hostile values runs too; FUZZ_LOG=1 keeps stderr)
 *   fuzz_file_*        a private temporary file rewritten with each input, for parsers that only
 *                      read from a path
 *   fuzz_reader        takes bytes off the front of an input (flags, lengths, sub-inputs)
 */
#ifndef KT_FUZZ_H
#define KT_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test must keep; a violation aborts with the message (a "crash"). */
#define FUZZ_CHECK(condition, ...)                                                                \
    do {                                                                                          \
        if (!(condition))                                                                         \
            fuzz_fail(__FILE__, __LINE__, #condition, __VA_ARGS__);                               \
    } while (0)

_Noreturn void fuzz_fail(const char *file, int line, const char *condition, const char *format,
                         ...) __attribute__((format(printf, 4, 5)));

/* Initializes libsodium and the log once; aborts when that fails. */
void fuzz_setup(const char *program);

/* A directory private to this process (created on first use, removed at exit). */
const char *fuzz_directory(void);

/* A path under fuzz_directory() named `name`, written with exactly `size` bytes and `mode`. */
const char *fuzz_file_write(const char *name, const void *data, size_t size, unsigned mode);

/* Reads a file written by the code under test; returns a malloc'd NUL-terminated buffer. */
char *fuzz_file_read(const char *path, size_t *size);

/* A cursor over the fuzz input. */
typedef struct fuzz_reader {
    const uint8_t *data;
    size_t size;
} fuzz_reader;

/* One byte (0 when the input is exhausted). */
uint8_t fuzz_take_byte(fuzz_reader *reader);
/* Up to `wanted` bytes; *taken says how many there were. */
const uint8_t *fuzz_take(fuzz_reader *reader, size_t wanted, size_t *taken);
/* A malloc'd NUL-terminated copy of the bytes up to the next `separator` (consumed) or the end. */
char *fuzz_take_string(fuzz_reader *reader, uint8_t separator);

#endif /* KT_FUZZ_H */
