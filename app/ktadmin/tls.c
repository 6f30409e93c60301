/*
 * tls.c — the TLS files `ktadmin init` looks after in .keytrustee/.ssl: the certificate, its
 * private key, and the CA file clients pin (the certificate itself when self-signed).
 *
 * Existing files are kept: an operator may have installed a CA-signed certificate by hand, and a
 * second `init` must not change what clients pinned. When the certificate or key is missing (the
 * seed's rsync to the passive excludes .ssl) a new self-signed pair is made for the external host.
 * New files are written under temporary names, made 0400, and renamed over the final names, so a
 * read-only file is never opened for writing and a crash leaves either the old or the new file.
 * The key is renamed into place before the certificate: if a crash separates the two, the
 * certificate is missing and the next `init` makes a fresh pair.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"

#define CERTIFICATE_VALID_DAYS 3650u
#define CERTIFICATE_FILE_MAX   (256u * 1024u)
#define TEMPORARY_SUFFIX       ".new"

typedef struct tls_files {
    char certificate[PATH_MAX];
    char key[PATH_MAX];
    char authority[PATH_MAX];
    char new_certificate[PATH_MAX];
    char new_key[PATH_MAX];
} tls_files;

static int tls_files_resolve(const kt_paths *paths, tls_files *files, char *error,
                             size_t error_size)
{
    int failed = kt_path_join(files->certificate, PATH_MAX, paths->ssldir, KT_CERT_FILE) |
                 kt_path_join(files->key, PATH_MAX, paths->ssldir, KT_CERT_KEY_FILE) |
                 kt_path_join(files->authority, PATH_MAX, paths->ssldir, KT_CERT_CA_FILE) |
                 kt_path_join(files->new_certificate, PATH_MAX, paths->ssldir,
                              "." KT_CERT_FILE TEMPORARY_SUFFIX) |
                 kt_path_join(files->new_key, PATH_MAX, paths->ssldir,
                              "." KT_CERT_KEY_FILE TEMPORARY_SUFFIX);
    if (failed != 0) {
        snprintf(error, error_size, "the TLS directory path %s is too long", paths->ssldir);
        return -1;
    }
    return 0;
}

/* 1 when the path exists, 0 when it does not, -1 when it cannot be checked. */
static int file_exists(const char *path, char *error, size_t error_size)
{
    struct stat status;
    if (lstat(path, &status) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    snprintf(error, error_size, "cannot check %s: %s", path, strerror(errno));
    return -1;
}

static int read_public_file(const char *path, char **data, size_t *length, char *error,
                            size_t error_size)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        snprintf(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char *buffer = malloc(CERTIFICATE_FILE_MAX);
    size_t count = buffer == NULL ? 0 : fread(buffer, 1, CERTIFICATE_FILE_MAX, file);
    bool failed = buffer == NULL || ferror(file) || count == 0 || count == CERTIFICATE_FILE_MAX;
    if (fclose(file) != 0)
        failed = true;
    if (failed) {
        snprintf(error, error_size, "cannot read %s (empty, unreadable, or over %u bytes)", path,
                 CERTIFICATE_FILE_MAX);
        free(buffer);
        return -1;
    }
    *data = buffer;
    *length = count;
    return 0;
}

/* Writes a copy of the certificate as the CA file clients pin, mode 0400. */
static int write_authority_file(const char *certificate_path, const char *authority_path,
                                char *error, size_t error_size)
{
    char *data = NULL;
    size_t length = 0;
    if (read_public_file(certificate_path, &data, &length, error, error_size) != 0)
        return -1;
    int result = kt_write_file_atomic(authority_path, data, length, 0400, error, error_size);
    free(data);
    return result;
}

static int make_read_only(const char *path, char *error, size_t error_size)
{
    if (chmod(path, 0400) == 0)
        return 0;
    snprintf(error, error_size, "cannot make %s read-only: %s", path, strerror(errno));
    return -1;
}

static int rename_into_place(const char *from, const char *to, char *error, size_t error_size)
{
    if (rename(from, to) == 0)
        return 0;
    snprintf(error, error_size, "cannot rename %s to %s: %s", from, to, strerror(errno));
    return -1;
}

static int create_self_signed(const tls_files *files, const char *host, char *error,
                              size_t error_size)
{
    if (kt_x509_self_signed(host, true, CERTIFICATE_VALID_DAYS, files->new_certificate,
                            files->new_key, error, error_size) != 0)
        return -1;
    if (make_read_only(files->new_certificate, error, error_size) != 0 ||
        make_read_only(files->new_key, error, error_size) != 0)
        return -1;
    if (rename_into_place(files->new_key, files->key, error, error_size) != 0 ||
        rename_into_place(files->new_certificate, files->certificate, error, error_size) != 0)
        return -1;
    /* kt_write_file_atomic fsyncs the directory, which also makes the renames above durable. */
    return write_authority_file(files->certificate, files->authority, error, error_size);
}

int ktadmin_tls_inspect(const kt_paths *paths, ktadmin_tls_outcome *planned, char *error,
                        size_t error_size)
{
    tls_files files;
    if (tls_files_resolve(paths, &files, error, error_size) != 0)
        return -1;
    int certificate = file_exists(files.certificate, error, error_size);
    int key = certificate < 0 ? -1 : file_exists(files.key, error, error_size);
    int authority = key < 0 ? -1 : file_exists(files.authority, error, error_size);
    if (authority < 0)
        return -1;
    if (certificate == 1 && key == 1)
        *planned = authority == 1 ? KTADMIN_TLS_KEPT : KTADMIN_TLS_CA_ADDED;
    else
        *planned = KTADMIN_TLS_CREATED;
    return 0;
}

int ktadmin_tls_ensure(const kt_paths *paths, const char *host, ktadmin_tls_outcome *outcome,
                       char *error, size_t error_size)
{
    tls_files files;
    if (tls_files_resolve(paths, &files, error, error_size) != 0 ||
        ktadmin_tls_inspect(paths, outcome, error, error_size) != 0)
        return -1;
    if (*outcome == KTADMIN_TLS_KEPT)
        return 0;
    if (*outcome == KTADMIN_TLS_CA_ADDED)
        return write_authority_file(files.certificate, files.authority, error, error_size);
    return create_self_signed(&files, host, error, error_size);
}
