/*
 * replication_glue.c — THE seam between keytrustee-db and replication/.
 *
 * Everything keytrustee-db needs from replication goes through the functions declared in
 * service.h and defined here, and nothing else in keytrustee-db knows replication exists:
 *   start/stop        bring replication/ up for this node's role and down again. Every role runs
 *                     it: a standalone node captures its commits into its log too, so that a
 *                     later `db --bootstrap --slave` style conversion needs no extra copy; an
 *                     active listens on the replication port; a passive connects to its master,
 *                     spools what it is sent and applies it once the active confirms it;
 *   writer_vfs        the SQLite VFS the writer opens with: replication/'s shim, which ships
 *                     each commit's WAL frames inside the commit's final xSync (none on a
 *                     passive, which runs no writer at all);
 *   attach_writer     installs replication/'s commit classifier on the writer store, so a failed
 *                     COMMIT is reported as refused, indeterminate or disk full;
 *   writable          whether writes are accepted now: a passive never; an active only while
 *                     replication says a commit can be made durable on both nodes;
 *   set_synchronous   `ktadmin enable-synchronous-replication` at run time;
 *   status            the "replication" object of the status op (field names in app.h).
 *
 * Order (replication.h): replication starts before the writer store is opened, because the
 * active first reconciles its -wal file with its log; at shutdown the writer store is closed
 * first, because the VFS must outlive every connection that uses it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/keytrustee-db/service.h"
#include "crypto/crypto.h"
#include "replication/replication.h"

struct kt_replication_glue {
    kt_db_role role;
    kt_repl *replication;
};

static kt_repl_role replication_role(kt_db_role role)
{
    switch (role) {
    case KT_ROLE_ACTIVE: return KT_REPL_ACTIVE;
    case KT_ROLE_PASSIVE: return KT_REPL_PASSIVE;
    case KT_ROLE_STANDALONE: break;
    }
    return KT_REPL_STANDALONE;
}

/* replication/ logs through keytrustee-db's log, at the matching level. */
static void log_replication(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    kt_log_level mapped = KT_LOG_DEBUG;
    switch (level) {
    case KT_REPL_LOG_ERROR: mapped = KT_LOG_ERROR; break;
    case KT_REPL_LOG_WARNING: mapped = KT_LOG_WARNING; break;
    case KT_REPL_LOG_INFO: mapped = KT_LOG_INFO; break;
    case KT_REPL_LOG_DEBUG: mapped = KT_LOG_DEBUG; break;
    }
    kt_log(mapped, "replication: %s", message);
}

/* The pair secret is the server key file's replication subkey: both nodes have it after the
 * seed's rsync of .keytrustee. */
static kt_server_keys *load_pair_secret(const kt_paths *paths, char *error, size_t error_size)
{
    char path[PATH_MAX];
    kt_server_keys *keys = NULL;
    if (kt_path_join(path, sizeof path, paths->confdir, KT_SERVER_KEY_FILE) != 0) {
        snprintf(error, error_size, "the path %s is too long", paths->confdir);
        return NULL;
    }
    if (kt_server_keys_load(path, &keys, error, error_size) != 0)
        return NULL;
    return keys;
}

int kt_replication_glue_start(kt_replication_glue **glue, const kt_db_settings *settings,
                              const kt_paths *paths, char *error, size_t error_size)
{
    char database[PATH_MAX], listen_port[16], master_port[16];
    if (kt_path_join(database, sizeof database, paths->dbdir, KT_DB_FILE_NAME) != 0) {
        snprintf(error, error_size, "the path %s is too long", paths->dbdir);
        return -1;
    }
    kt_server_keys *keys = load_pair_secret(paths, error, error_size);
    if (keys == NULL)
        return -1;
    *glue = calloc(1, sizeof **glue);
    if (*glue == NULL) {
        kt_server_keys_free(keys);
        snprintf(error, error_size, "out of memory starting replication");
        return -1;
    }
    snprintf(listen_port, sizeof listen_port, "%ld", settings->replication_port);
    snprintf(master_port, sizeof master_port, "%ld", settings->master_port);
    kt_repl_config config = {
        .role = replication_role(settings->role),
        .database_path = database,
        .state_directory = paths->dbdir,
        .listen_host = settings->replication_listen,
        .listen_port = listen_port,
        .master_host = settings->master,
        .master_port = master_port,
        .pair_key = keys->replication_key,
        .synchronous = settings->synchronous,
        .log = log_replication,
    };
    (*glue)->role = settings->role;
    int result = kt_repl_start(&(*glue)->replication, &config, error, error_size);
    kt_server_keys_free(keys); /* kt_repl_start copied the pair key */
    if (result != 0) {
        free(*glue);
        *glue = NULL;
        return -1;
    }
    return 0;
}

const char *kt_replication_glue_writer_vfs(const kt_replication_glue *glue)
{
    return kt_repl_vfs_name(glue->replication);
}

void kt_replication_glue_attach_writer(kt_replication_glue *glue, kt_store *writer)
{
    kt_store_set_commit_classifier(writer, kt_repl_commit_failure, glue->replication);
}

bool kt_replication_glue_runs_writer(const kt_replication_glue *glue)
{
    return glue->role != KT_ROLE_PASSIVE;
}

bool kt_replication_glue_writable(const kt_replication_glue *glue, const char **reason,
                                  const char **message)
{
    static __thread char sentence[512];
    *reason = NULL;
    *message = NULL;
    if (glue->role == KT_ROLE_PASSIVE) {
        *reason = "passive";
        *message = "this node is the passive; write to the active";
        return false;
    }
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    if (status.writable)
        return true;
    snprintf(sentence, sizeof sentence,
             "writes are refused because the pair cannot store them on both nodes now (%s); "
             "existing keys can still be read, retry the write later",
             status.reason[0] != '\0' ? status.reason : status.state);
    *reason = "write_unavailable";
    *message = sentence;
    return false;
}

void kt_replication_glue_set_synchronous(kt_replication_glue *glue, bool synchronous)
{
    kt_repl_set_synchronous(glue->replication, synchronous);
    kt_log(KT_LOG_INFO, "synchronous replication %s", synchronous ? "enabled" : "disabled");
}

static json_t *position_object(const kt_repl_position *position)
{
    char hash[KT_REPL_HASH_HEX_CHARS + 1];
    kt_repl_position_hex(position, hash);
    return json_pack("{s:I, s:I, s:s}", "epoch", (json_int_t)position->epoch, "txid",
                     (json_int_t)position->txid, "hash", hash);
}

json_t *kt_replication_glue_status(const kt_replication_glue *glue)
{
    kt_repl_status status;
    kt_repl_get_status(glue->replication, &status);
    return json_pack("{s:s, s:s, s:I, s:b, s:b, s:s, s:b, s:s, s:o, s:o, s:I, s:I}",
                     "role", kt_db_role_name(glue->role),
                     "state", status.state,
                     "epoch", (json_int_t)status.epoch,
                     "synchronous", status.synchronous,
                     "writable", glue->role != KT_ROLE_PASSIVE && status.writable,
                     "reason", status.reason,
                     "peer_connected", status.peer_connected,
                     "peer_address", status.peer_address,
                     "position", position_object(&status.position),
                     "peer_position", position_object(&status.peer_position),
                     "lag_transactions", (json_int_t)status.lag_transactions,
                     "lag_ms", (json_int_t)status.lag_ms);
}

void kt_replication_glue_stop(kt_replication_glue *glue)
{
    if (glue == NULL)
        return;
    kt_repl_stop(glue->replication);
    free(glue);
}
