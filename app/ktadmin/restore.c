/*
 * restore.c — `ktadmin restore FILE [--passphrase-file F | --secret-key F] [--pg-rootdir DIR]`:
 * brings a node back from a backup onto an empty home, e.g. a new host with the failed host's
 * name and address.
 *
 * Nothing changes unless everything can: the home's .keytrustee and database directory must be
 * missing or empty and keytrustee-db must not be running (its instance lock in run/ is taken and
 * held). The backup is unpacked into a private directory inside the home and checked in full
 * (backup_check.c) before anything is moved. Then .keytrustee is renamed into place and the
 * database files are moved into the database directory; a failure part way moves back what was
 * moved. Modes: directories 0700, files 0600, the .ssl files 0400; run as root, the files are
 * handed to the service user first, as `ktadmin init` does (ownership.c).
 *
 * What the node does next depends on the role the backup recorded:
 *   passive     the backup holds the database with its replication log and state as they were at
 *               the copy (app/keytrustee-db/backup.c). Started on the same address, keytrustee-db
 *               reconnects to its active (keytrustee-db.conf names it), and the handshake streams
 *               what the active committed since the backup; when the active no longer holds that
 *               history, it sends a full copy instead. Either way every key the active has —
 *               including those written after the backup — is on the passive again.
 *   standalone  the node is back as it was at the backup.
 *   active      the node is back as it was at the backup. If its passive still runs, the passive
 *               holds newer writes: the restored active refuses it (it is behind) instead of
 *               overwriting it, and the passive is the one to keep (`ktadmin promote`, to come).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/ktadmin/archive.h"

#define INSTANCE_LOCK_FILE "keytrustee-db.lock"
#define DATABASE_FILES_MAX 16u

static const char restore_usage[] =
    "usage: ktadmin [--confdir DIR] restore FILE [--passphrase-file FILE | --secret-key FILE]\n"
    "                                    [--pg-rootdir DIR]\n"
    "  --passphrase-file FILE  the passphrase the backup was made with\n"
    "  --secret-key FILE       the backup secret key (from `ktadmin backup-key generate`)\n"
    "  --pg-rootdir DIR        the database directory (default $KEYTRUSTEE_HOME/db)\n"
    "The home's .keytrustee and database directory must be missing or empty, and keytrustee-db\n"
    "stopped; the backup is checked in full before anything is written.\n";

typedef struct restore_options {
    const char *file;
    const char *passphrase_file;
    const char *secret_key_file;
    const char *rootdir;
} restore_options;

typedef struct restore_run {
    kt_paths paths;
    bool home_created;
    bool dbdir_created;
    int lock_fd;
    char staging[PATH_MAX];
    bool confdir_installed;
    char installed[DATABASE_FILES_MAX][KTADMIN_ENTRY_NAME_MAX + 1]; /* moved into the dbdir */
    size_t installed_count;
    ktadmin_backup_summary summary;
} restore_run;

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          restore_options *options)
{
    static const struct option long_options[] = {
        {"passphrase-file", required_argument, NULL, 'P'},
        {"secret-key", required_argument, NULL, 'S'},
        {"pg-rootdir", required_argument, NULL, 'r'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'P': options->passphrase_file = optarg; break;
        case 'S': options->secret_key_file = optarg; break;
        case 'r': options->rootdir = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(restore_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("restore", restore_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    if (optind + 1 != argc) {
        ktadmin_usage_error("restore", restore_usage, "give exactly one backup FILE");
        return KTADMIN_PARSE_ERROR;
    }
    options->file = argv[optind];
    if (options->passphrase_file != NULL && options->secret_key_file != NULL) {
        ktadmin_usage_error("restore", restore_usage,
                            "give --passphrase-file or --secret-key, not both");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

/* ---- the target must be empty --------------------------------------------------------------- */

/* 0 when `path` is missing or an empty directory; otherwise -1, reported. */
static int check_empty(const char *path, const char *what)
{
    DIR *directory = opendir(path);
    if (directory == NULL) {
        if (errno == ENOENT)
            return 0;
        ktadmin_fail("cannot read the %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    const struct dirent *entry;
    const char *found = NULL;
    while (found == NULL && (entry = readdir(directory)) != NULL)
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
            found = entry->d_name;
    if (found != NULL)
        ktadmin_fail("the %s %s is not empty (it holds %s); restore writes only into an empty "
                     "home. If this node's files are no longer needed, stop its services and "
                     "move %s aside", what, path, found, path);
    closedir(directory);
    return found != NULL ? -1 : 0;
}

/* Takes keytrustee-db's instance lock, so that it cannot start (or be running) meanwhile. */
static int take_instance_lock(restore_run *run)
{
    char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, run->paths.rundir, INSTANCE_LOCK_FILE) != 0) {
        ktadmin_fail("the path %s is too long", run->paths.rundir);
        return -1;
    }
    run->lock_fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (run->lock_fd < 0 && errno == ENOENT)
        return 0;
    if (run->lock_fd < 0) {
        ktadmin_fail("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(run->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        ktadmin_fail("keytrustee-db is running for this home (it holds %s); stop it first", path);
        return -1;
    }
    return 0;
}

static int prepare_home(restore_run *run)
{
    char error[PATH_MAX + 256];
    if (check_empty(run->paths.confdir, "configuration directory") != 0 ||
        check_empty(run->paths.dbdir, "database directory") != 0 || take_instance_lock(run) != 0)
        return -1;
    run->home_created = access(run->paths.home, F_OK) != 0;
    run->dbdir_created = access(run->paths.dbdir, F_OK) != 0;
    if (kt_private_directory(run->paths.home, error, sizeof error) != 0 ||
        ktadmin_private_temporary(run->paths.home, ".keytrustee-restore-", run->staging,
                                  sizeof run->staging, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    return 0;
}

/* ---- installing ----------------------------------------------------------------------------- */

/* Files 0600 (the .ssl files 0400), directories 0700, below `path`. */
static int set_modes(const char *path, bool in_ssl)
{
    struct stat status;
    if (lstat(path, &status) != 0)
        return -1;
    if (!S_ISDIR(status.st_mode))
        return chmod(path, in_ssl ? 0400 : 0600);
    if (chmod(path, 0700) != 0)
        return -1;
    DIR *directory = opendir(path);
    const struct dirent *entry;
    int result = directory != NULL ? 0 : -1;
    while (result == 0 && (entry = readdir(directory)) != NULL) {
        char child[PATH_MAX];
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        if (kt_path_join(child, sizeof child, path, entry->d_name) != 0)
            result = -1;
        else
            result = set_modes(child, in_ssl || strcmp(entry->d_name, ".ssl") == 0);
    }
    if (directory != NULL)
        closedir(directory);
    return result;
}

static int sync_directory(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int result = fsync(fd);
    return close(fd) == 0 && result == 0 ? 0 : -1;
}

static int install_confdir(restore_run *run)
{
    char from[PATH_MAX];
    if (kt_path_join(from, sizeof from, run->staging, ".keytrustee") != 0 ||
        set_modes(from, false) != 0) {
        ktadmin_fail("cannot set the modes of the restored .keytrustee: %s", strerror(errno));
        return -1;
    }
    if (rmdir(run->paths.confdir) != 0 && errno != ENOENT) {
        ktadmin_fail("cannot replace the empty %s: %s", run->paths.confdir, strerror(errno));
        return -1;
    }
    if (rename(from, run->paths.confdir) != 0) {
        ktadmin_fail("cannot move the restored .keytrustee to %s: %s", run->paths.confdir,
                     strerror(errno));
        return -1;
    }
    run->confdir_installed = true;
    return 0;
}

static int install_database_file(restore_run *run, const char *from_directory, const char *name)
{
    char from[PATH_MAX], to[PATH_MAX];
    if (kt_path_join(from, sizeof from, from_directory, name) != 0 ||
        kt_path_join(to, sizeof to, run->paths.dbdir, name) != 0 || chmod(from, 0600) != 0) {
        ktadmin_fail("cannot prepare %s/%s: %s", from_directory, name, strerror(errno));
        return -1;
    }
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) != 0) {
        ktadmin_fail("cannot move the restored %s into %s: %s%s", name, run->paths.dbdir,
                     strerror(errno), errno == EXDEV ? " (put --pg-rootdir on the same file "
                                                       "system as the home)" : "");
        return -1;
    }
    snprintf(run->installed[run->installed_count++], KTADMIN_ENTRY_NAME_MAX + 1, "%s", name);
    return 0;
}

static int install_database(restore_run *run)
{
    char from[PATH_MAX];
    if (kt_path_join(from, sizeof from, run->staging, "db") != 0)
        return -1;
    struct dirent **names = NULL;
    int count = scandir(from, &names, NULL, alphasort);
    int result = count >= 0 ? 0 : -1;
    for (int index = 0; index < count; index++) {
        const char *name = names[index]->d_name;
        bool is_file = strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
        if (result == 0 && is_file && run->installed_count >= DATABASE_FILES_MAX) {
            ktadmin_fail("the backup holds more than %u database files", DATABASE_FILES_MAX);
            result = -1;
        } else if (result == 0 && is_file) {
            result = install_database_file(run, from, name);
        }
        free(names[index]);
    }
    free(names);
    return result;
}

/* Moves back what was moved in, so a failed restore leaves the home as it found it. */
static void undo_install(restore_run *run)
{
    char back[PATH_MAX], path[PATH_MAX];
    for (size_t index = 0; index < run->installed_count; index++)
        if (kt_path_join(path, sizeof path, run->paths.dbdir, run->installed[index]) != 0 ||
            unlink(path) != 0)
            fprintf(stderr, "ktadmin: cannot remove %s/%s: %s\n", run->paths.dbdir,
                    run->installed[index], strerror(errno));
    if (run->confdir_installed &&
        (kt_path_join(back, sizeof back, run->staging, ".keytrustee-undo") != 0 ||
         rename(run->paths.confdir, back) != 0))
        fprintf(stderr, "ktadmin: cannot take back %s: remove it by hand\n", run->paths.confdir);
    if (run->dbdir_created)
        (void)rmdir(run->paths.dbdir);
}

/* The database and run directories, made before ownership is handed over (as root). */
static int make_directories(restore_run *run)
{
    char error[PATH_MAX + 256];
    if (kt_private_directory(run->paths.dbdir, error, sizeof error) != 0 ||
        kt_private_directory(run->paths.rundir, error, sizeof error) != 0) {
        ktadmin_fail("%s; nothing was changed", error);
        if (run->dbdir_created)
            (void)rmdir(run->paths.dbdir);
        return -1;
    }
    return 0;
}

static int install(restore_run *run)
{
    if (install_confdir(run) != 0 || install_database(run) != 0 ||
        sync_directory(run->paths.dbdir) != 0 || sync_directory(run->paths.home) != 0) {
        undo_install(run);
        return -1;
    }
    return 0;
}

/* ---- the command ---------------------------------------------------------------------------- */

static void report(const restore_run *run, const char *file)
{
    const ktadmin_backup_summary *summary = &run->summary;
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    printf("Restored the %s node %s (%s, server %s) from %s: transaction %lld of epoch %lld, "
           "%lld deposits\n", summary->role, summary->host, summary->external_address,
           summary->server_fingerprint, file, (long long)summary->txid, (long long)summary->epoch,
           summary->deposits);
    if (host[0] != '\0' && strcmp(host, summary->host) != 0)
        printf("Note: the backup is of host %s and this is %s; clients and the peer expect the "
               "node under its old name and address\n", summary->host, host);
    if (strcmp(summary->role, "passive") == 0)
        printf("Next: start keytrustee-db, then keytrusteed. The passive reconnects to its active "
               "and catches up on everything written since the backup (or receives a full "
               "copy); `ktadmin status` shows it in_sync when done.\n");
    else if (strcmp(summary->role, "active") == 0)
        printf("Warning: this was the active. If its passive still runs, it holds writes newer "
               "than this backup: the restored active will refuse it rather than overwrite them. "
               "Keep the passive's data (make it the active) instead of starting this node.\n");
    else
        printf("Next: start keytrustee-db, then keytrusteed.\n");
}

static int run_restore(restore_run *run, const restore_options *options,
                       const ktadmin_backup_keys *keys)
{
    char error[PATH_MAX * 2 + 512];
    if (prepare_home(run) != 0)
        return -1;
    if (ktadmin_backup_unpack(options->file, keys, run->staging, &run->summary, error,
                              sizeof error) != 0) {
        ktadmin_fail("%s; nothing was changed", error);
        return -1;
    }
    if (make_directories(run) != 0)
        return -1;
    /* As root, the unpacked files (inside the home) go to the service user before they move. */
    if (ktadmin_hand_to_service_user(&run->paths) != 0) {
        ktadmin_fail("nothing was installed");
        return -1;
    }
    return install(run);
}

int ktadmin_restore(ktadmin_context *context, int argc, char **argv)
{
    restore_options options = {.file = NULL};
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    restore_run run = {.lock_fd = -1};
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&run.paths, context->confdir, options.rootdir, error,
                         sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    ktadmin_backup_keys keys;
    if (ktadmin_opening_keys(options.passphrase_file, options.secret_key_file, &keys) != 0)
        return KTADMIN_EXIT_FAILURE;
    int result = run_restore(&run, &options, &keys);
    ktadmin_backup_keys_clear(&keys);
    ktadmin_remove_tree(run.staging);
    if (result != 0 && run.home_created)
        (void)rmdir(run.paths.home);
    if (run.lock_fd >= 0)
        (void)close(run.lock_fd);
    if (result != 0)
        return KTADMIN_EXIT_FAILURE;
    report(&run, options.file);
    return KTADMIN_EXIT_OK;
}
