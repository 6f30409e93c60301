/*
 * replication.h — the contract of replication/: synchronous WAL shipping between the active and
 * the passive keytrustee-db, replacing PostgreSQL's synchronous streaming replication.
 *
 * What a caller gets
 *   On the active, every transaction the single writer commits is shipped to the passive inside
 *   the commit itself: the writer opens the database with the VFS named by kt_repl_vfs_name(), and
 *   that VFS holds the commit's final sync of the -wal file until the passive says the transaction
 *   is fsynced in its spool. Only then does SQLite make the commit visible and does COMMIT return.
 *   When the passive is absent, silent or refuses, COMMIT fails; kt_repl_commit_failure (give it to
 *   kt_store_set_commit_classifier) then says whether the write is definitely not committed
 *   (KT_STORE_REFUSED, KT_STORE_FULL) or whether nobody can know yet (KT_STORE_INDETERMINATE).
 *   On the passive, a receiver connects to the active, spools what it is sent, and applies each
 *   transaction to the passive's database once the active confirms it committed.
 *
 * The guarantees (tests/unit/test_replication.c and tests/integration/test_repl_*.sh check them)
 *   1. A commit that returned OK in synchronous mode is fsynced on both nodes.
 *   2. Nothing is visible to a reader on the active before the passive has it on disk.
 *   3. Nothing is visible on the passive that the active did not commit.
 *   4. A refused commit never appears later on either node, whatever crashes.
 *      An indeterminate one is settled when the nodes reconnect: the active's log is authoritative,
 *      so the passive keeps a spooled-but-unconfirmed transaction only when the active has the same
 *      transaction (same txid and chain hash) committed, and drops it otherwise. A transaction the
 *      active had in flight when it stopped is committed when the passive holds it, dropped
 *      otherwise (docs/replication.md, "Settling").
 *   5. Each node carries an epoch; a passive never acknowledges an active of an older epoch, and
 *      an active that meets a newer epoch stops taking writes (state "fenced"). Only a promotion
 *      (kt_repl_promote) makes a new epoch; the promoted node tells the old active with
 *      kt_repl_fence_peer.
 *   6. The same position (epoch, txid, chain hash) means the same database content: compare with
 *      kt_repl_database_checksum (page 1's change counters are masked).
 *
 * Order of calls in keytrustee-db
 *   kt_repl_start before ANY connection opens the database, readers and probes included (the
 *   active reconciles its -wal with its log first; a connection closing as the last one
 *   checkpoints and deletes the -wal, and with it a transaction still in flight, which startup
 *   must see); then kt_store_open with
 *   options.vfs = kt_repl_vfs_name(repl) and manual_checkpoints; kt_store_set_commit_classifier(
 *   store, kt_repl_commit_failure, repl). At shutdown: kt_store_close first, then kt_repl_stop (the
 *   VFS must outlive every connection that uses it). The passive opens only readers (default VFS).
 *
 * Files in state_directory (normally the database directory)
 *   keytrustee-repl.log    the node's log of transactions ("spool"), see replication/spool.c
 *   keytrustee-repl.state  epoch and the passive's applied position, see replication/position.c
 *
 * Threads: kt_repl_start starts the node's threads; every function here is thread-safe except that
 * kt_repl_stop must not race with any other call on the same kt_repl.
 */
#ifndef KT_REPLICATION_H
#define KT_REPLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "storage/storage.h"

#define KT_REPL_DEFAULT_PORT           "11381"
#define KT_REPL_DEFAULT_ACK_TIMEOUT_MS 1500
#define KT_REPL_PAIR_KEY_BYTES         32u
#define KT_REPL_HASH_HEX_CHARS         64u

typedef enum kt_repl_role { KT_REPL_STANDALONE, KT_REPL_ACTIVE, KT_REPL_PASSIVE } kt_repl_role;
const char *kt_repl_role_name(kt_repl_role role); /* "standalone", "active", "passive" */

typedef enum kt_repl_log_level {
    KT_REPL_LOG_ERROR,
    KT_REPL_LOG_WARNING,
    KT_REPL_LOG_INFO,
    KT_REPL_LOG_DEBUG
} kt_repl_log_level;

/* One line of text, never holding a secret. Called from replication's threads and from the
 * writer's thread inside COMMIT: it must be quick and must not call back into kt_repl. */
typedef void (*kt_repl_log_function)(void *context, kt_repl_log_level level, const char *message);

typedef struct kt_repl_config {
    kt_repl_role role;
    const char *database_path;   /* the SQLite file (db dir/keytrustee.db) */
    const char *state_directory; /* where the node keeps its log and state (the db dir) */
    const char *listen_host;     /* active: replication listener (NULL = "0.0.0.0") */
    const char *listen_port;     /* active: NULL = KT_REPL_DEFAULT_PORT */
    const char *master_host;     /* passive: where the active listens */
    const char *master_port;     /* passive: NULL = KT_REPL_DEFAULT_PORT */
    const kt_secret *pair_key;   /* KT_REPL_PAIR_KEY_BYTES shared by both nodes; copied */
    bool synchronous;            /* active: false until `ktadmin enable-synchronous-replication` */
    int ack_timeout_ms;          /* a commit waits at most this for the passive (0 = 1500) */
    int heartbeat_ms;            /* 0 = 200; a peer silent for 4.5 heartbeats is dropped */
    uint64_t retain_bytes;       /* log kept for a passive to catch up (0 = 64 MiB) */
    kt_repl_log_function log;    /* NULL: nothing is logged */
    void *log_context;
} kt_repl_config;

typedef struct kt_repl kt_repl;

/* Starts the node. Standalone and active nodes capture every commit made through the VFS into
 * their log (a standalone node ships nothing), so that enabling replication later needs no copy
 * of what was written before. A passive needs a database that came from kt_repl_base_copy (or it
 * asks the active for a full copy itself when its directory holds no database).
 * Returns 0, or -1 with one sentence in `error`. */
int kt_repl_start(kt_repl **repl, const kt_repl_config *config, char *error, size_t error_size);

/* Stops the threads, closes connections and unregisters the VFS. NULL allowed. */
void kt_repl_stop(kt_repl *repl);

/* The VFS the writer must open the database with (standalone and active), NULL on a passive. */
const char *kt_repl_vfs_name(const kt_repl *repl);

/* A kt_commit_classifier: what the COMMIT that just failed on the writer means. `context` is the
 * kt_repl. Returns KT_STORE_REFUSED (definitely not committed, on either node, ever),
 * KT_STORE_INDETERMINATE (the passive may hold it; settled at reconnect, see guarantee 4),
 * KT_STORE_FULL (a disk was full: not committed) or KT_STORE_ERROR (a failure replication did not
 * cause; SQLite's own rollback applies). */
kt_store_status kt_repl_commit_failure(void *context, int sqlite_code);

/* Turns synchronous commits on or off at run time (active). */
void kt_repl_set_synchronous(kt_repl *repl, bool synchronous);

/* ---- Positions and status ------------------------------------------------------------------- */

/* A point in the history of the database: `txid` transactions after the database's genesis, the
 * last of them written in `epoch`, `hash` chaining every transaction's pages since genesis. */
typedef struct kt_repl_position {
    uint64_t epoch;
    uint64_t txid;
    unsigned char hash[KT_HASH_BYTES];
} kt_repl_position;

/* Lowercase hex of the chain hash. */
void kt_repl_position_hex(const kt_repl_position *position, char out[KT_REPL_HASH_HEX_CHARS + 1]);

typedef struct kt_repl_status {
    kt_repl_role role;
    const char *state;           /* a name from replication/state.c, e.g. "in_sync" */
    uint64_t epoch;              /* this node's epoch */
    kt_repl_position position;   /* active: last committed; passive: last applied */
    kt_repl_position peer_position; /* active: what the passive acknowledged; passive: the
                                       active's last committed as last heard */
    uint64_t spooled_txid;       /* passive: last transaction in its spool */
    bool peer_connected;
    char peer_address[64];       /* "host:port" of the connected peer, "" when none */
    uint64_t lag_transactions;   /* how many transactions the passive is behind */
    int64_t lag_ms;              /* age of the oldest transaction the passive does not have
                                    (active) or has not applied (passive) */
    bool synchronous;
    bool writable;               /* can a commit succeed now */
    char reason[160];            /* why not writable, "" when writable */
    bool handover_requested;     /* passive: the active handed over (kt_repl_hand_over): promote */
} kt_repl_status;

void kt_repl_get_status(kt_repl *repl, kt_repl_status *status);

/* ---- Base copy (`ktadmin init-slave`) -------------------------------------------------------- */

/* Fetches a full copy of the active's database into config->database_path, which must not exist:
 * written to a temporary file, fsynced, checked with PRAGMA integrity_check, renamed into place,
 * and the directory fsynced; the node's log and state are created at the copied position, so the
 * passive started afterwards streams only what the active committed since. Uses master_host,
 * master_port, pair_key, database_path, state_directory, log of `config`.
 * Returns 0, or -1 with one sentence in `error`. */
int kt_repl_base_copy(const kt_repl_config *config, char *error, size_t error_size);

/* Checksum of a database's content as of its latest commit: BLAKE2b-256 over every page, with the
 * bytes of page 1 that differ between copies of the same content (24-27 change counter, 92-95
 * version-valid-for) masked. Two nodes at the same position give the same checksum. */
int kt_repl_database_checksum(const char *database_path, char out[KT_REPL_HASH_HEX_CHARS + 1],
                              char *error, size_t error_size);

/* ---- Promotion and fencing (`ktadmin promote`, `ktadmin switchover`; promote.c) ------------ */

typedef struct kt_repl_promotion {
    uint64_t epoch;                /* the new epoch: the old one + 1 */
    kt_repl_position position;     /* where the new active starts (its epoch: the new one) */
    uint64_t applied_at_promotion; /* spooled transactions applied by the promotion */
    uint64_t kept_unconfirmed;     /* of those, how many the old active had not confirmed */
} kt_repl_promotion;

/* Turns a STOPPED passive's state directory into an active's, under a new epoch: applies every
 * transaction of its spool, confirmed or not (an unconfirmed one may have been answered ok: the
 * active answers after the passive's acknowledgement, before its confirmation; a refused write
 * never reaches the spool), checkpoints, writes epoch + 1, and starts an empty log at the spool's
 * tip. Afterwards start the node with role KT_REPL_ACTIVE. Uses database_path, state_directory
 * and log of `config`; no kt_repl may be running on the directory and no connection may have the
 * database open. Returns 0, or -1 with one sentence in `error` (nothing changed when the node had
 * no usable history; otherwise it stays a consistent passive and the call can be repeated). */
int kt_repl_promote(const kt_repl_config *config, kt_repl_promotion *result, char *error,
                    size_t error_size);

/* Active, for a switchover. The caller must have stopped every commit first (no write may start
 * after this call). Waits until the passive has acknowledged the last committed transaction, then
 * sends it HANDOVER (which also confirms everything); the passive's status then says
 * handover_requested, and it should be promoted with kt_repl_promote. Returns 0 once HANDOVER is
 * sent, or -1 with a sentence when no passive in sync took it within `timeout_ms` (the node then
 * goes on as before). After 0, stop this node and start it as a passive of the new active. */
int kt_repl_hand_over(kt_repl *repl, int timeout_ms, char *error, size_t error_size);

/* Active: connects to `host`:`port` (NULL: KT_REPL_DEFAULT_PORT) as a passive would and presents
 * this node's epoch, so that an older active listening there enters the state "fenced" and takes
 * no more writes (guarantee 5). Returns 1 when the peer answered as an older active (it is fenced
 * now), 0 when nobody answers there, -1 with a sentence in `error` otherwise (e.g. the peer
 * claims the same or a newer epoch). */
int kt_repl_fence_peer(kt_repl *repl, const char *host, const char *port, char *error,
                       size_t error_size);

/* ---- Failpoints (tests) ---------------------------------------------------------------------- */

/* Kills the process with SIGKILL when KT_FAILPOINT=NAME[:COUNT] armed the point `name` and this
 * is its COUNT-th hit; does nothing otherwise (one predicted branch). For steps replication/ cannot
 * reach itself, e.g. "active-before-answer": the caller places it after COMMIT returned OK and
 * before the client is answered. docs/replication.md lists every point. */
void kt_repl_failpoint(const char *name);

#endif /* KT_REPLICATION_H */
