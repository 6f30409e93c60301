/*
 * tls_client.c — TLS 1.2+ client connections (mbedTLS) with bounded waits: a connect timeout
 * across all resolved addresses and a timeout on every read and write, so a dead node is noticed
 * quickly and the caller can fail over. Failures are classified (kt_tls_failure) and explained.
 *
 * The socket stays non-blocking; mbedTLS reaches it through our own send/receive callbacks,
 * which wait with poll() for at most the I/O timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "crypto/internal.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_IO_TIMEOUT_MS      10000
#define SAN_IP_ADDRESS             (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)

struct kt_tls_client {
    int socket;
    int io_timeout_ms;
    bool host_is_address;
    unsigned char address[16]; /* the host as an IP address, when it is one */
    size_t address_length;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config config;
    mbedtls_x509_crt ca;
    bool random_ready;
    kt_mbedtls_random random;
};

/* Where we connect to, for messages. */
typedef struct endpoint {
    const char *host;
    const char *port;
} endpoint;

static void set_failure(kt_tls_failure *failure, kt_tls_failure value)
{
    if (failure != NULL)
        *failure = value;
}

static int64_t now_ms(void)
{
    struct timespec now;
    (void)clock_gettime(CLOCK_MONOTONIC, &now); /* cannot fail for CLOCK_MONOTONIC */
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Waits until `events` are possible on the socket: 1 when ready, 0 on timeout, -1 on error. */
static int wait_for(int socket, short events, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd entry = {.fd = socket, .events = events};
        int64_t remaining = deadline - now_ms();
        int ready = poll(&entry, 1, remaining > 0 ? (int)remaining : 0);
        if (ready >= 0)
            return ready > 0 ? 1 : 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ---- Socket callbacks for mbedTLS ------------------------------------------------------------ */

static int send_callback(void *context, const unsigned char *data, size_t length)
{
    kt_tls_client *client = context;
    for (;;) {
        /* MSG_NOSIGNAL: a peer that went away must give EPIPE, not kill the process. */
        ssize_t sent = send(client->socket, data, length, MSG_NOSIGNAL);
        if (sent >= 0)
            return (int)sent;
        if (errno == EINTR)
            continue;
        if (errno == EPIPE || errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return MBEDTLS_ERR_NET_SEND_FAILED;
        int ready = wait_for(client->socket, POLLOUT, client->io_timeout_ms);
        if (ready == 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        if (ready < 0)
            return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int receive_callback(void *context, unsigned char *buffer, size_t size, uint32_t timeout)
{
    kt_tls_client *client = context;
    for (;;) {
        ssize_t got = recv(client->socket, buffer, size, 0);
        if (got >= 0)
            return (int)got; /* 0 is end of stream; mbedTLS reports it as CONN_EOF */
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return MBEDTLS_ERR_NET_RECV_FAILED;
        int ready = wait_for(client->socket, POLLIN, (int)timeout);
        if (ready == 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        if (ready < 0)
            return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

/* ---- TCP connection -------------------------------------------------------------------------- */

/* Tries one address until the deadline: the connected socket, or -1 with errno set. */
static int connect_address(const struct addrinfo *address, int64_t deadline)
{
    int socket_fd = socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           address->ai_protocol);
    if (socket_fd < 0)
        return -1;
    int result = connect(socket_fd, address->ai_addr, address->ai_addrlen);
    if (result != 0 && errno == EINPROGRESS) {
        int64_t remaining = deadline - now_ms();
        int ready = wait_for(socket_fd, POLLOUT, remaining > 0 ? (int)remaining : 0);
        int socket_error = 0;
        socklen_t error_length = sizeof socket_error;
        if (ready == 0)
            socket_error = ETIMEDOUT;
        else if (ready < 0 ||
                 getsockopt(socket_fd, SOL_SOCKET, SO_ERROR, &socket_error, &error_length) != 0)
            socket_error = errno;
        result = socket_error == 0 ? 0 : -1;
        errno = socket_error;
    }
    if (result != 0) {
        int saved_errno = errno;
        (void)close(socket_fd); /* never used: nothing to lose */
        errno = saved_errno;
        return -1;
    }
    /* Requests are small writes answered by small reads; Nagle's delay would only add latency.
     * Failing to set it costs speed, not correctness, so the result is not fatal. */
    int enable = 1;
    (void)setsockopt(socket_fd, IPPROTO_TCP, TCP_NODELAY, &enable, sizeof enable);
    return socket_fd;
}

static int connect_tcp(const endpoint *target, int timeout_ms, char *error, size_t error_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *addresses = NULL;
    /* getaddrinfo has no timeout parameter; a slow resolver is bounded by resolv.conf, and the
     * connect timeout starts once the name is resolved. */
    int resolved = getaddrinfo(target->host, target->port, &hints, &addresses);
    if (resolved != 0) {
        kt_crypto_error(error, error_size, "could not resolve %s:%s (%s); check the server address",
                        target->host, target->port, gai_strerror(resolved));
        return -1;
    }
    int64_t deadline = now_ms() + timeout_ms;
    int socket_fd = -1;
    int last_errno = ETIMEDOUT;
    for (struct addrinfo *address = addresses; address != NULL && socket_fd < 0;
         address = address->ai_next) {
        if (address != addresses && now_ms() >= deadline)
            break;
        socket_fd = connect_address(address, deadline);
        if (socket_fd < 0)
            last_errno = errno;
    }
    freeaddrinfo(addresses);
    if (socket_fd >= 0)
        return socket_fd;
    if (last_errno == ETIMEDOUT)
        kt_crypto_error(error, error_size,
                        "no answer from %s:%s within %d ms; check that the server is up and the "
                        "address and port are right",
                        target->host, target->port, timeout_ms);
    else
        kt_crypto_error(error, error_size,
                        "could not connect to %s:%s: %s; check that keytrusteed is running there "
                        "and the address and port are right",
                        target->host, target->port, strerror(last_errno));
    return -1;
}

/* ---- Certificate checks ---------------------------------------------------------------------- */

/* True when the GeneralNames DER in [cursor, end) holds an iPAddress equal to `address`. */
static bool general_names_contain(unsigned char *cursor, const unsigned char *end,
                                  const unsigned char *address, size_t address_length)
{
    size_t length = 0;
    if (mbedtls_asn1_get_tag(&cursor, end, &length,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return false;
    end = cursor + length;
    while (cursor < end) {
        int tag = *cursor++;
        if (mbedtls_asn1_get_len(&cursor, end, &length) != 0)
            return false;
        if (tag == SAN_IP_ADDRESS && length == address_length &&
            memcmp(cursor, address, length) == 0)
            return true;
        cursor += length;
    }
    return false;
}

/* True when the certificate's subjectAltName lists `address` as an iPAddress. mbedTLS 2.28
 * matches host names against dNSName entries only, so this walks the raw extensions itself:
 * Extensions ::= SEQUENCE OF SEQUENCE { extnID OID, critical BOOLEAN OPTIONAL, OCTET STRING }. */
static bool certificate_names_address(const mbedtls_x509_crt *certificate,
                                      const unsigned char *address, size_t address_length)
{
    unsigned char *cursor = certificate->v3_ext.p;
    size_t length = 0;
    if (cursor == NULL)
        return false;
    const unsigned char *end = cursor + certificate->v3_ext.len;
    if (mbedtls_asn1_get_tag(&cursor, end, &length,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return false;
    end = cursor + length;
    while (cursor < end) {
        if (mbedtls_asn1_get_tag(&cursor, end, &length,
                                 MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
            return false;
        const unsigned char *extension_end = cursor + length;
        size_t oid_length = 0;
        if (mbedtls_asn1_get_tag(&cursor, extension_end, &oid_length, MBEDTLS_ASN1_OID) != 0)
            return false;
        bool is_san = oid_length == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
                      memcmp(cursor, MBEDTLS_OID_SUBJECT_ALT_NAME, oid_length) == 0;
        cursor += oid_length;
        if (is_san) {
            int critical = 0;
            (void)mbedtls_asn1_get_bool(&cursor, extension_end, &critical); /* optional */
            if (mbedtls_asn1_get_tag(&cursor, extension_end, &length,
                                     MBEDTLS_ASN1_OCTET_STRING) != 0)
                return false;
            return general_names_contain(cursor, cursor + length, address, address_length);
        }
        cursor = (unsigned char *)extension_end;
    }
    return false;
}

/* Runs for each certificate of the chain. For an IP-literal host, mbedTLS flags a name mismatch
 * even when the certificate names that address as an iPAddress; that one case is cleared here.
 * Every other flag stays and still fails the handshake. */
static int verify_callback(void *context, mbedtls_x509_crt *certificate, int depth,
                           uint32_t *flags)
{
    const kt_tls_client *client = context;
    if (depth == 0 && client->host_is_address && (*flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) &&
        certificate_names_address(certificate, client->address, client->address_length))
        *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

static void describe_rejection(uint32_t flags, const endpoint *target, const char *ca_file,
                               char *error, size_t error_size)
{
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        kt_crypto_error(error, error_size,
                        "the server certificate of %s:%s is not signed by the CA in %s; pass the "
                        "right --cacert or check the server address",
                        target->host, target->port, ca_file);
    else if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        kt_crypto_error(error, error_size,
                        "the server certificate of %s:%s is not issued for \"%s\"; connect with a "
                        "host name or address the certificate lists, or regenerate the server "
                        "certificate for this name",
                        target->host, target->port, target->host);
    else if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
        kt_crypto_error(error, error_size,
                        "the server certificate of %s:%s has expired; renew it on the server "
                        "(or check this machine's clock)",
                        target->host, target->port);
    else if (flags & MBEDTLS_X509_BADCERT_FUTURE)
        kt_crypto_error(error, error_size,
                        "the server certificate of %s:%s is not valid yet; check the clocks of "
                        "this machine and the server",
                        target->host, target->port);
    else {
        char detail[256];
        if (mbedtls_x509_crt_verify_info(detail, sizeof detail, "", flags) < 0)
            detail[0] = '\0';
        detail[strcspn(detail, "\n")] = '\0';
        kt_crypto_error(error, error_size,
                        "the server certificate of %s:%s was rejected (%s); check the server's "
                        "certificate and --cacert",
                        target->host, target->port, detail);
    }
}

/* ---- Connection set-up ----------------------------------------------------------------------- */

static kt_tls_client *client_new(const char *host)
{
    kt_tls_client *client = calloc(1, sizeof *client);
    if (client == NULL)
        return NULL;
    client->socket = -1;
    mbedtls_ssl_init(&client->ssl);
    mbedtls_ssl_config_init(&client->config);
    mbedtls_x509_crt_init(&client->ca);
    if (inet_pton(AF_INET, host, client->address) == 1) {
        client->host_is_address = true;
        client->address_length = 4;
    } else if (inet_pton(AF_INET6, host, client->address) == 1) {
        client->host_is_address = true;
        client->address_length = 16;
    }
    return client;
}

static kt_tls_failure load_ca(kt_tls_client *client, const kt_tls_options *options,
                              char *error, size_t error_size)
{
    if (options->ca_file == NULL || options->ca_file[0] == '\0') {
        kt_crypto_error(error, error_size,
                        "no CA certificate file was given to check the server with; pass "
                        "--cacert (or --skip-ssl-check, for testing only)");
        return KT_TLS_ERROR;
    }
    int ret = mbedtls_x509_crt_parse_file(&client->ca, options->ca_file);
    if (ret != 0) {
        char detail[128];
        mbedtls_strerror(ret, detail, sizeof detail);
        kt_crypto_error(error, error_size,
                        "could not read the CA certificate file %s (%s); pass the right --cacert",
                        options->ca_file, detail);
        return KT_TLS_ERROR;
    }
    return KT_TLS_OK;
}

static kt_tls_failure configure(kt_tls_client *client, const char *host,
                                const kt_tls_options *options, char *error, size_t error_size)
{
    if (kt_mbedtls_random_init(&client->random, "keytrustee tls client") != 0) {
        kt_crypto_error(error, error_size, "could not seed the TLS random generator");
        return KT_TLS_ERROR;
    }
    client->random_ready = true;
    mbedtls_ssl_config *config = &client->config;
    int ret = mbedtls_ssl_config_defaults(config, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret == 0) {
        mbedtls_ssl_conf_min_version(config, MBEDTLS_SSL_MAJOR_VERSION_3,
                                     MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
        mbedtls_ssl_conf_rng(config, mbedtls_ctr_drbg_random, &client->random.drbg);
        mbedtls_ssl_conf_read_timeout(config, (uint32_t)client->io_timeout_ms);
        if (options->skip_verify) {
            mbedtls_ssl_conf_authmode(config, MBEDTLS_SSL_VERIFY_NONE);
        } else {
            mbedtls_ssl_conf_authmode(config, MBEDTLS_SSL_VERIFY_REQUIRED);
            mbedtls_ssl_conf_ca_chain(config, &client->ca, NULL);
            mbedtls_ssl_conf_verify(config, verify_callback, client);
        }
        ret = mbedtls_ssl_setup(&client->ssl, config);
    }
    if (ret == 0)
        ret = mbedtls_ssl_set_hostname(&client->ssl, host); /* SNI and the name check */
    if (ret != 0) {
        char detail[128];
        mbedtls_strerror(ret, detail, sizeof detail);
        kt_crypto_error(error, error_size, "could not set up TLS for %s: %s", host, detail);
        return KT_TLS_ERROR;
    }
    mbedtls_ssl_set_bio(&client->ssl, client, send_callback, NULL, receive_callback);
    return KT_TLS_OK;
}

static kt_tls_failure handshake(kt_tls_client *client, const endpoint *target,
                                const kt_tls_options *options, char *error, size_t error_size)
{
    int ret;
    do {
        ret = mbedtls_ssl_handshake(&client->ssl);
    } while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret == 0)
        return KT_TLS_OK;
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        describe_rejection(mbedtls_ssl_get_verify_result(&client->ssl), target, options->ca_file,
                           error, error_size);
        return KT_TLS_CERTIFICATE_REJECTED;
    }
    if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
        kt_crypto_error(error, error_size,
                        "the TLS handshake with %s:%s got no answer within %d ms; check that "
                        "this is the server's HTTPS port and that the server is not overloaded",
                        target->host, target->port, client->io_timeout_ms);
        return KT_TLS_TIMEOUT;
    }
    if (ret == MBEDTLS_ERR_SSL_CONN_EOF || ret == MBEDTLS_ERR_NET_CONN_RESET) {
        kt_crypto_error(error, error_size,
                        "%s:%s closed the connection during the TLS handshake; check that this "
                        "is the server's HTTPS port",
                        target->host, target->port);
        return KT_TLS_HANDSHAKE_FAILED;
    }
    char detail[128];
    mbedtls_strerror(ret, detail, sizeof detail);
    kt_crypto_error(error, error_size,
                    "the TLS handshake with %s:%s failed (%s); check that this is a keytrustee "
                    "server's HTTPS port speaking TLS 1.2 or later",
                    target->host, target->port, detail);
    return KT_TLS_HANDSHAKE_FAILED;
}

static void client_free(kt_tls_client *client)
{
    if (client->socket >= 0)
        (void)close(client->socket); /* nothing buffered in the kernel is ours to lose */
    mbedtls_ssl_free(&client->ssl);
    mbedtls_ssl_config_free(&client->config);
    mbedtls_x509_crt_free(&client->ca);
    if (client->random_ready)
        kt_mbedtls_random_free(&client->random);
    free(client);
}

kt_tls_client *kt_tls_connect(const char *host, const char *port, const kt_tls_options *options,
                              kt_tls_failure *failure, char *error, size_t error_size)
{
    if (host == NULL || port == NULL || options == NULL) {
        kt_crypto_error(error, error_size, "no server address was given to connect to");
        set_failure(failure, KT_TLS_ERROR);
        return NULL;
    }
    endpoint target = {host, port};
    kt_tls_client *client = client_new(host);
    if (client == NULL) {
        kt_crypto_error(error, error_size, "out of memory while connecting to %s:%s", host, port);
        set_failure(failure, KT_TLS_ERROR);
        return NULL;
    }
    client->io_timeout_ms = options->io_timeout_ms > 0 ? options->io_timeout_ms
                                                       : DEFAULT_IO_TIMEOUT_MS;
    int connect_timeout = options->connect_timeout_ms > 0 ? options->connect_timeout_ms
                                                          : DEFAULT_CONNECT_TIMEOUT_MS;
    kt_tls_failure result = options->skip_verify ? KT_TLS_OK
                                                 : load_ca(client, options, error, error_size);
    if (result == KT_TLS_OK)
        result = configure(client, host, options, error, error_size);
    if (result == KT_TLS_OK) {
        client->socket = connect_tcp(&target, connect_timeout, error, error_size);
        if (client->socket < 0)
            result = KT_TLS_CONNECT_FAILED;
    }
    if (result == KT_TLS_OK)
        result = handshake(client, &target, options, error, error_size);
    set_failure(failure, result);
    if (result != KT_TLS_OK) {
        client_free(client);
        return NULL;
    }
    return client;
}

/* ---- Reading and writing --------------------------------------------------------------------- */

static kt_tls_failure classify_io_error(int ret)
{
    switch (ret) {
    case MBEDTLS_ERR_SSL_TIMEOUT:
        return KT_TLS_TIMEOUT;
    case MBEDTLS_ERR_NET_CONN_RESET:
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
        return KT_TLS_CLOSED;
    default:
        return KT_TLS_ERROR;
    }
}

int kt_tls_write(kt_tls_client *client, const void *data, size_t length, kt_tls_failure *failure)
{
    if (client == NULL) {
        set_failure(failure, KT_TLS_ERROR);
        return -1;
    }
    const unsigned char *cursor = data;
    while (length > 0) {
        int ret = mbedtls_ssl_write(&client->ssl, cursor, length);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (ret < 0) {
            set_failure(failure, classify_io_error(ret));
            return -1;
        }
        cursor += ret;
        length -= (size_t)ret;
    }
    set_failure(failure, KT_TLS_OK);
    return 0;
}

long kt_tls_read(kt_tls_client *client, void *buffer, size_t size, kt_tls_failure *failure)
{
    /* A zero-sized read would return 0, which means "peer closed": refuse it instead. */
    if (client == NULL || size == 0) {
        set_failure(failure, KT_TLS_ERROR);
        return -1;
    }
    for (;;) {
        int ret = mbedtls_ssl_read(&client->ssl, buffer, size);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (ret > 0) {
            set_failure(failure, KT_TLS_OK);
            return ret;
        }
        /* A close_notify and a plain end of stream both mean the peer closed: many HTTPS servers
         * skip close_notify, and our protocol frames its messages, so truncation is detected
         * above this layer. A reset is an error. */
        if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
            ret == MBEDTLS_ERR_SSL_CONN_EOF) {
            set_failure(failure, KT_TLS_CLOSED);
            return 0;
        }
        set_failure(failure, classify_io_error(ret));
        return -1;
    }
}

int kt_tls_peer_fingerprint(const kt_tls_client *client, char out[96])
{
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&client->ssl);
    if (peer == NULL)
        return -1;
    kt_x509_format_fingerprint(&peer->raw, out);
    return 0;
}

void kt_tls_close(kt_tls_client *client)
{
    if (client == NULL)
        return;
    /* Tell the server we are done; if it is gone already there is nothing more to do. */
    (void)mbedtls_ssl_close_notify(&client->ssl);
    client_free(client);
}
