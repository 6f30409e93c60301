/*
 * main.c — keytrustee-orgtool's entry point: the options before the command (--confdir, --help,
 * --version), the command table, and the helpers every command uses to report a bad command line
 * (app/common/cli.c's, shared with ktadmin, under orgtool's name) and to print JSON.
 *
 * Before anything else it installs a jansson allocator that zeroes memory when it is freed: `list`
 * holds decrypted auth secrets in JSON strings and in the text printed from them, and this way
 * no copy outlives the program's use of it. Standard output is unbuffered for the same reason.
 */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/orgtool/orgtool.h"

static const char usage_text[] =
    "usage: keytrustee-orgtool [--confdir DIR] COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  add -n ORG -c EMAILS                 add an org with a new auth secret\n"
    "  list                                 print every org, with its auth secret, as JSON\n"
    "  set-auth -n ORG -s SECRET            replace an org's auth secret (\"\" for none)\n"
    "  disable-client --fingerprint FP      refuse a client's requests\n"
    "  enable-client --fingerprint FP       accept a client's requests again\n"
    "  list-clients [-n ORG]                print the registered clients as JSON\n"
    "\n"
    "options:\n"
    "  --confdir DIR   the .keytrustee directory (default $KEYTRUSTEE_HOME/.keytrustee,\n"
    "                  KEYTRUSTEE_HOME defaulting to " KT_DEFAULT_HOME ")\n"
    "  --help          this text; `keytrustee-orgtool COMMAND --help` describes a command\n"
    "exit status: 0 done, 1 failed, 2 bad command line, 3 the node cannot take writes now\n";

static const char short_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] COMMAND [OPTIONS]\n"
    "(`keytrustee-orgtool --help` lists the commands)\n";

typedef struct orgtool_command {
    const char *name;
    orgtool_command_function run;
} orgtool_command;

static const orgtool_command commands[] = {
    {"add", orgtool_add},
    {"list", orgtool_list},
    {"set-auth", orgtool_set_auth},
    {"disable-client", orgtool_disable_client},
    {"enable-client", orgtool_enable_client},
    {"list-clients", orgtool_list_clients},
};

static void *wiping_malloc(size_t size)
{
    return malloc(size);
}

static void wiping_free(void *pointer)
{
    if (pointer == NULL)
        return;
    kt_wipe(pointer, malloc_usable_size(pointer));
    free(pointer);
}

int orgtool_parse_exit(orgtool_parse_result result)
{
    return result == ORGTOOL_PARSE_HELP ? ORGTOOL_EXIT_OK : ORGTOOL_EXIT_USAGE;
}

void orgtool_fail(const char *command, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "keytrustee-orgtool %s: ", command);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
}

/* The command-line helpers of app/common/cli.c, with keytrustee-orgtool's name. */
void orgtool_usage_error(const char *command, const char *usage, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    kt_cli_usage_verror(ORGTOOL_PROGRAM, command, usage, format, arguments);
    va_end(arguments);
}

void orgtool_option_error(const char *command, const char *usage, int result, char **argv)
{
    kt_cli_option_error(ORGTOOL_PROGRAM, command, usage, result, argv);
}

orgtool_parse_result orgtool_no_operands(const char *command, const char *usage, int argc,
                                         char **argv)
{
    return kt_cli_no_operands(ORGTOOL_PROGRAM, command, usage, argc, argv);
}

int orgtool_print_json(const char *command, const json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(4) | JSON_SORT_KEYS);
    if (text == NULL) {
        orgtool_fail(command, "out of memory while formatting the output");
        return -1;
    }
    size_t length = strlen(text);
    int result = fwrite(text, 1, length, stdout) == length && putchar('\n') != EOF ? 0 : -1;
    wiping_free(text); /* jansson allocated it with wiping_malloc */
    if (result != 0)
        orgtool_fail(command, "cannot write to standard output");
    return result;
}

static const orgtool_command *find_command(const char *name)
{
    for (size_t index = 0; index < sizeof commands / sizeof commands[0]; index++) {
        if (strcmp(commands[index].name, name) == 0)
            return &commands[index];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    json_set_alloc_funcs(wiping_malloc, wiping_free);
    if (setvbuf(stdout, NULL, _IONBF, 0) != 0 || kt_crypto_init() != 0) {
        fputs("keytrustee-orgtool: cannot initialize (libsodium or standard output)\n", stderr);
        return ORGTOOL_EXIT_FAILURE;
    }
    static const kt_cli_program program = {ORGTOOL_PROGRAM, usage_text, short_usage};
    orgtool_context context = {.confdir = NULL};
    int exit_code = ORGTOOL_EXIT_OK;
    int command_index = kt_cli_global_options(&program, argc, argv, &context.confdir, &exit_code);
    if (command_index < 0)
        return exit_code;
    const orgtool_command *command = find_command(argv[command_index]);
    if (command == NULL) {
        fprintf(stderr, "keytrustee-orgtool: unknown command '%s'\n%s", argv[command_index],
                short_usage);
        return ORGTOOL_EXIT_USAGE;
    }
    optind = 0; /* commands parse their own options with a fresh getopt_long */
    return command->run(&context, argc - command_index, argv + command_index);
}
