/*
 * orgtool.h — what the files of keytrustee-orgtool share: the command context, exit codes,
 * command-line helpers, the call to keytrustee-db, and the sealing of org auth secrets.
 *
 * keytrustee-orgtool manages organisations (the groups clients register into, each with an
 * optional auth secret) and switches clients on and off. Like every keytrustee program it never
 * opens the database: each change is a request on keytrustee-db's admin socket, so it reaches both
 * nodes of a pair the same way as a write from the HTTPS API.
 *
 * An org's auth secret is kept in the database only as an AEAD box sealed with the server's data
 * key, bound to the org name (associated data "keytrustee-org-auth" 0x00 <name>); orgtool seals it
 * on add/set-auth and opens it for `list`, the one command that shows it, as the original did.
 */
#ifndef KT_ORGTOOL_H
#define KT_ORGTOOL_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/common/app.h"
#include "crypto/crypto.h"

enum {
    ORGTOOL_EXIT_OK = KT_CLI_EXIT_OK,
    ORGTOOL_EXIT_FAILURE = 1,              /* the command failed (not found, conflict, ...) */
    ORGTOOL_EXIT_USAGE = KT_CLI_EXIT_USAGE, /* bad command line */
    ORGTOOL_EXIT_UNAVAILABLE = 3           /* the write was refused: passive, or pair degraded */
};

typedef struct orgtool_context {
    const char *confdir; /* NULL: $KEYTRUSTEE_HOME/.keytrustee or the default */
} orgtool_context;

typedef int (*orgtool_command_function)(orgtool_context *context, int argc, char **argv);

/* The commands (argv[0] is the command name); each returns an exit code. orgs.c: */
int orgtool_add(orgtool_context *context, int argc, char **argv);
int orgtool_list(orgtool_context *context, int argc, char **argv);
int orgtool_set_auth(orgtool_context *context, int argc, char **argv);
/* clients.c: */
int orgtool_disable_client(orgtool_context *context, int argc, char **argv);
int orgtool_enable_client(orgtool_context *context, int argc, char **argv);
int orgtool_list_clients(orgtool_context *context, int argc, char **argv);

/* ---- Command-line helpers (main.c, over app/common/cli.c) ------------------------------------ */

#define ORGTOOL_PROGRAM "keytrustee-orgtool"

/* app/common/cli.c's parse results, under orgtool's names. */
typedef kt_cli_parse_result orgtool_parse_result;
#define ORGTOOL_PARSE_OK    KT_CLI_PARSE_OK
#define ORGTOOL_PARSE_HELP  KT_CLI_PARSE_HELP  /* usage printed for --help: exit 0 */
#define ORGTOOL_PARSE_ERROR KT_CLI_PARSE_ERROR /* message and usage printed: exit 2 */

/* Exit code for a parse result that is not ORGTOOL_PARSE_OK. */
int orgtool_parse_exit(orgtool_parse_result result);
/* "keytrustee-orgtool COMMAND: <message>" and the usage, on stderr. */
void orgtool_usage_error(const char *command, const char *usage, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
void orgtool_option_error(const char *command, const char *usage, int result, char **argv);
orgtool_parse_result orgtool_no_operands(const char *command, const char *usage, int argc,
                                         char **argv);
/* "keytrustee-orgtool COMMAND: <message>" on stderr. */
void orgtool_fail(const char *command, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Pretty-prints a JSON value on stdout (4-space indent, sorted keys), as the original did. */
int orgtool_print_json(const char *command, const json_t *value);

/* ---- keytrustee-db (database.c) -------------------------------------------------------------- */

/* Sends `request` (not consumed) and stores the ok response in *response. When there is none it
 * prints one line saying what happened and what to do, and returns the exit code to use. */
int orgtool_call(const orgtool_context *context, const char *command, const json_t *request,
                 json_t **response);
/* [A-Za-z0-9_.-]{1,64}, as the original orgtool. */
bool orgtool_org_name_valid(const char *name);
/* Checks a name given with -n, printing the usage error; true when valid. */
bool orgtool_check_org_name(const char *command, const char *usage, const char *name);
/* Unix seconds as ISO-8601 UTC without zone, e.g. 2026-11-28T12:00:00; 0 = never. */
void orgtool_format_time(int64_t seconds, char out[32]);

/* ---- Auth secrets (auth.c) ------------------------------------------------------------------- */

/* Loads the server keys from confdir/keytrustee-server.key, reporting a failure. */
int orgtool_load_keys(const orgtool_context *context, const char *command, kt_server_keys **keys);
/* Sets request["auth_box"] to the sealed secret ("" when secret->length is 0). */
int orgtool_seal_auth(const kt_server_keys *keys, const char *org_name, const kt_secret *secret,
                      json_t *request);
/* Opens org["auth_box"] of the named org; an empty box gives an empty secret. */
int orgtool_open_auth(const kt_server_keys *keys, const char *org_name, const json_t *org,
                      kt_secret **secret);
/* A new auth secret as the original made it: base64 of 16 random bytes (24 characters). */
kt_secret *orgtool_new_auth_secret(void);

#endif /* KT_ORGTOOL_H */
