/*
 * ktclient.h — the keytrustee client library: registers a client with a key server pair and
 * stores, fetches, lists and deletes deposits over the HTTPS API of docs/api.md.
 *
 * A registered client is a configuration directory (the "confdir", mode 0700) holding
 *   client.key      "keytrustee-client-key-v1 <base64 Ed25519 secret key>\n", mode 0600
 *   client.conf     key = value lines, mode 0600: server, passive_server, org, name, fingerprint,
 *                   ca_file (relative paths are relative to the confdir), skip_ssl_check (yes|no),
 *                   connect_timeout_ms (1..60000; absent = 1000)
 *   server-ca.pem   a copy of the CA given at registration, so the client keeps working if the
 *                   original file moves
 *   client.state    the failover hint (not secret, 0600, optional; see below)
 * Every request is signed with the client key (docs/api.md, "Request signing"). Nothing secret is
 * kept on disk but client.key: the master key (below) lives only on the key servers.
 *
 * Servers and failover (a pair registered with `server` = the active and `passive_server`):
 *   - Reads (GET) go to `server` and move to the other server at once when the first gives no
 *     usable answer: connection refused, connect timeout, TLS failure, a connection cut or silent
 *     beyond the I/O timeout, or any 5xx. A 401, 403 or 404 is final: the other node holds the same
 *     data and would answer the same. The first of two read attempts waits at most the connect
 *     timeout (at least 1 s) for each piece of the answer, so a hung node costs about a second;
 *     the last attempt waits the full 15 s.
 *   - After a read moved, the failed server is written to client.state and asked second for 30 s
 *     by later calls (in this process and others), then first again. It is only an ordering hint:
 *     deleting the file is always safe.
 *   - Writes go to `server`. When it says it is the passive (503 "passive" naming the active), the
 *     write goes to the node it names, only when that is the other configured server. When it
 *     cannot be reached and nothing was sent, the write goes to the other server. A write that
 *     may have reached a server is never repeated elsewhere.
 *   - Writes need both nodes. When the answers show that the pair is degraded (the active says
 *     write_unavailable, or one node is unreachable and the other is the passive), the call fails
 *     at once with KT_CLIENT_UNAVAILABLE and one line naming the node that is down and saying that
 *     existing keys still work. There is no retry loop: at most one attempt per server.
 *   - The connect timeout is 1 s unless registration or kt_client_set_connect_timeout set another.
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
#define KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 1000
#define KT_CLIENT_MAX_CONNECT_TIMEOUT_MS 60000
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
    int connect_timeout_ms;     /* 0 = KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS; kept in client.conf */
} kt_client_registration;

/* Creates a key pair, registers it with the server, writes the confdir (created 0700 when
 * missing), then stores the client's master key deposit (kt_client_mount_key). Refuses a confdir
 * that already holds a registration. Registration is a write: it is refused while the pair is
 * degraded.
 * `fingerprint` (KT_FINGERPRINT_CHARS + NUL) is "" unless the client was registered and saved; it
 * is set even when the master key could not be stored afterwards — the status and message then
 * say so, and kt_client_create_master_key (ktclient create-master-key) finishes the job later. */
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

/* Parses a connect timeout argument: 1 .. KT_CLIENT_MAX_CONNECT_TIMEOUT_MS milliseconds in
 * decimal digits only. Returns 0, or -1 for anything else. */
int kt_client_parse_connect_timeout(const char *text, long *milliseconds);
/* Overrides the connect timeout of client.conf for this kt_client (1 .. 60000 ms). */
kt_client_status kt_client_set_connect_timeout(kt_client *client, long milliseconds, char *error,
                                               size_t error_size);

/* True when `handle` is 1..255 bytes without control characters: what put and get accept. */
bool kt_client_handle_valid(const char *handle);

/* Stores `length` bytes (1 .. KT_CLIENT_MAX_SECRET) under `handle` (1..255 bytes, no control
 * characters, not KT_CLIENT_MASTER_HANDLE); `description` may be NULL. On success writes the new
 * deposit's uuid. */
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

/* Deletes a deposit for good (the server purges the row). Refuses the master key deposit: every
 * mount key derives from it. */
kt_client_status kt_client_delete(kt_client *client, const char *uuid, char *error,
                                  size_t error_size);

/* ---- Mount keys ------------------------------------------------------------------------------ */

/* Every registered client has one master key: 32 random bytes stored by `register` as a deposit
 * under this reserved handle. A mount point's key is derived from it and the mount point's name,
 * so creating a new mount point needs only a read — it works while either node is down, as the
 * seed promises ("creating new mount points, using existing clients"):
 *
 *     mount key = BLAKE2b-256 keyed by the master key over
 *                 "keytrustee-mount-key-v1" || 0x00 || NAME
 *
 * (crypto.h kt_derive_key). The same NAME gives the same key every time, from either node. The
 * master key is never written to the client's disk; losing its deposit loses every mount key. */
#define KT_CLIENT_MASTER_HANDLE    "ktclient-master-key"
#define KT_CLIENT_MASTER_KEY_BYTES 32u
#define KT_CLIENT_MOUNT_KEY_LABEL  "keytrustee-mount-key-v1"
#define KT_CLIENT_MOUNT_KEY_BYTES  32u
#define KT_CLIENT_MAX_MOUNT_NAME   255u

/* Derives the key of mount point `name` (1..255 bytes, no control characters) into a new secret
 * buffer of KT_CLIENT_MOUNT_KEY_BYTES (*key; free with kt_secret_free). KT_CLIENT_NOT_FOUND when
 * the client has no master key deposit. */
kt_client_status kt_client_mount_key(kt_client *client, const char *name, kt_secret **key,
                                     char *error, size_t error_size);

/* Stores a new master key deposit, for a client whose registration could not store one. Refused
 * (conflict) when the client already has one: replacing it would change every mount key. */
kt_client_status kt_client_create_master_key(kt_client *client, char *error, size_t error_size);

#endif /* KT_CLIENT_H */
