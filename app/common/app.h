/*
 * app.h — what the keytrustee programs share: where files live, keytrustee.conf, logging, and the
 * admin socket through which every program reaches keytrustee-db.
 *
 * The two services (the seed's names)
 *   keytrustee-db  owns the database: the single writer (storage/), readers, and replication/.
 *                  It listens on the admin socket $KEYTRUSTEE_HOME/run/keytrustee-db.sock (0600 in a
 *                  0700 directory) and, on the active, on the replication port (default 11381).
 *   keytrusteed    the HTTPS front end (CivetWeb + mbedTLS) on port 11371: parses and authenticates
 *                  requests, encrypts and decrypts deposits with the server key, and asks
 *                  keytrustee-db for every read and write. It never opens the database itself.
 *   ktadmin and keytrustee-orgtool also talk to keytrustee-db over the admin socket, so every write
 *   takes the same path to both disks.
 *
 * Files under $KEYTRUSTEE_HOME (default /var/lib/keytrustee; every directory 0700)
 *   .keytrustee/keytrustee.conf          server settings (this file format: below)
 *   .keytrustee/keytrustee-server.key    server master secret (crypto.h), 0600
 *   .keytrustee/.ssl/ssl-cert-keytrustee.pem      TLS certificate (0400 once installed)
 *   .keytrustee/.ssl/ssl-cert-keytrustee-pk.pem   TLS private key (0400)
 *   .keytrustee/.ssl/ssl-cert-keytrustee-ca.pem   CA clients pin (the certificate itself if self-signed)
 *   db/keytrustee.db (+ -wal, -shm)      the database (directory: --pg-rootdir, default db/)
 *   db/keytrustee-db.conf                the database service's settings (role, peer, ports, sync)
 *   run/keytrustee-db.sock, run/NAME.pid runtime
 *   logs/                                log files when daemonized; logs/audit.log (0600): the audit chain
 *   backups/                             `ktadmin backup`'s default output directory
 *   last-backup.json                     the last backup's time, result and path (KT_LAST_BACKUP_FILE)
 * `--confdir DIR` names the .keytrustee directory; the home is then its parent.
 *
 * keytrustee.conf and keytrustee-db.conf format
 *   One `key = value` per line; blank lines and lines starting with '#' are ignored; keys are
 *   [a-z0-9_]+; values run to the end of the line with surrounding blanks trimmed. A line that is
 *   not of this form, or a key given twice, is an error naming the file and line.
 *   keytrustee.conf keys:  external_address (HOST[:PORT] clients use), accepted_hosts (more
 *                          HOST[:PORT] names of this node, blank- or comma-separated: signed
 *                          requests must name the node, docs/security.md), listen (bind address,
 *                          default 0.0.0.0), port (HTTPS, default 11371), log_level,
 *                          tls_min_version (only 1.2), tls_ciphers (mbedTLS names of ECDHE + AEAD
 *                          suites separated by ':'; default: all of those).
 *   keytrustee-db.conf keys: role (standalone|active|passive), replication_listen, replication_port
 *                          (default 11381), slave (passive host, on the active), master and
 *                          master_port (on the passive), synchronous (yes|no), active_url,
 *                          former_active and former_active_port (on an active made by
 *                          `ktadmin promote`: the old active, fenced whenever it listens).
 *
 * Admin socket protocol (keytrustee-db)
 *   Each message is a 4-byte big-endian length (1 .. KT_WIRE_MAX) followed by that many bytes of
 *   UTF-8 JSON (an object). The client sends a request, the server answers with one response, and
 *   the connection may carry further requests. Requests: {"op": NAME, ...fields}. Responses:
 *   {"ok": true, ...fields} or {"ok": false, "error": CODE, "message": TEXT, ...}. Binary values
 *   (boxes, public keys) are standard padded base64 strings. Times are unix seconds.
 *
 *   op               request fields                          ok-response fields
 *   status           -                                       role, writable, reason (when not
 *                                                            writable), version, schema_version,
 *                                                            counts{orgs,clients,deposits},
 *                                                            replication{...}, active_url (passive),
 *                                                            last_backup{time,result,path[,message]}
 *                                                            or null, role_change_error
 *                                                            (why the last promote/switchover
 *                                                            failed, only when it did)
 *   org.add          name, contacts, auth_box ("" = none)    org
 *   org.get          name                                    org
 *   org.list         -                                       orgs[]
 *   org.set_auth     name, auth_box                          -
 *   client.add       fingerprint, org, name, public_key      client
 *   client.get       fingerprint                             client
 *   client.set_state fingerprint, state (active|disabled)    -
 *   client.list      org (optional)                          clients[]
 *   deposit.put      client, uuid, handle, description, box  deposit (without box)
 *   deposit.get      client, uuid | handle                   deposit (with box)
 *   client.deposit   fingerprint, uuid | handle              client, deposit (with box) or null:
 *                                                            client.get and deposit.get in one
 *                                                            call (keytrusteed's deposit reads);
 *                                                            not_found = no such client
 *   deposit.list     client, search (optional)               deposits[] (without box)
 *   deposit.set_state client, uuid, state                    -
 *   deposit.purge    client, uuid                            -
 *   replication.set_synchronous  synchronous (bool)     -   (active: persists it in keytrustee-db.conf)
 *   replication.promote  force (bool, optional)          -   (passive: restarts as the active under
 *                                                            a new epoch; refused while the active
 *                                                            answers unless force)
 *   replication.switchover  new_active_url               -   (active of an in-sync pair: hands over,
 *                                                            then restarts as its passive)
 *   backup           -                                       directory, files[], role, epoch,
 *                                                            position{epoch,txid,hash},
 *                                                            schema_version, version,
 *                                                            sqlite_version, time: a consistent
 *                                                            copy of the database and replication
 *                                                            state in a new 0700 directory inside
 *                                                            the db directory (the caller removes
 *                                                            it; app/keytrustee-db/backup.c)
 *   replication object (in status): role, state (a state name from replication/state.c, or
 *                   "standalone"), epoch, synchronous, writable, reason, peer_connected,
 *                   peer_address, position{epoch,txid,hash}, peer_position{epoch,txid,hash},
 *                   lag_transactions, lag_ms
 *   org object:     uuid, name, contacts, created, expires, state, auth_box
 *   client object:  fingerprint, org, org_uuid, org_state, name, public_key, created, state
 *   deposit object: uuid, client, handle, description, created, state[, box]
 *
 *   Error codes: bad_request, not_found, conflict, passive (this node is the passive; the response
 *   also carries active_url), write_unavailable (the pair cannot make a write durable on both nodes
 *   now; retry later), fenced (this node was an active and
 *   another node was promoted under a newer epoch: it takes no writes, ever), indeterminate (the write may or may not have been committed; the nodes
 *   settle it when they reconnect), disk_full, audit_unavailable (an operator-tool request that
 *   the audit log cannot record now, so it was not performed), internal.
 */
#ifndef KT_APP_H
#define KT_APP_H

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#define KT_DEFAULT_HOME            "/var/lib/keytrustee"
#define KT_DEFAULT_HTTPS_PORT      11371
#define KT_DEFAULT_REPLICATION_PORT 11381

#define KT_CONF_FILE       "keytrustee.conf"
#define KT_SERVER_KEY_FILE "keytrustee-server.key"
#define KT_CERT_FILE       "ssl-cert-keytrustee.pem"
#define KT_CERT_KEY_FILE   "ssl-cert-keytrustee-pk.pem"
#define KT_CERT_CA_FILE    "ssl-cert-keytrustee-ca.pem"
#define KT_DB_CONF_FILE    "keytrustee-db.conf"
#define KT_DB_SOCKET_FILE  "keytrustee-db.sock"
#define KT_LAST_BACKUP_FILE "last-backup.json"

#define KT_WIRE_MAX (1u << 20) /* largest admin-socket message */

/* ---- Paths ----------------------------------------------------------------------------------- */

typedef struct kt_paths {
    char home[PATH_MAX];
    char confdir[PATH_MAX];  /* home/.keytrustee */
    char ssldir[PATH_MAX];   /* confdir/.ssl */
    char dbdir[PATH_MAX];    /* home/db unless --pg-rootdir */
    char rundir[PATH_MAX];   /* home/run */
    char logdir[PATH_MAX];   /* home/logs */
} kt_paths;

/* Fills `paths` from --confdir (may be NULL), then KEYTRUSTEE_HOME, then the default; `dbdir`
 * (may be NULL) overrides home/db. Creates nothing. */
int kt_paths_resolve(kt_paths *paths, const char *confdir, const char *dbdir, char *error,
                     size_t error_size);
/* out = directory + "/" + name; -1 when it does not fit. */
int kt_path_join(char *out, size_t out_size, const char *directory, const char *name);
/* Creates the directory (and parents) with mode 0700, or checks that an existing one is a
 * directory not accessible by group or others, with the chmod that fixes it in the message. */
int kt_private_directory(const char *path, char *error, size_t error_size);

/* ---- Config files ---------------------------------------------------------------------------- */

typedef struct kt_config kt_config;

kt_config *kt_config_new(void);
void kt_config_free(kt_config *config);
/* Loads a file; a missing file is an error unless missing_ok (then an empty config). */
int kt_config_load(const char *path, bool missing_ok, kt_config **config, char *error,
                   size_t error_size);
const char *kt_config_get(const kt_config *config, const char *key, const char *fallback);
/* Integer value in [minimum, maximum], or fallback when the key is absent. */
int kt_config_get_long(const kt_config *config, const char *key, long fallback, long minimum,
                       long maximum, long *value, char *error, size_t error_size);
/* Sets or replaces a key (value NULL removes it). */
int kt_config_set(kt_config *config, const char *key, const char *value);
/* Writes atomically with mode 0600, keys in insertion order. */
int kt_config_save(const kt_config *config, const char *path, char *error, size_t error_size);

/* ---- Logging --------------------------------------------------------------------------------- */

typedef enum kt_log_level { KT_LOG_DEBUG, KT_LOG_INFO, KT_LOG_WARNING, KT_LOG_ERROR } kt_log_level;

/* Lines look like: 2026-11-28T12:00:00.123Z keytrusteed[1234] info: message
 * `path` NULL logs to stderr. */
int kt_log_open(const char *program, kt_log_level level, const char *path);
int kt_log_level_parse(const char *text, kt_log_level *level);
void kt_log(kt_log_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* ---- Admin socket ---------------------------------------------------------------------------- */

/* One framed message (see above). Returns 0, or -1 with errno-style text in error. `timeout_ms`
 * bounds the whole receive (0 = wait forever). After a failed receive errno is ECONNRESET (peer
 * closed between messages), EPROTO (closed mid-message), ETIMEDOUT, EMSGSIZE (length outside
 * 1..KT_WIRE_MAX: stop using the stream) or EBADMSG (a whole message that is not a JSON object:
 * the stream is still in step). */
int kt_wire_send(int fd, const json_t *message, char *error, size_t error_size);
int kt_wire_receive(int fd, int timeout_ms, json_t **message, char *error, size_t error_size);

typedef struct kt_db_connection kt_db_connection;

/* Connects to keytrustee-db's admin socket under paths->rundir. The error says to start
 * keytrustee-db when nothing listens. */
kt_db_connection *kt_db_connect(const kt_paths *paths, char *error, size_t error_size);
/* Sends `request` (not consumed) and waits for the response (timeout_ms, 0 = 30 s). Returns 0 when a
 * response arrived — check its "ok" — or -1 when the connection failed (the connection is then
 * unusable and should be closed). */
int kt_db_call(kt_db_connection *connection, const json_t *request, int timeout_ms,
               json_t **response, char *error, size_t error_size);
void kt_db_disconnect(kt_db_connection *connection); /* NULL allowed */

/* ---- Small shared helpers -------------------------------------------------------------------- */

/* Writes "pid\n" to path atomically; refuses when the file names a live process. */
int kt_pidfile_write(const char *path, char *error, size_t error_size);
/* Detaches from the terminal (double fork, setsid, stdio to /dev/null). */
int kt_daemonize(char *error, size_t error_size);
/* Base64 field of a JSON object decoded into out; -1 when absent, not a string, bad base64 or too
 * long. */
int kt_json_get_base64(const json_t *object, const char *key, unsigned char *out, size_t out_size,
                       size_t *length);
/* Sets key to the base64 of the bytes; -1 on allocation failure. */
int kt_json_set_base64(json_t *object, const char *key, const void *bytes, size_t length);
/* Writes all `length` bytes to fd, going on after short writes and EINTR; 0, or -1 with errno
 * set by the failing write (0 written counts as a failure, errno then unchanged). */
int kt_write_all(int fd, const void *data, size_t length);
/* Replaces every byte outside printable ASCII with '?', in place. For messages that quote what a
 * peer sent (an op name, a field, a handle) and are cut to a length with "%.64s": a cut can split
 * a UTF-8 sequence, and jansson refuses to build a string that is not valid UTF-8. Printable
 * ASCII is valid UTF-8 and cannot break a terminal or a log line. */
void kt_text_make_printable(char *text);

/* ---- Operator command lines (cli.c) ---------------------------------------------------------- */

/* ktadmin and keytrustee-orgtool: global options before the command name, then the command's own
 * options with getopt_long; a bad command line is "PROGRAM COMMAND: <message>" and the command's
 * synopsis on stderr, and exit status KT_CLI_EXIT_USAGE. */
#define KT_CLI_EXIT_OK    0
#define KT_CLI_EXIT_USAGE 2

typedef enum kt_cli_parse_result {
    KT_CLI_PARSE_OK,
    KT_CLI_PARSE_HELP, /* --help was given and the usage printed: exit 0 */
    KT_CLI_PARSE_ERROR /* a message and the synopsis were printed: exit 2 */
} kt_cli_parse_result;

typedef struct kt_cli_program {
    const char *name;        /* "ktadmin" */
    const char *usage;       /* --help text */
    const char *short_usage; /* after a global usage error */
} kt_cli_program;

/* Prints "PROGRAM COMMAND: <message>" and the synopsis of `usage` (its lines up to the first
 * option description) to stderr. */
void kt_cli_usage_error(const char *program, const char *command, const char *usage,
                        const char *format, ...) __attribute__((format(printf, 4, 5)));
void kt_cli_usage_verror(const char *program, const char *command, const char *usage,
                         const char *format, va_list arguments)
    __attribute__((format(printf, 4, 0)));
/* Reports what getopt_long returned for an unknown option ('?') or a missing argument (':'). */
void kt_cli_option_error(const char *program, const char *command, const char *usage, int result,
                         char **argv);
/* Rejects arguments left after the options. */
kt_cli_parse_result kt_cli_no_operands(const char *program, const char *command,
                                       const char *usage, int argc, char **argv);
/* Parses --confdir DIR (into *confdir), --help and --version before the command name. Returns the
 * index of the command name, or -1 with *exit_code set: KT_CLI_EXIT_OK after --help or
 * --version (printed), KT_CLI_EXIT_USAGE after a message on stderr. */
int kt_cli_global_options(const kt_cli_program *program, int argc, char **argv,
                          const char **confdir, int *exit_code);

/* ---- Audit log (audit.c) -------------------------------------------------------------------- */

/* logs/audit.log: one hash-chained JSON line per security-relevant event, shared by keytrusteed
 * and keytrustee-db (batches under flock); format, durability window and the disk-full rule are
 * in audit.c's header comment and docs/security.md. */
#define KT_AUDIT_FILE     "audit.log"
#define KT_AUDIT_FLUSH_MS 100L   /* the flusher writes and fsyncs this often */
#define KT_AUDIT_BACKLOG  10000u /* events kept in memory while the file cannot be written */
#define KT_AUDIT_RESERVE_WAIT_MS 2000L /* a reservation waits this long for a flusher behind */

/* What happened. No field may carry a secret; NULL or "" is written as "-". */
typedef struct kt_audit_event {
    const char *actor;  /* client fingerprint, "admin uid=U pid=P", "unverified FINGERPRINT", ... */
    const char *action; /* "deposit.put", "client.set_state", "auth", ... */
    const char *object; /* uuid, handle, org name, fingerprint */
    const char *result; /* "ok", or the HTTP status and error code */
    const char *source; /* peer address, or "local" */
} kt_audit_event;

/* Opens (creating, 0600) paths->logdir/audit.log and starts the flusher; refuses a file readable
 * by group or others with the chmod in the message. Before it is opened, the calls below accept
 * everything and record nothing (tools and fuzzers). */
int kt_audit_open(const kt_paths *paths, const char *program, char *error, size_t error_size);
/* Reserves room for one event; false when the backlog is at its bound: refuse the request then.
 * While the file is writable and only the flusher is behind, it first waits for room (at most
 * KT_AUDIT_RESERVE_WAIT_MS). A reservation is consumed by kt_audit_record or given back by
 * kt_audit_release. */
bool kt_audit_reserve(void);
void kt_audit_release(void);
/* Queues an event (the flusher writes it within KT_AUDIT_FLUSH_MS). */
void kt_audit_record(const kt_audit_event *event);
/* Flushes what is queued, stops the flusher, closes the file. */
void kt_audit_close(void);
/* Verifies a whole audit file: every entry's hash, sequence number and link to the one before.
 * Returns 0 with the entry count and the head ("seq N hash H") or -1 with a sentence naming the
 * first bad line. */
int kt_audit_verify(const char *path, long *entries, char *head, size_t head_size,
                    char *message, size_t message_size);

/* ---- Least privilege (privilege.c) --------------------------------------------------------- */

#define KT_SERVICE_USER "keytrustee" /* the daemons' default --user */

/* No core dumps, not dumpable (no ptrace, no /proc/PID/mem). */
int kt_process_harden(char *error, size_t error_size);
/* Refuses a file accessible by group or others; the message gives the chmod. */
int kt_private_file_check(const char *path, char *error, size_t error_size);
/* As root: become `user` for good (setgroups, setgid, setuid) and check root cannot be regained.
 * No-op when not root or user is ""; a missing user is a warning unless `user_given` (--user). */
int kt_privilege_drop(const char *user, bool user_given, char *error, size_t error_size);
/* The uid and gid the daemon will drop to; -1 when it will not drop (not root, "", no user). */
int kt_user_ids(const char *user, uid_t *uid, gid_t *gid);

#endif /* KT_APP_H */
