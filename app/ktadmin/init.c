/*
 * init.c — `ktadmin init`: prepares a node's directories, server key, TLS certificate and
 * keytrustee.conf, and prints `Initialized directory for <fingerprint>`.
 *
 * init never throws away what exists. On the passive, the seed copies the active's .keytrustee
 * (without .ssl) before running init: the copied server key is kept, so both nodes have the same
 * identity, and only the passive's own certificate is made. The copied keytrustee.conf still names
 * the active's external address; when init makes a new certificate for a node whose server key
 * was copied and no --external-address was given, it uses this machine's host name instead, and
 * says so. keytrustee.conf is updated only in the keys given on the command line; missing keys get
 * their defaults (external_address: the host name, listen: 0.0.0.0, port: 11371). --logdir is
 * created and recorded as `logdir` for the services' log files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"

static const char init_usage[] =
    "usage: ktadmin [--confdir DIR] init [--external-address HOST[:PORT]] [--listen ADDR]\n"
    "                                    [--port N] [--logdir DIR]\n"
    "  --external-address HOST[:PORT]  the name clients use to reach this node (default: the\n"
    "                                  host name); the self-signed certificate is made for HOST\n"
    "  --listen ADDR                   IP address keytrusteed binds (default 0.0.0.0)\n"
    "  --port N                        HTTPS port (default 11371)\n"
    "  --logdir DIR                    log directory, created and recorded in keytrustee.conf\n"
    "                                  (default $KEYTRUSTEE_HOME/logs)\n";

typedef struct init_options {
    const char *external_address;
    const char *listen;
    const char *port;
    const char *logdir;
} init_options;

/* The state of one init run, so the steps below stay short. */
typedef struct init_run {
    kt_paths paths;
    char conf_path[PATH_MAX];
    char key_path[PATH_MAX];
    kt_config *config;
    bool keys_created;
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    char certificate_host[KTADMIN_HOST_MAX];
    ktadmin_tls_outcome tls_outcome;
} init_run;

static ktadmin_parse_result check_init_options(const init_options *options)
{
    char host[KTADMIN_HOST_MAX];
    char error[256];
    long port = 0;
    if (options->external_address != NULL &&
        ktadmin_split_address(options->external_address, host, &port, error, sizeof error) != 0) {
        ktadmin_usage_error("init", init_usage, "--external-address: %s", error);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->listen != NULL && !ktadmin_ip_literal(options->listen)) {
        ktadmin_usage_error("init", init_usage, "--listen '%s' is not an IP address (e.g. "
                            "0.0.0.0, 127.0.0.1 or ::)", options->listen);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->port != NULL && ktadmin_parse_port(options->port, &port) != 0) {
        ktadmin_usage_error("init", init_usage, "--port '%s' is not a port number from 1 to "
                            "65535", options->port);
        return KTADMIN_PARSE_ERROR;
    }
    if (options->logdir != NULL && options->logdir[0] == '\0') {
        ktadmin_usage_error("init", init_usage, "--logdir needs a directory");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static ktadmin_parse_result parse_init_options(ktadmin_context *context, int argc, char **argv,
                                               init_options *options)
{
    static const struct option long_options[] = {
        {"external-address", required_argument, NULL, 'e'},
        {"listen", required_argument, NULL, 'l'},
        {"port", required_argument, NULL, 'p'},
        {"logdir", required_argument, NULL, 'L'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'e': options->external_address = optarg; break;
        case 'l': options->listen = optarg; break;
        case 'p': options->port = optarg; break;
        case 'L': options->logdir = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(init_usage, stdout); return KTADMIN_PARSE_HELP;
        default: ktadmin_option_error("init", init_usage, result, argv); return KTADMIN_PARSE_ERROR;
        }
    }
    if (ktadmin_no_operands("init", init_usage, argc, argv) != KTADMIN_PARSE_OK)
        return KTADMIN_PARSE_ERROR;
    return check_init_options(options);
}

static int prepare_paths(ktadmin_context *context, const init_options *options, init_run *run)
{
    char error[512];
    if (kt_paths_resolve(&run->paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (options->logdir != NULL &&
        snprintf(run->paths.logdir, sizeof run->paths.logdir, "%s", options->logdir) >=
            (int)sizeof run->paths.logdir) {
        ktadmin_fail("--logdir: the path is too long");
        return -1;
    }
    if (kt_path_join(run->conf_path, PATH_MAX, run->paths.confdir, KT_CONF_FILE) != 0 ||
        kt_path_join(run->key_path, PATH_MAX, run->paths.confdir, KT_SERVER_KEY_FILE) != 0) {
        ktadmin_fail("the configuration directory path %s is too long", run->paths.confdir);
        return -1;
    }
    return 0;
}

static int create_directories(const kt_paths *paths)
{
    const char *directories[] = {paths->home, paths->confdir, paths->ssldir, paths->rundir,
                                 paths->logdir};
    char error[PATH_MAX + 256];
    for (size_t index = 0; index < sizeof directories / sizeof directories[0]; index++) {
        if (kt_private_directory(directories[index], error, sizeof error) != 0) {
            ktadmin_fail("%s", error);
            return -1;
        }
    }
    return 0;
}

/* Loads the server key, creating it first when the file does not exist yet. */
static int ensure_server_keys(init_run *run)
{
    char error[PATH_MAX + 256];
    struct stat status;
    run->keys_created = false;
    if (lstat(run->key_path, &status) != 0) {
        if (errno != ENOENT) {
            ktadmin_fail("cannot check %s: %s", run->key_path, strerror(errno));
            return -1;
        }
        if (kt_server_keys_create(run->key_path, error, sizeof error) != 0) {
            ktadmin_fail("%s", error);
            return -1;
        }
        run->keys_created = true;
    }
    kt_server_keys *keys = NULL;
    if (kt_server_keys_load(run->key_path, &keys, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    memcpy(run->fingerprint, keys->fingerprint, sizeof run->fingerprint);
    kt_server_keys_free(keys);
    return 0;
}

static int set_config(kt_config *config, const char *key, const char *value)
{
    if (kt_config_set(config, key, value) == 0)
        return 0;
    ktadmin_fail("out of memory while setting %s in keytrustee.conf", key);
    return -1;
}

/* Sets `key` to the given value, or to the default when the file does not have it yet. */
static int update_config(kt_config *config, const char *key, const char *given,
                         const char *fallback)
{
    if (given != NULL)
        return set_config(config, key, given);
    if (kt_config_get(config, key, NULL) == NULL)
        return set_config(config, key, fallback);
    return 0;
}

static int load_config(init_run *run)
{
    char error[PATH_MAX + 256];
    if (kt_config_load(run->conf_path, true, &run->config, error, sizeof error) != 0) {
        ktadmin_fail("%s; fix or remove the file and run init again", error);
        return -1;
    }
    long port = 0;
    if (kt_config_get_long(run->config, "port", KT_DEFAULT_HTTPS_PORT, 1, 65535, &port, error,
                           sizeof error) != 0) {
        ktadmin_fail("%s: %s", run->conf_path, error);
        return -1;
    }
    return 0;
}

/* Records HOST[:PORT] as external_address and its host as the certificate's host. `address` is
 * copied first: it may point into the config entry being replaced. */
static int set_external_address(init_run *run, const char *address)
{
    char copy[KTADMIN_HOST_MAX + 16];
    char error[512];
    long port = 0;
    if (snprintf(copy, sizeof copy, "%s", address) >= (int)sizeof copy) {
        ktadmin_fail("the external address '%.40s...' is too long", address);
        return -1;
    }
    if (ktadmin_split_address(copy, run->certificate_host, &port, error, sizeof error) != 0) {
        ktadmin_fail("external_address in %s: %s; pass --external-address HOST[:PORT]",
                     run->conf_path, error);
        return -1;
    }
    return set_config(run->config, "external_address", copy);
}

/* The passive case: the server key and keytrustee.conf were copied from the active, .ssl was not,
 * and no --external-address was given. The copied external_address names the active; a new
 * certificate for it would be wrong on this node, so this host's name is used instead. */
static int adopt_local_hostname(init_run *run, const init_options *options)
{
    char local_host[KTADMIN_HOST_MAX];
    char error[512];
    if (options->external_address != NULL || run->keys_created ||
        run->tls_outcome != KTADMIN_TLS_CREATED ||
        ktadmin_local_hostname(local_host, error, sizeof error) != 0 ||
        ktadmin_host_is_local(run->certificate_host, local_host))
        return 0;
    char address[KTADMIN_HOST_MAX + 16];
    const char *configured = kt_config_get(run->config, "external_address", "");
    const char *colon = strrchr(configured, ':');
    bool has_port = colon != NULL && strchr(configured, ':') == colon;
    snprintf(address, sizeof address, "%s%s", local_host, has_port ? colon : "");
    printf("keytrustee.conf names external_address %s, which is not this host (copied from the "
           "active?); using %s for this node (pass --external-address to choose)\n", configured,
           address);
    return set_external_address(run, address);
}

/* Decides the external address: the option, else the configured one, else the host name. */
static int choose_external_address(init_run *run, const init_options *options)
{
    const char *address = options->external_address;
    if (address == NULL)
        address = kt_config_get(run->config, "external_address", NULL);
    if (address != NULL)
        return set_external_address(run, address);
    char local_host[KTADMIN_HOST_MAX];
    char error[512];
    if (ktadmin_local_hostname(local_host, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    return set_external_address(run, local_host);
}

static int ensure_tls(init_run *run, const init_options *options)
{
    char error[PATH_MAX + 512];
    if (ktadmin_tls_inspect(&run->paths, &run->tls_outcome, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (adopt_local_hostname(run, options) != 0)
        return -1;
    if (ktadmin_tls_ensure(&run->paths, run->certificate_host, &run->tls_outcome, error,
                           sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    return 0;
}

static void report(const init_run *run)
{
    if (!run->keys_created)
        printf("Kept the existing server keys in %s\n", run->key_path);
    if (run->tls_outcome == KTADMIN_TLS_CREATED)
        printf("Created a self-signed TLS certificate for %s in %s\n", run->certificate_host,
               run->paths.ssldir);
    else if (run->tls_outcome == KTADMIN_TLS_CA_ADDED)
        printf("Kept the TLS certificate in %s and copied it to %s\n", run->paths.ssldir,
               KT_CERT_CA_FILE);
    else
        printf("Kept the existing TLS certificate in %s\n", run->paths.ssldir);
    printf("Initialized directory for %s\n", run->fingerprint);
}

/* Records --logdir, made absolute now that the directory exists, as `logdir`. */
static int record_logdir(init_run *run, const init_options *options)
{
    if (options->logdir == NULL)
        return 0;
    char absolute[PATH_MAX];
    if (realpath(run->paths.logdir, absolute) == NULL) {
        ktadmin_fail("cannot resolve --logdir %s: %s", run->paths.logdir, strerror(errno));
        return -1;
    }
    return set_config(run->config, "logdir", absolute);
}

static int run_init(init_run *run, const init_options *options)
{
    char error[PATH_MAX + 256];
    if (load_config(run) != 0 || ensure_server_keys(run) != 0 ||
        choose_external_address(run, options) != 0 || ensure_tls(run, options) != 0)
        return -1;
    if (update_config(run->config, "listen", options->listen, "0.0.0.0") != 0 ||
        update_config(run->config, "port", options->port, "11371") != 0 ||
        record_logdir(run, options) != 0)
        return -1;
    if (kt_config_save(run->config, run->conf_path, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (ktadmin_hand_to_service_user(&run->paths) != 0)
        return -1;
    report(run);
    return 0;
}

int ktadmin_init(ktadmin_context *context, int argc, char **argv)
{
    init_options options = {0};
    ktadmin_parse_result parsed = parse_init_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    init_run run = {.config = NULL};
    int result = -1;
    if (prepare_paths(context, &options, &run) == 0 && create_directories(&run.paths) == 0)
        result = run_init(&run, &options);
    kt_config_free(run.config);
    return result == 0 ? KTADMIN_EXIT_OK : KTADMIN_EXIT_FAILURE;
}
