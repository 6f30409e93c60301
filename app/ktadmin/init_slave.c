/*
 * init_slave.c — `ktadmin init-slave --master HOST`: makes this host the passive of a pair by
 * copying the active's database in full (the seed's pg_basebackup step).
 *
 * Order, as in the seed: on the active, `ktadmin init` and `ktadmin db --bootstrap --slave THIS`;
 * .keytrustee copied here with rsync (without .ssl), which brings the server keys — including the
 * replication pair secret this host proves itself with; then this command; then keytrustee-db is
 * started here, `ktadmin init --external-address THIS` makes this host's own certificate, and
 * keytrusteed is started.
 *
 * The database directory must be empty: the copy never overwrites anything. The copy itself is
 * replication/'s base copy (temporary file, fsync, integrity check, rename), which also records
 * the position the passive then streams from. keytrustee-db.conf is written last, so a failed copy
 * leaves no half-configured passive behind.
 *
 * Where writers go: the passive answers writes with the active's URL. Until `ktadmin init` runs
 * here, keytrustee.conf is still the copy from the active, so its external_address is the
 * active's — that is what active_url is made of (unless --active-url says otherwise).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"
#include "replication/replication.h"
#include "storage/storage.h"

static const char init_slave_usage[] =
    "usage: ktadmin [--confdir DIR] init-slave --master HOST [--pg-port N] [--pg-rootdir DIR]\n"
    "                [--active-url URL] [--no-import-key] [--no-start]\n"
    "  --master HOST      the active node (its replication port is --pg-port)\n"
    "  --pg-port N        the active's replication port (default 11381)\n"
    "  --pg-rootdir DIR   database directory here; must be empty (default $KEYTRUSTEE_HOME/db)\n"
    "  --active-url URL   where the passive sends writers (default: https:// + the\n"
    "                     external_address in the keytrustee.conf copied from the active)\n"
    "  --no-import-key    the server keys were copied with rsync (the only way keytrustee takes)\n"
    "  --no-start         do not start keytrustee-db after the copy\n";

typedef struct init_slave_options {
    const char *master;
    const char *port;
    const char *rootdir;
    const char *active_url;
    bool no_start;
} init_slave_options;

typedef struct slave_files {
    kt_paths paths;
    char database[PATH_MAX];
    char db_conf[PATH_MAX];
    char server_key[PATH_MAX];
    char server_conf[PATH_MAX];
} slave_files;

static ktadmin_parse_result check_options(const init_slave_options *options)
{
    long port = 0;
    if (options->master == NULL) {
        ktadmin_usage_error("init-slave", init_slave_usage, "--master HOST is required");
        return KTADMIN_PARSE_ERROR;
    }
    if (!ktadmin_host_valid(options->master)) {
        ktadmin_usage_error("init-slave", init_slave_usage,
                            "--master '%s' is neither a host name nor an IP address",
                            options->master);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->port != NULL && ktadmin_parse_port(options->port, &port) != 0) {
        ktadmin_usage_error("init-slave", init_slave_usage,
                            "--pg-port '%s' is not a port number from 1 to 65535", options->port);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->active_url != NULL && strncmp(options->active_url, "https://", 8) != 0) {
        ktadmin_usage_error("init-slave", init_slave_usage,
                            "--active-url must be an https:// URL");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          init_slave_options *options)
{
    static const struct option long_options[] = {
        {"master", required_argument, NULL, 'm'},
        {"pg-port", required_argument, NULL, 'p'},
        {"pg-rootdir", required_argument, NULL, 'r'},
        {"active-url", required_argument, NULL, 'u'},
        {"no-import-key", no_argument, NULL, 'k'},
        {"no-start", no_argument, NULL, 'n'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'm': options->master = optarg; break;
        case 'p': options->port = optarg; break;
        case 'r': options->rootdir = optarg; break;
        case 'u': options->active_url = optarg; break;
        case 'k': break; /* keys always come from the rsync of .keytrustee */
        case 'n': options->no_start = true; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(init_slave_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("init-slave", init_slave_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    if (ktadmin_no_operands("init-slave", init_slave_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_PARSE_ERROR;
    return check_options(options);
}

static int resolve_files(const ktadmin_context *context, const init_slave_options *options,
                         slave_files *files)
{
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&files->paths, context->confdir, options->rootdir, error,
                         sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (kt_path_join(files->database, PATH_MAX, files->paths.dbdir, KT_DB_FILE_NAME) != 0 ||
        kt_path_join(files->db_conf, PATH_MAX, files->paths.dbdir, KT_DB_CONF_FILE) != 0 ||
        kt_path_join(files->server_key, PATH_MAX, files->paths.confdir, KT_SERVER_KEY_FILE) != 0 ||
        kt_path_join(files->server_conf, PATH_MAX, files->paths.confdir, KT_CONF_FILE) != 0) {
        ktadmin_fail("the path %s is too long", files->paths.dbdir);
        return -1;
    }
    return 0;
}

/* 0 when the directory is missing or empty; -1 (reported) otherwise. */
static int check_directory_empty(const char *path)
{
    DIR *directory = opendir(path);
    if (directory == NULL) {
        if (errno == ENOENT)
            return 0;
        ktadmin_fail("cannot read the database directory %s: %s", path, strerror(errno));
        return -1;
    }
    const struct dirent *entry;
    const char *found = NULL;
    while ((entry = readdir(directory)) != NULL) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
            found = entry->d_name;
            break;
        }
    }
    if (found != NULL)
        ktadmin_fail("the database directory %s is not empty (it holds %s); init-slave copies "
                     "the active's database only into an empty directory. If this host's data "
                     "is no longer needed, stop keytrustee-db and move %s aside",
                     path, found, path);
    closedir(directory);
    return found != NULL ? -1 : 0;
}

static kt_server_keys *load_server_keys(const slave_files *files)
{
    char error[PATH_MAX + 256];
    kt_server_keys *keys = NULL;
    if (access(files->server_key, F_OK) != 0) {
        ktadmin_fail("%s does not exist: copy the active's .keytrustee here first, e.g. "
                     "`rsync -zav --exclude .ssl /var/lib/keytrustee/.keytrustee "
                     "root@THIS-HOST:/var/lib/keytrustee/.` on the active",
                     files->server_key);
        return NULL;
    }
    if (kt_server_keys_load(files->server_key, &keys, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return NULL;
    }
    return keys;
}

/* https:// + the active's external_address as copied in keytrustee.conf; "" when unknown. */
static void derive_active_url(const slave_files *files, const init_slave_options *options,
                              char *url, size_t url_size)
{
    url[0] = '\0';
    if (options->active_url != NULL) {
        snprintf(url, url_size, "%s", options->active_url);
        return;
    }
    kt_config *config = NULL;
    char error[PATH_MAX + 256];
    if (kt_config_load(files->server_conf, true, &config, error, sizeof error) != 0)
        return;
    const char *address = kt_config_get(config, "external_address", NULL);
    const char *port = kt_config_get(config, "port", NULL);
    if (address != NULL && strchr(address, ':') == NULL && port != NULL)
        snprintf(url, url_size, "https://%s:%s", address, port);
    else if (address != NULL)
        snprintf(url, url_size, "https://%s", address);
    else
        snprintf(url, url_size, "https://%s:%d", options->master, KT_DEFAULT_HTTPS_PORT);
    kt_config_free(config);
}

static void log_replication(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    if (level <= KT_REPL_LOG_INFO)
        fprintf(stderr, "ktadmin init-slave: %s\n", message);
}

static int copy_database(const slave_files *files, const init_slave_options *options,
                         const kt_server_keys *keys)
{
    kt_repl_config config = {
        .role = KT_REPL_PASSIVE,
        .database_path = files->database,
        .state_directory = files->paths.dbdir,
        .master_host = options->master,
        .master_port = options->port,
        .pair_key = keys->replication_key,
        .log = log_replication,
    };
    char error[PATH_MAX + 512];
    if (kt_repl_base_copy(&config, error, sizeof error) != 0) {
        ktadmin_fail("the copy from %s failed: %s", options->master, error);
        return -1;
    }
    return 0;
}

static int write_db_conf(const slave_files *files, const init_slave_options *options,
                         const char *active_url)
{
    kt_config *config = kt_config_new();
    if (config == NULL) {
        ktadmin_fail("out of memory");
        return -1;
    }
    const char *port = options->port != NULL ? options->port : "11381";
    int failed = kt_config_set(config, "role", "passive");
    failed |= kt_config_set(config, "master", options->master);
    failed |= kt_config_set(config, "master_port", port);
    failed |= kt_config_set(config, "replication_port", port);
    failed |= kt_config_set(config, "synchronous", "no");
    if (active_url[0] != '\0')
        failed |= kt_config_set(config, "active_url", active_url);
    char error[PATH_MAX + 256];
    if (failed != 0)
        ktadmin_fail("out of memory");
    else if (kt_config_save(config, files->db_conf, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        failed = -1;
    }
    kt_config_free(config);
    return failed != 0 ? -1 : 0;
}

/* Starts keytrustee-db from the directory ktadmin runs from; it detaches by itself. */
static int start_database_service(const ktadmin_context *context, const slave_files *files)
{
    char self[PATH_MAX], program[PATH_MAX + 32];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) {
        ktadmin_fail("cannot find keytrustee-db next to ktadmin; start it yourself");
        return -1;
    }
    self[length] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    snprintf(program, sizeof program, "%s/keytrustee-db", self);
    pid_t child = fork();
    if (child < 0) {
        ktadmin_fail("cannot start keytrustee-db: %s", strerror(errno));
        return -1;
    }
    if (child == 0) {
        if (context->confdir != NULL)
            execl(program, program, "--confdir", context->confdir, "--pg-rootdir",
                  files->paths.dbdir, (char *)NULL);
        else
            execl(program, program, "--pg-rootdir", files->paths.dbdir, (char *)NULL);
        fprintf(stderr, "ktadmin: cannot run %s: %s\n", program, strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ktadmin_fail("keytrustee-db did not start; see its message above");
        return -1;
    }
    return 0;
}

int ktadmin_init_slave(ktadmin_context *context, int argc, char **argv)
{
    init_slave_options options = {.master = NULL};
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    slave_files files;
    if (resolve_files(context, &options, &files) != 0 ||
        check_directory_empty(files.paths.dbdir) != 0)
        return KTADMIN_EXIT_FAILURE;
    kt_server_keys *keys = load_server_keys(&files);
    if (keys == NULL)
        return KTADMIN_EXIT_FAILURE;
    char error[PATH_MAX + 256], active_url[512];
    int result = KTADMIN_EXIT_FAILURE;
    derive_active_url(&files, &options, active_url, sizeof active_url);
    if (kt_private_directory(files.paths.dbdir, error, sizeof error) != 0)
        ktadmin_fail("%s", error);
    else if (copy_database(&files, &options, keys) == 0 &&
             write_db_conf(&files, &options, active_url) == 0)
        result = KTADMIN_EXIT_OK;
    kt_server_keys_free(keys);
    if (result != KTADMIN_EXIT_OK)
        return result;
    printf("Copied the database from %s into %s; this node is the passive (writers are sent to "
           "%s)\n", options.master, files.database, active_url[0] ? active_url : "the active");
    if (options.no_start) {
        printf("Next: `service keytrustee-db start`, `ktadmin init --external-address THIS-HOST`, "
               "`service keytrusteed start`\n");
        return KTADMIN_EXIT_OK;
    }
    return start_database_service(context, &files) == 0 ? KTADMIN_EXIT_OK
                                                         : KTADMIN_EXIT_FAILURE;
}
