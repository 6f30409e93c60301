/*
 * ktclient.h — the keytrustee client library: registers a client with a key server pair and
 * stores, fetches, lists and deletes deposits over the HTTPS API of docs/api.md.
 *
 * A registered client is a configuration directory (the "confdir", mode 0700) holding
 *   client.key      "keytrustee-client-key-v1 <base64 Ed25519 secret key>\n", mode 0600
 *   client.conf     key = value lines, mode 0600: server, passive_server, org, name, fingerprint,
 *                   ca_file (relative paths are relative to the confdir), skip_ssl_check (yes|no)
 *   server-ca.pem   a copy of the CA given at registration, so the client keeps working if the
 *                   original file moves
 * Every request is signed with the client key (docs/api.md, "Request signing").
 *
 * Servers: requests go to `server` first. Reads (GET) that cannot reach it, or that get a 5xx,
 * are retried once on `passive_server` when one is configured. Writes that a passive refuses
 * (503 "passive" naming the active) are retried once on that active when it is one of the two
 * configured servers. Nothing is retried after a 4xx.
 *
 * Every function that can fail returns a kt_client_status and writes one or two sentences into
 * `error` saying what happened and what to do. The status values are the exit codes of the
 * `ktclient` program. Error text never holds secret bytes.
 *
 * Secrets (the client key, deposit contents) live in kt_secret buffers (crypto.h) and are wiped.
 * Call kt_client_library_init() once before anything else: it initialises crypto/ and makes
 * jansson (used inside the library) wipe the memory it frees, because fetched deposits pass
 * through its parser.
 *
 * Not thread-safe per kt_client: use one kt_client per thread.
 */
#ifndef KT_CLIENT_H
#define KT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

typedef enum kt_client_status {
    KT_CLIENT_OK = 0,
    KT_CLIENT_ERROR = 1,       /* anything not listed below */
    KT_CLIENT_USAGE = 2,       /* a bad argument (not a uuid, handle too long, ...) */
    KT_CLIENT_UNAVAILABLE = 3, /* no server reachable, or a write refused (503, 507) */
    KT_CLIENT_NOT_FOUND = 4,   /* no such deposit (404) */
    KT_CLIENT_REFUSED = 5      /* authentication refused (401, 403) */
} kt_client_status;

/* Printed to stderr by programs on every use of a client registered with --skip-ssl-check. */
#define KT_CLIENT_SKIP_SSL_WARNING                                                              \
    "warning: --skip-ssl-check: the server certificate is not verified; anyone on the network "  \
    "path can impersonate the key server"

#define KT_CLIENT_DEFAULT_PORT 11371
#define KT_CLIENT_MAX_SECRET   (64u * 1024u) /* largest deposit the server accepts */
#define KT_CLIENT_MAX_HANDLE   255u
#define KT_CLIENT_MAX_DESCRIPTION 1024u

typedef struct kt_client kt_client;

/* Initialises crypto/ and installs a jansson allocator that wipes freed memory. Call once, before
 * any other use of jansson in the process. Returns 0, or -1 when libsodium cannot start. */
int kt_client_library_init(void);

/* ---- Registration ---------------------------------------------------------------------------- */

typedef struct kt_client_registration {
    const char *server;         /* https://HOST[:PORT], required */
    const char *passive_server; /* NULL or "" when there is none */
    const char *org;            /* required */
    const char *auth;           /* the org's auth secret; NULL or "" when the org has none */
    const char *name;           /* client name; NULL or "" = this host's name */
    const char *ca_file;        /* PEM the server certificate must chain to */
    bool skip_ssl_check;        /* exactly one of ca_file and skip_ssl_check */
} kt_client_registration;

/* Creates a key pair, registers it with the server and, on success, writes the confdir (created
 * 0700 when missing). Refuses a confdir that already holds a registration. On success writes the
 * new client's fingerprint (KT_FINGERPRINT_CHARS + NUL) into `fingerprint`. */
kt_client_status kt_client_register(const char *confdir, const kt_client_registration *registration,
                                    char fingerprint[KT_FINGERPRINT_CHARS + 1], char *error,
                                    size_t error_size);

/* ---- A registered client --------------------------------------------------------------------- */

/* Loads the confdir; NULL with the reason in `error` when it is missing, incomplete, or its key
 * file is readable by group or others. */
kt_client *kt_client_open(const char *confdir, char *error, size_t error_size);
void kt_client_close(kt_client *client); /* wipes the key; NULL allowed */

/* The client's identity (40 uppercase hex characters), checked against its key at open. */
const char *kt_client_fingerprint(const kt_client *client);
/* True when the client was registered with --skip-ssl-check: show KT_CLIENT_SKIP_SSL_WARNING. */
bool kt_client_skips_ssl_check(const kt_client *client);

/* True when `handle` is 1..255 bytes without control characters: what put and get accept. */
bool kt_client_handle_valid(const char *handle);

/* Stores `length` bytes (1 .. KT_CLIENT_MAX_SECRET) under `handle` (1..255 bytes, no control
 * characters); `description` may be NULL. On success writes the new deposit's uuid. */
kt_client_status kt_client_put(kt_client *client, const char *handle, const void *secret,
                               size_t length, const char *description,
                               char uuid[KT_UUID_CHARS + 1], char *error, size_t error_size);

/* Fetches a deposit's content into a new secret buffer (*secret; free with kt_secret_free). */
kt_client_status kt_client_get_by_uuid(kt_client *client, const char *uuid, kt_secret **secret,
                                       char *error, size_t error_size);
kt_client_status kt_client_get_by_handle(kt_client *client, const char *handle,
                                         kt_secret **secret, char *error, size_t error_size);

/* One deposit as listed (no content). The strings live only during the callback. */
typedef struct kt_client_deposit {
    const char *uuid;
    const char *handle;
    const char *description; /* "" when there is none */
    const char *state;       /* "active" or "disabled" */
    int64_t created;         /* unix seconds */
} kt_client_deposit;

/* Called once per deposit; return 0 to go on, anything else to stop early (still KT_CLIENT_OK). */
typedef int (*kt_client_list_callback)(const kt_client_deposit *deposit, void *context);

/* Lists the client's deposits: all of them, or those the server's substring search matches
 * (`search` NULL or "" = all). */
kt_client_status kt_client_list(kt_client *client, const char *search,
                                kt_client_list_callback callback, void *context, char *error,
                                size_t error_size);

/* Deletes a deposit for good (the server purges the row). */
kt_client_status kt_client_delete(kt_client *client, const char *uuid, char *error,
                                  size_t error_size);

#endif /* KT_CLIENT_H */
