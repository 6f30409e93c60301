/*
 * synchronous.c — `ktadmin enable-synchronous-replication [--pg-rootdir DIR]`, run on the active.
 *
 * Until this command the pair replicates asynchronously, as PostgreSQL does before
 * synchronous_standby_names is set: the active commits locally and streams afterwards. From this
 * command on, a commit is answered only once the passive has it fsynced, and writes are refused
 * while the passive is away.
 *
 * The setting is written to keytrustee-db.conf first (so it survives restarts) and then handed to
 * the running keytrustee-db over the admin socket (so no restart is needed). If keytrustee-db is
 * not running, the setting takes effect when it starts.
 */
#include <stdio.h>
#include <string.h>

#include "app/ktadmin/ktadmin.h"

#define SYNCHRONOUS_TIMEOUT_MS 10000

static const char synchronous_usage[] =
    "usage: ktadmin [--confdir DIR] enable-synchronous-replication [--pg-rootdir DIR]\n"
    "  --pg-rootdir DIR   database directory of the active (default $KEYTRUSTEE_HOME/db)\n";

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          const char **rootdir)
{
    static const struct option long_options[] = {
        {"pg-rootdir", required_argument, NULL, 'r'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'r': *rootdir = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(synchronous_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("enable-synchronous-replication", synchronous_usage, result,
                                 argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    return ktadmin_no_operands("enable-synchronous-replication", synchronous_usage, argc, argv);
}

/* Sets synchronous = yes in keytrustee-db.conf after checking this node is the active. */
static int persist_setting(const kt_paths *paths)
{
    char path[PATH_MAX], error[PATH_MAX + 256];
    if (kt_path_join(path, sizeof path, paths->dbdir, KT_DB_CONF_FILE) != 0) {
        ktadmin_fail("the path %s is too long", paths->dbdir);
        return -1;
    }
    kt_config *config = NULL;
    if (kt_config_load(path, false, &config, error, sizeof error) != 0) {
        ktadmin_fail("%s (run this on the active, after `ktadmin db --bootstrap --slave HOST`; "
                     "give --pg-rootdir when the database is not in $KEYTRUSTEE_HOME/db)", error);
        return -1;
    }
    int result = -1;
    const char *role = kt_config_get(config, "role", "standalone");
    if (strcmp(role, "active") != 0)
        ktadmin_fail("%s says this node is %s: synchronous replication is enabled on the active "
                     "of a pair (bootstrapped with `ktadmin db --bootstrap --slave PASSIVE`)",
                     path, role);
    else if (kt_config_set(config, "synchronous", "yes") != 0)
        ktadmin_fail("out of memory");
    else if (kt_config_save(config, path, error, sizeof error) != 0)
        ktadmin_fail("%s", error);
    else
        result = 0;
    kt_config_free(config);
    return result;
}

/* Tells the running keytrustee-db; 1 when it is not running (not an error). */
static int notify_running_service(const kt_paths *paths)
{
    char error[PATH_MAX + 256];
    kt_db_connection *connection = kt_db_connect(paths, error, sizeof error);
    if (connection == NULL)
        return 1;
    json_t *request = json_pack("{s:s, s:b}", "op", "replication.set_synchronous",
                                "synchronous", 1);
    json_t *response = NULL;
    int result = request == NULL ? -1
                                 : kt_db_call(connection, request, SYNCHRONOUS_TIMEOUT_MS,
                                              &response, error, sizeof error);
    json_decref(request);
    kt_db_disconnect(connection);
    if (result != 0) {
        ktadmin_fail("keytrustee-db did not answer (%s); the setting is saved and takes effect "
                     "when keytrustee-db restarts", error);
        return -1;
    }
    if (!json_is_true(json_object_get(response, "ok"))) {
        const char *message = json_string_value(json_object_get(response, "message"));
        ktadmin_fail("keytrustee-db refused: %s", message != NULL ? message : "no reason given");
        json_decref(response);
        return -1;
    }
    json_decref(response);
    return 0;
}

int ktadmin_enable_synchronous_replication(ktadmin_context *context, int argc, char **argv)
{
    const char *rootdir = NULL;
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &rootdir);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    kt_paths paths;
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&paths, context->confdir, rootdir, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    if (persist_setting(&paths) != 0)
        return KTADMIN_EXIT_FAILURE;
    int notified = notify_running_service(&paths);
    if (notified < 0)
        return KTADMIN_EXIT_FAILURE;
    if (notified == 1)
        printf("Synchronous replication enabled in %s/%s; keytrustee-db is not running and will "
               "use it when it starts\n", paths.dbdir, KT_DB_CONF_FILE);
    else
        printf("Synchronous replication enabled: every write is now on both nodes' disks before "
               "it is answered, and writes are refused while the passive is unreachable\n");
    return KTADMIN_EXIT_OK;
}
