/*
 * backup.c — `ktadmin backup`: a hot backup of this node, active or passive, into one file.
 *
 *   ktadmin backup [--output DIR] [--roll N] [--recipient FILE | --passphrase-file FILE |
 *                  --cleartext] [-q] [-v]
 *   ktadmin backup verify FILE [--passphrase-file FILE | --secret-key FILE]   (backup_verify.c)
 *
 * Steps: keytrustee-db writes a consistent copy of the database and its replication state into a
 * private directory beside the database (the backup op, app/keytrustee-db/backup.c) while writes go
 * on; this command packs that copy, keytrustee-db.conf and everything in .keytrustee (server key,
 * keytrustee.conf, .ssl) into a temporary file in the output directory, with a manifest, encrypted
 * (archive_write.c); fsyncs it, renames it to keytrustee-backup-TIME-HOST.ktbackup, fsyncs the
 * directory, removes the copy, keeps the newest --roll files, records the outcome in
 * $KEYTRUSTEE_HOME/last-backup.json (shown by the status op), and prints the path.
 *
 * Protection: --recipient FILE (a backup public key; the default is .keytrustee/
 * backup-recipient.pub when it exists), --passphrase-file FILE (Argon2id), or --cleartext, which
 * is never chosen for the operator and warns. Backups run one at a time per node (a lock in run/).
 *
 * The manifest (JSON, the archive's last entry):
 *   {"format": "keytrustee-backup", "format_version": 1, "host", "external_address", "role",
 *    "epoch", "position": {epoch, txid, hash}, "time", "created" (ISO 8601), "keytrustee_version",
 *    "schema_version", "sqlite_version", "server_fingerprint", "protection", "backup_key_id" (when
 *    encrypted to a backup key), "files": [{"name", "size", "mode", "blake2b"}]}
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
#include "app/ktadmin/backup.h"

#define BACKUP_OP_TIMEOUT_MS (30 * 60 * 1000)
#define DEFAULT_ROLL 10L
#define ROLL_MAX 100000L

static const char backup_usage[] =
    "usage: ktadmin [--confdir DIR] backup [--output DIR] [--roll N]\n"
    "                 [--recipient FILE | --passphrase-file FILE | --cleartext] [-q] [-v]\n"
    "       ktadmin [--confdir DIR] backup verify FILE [--passphrase-file FILE | --secret-key "
    "FILE]\n"
    "  --output DIR            where backups go (default $KEYTRUSTEE_HOME/backups, made 0700)\n"
    "  --roll N                keep the newest N backups there, delete older ones (default 10;\n"
    "                          0 keeps all)\n"
    "  --recipient FILE        encrypt to this backup public key (`ktadmin backup-key generate`);\n"
    "                          the default is .keytrustee/" KTADMIN_DEFAULT_RECIPIENT_FILE
    " when it exists\n"
    "  --passphrase-file FILE  encrypt with the passphrase in FILE (Argon2id)\n"
    "  --cleartext             do not encrypt: the file then holds the server key and every\n"
    "                          deposit readable by whoever can read it\n"
    "  -q                      print nothing but errors\n"
    "  -v                      also describe the backup (on standard error)\n"
    "Prints the path of the backup file it wrote.\n";

/* ---- options -------------------------------------------------------------------------------- */

static ktadmin_parse_result check_options(const ktadmin_backup_options *options)
{
    int chosen = (options->recipient != NULL) + (options->passphrase_file != NULL) +
                 (options->cleartext ? 1 : 0);
    if (chosen > 1) {
        ktadmin_usage_error("backup", backup_usage, "choose one of --recipient, "
                            "--passphrase-file and --cleartext");
        return KTADMIN_PARSE_ERROR;
    }
    if (options->quiet && options->verbose) {
        ktadmin_usage_error("backup", backup_usage, "-q and -v cannot be used together");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static int parse_roll(const char *text, long *roll)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0 || value > ROLL_MAX)
        return -1;
    *roll = value;
    return 0;
}

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          ktadmin_backup_options *options)
{
    static const struct option long_options[] = {
        {"output", required_argument, NULL, 'o'},
        {"roll", required_argument, NULL, 'r'},
        {"recipient", required_argument, NULL, 'R'},
        {"passphrase-file", required_argument, NULL, 'P'},
        {"cleartext", no_argument, NULL, 'c'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":hqv", long_options, NULL)) != -1) {
        switch (result) {
        case 'o': options->output = optarg; break;
        case 'R': options->recipient = optarg; break;
        case 'P': options->passphrase_file = optarg; break;
        case 'c': options->cleartext = true; break;
        case 'q': options->quiet = true; break;
        case 'v': options->verbose = true; break;
        case 'C': context->confdir = optarg; break;
        case 'r':
            if (parse_roll(optarg, &options->roll) == 0)
                break;
            ktadmin_usage_error("backup", backup_usage, "--roll '%s' is not a number from 0 to "
                                "%ld", optarg, ROLL_MAX);
            return KTADMIN_PARSE_ERROR;
        case 'h': fputs(backup_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("backup", backup_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    if (ktadmin_no_operands("backup", backup_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_PARSE_ERROR;
    return check_options(options);
}

/* ---- preparing ------------------------------------------------------------------------------ */

/* The protection the options ask for, or the default recipient, or an explanation. */
static int load_protection(const ktadmin_backup_options *options, const kt_paths *paths,
                           ktadmin_backup_keys *keys, char *error, size_t error_size)
{
    char default_recipient[PATH_MAX];
    memset(keys, 0, sizeof *keys);
    if (options->cleartext) {
        keys->protection = KTADMIN_CLEARTEXT;
        return 0;
    }
    if (options->passphrase_file != NULL) {
        keys->protection = KTADMIN_PASSPHRASE;
        return ktadmin_read_passphrase(options->passphrase_file, &keys->passphrase, error,
                                       error_size);
    }
    const char *recipient = options->recipient;
    if (recipient == NULL &&
        kt_path_join(default_recipient, sizeof default_recipient, paths->confdir,
                     KTADMIN_DEFAULT_RECIPIENT_FILE) == 0 &&
        access(default_recipient, F_OK) == 0)
        recipient = default_recipient;
    if (recipient == NULL) {
        snprintf(error, error_size, "say how to protect the backup: --recipient FILE (a backup "
                 "public key from `ktadmin backup-key generate`, or install one as %s/%s), "
                 "--passphrase-file FILE, or --cleartext", paths->confdir,
                 KTADMIN_DEFAULT_RECIPIENT_FILE);
        return -1;
    }
    keys->protection = KTADMIN_BACKUP_KEY;
    keys->has_public_key = true;
    return ktadmin_read_public_key(recipient, keys->public_key, error, error_size);
}

static int prepare_output(const ktadmin_backup_options *options, ktadmin_backup_run *run,
                          char *error, size_t error_size)
{
    if (options->output != NULL) {
        if (snprintf(run->output, sizeof run->output, "%s", options->output) >=
            (int)sizeof run->output) {
            snprintf(error, error_size, "--output: the path is too long");
            return -1;
        }
    } else if (kt_path_join(run->output, sizeof run->output, run->paths.home, "backups") != 0) {
        snprintf(error, error_size, "the path %s is too long", run->paths.home);
        return -1;
    }
    return kt_private_directory(run->output, error, error_size);
}

/* One backup at a time per node: a lock file in run/, held until the process ends. */
static int take_lock(const kt_paths *paths, char *error, size_t error_size)
{
    char path[PATH_MAX];
    if (kt_private_directory(paths->rundir, error, error_size) != 0)
        return -1;
    if (kt_path_join(path, sizeof path, paths->rundir, "ktadmin-backup.lock") != 0) {
        snprintf(error, error_size, "the path %s is too long", paths->rundir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(error, error_size, "%s", errno == EWOULDBLOCK
                                              ? "another backup of this node is running; try later"
                                              : "cannot lock the backup lock file");
        (void)close(fd);
        return -1;
    }
    return fd; /* kept open: the lock lasts as long as this process */
}

/* Asks keytrustee-db for the consistent copy; keeps its response. */
static int request_copy(ktadmin_backup_run *run, char *error, size_t error_size)
{
    kt_db_connection *connection = kt_db_connect(&run->paths, error, error_size);
    if (connection == NULL)
        return -1;
    json_t *request = json_pack("{s:s}", "op", "backup");
    char detail[PATH_MAX + 256];
    int result = request == NULL ? -1
                                 : kt_db_call(connection, request, BACKUP_OP_TIMEOUT_MS,
                                              &run->copy, detail, sizeof detail);
    json_decref(request);
    kt_db_disconnect(connection);
    if (result != 0) {
        snprintf(error, error_size, "keytrustee-db did not answer the backup request: %s",
                 request == NULL ? "out of memory" : detail);
        return -1;
    }
    if (!json_is_true(json_object_get(run->copy, "ok"))) {
        const char *message = json_string_value(json_object_get(run->copy, "message"));
        snprintf(error, error_size, "keytrustee-db could not copy the database: %s",
                 message != NULL ? message : "no reason given");
        return -1;
    }
    const char *directory = json_string_value(json_object_get(run->copy, "directory"));
    if (directory == NULL ||
        snprintf(run->copy_directory, sizeof run->copy_directory, "%s", directory) >=
            (int)sizeof run->copy_directory) {
        snprintf(error, error_size, "keytrustee-db's backup answer names no directory");
        return -1;
    }
    return 0;
}

/* ---- after writing -------------------------------------------------------------------------- */

static int keep_newest(const struct dirent *entry)
{
    size_t length = strlen(entry->d_name);
    size_t prefix = strlen(KTADMIN_BACKUP_PREFIX), suffix = strlen(KTADMIN_BACKUP_EXTENSION);
    return length > prefix + suffix &&
           strncmp(entry->d_name, KTADMIN_BACKUP_PREFIX, prefix) == 0 &&
           strcmp(entry->d_name + length - suffix, KTADMIN_BACKUP_EXTENSION) == 0;
}

/* Deletes all but the newest `roll` backups (names sort by time). */
static void roll_backups(const ktadmin_backup_run *run, long roll, bool verbose)
{
    struct dirent **names = NULL;
    int count = scandir(run->output, &names, keep_newest, alphasort);
    if (count < 0) {
        fprintf(stderr, "ktadmin: cannot list %s to roll old backups: %s\n", run->output,
                strerror(errno));
        return;
    }
    for (int index = 0; index < count; index++) {
        char path[PATH_MAX];
        if (roll > 0 && index < count - roll &&
            kt_path_join(path, sizeof path, run->output, names[index]->d_name) == 0) {
            if (unlink(path) != 0)
                fprintf(stderr, "ktadmin: cannot delete the old backup %s: %s\n", path,
                        strerror(errno));
            else if (verbose)
                fprintf(stderr, "deleted the old backup %s\n", path);
        }
        free(names[index]);
    }
    free(names);
}

/* Records the outcome for the status op: {time, result, path, message}. Mode 0644: it holds no
 * secret, and keytrustee-db may run as another user than ktadmin. */
static void record_outcome(const kt_paths *paths, const char *result, const char *file,
                           const char *message)
{
    char path[PATH_MAX], error[PATH_MAX + 256];
    json_t *outcome = json_pack("{s:I, s:s, s:s?}", "time", (json_int_t)time(NULL), "result",
                                result, "path", file);
    if (outcome != NULL && message != NULL)
        (void)json_object_set_new(outcome, "message", json_string(message));
    char *text = outcome != NULL ? json_dumps(outcome, JSON_COMPACT) : NULL;
    json_decref(outcome);
    if (text == NULL || kt_path_join(path, sizeof path, paths->home, KT_LAST_BACKUP_FILE) != 0 ||
        kt_write_file_atomic(path, text, strlen(text), 0644, error, sizeof error) != 0)
        fprintf(stderr, "ktadmin: cannot record the backup's outcome in %s/%s\n", paths->home,
                KT_LAST_BACKUP_FILE);
    free(text);
}

static void report(const ktadmin_backup_options *options, const ktadmin_backup_run *run)
{
    if (options->verbose) {
        const json_t *position = json_object_get(run->copy, "position");
        fprintf(stderr, "backed up the %s node at transaction %lld of epoch %lld (%s)\n",
                json_string_value(json_object_get(run->copy, "role")),
                (long long)json_integer_value(json_object_get(position, "txid")),
                (long long)json_integer_value(json_object_get(run->copy, "epoch")),
                ktadmin_protection_name(run->keys.protection));
    }
    if (!options->quiet)
        printf("%s\n", run->final_path);
}

/* ---- the command ---------------------------------------------------------------------------- */

static int run_backup(const ktadmin_backup_options *options, ktadmin_backup_run *run,
                      char *error, size_t error_size)
{
    if (load_protection(options, &run->paths, &run->keys, error, error_size) != 0 ||
        prepare_output(options, run, error, error_size) != 0)
        return -1;
    run->lock_fd = take_lock(&run->paths, error, error_size);
    if (run->lock_fd < 0 || request_copy(run, error, error_size) != 0)
        return -1;
    if (options->cleartext && !options->quiet)
        fprintf(stderr, "ktadmin: warning: this backup is NOT encrypted (--cleartext): it holds "
                "the server key and every deposit, and anyone who can read the file can read "
                "every key and impersonate this server\n");
    return ktadmin_backup_write(run, error, error_size);
}

int ktadmin_backup(ktadmin_context *context, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "verify") == 0)
        return ktadmin_backup_verify(context, argc - 1, argv + 1);
    ktadmin_backup_options options = {.roll = DEFAULT_ROLL};
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    ktadmin_backup_run run = {.lock_fd = -1};
    char error[PATH_MAX * 2 + 512];
    if (kt_paths_resolve(&run.paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    int result = run_backup(&options, &run, error, sizeof error);
    ktadmin_remove_tree(run.copy_directory);
    if (result == 0) {
        ktadmin_backup_remove_stale_copies(&run);
        roll_backups(&run, options.roll, options.verbose);
        record_outcome(&run.paths, "ok", run.final_path, NULL);
        report(&options, &run);
    } else {
        ktadmin_fail("backup failed: %s", error);
        record_outcome(&run.paths, "failed", NULL, error);
    }
    ktadmin_backup_keys_clear(&run.keys);
    json_decref(run.copy);
    if (run.lock_fd >= 0)
        (void)close(run.lock_fd);
    return result == 0 ? KTADMIN_EXIT_OK : KTADMIN_EXIT_FAILURE;
}
