/*
 * storage.h — the contract of storage/: keytrustee's data in one SQLite database.
 *
 * The database (keytrustee.db in the db directory, default $KEYTRUSTEE_HOME/db) holds orgs,
 * clients and deposits. It runs in WAL mode with synchronous=FULL and foreign keys on; the schema
 * is versioned with PRAGMA user_version and brought up to date by numbered migrations at open.
 *
 * The writer path
 *   Exactly one process writes the database: keytrustee-db, through one writer kt_store. Everything
 *   that changes a row — the HTTPS API, keytrustee-orgtool, ktadmin — asks keytrustee-db over its
 *   admin socket, which calls the functions below. That single path is what replication/ hangs on:
 *     - kt_store_options.vfs names the SQLite VFS the writer opens with. replication/ registers a
 *       VFS shim that ships each transaction's WAL frames to the passive inside the commit's xSync
 *       and returns only after the passive's fsynced acknowledgement; storage/ knows nothing of it.
 *     - When that xSync fails, SQLite reports an I/O error at COMMIT. The commit-failure
 *       classifier (kt_store_set_commit_classifier) tells storage/ whether the write was refused
 *       (definitely not committed), is indeterminate, or hit a full disk, so the caller can tell
 *       the client the truth.
 *     - kt_store_begin/kt_store_commit let keytrustee-db group several requests into one commit
 *       (one replication round trip). Inside a batch each mutation runs in its own SAVEPOINT, so a
 *       conflict in one request rolls back only that request.
 *   Checkpoints: with manual_checkpoints the writer never checkpoints by itself (wal_autocheckpoint
 *   off, no checkpoint on close); the owner calls kt_store_checkpoint from one place.
 *
 * Deposits are stored as AEAD boxes (crypto/): storage/ never sees plaintext. An org's auth secret
 * is stored the same way (auth_box), so orgtool can show it and the server can compare it.
 *
 * Threads: a kt_store is used by one thread at a time. Readers open their own kt_store
 * (options.writer = false); WAL gives them consistent snapshots beside the writer.
 */
#ifndef KT_STORAGE_H
#define KT_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

#define KT_DB_FILE_NAME        "keytrustee.db"

#define KT_ORG_NAME_MAX        64u    /* [A-Za-z0-9_.-], no spaces: as the original orgtool */
#define KT_CONTACTS_MAX        512u
#define KT_CLIENT_NAME_MAX     128u
#define KT_HANDLE_MAX          255u
#define KT_DESCRIPTION_MAX     1024u
#define KT_AUTH_SECRET_MAX     128u
#define KT_DEPOSIT_MAX         (64u * 1024u)
#define KT_AUTH_BOX_MAX        (KT_AUTH_SECRET_MAX + KT_AEAD_OVERHEAD)
#define KT_DEPOSIT_BOX_MAX     (KT_DEPOSIT_MAX + KT_AEAD_OVERHEAD)

typedef enum kt_store_status {
    KT_STORE_OK = 0,
    KT_STORE_NOT_FOUND,
    KT_STORE_CONFLICT,      /* a unique name, handle or fingerprint already exists */
    KT_STORE_INVALID,       /* an argument breaks a limit or refers to nothing (e.g. unknown org) */
    KT_STORE_REFUSED,       /* the commit was refused (replication): definitely not committed */
    KT_STORE_INDETERMINATE, /* the commit's outcome cannot be known */
    KT_STORE_FULL,          /* disk full: not committed */
    KT_STORE_ERROR          /* anything else; kt_store_error_message says what */
} kt_store_status;

const char *kt_store_status_name(kt_store_status status); /* "ok", "not_found", "conflict", ... */

typedef enum kt_state { KT_STATE_ACTIVE = 0, KT_STATE_DISABLED = 1 } kt_state;
const char *kt_state_name(kt_state state);            /* "active" / "disabled" */
int kt_state_parse(const char *text, kt_state *state); /* 0 or -1 */

typedef struct kt_org {
    char uuid[KT_UUID_CHARS + 1];
    char name[KT_ORG_NAME_MAX + 1];
    char contacts[KT_CONTACTS_MAX + 1];
    int64_t created;                    /* unix seconds */
    int64_t expires;                    /* unix seconds; 0 = never */
    kt_state state;
    unsigned char auth_box[KT_AUTH_BOX_MAX];
    size_t auth_box_length;             /* 0: no auth secret, registration needs none */
} kt_org;

typedef struct kt_client_record {
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    char org_uuid[KT_UUID_CHARS + 1];
    char org_name[KT_ORG_NAME_MAX + 1]; /* filled by reads */
    char name[KT_CLIENT_NAME_MAX + 1];
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    int64_t created;
    kt_state state;
    kt_state org_state;                 /* filled by reads: a client of a disabled org is refused */
} kt_client_record;

typedef struct kt_deposit {
    char uuid[KT_UUID_CHARS + 1];
    char client[KT_FINGERPRINT_CHARS + 1];
    char handle[KT_HANDLE_MAX + 1];
    char description[KT_DESCRIPTION_MAX + 1];
    int64_t created;
    kt_state state;
    unsigned char *box;  /* reads: malloc'd by storage, freed by kt_deposit_clear */
    size_t box_length;
} kt_deposit;

void kt_deposit_clear(kt_deposit *deposit); /* frees box; safe on a zeroed struct */

typedef struct kt_store kt_store;

typedef struct kt_store_options {
    bool writer;             /* the single writer; false opens a query-only reader */
    bool create;             /* create the file if missing (writer only) */
    const char *vfs;         /* NULL: SQLite's default VFS */
    bool manual_checkpoints; /* writer: no autocheckpoint, no checkpoint on close */
    int busy_timeout_ms;     /* 0 = 5000 */
} kt_store_options;

/* Opens (and for a writer, migrates) the database at `path`. */
int kt_store_open(kt_store **store, const char *path, const kt_store_options *options,
                  char *error, size_t error_size);
void kt_store_close(kt_store *store); /* NULL allowed */

int kt_store_schema_version(kt_store *store);  /* PRAGMA user_version */
int kt_store_latest_schema_version(void);      /* what this build migrates to */
const char *kt_store_error_message(kt_store *store); /* last failure, never secret */

/* Decides what a failed COMMIT means. `sqlite_code` is the extended result code of the failure.
 * Without a classifier, SQLITE_FULL is KT_STORE_FULL and everything else KT_STORE_ERROR. */
typedef kt_store_status (*kt_commit_classifier)(void *context, int sqlite_code);
void kt_store_set_commit_classifier(kt_store *store, kt_commit_classifier classifier,
                                    void *context);

/* Batches: mutations between begin and commit share one commit. */
kt_store_status kt_store_begin(kt_store *store);
kt_store_status kt_store_commit(kt_store *store);
void kt_store_rollback(kt_store *store);
/* Reads: the queries between read_begin and read_end see one snapshot and take the database's
 * read locks once, where each query alone is a read transaction of its own (on a reader store, or
 * a writer without an open batch). read_end always ends it. */
kt_store_status kt_store_read_begin(kt_store *store);
void kt_store_read_end(kt_store *store);

/* ---- Orgs ------------------------------------------------------------------------------------ */
kt_store_status kt_store_org_add(kt_store *store, const kt_org *org); /* CONFLICT on same name */
kt_store_status kt_store_org_get(kt_store *store, const char *name, kt_org *org);
kt_store_status kt_store_org_get_by_uuid(kt_store *store, const char *uuid, kt_org *org);
kt_store_status kt_store_org_set_auth(kt_store *store, const char *name,
                                      const unsigned char *auth_box, size_t auth_box_length);
kt_store_status kt_store_org_set_state(kt_store *store, const char *name, kt_state state);
/* Calls `visit` for each org ordered by name; a non-zero return stops the walk. */
typedef int (*kt_org_visitor)(const kt_org *org, void *context);
kt_store_status kt_store_org_list(kt_store *store, kt_org_visitor visit, void *context);

/* ---- Clients --------------------------------------------------------------------------------- */
/* client->org_uuid must name an existing org (INVALID otherwise); CONFLICT on same fingerprint. */
kt_store_status kt_store_client_add(kt_store *store, const kt_client_record *client);
kt_store_status kt_store_client_get(kt_store *store, const char *fingerprint,
                                    kt_client_record *client);
kt_store_status kt_store_client_set_state(kt_store *store, const char *fingerprint,
                                          kt_state state);
typedef int (*kt_client_visitor)(const kt_client_record *client, void *context);
/* org_name NULL lists every client. */
kt_store_status kt_store_client_list(kt_store *store, const char *org_name,
                                     kt_client_visitor visit, void *context);

/* ---- Deposits (always scoped to the owning client) ------------------------------------------- */
/* CONFLICT when the client already has a deposit with that uuid or handle. */
kt_store_status kt_store_deposit_put(kt_store *store, const kt_deposit *deposit);
kt_store_status kt_store_deposit_get(kt_store *store, const char *client, const char *uuid,
                                     kt_deposit *deposit);
kt_store_status kt_store_deposit_get_by_handle(kt_store *store, const char *client,
                                               const char *handle, kt_deposit *deposit);
/* Metadata only (box NULL), ordered by creation; `search` (NULL = all) matches a substring of
 * the handle or description. */
typedef int (*kt_deposit_visitor)(const kt_deposit *deposit, void *context);
kt_store_status kt_store_deposit_list(kt_store *store, const char *client, const char *search,
                                      kt_deposit_visitor visit, void *context);
kt_store_status kt_store_deposit_set_state(kt_store *store, const char *client, const char *uuid,
                                           kt_state state);
kt_store_status kt_store_deposit_purge(kt_store *store, const char *client, const char *uuid);

/* ---- Maintenance ----------------------------------------------------------------------------- */
typedef struct kt_store_counts {
    int64_t orgs, clients, deposits;
} kt_store_counts;
kt_store_status kt_store_count(kt_store *store, kt_store_counts *counts);
/* PRAGMA integrity_check: OK when it says "ok", otherwise ERROR with the first problem in
 * kt_store_error_message. */
kt_store_status kt_store_integrity_check(kt_store *store);
/* PRAGMA wal_checkpoint(TRUNCATE) on the writer. */
kt_store_status kt_store_checkpoint(kt_store *store);

#endif /* KT_STORAGE_H */
