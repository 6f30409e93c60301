/*
 * keytrusteed.h — what the files of keytrusteed, the HTTPS front end, share.
 *
 * keytrusteed serves docs/api.md with CivetWeb (compiled with mbedTLS). It parses and
 * authenticates requests, seals and opens deposits with the server data key, and asks
 * keytrustee-db for every read and write over the admin socket (app/common/app.h); it never opens
 * the database itself.
 *
 * One request's journey:
 *   server.c    CivetWeb calls begin_request on a worker thread
 *   router.c    matches method and path, answers 404/405, and logs one line when done
 *   json_io.c   reads the body (411, 413, 415), parses strict JSON (400), sends JSON answers
 *   auth.c      checks the request signature, the clock window and the nonce (401), and that the
 *               client and its org are enabled (403); authority.c says whether the signed Host
 *               names this node
 *   register.c, deposits.c, health.c   the endpoints
 *   status.c, metrics.c   monitoring: /v1/status, /metrics, and the thread that logs role and
 *               peer changes
 *   db_pool.c   the worker thread's admin-socket connection, and admin-socket errors → HTTP
 *   audit.c, rate_limit.c   the audit event of each authenticated request; 429 after too many
 *               failed authentications (docs/security.md)
 *
 * Secrets (deposit plaintexts, org auth secrets, request bodies that carry them) stay in
 * kt_secret buffers and are wiped; JSON that held them is allocated through a wiping allocator
 * (json_io.c). Nothing secret is ever logged.
 */
#ifndef KT_KEYTRUSTEED_H
#define KT_KEYTRUSTEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CIVETWEB_DEFINES in the Makefile compile civetweb.c and this folder alike: MG_EXPERIMENTAL_INTERFACES
 * adds members to struct mg_callbacks, so both sides must see the same defines. */
#include <civetweb.h>
#include <jansson.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "storage/storage.h"

#define KTD_PROGRAM           "keytrusteed"
#define KTD_BODY_MAX          (128u * 1024u) /* request body limit, docs/api.md */
#define KTD_CLOCK_WINDOW      300            /* seconds a request timestamp may be off */
#define KTD_NONCE_BYTES       16u
#define KTD_DB_TIMEOUT_MS     15000          /* one admin-socket call */
#define KTD_WORKER_THREADS    "64"           /* also bounds concurrent connections */
#define KTD_REQUEST_TIMEOUT   "10000"        /* ms; CivetWeb's per-read/write timeout */
#define KTD_AUTHORITY_MAX     272            /* canonical host:port, IPv6 in brackets */
#define KTD_NAMES_MAX         16             /* names a node answers to (authority.c) */
#define KTD_HOST_DEFAULT_PORT 443L           /* a Host header without a port: https's default */

/* ---- The daemon (server.c) ------------------------------------------------------------------ */

typedef struct ktd_daemon {
    kt_paths paths;
    kt_server_keys *keys;                 /* data_key seals deposits; fingerprint is our identity */
    char listen_address[64];             /* numeric IPv4 or IPv6 */
    long port;
    char external_address[256];
    char names[KTD_NAMES_MAX][KTD_AUTHORITY_MAX]; /* canonical authorities (authority.c) */
    size_t name_count;
    struct mg_context *context;          /* the running CivetWeb server */
    kt_secret *tls_pem;                  /* key + certificate, read before daemonizing; freed
                                            once CivetWeb has started with it */
} ktd_daemon;

/* Builds the combined PEM from .ssl/, checks it, starts CivetWeb. Returns 0 or -1 (logged). */
int ktd_server_start(ktd_daemon *daemon, char *error, size_t error_size);
/* SIGHUP: new handshakes get the re-read certificate, established connections keep theirs; a
 * certificate that does not load is refused (logged) and the running one stays. */
void ktd_server_reload(ktd_daemon *daemon);
void ktd_server_stop(ktd_daemon *daemon);

/* ---- The node's names (authority.c) -------------------------------------------------------- */

/* Writes host[:port] `text` in canonical form: lowercase host, IPv6 in brackets as inet_ntop
 * writes it, explicit port (default_port when none is given). -1 when it is not host[:port]. */
int ktd_authority_canonical(const char *text, long default_port, char *out, size_t out_size);
/* Fills daemon->names from external_address, the listen address (unless a wildcard), the host
 * name and accepted_hosts (blanks or commas between names); names without a port get
 * daemon->port. Returns 0, or -1 with a sentence in error. */
int ktd_names_load(ktd_daemon *daemon, const char *external_address, const char *accepted_hosts,
                   char *error, size_t error_size);
/* Whether a canonical authority is one of this node's names. */
bool ktd_authority_is_ours(const ktd_daemon *daemon, const char *canonical);

/* ---- TLS material (tls.c) ------------------------------------------------------------------- */

/* Reads .ssl/ssl-cert-keytrustee-pk.pem and ssl-cert-keytrustee.pem into one PEM (key first) and
 * checks that both parse and that the key belongs to the certificate. */
int ktd_tls_pem_load(const kt_paths *paths, kt_secret **pem, char *error, size_t error_size);
/* Writes the PEM to run/keytrusteed-tls-<pid>.pem (0600) for CivetWeb to read at start. */
int ktd_tls_pem_write(const kt_paths *paths, const kt_secret *pem, char *path, size_t path_size,
                      char *error, size_t error_size);

/* ---- One request ---------------------------------------------------------------------------- */

typedef struct ktd_request {
    struct mg_connection *connection;
    const ktd_daemon *daemon;
    const char *method;
    const char *path;     /* as sent, not decoded, without the query */
    const char *query;    /* as sent, without '?'; NULL when the target had no '?' */
    kt_secret *body;      /* after ktd_body_read: the whole body (length 0 when none) */
    bool body_unread;     /* a body was announced but not consumed: close the connection */
    int status;           /* of the answer sent, for the log; 0 until answered */
    const char *error_code; /* "error" of an error answer (a static string), for /metrics */
    char client[KT_FINGERPRINT_CHARS + 1]; /* authenticated client, for the log; "" if none */
} ktd_request;

/* An authenticated client (client.get), passed on to the handlers. */
typedef struct ktd_client {
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    char org_uuid[KT_UUID_CHARS + 1];
    char org_name[KT_ORG_NAME_MAX + 1];
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    kt_state state;
} ktd_client;

/* ---- Routing (router.c) --------------------------------------------------------------------- */

/* The CivetWeb begin_request callback: every request goes through here. */
int ktd_route(struct mg_connection *connection);
/* The CivetWeb http_error callback: CivetWeb's own errors (bad request line, ...) as JSON. */
int ktd_route_http_error(struct mg_connection *connection, int status, const char *message);

/* Handlers answer exactly once. `argument` is the path's uuid segment, or NULL. */
typedef void (*ktd_handler)(ktd_request *request, const char *argument);

/* The routes, for /metrics labels: their count, and each one's pattern ("*" for a uuid segment)
 * and method. */
size_t ktd_route_count(void);
const char *ktd_route_pattern(size_t index);
const char *ktd_route_method(size_t index);

void ktd_handle_fingerprint(ktd_request *request, const char *argument);
void ktd_handle_health(ktd_request *request, const char *argument);
void ktd_handle_status(ktd_request *request, const char *argument);
void ktd_handle_metrics(ktd_request *request, const char *argument);
void ktd_handle_register(ktd_request *request, const char *argument);
void ktd_handle_deposit_put(ktd_request *request, const char *argument);
void ktd_handle_deposit_find(ktd_request *request, const char *argument); /* list/search/handle */
void ktd_handle_deposit_get(ktd_request *request, const char *argument);
void ktd_handle_deposit_purge(ktd_request *request, const char *argument);
void ktd_handle_deposit_disable(ktd_request *request, const char *argument);
void ktd_handle_deposit_enable(ktd_request *request, const char *argument);

/* ---- Query strings (query.c) ---------------------------------------------------------------- */

/* Splits `query` (may be NULL) into its parameters. Every key must be one of `keys` (count of
 * them) and appear at most once; values[i] receives the percent-decoded value of keys[i] (malloc'd,
 * NULL when absent). Returns 0, or -1 with a sentence in `error` (values are then all NULL). */
int ktd_query_parse(const char *query, const char *const *keys, size_t count, char **values,
                    char *error, size_t error_size);
void ktd_query_free(char **values, size_t count);

/* ---- Bodies and answers (json_io.c) --------------------------------------------------------- */

/* Makes jansson wipe every block it frees (it holds base64 secrets while parsing and dumping). */
void ktd_json_use_wiping_allocator(void);

typedef enum ktd_body_kind { KTD_BODY_NONE, KTD_BODY_JSON } ktd_body_kind;

/* Reads the request body into request->body. KTD_BODY_JSON requires Content-Length (411),
 * at most 128 KiB (413) and Content-Type application/json (415); KTD_BODY_NONE refuses a
 * non-empty body (400). Answers and returns -1 on failure. */
int ktd_body_read(ktd_request *request, ktd_body_kind kind);
/* Parses the body as one JSON object whose members all appear in `fields` (NULL-terminated).
 * Answers 400 and returns NULL on failure. */
json_t *ktd_body_object(ktd_request *request, const char *const *fields);
/* A string member: absent is allowed when !required (then *value = NULL). Its byte length must be
 * within [minimum, maximum]; `printable` refuses control characters. Answers 400 on failure. */
int ktd_body_string(ktd_request *request, const json_t *object, const char *name, bool required,
                    size_t minimum, size_t maximum, bool printable, const char **value);

/* One extra response header. */
typedef struct ktd_header {
    const char *name;
    const char *value;
} ktd_header;

/* Sends a complete answer. Returns 0, or -1 when the connection failed (logged at debug). */
int ktd_respond(ktd_request *request, int status, const char *content_type, const void *body,
                size_t length, const ktd_header *headers, size_t header_count);
/* Sends `body` (not consumed) as JSON; the serialised text lives in a wiped buffer. */
int ktd_respond_json(ktd_request *request, int status, const json_t *body);
/* {"error": code, "message": ...}; 503s get Retry-After per docs/api.md; `extra` (may be NULL,
 * not consumed) adds members such as "active". */
int ktd_respond_error(ktd_request *request, int status, const char *code, const json_t *extra,
                      const char *format, ...) __attribute__((format(printf, 5, 6)));
/* An error answer with an Allow header (405). */
int ktd_respond_not_allowed(ktd_request *request, const char *allow);

/* ---- Request authentication (auth.c) -------------------------------------------------------- */

/* Reads the body (kind) and authenticates a registered client: signature headers, clock window,
 * client.get, signature, nonce, client and org enabled. Answers and returns -1 on failure. */
int ktd_authenticate(ktd_request *request, ktd_body_kind kind, ktd_client *client);
/* ktd_authenticate with the client looked up by db_request: client.get, or client.deposit with
 * its "uuid" or "handle" set (a deposit read in one round trip); "fingerprint" is set here. On
 * success *response is keytrustee-db's whole answer (the caller releases it), else NULL. */
int ktd_authenticate_call(ktd_request *request, ktd_body_kind kind, json_t *db_request,
                          ktd_client *client, json_t **response);
/* Verifies the request signature against `public_key` for the fingerprint in X-KT-Client, then
 * the clock window and the nonce (registration: the key comes from the body). Answers 401 and
 * returns -1 on failure. */
int ktd_verify_signature(ktd_request *request,
                         const unsigned char public_key[KT_SIGN_PUBLIC_BYTES]);
/* The X-KT-Client header when it is a well-formed fingerprint, else answers 401 and NULL. */
const char *ktd_claimed_client(ktd_request *request);

/* ---- Replay cache (nonce_cache.c) ----------------------------------------------------------- */

typedef enum ktd_nonce_result {
    KTD_NONCE_FRESH,    /* first sighting: remembered until `expires` */
    KTD_NONCE_REPLAYED, /* seen before and not yet expired */
    KTD_NONCE_FULL      /* the cache is at its bound: refuse rather than forget */
} ktd_nonce_result;

ktd_nonce_result ktd_nonce_remember(const char *fingerprint,
                                    const unsigned char nonce[KTD_NONCE_BYTES], int64_t expires,
                                    int64_t now);
void ktd_nonce_cache_free(void);

/* ---- keytrustee-db (db_pool.c) -------------------------------------------------------------- */

typedef enum ktd_db_kind {
    KTD_DB_READ,  /* safe to repeat */
    KTD_DB_WRITE  /* repeating it after a lost answer may find its own effect */
} ktd_db_kind;

/* Calls keytrustee-db on this worker thread's connection (connecting, or reconnecting once when
 * a reused connection broke). Returns 0 with *response (check "ok"), or answers 503 unavailable
 * and returns -1. */
int ktd_db_call(ktd_request *request, const json_t *db_request, ktd_db_kind kind,
                json_t **response);
/* The "error" code of a refused response, or NULL when "ok" is true. */
const char *ktd_db_error_code(const json_t *response);
/* Answers the HTTP error for a refused response (docs/api.md's table); `not_found` is the
 * message for not_found. */
void ktd_respond_db_error(ktd_request *request, const json_t *response, const char *not_found);
/* Builds {"op": op} plus members; returns NULL (after answering 500) on allocation failure. */
json_t *ktd_db_request(ktd_request *request, const char *op);
/* Answers 500 for an allocation failure or an impossible response; always returns -1. */
int ktd_respond_internal(ktd_request *request, const char *what);

/* ---- Status and monitoring (status.c) ------------------------------------------------------- */

/* The certificate being served, as far as monitoring needs it. */
typedef struct ktd_certificate {
    int64_t not_after; /* unix seconds */
    char subject[256];
} ktd_certificate;

/* server.c, after CivetWeb started with `pem` (key and certificate): remember the certificate. */
void ktd_status_note_certificate(const kt_secret *pem);
/* The certificate last noted; false when none was. */
bool ktd_status_certificate(ktd_certificate *certificate);
/* When keytrusteed started (unix seconds), set by ktd_monitor_start. */
int64_t ktd_started_at(void);
/* keytrustee-db's status response (its "ok" is true), or NULL when keytrustee-db does not answer.
 * Uses a connection of its own and answers nothing: callers report a database that is down. */
json_t *ktd_status_fetch(const ktd_daemon *daemon);
/* Starts the thread that polls keytrustee-db's status every second and logs each change of role,
 * replication state, peer connection and writability. Call after daemonizing and before
 * ktd_server_start. Returns 0, or -1 (logged; keytrusteed runs on without it). */
int ktd_monitor_start(const ktd_daemon *daemon);
void ktd_monitor_stop(void); /* safe when not started */

/* ---- Metrics (metrics.c) -------------------------------------------------------------------- */

#define KTD_METRIC_ENDPOINTS 32 /* routes, plus one slot for requests no route matched */

/* One answered request: `endpoint` is its route index (ktd_route_count() when none matched),
 * `write` says whether the route changes data; `error_code` is the answer's error (NULL when it
 * succeeded), counted in keytrustee_writes_refused_total for writes. */
void ktd_metrics_request(size_t endpoint, int status, double seconds, bool write,
                         const char *error_code);
/* One write call to keytrustee-db and how long its answer took. */
void ktd_metrics_db_write(double seconds);

/* ---- Audit events (audit.c) and failed-authentication limits (rate_limit.c) ----------------- */

#define KTD_RATE_FAILURES 20u   /* failed authentications allowed per window ... */
#define KTD_RATE_WINDOW   60    /* ... of this many seconds, per source address and per client */
#define KTD_RATE_SLOTS    4096u /* addresses and clients tracked at once */

/* Before dispatch: sets *audited for requests to authenticated endpoints and reserves their audit
 * event; false after answering 503 audit_unavailable when the audit log cannot take it. */
bool ktd_audit_admit(ktd_request *request, bool *audited);
/* After the answer: records the event of an audited request. */
void ktd_audit_request(const ktd_request *request, size_t route_index);
/* A handler names the object it created (a new deposit's uuid) for the audit event. */
void ktd_audit_note_object(const char *object);
/* Before dispatch of an audited request: false after answering 429 when its source address, or
 * the client it claims, has too many recent failures. */
bool ktd_rate_admit(ktd_request *request);
/* After the answer: counts a 401/403 against the address (and the client, when its signature
 * verified). */
void ktd_rate_note(const ktd_request *request);
void ktd_rate_reset(void); /* forgets every count (tests) */

/* ---- Records from keytrustee-db ------------------------------------------------------------- */

/* Fills `client` from a client object. Returns 0 or -1 when a member is missing or malformed. */
int ktd_client_from_json(const json_t *object, ktd_client *client);

#endif /* KT_KEYTRUSTEED_H */
