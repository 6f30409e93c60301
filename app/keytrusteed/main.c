/*
 * main.c — keytrusteed's life: options, settings, checks, daemonizing, signals.
 *
 *   keytrusteed [--confdir DIR] [--foreground] [--log-level debug|info|warning|error]
 *
 * Start-up does everything that can fail for a reason the operator must fix while still attached
 * to the terminal: it resolves the paths, reads .keytrustee/keytrustee.conf (listen, port,
 * external_address, accepted_hosts, log_level), loads the server key (refusing loose
 * permissions, with the chmod that fixes them), reads and checks the TLS key and certificate,
 * and checks that the port can be bound. Only then does it daemonize (unless --foreground), log to logs/keytrusteed.log, write
 * run/keytrusteed.pid and start the HTTPS server.
 *
 * The main thread then waits for signals (blocked everywhere else): SIGTERM or SIGINT stop the
 * server, remove the pid file and exit 0; SIGHUP re-reads the certificate and swaps it in for new
 * connections without stopping the server (server.c). A monitor
 * thread (status.c) meanwhile logs every role and peer change keytrustee-db reports.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

#define ERROR_SIZE 512

typedef struct options {
    const char *confdir;
    bool foreground;
    const char *log_level;
    const char *user;  /* --user: drop root to this user after binding (default keytrustee) */
    bool user_given;
} options;

static bool log_is_open; /* until then, errors go to stderr only */
static bool log_to_stderr;

/* Reports a start-up failure where the operator will see it. */
static void report(const char *message)
{
    if (log_is_open)
        kt_log(KT_LOG_ERROR, "%s", message);
    if (!log_is_open || !log_to_stderr)
        fprintf(stderr, "keytrusteed: %s\n", message);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: keytrusteed [--confdir DIR] [--foreground] [--log-level LEVEL] "
                 "[--user NAME]\n"
                 "  --confdir DIR     the .keytrustee directory (default "
                 "$KEYTRUSTEE_HOME/.keytrustee)\n"
                 "  --foreground      stay attached and log to stderr\n"
                 "  --log-level L     debug, info, warning or error (default: keytrustee.conf's "
                 "log_level, else info)\n"
                 "  --user NAME       when started as root, run as NAME once the port is bound "
                 "and the keys read\n"
                 "                    (default " KT_SERVICE_USER "; '' stays root)\n");
}

/* Returns 0, 1 when the program should exit 0 (--help), -1 on a usage error. */
static int parse_options(int argc, char **argv, options *parsed)
{
    static const struct option long_options[] = {
        {"confdir", required_argument, NULL, 'c'},
        {"foreground", no_argument, NULL, 'f'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"user", required_argument, NULL, 'u'},
        {NULL, 0, NULL, 0},
    };
    memset(parsed, 0, sizeof *parsed);
    parsed->user = KT_SERVICE_USER;
    int option;
    while ((option = getopt_long(argc, argv, "c:fl:h", long_options, NULL)) != -1) {
        switch (option) {
        case 'c': parsed->confdir = optarg; break;
        case 'f': parsed->foreground = true; break;
        case 'l': parsed->log_level = optarg; break;
        case 'u': parsed->user = optarg; parsed->user_given = true; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keytrusteed: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* ---- Settings ------------------------------------------------------------------------------- */

static int copy_setting(char *out, size_t out_size, const char *value, const char *key,
                        char *error, size_t error_size)
{
    if (strlen(value) >= out_size) {
        snprintf(error, error_size, "%s in %s is too long", key, KT_CONF_FILE);
        return -1;
    }
    memcpy(out, value, strlen(value) + 1);
    return 0;
}

static int check_listen_address(const char *address, char *error, size_t error_size)
{
    unsigned char binary[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, address, binary) == 1 || inet_pton(AF_INET6, address, binary) == 1)
        return 0;
    snprintf(error, error_size,
             "listen = %s in %s is not a numeric IPv4 or IPv6 address (use 0.0.0.0 for all)",
             address, KT_CONF_FILE);
    return -1;
}

static int apply_settings(ktd_daemon *daemon, const kt_config *config, char *error,
                          size_t error_size)
{
    const char *listen = kt_config_get(config, "listen", "0.0.0.0");
    const char *external = kt_config_get(config, "external_address", "");
    if (copy_setting(daemon->listen_address, sizeof daemon->listen_address, listen, "listen",
                     error, error_size) != 0 ||
        check_listen_address(daemon->listen_address, error, error_size) != 0 ||
        copy_setting(daemon->external_address, sizeof daemon->external_address, external,
                     "external_address", error, error_size) != 0 ||
        kt_config_get_long(config, "port", KT_DEFAULT_HTTPS_PORT, 1, 65535, &daemon->port,
                           error, error_size) != 0)
        return -1;
    /* After the port: a name without one means this node's port. */
    return ktd_names_load(daemon, external, kt_config_get(config, "accepted_hosts", ""), error,
                          error_size);
}

static int choose_log_level(const options *parsed, const kt_config *config, kt_log_level *level,
                            char *error, size_t error_size)
{
    const char *text = parsed->log_level != NULL ? parsed->log_level
                                                 : kt_config_get(config, "log_level", "info");
    if (kt_log_level_parse(text, level) == 0)
        return 0;
    snprintf(error, error_size, "unknown log level '%s' (use debug, info, warning or error)",
             text);
    return -1;
}

static int load_settings(ktd_daemon *daemon, const options *parsed, kt_log_level *level,
                         char *error, size_t error_size)
{
    char path[PATH_MAX];
    kt_config *config = NULL;
    if (kt_paths_resolve(&daemon->paths, parsed->confdir, NULL, error, error_size) != 0)
        return -1;
    if (kt_path_join(path, sizeof path, daemon->paths.confdir, KT_CONF_FILE) != 0) {
        snprintf(error, error_size, "the path of %s is too long", KT_CONF_FILE);
        return -1;
    }
    if (kt_config_load(path, false, &config, error, error_size) != 0)
        return -1;
    int result = apply_settings(daemon, config, error, error_size) == 0 &&
                         choose_log_level(parsed, config, level, error, error_size) == 0
                     ? 0
                     : -1;
    kt_config_free(config);
    return result;
}

/* ---- Checks before detaching ---------------------------------------------------------------- */

/* Binds the address and port once, so "address in use" is reported at the terminal. */
static int probe_port(const ktd_daemon *daemon, char *error, size_t error_size)
{
    struct sockaddr_storage address;
    socklen_t length;
    memset(&address, 0, sizeof address);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    if (inet_pton(AF_INET, daemon->listen_address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)daemon->port);
        length = sizeof *v4;
    } else {
        if (inet_pton(AF_INET6, daemon->listen_address, &v6->sin6_addr) != 1)
            return -1;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)daemon->port);
        length = sizeof *v6;
    }
    int descriptor = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int enable = 1;
    int result = -1;
    if (descriptor < 0)
        snprintf(error, error_size, "cannot create a socket: %s", strerror(errno));
    else if (setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof enable) != 0 ||
             bind(descriptor, (struct sockaddr *)&address, length) != 0)
        snprintf(error, error_size, "cannot listen on %s port %ld: %s (is keytrusteed already "
                 "running?)", daemon->listen_address, daemon->port, strerror(errno));
    else
        result = 0;
    if (descriptor >= 0)
        (void)close(descriptor); /* nothing was written */
    return result;
}

static int load_keys(ktd_daemon *daemon, char *error, size_t error_size)
{
    char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, daemon->paths.confdir, KT_SERVER_KEY_FILE) != 0) {
        snprintf(error, error_size, "the path of %s is too long", KT_SERVER_KEY_FILE);
        return -1;
    }
    if (kt_server_keys_load(path, &daemon->keys, error, error_size) != 0)
        return -1;
    if (kt_path_join(path, sizeof path, daemon->paths.ssldir, KT_CERT_KEY_FILE) != 0) {
        snprintf(error, error_size, "the path of %s is too long", KT_CERT_KEY_FILE);
        return -1;
    }
    return kt_private_file_check(path, error, error_size); /* the TLS key, like the server key */
}

static int open_log(const ktd_daemon *daemon, bool foreground, kt_log_level level, char *error,
                    size_t error_size)
{
    char path[PATH_MAX];
    if (!foreground &&
        (kt_private_directory(daemon->paths.logdir, error, error_size) != 0 ||
         kt_path_join(path, sizeof path, daemon->paths.logdir, "keytrusteed.log") != 0)) {
        if (error[0] == '\0')
            snprintf(error, error_size, "the log path is too long");
        return -1;
    }
    if (kt_log_open(KTD_PROGRAM, level, foreground ? NULL : path) != 0) {
        snprintf(error, error_size, "cannot open the log %.400s", foreground ? "(stderr)" : path);
        return -1;
    }
    log_is_open = true;
    log_to_stderr = foreground;
    return 0;
}

/* Everything that must succeed while attached to the terminal. */
static int prepare(ktd_daemon *daemon, const options *parsed, char *error, size_t error_size)
{
    kt_log_level level = KT_LOG_INFO;
    if (kt_process_harden(error, error_size) != 0 ||
        load_settings(daemon, parsed, &level, error, error_size) != 0 ||
        open_log(daemon, parsed->foreground, level, error, error_size) != 0 ||
        load_keys(daemon, error, error_size) != 0 ||
        kt_private_directory(daemon->paths.rundir, error, error_size) != 0 ||
        ktd_tls_pem_load(&daemon->paths, &daemon->tls_pem, error, error_size) != 0 ||
        probe_port(daemon, error, error_size) != 0)
        return -1;
    return 0;
}

/* ---- Running -------------------------------------------------------------------------------- */

static int block_signals(sigset_t *signals)
{
    if (sigemptyset(signals) != 0 || sigaddset(signals, SIGTERM) != 0 ||
        sigaddset(signals, SIGINT) != 0 || sigaddset(signals, SIGHUP) != 0 ||
        signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return -1;
    return pthread_sigmask(SIG_BLOCK, signals, NULL) == 0 ? 0 : -1;
}

/* Serves until SIGTERM or SIGINT; returns the exit status. */
static int serve(ktd_daemon *daemon, const sigset_t *signals)
{
    for (;;) {
        int received = 0;
        if (sigwait(signals, &received) != 0)
            continue;
        if (received == SIGHUP) {
            kt_log(KT_LOG_INFO, "SIGHUP: re-reading the TLS certificate");
            ktd_server_reload(daemon);
            continue;
        }
        kt_log(KT_LOG_INFO, "%s: stopping", received == SIGINT ? "SIGINT" : "SIGTERM");
        return 0;
    }
}

static int write_pid_file(const ktd_daemon *daemon, char *path, size_t path_size, char *error,
                          size_t error_size)
{
    if (kt_path_join(path, path_size, daemon->paths.rundir, "keytrusteed.pid") != 0) {
        snprintf(error, error_size, "the pid file path is too long");
        return -1;
    }
    return kt_pidfile_write(path, error, error_size);
}

static int run(ktd_daemon *daemon, const options *parsed)
{
    char error[ERROR_SIZE] = "";
    char pid_path[PATH_MAX] = "";
    sigset_t signals;
    if (prepare(daemon, parsed, error, sizeof error) != 0 ||
        (!parsed->foreground && kt_daemonize(error, sizeof error) != 0) ||
        write_pid_file(daemon, pid_path, sizeof pid_path, error, sizeof error) != 0 ||
        kt_audit_open(&daemon->paths, KTD_PROGRAM, error, sizeof error) != 0) {
        report(error);
        return 1;
    }
    int status = 1;
    if (block_signals(&signals) != 0) {
        report("cannot set up signal handling");
    } else {
        /* Logs its own failure: the server is more use running without the monitor than not. */
        (void)ktd_monitor_start(daemon);
        if (ktd_server_start(daemon, error, sizeof error) != 0 ||
            kt_privilege_drop(parsed->user, parsed->user_given, error, sizeof error) != 0 ||
            kt_process_harden(error, sizeof error) != 0)
            report(error);
        else
            status = serve(daemon, &signals);
    }
    ktd_server_stop(daemon);
    ktd_monitor_stop();
    kt_audit_close(); /* after the last request: flushes every event */
    if (unlink(pid_path) != 0 && errno != ENOENT)
        kt_log(KT_LOG_WARNING, "could not remove %s: %s", pid_path, strerror(errno));
    kt_log(KT_LOG_INFO, "stopped");
    return status;
}

int main(int argc, char **argv)
{
    options parsed;
    int parsed_status = parse_options(argc, argv, &parsed);
    if (parsed_status != 0)
        return parsed_status > 0 ? 0 : 2;
    if (kt_crypto_init() != 0) {
        report("libsodium failed to initialise");
        return 1;
    }
    ktd_json_use_wiping_allocator();
    if (mg_check_feature(MG_FEATURES_TLS) == 0 ||
        mg_init_library(MG_FEATURES_TLS) != MG_FEATURES_TLS) {
        report("CivetWeb failed to initialise with TLS (it must be built with USE_MBEDTLS)");
        return 1;
    }
    static ktd_daemon daemon; /* static: zeroed, and large (paths) */
    int status = run(&daemon, &parsed);
    mg_exit_library();
    ktd_nonce_cache_free();
    kt_secret_free(daemon.tls_pem);
    kt_server_keys_free(daemon.keys);
    return status;
}
