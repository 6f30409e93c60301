/*
 * backup_verify.c — `ktadmin backup verify FILE [--passphrase-file F | --secret-key F]`: proves a
 * backup can be restored, without restoring it.
 *
 * The file is unpacked into a private temporary directory ($TMPDIR, else /tmp; 0700) and checked
 * as restore would check it (backup_check.c): authenticated, every file against the manifest, the
 * database through integrity_check, the server key against its fingerprint. The directory is
 * removed afterwards whatever happened. Exit status 0 when the backup is good, 1 with the reason
 * otherwise, 2 for a bad command line. Needs no running service and may run on any machine that
 * has ktadmin, e.g. where the backups are kept.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/ktadmin/backup.h"

static const char verify_usage[] =
    "usage: ktadmin backup verify FILE [--passphrase-file FILE | --secret-key FILE] [-q]\n"
    "  --passphrase-file FILE  the passphrase the backup was made with\n"
    "  --secret-key FILE       the backup secret key (from `ktadmin backup-key generate`)\n"
    "  -q                      print nothing when the backup is good\n"
    "exit status: 0 the backup is good, 1 it is not (the reason is printed), 2 bad usage\n";

typedef struct verify_options {
    const char *file;
    const char *passphrase_file;
    const char *secret_key_file;
    bool quiet;
} verify_options;

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          verify_options *options)
{
    static const struct option long_options[] = {
        {"passphrase-file", required_argument, NULL, 'P'},
        {"secret-key", required_argument, NULL, 'S'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":hq", long_options, NULL)) != -1) {
        switch (result) {
        case 'P': options->passphrase_file = optarg; break;
        case 'S': options->secret_key_file = optarg; break;
        case 'q': options->quiet = true; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(verify_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("backup verify", verify_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    if (optind + 1 != argc) {
        ktadmin_usage_error("backup verify", verify_usage, "give exactly one backup FILE");
        return KTADMIN_PARSE_ERROR;
    }
    options->file = argv[optind];
    if (options->passphrase_file != NULL && options->secret_key_file != NULL) {
        ktadmin_usage_error("backup verify", verify_usage,
                            "give --passphrase-file or --secret-key, not both");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static void print_summary(const char *file, const ktadmin_backup_summary *summary)
{
    char when[32];
    time_t seconds = (time_t)summary->time;
    struct tm parts;
    if (gmtime_r(&seconds, &parts) == NULL ||
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &parts) == 0)
        snprintf(when, sizeof when, "%lld", (long long)summary->time);
    printf("%s is good\n", file);
    printf("  node: %s, %s (%s), server %s\n", summary->host, summary->role,
           summary->external_address, summary->server_fingerprint);
    printf("  taken: %s, at transaction %lld of epoch %lld\n", when, (long long)summary->txid,
           (long long)summary->epoch);
    printf("  holds: %lld orgs, %lld clients, %lld deposits (schema %d)\n", summary->orgs,
           summary->clients, summary->deposits, summary->schema_version);
    printf("  protection: %s\n", ktadmin_protection_name(summary->protection));
}

/* Where verify unpacks: $TMPDIR, else /tmp. */
static const char *temporary_parent(void)
{
    const char *directory = getenv("TMPDIR");
    return directory != NULL && directory[0] == '/' ? directory : "/tmp";
}

int ktadmin_backup_verify(ktadmin_context *context, int argc, char **argv)
{
    verify_options options = {.file = NULL};
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    ktadmin_backup_keys keys;
    if (ktadmin_opening_keys(options.passphrase_file, options.secret_key_file, &keys) != 0)
        return KTADMIN_EXIT_FAILURE;
    char directory[PATH_MAX], error[PATH_MAX * 2 + 512];
    ktadmin_backup_summary summary;
    int result = ktadmin_private_temporary(temporary_parent(), "keytrustee-verify-", directory,
                                           sizeof directory, error, sizeof error);
    if (result == 0)
        result = ktadmin_backup_unpack(options.file, &keys, directory, &summary, error,
                                       sizeof error);
    ktadmin_remove_tree(directory);
    ktadmin_backup_keys_clear(&keys);
    if (result != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    if (!options.quiet)
        print_summary(options.file, &summary);
    return KTADMIN_EXIT_OK;
}
