/*
 * replication_glue.c — THE seam between keytrustee-db and replication/.
 *
 * Everything keytrustee-db needs from replication goes through the five functions declared in
 * service.h and defined here, and nothing else in keytrustee-db knows replication exists:
 *   start/stop        bring the replication engine up for role=active (listen on the replication
 *                     port for the passive) or role=passive (connect to the master, apply what
 *                     it ships), and down again;
 *   writer_vfs        the SQLite VFS name the writer store opens with: replication/'s shim that
 *                     ships each commit's WAL frames inside xSync;
 *   attach_writer     installs replication/'s commit classifier on the writer store, so a failed
 *                     COMMIT is reported as refused, indeterminate or disk full;
 *   writable          whether writes are accepted now (a passive never; an active only while the
 *                     pair can make a write durable on both nodes);
 *   status            the "replication" object of the status op.
 *
 * Today this file does the standalone thing for every role, honestly: no VFS shim, the default
 * classifier, writable unless the conf says passive, and a status whose state is "standalone".
 * It does not pretend to replicate: an active or passive role logs a warning at start saying that
 * replication is not running. When replication/ lands, its calls go here and only here.
 */
#include <stdio.h>
#include <stdlib.h>

#include "app/keytrustee-db/service.h"

struct kt_replication_glue {
    kt_db_role role;
};

int kt_replication_glue_start(kt_replication_glue **glue, const kt_db_settings *settings,
                              const kt_paths *paths, char *error, size_t error_size)
{
    (void)paths; /* replication/ will keep its spool and state under paths->dbdir */
    *glue = calloc(1, sizeof **glue);
    if (*glue == NULL) {
        snprintf(error, error_size, "out of memory starting replication");
        return -1;
    }
    (*glue)->role = settings->role;
    if (settings->role != KT_ROLE_STANDALONE)
        kt_log(KT_LOG_WARNING,
               "keytrustee-db.conf says role = %s, but this build of keytrustee-db does not "
               "replicate yet: the database is served as a standalone node%s",
               kt_db_role_name(settings->role),
               settings->role == KT_ROLE_PASSIVE ? " that refuses writes" : "");
    return 0;
}

const char *kt_replication_glue_writer_vfs(const kt_replication_glue *glue)
{
    (void)glue;
    return NULL;
}

void kt_replication_glue_attach_writer(kt_replication_glue *glue, kt_store *writer)
{
    /* Standalone: storage's default classification (SQLITE_FULL is disk_full, the rest an error)
     * is the truth, because a local COMMIT that fails was not written. */
    (void)glue;
    (void)writer;
}

bool kt_replication_glue_writable(const kt_replication_glue *glue, const char **reason,
                                  const char **message)
{
    if (glue->role == KT_ROLE_PASSIVE) {
        *reason = "passive";
        *message = "this node is the passive; write to the active";
        return false;
    }
    *reason = NULL;
    *message = NULL;
    return true;
}

json_t *kt_replication_glue_status(const kt_replication_glue *glue)
{
    return json_pack("{s:s, s:s}", "role", kt_db_role_name(glue->role), "state", "standalone");
}

void kt_replication_glue_stop(kt_replication_glue *glue)
{
    free(glue);
}
