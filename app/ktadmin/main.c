/*
 * main.c — ktadmin's entry point: reads the options that come before the command (--confdir,
 * --help, --version), finds the command in the table below and runs it with the rest of the
 * command line. The helpers every command uses to report a bad command line (message, then the
 * command's usage, exit status 2) are app/common/cli.c's, shared with keytrustee-orgtool; the
 * wrappers here give them ktadmin's name.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"

static const char usage_text[] =
    "usage: ktadmin [--confdir DIR] COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  init [--external-address HOST[:PORT]] [--listen ADDR] [--port N] [--logdir DIR]\n"
    "        create the server key, the TLS certificate and keytrustee.conf (keeps what exists)\n"
    "  db --bootstrap [--port N] [--pg-rootdir DIR] [--slave HOST]\n"
    "        create the database and keytrustee-db.conf, before keytrustee-db first starts\n"
    "  init-slave --master HOST [--pg-port N] [--pg-rootdir DIR] [--no-import-key] [--no-start]\n"
    "        make this host the passive: copy the active's database into an empty directory\n"
    "  enable-synchronous-replication [--pg-rootdir DIR]\n"
    "        on the active: answer writes only once they are on the passive's disk too\n"
    "  promote [--force]\n"
    "        on the passive: become the active under a new epoch (the active is lost)\n"
    "  switchover [--new-active-url URL]\n"
    "        on the active of a healthy pair: hand the active role to the passive, then follow it\n"
    "  status [--json]\n"
    "        ask keytrustee-db for this node's role, health and replication state\n"
    "  backup [--output DIR] [--roll N] [--recipient FILE | --passphrase-file FILE |\n"
    "         --cleartext] [-q] [-v]\n"
    "        a hot, encrypted backup of this node (database, server keys, config, TLS files)\n"
    "  backup verify FILE [--passphrase-file FILE | --secret-key FILE]\n"
    "        check that a backup authenticates, matches its manifest and holds a sound database\n"
    "  backup-key generate --output DIR\n"
    "        make the key pair backups are encrypted to (keep the secret half offline)\n"
    "  restore FILE [--passphrase-file FILE | --secret-key FILE] [--pg-rootdir DIR]\n"
    "        bring a node back from a backup onto an empty home\n"
    "  cert show [--json] | cert install --cert FILE --key FILE [--ca FILE] [--no-reload]\n"
    "        show the TLS certificate, or check and install a new one and reload keytrusteed\n"
    "  audit verify [FILE]\n"
    "        check the audit log's hash chain and name the first modified, removed or moved entry\n"
    "\n"
    "options:\n"
    "  --confdir DIR   the .keytrustee directory (default $KEYTRUSTEE_HOME/.keytrustee,\n"
    "                  KEYTRUSTEE_HOME defaulting to " KT_DEFAULT_HOME ")\n"
    "  --help          this text; `ktadmin COMMAND --help` describes a command\n"
    "  --version       print the version\n";

static const char short_usage[] =
    "usage: ktadmin [--confdir DIR] COMMAND [OPTIONS]   (`ktadmin --help` lists the commands)\n";

typedef struct ktadmin_command {
    const char *name;
    ktadmin_command_function run;
} ktadmin_command;

static const ktadmin_command commands[] = {
    {"init", ktadmin_init},
    {"db", ktadmin_db},
    {"status", ktadmin_status},
    {"init-slave", ktadmin_init_slave},
    {"enable-synchronous-replication", ktadmin_enable_synchronous_replication},
    {"backup", ktadmin_backup},
    {"backup-key", ktadmin_backup_key},
    {"restore", ktadmin_restore},
    {"cert", ktadmin_cert},
    {"audit", ktadmin_audit},
    {"promote", ktadmin_promote},
    {"switchover", ktadmin_switchover},
};

void ktadmin_fail(const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fputs("ktadmin: ", stderr);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
}

/* The command-line helpers of app/common/cli.c, with ktadmin's name. */
void ktadmin_usage_error(const char *command, const char *usage, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    kt_cli_usage_verror(KTADMIN_PROGRAM, command, usage, format, arguments);
    va_end(arguments);
}

void ktadmin_option_error(const char *command, const char *usage, int result, char **argv)
{
    kt_cli_option_error(KTADMIN_PROGRAM, command, usage, result, argv);
}

ktadmin_parse_result ktadmin_no_operands(const char *command, const char *usage, int argc,
                                         char **argv)
{
    return kt_cli_no_operands(KTADMIN_PROGRAM, command, usage, argc, argv);
}

static const ktadmin_command *find_command(const char *name)
{
    for (size_t index = 0; index < sizeof commands / sizeof commands[0]; index++) {
        if (strcmp(commands[index].name, name) == 0)
            return &commands[index];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (kt_crypto_init() != 0) {
        ktadmin_fail("cannot initialize libsodium; check that the system has a random source");
        return KTADMIN_EXIT_FAILURE;
    }
    static const kt_cli_program program = {KTADMIN_PROGRAM, usage_text, short_usage};
    ktadmin_context context = {.confdir = NULL};
    int exit_code = KTADMIN_EXIT_OK;
    int command_index = kt_cli_global_options(&program, argc, argv, &context.confdir, &exit_code);
    if (command_index < 0)
        return exit_code;
    const ktadmin_command *command = find_command(argv[command_index]);
    if (command == NULL) {
        fprintf(stderr, "ktadmin: unknown command '%s'\n%s", argv[command_index],
                short_usage);
        return KTADMIN_EXIT_USAGE;
    }
    optind = 0; /* commands parse their own options with a fresh getopt_long */
    int exit_status = command->run(&context, argc - command_index, argv + command_index);
    if (fflush(stdout) != 0) {
        ktadmin_fail("cannot write to standard output");
        return KTADMIN_EXIT_FAILURE;
    }
    return exit_status;
}
