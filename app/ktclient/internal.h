/*
 * internal.h — the pieces the files of the client library share: URL parsing, request signing,
 * the small HTTP/1.1 client, the confdir files and error text. Not part of the public API of
 * ktclient.h; the unit tests include it to exercise the pure functions (parsers, formatters).
 */
#ifndef KT_CLIENT_INTERNAL_H
#define KT_CLIENT_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "app/ktclient/ktclient.h"
#include "crypto/crypto.h"

/* ---- Error text ------------------------------------------------------------------------------ */

/* Writes one formatted message into error (when error is not NULL and error_size > 0). */
void kt_client_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, returning `status`, so failures read `return kt_client_fail(...)`. */
kt_client_status kt_client_fail(kt_client_status status, char *error, size_t error_size,
                                const char *format, ...) __attribute__((format(printf, 4, 5)));
/* Copies at most out_size - 1 bytes of untrusted text (a server message), replacing control
 * characters and bytes of escape sequences with '?', so it is safe to print on a terminal. */
void kt_client_sanitize(char *out, size_t out_size, const char *text);

/* ---- URLs ------------------------------------------------------------------------------------ */

#define KT_URL_MAX 300u /* longest URL text accepted */

typedef struct kt_url {
    char host[256];      /* name or address, lowercase, IPv6 without brackets */
    char port[6];        /* decimal, default 11371 */
    char authority[266]; /* host:port with IPv6 in brackets: the Host header */
    char text[276];      /* normalized: https://authority */
} kt_url;

/* Parses https://HOST[:PORT][/]; refuses http://, other schemes, user names, paths, queries. */
int kt_url_parse(const char *text, kt_url *url, char *error, size_t error_size);
/* Same host (case-insensitive) and port. */
bool kt_url_same(const kt_url *a, const kt_url *b);
/* Percent-encodes everything but RFC 3986 unreserved characters. Returns -1 when out is short. */
int kt_url_encode(char *out, size_t out_size, const char *text);

/* ---- Request signing ------------------------------------------------------------------------- */

#define KT_NONCE_BYTES 16u
#define KT_NONCE_CHARS 24u /* base64 of 16 bytes */

typedef struct kt_request_signature {
    char client[KT_FINGERPRINT_CHARS + 1];
    char timestamp[24];
    char nonce[KT_NONCE_CHARS + 1];
    char signature[96]; /* base64 of 64 bytes: 88 characters */
} kt_request_signature;

/* The string to sign of docs/api.md. `authority` is the Host header the request is sent with
 * (host:port of the server it is meant for). Returns 0, or -1 when it does not fit in out_size. */
int kt_signing_string(char *out, size_t out_size, const char *method, const char *authority,
                      const char *target, const char *timestamp, const char *nonce,
                      const void *body, size_t body_length);
/* Fills the four X-KT-* header values for a request to the server `authority` (its Host header)
 * at `timestamp` with `nonce`. */
int kt_request_sign(kt_request_signature *signature, const char *fingerprint,
                    const kt_secret *secret_key, const char *method, const char *authority,
                    const char *target, const void *body, size_t body_length, int64_t timestamp,
                    const unsigned char nonce[KT_NONCE_BYTES]);

/* ---- HTTP/1.1 -------------------------------------------------------------------------------- */

#define KT_HTTP_MAX_HEAD    (16u * 1024u)  /* status line + headers + blank line */
#define KT_HTTP_MAX_LINE    (8u * 1024u)   /* one header line */
#define KT_HTTP_MAX_HEADERS 100u
#define KT_HTTP_MAX_BODY    (1024u * 1024u) /* decoded body */
#define KT_HTTP_MAX_CHUNK_LINE 1024u        /* chunk-size line with extensions */
#define KT_HTTP_MAX_TARGET  2048u           /* request target we send */
#define KT_HTTP_MAX_AUTHORITY 265u          /* Host header we send: kt_url's authority */
/* Raw bytes read at most: head, body and chunked framing. */
#define KT_HTTP_MAX_RESPONSE (KT_HTTP_MAX_HEAD + 2u * KT_HTTP_MAX_BODY)

typedef enum kt_http_result {
    KT_HTTP_COMPLETE = 0,
    KT_HTTP_INCOMPLETE = 1, /* more bytes needed */
    KT_HTTP_MALFORMED = -1, /* not a response this client accepts */
    KT_HTTP_TRUNCATED = -2  /* the connection closed before the response was complete */
} kt_http_result;

typedef struct kt_http_response {
    int status;
    size_t head_length;    /* bytes of status line, headers and blank line */
    bool has_length;       /* Content-Length given */
    size_t content_length;
    bool chunked;          /* Transfer-Encoding: chunked */
    bool has_body;         /* false for 204 and 304 */
    kt_secret *body;       /* set when complete; may hold deposit content */
} kt_http_response;

/* Parses the status line and headers at the start of data. COMPLETE fills status, head_length
 * and the framing fields; INCOMPLETE means the blank line has not arrived yet. */
kt_http_result kt_http_parse_head(const char *data, size_t length, kt_http_response *response,
                                  char *error, size_t error_size);
/* Parses a whole response; `closed` says the peer has closed the connection, so nothing more will
 * come. COMPLETE sets response->body. */
kt_http_result kt_http_parse_response(const unsigned char *data, size_t length, bool closed,
                                      kt_http_response *response, char *error,
                                      size_t error_size);
void kt_http_response_clear(kt_http_response *response); /* frees and wipes the body */

typedef struct kt_http_request {
    const char *method;    /* GET, POST, DELETE */
    const char *target;    /* path and query, as signed */
    const char *authority; /* Host header */
    const kt_request_signature *signature; /* NULL: unsigned */
    const void *body;      /* JSON when body_length > 0 or method is POST */
    size_t body_length;
} kt_http_request;

/* The request bytes, in a secret buffer because bodies may hold deposit content. */
int kt_http_format_request(const kt_http_request *request, kt_secret **out, char *error,
                           size_t error_size);

/* Connects, sends the request and reads the response. Returns 0 with a complete response, or -1
 * with *failure saying what went wrong (KT_TLS_CLOSED for a truncated response, KT_TLS_ERROR for
 * one that is malformed). *sent says whether the request may have reached the server: false only
 * when the connection or the TLS handshake failed, so nothing was sent and a write may safely be
 * tried elsewhere. */
int kt_http_exchange(const kt_url *url, const kt_tls_options *options,
                     const kt_http_request *request, kt_http_response *response,
                     kt_tls_failure *failure, bool *sent, char *error, size_t error_size);

/* ---- The confdir ----------------------------------------------------------------------------- */

#define KT_CLIENT_KEY_FILE  "client.key"
#define KT_CLIENT_CONF_FILE "client.conf"
#define KT_CLIENT_CA_FILE   "server-ca.pem"
#define KT_CLIENT_KEY_PREFIX "keytrustee-client-key-v1 "
#define KT_CLIENT_MAX_NAME  255u

typedef struct kt_client_config {
    char server[KT_URL_MAX + 1];
    char passive_server[KT_URL_MAX + 1]; /* "" when none */
    char org[KT_CLIENT_MAX_NAME + 1];
    char name[KT_CLIENT_MAX_NAME + 1];
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    char ca_file[PATH_MAX];              /* "" when skip_ssl_check */
    bool skip_ssl_check;
    long connect_timeout_ms;             /* 0 when client.conf does not set it (older files) */
} kt_client_config;

/* Parses client.conf text (`path` only names the file in error text). Every key must be known and
 * given once; server, org, name and fingerprint are required; values are checked. */
int kt_client_config_parse(const char *text, size_t length, const char *path,
                           kt_client_config *config, char *error, size_t error_size);
/* The file text of a configuration. Returns -1 when it does not fit. */
int kt_client_config_format(const kt_client_config *config, char *out, size_t out_size);
int kt_client_config_load(const char *path, kt_client_config *config, char *error,
                          size_t error_size);

/* The client.key text for a secret key, in a new secret buffer. */
int kt_client_key_format(const kt_secret *secret_key, kt_secret **text);
/* Parses client.key text into a secret key of KT_SIGN_SECRET_BYTES. */
int kt_client_key_parse(const kt_secret *text, const char *path, kt_secret **secret_key,
                        char *error, size_t error_size);
/* Loads client.key, refusing a file that group or others may access. */
int kt_client_key_load(const char *path, kt_secret **secret_key, char *error, size_t error_size);

/* True when text is 1..maximum bytes without control characters (bytes below 0x20 and 0x7f). */
bool kt_client_text_valid(const char *text, size_t maximum);
/* Compact JSON text of an object in a secret buffer (request bodies may hold secrets); NULL when
 * memory is short. */
kt_secret *kt_client_json_dump(const json_t *object);

/* ---- Failover rules (failover.c) -------------------------------------------------------------- */

#define KT_CLIENT_MESSAGE_CHARS 320u

/* What one attempt against one configured server ended with. */
typedef struct kt_attempt_outcome {
    size_t server;          /* index of the configured server (0 = server, 1 = passive_server) */
    kt_tls_failure failure; /* KT_TLS_OK when the server answered */
    bool sent;              /* the request may have reached the server */
    int http_status;        /* 0 when there was no answer */
    char code[40];          /* "error" of the answer's JSON body, "" when none */
    char message[KT_CLIENT_MESSAGE_CHARS];
    kt_url active;          /* from a "passive" refusal */
    bool has_active;
} kt_attempt_outcome;

typedef enum kt_failover_step {
    KT_FAILOVER_STOP = 0, /* this answer is final */
    KT_FAILOVER_OTHER = 1 /* send the call to the other configured server */
} kt_failover_step;

/* True when the attempt got no usable answer: a transport failure, or a 5xx. */
bool kt_failover_unhealthy(const kt_attempt_outcome *outcome);
/* What to do after a failed attempt. `other` is the other configured server, NULL when there is
 * none (then always STOP). Reads go to the other server on any transport failure or 5xx. Writes
 * go there only when nothing was sent (connect or handshake failure), when the node's database
 * service is down (503 unavailable), or when the node is the passive and names the other server
 * as the active (or names none). 4xx answers are final for both. */
kt_failover_step kt_failover_next(bool write, const kt_attempt_outcome *outcome,
                                  const kt_url *other);
/* For a write whose attempts all failed: true when the refusal means that the pair is degraded
 * (one node down), with *down the index of the configured server that is down, or SIZE_MAX when
 * that node is not one this client knows (only one server configured). Degraded means: an active
 * answered 503 write_unavailable (its peer is down), or one node was unreachable and the other
 * said it is the passive and named the unreachable one (or no one) as the active. */
bool kt_failover_degraded(const kt_url *servers, size_t server_count,
                          const kt_attempt_outcome *outcomes, size_t count, size_t *down);
/* For a write whose two attempts both failed: true when the answers are those of a role change
 * under way (`ktadmin switchover` or `promote`): both nodes said "passive", each naming the other
 * configured server, or one said so and the other answered 503 unavailable (its keytrustee-db is
 * restarting). Nothing was stored by either; the caller may start over once after a pause
 * (KT_FAILOVER_ROLE_CHANGE_PAUSE_MS). */
#define KT_FAILOVER_ROLE_CHANGE_PAUSE_MS 1000
bool kt_failover_role_change(const kt_url *servers, size_t server_count,
                             const kt_attempt_outcome *outcomes, size_t count);

/* ---- Requests with server selection (request.c) ---------------------------------------------- */

/* What one signed request against the configured servers ended with. */
typedef struct kt_client_call {
    const char *method;
    const char *target;
    const void *body;
    size_t body_length;
    bool write;                /* selects the retry rule */
    kt_http_response response; /* the final answer when status is OK */
    /* Filled by kt_client_perform: the configured servers tried, in order, and whether each gave
     * no usable answer (kt_failover_unhealthy). */
    size_t tried_count;
    size_t tried[2];
    bool tried_unhealthy[2];
} kt_client_call;

/* The servers and credentials a call needs, shared by kt_client and registration. */
typedef struct kt_client_endpoint {
    kt_url servers[2];
    size_t server_count;
    size_t first_read;       /* index of the server reads ask first (writes: always 0) */
    kt_tls_options tls;      /* connect timeout, and the I/O timeout of a last attempt */
    int quick_io_timeout_ms; /* I/O timeout of a read attempt when another server remains */
    const char *fingerprint;
    const kt_secret *secret_key;
} kt_client_endpoint;

/* Sets the TLS timeouts of an endpoint from a connect timeout (0 = the default). */
void kt_client_endpoint_timeouts(kt_client_endpoint *endpoint, long connect_timeout_ms);

/* Sends the call (failing over as ktclient.h describes) and maps the final answer to a status: OK
 * for 2xx (response kept in call->response), otherwise the status and message for the failure. */
kt_client_status kt_client_perform(const kt_client_endpoint *endpoint, kt_client_call *call,
                                   char *error, size_t error_size);

/* Stores a deposit through an endpoint, without the reserved-handle check of kt_client_put. */
kt_client_status kt_client_put_on(const kt_client_endpoint *endpoint, const char *handle,
                                  const void *secret, size_t length, const char *description,
                                  char uuid[KT_UUID_CHARS + 1], char *error, size_t error_size);
/* The servers and credentials of an open client. */
const kt_client_endpoint *kt_client_endpoint_of(const kt_client *client);
/* Stores a new random master key deposit (KT_CLIENT_MASTER_HANDLE) through an endpoint. */
kt_client_status kt_client_store_master_key(const kt_client_endpoint *endpoint, char *error,
                                            size_t error_size);

/* ---- The failover hint: client.state (state.c) ------------------------------------------------ */

#define KT_CLIENT_STATE_FILE "client.state"
#define KT_CLIENT_AVOID_SECONDS 30

/* A server that recently failed, which reads ask second until `until` (unix seconds). */
typedef struct kt_client_hint {
    char avoid[KT_URL_MAX + 1]; /* normalized URL, "" when there is no hint */
    int64_t until;
} kt_client_hint;

/* Parses client.state text; -1 (and an empty hint) when it is not exactly the format written by
 * kt_client_hint_format. */
int kt_client_hint_parse(const char *text, size_t length, kt_client_hint *hint);
int kt_client_hint_format(const kt_client_hint *hint, char *out, size_t out_size);
/* The index of the server reads should ask first at time `now`: the other one while the hint
 * names a configured server and has not expired, else 0. */
size_t kt_client_hint_first(const kt_client_hint *hint, const kt_url *servers,
                            size_t server_count, int64_t now);
/* Loads the hint; a missing, unreadable, malformed or group/other-writable file is no hint. */
void kt_client_hint_load(const char *path, kt_client_hint *hint);
/* Records what a read taught: after a failover, the server that failed is avoided for
 * KT_CLIENT_AVOID_SECONDS; once the avoided server answers, the hint is removed. Writes the file
 * (0600) only when the hint changes; failing to write it only costs speed, so it is not an
 * error. */
void kt_client_hint_learn(const char *path, kt_client_hint *hint,
                          const kt_client_endpoint *endpoint, const kt_client_call *call,
                          int64_t now);

#endif /* KT_CLIENT_INTERNAL_H */
