/*
 * ktadmin.h — what the files of ktadmin share: the command context, the exit codes, option
 * parsing helpers and argument checks.
 *
 * ktadmin is the operator's tool for setting up a Key Trustee Server node: `init` creates the
 * server's key material, TLS certificate and keytrustee.conf; `db --bootstrap` creates the database
 * before keytrustee-db first runs; `init-slave` copies the active's database to make this host the
 * passive; `enable-synchronous-replication` turns on synchronous commits on the active; `status`
 * asks keytrustee-db how the node is doing; `backup` (and `backup verify`), `backup-key` and
 * `restore` make, check and restore encrypted backups; `cert` shows and installs the node's TLS
 * certificate; `promote` and `switchover` change which node is the active. Each command
 * lives in its own file and is reached through the table in main.c.
 */
#ifndef KT_KTADMIN_H
#define KT_KTADMIN_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "app/common/app.h"

enum {
    KTADMIN_EXIT_OK = KT_CLI_EXIT_OK,
    KTADMIN_EXIT_FAILURE = 1, /* the command ran and failed, or the node is unhealthy */
    KTADMIN_EXIT_USAGE = KT_CLI_EXIT_USAGE /* bad command line */
};

/* The options every command accepts; --confdir may come before or after the command name. */
typedef struct ktadmin_context {
    const char *confdir; /* NULL: $KEYTRUSTEE_HOME/.keytrustee or the default */
} ktadmin_context;

typedef int (*ktadmin_command_function)(ktadmin_context *context, int argc, char **argv);

/* The commands (argv[0] is the command name). Each returns an exit code. */
int ktadmin_init(ktadmin_context *context, int argc, char **argv);
int ktadmin_db(ktadmin_context *context, int argc, char **argv);
int ktadmin_status(ktadmin_context *context, int argc, char **argv);
int ktadmin_init_slave(ktadmin_context *context, int argc, char **argv);
int ktadmin_enable_synchronous_replication(ktadmin_context *context, int argc, char **argv);
int ktadmin_backup(ktadmin_context *context, int argc, char **argv);      /* and backup verify */
int ktadmin_backup_key(ktadmin_context *context, int argc, char **argv);
int ktadmin_restore(ktadmin_context *context, int argc, char **argv);
int ktadmin_cert(ktadmin_context *context, int argc, char **argv);        /* show, install */
int ktadmin_audit(ktadmin_context *context, int argc, char **argv);       /* verify */
int ktadmin_promote(ktadmin_context *context, int argc, char **argv);     /* promote.c */
int ktadmin_switchover(ktadmin_context *context, int argc, char **argv);  /* promote.c */
/* As root, when the user keytrustee exists: chown -R the home (and the db directory) to it
 * (ownership.c). Returns 0, or -1 after reporting. */
int ktadmin_hand_to_service_user(const kt_paths *paths);

/* ---- Command-line helpers (main.c, over app/common/cli.c) ------------------------------------ */

#define KTADMIN_PROGRAM "ktadmin"

/* app/common/cli.c's parse results, under ktadmin's names. */
typedef kt_cli_parse_result ktadmin_parse_result;
#define KTADMIN_PARSE_OK    KT_CLI_PARSE_OK
#define KTADMIN_PARSE_HELP  KT_CLI_PARSE_HELP  /* --help was given and the usage printed: exit 0 */
#define KTADMIN_PARSE_ERROR KT_CLI_PARSE_ERROR /* a message and the usage were printed: exit 2 */

/* Prints "ktadmin COMMAND: <message>" and the command's usage line to stderr. */
void ktadmin_usage_error(const char *command, const char *usage, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Reports what getopt_long returned for an unknown option ('?') or a missing argument (':'). */
void ktadmin_option_error(const char *command, const char *usage, int result, char **argv);
/* Rejects arguments left after the options. */
ktadmin_parse_result ktadmin_no_operands(const char *command, const char *usage, int argc,
                                         char **argv);
/* Prints "ktadmin: <message>" to stderr. */
void ktadmin_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* ---- Argument checks (arguments.c) ----------------------------------------------------------- */

#define KTADMIN_HOST_MAX 256u

/* A TCP port: decimal 1..65535 with nothing else. */
int ktadmin_parse_port(const char *text, long *port);
/* A literal IPv4 or IPv6 address. */
bool ktadmin_ip_literal(const char *text);
/* A DNS name (labels of letters, digits and '-') or a literal IP address. */
bool ktadmin_host_valid(const char *text);
/* Splits HOST, HOST:PORT, [IPV6] or [IPV6]:PORT (a bare IPv6 address has no port). *port is 0
 * when no port was given. Returns 0, or -1 with the reason in error. */
int ktadmin_split_address(const char *text, char host[KTADMIN_HOST_MAX], long *port,
                          char *error, size_t error_size);
/* Whether `host` names this machine, as far as can be told without DNS: "localhost", one of this
 * machine's IP addresses, or a name whose first label is that of `local_host` (so kt01 and
 * kt01.example.com are the same machine, kt01 and kt02 are not). */
bool ktadmin_host_is_local(const char *host, const char *local_host);
/* This machine's host name, for the default external address. */
int ktadmin_local_hostname(char host[KTADMIN_HOST_MAX], char *error, size_t error_size);

/* ---- TLS material (tls.c) -------------------------------------------------------------------- */

typedef enum ktadmin_tls_outcome {
    KTADMIN_TLS_KEPT,       /* certificate, key and CA file were all there */
    KTADMIN_TLS_CA_ADDED,   /* certificate and key kept; the missing CA file copied from the cert */
    KTADMIN_TLS_CREATED     /* a new self-signed certificate and key */
} ktadmin_tls_outcome;

/* What ktadmin_tls_ensure would do now, without doing it. */
int ktadmin_tls_inspect(const kt_paths *paths, ktadmin_tls_outcome *planned, char *error,
                        size_t error_size);
/* Makes sure .ssl holds a certificate, its key and the CA file, creating a self-signed certificate
 * for `host` when the certificate or key is missing. */
int ktadmin_tls_ensure(const kt_paths *paths, const char *host, ktadmin_tls_outcome *outcome,
                       char *error, size_t error_size);

#endif /* KT_KTADMIN_H */
