/*
 * files.c — files that hold secrets: atomic replacement (so a crash never leaves half a key on
 * disk) and whole-file reads straight into guarded memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/internal.h"

static const char temporary_suffix[] = ".tmp.XXXXXX";

/* Advice to append to an errno description, so each message says what to do. */
static const char *advice_for(int error_number)
{
    switch (error_number) {
    case ENOSPC:
    case EDQUOT:
        return "; free some disk space and try again";
    case EACCES:
    case EPERM:
        return "; check the ownership and permissions of the file and its directory";
    case ENOENT:
        return "; check that the path is right and its directory exists";
    case EROFS:
        return "; the file system is read-only, choose a writable location";
    default:
        return "";
    }
}

static void describe_errno(char *error, size_t error_size, const char *action, const char *path,
                           int error_number)
{
    kt_crypto_error(error, error_size, "could not %s %s: %s%s", action, path,
                    strerror(error_number), advice_for(error_number));
}

static int write_all(int descriptor, const void *data, size_t length)
{
    const unsigned char *cursor = data;
    while (length > 0) {
        ssize_t written = write(descriptor, cursor, length);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        cursor += written;
        length -= (size_t)written;
    }
    return 0;
}

/* The directory holding `path`, so that the rename itself can be made durable. */
static int sync_parent_directory(const char *path, char *error, size_t error_size)
{
    const char *slash = strrchr(path, '/');
    char *directory = NULL;
    if (slash == NULL)
        directory = strdup(".");
    else if (slash == path)
        directory = strdup("/");
    else
        directory = strndup(path, (size_t)(slash - path));
    if (directory == NULL) {
        kt_crypto_error(error, error_size, "out of memory while writing %s", path);
        return -1;
    }
    int result = -1;
    int descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (descriptor < 0) {
        describe_errno(error, error_size, "open the directory", directory, errno);
    } else if (fsync(descriptor) != 0) {
        describe_errno(error, error_size, "flush the directory", directory, errno);
        (void)close(descriptor); /* the fsync error is the one to report */
    } else if (close(descriptor) != 0) {
        describe_errno(error, error_size, "close the directory", directory, errno);
    } else {
        result = 0;
    }
    free(directory);
    return result;
}

/* Creates "<path>.tmp.XXXXXX" holding the data with `mode`, flushed to disk. Returns its name
 * (to free) or NULL; the temporary file is removed again on failure. */
static char *write_temporary(const char *path, const void *data, size_t length, unsigned mode,
                             char *error, size_t error_size)
{
    size_t path_length = strlen(path);
    char *temporary = malloc(path_length + sizeof temporary_suffix);
    if (temporary == NULL) {
        kt_crypto_error(error, error_size, "out of memory while writing %s", path);
        return NULL;
    }
    memcpy(temporary, path, path_length);
    memcpy(temporary + path_length, temporary_suffix, sizeof temporary_suffix);

    /* mkostemp creates the file with mode 0600, so the data is never exposed before fchmod. */
    int descriptor = mkostemp(temporary, O_CLOEXEC);
    if (descriptor < 0) {
        describe_errno(error, error_size, "create a temporary file beside", path, errno);
        free(temporary);
        return NULL;
    }
    const char *failed_action = NULL;
    if (fchmod(descriptor, mode & 07777) != 0)
        failed_action = "set the permissions of";
    else if (write_all(descriptor, data, length) != 0)
        failed_action = "write";
    else if (fsync(descriptor) != 0)
        failed_action = "flush";
    int saved_errno = errno;
    if (close(descriptor) != 0 && failed_action == NULL) {
        failed_action = "close";
        saved_errno = errno;
    }
    if (failed_action != NULL) {
        describe_errno(error, error_size, failed_action, temporary, saved_errno);
        (void)unlink(temporary); /* best effort: the write error is what matters */
        free(temporary);
        return NULL;
    }
    return temporary;
}

/* Moves the temporary file into place without ever replacing an existing `path`. */
static int rename_no_replace(const char *temporary, const char *path)
{
    if (renameat2(AT_FDCWD, temporary, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* The file system lacks RENAME_NOREPLACE; link() refuses an existing target just as well. */
    if (link(temporary, path) != 0)
        return -1;
    return unlink(temporary);
}

static int write_atomic(const char *path, const void *data, size_t length, unsigned mode,
                        bool replace, char *error, size_t error_size)
{
    if (path == NULL || (data == NULL && length > 0)) {
        kt_crypto_error(error, error_size, "no file name or data given to write");
        return -1;
    }
    char *temporary = write_temporary(path, data, length, mode, error, error_size);
    if (temporary == NULL)
        return -1;
    int moved = replace ? rename(temporary, path) : rename_no_replace(temporary, path);
    if (moved != 0) {
        int saved_errno = errno;
        (void)unlink(temporary); /* best effort: report why the rename failed */
        free(temporary);
        if (saved_errno == EEXIST)
            kt_crypto_error(error, error_size,
                            "%s already exists; refusing to overwrite it (move it away first "
                            "if you really mean to replace it)",
                            path);
        else
            describe_errno(error, error_size, "move the new file into place at", path,
                           saved_errno);
        errno = saved_errno;
        return -1;
    }
    free(temporary);
    return sync_parent_directory(path, error, error_size);
}

int kt_write_file_atomic(const char *path, const void *data, size_t length, unsigned mode,
                         char *error, size_t error_size)
{
    return write_atomic(path, data, length, mode, true, error, error_size);
}

int kt_write_file_new(const char *path, const void *data, size_t length, unsigned mode,
                      char *error, size_t error_size)
{
    return write_atomic(path, data, length, mode, false, error, error_size);
}

static int read_exactly(int descriptor, unsigned char *buffer, size_t length)
{
    size_t done = 0;
    while (done < length) {
        ssize_t got = read(descriptor, buffer + done, length - done);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (got == 0) {
            errno = EAGAIN; /* the file shrank while being read */
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

/* True when the descriptor has nothing left to read, as it must after st_size bytes. */
static bool at_end(int descriptor)
{
    unsigned char extra = 0;
    ssize_t got;
    do {
        got = read(descriptor, &extra, 1);
    } while (got < 0 && errno == EINTR);
    kt_wipe(&extra, sizeof extra);
    return got == 0;
}

int kt_read_secret_descriptor(int descriptor, const char *path, size_t max_length,
                              kt_secret **out, char *error, size_t error_size)
{
    struct stat status;
    if (fstat(descriptor, &status) != 0) {
        describe_errno(error, error_size, "examine", path, errno);
        return -1;
    }
    if (!S_ISREG(status.st_mode)) {
        kt_crypto_error(error, error_size, "%s is not a regular file; point to the right file",
                        path);
        return -1;
    }
    if ((uintmax_t)status.st_size > (uintmax_t)max_length) {
        kt_crypto_error(error, error_size,
                        "%s is larger than %zu bytes, so it is not the file expected; check the "
                        "path",
                        path, max_length);
        return -1;
    }
    kt_secret *secret = kt_secret_new((size_t)status.st_size);
    if (secret == NULL) {
        kt_crypto_error(error, error_size, "out of locked memory while reading %s", path);
        return -1;
    }
    bool complete = read_exactly(descriptor, secret->bytes, secret->length) == 0;
    if (!complete && errno != EAGAIN) {
        describe_errno(error, error_size, "read", path, errno);
        kt_secret_free(secret);
        return -1;
    }
    if (!complete || !at_end(descriptor)) {
        kt_crypto_error(error, error_size, "%s changed while being read; try again", path);
        kt_secret_free(secret);
        return -1;
    }
    *out = secret;
    return 0;
}

int kt_read_secret_file(const char *path, size_t max_length, kt_secret **out, char *error,
                        size_t error_size)
{
    int descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (descriptor < 0) {
        describe_errno(error, error_size, "open", path, errno);
        return -1;
    }
    int result = kt_read_secret_descriptor(descriptor, path, max_length, out, error, error_size);
    (void)close(descriptor); /* read-only: nothing to lose on close */
    return result;
}
