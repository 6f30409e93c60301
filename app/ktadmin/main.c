/*
 * main.c — ktadmin's entry point: reads the options that come before the command (--confdir,
 * --help, --version), finds the command in the table below and runs it with the rest of the
 * command line. Also holds the small helpers every command uses to report a bad command line the
 * same way (message, then the command's usage, exit status 2).
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

/* The synopsis of a usage text: its lines up to the first option description ("  -..."). */
static void print_synopsis(const char *usage, const char *command)
{
    const char *line = usage;
    while (*line != '\0' && strncmp(line, "  -", 3) != 0 && strncmp(line, "exit", 4) != 0) {
        const char *end = strchr(line, '\n');
        size_t length = end != NULL ? (size_t)(end - line) + 1 : strlen(line);
        fwrite(line, 1, length, stderr);
        line += length;
    }
    fprintf(stderr, "(`%s %s --help` describes the options)\n", "ktadmin", command);
}

void ktadmin_usage_error(const char *command, const char *usage, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "ktadmin %s: ", command);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    print_synopsis(usage, command);
    va_end(arguments);
}

void ktadmin_option_error(const char *command, const char *usage, int result, char **argv)
{
    const char *argument = argv[optind - 1];
    if (result == ':')
        ktadmin_usage_error(command, usage, "option '%s' needs a value", argument);
    else if (optopt != 0)
        ktadmin_usage_error(command, usage, "unknown option '-%c'", optopt);
    else
        ktadmin_usage_error(command, usage, "unknown option '%s'", argument);
}

ktadmin_parse_result ktadmin_no_operands(const char *command, const char *usage, int argc,
                                         char **argv)
{
    if (optind >= argc)
        return KTADMIN_PARSE_OK;
    ktadmin_usage_error(command, usage, "unexpected argument '%s'", argv[optind]);
    return KTADMIN_PARSE_ERROR;
}

static const ktadmin_command *find_command(const char *name)
{
    for (size_t index = 0; index < sizeof commands / sizeof commands[0]; index++) {
        if (strcmp(commands[index].name, name) == 0)
            return &commands[index];
    }
    return NULL;
}

/* Parses the options before the command; returns the index of the command name, or -1 with
 * *exit_code set when the program should stop. */
static int parse_global_options(ktadmin_context *context, int argc, char **argv, int *exit_code)
{
    static const struct option options[] = {
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int result;
    while ((result = getopt_long(argc, argv, "+:h", options, NULL)) != -1) {
        if (result == 'C') {
            context->confdir = optarg;
        } else if (result == 'h' || result == 'V') {
            fputs(result == 'h' ? usage_text : "ktadmin " KT_VERSION "\n", stdout);
            *exit_code = KTADMIN_EXIT_OK;
            return -1;
        } else {
            const char *argument = argv[optind - 1];
            fprintf(stderr, "ktadmin: %s '%s'\n%s",
                    result == ':' ? "missing value for option" : "unknown option", argument,
                    short_usage);
            *exit_code = KTADMIN_EXIT_USAGE;
            return -1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "ktadmin: no command given\n%s", short_usage);
        *exit_code = KTADMIN_EXIT_USAGE;
        return -1;
    }
    return optind;
}

int main(int argc, char **argv)
{
    if (kt_crypto_init() != 0) {
        ktadmin_fail("cannot initialize libsodium; check that the system has a random source");
        return KTADMIN_EXIT_FAILURE;
    }
    ktadmin_context context = {.confdir = NULL};
    int exit_code = KTADMIN_EXIT_OK;
    int command_index = parse_global_options(&context, argc, argv, &exit_code);
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
