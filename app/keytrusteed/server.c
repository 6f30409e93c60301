/*
 * server.c — the CivetWeb server: start, certificate reload, stop.
 *
 * CivetWeb listens on "ADDRESS:PORTs" (the 's' makes the port TLS; an IPv6 address is written
 * "[ADDRESS]:PORTs", which needs a CivetWeb built with USE_IPV6), with 16 worker threads, a 10 s
 * request timeout, keep-alive, and decode_url=no so that handlers see the path exactly as sent
 * (request signatures cover it). Every request goes to router.c through begin_request; CivetWeb's
 * own refusals through http_error; its log lines to our log.
 *
 * The key and certificate reach CivetWeb through a combined PEM file written to run/ just before
 * mg_start and removed right after (tls.c). On SIGHUP the files are re-read and checked; only when
 * they are good is the running context stopped and a new one started with them. Should that start
 * fail, the previous PEM (kept in memory) is started again, so a reload never leaves the node
 * without a server.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

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
}

static struct mg_context *start_context(ktd_daemon *daemon, const char *pem_path, char *error,
                                        size_t error_size)
{
    char ports[128];
    listening_ports(daemon, ports, sizeof ports);
    const char *options[] = {
        "listening_ports", ports,
        "ssl_certificate", pem_path,
        "num_threads", KTD_WORKER_THREADS,
        "request_timeout_ms", KTD_REQUEST_TIMEOUT,
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        "decode_url", "no",
        "tcp_nodelay", "1",
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
static int start_with(ktd_daemon *daemon, const kt_secret *pem, char *error, size_t error_size)
{
    char path[PATH_MAX];
    if (ktd_tls_pem_write(&daemon->paths, pem, path, sizeof path, error, error_size) != 0)
        return -1;
    daemon->context = start_context(daemon, path, error, error_size);
    if (unlink(path) != 0)
        kt_log(KT_LOG_WARNING, "could not remove %s: %s", path, strerror(errno));
    if (daemon->context == NULL)
        return -1;
    log_listening(daemon);
    return 0;
}

int ktd_server_start(ktd_daemon *daemon, char *error, size_t error_size)
{
    return start_with(daemon, daemon->tls_pem, error, error_size);
}

void ktd_server_stop(ktd_daemon *daemon)
{
    if (daemon->context == NULL)
        return;
    mg_stop(daemon->context);
    daemon->context = NULL;
}

int ktd_server_reload(ktd_daemon *daemon)
{
    char error[512];
    kt_secret *pem = NULL;
    if (ktd_tls_pem_load(&daemon->paths, &pem, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "SIGHUP: keeping the current certificate: %s", error);
        return 0;
    }
    ktd_server_stop(daemon);
    if (start_with(daemon, pem, error, sizeof error) == 0) {
        kt_secret_free(daemon->tls_pem);
        daemon->tls_pem = pem;
        kt_log(KT_LOG_INFO, "SIGHUP: now serving the re-read certificate");
        return 0;
    }
    kt_secret_free(pem);
    kt_log(KT_LOG_ERROR, "SIGHUP: %s; restarting with the previous certificate", error);
    if (start_with(daemon, daemon->tls_pem, error, sizeof error) == 0)
        return 0;
    kt_log(KT_LOG_ERROR, "the HTTPS server cannot be restarted: %s", error);
    return -1;
}
