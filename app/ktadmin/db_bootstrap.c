/*
 * db_bootstrap.c — `ktadmin db --bootstrap`: creates the database directory, the empty database
 * and keytrustee-db.conf, before keytrustee-db runs for the first time.
 *
 * This is the one place the database file is created; from then on keytrustee-db owns it and every
 * write goes through its admin socket. The command refuses a directory that already holds a
 * database, so running it twice never replaces keys. The original's options are kept: --port is
 * the replication port, --pg-rootdir the database directory, --slave the passive's host name.
 * --db-connect (a PostgreSQL URL in the original) is refused with an explanation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "app/ktadmin/ktadmin.h"
#include "storage/storage.h"

static const char db_usage[] =
    "usage: ktadmin [--confdir DIR] db --bootstrap [--port N] [--pg-rootdir DIR] [--slave HOST]\n"
    "  --bootstrap        create the database (once, before keytrustee-db first starts)\n"
    "  --port N           replication port the passive connects to (default 11381)\n"
    "  --pg-rootdir DIR   database directory (default $KEYTRUSTEE_HOME/db)\n"
    "  --slave HOST       host name of the passive: this node becomes the active of a pair\n";

typedef struct db_options {
    bool bootstrap;
    const char *port;
    const char *rootdir;
    const char *slave;
    const char *connect_url;
} db_options;

typedef struct db_files {
    kt_paths paths;
    char database[PATH_MAX];
    char conf[PATH_MAX];
    char server_key[PATH_MAX];
} db_files;

static ktadmin_parse_result check_db_options(const db_options *options)
{
    long port = 0;
    if (options->connect_url != NULL) {
        ktadmin_usage_error("db", db_usage, "keytrustee stores its database in SQLite; "
                            "--db-connect (a PostgreSQL URL) does not apply: use --pg-rootdir DIR "
                            "to name the database directory");
        return KTADMIN_PARSE_ERROR;
    }
    if (!options->bootstrap) {
        ktadmin_usage_error("db", db_usage, "nothing to do: give --bootstrap to create the "
                            "database");
        return KTADMIN_PARSE_ERROR;
    }
    if (options->port != NULL && ktadmin_parse_port(options->port, &port) != 0) {
        ktadmin_usage_error("db", db_usage, "--port '%s' is not a port number from 1 to 65535",
                            options->port);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->slave != NULL && !ktadmin_host_valid(options->slave)) {
        ktadmin_usage_error("db", db_usage, "--slave '%s' is neither a host name nor an IP "
                            "address (give the passive's host name, without a port)",
                            options->slave);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->rootdir != NULL && options->rootdir[0] == '\0') {
        ktadmin_usage_error("db", db_usage, "--pg-rootdir needs a directory");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static ktadmin_parse_result parse_db_options(ktadmin_context *context, int argc, char **argv,
                                             db_options *options)
{
    static const struct option long_options[] = {
        {"bootstrap", no_argument, NULL, 'b'},
        {"port", required_argument, NULL, 'p'},
        {"pg-rootdir", required_argument, NULL, 'r'},
        {"slave", required_argument, NULL, 's'},
        {"db-connect", required_argument, NULL, 'd'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'b': options->bootstrap = true; break;
        case 'p': options->port = optarg; break;
        case 'r': options->rootdir = optarg; break;
        case 's': options->slave = optarg; break;
        case 'd': options->connect_url = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(db_usage, stdout); return KTADMIN_PARSE_HELP;
        default: ktadmin_option_error("db", db_usage, result, argv); return KTADMIN_PARSE_ERROR;
        }
    }
    if (ktadmin_no_operands("db", db_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_PARSE_ERROR;
    return check_db_options(options);
}

static int resolve_files(ktadmin_context *context, const db_options *options, db_files *files)
{
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&files->paths, context->confdir, options->rootdir, error,
                         sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (kt_path_join(files->database, PATH_MAX, files->paths.dbdir, KT_DB_FILE_NAME) != 0 ||
        kt_path_join(files->conf, PATH_MAX, files->paths.dbdir, KT_DB_CONF_FILE) != 0 ||
        kt_path_join(files->server_key, PATH_MAX, files->paths.confdir,
                     KT_SERVER_KEY_FILE) != 0) {
        ktadmin_fail("the database directory path %s is too long", files->paths.dbdir);
        return -1;
    }
    return 0;
}

/* 1 when the path exists, 0 when not, -1 (reported) when it cannot be checked. */
static int path_exists(const char *path)
{
    struct stat status;
    if (lstat(path, &status) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    ktadmin_fail("cannot check %s: %s", path, strerror(errno));
    return -1;
}

/* The node must have been initialized, and the database must not exist yet. */
static int check_preconditions(const db_files *files)
{
    int key = path_exists(files->server_key);
    if (key == 0)
        ktadmin_fail("%s does not exist: run `ktadmin init` before `ktadmin db --bootstrap`",
                     files->server_key);
    if (key != 1)
        return -1;
    int database = path_exists(files->database);
    if (database == 1)
        ktadmin_fail("%s is already bootstrapped; the database %s exists and was left as it is. "
                     "To start over, stop keytrustee-db and move %s aside",
                     files->paths.dbdir, files->database, files->paths.dbdir);
    return database == 0 ? 0 : -1;
}

/* keytrustee.conf's listen address, or every address when it names none. */
static const char *listen_address(const db_files *files)
{
    static char address[256];
    char path[PATH_MAX], error[PATH_MAX + 256];
    kt_config *config = NULL;
    snprintf(address, sizeof address, "0.0.0.0");
    if (kt_path_join(path, sizeof path, files->paths.confdir, KT_CONF_FILE) == 0 &&
        kt_config_load(path, true, &config, error, sizeof error) == 0) {
        snprintf(address, sizeof address, "%s", kt_config_get(config, "listen", "0.0.0.0"));
        kt_config_free(config);
    }
    return address;
}

static int write_db_conf(const db_files *files, const db_options *options)
{
    kt_config *config = kt_config_new();
    if (config == NULL) {
        ktadmin_fail("out of memory");
        return -1;
    }
    const char *port = options->port != NULL ? options->port : "11381";
    int failed = kt_config_set(config, "role", options->slave != NULL ? "active" : "standalone");
    if (options->slave != NULL)
        failed |= kt_config_set(config, "slave", options->slave);
    failed |= kt_config_set(config, "replication_port", port);
    /* The replication port listens where the HTTPS port does (keytrustee.conf's listen). */
    failed |= kt_config_set(config, "replication_listen", listen_address(files));
    failed |= kt_config_set(config, "synchronous", "no");
    char error[PATH_MAX + 256];
    if (failed != 0) {
        ktadmin_fail("out of memory");
    } else if (kt_config_save(config, files->conf, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        failed = -1;
    }
    kt_config_free(config);
    return failed != 0 ? -1 : 0;
}

static int create_database(const db_files *files, int *schema_version)
{
    kt_store_options store_options = {.writer = true, .create = true};
    kt_store *store = NULL;
    char error[PATH_MAX + 256];
    if (kt_store_open(&store, files->database, &store_options, error, sizeof error) != 0) {
        ktadmin_fail("cannot create the database: %s", error);
        return -1;
    }
    *schema_version = kt_store_schema_version(store);
    kt_store_close(store);
    return 0;
}

static void report(const db_files *files, const db_options *options, int schema_version)
{
    printf("Created the database %s (schema version %d)\n", files->database, schema_version);
    if (options->slave != NULL)
        printf("Wrote %s: role active, passive %s, replication port %s, synchronous replication "
               "off\n", files->conf, options->slave, options->port ? options->port : "11381");
    else
        printf("Wrote %s: role standalone, replication port %s\n", files->conf,
               options->port ? options->port : "11381");
    printf("Next, start the database service: `service keytrustee-db start` (or "
           "`keytrustee-db --foreground`)");
    if (options->rootdir != NULL)
        printf(" with --pg-rootdir %s (for the service: ARGS=\"--pg-rootdir %s\" in "
               "/etc/sysconfig/keytrustee-db)", files->paths.dbdir, files->paths.dbdir);
    printf(", then `service keytrusteed start`\n");
    if (options->slave != NULL)
        printf("On %s, run `ktadmin init-slave --master <this host>`, then enable synchronous "
               "replication here with `ktadmin enable-synchronous-replication`\n",
               options->slave);
}

int ktadmin_db(ktadmin_context *context, int argc, char **argv)
{
    db_options options = {.bootstrap = false};
    ktadmin_parse_result parsed = parse_db_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    db_files files;
    char error[PATH_MAX + 256];
    if (resolve_files(context, &options, &files) != 0 || check_preconditions(&files) != 0)
        return KTADMIN_EXIT_FAILURE;
    if (kt_private_directory(files.paths.dbdir, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    int schema_version = 0;
    if (write_db_conf(&files, &options) != 0 || create_database(&files, &schema_version) != 0 ||
        ktadmin_hand_to_service_user(&files.paths) != 0)
        return KTADMIN_EXIT_FAILURE;
    report(&files, &options, schema_version);
    return KTADMIN_EXIT_OK;
}
