/*
 * service.h — what the files of keytrustee-db share: its settings, the service context every
 * thread reads, and the interfaces between the parts.
 *
 *   main.c              arguments, start-up order, signals, shutdown
 *   settings.c          db/keytrustee-db.conf read into kt_db_settings
 *   admin_server.c      the admin socket: accept loop, one thread per connection
 *   operations.c        one function per admin op: validate, call storage, build the response
 *   request_fields.c    strict typed access to a request's fields
 *   responses.c         response objects (ok, errors, org/client/deposit objects)
 *   writer.c            the single writer store, its batches and group commit
 *   status.c            the status op
 *   backup.c            the backup op (a consistent copy for `ktadmin backup`), last_backup
 *   audit.c             the audit events of operator requests (app/common/audit.c writes them)
 *   replication_glue.c  the seam where replication/ plugs into the writer and the status
 *   role_change.c       `ktadmin promote` and `switchover`: the ops, and the change main carries
 *                       out between a stop and a start of everything
 *
 * Nothing here is visible outside keytrustee-db.
 */
#ifndef KT_KEYTRUSTEE_DB_SERVICE_H
#define KT_KEYTRUSTEE_DB_SERVICE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "app/common/app.h"
#include "storage/storage.h"

#define KT_DB_PROGRAM "keytrustee-db"

/* ---- settings.c ------------------------------------------------------------------------------ */

typedef enum kt_db_role { KT_ROLE_STANDALONE, KT_ROLE_ACTIVE, KT_ROLE_PASSIVE } kt_db_role;

typedef struct kt_db_settings {
    kt_db_role role;
    char replication_listen[256]; /* bind address of the replication port (active) */
    long replication_port;
    char slave[256];              /* passive host (on the active) */
    char master[256];             /* active host (on the passive) */
    long master_port;
    bool synchronous;
    char active_url[512];         /* where a passive sends writers */
    char former_active[256];      /* active after a promotion: the old active's host, fenced */
    long former_active_port;      /* its replication port */
} kt_db_settings;

const char *kt_db_role_name(kt_db_role role);
/* Reads keytrustee-db.conf; every problem names the file (and line). */
int kt_db_settings_load(const char *path, kt_db_settings *settings, char *error,
                        size_t error_size);

/* ---- replication_glue.c ---------------------------------------------------------------------- */

typedef struct kt_replication_glue kt_replication_glue;

int kt_replication_glue_start(kt_replication_glue **glue, const kt_db_settings *settings,
                              const kt_paths *paths, char *error, size_t error_size);
/* The SQLite VFS the writer opens with (NULL: SQLite's default). */
const char *kt_replication_glue_writer_vfs(const kt_replication_glue *glue);
/* Hands the freshly opened writer store to replication (commit classifier and anything else it
 * needs); called once, from the thread that opened it, before the writer thread starts. */
void kt_replication_glue_attach_writer(kt_replication_glue *glue, kt_store *writer);
/* Whether this node accepts writes now; when not, *reason is an admin error code
 * ("passive", "write_unavailable", "fenced") and *message a sentence for the client. */
bool kt_replication_glue_writable(const kt_replication_glue *glue, const char **reason,
                                  const char **message);
/* A passive runs no writer: replication/ applies what the active ships. */
bool kt_replication_glue_runs_writer(const kt_replication_glue *glue);
/* `ktadmin enable-synchronous-replication` at run time. */
void kt_replication_glue_set_synchronous(kt_replication_glue *glue, bool synchronous);
/* Passive: whether the active it follows answers now (connected to this node, or its replication
 * port accepts a connection); `where` gets "host:port". */
bool kt_replication_glue_active_reachable(const kt_replication_glue *glue,
                                          const kt_db_settings *settings, char *where,
                                          size_t where_size);
/* Active, for `ktadmin switchover`: stops taking writes (they are answered "passive", naming
 * `new_active_url`), calls `flush` (which must return once the writes already queued are
 * answered), waits until the passive acknowledged every committed transaction and tells it to
 * take over. 0, or -1 with a sentence (writes are taken again then). */
int kt_replication_glue_hand_over(kt_replication_glue *glue, const char *new_active_url,
                                  int timeout_ms, int (*flush)(void *context),
                                  void *flush_context, char *error, size_t error_size);
/* The new active's URL while a hand-over is under way (writes are answered "passive" naming
 * it), NULL otherwise. */
const char *kt_replication_glue_handover_url(const kt_replication_glue *glue);
/* Passive: whether the active handed the role over to this node (switchover). */
bool kt_replication_glue_handover_requested(const kt_replication_glue *glue);
/* The "replication" object of the status op; NULL when memory is short. */
json_t *kt_replication_glue_status(const kt_replication_glue *glue);
void kt_replication_glue_stop(kt_replication_glue *glue); /* NULL allowed */

/* ---- writer.c -------------------------------------------------------------------------------- */

typedef struct kt_writer kt_writer;

/* One write, run by the batch's leader (the writer thread, or a lone request's own thread) inside
 * the open batch, while it alone holds the writer store. `arguments` belong to the caller,
 * who waits until the write is answered. */
typedef kt_store_status (*kt_write_function)(kt_store *store, void *arguments);

/* Opens the writer store at `database_path` and starts the writer thread (batches under
 * contention, checkpoints). */
int kt_writer_start(kt_writer **writer, const char *database_path, kt_replication_glue *glue,
                    char *error, size_t error_size);
/* Queues a write and waits for its batch's commit. Returns its status; for a failure `message`
 * receives the storage sentence (safe to show) — for KT_STORE_ERROR the detail is logged instead
 * and `message` says so. */
kt_store_status kt_writer_run(kt_writer *writer, const char *name, kt_write_function function,
                              void *arguments, char *message, size_t message_size);
/* Answers what is queued, checkpoints, closes the store and joins the thread. */
void kt_writer_stop(kt_writer *writer); /* NULL allowed */

/* ---- role_change.c -------------------------------------------------------------------------- */

typedef enum kt_role_change_kind {
    KT_ROLE_CHANGE_NONE,
    KT_ROLE_CHANGE_PROMOTE, /* passive → active under a new epoch */
    KT_ROLE_CHANGE_DEMOTE   /* active → passive of `master` (switchover) */
} kt_role_change_kind;

typedef struct kt_role_change {
    kt_role_change_kind kind;
    bool synchronous;       /* promote: start synchronous (switchover) or not (promote) */
    char master[256];       /* demote: the new active's host */
    char active_url[512];   /* demote: where this node, now passive, sends writers */
} kt_role_change;

/* ---- the service ----------------------------------------------------------------------------- */

typedef struct kt_db_service {
    kt_paths paths;
    kt_db_settings settings;
    char database_path[PATH_MAX];
    char socket_path[PATH_MAX];
    kt_replication_glue *replication;
    kt_writer *writer;
    /* A role change asked by an admin op (role_change.c), carried out by main between a stop and
     * a start of everything; the op thread fills it and raises SIGUSR1. */
    pthread_mutex_t role_mutex;
    kt_role_change role_change;
    char role_change_error[512]; /* why the last role change failed, "" when it did not */
    pthread_t watcher;           /* passive: waits for a switchover's HANDOVER */
    bool watch_started, watch_stop;
    /* Every waiting thread polls stop_read; closing stop_write wakes them all at once. */
    int stop_read;
    int stop_write;
} kt_db_service;

/* One admin connection's state, owned by its thread. */
typedef struct kt_db_session {
    kt_db_service *service;
    kt_store *reader; /* opened on first read */
    pid_t peer_pid;
    uid_t peer_uid;
    bool peer_is_api; /* keytrusteed: it audits its own requests (audit.c) */
} kt_db_session;

/* ---- admin_server.c -------------------------------------------------------------------------- */

typedef struct kt_admin_server kt_admin_server;

/* Binds the admin socket (replacing a stale one nobody answers on) with mode 0600. */
int kt_admin_server_bind(kt_admin_server **server, kt_db_service *service, char *error,
                         size_t error_size);
/* Starts the accept thread. */
int kt_admin_server_start(kt_admin_server *server, char *error, size_t error_size);
/* After stop_write was closed: joins the accept thread, waits for every connection to finish its
 * in-flight request, closes and unlinks the socket. Also undoes a bind that was never started. */
void kt_admin_server_stop(kt_admin_server *server); /* NULL allowed */

/* ---- operations.c / status.c ----------------------------------------------------------------- */

/* The response to one request; NULL only when memory is short (then the connection is closed). */
json_t *kt_operation_handle(kt_db_session *session, const json_t *request);
/* The reader store of the session, opened on first use; NULL with *failure set to an error
 * response. */
kt_store *kt_session_reader(kt_db_session *session, json_t **failure);
json_t *kt_status_handle(kt_db_session *session, const json_t *request);

/* ---- role_change.c (ops) ------------------------------------------------------------------- */

/* replication.promote {force}: passive → active, refused while the active answers unless force. */
json_t *kt_promote_handle(kt_db_session *session, const json_t *request);
/* replication.switchover {new_active_url}: on the active of a healthy pair. */
json_t *kt_switchover_handle(kt_db_session *session, const json_t *request);
/* Main, with everything stopped: carries out the pending role change (replication state and
 * keytrustee-db.conf). 0 when there was one and it was done; -1 with the reason in the
 * service's role_change_error (the node starts again in its old role). */
int kt_role_change_perform(kt_db_service *service);
/* Passive: starts the watcher that promotes this node when the active hands over (switchover);
 * stop it before the service stops. */
void kt_role_change_watch_start(kt_db_service *service);
void kt_role_change_watch_stop(kt_db_service *service);

/* ---- audit.c --------------------------------------------------------------------------------- */

typedef json_t *(*kt_db_op_function)(kt_db_session *session, const json_t *request);

/* Whether the peer process is keytrusteed (by its process name). */
bool kt_db_peer_is_api(pid_t pid);
/* Runs an op; the audited ones from operator tools are recorded in the audit log, and refused with
 * audit_unavailable when the log cannot take their event. */
json_t *kt_db_audit_run(kt_db_session *session, const char *op, kt_db_op_function function,
                        const json_t *request);

/* ---- backup.c -------------------------------------------------------------------------------- */

/* The backup op: a consistent copy of the database and replication state in a new directory. */
json_t *kt_backup_handle(kt_db_session *session, const json_t *request);
/* The last backup's {time, result, path[, message]} for the status op, or JSON null. */
json_t *kt_last_backup_object(const kt_paths *paths);

/* ---- request_fields.c ------------------------------------------------------------------------ */

/* Each returns 0, or -1 with *failure set to a bad_request response naming the field. */
int kt_fields_known(const json_t *request, const char *op, const char *const *allowed,
                    json_t **failure);
/* A string of minimum..maximum bytes without control characters (when no_control) copied into
 * out (size maximum + 1). `fallback` (NULL: required) is used when the field is absent. */
int kt_field_text(const json_t *request, const char *key, size_t minimum, size_t maximum,
                  bool no_control, const char *fallback, char *out, json_t **failure);
/* Base64 of minimum..maximum bytes into out (size >= maximum); `optional` lets it be absent
 * (length 0). */
int kt_field_base64(const json_t *request, const char *key, size_t minimum, size_t maximum,
                    bool optional, unsigned char *out, size_t *length, json_t **failure);
int kt_field_fingerprint(const json_t *request, const char *key, char *out, json_t **failure);
int kt_field_uuid(const json_t *request, const char *key, char *out, json_t **failure);
int kt_field_state(const json_t *request, const char *key, kt_state *state, json_t **failure);
bool kt_field_present(const json_t *request, const char *key);

/* ---- responses.c ----------------------------------------------------------------------------- */

json_t *kt_response_ok(void);
json_t *kt_response_error(const char *code, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* The error response for a failed storage status, with `message` (storage's sentence). */
json_t *kt_response_store_error(kt_store_status status, const char *message);
/* Sets key to object (taking the reference); on failure frees the response and returns NULL. */
json_t *kt_response_attach(json_t *response, const char *key, json_t *value);
json_t *kt_org_object(const kt_org *org);
json_t *kt_client_object(const kt_client_record *client);
json_t *kt_deposit_object(const kt_deposit *deposit, bool with_box);

#endif /* KT_KEYTRUSTEE_DB_SERVICE_H */
