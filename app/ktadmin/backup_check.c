/*
 * backup_check.c — what `ktadmin backup verify` and `ktadmin restore` both do first: unpack a
 * backup file into a private directory and check all of it, so that restore writes nothing
 * until the whole backup is known to be good.
 *
 * The checks, in order: the file authenticates (archive_read.c); its manifest is a keytrustee
 * manifest of a format this ktadmin reads; the files unpacked are exactly those the manifest lists,
 * each with the listed size and BLAKE2b-256; the files a node cannot run without are there; the
 * server key file loads and has the fingerprint the manifest names; the database opens with
 * storage/ at a schema this keytrustee knows, passes PRAGMA integrity_check and can be counted.
 *
 * Also here: the private temporary directories both commands unpack into, and their removal.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktadmin/archive.h"
#include "storage/storage.h"

#define MANIFEST_FORMAT "keytrustee-backup"

static const char *const required_files[] = {
    ".keytrustee/" KT_SERVER_KEY_FILE,
    ".keytrustee/" KT_CONF_FILE,
    "db/" KT_DB_FILE_NAME,
    "db/" KT_DB_CONF_FILE,
};

/* ---- temporary directories ------------------------------------------------------------------ */

int ktadmin_private_temporary(const char *parent, const char *prefix, char *out, size_t out_size,
                              char *error, size_t error_size)
{
    int written = snprintf(out, out_size, "%s/%sXXXXXX", parent, prefix);
    if (written < 0 || (size_t)written >= out_size) {
        snprintf(error, error_size, "the path %s is too long", parent);
        out[0] = '\0';
        return -1;
    }
    if (mkdtemp(out) == NULL) {
        snprintf(error, error_size, "cannot create a private directory in %s: %s", parent,
                 strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

void ktadmin_remove_tree(const char *path)
{
    struct stat status;
    if (path == NULL || path[0] == '\0' || lstat(path, &status) != 0)
        return;
    if (!S_ISDIR(status.st_mode)) {
        if (unlink(path) != 0)
            fprintf(stderr, "ktadmin: cannot remove %s: %s\n", path, strerror(errno));
        return;
    }
    DIR *directory = opendir(path);
    const struct dirent *entry;
    while (directory != NULL && (entry = readdir(directory)) != NULL) {
        char child[PATH_MAX];
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0 ||
            kt_path_join(child, sizeof child, path, entry->d_name) != 0)
            continue;
        ktadmin_remove_tree(child);
    }
    if (directory != NULL)
        closedir(directory);
    if (rmdir(path) != 0)
        fprintf(stderr, "ktadmin: cannot remove %s: %s\n", path, strerror(errno));
}

/* ---- the options that open a backup --------------------------------------------------------- */

int ktadmin_opening_keys(const char *passphrase_file, const char *secret_key_file,
                         ktadmin_backup_keys *keys)
{
    char error[PATH_MAX + 256];
    memset(keys, 0, sizeof *keys);
    if (passphrase_file != NULL &&
        ktadmin_read_passphrase(passphrase_file, &keys->passphrase, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (secret_key_file != NULL &&
        ktadmin_read_secret_key(secret_key_file, &keys->secret_key, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        ktadmin_backup_keys_clear(keys);
        return -1;
    }
    return 0;
}

/* ---- the manifest --------------------------------------------------------------------------- */

static const ktadmin_archive_entry *find_entry(const ktadmin_archive_contents *contents,
                                               const char *name)
{
    for (size_t index = 0; index < contents->file_count; index++)
        if (strcmp(contents->files[index].name, name) == 0)
            return &contents->files[index];
    return NULL;
}

/* One manifest "files" element against the unpacked entry of that name. */
static int check_listed_file(const json_t *listed, const ktadmin_archive_contents *contents,
                             const char *file, char *error, size_t error_size)
{
    const char *name = json_string_value(json_object_get(listed, "name"));
    const char *digest = json_string_value(json_object_get(listed, "blake2b"));
    const json_t *size = json_object_get(listed, "size");
    const ktadmin_archive_entry *entry = name != NULL ? find_entry(contents, name) : NULL;
    char expected[2 * KT_HASH_BYTES + 1];
    if (name == NULL || digest == NULL || !json_is_integer(size)) {
        snprintf(error, error_size, "the manifest of %s lists a file without name, size or "
                 "checksum", file);
        return -1;
    }
    if (entry == NULL) {
        snprintf(error, error_size, "%s does not hold %s, which its manifest lists", file, name);
        return -1;
    }
    (void)kt_hex_encode(expected, sizeof expected, entry->hash, sizeof entry->hash);
    if ((uint64_t)json_integer_value(size) != entry->size || strcasecmp(digest, expected) != 0) {
        snprintf(error, error_size, "%s in %s does not match the manifest's size and checksum",
                 name, file);
        return -1;
    }
    return 0;
}

static int check_manifest(const ktadmin_archive_contents *contents, const char *file,
                          char *error, size_t error_size)
{
    const json_t *manifest = contents->manifest;
    const json_t *files = json_object_get(manifest, "files");
    const char *format = json_string_value(json_object_get(manifest, "format"));
    if (format == NULL || strcmp(format, MANIFEST_FORMAT) != 0 ||
        json_integer_value(json_object_get(manifest, "format_version")) != 1 ||
        !json_is_array(files)) {
        snprintf(error, error_size, "%s does not carry a keytrustee backup manifest", file);
        return -1;
    }
    if (json_array_size(files) != contents->file_count) {
        snprintf(error, error_size, "%s holds %zu files but its manifest lists %zu", file,
                 contents->file_count, json_array_size(files));
        return -1;
    }
    size_t index;
    const json_t *listed;
    json_array_foreach(files, index, listed)
        if (check_listed_file(listed, contents, file, error, error_size) != 0)
            return -1;
    for (size_t required = 0; required < sizeof required_files / sizeof required_files[0];
         required++)
        if (find_entry(contents, required_files[required]) == NULL) {
            snprintf(error, error_size, "%s lacks %s, which a node cannot run without", file,
                     required_files[required]);
            return -1;
        }
    return 0;
}

static void copy_text(char *out, size_t size, const json_t *manifest, const char *key)
{
    const char *value = json_string_value(json_object_get(manifest, key));
    snprintf(out, size, "%s", value != NULL ? value : "");
}

static void read_summary(const json_t *manifest, ktadmin_backup_summary *summary)
{
    copy_text(summary->host, sizeof summary->host, manifest, "host");
    copy_text(summary->role, sizeof summary->role, manifest, "role");
    copy_text(summary->external_address, sizeof summary->external_address, manifest,
              "external_address");
    copy_text(summary->server_fingerprint, sizeof summary->server_fingerprint, manifest,
              "server_fingerprint");
    summary->time = json_integer_value(json_object_get(manifest, "time"));
    summary->epoch = json_integer_value(json_object_get(manifest, "epoch"));
    summary->txid =
        json_integer_value(json_object_get(json_object_get(manifest, "position"), "txid"));
    summary->schema_version = (int)json_integer_value(json_object_get(manifest,
                                                                      "schema_version"));
}

/* ---- the server key and the database -------------------------------------------------------- */

static int check_server_key(const char *directory, const ktadmin_backup_summary *summary,
                            const char *file, char *error, size_t error_size)
{
    char path[PATH_MAX], detail[PATH_MAX + 256];
    kt_server_keys *keys = NULL;
    if (kt_path_join(path, sizeof path, directory, ".keytrustee/" KT_SERVER_KEY_FILE) != 0 ||
        kt_server_keys_load(path, &keys, detail, sizeof detail) != 0) {
        snprintf(error, error_size, "the server key in %s is unusable: %s", file, detail);
        return -1;
    }
    int result = strcmp(keys->fingerprint, summary->server_fingerprint) == 0 ? 0 : -1;
    if (result != 0)
        snprintf(error, error_size, "the server key in %s has fingerprint %s, not the %s its "
                 "manifest names", file, keys->fingerprint, summary->server_fingerprint);
    kt_server_keys_free(keys);
    return result;
}

static void remove_sqlite_companions(const char *database)
{
    static const char *const suffixes[] = {"-wal", "-shm", "-journal"};
    for (size_t index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s%s", database, suffixes[index]) < (int)sizeof path &&
            unlink(path) != 0 && errno != ENOENT)
            fprintf(stderr, "ktadmin: cannot remove %s: %s\n", path, strerror(errno));
    }
}

static int examine_database(kt_store *store, ktadmin_backup_summary *summary, const char *file,
                            char *error, size_t error_size)
{
    kt_store_counts counts;
    if (kt_store_integrity_check(store) != KT_STORE_OK) {
        snprintf(error, error_size, "the database in %s fails integrity_check: %s", file,
                 kt_store_error_message(store));
        return -1;
    }
    if (kt_store_schema_version(store) != summary->schema_version) {
        snprintf(error, error_size, "the database in %s has schema %d, not the %d its manifest "
                 "names", file, kt_store_schema_version(store), summary->schema_version);
        return -1;
    }
    if (kt_store_count(store, &counts) != KT_STORE_OK) {
        snprintf(error, error_size, "the database in %s cannot be read: %s", file,
                 kt_store_error_message(store));
        return -1;
    }
    summary->orgs = counts.orgs;
    summary->clients = counts.clients;
    summary->deposits = counts.deposits;
    return 0;
}

static int check_database(const char *directory, ktadmin_backup_summary *summary,
                          const char *file, char *error, size_t error_size)
{
    char path[PATH_MAX], detail[PATH_MAX + 256];
    kt_store *store = NULL;
    kt_store_options options = {.writer = false};
    if (kt_path_join(path, sizeof path, directory, "db/" KT_DB_FILE_NAME) != 0) {
        snprintf(error, error_size, "the path %s is too long", directory);
        return -1;
    }
    int result = kt_store_open(&store, path, &options, detail, sizeof detail);
    if (result != 0)
        snprintf(error, error_size, "the database in %s cannot be opened: %s", file, detail);
    else
        result = examine_database(store, summary, file, error, error_size);
    kt_store_close(store);
    remove_sqlite_companions(path); /* the reader's -wal and -shm are not part of the copy */
    return result;
}

int ktadmin_backup_unpack(const char *file, const ktadmin_backup_keys *keys,
                          const char *directory, ktadmin_backup_summary *summary, char *error,
                          size_t error_size)
{
    ktadmin_archive_contents contents;
    memset(summary, 0, sizeof *summary);
    int result = ktadmin_archive_extract(file, keys, directory, &contents, error, error_size);
    if (result == 0)
        result = check_manifest(&contents, file, error, error_size);
    if (result == 0) {
        read_summary(contents.manifest, summary);
        summary->protection = contents.protection;
        result = check_server_key(directory, summary, file, error, error_size);
    }
    if (result == 0)
        result = check_database(directory, summary, file, error, error_size);
    ktadmin_archive_contents_clear(&contents);
    return result;
}
