/*
 * server.c — the CivetWeb server: start, certificate reload, stop.
 *
 * CivetWeb listens on "ADDRESS:PORTs" (the 's' makes the port TLS; an IPv6 address is written
 * "[ADDRESS]:PORTs", which needs a CivetWeb built with USE_IPV6), with 16 worker threads, a 10 s
 * request timeout, keep-alive, and decode_url=no so that handlers see the path exactly as sent
 * (request signatures cover it). Every request goes to router.c through begin_request; CivetWeb's
 * own refusals through http_error; its log lines to our log.
 *
 * At start the key and certificate reach CivetWeb through a combined PEM file written to run/
 * just before mg_start and removed right after (tls.c); the PEM in memory is freed once CivetWeb
 * has read it.
 *
 * SIGHUP reloads in place: the .ssl/ files are re-read and checked (tls.c: both parse, the key
 * belongs to the certificate) and keytrustee.conf's TLS settings re-read, then handed to
 * mg_tls_reload (scripts/patches/civetweb-1.15-mbedtls-reload.patch), which builds a complete
 * new mbedTLS configuration and swaps it in for new handshakes only. The server is never stopped:
 * established (keep-alive) connections carry on with the certificate and session they were set
 * up with, and new connections get the new certificate from the moment the swap is done. A pair
 * that does not load is refused with a log line saying why, and the running certificate stays —
 * there is no half-loaded state to roll back from.
 *
 * TLS policy: the fetched CivetWeb is patched (scripts/patches/) to speak TLS 1.2 only, with ECDHE
 * and AEAD cipher suites only, no renegotiation, and a deadline on every handshake
 * (ssl_handshake_timeout_ms, KTD_TLS_HANDSHAKE_TIMEOUT here) so that a client that connects and
 * says nothing cannot keep a worker thread. keytrustee.conf may narrow it: tls_min_version (only
 * "1.2" is accepted: it is both the minimum and the newest version this mbedTLS has) and
 * tls_ciphers (mbedTLS suite names separated by ':', each an ECDHE suite with AES-GCM or
 * ChaCha20-Poly1305, e.g. TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384). They are read here, at start
 * and on SIGHUP (a bad value refuses the start, or keeps the running settings on SIGHUP), and
 * handed to CivetWeb as its ssl_protocol_version and ssl_cipher_list options at start, and to
 * mg_tls_reload on SIGHUP, which applies the same policy to the new configuration.
 */
#include <errno.h>
#include <mbedtls/cipher.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

#define KTD_TLS_HANDSHAKE_TIMEOUT "5000" /* ms for a whole TLS handshake */
#define KTD_TLS_CIPHERS_MAX 1024

/* The TLS settings CivetWeb runs with. */
typedef struct tls_policy {
    char ciphers[KTD_TLS_CIPHERS_MAX]; /* "": the patched CivetWeb's default AEAD list */
} tls_policy;

static tls_policy current_policy; /* what the running context was started with */

/* ---- keytrustee.conf's TLS settings --------------------------------------------------------- */

/* The rule the CivetWeb patch enforces too: forward secrecy and an AEAD cipher, full-length tag. */
static bool cipher_suite_allowed(int id)
{
    const mbedtls_ssl_ciphersuite_t *suite = mbedtls_ssl_ciphersuite_from_id(id);
    const mbedtls_cipher_info_t *cipher =
        suite != NULL ? mbedtls_cipher_info_from_type(suite->cipher) : NULL;
    return cipher != NULL &&
           (suite->key_exchange == MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA ||
            suite->key_exchange == MBEDTLS_KEY_EXCHANGE_ECDHE_RSA) &&
           (cipher->mode == MBEDTLS_MODE_GCM || cipher->mode == MBEDTLS_MODE_CHACHAPOLY) &&
           (suite->flags & (MBEDTLS_CIPHERSUITE_WEAK | MBEDTLS_CIPHERSUITE_SHORT_TAG)) == 0;
}

/* Checks tls_ciphers and copies it, separators made ':', into policy->ciphers. */
static int read_ciphers(const char *path, const char *list, tls_policy *policy, char *error,
                        size_t error_size)
{
    size_t used = 0;
    for (const char *cursor = list; *cursor != '\0';) {
        size_t length = strcspn(cursor, ":, ");
        char name[96];
        if (length >= sizeof name) {
            snprintf(error, error_size, "%s: tls_ciphers holds a name that is too long", path);
            return -1;
        }
        memcpy(name, cursor, length);
        name[length] = '\0';
        cursor += length + (cursor[length] != '\0' ? 1 : 0);
        if (length == 0)
            continue;
        int id = mbedtls_ssl_get_ciphersuite_id(name);
        if (id == 0 || !cipher_suite_allowed(id)) {
            snprintf(error, error_size,
                     "%s: tls_ciphers: %s is %s; give mbedTLS names of ECDHE suites with AES-GCM "
                     "or ChaCha20-Poly1305, separated by ':' (e.g. "
                     "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384), or remove the line",
                     path, name, id == 0 ? "not a cipher suite this mbedTLS knows" : "not allowed");
            return -1;
        }
        if (used + length + 2 > sizeof policy->ciphers) {
            snprintf(error, error_size, "%s: tls_ciphers is too long", path);
            return -1;
        }
        if (used > 0)
            policy->ciphers[used++] = ':';
        memcpy(policy->ciphers + used, name, length + 1);
        used += length;
    }
    return 0;
}

static int load_tls_policy(const ktd_daemon *daemon, tls_policy *policy, char *error,
                           size_t error_size)
{
    char path[PATH_MAX];
    kt_config *config = NULL;
    memset(policy, 0, sizeof *policy);
    if (kt_path_join(path, sizeof path, daemon->paths.confdir, KT_CONF_FILE) != 0) {
        snprintf(error, error_size, "the path of %s is too long", KT_CONF_FILE);
        return -1;
    }
    if (kt_config_load(path, true, &config, error, error_size) != 0)
        return -1;
    const char *version = kt_config_get(config, "tls_min_version", "1.2");
    int result = -1;
    if (strcmp(version, "1.2") != 0)
        snprintf(error, error_size,
                 "%s: tls_min_version = %.20s is not supported: TLS 1.2 is the minimum keytrustee "
                 "accepts and the newest version its mbedTLS offers; write 1.2 or remove the line",
                 path, version);
    else
        result = read_ciphers(path, kt_config_get(config, "tls_ciphers", ""), policy, error,
                              error_size);
    kt_config_free(config);
    return result;
}

/* ---- CivetWeb ------------------------------------------------------------------------------- */

static int log_civetweb(const struct mg_connection *connection, const char *message)
{
    (void)connection;
    kt_log(KT_LOG_WARNING, "civetweb: %s", message);
    return 1; /* logged: CivetWeb need not print it */
}

static void listening_ports(const ktd_daemon *daemon, char *out, size_t out_size)
{
    bool ipv6 = strchr(daemon->listen_address, ':') != NULL;
    snprintf(out, out_size, ipv6 ? "[%s]:%lds" : "%s:%lds", daemon->listen_address, daemon->port);
}

static void log_listening(const ktd_daemon *daemon)
{
    struct mg_server_port ports[4];
    int count = mg_get_server_ports(daemon->context, 4, ports);
    for (int index = 0; index < count; index++)
        kt_log(KT_LOG_INFO, "listening on https://%s:%d (external address %s, fingerprint %s)",
               daemon->listen_address, ports[index].port,
               daemon->external_address[0] != '\0' ? daemon->external_address : "not set",
               daemon->keys->fingerprint);
    char names[KTD_NAMES_MAX * (KTD_AUTHORITY_MAX + 1)] = "";
    for (size_t index = 0; index < daemon->name_count; index++) {
        if (index > 0)
            strcat(names, " ");
        strcat(names, daemon->names[index]); /* sized for all of them */
    }
    kt_log(KT_LOG_INFO, "accepting requests signed for: %s (add others to accepted_hosts)",
           daemon->name_count > 0 ? names : "no name; set external_address");
}

static struct mg_context *start_context(ktd_daemon *daemon, const char *pem_path,
                                        const tls_policy *policy, char *error, size_t error_size)
{
    char ports[128];
    listening_ports(daemon, ports, sizeof ports);
    const char *options[] = {
        "listening_ports", ports,
        "ssl_certificate", pem_path,
        "ssl_protocol_version", "4", /* TLS 1.2 */
        "ssl_handshake_timeout_ms", KTD_TLS_HANDSHAKE_TIMEOUT,
        "num_threads", KTD_WORKER_THREADS,
        "request_timeout_ms", KTD_REQUEST_TIMEOUT,
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        "decode_url", "no",
        "tcp_nodelay", "1",
        policy->ciphers[0] != '\0' ? "ssl_cipher_list" : NULL, policy->ciphers,
        NULL,
    };
    struct mg_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    callbacks.begin_request = ktd_route;
    callbacks.http_error = ktd_route_http_error;
    callbacks.log_message = log_civetweb;
    struct mg_init_data init = {&callbacks, daemon, options};
    unsigned code = 0;
    char reason[256] = "";
    struct mg_error_data failure = {&code, reason, sizeof reason};
    struct mg_context *context = mg_start2(&init, &failure);
    if (context == NULL)
        snprintf(error, error_size, "the HTTPS server did not start on %s (%s)", ports,
                 reason[0] != '\0' ? reason : "no reason given");
    return context;
}

/* Writes the PEM for CivetWeb, starts it, removes the PEM file. */
static int start_with(ktd_daemon *daemon, const kt_secret *pem, const tls_policy *policy,
                      char *error, size_t error_size)
{
    char path[PATH_MAX];
    if (ktd_tls_pem_write(&daemon->paths, pem, path, sizeof path, error, error_size) != 0)
        return -1;
    daemon->context = start_context(daemon, path, policy, error, error_size);
    if (unlink(path) != 0)
        kt_log(KT_LOG_WARNING, "could not remove %s: %s", path, strerror(errno));
    if (daemon->context == NULL)
        return -1;
    ktd_status_note_certificate(pem); /* for /v1/status and /metrics */
    log_listening(daemon);
    return 0;
}

int ktd_server_start(ktd_daemon *daemon, char *error, size_t error_size)
{
    if (load_tls_policy(daemon, &current_policy, error, error_size) != 0 ||
        start_with(daemon, daemon->tls_pem, &current_policy, error, error_size) != 0)
        return -1;
    kt_secret_free(daemon->tls_pem); /* CivetWeb holds its own parsed copy now */
    daemon->tls_pem = NULL;
    return 0;
}

void ktd_server_stop(ktd_daemon *daemon)
{
    if (daemon->context == NULL)
        return;
    mg_stop(daemon->context);
    daemon->context = NULL;
}

/* The fingerprint of the PEM's certificate, for the log line that says what is served now. */
static void certificate_fingerprint(const kt_secret *pem, char *out, size_t out_size)
{
    mbedtls_x509_crt chain;
    unsigned char digest[32];
    mbedtls_x509_crt_init(&chain);
    snprintf(out, out_size, "?");
    /* pem->bytes[pem->length] is the NUL mbedTLS's PEM parser needs (tls.c). */
    if (mbedtls_x509_crt_parse(&chain, pem->bytes, pem->length + 1) == 0 &&
        mbedtls_sha256_ret(chain.raw.p, chain.raw.len, digest, 0) == 0) {
        size_t used = 0;
        for (size_t index = 0; index < sizeof digest && used + 4 <= out_size; index++)
            used += (size_t)snprintf(out + used, out_size - used, index == 0 ? "%02X" : ":%02X",
                                     digest[index]);
    }
    mbedtls_x509_crt_free(&chain);
}

/* Never stops the server: either the new certificate is swapped in for new handshakes, or the
 * running one stays. */
void ktd_server_reload(ktd_daemon *daemon)
{
    char error[512];
    kt_secret *pem = NULL;
    if (ktd_tls_pem_load(&daemon->paths, &pem, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "SIGHUP: refused the new certificate, still serving the previous "
               "one: %s", error);
        return;
    }
    tls_policy policy;
    if (load_tls_policy(daemon, &policy, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "SIGHUP: keeping the current TLS settings: %s", error);
        policy = current_policy;
    }
    if (mg_tls_reload(daemon->context, (const char *)pem->bytes,
                      policy.ciphers[0] != '\0' ? policy.ciphers : NULL, error,
                      sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "SIGHUP: refused the new certificate, still serving the previous "
               "one: %s", error);
    } else {
        char fingerprint[3 * 32];
        certificate_fingerprint(pem, fingerprint, sizeof fingerprint);
        current_policy = policy;
        ktd_status_note_certificate(pem); /* for /v1/status and /metrics */
        kt_log(KT_LOG_INFO, "SIGHUP: new connections get the re-read certificate (SHA-256 %s); "
               "established connections keep theirs", fingerprint);
    }
    kt_secret_free(pem);
}
