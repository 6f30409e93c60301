/*
 * audit.c — `ktadmin audit verify [FILE]`: checks the node's audit log (default
 * $KEYTRUSTEE_HOME/logs/audit.log) entry by entry — each entry's own hash, its sequence number
 * and its link to the entry before (app/common/audit.c) — and says which line breaks the chain:
 * a modified, removed, inserted or reordered entry. On success it prints the entry count and the
 * head (last sequence number and hash): an operator who copies the head elsewhere can later prove
 * that nothing after it was cut off or rewritten, which the chain alone cannot.
 *
 * Exit status: 0 the chain is intact, 1 it is broken or unreadable, 2 bad command line.
 */
#include <stdio.h>
#include <string.h>

#include "app/ktadmin/ktadmin.h"

static const char audit_usage[] =
    "usage: ktadmin [--confdir DIR] audit verify [FILE]\n"
    "  FILE   the audit log to check (default $KEYTRUSTEE_HOME/logs/audit.log)\n"
    "exit status: 0 intact, 1 broken or unreadable (the message names the first bad line)\n";

static ktadmin_parse_result parse_audit_options(ktadmin_context *context, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(audit_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("audit", audit_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    return KTADMIN_PARSE_OK;
}

static int default_path(const ktadmin_context *context, char *path, size_t path_size)
{
    char error[PATH_MAX + 256];
    kt_paths paths;
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (kt_path_join(path, path_size, paths.logdir, KT_AUDIT_FILE) != 0) {
        ktadmin_fail("the audit log path is too long");
        return -1;
    }
    return 0;
}

static int verify(const char *path)
{
    long entries = 0;
    char head[128] = "";
    char message[PATH_MAX + 256];
    if (kt_audit_verify(path, &entries, head, sizeof head, message, sizeof message) != 0) {
        ktadmin_fail("%s: %s", path, message);
        return KTADMIN_EXIT_FAILURE;
    }
    printf("%s: intact, %ld entries, head %s\n", path, entries, head);
    return KTADMIN_EXIT_OK;
}

int ktadmin_audit(ktadmin_context *context, int argc, char **argv)
{
    ktadmin_parse_result parsed = parse_audit_options(context, argc, argv);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    int remaining = argc - optind;
    if (remaining < 1 || strcmp(argv[optind], "verify") != 0 || remaining > 2) {
        ktadmin_usage_error("audit", audit_usage, "expected: audit verify [FILE]");
        return KTADMIN_EXIT_USAGE;
    }
    char path[PATH_MAX];
    if (remaining == 2)
        snprintf(path, sizeof path, "%s", argv[optind + 1]);
    else if (default_path(context, path, sizeof path) != 0)
        return KTADMIN_EXIT_FAILURE;
    return verify(path);
}
