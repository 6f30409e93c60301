/*
 * cli.c — the command lines of the operator tools, ktadmin and keytrustee-orgtool.
 *
 * Both read global options before the command name (--confdir DIR, --help, --version), look the
 * command up in their own table, and let the command parse the rest with getopt_long. A bad
 * command line is reported the same way by both, so an operator reads one style:
 *
 *     PROGRAM COMMAND: <what is wrong>
 *     <the command's synopsis: its usage text up to the first option description>
 *     (`PROGRAM COMMAND --help` describes the options)
 *
 * and the program exits with KT_CLI_EXIT_USAGE. Each program keeps thin wrappers with its own
 * name (ktadmin_usage_error, orgtool_usage_error, ...) so its commands need not repeat it.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app/common/app.h"

/* The synopsis of a usage text: its lines up to the first option description ("  -...") or the
 * exit-status line. */
static void print_synopsis(const char *program, const char *usage, const char *command)
{
    const char *line = usage;
    while (*line != '\0' && strncmp(line, "  -", 3) != 0 && strncmp(line, "exit", 4) != 0) {
        const char *end = strchr(line, '\n');
        size_t length = end != NULL ? (size_t)(end - line) + 1 : strlen(line);
        fwrite(line, 1, length, stderr);
        line += length;
    }
    fprintf(stderr, "(`%s %s --help` describes the options)\n", program, command);
}

void kt_cli_usage_verror(const char *program, const char *command, const char *usage,
                         const char *format, va_list arguments)
{
    fprintf(stderr, "%s %s: ", program, command);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    print_synopsis(program, usage, command);
}

void kt_cli_usage_error(const char *program, const char *command, const char *usage,
                        const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    kt_cli_usage_verror(program, command, usage, format, arguments);
    va_end(arguments);
}

void kt_cli_option_error(const char *program, const char *command, const char *usage, int result,
                         char **argv)
{
    const char *argument = argv[optind - 1];
    if (result == ':')
        kt_cli_usage_error(program, command, usage, "option '%s' needs a value", argument);
    else if (optopt != 0)
        kt_cli_usage_error(program, command, usage, "unknown option '-%c'", optopt);
    else
        kt_cli_usage_error(program, command, usage, "unknown option '%s'", argument);
}

kt_cli_parse_result kt_cli_no_operands(const char *program, const char *command,
                                       const char *usage, int argc, char **argv)
{
    if (optind >= argc)
        return KT_CLI_PARSE_OK;
    kt_cli_usage_error(program, command, usage, "unexpected argument '%s'", argv[optind]);
    return KT_CLI_PARSE_ERROR;
}

int kt_cli_global_options(const kt_cli_program *program, int argc, char **argv,
                          const char **confdir, int *exit_code)
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
            *confdir = optarg;
        } else if (result == 'h' || result == 'V') {
            if (result == 'h')
                fputs(program->usage, stdout);
            else
                printf("%s %s\n", program->name, KT_VERSION);
            *exit_code = KT_CLI_EXIT_OK;
            return -1;
        } else {
            fprintf(stderr, "%s: %s '%s'\n%s", program->name,
                    result == ':' ? "missing value for option" : "unknown option",
                    argv[optind - 1], program->short_usage);
            *exit_code = KT_CLI_EXIT_USAGE;
            return -1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "%s: no command given\n%s", program->name, program->short_usage);
        *exit_code = KT_CLI_EXIT_USAGE;
        return -1;
    }
    return optind;
}
