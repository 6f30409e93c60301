/*
 * test_tls_reload.c — CivetWeb's in-place certificate reload (mg_tls_reload, added by
 * scripts/patches/civetweb-1.15-mbedtls-reload.patch), against a real CivetWeb server on a free
 * loopback port and kt_tls_connect as the client.
 *
 * It checks what keytrusteed relies on: a reload with a key of another certificate, an unknown or
 * a refused cipher suite, or text that is no PEM fails with the reason and changes nothing; a good
 * reload gives new connections the new certificate while an established keep-alive connection
 * goes on with the old one. Then four client threads, 25 times each, connect, make a request, wait
 * until the main thread (which reloads again and again meanwhile) has swapped the certificate at
 * least once, make another request on the same connection, and close: every connection spans a
 * reload, must succeed throughout and keep the certificate it was set up with. Under ASan this is
 * where a generation freed while a connection still uses it (or never freed: LeakSanitizer at
 * exit) would show.
 *
 * Built with civetweb.o (Makefile: the test_tls_reload rule); the certificates are made with
 * kt_x509_self_signed in a temporary directory.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civetweb.h"
#include "crypto/crypto.h"
#include "tests/unit/unit.h"

#define PEM_MAX          (64 * 1024)
#define STRESS_THREADS   4
#define STRESS_ROUNDS    25
#define WAIT_STEP_US     1000
#define WAIT_STEPS_MAX   10000 /* 10 s for one reload to happen: only a hung test waits this */

typedef struct pem_files {
    char dir[64];
    char first[PEM_MAX];      /* key A + certificate A */
    char second[PEM_MAX];     /* key B + certificate B */
    char mismatched[PEM_MAX]; /* key A + certificate B */
    char first_path[128];     /* `first`, as the file mg_start reads */
    char first_fingerprint[96];
    char second_fingerprint[96];
} pem_files;

static pem_files files;
static struct mg_context *server;
static char port[8];

/* ---- set-up ------------------------------------------------------------------------------- */

static bool read_text(const char *path, char *out, size_t out_size, size_t *length)
{
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return false;
    *length = fread(out, 1, out_size - 1, file);
    bool ok = ferror(file) == 0 && *length < out_size - 1;
    out[*length] = '\0';
    return fclose(file) == 0 && ok;
}

/* out = the key file's text, then the certificate file's. */
static bool join(const char *key_path, const char *certificate_path, char *out, size_t out_size)
{
    size_t key_length = 0, certificate_length = 0;
    return read_text(key_path, out, out_size, &key_length) &&
           read_text(certificate_path, out + key_length, out_size - key_length,
                     &certificate_length);
}

static bool make_certificate(const char *name, char *fingerprint)
{
    char certificate[160], key[160], error[256];
    kt_x509_info info;
    snprintf(certificate, sizeof certificate, "%s/%s.pem", files.dir, name);
    snprintf(key, sizeof key, "%s/%s.key", files.dir, name);
    if (kt_x509_self_signed("127.0.0.1", true, 2, certificate, key, error, sizeof error) != 0 ||
        kt_x509_info_read(certificate, &info, error, sizeof error) != 0) {
        fprintf(stderr, "    %s\n", error);
        return false;
    }
    memcpy(fingerprint, info.sha256_fingerprint, sizeof info.sha256_fingerprint);
    return true;
}

static bool make_files(void)
{
    char a_key[160], a_certificate[160], b_key[160], b_certificate[160];
    snprintf(files.dir, sizeof files.dir, "/tmp/kt-tls-reload.XXXXXX");
    if (mkdtemp(files.dir) == NULL || !make_certificate("a", files.first_fingerprint) ||
        !make_certificate("b", files.second_fingerprint))
        return false;
    snprintf(a_key, sizeof a_key, "%s/a.key", files.dir);
    snprintf(a_certificate, sizeof a_certificate, "%s/a.pem", files.dir);
    snprintf(b_key, sizeof b_key, "%s/b.key", files.dir);
    snprintf(b_certificate, sizeof b_certificate, "%s/b.pem", files.dir);
    snprintf(files.first_path, sizeof files.first_path, "%s/first.pem", files.dir);
    if (!join(a_key, a_certificate, files.first, sizeof files.first) ||
        !join(b_key, b_certificate, files.second, sizeof files.second) ||
        !join(a_key, b_certificate, files.mismatched, sizeof files.mismatched))
        return false;
    FILE *file = fopen(files.first_path, "we");
    if (file == NULL)
        return false;
    bool written = fputs(files.first, file) >= 0;
    return fclose(file) == 0 && written;
}

static void remove_files(void)
{
    const char *names[] = {"a.pem", "a.key", "b.pem", "b.key", "first.pem"};
    char path[160];
    for (size_t index = 0; index < sizeof names / sizeof names[0]; index++) {
        snprintf(path, sizeof path, "%s/%s", files.dir, names[index]);
        (void)unlink(path);
    }
    (void)rmdir(files.dir);
}

static int answer(struct mg_connection *connection)
{
    mg_printf(connection, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                          "\r\nok");
    return 200;
}

static int quiet_log(const struct mg_connection *connection, const char *message)
{
    (void)connection;
    (void)message;
    return 1;
}

static bool start_server(void)
{
    const char *options[] = {"listening_ports", "127.0.0.1:0s", "ssl_certificate",
                             files.first_path, "num_threads", "8", "enable_keep_alive", "yes",
                             "request_timeout_ms", "10000", "tcp_nodelay", "1",
                             /* a connection waits idle for a reload between its requests: longer
                              * than CivetWeb's 500 ms default, whatever the machine's load */
                             "keep_alive_timeout_ms", "10000", NULL};
    struct mg_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    callbacks.begin_request = answer;
    callbacks.log_message = quiet_log;
    struct mg_init_data init = {&callbacks, NULL, options};
    server = mg_start2(&init, NULL);
    if (server == NULL)
        return false;
    struct mg_server_port ports[1];
    if (mg_get_server_ports(server, 1, ports) != 1)
        return false;
    snprintf(port, sizeof port, "%d", ports[0].port);
    return true;
}

/* ---- the client --------------------------------------------------------------------------- */

static kt_tls_client *connect_client(void)
{
    kt_tls_options options = {.skip_verify = true, .connect_timeout_ms = 2000,
                              .io_timeout_ms = 5000};
    kt_tls_failure failure = KT_TLS_OK;
    char error[256];
    kt_tls_client *client = kt_tls_connect("127.0.0.1", port, &options, &failure, error,
                                           sizeof error);
    if (client == NULL)
        fprintf(stderr, "    connect: %s\n", error);
    return client;
}

/* One keep-alive request; true when "ok" came back. */
static bool request(kt_tls_client *client)
{
    static const char text[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    kt_tls_failure failure = KT_TLS_OK;
    char response[512];
    size_t used = 0;
    if (kt_tls_write(client, text, sizeof text - 1, &failure) != 0)
        return false;
    while (used < sizeof response - 1) {
        long count = kt_tls_read(client, response + used, sizeof response - 1 - used, &failure);
        if (count <= 0)
            return false;
        used += (size_t)count;
        response[used] = '\0';
        char *body = strstr(response, "\r\n\r\n");
        if (body != NULL && strlen(body + 4) >= 2)
            return strncmp(response, "HTTP/1.1 200", 12) == 0 && strcmp(body + 4, "ok") == 0;
    }
    return false;
}

/* The fingerprint a new connection is presented. */
static bool served(char fingerprint[96])
{
    kt_tls_client *client = connect_client();
    bool ok = client != NULL && kt_tls_peer_fingerprint(client, fingerprint) == 0 &&
              request(client);
    kt_tls_close(client);
    return ok;
}

/* ---- tests -------------------------------------------------------------------------------- */

TEST(server_starts_with_the_first_certificate)
{
    char fingerprint[96] = "";
    REQUIRE(make_files());
    REQUIRE(start_server());
    CHECK(served(fingerprint));
    CHECK_EQ_STR(fingerprint, files.first_fingerprint);
}

TEST(bad_reloads_are_refused_and_change_nothing)
{
    char error[256] = "", fingerprint[96] = "";
    REQUIRE(server != NULL);
    CHECK_EQ_INT(mg_tls_reload(server, files.mismatched, NULL, error, sizeof error), -1);
    CHECK(strstr(error, "does not belong to the certificate") != NULL);
    CHECK_EQ_INT(mg_tls_reload(server, files.second, "TLS-NO-SUCH-SUITE", error, sizeof error),
                 -1);
    CHECK(strstr(error, "TLS-NO-SUCH-SUITE is not a cipher suite") != NULL);
    CHECK_EQ_INT(mg_tls_reload(server, files.second, "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA",
                               error, sizeof error),
                 -1);
    CHECK(strstr(error, "is refused") != NULL);
    CHECK_EQ_INT(mg_tls_reload(server, "not a PEM", NULL, error, sizeof error), -1);
    CHECK(strstr(error, "parse key") != NULL);
    CHECK_EQ_INT(mg_tls_reload(NULL, files.second, NULL, error, sizeof error), -1);
    CHECK(served(fingerprint));
    CHECK_EQ_STR(fingerprint, files.first_fingerprint);
}

TEST(new_connections_get_the_new_certificate_established_ones_keep_theirs)
{
    char error[256] = "", fingerprint[96] = "", established_fingerprint[96] = "";
    REQUIRE(server != NULL);
    kt_tls_client *established = connect_client();
    REQUIRE(established != NULL);
    CHECK(request(established));
    CHECK_EQ_INT(mg_tls_reload(server, files.second, NULL, error, sizeof error), 0);
    CHECK(served(fingerprint));
    CHECK_EQ_STR(fingerprint, files.second_fingerprint);
    CHECK(request(established)); /* same connection, after the swap */
    CHECK(kt_tls_peer_fingerprint(established, established_fingerprint) == 0);
    CHECK_EQ_STR(established_fingerprint, files.first_fingerprint);
    /* Back to the first while the connection set up with it is still open. */
    CHECK_EQ_INT(mg_tls_reload(server, files.first, "", error, sizeof error), 0);
    CHECK(request(established));
    CHECK(served(fingerprint));
    CHECK_EQ_STR(fingerprint, files.first_fingerprint);
    kt_tls_close(established);
}

typedef struct stress_result {
    int connections;
    int failures;
} stress_result;

static atomic_int reloads;  /* done by the main thread so far */
static atomic_int finished; /* client threads done */

/* Until the main thread has reloaded since `seen`; false if that never happens. */
static bool wait_for_reload(int seen)
{
    for (int step = 0; step < WAIT_STEPS_MAX; step++) {
        if (atomic_load(&reloads) != seen)
            return true;
        usleep(WAIT_STEP_US);
    }
    return false;
}

/* One connection across a reload: set up, used, a reload happens, used again, closed. */
static bool connection_across_reload(void)
{
    char before[96] = "", after[96] = "";
    kt_tls_client *client = connect_client();
    if (client == NULL)
        return false;
    int seen = atomic_load(&reloads);
    const char *failed = NULL;
    if (kt_tls_peer_fingerprint(client, before) != 0 ||
        (strcmp(before, files.first_fingerprint) != 0 &&
         strcmp(before, files.second_fingerprint) != 0))
        failed = "an unknown certificate was presented";
    else if (!request(client))
        failed = "the first request failed";
    else if (!wait_for_reload(seen))
        failed = "no reload happened";
    else if (!request(client))
        failed = "the request after the reload failed";
    else if (kt_tls_peer_fingerprint(client, after) != 0 || strcmp(before, after) != 0)
        failed = "the certificate changed under the connection";
    if (failed != NULL)
        fprintf(stderr, "    %s\n", failed);
    kt_tls_close(client);
    return failed == NULL;
}

static void *stress_client(void *argument)
{
    stress_result *result = argument;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        result->connections++;
        if (!connection_across_reload())
            result->failures++;
    }
    atomic_fetch_add(&finished, 1);
    return NULL;
}

TEST(connections_across_repeated_reloads_all_succeed)
{
    pthread_t threads[STRESS_THREADS];
    stress_result results[STRESS_THREADS];
    int started = 0, reload_failures = 0;
    char error[256];
    REQUIRE(server != NULL);
    memset(results, 0, sizeof results);
    for (; started < STRESS_THREADS; started++)
        if (pthread_create(&threads[started], NULL, stress_client, &results[started]) != 0)
            break;
    CHECK_EQ_INT(started, STRESS_THREADS);
    while (atomic_load(&finished) < started) {
        const char *pem = atomic_load(&reloads) % 2 == 0 ? files.second : files.first;
        if (mg_tls_reload(server, pem, NULL, error, sizeof error) != 0)
            reload_failures++;
        atomic_fetch_add(&reloads, 1);
        usleep(2 * WAIT_STEP_US);
    }
    int connections = 0, failures = 0;
    for (int index = 0; index < started; index++) {
        CHECK(pthread_join(threads[index], NULL) == 0);
        connections += results[index].connections;
        failures += results[index].failures;
    }
    printf("# %d connections, each across a reload (%d reloads), %d failed\n", connections,
           atomic_load(&reloads), failures);
    CHECK_EQ_INT(reload_failures, 0);
    CHECK_EQ_INT(connections, STRESS_THREADS * STRESS_ROUNDS);
    CHECK_EQ_INT(failures, 0);
}

TEST(server_stops)
{
    REQUIRE(server != NULL);
    mg_stop(server); /* frees the last generation: LeakSanitizer checks at exit */
    server = NULL;
    remove_files();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (kt_crypto_init() != 0 || mg_init_library(MG_FEATURES_TLS) != MG_FEATURES_TLS) {
        fprintf(stderr, "kt_crypto_init or mg_init_library failed\n");
        return 1;
    }
    int status = unit_run();
    mg_exit_library();
    return status;
}
