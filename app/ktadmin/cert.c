/*
 * cert.c — `ktadmin cert show` and `ktadmin cert install`: the node's TLS certificate.
 *
 *   ktadmin cert show [--json]
 *       subject, issuer, names (subjectAltName), validity and SHA-256 fingerprint of the installed
 *       certificate, and the CA file clients pin.
 *   ktadmin cert install --cert FILE --key FILE [--ca FILE] [--no-reload]
 *       checks, in this order, that the key belongs to the certificate, that it is valid now, that
 *       it chains to --ca (without --ca: that it is self-signed), and that the host name of
 *       external_address in keytrustee.conf is among its names (crypto/x509_check.c); then
 *       installs the three .ssl files (certificate, key, CA — the certificate itself when
 *       self-signed) with mode 0400, each written to a temporary file, fsynced and renamed, the
 *       key first. The files they replace are kept in .ssl/previous/ (hard links), and put back
 *       if an install fails part way; run as root, they are handed to the service user (as
 *       `ktadmin init` does, ownership.c). Then keytrusteed (run/keytrusteed.pid) gets SIGHUP and
 *       re-reads them in place (new connections get the new certificate, established ones keep
 *       theirs); ktadmin waits until a new TLS connection to external_address verifies against the
 *       new CA file and is presented the new certificate itself (by fingerprint), i.e. until
 *       clients pinned to it are served. With --no-reload, or when it cannot signal keytrusteed,
 *       it prints the command that does it.
 *
 * Works the same for CA-signed and self-signed certificates. keytrustee.conf's TLS settings
 * (tls_min_version, tls_ciphers) are keytrusteed's and are not touched here.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"

#define PEM_FILE_MAX       (256u * 1024u)
#define RELOAD_WAIT_MS     10000
#define RELOAD_POLL_MS     100
#define PID_FILE           "keytrusteed.pid"
#define PREVIOUS_DIRECTORY "previous"

static const char cert_usage[] =
    "usage: ktadmin [--confdir DIR] cert show [--json]\n"
    "       ktadmin [--confdir DIR] cert install --cert FILE --key FILE [--ca FILE] [--no-reload]\n"
    "  --json        show as JSON\n"
    "  --cert FILE   the new certificate (PEM; intermediates may follow it)\n"
    "  --key FILE    its private key (PEM, unencrypted)\n"
    "  --ca FILE     the CA certificate that issued it, which clients pin (omit for a\n"
    "                self-signed certificate: clients then pin the certificate itself)\n"
    "  --no-reload   install only; keytrusteed uses it at its next start or SIGHUP\n";

typedef struct cert_options {
    const char *action;
    bool json;
    const char *cert;
    const char *key;
    const char *ca;
    bool no_reload;
} cert_options;

typedef struct ssl_files {
    char certificate[PATH_MAX];
    char key[PATH_MAX];
    char authority[PATH_MAX];
    char previous[PATH_MAX];
} ssl_files;

static ktadmin_parse_result check_options(const cert_options *options)
{
    bool show = strcmp(options->action, "show") == 0;
    bool install = strcmp(options->action, "install") == 0;
    if (!show && !install) {
        ktadmin_usage_error("cert", cert_usage, "unknown action '%s' (show or install)",
                            options->action);
        return KTADMIN_PARSE_ERROR;
    }
    if (install && (options->cert == NULL || options->key == NULL)) {
        ktadmin_usage_error("cert", cert_usage, "install needs --cert FILE and --key FILE");
        return KTADMIN_PARSE_ERROR;
    }
    if (show && (options->cert != NULL || options->key != NULL || options->ca != NULL ||
                 options->no_reload)) {
        ktadmin_usage_error("cert", cert_usage, "show takes only --json");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

static ktadmin_parse_result parse_options(ktadmin_context *context, int argc, char **argv,
                                          cert_options *options)
{
    static const struct option long_options[] = {
        {"json", no_argument, NULL, 'j'},          {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},     {"ca", required_argument, NULL, 'a'},
        {"no-reload", no_argument, NULL, 'n'},     {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'j': options->json = true; break;
        case 'c': options->cert = optarg; break;
        case 'k': options->key = optarg; break;
        case 'a': options->ca = optarg; break;
        case 'n': options->no_reload = true; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(cert_usage, stdout); return KTADMIN_PARSE_HELP;
        default: ktadmin_option_error("cert", cert_usage, result, argv); return KTADMIN_PARSE_ERROR;
        }
    }
    if (optind + 1 != argc) {
        ktadmin_usage_error("cert", cert_usage, "give one action: show or install");
        return KTADMIN_PARSE_ERROR;
    }
    options->action = argv[optind];
    return check_options(options);
}

static int resolve_files(const kt_paths *paths, ssl_files *files)
{
    if (kt_path_join(files->certificate, PATH_MAX, paths->ssldir, KT_CERT_FILE) != 0 ||
        kt_path_join(files->key, PATH_MAX, paths->ssldir, KT_CERT_KEY_FILE) != 0 ||
        kt_path_join(files->authority, PATH_MAX, paths->ssldir, KT_CERT_CA_FILE) != 0 ||
        kt_path_join(files->previous, PATH_MAX, paths->ssldir, PREVIOUS_DIRECTORY) != 0) {
        ktadmin_fail("the path %s is too long", paths->ssldir);
        return -1;
    }
    return 0;
}

/* ---- show ----------------------------------------------------------------------------------- */

static void format_time(int64_t when, char out[32])
{
    time_t seconds = (time_t)when;
    struct tm parts;
    if (gmtime_r(&seconds, &parts) == NULL ||
        strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &parts) == 0)
        snprintf(out, 32, "%lld", (long long)when);
}

static json_t *names_array(const kt_x509_names *names)
{
    json_t *array = json_array();
    for (size_t index = 0; array != NULL && index < names->count; index++)
        if (json_array_append_new(array, json_string(names->names[index])) != 0) {
            json_decref(array);
            return NULL;
        }
    return array;
}

static json_t *describe(const ssl_files *files, char *error, size_t error_size)
{
    kt_x509_info info, authority;
    kt_x509_names names;
    if (kt_x509_info_read(files->certificate, &info, error, error_size) != 0 ||
        kt_x509_names_read(files->certificate, &names, error, error_size) != 0 ||
        kt_x509_info_read(files->authority, &authority, error, error_size) != 0)
        return NULL;
    int64_t now = (int64_t)time(NULL);
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:s, s:b, s:s, s:s}", "path",
                     files->certificate, "subject", info.subject, "issuer", info.issuer, "names",
                     names_array(&names), "not_before", (json_int_t)info.not_before, "not_after",
                     (json_int_t)info.not_after, "expires_in_days",
                     (json_int_t)((info.not_after - now) / 86400), "sha256_fingerprint",
                     info.sha256_fingerprint, "self_signed",
                     strcmp(info.subject, info.issuer) == 0, "ca_path", files->authority,
                     "ca_subject", authority.subject);
}

static void print_description(const json_t *description)
{
    char from[32], to[32];
    format_time(json_integer_value(json_object_get(description, "not_before")), from);
    format_time(json_integer_value(json_object_get(description, "not_after")), to);
    printf("certificate: %s\n", json_string_value(json_object_get(description, "path")));
    printf("  subject: %s\n", json_string_value(json_object_get(description, "subject")));
    printf("  issuer: %s%s\n", json_string_value(json_object_get(description, "issuer")),
           json_is_true(json_object_get(description, "self_signed")) ? " (self-signed)" : "");
    printf("  names:");
    size_t index;
    const json_t *name;
    json_array_foreach(json_object_get(description, "names"), index, name)
        printf("%s %s", index > 0 ? "," : "", json_string_value(name));
    printf("\n  valid: %s to %s (%lld days left)\n", from, to,
           (long long)json_integer_value(json_object_get(description, "expires_in_days")));
    printf("  sha256 fingerprint: %s\n",
           json_string_value(json_object_get(description, "sha256_fingerprint")));
    printf("CA file clients pin: %s\n  subject: %s\n",
           json_string_value(json_object_get(description, "ca_path")),
           json_string_value(json_object_get(description, "ca_subject")));
}

static int cert_show(const ssl_files *files, bool json_output)
{
    char error[PATH_MAX + 256];
    json_t *description = describe(files, error, sizeof error);
    if (description == NULL) {
        ktadmin_fail("%s", error[0] ? error : "out of memory");
        return KTADMIN_EXIT_FAILURE;
    }
    if (json_output) {
        char *text = json_dumps(description, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text != NULL)
            printf("%s\n", text);
        free(text);
    } else {
        print_description(description);
    }
    json_decref(description);
    return KTADMIN_EXIT_OK;
}

/* ---- install: checks ------------------------------------------------------------------------ */

/* The host and port clients use: keytrustee.conf's external_address (and port). */
static int external_endpoint(const kt_paths *paths, char host[KTADMIN_HOST_MAX], char port[8])
{
    char path[PATH_MAX], error[PATH_MAX + 256];
    kt_config *config = NULL;
    long number = 0, fallback = KT_DEFAULT_HTTPS_PORT;
    if (kt_path_join(path, sizeof path, paths->confdir, KT_CONF_FILE) != 0 ||
        kt_config_load(path, false, &config, error, sizeof error) != 0) {
        ktadmin_fail("%s; run `ktadmin init` first", error);
        return -1;
    }
    const char *address = kt_config_get(config, "external_address", NULL);
    int result = address != NULL ? ktadmin_split_address(address, host, &number, error,
                                                          sizeof error)
                                 : -1;
    if (result == 0 && number == 0)
        result = kt_config_get_long(config, "port", fallback, 1, 65535, &number, error,
                                    sizeof error);
    if (result != 0)
        ktadmin_fail("%s: external_address: %s", path, address != NULL ? error : "missing");
    else
        snprintf(port, 8, "%ld", number);
    kt_config_free(config);
    return result;
}

static int check_new_certificate(const cert_options *options, const char *host)
{
    char error[PATH_MAX * 2 + 512];
    kt_x509_server_check check = {.cert_path = options->cert, .key_path = options->key,
                                  .ca_path = options->ca, .host = host,
                                  .now = (int64_t)time(NULL)};
    if (kt_x509_check_server(&check, error, sizeof error) != 0) {
        ktadmin_fail("%s; nothing was installed", error);
        return -1;
    }
    return 0;
}

/* ---- install: files ------------------------------------------------------------------------- */

/* The three new files, read before anything on disk changes. */
typedef struct new_files {
    kt_secret *certificate;
    kt_secret *key;
    kt_secret *authority;
} new_files;

static void new_files_clear(new_files *files)
{
    kt_secret_free(files->certificate);
    kt_secret_free(files->key);
    kt_secret_free(files->authority);
}

static int read_new_files(const cert_options *options, new_files *files)
{
    char error[PATH_MAX + 256];
    const char *authority = options->ca != NULL ? options->ca : options->cert;
    if (kt_read_secret_file(options->cert, PEM_FILE_MAX, &files->certificate, error,
                            sizeof error) != 0 ||
        kt_read_secret_file(options->key, PEM_FILE_MAX, &files->key, error, sizeof error) != 0 ||
        kt_read_secret_file(authority, PEM_FILE_MAX, &files->authority, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    return 0;
}

/* Hard links of the current files in .ssl/previous/, replacing older ones there. */
static int keep_previous(const ssl_files *files)
{
    const char *current[] = {files->certificate, files->key, files->authority};
    const char *names[] = {KT_CERT_FILE, KT_CERT_KEY_FILE, KT_CERT_CA_FILE};
    char error[PATH_MAX + 256], link_path[PATH_MAX];
    if (kt_private_directory(files->previous, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    for (size_t index = 0; index < 3; index++) {
        if (kt_path_join(link_path, sizeof link_path, files->previous, names[index]) != 0 ||
            (unlink(link_path) != 0 && errno != ENOENT)) {
            ktadmin_fail("cannot replace %s: %s", link_path, strerror(errno));
            return -1;
        }
        if (link(current[index], link_path) != 0 && errno != ENOENT) {
            ktadmin_fail("cannot keep %s in %s: %s", current[index], files->previous,
                         strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Puts back the previous file over `path` (after a failed install). */
static void put_back(const ssl_files *files, const char *path, const char *name)
{
    char link_path[PATH_MAX];
    if (kt_path_join(link_path, sizeof link_path, files->previous, name) != 0 ||
        access(link_path, F_OK) != 0)
        return;
    char temporary[PATH_MAX + 16];
    snprintf(temporary, sizeof temporary, "%s.restore", path);
    if (link(link_path, temporary) != 0 || rename(temporary, path) != 0)
        fprintf(stderr, "ktadmin: could not put back %s from %s\n", path, link_path);
}

static int write_new_files(const ssl_files *files, const new_files *contents)
{
    char error[PATH_MAX + 256];
    if (kt_write_file_atomic(files->key, contents->key->bytes, contents->key->length, 0400,
                             error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return -1;
    }
    if (kt_write_file_atomic(files->certificate, contents->certificate->bytes,
                             contents->certificate->length, 0400, error, sizeof error) != 0 ||
        kt_write_file_atomic(files->authority, contents->authority->bytes,
                             contents->authority->length, 0400, error, sizeof error) != 0) {
        ktadmin_fail("%s; putting the previous files back", error);
        put_back(files, files->key, KT_CERT_KEY_FILE);
        put_back(files, files->certificate, KT_CERT_FILE);
        put_back(files, files->authority, KT_CERT_CA_FILE);
        return -1;
    }
    return 0;
}

/* ---- install: reload ------------------------------------------------------------------------ */

/* keytrusteed's pid from run/keytrusteed.pid, checked against /proc; 0 when it is not running. */
static pid_t running_keytrusteed(const kt_paths *paths)
{
    char path[PATH_MAX], text[32] = "", name[64] = "";
    if (kt_path_join(path, sizeof path, paths->rundir, PID_FILE) != 0)
        return 0;
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return 0;
    long pid = fgets(text, sizeof text, file) != NULL ? strtol(text, NULL, 10) : 0;
    (void)fclose(file);
    if (pid <= 1 || kill((pid_t)pid, 0) != 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    file = fopen(path, "re");
    if (file != NULL) {
        if (fgets(name, sizeof name, file) == NULL)
            name[0] = '\0';
        (void)fclose(file);
    }
    return strncmp(name, "keytrusteed", 11) == 0 ? (pid_t)pid : 0;
}

/* Polls until a new TLS connection, verified against the new CA file, is served the new
 * certificate itself (its fingerprint: a renewal from the same CA verifies against that CA even
 * before keytrusteed has re-read it). */
static int wait_until_served(const ssl_files *files, const char *host, const char *port,
                             char *error, size_t error_size)
{
    kt_x509_info installed;
    if (kt_x509_info_read(files->certificate, &installed, error, error_size) != 0)
        return -1;
    kt_tls_options options = {.ca_file = files->authority, .connect_timeout_ms = 1000,
                              .io_timeout_ms = 2000};
    for (int waited = 0; waited <= RELOAD_WAIT_MS; waited += RELOAD_POLL_MS) {
        kt_tls_failure failure = KT_TLS_OK;
        kt_tls_client *client = kt_tls_connect(host, port, &options, &failure, error, error_size);
        if (client != NULL) {
            char served[96] = "";
            bool same = kt_tls_peer_fingerprint(client, served) == 0 &&
                        strcasecmp(served, installed.sha256_fingerprint) == 0;
            kt_tls_close(client);
            if (same)
                return 0;
            snprintf(error, error_size, "it still presents the certificate with SHA-256 %s",
                     served[0] != '\0' ? served : "(none)");
        }
        struct timespec pause = {0, RELOAD_POLL_MS * 1000000L};
        (void)nanosleep(&pause, NULL);
    }
    return -1;
}

static int reload(const kt_paths *paths, const ssl_files *files, const char *host,
                  const char *port)
{
    pid_t pid = running_keytrusteed(paths);
    if (pid == 0) {
        printf("keytrusteed is not running here; it will serve the new certificate when it "
               "starts\n");
        return 0;
    }
    if (kill(pid, SIGHUP) != 0) {
        ktadmin_fail("cannot signal keytrusteed (pid %ld): %s; run `kill -HUP %ld` as root or "
                     "as the user keytrusteed runs as (or restart it) to use the new certificate",
                     (long)pid, strerror(errno), (long)pid);
        return -1;
    }
    char error[PATH_MAX + 512];
    if (wait_until_served(files, host, port, error, sizeof error) != 0) {
        ktadmin_fail("installed, but keytrusteed (pid %ld) does not serve it yet: %s; see its "
                     "log (logs/keytrusteed.log) for the reason it gives after \"SIGHUP\"",
                     (long)pid, error);
        return -1;
    }
    printf("keytrusteed (pid %ld) re-read the certificate: new connections to %s:%s get it and "
           "verify against %s; established connections were kept\n", (long)pid, host, port,
           files->authority);
    return 0;
}

/* --no-reload: the exact command that makes the running keytrusteed serve the new files. */
static void tell_how_to_reload(const kt_paths *paths)
{
    pid_t pid = running_keytrusteed(paths);
    if (pid == 0)
        printf("Not reloaded (--no-reload): keytrusteed is not running here; it serves the new "
               "certificate when it starts\n");
    else
        printf("Not reloaded (--no-reload): to serve it, run `kill -HUP %ld` (keytrusteed's pid, "
               "from %s/" PID_FILE ")\n", (long)pid, paths->rundir);
}

static int cert_install(const kt_paths *paths, const ssl_files *files,
                        const cert_options *options)
{
    char host[KTADMIN_HOST_MAX], port[8];
    new_files contents = {NULL, NULL, NULL};
    int result = KTADMIN_EXIT_FAILURE;
    if (external_endpoint(paths, host, port) == 0 && check_new_certificate(options, host) == 0 &&
        read_new_files(options, &contents) == 0 && keep_previous(files) == 0 &&
        write_new_files(files, &contents) == 0 && ktadmin_hand_to_service_user(paths) == 0) {
        printf("Installed the certificate for %s in %s (the previous files are in %s)\n", host,
               paths->ssldir, files->previous);
        printf("Clients must pin %s (give it to them as --cacert before they next connect)\n",
               files->authority);
        if (options->no_reload)
            tell_how_to_reload(paths);
        result = options->no_reload || reload(paths, files, host, port) == 0
                     ? KTADMIN_EXIT_OK
                     : KTADMIN_EXIT_FAILURE;
    }
    new_files_clear(&contents);
    return result;
}

int ktadmin_cert(ktadmin_context *context, int argc, char **argv)
{
    cert_options options = {.action = NULL};
    ktadmin_parse_result parsed = parse_options(context, argc, argv, &options);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    kt_paths paths;
    ssl_files files;
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    if (resolve_files(&paths, &files) != 0)
        return KTADMIN_EXIT_FAILURE;
    if (strcmp(options.action, "show") == 0)
        return cert_show(&files, options.json);
    return cert_install(&paths, &files, &options);
}
