/*
 * backup_write.c — packing one backup file: keytrustee-db's copy of the database and replication
 * state, keytrustee-db.conf, and every regular file under .keytrustee, then the manifest.
 *
 * The file is written under a temporary name (".keytrustee-backup-XXXXXX.tmp", 0600) in the output
 * directory, fsynced, renamed to keytrustee-backup-YYYYMMDDTHHMMSS.mmmZ-HOST.ktbackup without ever
 * replacing a file, and the directory is fsynced: a crash leaves either no backup or a whole one,
 * plus at most a temporary file that the next run removes. Names begin with the UTC time, so they
 * sort oldest first (roll relies on it).
 *
 * Files under .keytrustee whose names a backup may not carry (archive.h: letters, digits, '.',
 * '_', '-') and anything that is not a regular file or directory are skipped with a warning, so
 * that a stray file never stops the hourly backup.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "app/ktadmin/backup.h"

#ifndef KT_VERSION
#define KT_VERSION "unknown"
#endif

#define TEMPORARY_PREFIX ".keytrustee-backup-"
#define TEMPORARY_SUFFIX ".tmp"
#define TREE_DEPTH_MAX   3

/* What is being written. */
typedef struct backup_file {
    ktadmin_backup_run *run;
    ktadmin_archive_writer *writer;
    ktadmin_archive_entry entries[KTADMIN_ARCHIVE_FILES_MAX];
    size_t count;
    char temporary[PATH_MAX];
    int fd;
} backup_file;

static int add_entry(backup_file *file, const char *name, const char *path, char *error,
                     size_t error_size)
{
    if (file->count >= KTADMIN_ARCHIVE_FILES_MAX) {
        snprintf(error, error_size, "more than %u files to back up; clean up %s",
                 KTADMIN_ARCHIVE_FILES_MAX, file->run->paths.confdir);
        return -1;
    }
    if (ktadmin_archive_add_file(file->writer, name, path, &file->entries[file->count], error,
                                 error_size) != 0)
        return -1;
    file->count++;
    return 0;
}

/* ---- .keytrustee ---------------------------------------------------------------------------- */

static int add_tree(backup_file *file, const char *path, const char *name, int depth,
                    char *error, size_t error_size);

static int add_tree_entry(backup_file *file, const char *directory, const char *prefix,
                          const char *child, int depth, char *error, size_t error_size)
{
    char path[PATH_MAX], name[PATH_MAX];
    struct stat status;
    if (kt_path_join(path, sizeof path, directory, child) != 0 ||
        kt_path_join(name, sizeof name, prefix, child) != 0) {
        snprintf(error, error_size, "the path %s/%s is too long", directory, child);
        return -1;
    }
    if (lstat(path, &status) != 0) {
        snprintf(error, error_size, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(status.st_mode))
        return add_tree(file, path, name, depth + 1, error, error_size);
    if (!S_ISREG(status.st_mode) || !ktadmin_entry_name_valid(name)) {
        fprintf(stderr, "ktadmin: warning: not backing up %s (%s)\n", path,
                S_ISREG(status.st_mode) ? "its name has unusual characters"
                                        : "not a regular file");
        return 0;
    }
    return add_entry(file, name, path, error, error_size);
}

static int add_tree(backup_file *file, const char *path, const char *name, int depth,
                    char *error, size_t error_size)
{
    if (depth > TREE_DEPTH_MAX) {
        fprintf(stderr, "ktadmin: warning: not backing up %s (nested too deep)\n", path);
        return 0;
    }
    struct dirent **children = NULL;
    int count = scandir(path, &children, NULL, alphasort);
    if (count < 0) {
        snprintf(error, error_size, "cannot list %s: %s", path, strerror(errno));
        return -1;
    }
    int result = 0;
    for (int index = 0; index < count; index++) {
        const char *child = children[index]->d_name;
        if (result == 0 && strcmp(child, ".") != 0 && strcmp(child, "..") != 0)
            result = add_tree_entry(file, path, name, child, depth, error, error_size);
        free(children[index]);
    }
    free(children);
    return result;
}

/* ---- the database directory ----------------------------------------------------------------- */

/* The db directory is where keytrustee-db made its copy: the copy directory's parent. */
static int database_directory(const ktadmin_backup_run *run, char *out, size_t out_size)
{
    const char *slash = strrchr(run->copy_directory, '/');
    if (slash == NULL || slash == run->copy_directory ||
        (size_t)(slash - run->copy_directory) >= out_size)
        return -1;
    memcpy(out, run->copy_directory, (size_t)(slash - run->copy_directory));
    out[slash - run->copy_directory] = '\0';
    return 0;
}

static int add_database_files(backup_file *file, char *error, size_t error_size)
{
    char dbdir[PATH_MAX], path[PATH_MAX], name[PATH_MAX];
    const json_t *files = json_object_get(file->run->copy, "files");
    if (database_directory(file->run, dbdir, sizeof dbdir) != 0 || !json_is_array(files)) {
        snprintf(error, error_size, "keytrustee-db's backup answer is malformed");
        return -1;
    }
    if (kt_path_join(path, sizeof path, dbdir, KT_DB_CONF_FILE) != 0 ||
        add_entry(file, "db/" KT_DB_CONF_FILE, path, error, error_size) != 0)
        return -1;
    size_t index;
    const json_t *listed;
    json_array_foreach(files, index, listed) {
        const char *copied = json_string_value(listed);
        if (copied == NULL || strchr(copied, '/') != NULL ||
            kt_path_join(path, sizeof path, file->run->copy_directory, copied) != 0 ||
            kt_path_join(name, sizeof name, "db", copied) != 0) {
            snprintf(error, error_size, "keytrustee-db's backup answer names a bad file");
            return -1;
        }
        if (add_entry(file, name, path, error, error_size) != 0)
            return -1;
    }
    return 0;
}

/* ---- the manifest --------------------------------------------------------------------------- */

static json_t *files_array(const backup_file *file)
{
    json_t *array = json_array();
    for (size_t index = 0; array != NULL && index < file->count; index++) {
        const ktadmin_archive_entry *entry = &file->entries[index];
        char digest[2 * KT_HASH_BYTES + 1], mode[8];
        (void)kt_hex_encode(digest, sizeof digest, entry->hash, sizeof entry->hash);
        snprintf(mode, sizeof mode, "%04o", (unsigned)entry->mode);
        json_t *object = json_pack("{s:s, s:I, s:s, s:s}", "name", entry->name, "size",
                                   (json_int_t)entry->size, "mode", mode, "blake2b", digest);
        if (object == NULL || json_array_append_new(array, object) != 0) {
            json_decref(array);
            return NULL;
        }
    }
    return array;
}

static void iso_time(int64_t when, char out[32])
{
    time_t seconds = (time_t)when;
    struct tm parts;
    if (gmtime_r(&seconds, &parts) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &parts) == 0)
        snprintf(out, 32, "%lld", (long long)when);
}

/* Host, external address and server fingerprint: what says which node this backup is of. */
static int node_identity(const kt_paths *paths, json_t *manifest, char *error,
                         size_t error_size)
{
    char path[PATH_MAX], host[256];
    kt_config *config = NULL;
    kt_server_keys *keys = NULL;
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    if (kt_path_join(path, sizeof path, paths->confdir, KT_CONF_FILE) != 0 ||
        kt_config_load(path, false, &config, error, error_size) != 0)
        return -1;
    int result = json_object_set_new(manifest, "host", json_string(host)) |
                 json_object_set_new(manifest, "external_address",
                                     json_string(kt_config_get(config, "external_address", "")));
    kt_config_free(config);
    if (kt_path_join(path, sizeof path, paths->confdir, KT_SERVER_KEY_FILE) != 0 ||
        kt_server_keys_load(path, &keys, error, error_size) != 0)
        return -1;
    result |= json_object_set_new(manifest, "server_fingerprint", json_string(keys->fingerprint));
    kt_server_keys_free(keys);
    return result == 0 ? 0 : -1;
}

static char *manifest_text(const backup_file *file, char *error, size_t error_size)
{
    const json_t *copy = file->run->copy;
    char created[32];
    iso_time(json_integer_value(json_object_get(copy, "time")), created);
    json_t *manifest = json_pack(
        "{s:s, s:i, s:O, s:O, s:O, s:O, s:s, s:s, s:O, s:O, s:s}", "format", "keytrustee-backup",
        "format_version", 1, "role", json_object_get(copy, "role"), "epoch",
        json_object_get(copy, "epoch"), "position", json_object_get(copy, "position"), "time",
        json_object_get(copy, "time"), "created", created, "keytrustee_version", KT_VERSION,
        "schema_version", json_object_get(copy, "schema_version"), "sqlite_version",
        json_object_get(copy, "sqlite_version"), "protection",
        ktadmin_protection_name(file->run->keys.protection));
    char *text = NULL;
    if (manifest == NULL || node_identity(&file->run->paths, manifest, error, error_size) != 0) {
        if (manifest == NULL)
            snprintf(error, error_size, "keytrustee-db's backup answer is incomplete");
    } else if (file->run->keys.protection == KTADMIN_BACKUP_KEY) {
        unsigned char id[KT_SEAL_KEY_ID_BYTES];
        char id_text[KTADMIN_KEY_ID_CHARS + 1];
        kt_seal_key_id(id, file->run->keys.public_key);
        ktadmin_key_id_text(id, id_text);
        (void)json_object_set_new(manifest, "backup_key_id", json_string(id_text));
    }
    if (manifest != NULL && error[0] == '\0' &&
        json_object_set_new(manifest, "files", files_array(file)) == 0)
        text = json_dumps(manifest, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (text == NULL && error[0] == '\0')
        snprintf(error, error_size, "out of memory writing the manifest");
    json_decref(manifest);
    return text;
}

/* ---- the file ------------------------------------------------------------------------------- */

/* keytrustee-backup-YYYYMMDDTHHMMSS.mmmZ-HOST.ktbackup */
static int final_name(ktadmin_backup_run *run, char *error, size_t error_size)
{
    struct timeval now;
    struct tm parts;
    char stamp[32], host[64];
    if (gettimeofday(&now, NULL) != 0 || gmtime_r(&now.tv_sec, &parts) == NULL ||
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &parts) == 0)
        snprintf(stamp, sizeof stamp, "%lld", (long long)time(NULL));
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = '\0';
    for (char *cursor = host; *cursor != '\0'; cursor++)
        if (!((*cursor >= 'a' && *cursor <= 'z') || (*cursor >= 'A' && *cursor <= 'Z') ||
              (*cursor >= '0' && *cursor <= '9') || *cursor == '-' || *cursor == '.'))
            *cursor = '_';
    int written = snprintf(run->final_path, sizeof run->final_path, "%s/%s%s.%03ldZ-%s%s",
                           run->output, KTADMIN_BACKUP_PREFIX, stamp,
                           (long)(now.tv_usec / 1000), host, KTADMIN_BACKUP_EXTENSION);
    if (written < 0 || (size_t)written >= sizeof run->final_path) {
        snprintf(error, error_size, "the output path %s is too long", run->output);
        return -1;
    }
    return 0;
}

static int open_temporary(backup_file *file, char *error, size_t error_size)
{
    int written = snprintf(file->temporary, sizeof file->temporary, "%s/%sXXXXXX%s",
                           file->run->output, TEMPORARY_PREFIX, TEMPORARY_SUFFIX);
    if (written < 0 || (size_t)written >= sizeof file->temporary) {
        snprintf(error, error_size, "the output path %s is too long", file->run->output);
        file->temporary[0] = '\0';
        return -1;
    }
    file->fd = mkostemps(file->temporary, (int)strlen(TEMPORARY_SUFFIX), O_CLOEXEC);
    if (file->fd < 0) {
        snprintf(error, error_size, "cannot create a file in %s: %s", file->run->output,
                 strerror(errno));
        file->temporary[0] = '\0';
        return -1;
    }
    return 0;
}

static int sync_directory(const char *path, char *error, size_t error_size)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(error, error_size, "cannot flush the directory %s: %s", path, strerror(errno));
        if (fd >= 0)
            (void)close(fd);
        return -1;
    }
    return close(fd) == 0 ? 0 : -1;
}

/* fsync, close, rename without replacing, fsync of the directory. */
static int publish(backup_file *file, char *error, size_t error_size)
{
    ktadmin_backup_run *run = file->run;
    int synced = fsync(file->fd);
    int closed = close(file->fd);
    file->fd = -1;
    if (synced != 0 || closed != 0) {
        snprintf(error, error_size, "cannot write %s: %s", file->temporary, strerror(errno));
        return -1;
    }
    if (final_name(run, error, error_size) != 0)
        return -1;
    if (renameat2(AT_FDCWD, file->temporary, AT_FDCWD, run->final_path, RENAME_NOREPLACE) != 0) {
        snprintf(error, error_size, "cannot rename the backup to %s: %s", run->final_path,
                 strerror(errno));
        return -1;
    }
    file->temporary[0] = '\0';
    return sync_directory(run->output, error, error_size);
}

static int write_contents(backup_file *file, char *error, size_t error_size)
{
    if (ktadmin_archive_create(&file->writer, file->fd, &file->run->keys, error, error_size) != 0 ||
        add_tree(file, file->run->paths.confdir, ".keytrustee", 1, error, error_size) != 0 ||
        add_database_files(file, error, error_size) != 0)
        return -1;
    char *manifest = manifest_text(file, error, error_size);
    int result = manifest != NULL
                     ? ktadmin_archive_finish(file->writer, manifest, error, error_size)
                     : -1;
    free(manifest);
    return result;
}

int ktadmin_backup_write(ktadmin_backup_run *run, char *error, size_t error_size)
{
    backup_file file = {.run = run, .fd = -1};
    error[0] = '\0';
    int result = open_temporary(&file, error, error_size);
    if (result == 0)
        result = write_contents(&file, error, error_size);
    if (result == 0)
        result = publish(&file, error, error_size);
    ktadmin_archive_writer_free(file.writer);
    if (file.fd >= 0)
        (void)close(file.fd);
    if (file.temporary[0] != '\0' && unlink(file.temporary) != 0)
        fprintf(stderr, "ktadmin: cannot remove %s: %s\n", file.temporary, strerror(errno));
    return result;
}

/* ---- leftovers of runs that died ------------------------------------------------------------ */

static bool is_copy_name(const char *name)
{
    return strncmp(name, "backup-", 7) == 0 && strlen(name) == 13;
}

static bool is_temporary_name(const char *name)
{
    size_t length = strlen(name), prefix = strlen(TEMPORARY_PREFIX);
    return length > prefix && strncmp(name, TEMPORARY_PREFIX, prefix) == 0 &&
           strcmp(name + length - strlen(TEMPORARY_SUFFIX), TEMPORARY_SUFFIX) == 0;
}

static void remove_matching(const char *directory, bool (*matches)(const char *))
{
    DIR *handle = opendir(directory);
    const struct dirent *entry;
    while (handle != NULL && (entry = readdir(handle)) != NULL) {
        char path[PATH_MAX];
        if (matches(entry->d_name) &&
            kt_path_join(path, sizeof path, directory, entry->d_name) == 0)
            ktadmin_remove_tree(path);
    }
    if (handle != NULL)
        closedir(handle);
}

/* Runs under the backup lock, after this run's own copy was removed: any copy or temporary file
 * left is from a run that died. */
void ktadmin_backup_remove_stale_copies(const ktadmin_backup_run *run)
{
    char dbdir[PATH_MAX];
    if (database_directory(run, dbdir, sizeof dbdir) == 0)
        remove_matching(dbdir, is_copy_name);
    remove_matching(run->output, is_temporary_name);
}
