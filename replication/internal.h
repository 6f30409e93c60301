/*
 * internal.h — what the files of replication/ share with each other (and with the unit tests).
 * Nothing outside replication/ and tests/ includes this; replication.h is the contract.
 *
 * Map of the folder (one role per file, after PostgreSQL's src/backend/replication):
 *   support.c      logging, errors, clocks, byte order, growable buffers, durable file helpers
 *   walformat.c    SQLite's -wal file format: header, frames, checksums, scanning, writing
 *   position.c     positions, the chain hash, transaction entries, the state file
 *   spool.c        the node's log of transactions (append, recover a torn tail, truncate, compact)
 *   protocol.c     the messages the nodes exchange, encoded and decoded
 *   channel.c      TCP, mutual authentication with the pair key, encrypted framed messages
 *   state.c        the one state machine: state names and every transition
 *   vfs_capture.c  the VFS shim on the active: holds each commit frame, reads the commit's frames
 *                  back at its xSync; startup reconciliation; the pending transaction
 *   syncrep.c      the commit path: ship, wait for the acknowledgement, decide the outcome
 *   walsender.c    the active's listener and its session with the passive
 *   walreceiver.c  the passive's connection to the active: spool, acknowledge, confirm
 *   apply.c        the passive's applier: confirmed transactions into its SQLite database
 *   basecopy.c     full copies: a snapshot on the active, install on the passive, checksums
 *   failpoint.c    named points where a test has the process killed (KT_FAILPOINT)
 *   replication.c  kt_repl_start/stop, status, the commit-failure classifier
 */
#ifndef KT_REPLICATION_INTERNAL_H
#define KT_REPLICATION_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>

#include "replication/replication.h"

/* ---- support.c ------------------------------------------------------------------------------ */

typedef struct repl_logger {
    kt_repl_log_function function;
    void *context;
} repl_logger;

void repl_log(const repl_logger *logger, kt_repl_log_level level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
void repl_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

int64_t repl_now_ms(void);      /* monotonic clock */
int64_t repl_wall_ms(void);     /* realtime clock, for humans only */
void repl_sleep_ms(int milliseconds);
/* Absolute CLOCK_MONOTONIC deadline `milliseconds` from now, for pthread_cond_timedwait. */
void repl_deadline(struct timespec *deadline, int milliseconds);
/* Waits on the condition until the deadline; returns false when the deadline passed. */
bool repl_wait_until(pthread_cond_t *condition, pthread_mutex_t *mutex,
                     const struct timespec *deadline);
int repl_condition_init(pthread_cond_t *condition); /* on CLOCK_MONOTONIC */

void repl_put_le32(unsigned char *out, uint32_t value);
void repl_put_le64(unsigned char *out, uint64_t value);
void repl_put_be32(unsigned char *out, uint32_t value);
uint32_t repl_get_le32(const unsigned char *in);
uint64_t repl_get_le64(const unsigned char *in);
uint32_t repl_get_be32(const unsigned char *in);

/* A growable byte buffer for encoding; `failed` sticks once memory ran out. */
typedef struct repl_buffer {
    unsigned char *data;
    size_t length;
    size_t capacity;
    bool failed;
} repl_buffer;

void repl_buffer_put(repl_buffer *buffer, const void *bytes, size_t length);
void repl_buffer_put_u8(repl_buffer *buffer, uint8_t value);
void repl_buffer_put_u32(repl_buffer *buffer, uint32_t value);
void repl_buffer_put_u64(repl_buffer *buffer, uint64_t value);
void repl_buffer_free(repl_buffer *buffer);

/* A bounds-checked reader; `failed` sticks once a read ran past the end. */
typedef struct repl_reader {
    const unsigned char *data;
    size_t length;
    size_t offset;
    bool failed;
} repl_reader;

void repl_reader_init(repl_reader *reader, const void *data, size_t length);
const unsigned char *repl_reader_take(repl_reader *reader, size_t length);
uint8_t repl_reader_u8(repl_reader *reader);
uint32_t repl_reader_u32(repl_reader *reader);
uint64_t repl_reader_u64(repl_reader *reader);
void repl_reader_copy(repl_reader *reader, void *out, size_t length);
bool repl_reader_done(const repl_reader *reader); /* consumed exactly, nothing failed */

/* Durable file helpers: 0 or -1 with errno. */
int repl_write_all(int fd, const void *data, size_t length);
int repl_pwrite_all(int fd, const void *data, size_t length, uint64_t offset);
long repl_pread_full(int fd, void *data, size_t length, uint64_t offset); /* bytes read, -1 */
int repl_fsync_directory_of(const char *path);
/* Writes a file atomically: temporary file, fsync, rename, fsync of the directory. */
int repl_write_file_atomic(const char *path, const void *data, size_t length);
char *repl_path_join(const char *directory, const char *name); /* malloc'd, NULL when short */
char *repl_string_copy(const char *text);                      /* NULL stays NULL */

/* CRC-32C (Castagnoli), for the spool's records. */
uint32_t repl_crc32c(uint32_t crc, const void *data, size_t length);

/* ---- failpoint.c ---------------------------------------------------------------------------- */

typedef enum repl_failpoint_id {
    REPL_FP_ACTIVE_BEFORE_WAL_WRITE,  /* an xWrite to the active's -wal, before it is done */
    REPL_FP_ACTIVE_BEFORE_SHIP,       /* xSync: frames read back, nothing sent */
    REPL_FP_ACTIVE_MID_SEND,          /* the sender wrote part of the TX frame */
    REPL_FP_ACTIVE_AFTER_LOCAL_SYNC,  /* the -wal is synced; the ack not yet waited for */
    REPL_FP_ACTIVE_AFTER_ACK,         /* the passive acknowledged; the log not yet appended */
    REPL_FP_ACTIVE_MID_LOG_RECORD,    /* part of the log record written */
    REPL_FP_ACTIVE_AFTER_LOG,         /* in the log, the commit frame still held (not visible) */
    REPL_FP_ACTIVE_BEFORE_ANSWER,     /* COMMIT returned OK; the client not answered (caller) */
    REPL_FP_ACTIVE_BEFORE_CONFIRM,    /* committed; its CONFIRM not sent to the passive */
    REPL_FP_ACTIVE_MID_CHECKPOINT,    /* a checkpoint's write to the active's database file */
    REPL_FP_PASSIVE_MID_SPOOL_RECORD, /* part of the spool record written */
    REPL_FP_PASSIVE_BEFORE_SPOOL_SYNC,/* the spool record written, not synced */
    REPL_FP_PASSIVE_AFTER_SPOOL_SYNC, /* spooled and synced; the ack not sent */
    REPL_FP_PASSIVE_MID_APPLY,        /* part of an applied batch written to the passive's -wal */
    REPL_FP_PASSIVE_AFTER_APPLY_SYNC, /* a batch synced in the -wal; not yet visible nor noted */
    REPL_FP_PASSIVE_MID_CHECKPOINT,   /* a checkpoint's write to the passive's database file */
    REPL_FAILPOINT_COUNT
} repl_failpoint_id;

/* True only when KT_FAILPOINT armed a point: the one thing an unarmed process pays for. */
extern bool repl_failpoints_armed;

/* Reads KT_FAILPOINT (once per process); -1 with a sentence when it names no point. */
int repl_failpoint_setup(char *error, size_t error_size);
const char *repl_failpoint_name(repl_failpoint_id id);
bool repl_failpoint_is(repl_failpoint_id id);       /* this point is the armed one */
bool repl_failpoint_hit(repl_failpoint_id id);      /* counts a hit; true on the fatal one */
_Noreturn void repl_failpoint_kill(repl_failpoint_id id);

/* Counts a hit when a point is armed; true when this one must kill (the caller may first leave a
 * torn write behind, then calls repl_failpoint_kill). */
static inline bool repl_failpoint_fires(repl_failpoint_id id)
{
    return __builtin_expect(repl_failpoints_armed, 0) && repl_failpoint_hit(id);
}

static inline void repl_failpoint(repl_failpoint_id id)
{
    if (repl_failpoint_fires(id)) {
        repl_failpoint_kill(id);
    }
}

/* ---- walformat.c ---------------------------------------------------------------------------- */

#define REPL_WAL_HEADER_BYTES       32u
#define REPL_WAL_FRAME_HEADER_BYTES 24u
#define REPL_WAL_MAGIC              0x377f0682u /* | 1 when checksums are big-endian */
#define REPL_WAL_VERSION            3007000u
#define REPL_MAX_PAGE_SIZE          65536u

/* A point in a -wal file that lies on a frame boundary: the generation (salts), and the running
 * checksum there. `valid` is false when the file has no valid header (missing, empty, torn). */
typedef struct repl_wal_cursor {
    bool valid;
    bool big_endian_checksum;
    uint32_t page_size;
    uint32_t checkpoint_sequence;
    uint32_t salt1, salt2;
    uint64_t offset;        /* REPL_WAL_HEADER_BYTES + frames * (24 + page_size) */
    uint32_t checksum[2];
} repl_wal_cursor;

/* Reads up to `length` bytes at `offset`: the count read (less at end of file), or -1. */
typedef long (*repl_wal_read_function)(void *context, void *buffer, size_t length,
                                       uint64_t offset);

/* The frames of one or more transactions: `count` records of (page number LE32, page). */
typedef struct repl_frames {
    uint32_t page_size;
    uint32_t count;
    uint32_t db_size;          /* pages in the database after the last transaction */
    unsigned char *data;
    size_t length;
    size_t capacity;
} repl_frames;

int repl_frames_add(repl_frames *frames, uint32_t page_number, const unsigned char *page);
void repl_frames_reset(repl_frames *frames);
void repl_frames_free(repl_frames *frames);
uint32_t repl_frame_page_number(const repl_frames *frames, uint32_t index);
const unsigned char *repl_frame_page(const repl_frames *frames, uint32_t index);

void repl_wal_checksum(bool big_endian, const unsigned char *data, size_t length,
                       uint32_t checksum[2]);
/* A commit frame the active has written but the passive not yet acknowledged is "held": its
 * salt-1 is xored with this mask, so that SQLite's recovery, in any process, stops before it
 * (vfs_capture.c). Xoring again releases it. */
#define REPL_WAL_HOLD_MASK 0x484F4C44u /* "HOLD" */

/* What repl_wal_scan_holding found after `from`. */
typedef struct repl_wal_scan_result {
    repl_wal_cursor end;   /* after the last commit frame seen (== from when none) */
    unsigned commits;      /* commit frames seen, the held one included */
    uint64_t held_offset;  /* where the last commit frame starts when it is held, else 0 */
} repl_wal_scan_result;

/* Reads and checks the header; `start` is the cursor just after it (valid false when bad). */
int repl_wal_read_header(repl_wal_read_function read, void *context, repl_wal_cursor *start);
/* Walks the valid frames after `from` (a frame boundary of the same generation), stopping at the
 * first salt or checksum mismatch or at the end of the file. `end` is the cursor after the last
 * commit frame (== from when there is none), `commits` the number of commit frames seen. When
 * `frames` is not NULL, the frames up to that last commit frame are appended to it. Returns 0, or
 * -1 on an I/O error or when memory ran out. */
int repl_wal_scan(repl_wal_read_function read, void *context, const repl_wal_cursor *from,
                  repl_frames *frames, repl_wal_cursor *end, unsigned *commits);
/* repl_wal_scan that also takes a held commit frame as the end of a transaction (the scan stops
 * there: nothing can follow it), and with `first_only` stops after one transaction. */
int repl_wal_scan_holding(repl_wal_read_function read, void *context, const repl_wal_cursor *from,
                          repl_frames *frames, bool first_only, repl_wal_scan_result *result);
/* Holds or releases the commit frame whose 24-byte header this is (xors salt-1). */
void repl_wal_hold_header(unsigned char *frame_header);
/* A fresh header with random salts; `cursor` becomes the cursor after it. */
void repl_wal_new_header(unsigned char out[REPL_WAL_HEADER_BYTES], uint32_t page_size,
                         uint32_t checkpoint_sequence, repl_wal_cursor *cursor);
/* Encodes the header of the frame after `cursor` and advances it. */
void repl_wal_frame_header(unsigned char out[REPL_WAL_FRAME_HEADER_BYTES], uint32_t page_number,
                           uint32_t db_size, const unsigned char *page,
                           repl_wal_cursor *cursor);
long repl_wal_read_fd(void *context, void *buffer, size_t length, uint64_t offset);

/* ---- position.c ----------------------------------------------------------------------------- */

/* One replicated transaction: its place in the history and its pages. */
typedef struct repl_entry {
    uint64_t epoch;                    /* the epoch of the active that committed it */
    uint64_t txid;
    unsigned char prev[KT_HASH_BYTES];  /* chain hash of txid - 1 */
    unsigned char hash[KT_HASH_BYTES];  /* H(prev, epoch, txid, sizes, frames) */
    uint32_t page_size;
    uint32_t db_size;
    uint32_t frame_count;
    const unsigned char *frames;       /* frame_count * (4 + page_size) bytes */
    size_t frames_length;
    repl_wal_cursor origin;            /* active: where its commit frame ends in the -wal */
    unsigned char *owned;              /* what repl_entry_free releases */
} repl_entry;

void repl_entry_free(repl_entry *entry);
void repl_chain_hash(const repl_entry *entry, unsigned char out[KT_HASH_BYTES]);
/* Encodes / decodes an entry (decode borrows `frames` from the reader's memory and checks sizes
 * and the chain hash).
 * repl_entry_decode_from_peer checks the sizes but not the chain hash, for a transaction that
 * came over the channel: its AEAD already proved the bytes are the active's, and the hash is
 * checked when the entry is read back from the log (repl_spool_read), before it is applied or
 * streamed on. Hashing ~30 KiB of frames (BLAKE2b, ~40 us here) between the passive's receipt
 * and its acknowledgement was the one CPU step on the commit's path the passive could drop. */
void repl_entry_encode(repl_buffer *buffer, const repl_entry *entry);
int repl_entry_decode(repl_reader *reader, repl_entry *entry);
int repl_entry_decode_from_peer(repl_reader *reader, repl_entry *entry);
void repl_cursor_encode(repl_buffer *buffer, const repl_wal_cursor *cursor);
void repl_cursor_decode(repl_reader *reader, repl_wal_cursor *cursor);
void repl_position_encode(repl_buffer *buffer, const kt_repl_position *position);
void repl_position_decode(repl_reader *reader, kt_repl_position *position);
bool repl_position_same(const kt_repl_position *a, const kt_repl_position *b); /* txid + hash */
kt_repl_position repl_entry_position(const repl_entry *entry);
/* The entry that follows `tip`: `frames` (borrowed) committed in `epoch`, ending at `end`. */
void repl_entry_build(repl_entry *entry, uint64_t epoch, const kt_repl_position *tip,
                      const repl_frames *frames, const repl_wal_cursor *end);

/* The state file: what a node must remember besides its log. */
typedef struct repl_state_file {
    uint64_t epoch;
    kt_repl_position applied;  /* passive: what its database holds at least (the spool's
                                  APPLIED records may know more) */
    bool basecopy_pending;     /* passive: a full copy was being installed */
} repl_state_file;

/* Returns 1 loaded, 0 no file, -1 unreadable or malformed (error says which). */
int repl_state_load(const char *path, repl_state_file *state, char *error, size_t error_size);
int repl_state_save(const char *path, const repl_state_file *state, char *error,
                    size_t error_size);

/* ---- spool.c -------------------------------------------------------------------------------- */

typedef struct repl_spool repl_spool;

/* Opens the log at `path`, recovering a torn tail. A missing file is created with `genesis` as
 * its base when genesis is not NULL, and is an error otherwise. */
int repl_spool_open(repl_spool **spool, const char *path, const kt_repl_position *genesis,
                    const repl_wal_cursor *genesis_origin, const repl_logger *logger,
                    char *error, size_t error_size);
void repl_spool_close(repl_spool *spool);

kt_repl_position repl_spool_base(repl_spool *spool);
kt_repl_position repl_spool_tip(repl_spool *spool);
repl_wal_cursor repl_spool_tip_origin(repl_spool *spool);
uint64_t repl_spool_confirmed(repl_spool *spool);
uint64_t repl_spool_bytes(repl_spool *spool);
int64_t repl_spool_entry_time(repl_spool *spool, uint64_t txid); /* ms when appended, 0 none */
/* The position at `txid` if the log knows it (the base or a retained entry). */
bool repl_spool_position_at(repl_spool *spool, uint64_t txid, kt_repl_position *position);

/* The failpoints of this log's entry appends (REPL_FAILPOINT_COUNT: none): the active's log and
 * the passive's spool have their own names. */
void repl_spool_set_failpoints(repl_spool *spool, repl_failpoint_id torn,
                               repl_failpoint_id before_sync);
/* Writes zeros so that at least `ahead` bytes past the last record are ready to be written over
 * (see spool.c: appends over zeros sync faster than appends that grow the file). */
void repl_spool_preallocate_ahead(repl_spool *spool, uint64_t ahead);
/* Appends an entry that must follow the tip; `sync` fdatasyncs before returning. */
int repl_spool_append(repl_spool *spool, const repl_entry *entry, bool sync);
/* Records that the active committed everything up to `txid` (which must be spooled with `hash`);
 * not synced: a lost confirmation is learned again at the next handshake. */
int repl_spool_confirm(repl_spool *spool, uint64_t txid, const unsigned char *hash);
int repl_spool_sync(repl_spool *spool);
/* Records (without a sync) that the database holds everything up to `applied`, which must be
 * confirmed; call it only once the -wal holding those transactions is fdatasynced. */
int repl_spool_note_applied(repl_spool *spool, const kt_repl_position *applied);
kt_repl_position repl_spool_applied(repl_spool *spool); /* the base when nothing was noted */
/* Drops the entries after `txid` (unconfirmed ones only), durably. */
int repl_spool_truncate_after(repl_spool *spool, uint64_t txid);
/* Reads a retained entry; free it with repl_entry_free. */
int repl_spool_read(repl_spool *spool, uint64_t txid, repl_entry *entry);
/* Starts over empty at `base` (after a base copy), durably. */
int repl_spool_reset(repl_spool *spool, const kt_repl_position *base,
                     const repl_wal_cursor *base_origin);
/* Rewrites the log without the entries before `keep_from` (temporary file, fsync, rename). */
int repl_spool_compact(repl_spool *spool, uint64_t keep_from);
/* The oldest txid to keep so that the log holds at most about `retain_bytes` of entries. */
uint64_t repl_spool_retention_point(repl_spool *spool, uint64_t retain_bytes);

/* ---- protocol.c ----------------------------------------------------------------------------- */

enum repl_message_type {
    REPL_MSG_POSITION = 1,  /* passive → active, first message of a stream session */
    REPL_MSG_DECISION,      /* active → passive: stream from a point, base copy, or refuse */
    REPL_MSG_TX,            /* active → passive: one transaction */
    REPL_MSG_CONFIRM,       /* active → passive: committed up to (txid, hash) */
    REPL_MSG_ACK,           /* passive → active: spooled and fsynced up to (txid, hash) */
    REPL_MSG_NACK,          /* passive → active: cannot store a transaction */
    REPL_MSG_HEARTBEAT,     /* both ways: alive, and the sender's position */
    REPL_MSG_BASECOPY_BEGIN,
    REPL_MSG_BASECOPY_CHUNK,
    REPL_MSG_BASECOPY_END,
    REPL_MSG_HANDOVER,      /* active → passive (switchover): committed up to (txid, hash), no
                               more writes here, take over (promote.c) */
};

enum repl_decision_kind { REPL_DECIDE_STREAM = 1, REPL_DECIDE_BASECOPY, REPL_DECIDE_REFUSE };
enum repl_nack_reason { REPL_NACK_IO = 1, REPL_NACK_FULL, REPL_NACK_EPOCH, REPL_NACK_ORDER };

typedef struct repl_msg_position {
    bool has_state;              /* false: no database or log, needs a base copy */
    uint64_t epoch;
    kt_repl_position confirmed;  /* what the active confirmed and the passive holds */
    kt_repl_position tip;        /* last spooled, maybe unconfirmed */
    uint32_t page_size;
    uint32_t sqlite_version;
} repl_msg_position;

typedef struct repl_msg_decision {
    uint8_t kind;
    uint64_t epoch;                 /* the active's */
    kt_repl_position keep_through;  /* STREAM: drop spooled entries after this */
    kt_repl_position active_tip;
    char reason[160];               /* REFUSE */
} repl_msg_decision;

typedef struct repl_msg_tx {
    bool committed;                 /* already committed on the active (catch-up, async) */
    repl_entry entry;
} repl_msg_tx;

typedef struct repl_msg_ack {     /* ACK, CONFIRM and HEARTBEAT carry a position */
    kt_repl_position position;
    uint64_t applied_txid;        /* HEARTBEAT from the passive */
} repl_msg_ack;

typedef struct repl_msg_nack {
    uint64_t txid;
    uint8_t reason;
} repl_msg_nack;

typedef struct repl_msg_basecopy_begin {
    uint64_t epoch;              /* the active's */
    kt_repl_position position;
    uint64_t size;
    uint32_t page_size;
} repl_msg_basecopy_begin;

void repl_encode_position_msg(repl_buffer *buffer, const repl_msg_position *message);
int repl_decode_position_msg(const unsigned char *data, size_t length, repl_msg_position *message);
void repl_encode_decision(repl_buffer *buffer, const repl_msg_decision *message);
int repl_decode_decision(const unsigned char *data, size_t length, repl_msg_decision *message);
void repl_encode_tx(repl_buffer *buffer, const repl_msg_tx *message);
int repl_decode_tx(const unsigned char *data, size_t length, repl_msg_tx *message);
void repl_encode_ack(repl_buffer *buffer, const repl_msg_ack *message);
int repl_decode_ack(const unsigned char *data, size_t length, repl_msg_ack *message);
void repl_encode_nack(repl_buffer *buffer, const repl_msg_nack *message);
int repl_decode_nack(const unsigned char *data, size_t length, repl_msg_nack *message);
void repl_encode_basecopy_begin(repl_buffer *buffer, const repl_msg_basecopy_begin *message);
int repl_decode_basecopy_begin(const unsigned char *data, size_t length,
                               repl_msg_basecopy_begin *message);

/* ---- channel.c ------------------------------------------------------------------------------ */

enum repl_purpose {
    REPL_PURPOSE_STREAM = 1,
    REPL_PURPOSE_BASECOPY = 2,
    REPL_PURPOSE_FENCE = 3 /* a promoted node presents its epoch (promote.c, walsender.c) */
};

#define REPL_MAX_MESSAGE_BYTES (512u * 1024u * 1024u)
/* The most page data one transaction may change: its TX message must fit in the above. */
#define REPL_MAX_TRANSACTION_BYTES (REPL_MAX_MESSAGE_BYTES - 4096u)

/* Deadlines grow with what has to travel: a transaction of hundreds of megabytes (a migration
 * that rewrites a table, VACUUM) needs longer than a heartbeat's silence to be sent, written and
 * fsynced. The extra time assumes a transfer no slower than 8 MB/s. */
static inline int repl_transfer_allowance_ms(uint64_t bytes)
{
    uint64_t allowance = bytes / 8192u;
    return allowance > 3600000u ? 3600000 : (int)allowance;
}

typedef struct repl_channel repl_channel;

int repl_listen(int *listen_fd, const char *host, const char *port, char *error,
                size_t error_size);
/* Connects and proves both sides hold the pair key; then every message is encrypted. */
int repl_channel_connect(repl_channel **channel, const char *host, const char *port,
                         const kt_secret *pair_key, uint8_t purpose, int timeout_ms,
                         char *error, size_t error_size);
/* The server side of the same handshake on an accepted socket: owned by the channel on success,
 * still the caller's to close on failure. */
int repl_channel_accept(repl_channel **channel, int fd, const char *peer,
                        const kt_secret *pair_key, uint8_t *purpose, int timeout_ms,
                        char *error, size_t error_size);
int repl_channel_send(repl_channel *channel, uint8_t type, const void *payload, size_t length,
                      int timeout_ms);
/* Sends only the first half of the message's frame (the mid-send failpoint). */
int repl_channel_send_torn(repl_channel *channel, uint8_t type, const void *payload,
                           size_t length, int timeout_ms);
/* Waits up to wait_ms for a message to start, then up to complete_ms for the rest of it.
 * Returns 1 with a malloc'd *payload, 0 when nothing arrived, -1 when the connection is closed
 * or a message failed to decrypt (repl_channel_error says which; the channel is then unusable). */
int repl_channel_receive(repl_channel *channel, uint8_t *type, unsigned char **payload,
                         size_t *length, int wait_ms, int complete_ms);
int repl_channel_fd(const repl_channel *channel);
const char *repl_channel_peer(const repl_channel *channel);
const char *repl_channel_error(repl_channel *channel);
void repl_channel_shutdown(repl_channel *channel); /* wakes a thread blocked on it */
void repl_channel_close(repl_channel *channel);    /* NULL allowed */

/* ---- state.c -------------------------------------------------------------------------------- */

/* The one state machine (see state.c for what each state means and which transitions exist). */
typedef enum repl_state {
    REPL_STATE_STANDALONE,
    REPL_STATE_WAITING,     /* active: no passive connected */
    REPL_STATE_CONNECTING,  /* passive: trying to reach the active */
    REPL_STATE_HANDSHAKE,   /* authenticated; comparing positions */
    REPL_STATE_BASECOPY,    /* a full copy is on its way */
    REPL_STATE_CATCHUP,     /* streaming what the passive misses */
    REPL_STATE_IN_SYNC,     /* the passive holds everything; synchronous commits flow */
    REPL_STATE_FENCED,      /* active: a newer epoch exists; no more writes here */
    REPL_STATE_DIVERGED,    /* passive: refused by the active; an operator must look */
    REPL_STATE_STOPPED,
    REPL_STATE_COUNT
} repl_state;

const char *repl_state_name(repl_state state);
bool repl_state_transition_allowed(repl_state from, repl_state to);

/* ---- the node ------------------------------------------------------------------------------- */

typedef struct repl_capture repl_capture;
typedef struct repl_apply repl_apply;
typedef struct repl_session repl_session;

/* A transaction an active found held at the end of its -wal at startup: it was in flight when
 * the node stopped, the passive may have acknowledged it or not. Settled at the next handshake
 * (vfs_capture.c); until then every write to the -wal is refused, so its frames stay. */
typedef struct repl_pending {
    bool present;                /* read without the mutex by the capture: atomic */
    kt_repl_position position;   /* what it would be in the log */
    repl_wal_cursor start, end;  /* where it lies in the -wal */
    uint64_t held_offset;        /* its commit frame */
} repl_pending;

/* The transaction a synchronous commit is waiting on. */
typedef struct repl_inflight {
    bool active;
    uint64_t txid;
    unsigned char hash[KT_HASH_BYTES];
    bool maybe_sent;            /* the committing thread started sending it: the passive may
                                   have it */
    bool acknowledged;
    bool refused;               /* NACK */
    uint8_t nack_reason;
    bool link_lost;
} repl_inflight;

struct kt_repl {
    kt_repl_role role;
    char *database_path, *state_directory, *wal_path, *spool_path, *state_path;
    char *listen_host, *listen_port, *master_host, *master_port;
    kt_secret *pair_key;
    repl_logger logger;
    int ack_timeout_ms, heartbeat_ms, peer_timeout_ms;
    uint64_t retain_bytes;

    pthread_mutex_t mutex;      /* guards everything below */
    pthread_cond_t changed;     /* broadcast on every change a waiter may care about */
    bool stopping;
    repl_state state;
    char state_reason[160];
    uint64_t epoch;
    bool synchronous;
    repl_spool *spool;          /* has its own lock: may be used without `mutex` */

    /* active */
    repl_capture *capture;
    int listen_fd;
    int wake_pipe[2];           /* wakes the listener at stop */
    pthread_t listener;
    bool listener_started;
    repl_session *sessions;     /* every live session (stream and base copy) */
    uint64_t link_generation;   /* of the session that is the stream link, 0 = none */
    uint64_t link_counter;      /* generations handed out so far */
    repl_session *link;
    uint64_t peer_applied;      /* the passive's applied txid, from its heartbeats */
    kt_repl_position peer_acked;
    repl_inflight inflight;
    repl_pending pending;
    int64_t refusals_logged_at; /* rate limit of "write refused" lines */
    uint64_t refusals_unlogged;
    bool have_outcome;          /* the last commit failure was ours */
    kt_store_status outcome;
    char peer_address[64];

    /* passive */
    pthread_t receiver, applier, apply_guard;
    bool receiver_started, applier_started, apply_guard_started;
    repl_channel *receiver_channel;
    pthread_mutex_t apply_mutex; /* one apply or install at a time */
    pthread_cond_t apply_wanted; /* a confirmation arrived, or stopping (wakes the applier only) */
    repl_apply *apply;
    kt_repl_position applied;
    kt_repl_position active_tip;
    bool needs_basecopy;        /* no usable database, log or state: ask for a full copy */
    int64_t last_heard_ms;

    /* switchover (promote.c): the active wants to hand over / has sent HANDOVER; the passive
       received it for its spool's tip */
    bool handover_wanted, handover_sent, handover_received;
};

/* state.c: the one function that changes repl->state (caller holds repl->mutex). */
void repl_set_state(kt_repl *repl, repl_state to, const char *why);

/* ---- vfs_capture.c -------------------------------------------------------------------------- */

/* Makes the -wal and the log agree before any connection opens the database (vfs_capture.c). */
int repl_capture_reconcile(kt_repl *repl, char *error, size_t error_size);
/* Active, at a handshake with a passive whose tip is `passive_tip` (NULL: no passive to ask, the
 * node turned asynchronous): commits the pending transaction when the passive holds it (or when
 * NULL), drops it otherwise. 0, or -1 (logged; the transaction stays pending). */
int repl_capture_settle_pending(kt_repl *repl, const kt_repl_position *passive_tip);
int repl_capture_register(kt_repl *repl, char *error, size_t error_size);
void repl_capture_unregister(kt_repl *repl);
const char *repl_capture_vfs_name(const repl_capture *capture);
/* A VFS that ships nothing and only counts the failpoint hits of a database file's writes (the
 * passive's checkpoints); NULL when it cannot be registered. */
const char *repl_capture_observer_vfs_name(void);
/* Where the last committed transaction ends in the current -wal (for the genesis of a log). */
int repl_wal_committed_end(const char *wal_path, repl_wal_cursor *end, unsigned *commits);

/* ---- syncrep.c ------------------------------------------------------------------------------ */

/* What the capture does for the commit path (vfs_capture.c). */
typedef struct repl_commit_io {
    int (*local_sync)(void *context); /* makes the -wal durable here: an SQLite code */
    int (*release)(void *context);    /* releases the held commit frame: 0 or -1 */
    void *context;
    bool held;                        /* the commit frame was written held */
} repl_commit_io;

/* The commit of one transaction, called inside its xSync. `frames` are the transaction's pages,
 * `end` where its commit frame ends in the -wal. Returns SQLITE_OK (committed: passive
 * acknowledged when synchronous, log appended, frame released) or an error with *outcome saying
 * what the failure means; *logged says the log has it (then it must stay in the -wal). */
int repl_syncrep_commit(kt_repl *repl, const repl_frames *frames, const repl_wal_cursor *end,
                        const repl_commit_io *io, kt_store_status *outcome, bool *logged);
/* Whether a commit frame written now must be held (a synchronous active). */
bool repl_syncrep_holds_commits(kt_repl *repl);
/* Drops the oldest entries of the log once it holds more than twice retain_bytes. */
void repl_syncrep_compact(kt_repl *repl);
/* Makes the log durable before SQLite starts a new -wal generation over frames whose entries the
 * log may hold only in memory; 0 or -1. */
int repl_syncrep_before_wal_reset(kt_repl *repl);
/* Walsender side: an acknowledgement, a refusal, or a lost link for the in-flight commit. */
void repl_syncrep_acknowledged(kt_repl *repl, const kt_repl_position *acked);
void repl_syncrep_refused(kt_repl *repl, uint64_t txid, uint8_t reason);
void repl_syncrep_link_lost(kt_repl *repl);
/* Whether a commit could succeed now, and if not why (caller holds repl->mutex). */
bool repl_syncrep_writable(kt_repl *repl, char *reason, size_t reason_size);

/* ---- walsender.c ---------------------------------------------------------------------------- */

int repl_walsender_start(kt_repl *repl, char *error, size_t error_size);
void repl_walsender_stop(kt_repl *repl);
void repl_walsender_wake(kt_repl *repl); /* new work for the stream session (holds mutex) */
/* The committing thread sends its transaction on the link (holds repl->mutex, released while
 * sending); 0 once sent, -1 after a failure, which resets the link. */
int repl_walsender_send_inflight(kt_repl *repl, const unsigned char *message, size_t length);

/* ---- walreceiver.c -------------------------------------------------------------------------- */

int repl_walreceiver_start(kt_repl *repl, char *error, size_t error_size);
void repl_walreceiver_stop(kt_repl *repl);

/* ---- apply.c -------------------------------------------------------------------------------- */

int repl_apply_open(repl_apply **apply, const char *database_path, const repl_logger *logger,
                    char *error, size_t error_size);
/* Active: runs `change` on the -wal (an fd) under SQLite's WAL write lock, taken through a
 * connection of its own, then makes every connection read the wal-index again (apply.c's way):
 * how a pending transaction is released or cut while the writer's connection is open. */
typedef int (*repl_wal_change)(int fd, void *context);
int repl_apply_change_wal(const char *database_path, const repl_logger *logger,
                          repl_wal_change change, void *context, char *error, size_t error_size);
void repl_apply_close(repl_apply *apply);
/* Appends the frames of `count` entries to the database's -wal as one commit, makes it durable
 * and visible (see apply.c for how). */
int repl_apply_entries(repl_apply *apply, const repl_entry *entries, size_t count, char *error,
                       size_t error_size);
/* Replaces the whole content with the pages of the database file at `image_path`, as one commit
 * through the -wal (readers keep their snapshots). */
int repl_apply_image(repl_apply *apply, const char *image_path, char *error, size_t error_size);
/* Checkpoints and truncates the -wal when it holds more than `max_frames` frames; with 0, whenever
 * the -wal file is not empty. */
int repl_apply_checkpoint(repl_apply *apply, uint32_t max_frames);
/* The applier's checkpoint: RESTART, keeping the -wal's blocks for the next apply's new
 * generation; gives up (returns 0) when readers hold the -wal. */
int repl_apply_checkpoint_keeping_wal(repl_apply *apply, uint32_t max_frames);
uint32_t repl_apply_wal_frames(repl_apply *apply);
int repl_applier_start(kt_repl *repl, char *error, size_t error_size);
void repl_applier_stop(kt_repl *repl);
/* Applies every entry confirmed when it is called and not applied yet (caller must not hold
 * repl->mutex). */
int repl_applier_catch_up(kt_repl *repl);

/* ---- basecopy.c ----------------------------------------------------------------------------- */

/* Active: a consistent copy of the database at `position` in `snapshot_path`. */
int repl_basecopy_snapshot(kt_repl *repl, const char *snapshot_path, kt_repl_position *position,
                           char *error, size_t error_size);
/* Active: sends a snapshot over a channel (BEGIN, CHUNKs, END). */
int repl_basecopy_send(kt_repl *repl, repl_channel *channel, char *error, size_t error_size,
                       kt_repl_position *sent_position);
/* Passive: receives a copy after BEGIN into `temp_path`, fsynced and verified. */
int repl_basecopy_receive(repl_channel *channel, const unsigned char *begin_payload,
                          size_t begin_length, const char *temp_path,
                          repl_msg_basecopy_begin *begin, int timeout_ms, char *error,
                          size_t error_size);
/* Passive: installs a received and verified copy (temp_path) as the database, at the copy's
 * position: renamed into place when there is no database yet, applied through the -wal as one
 * commit otherwise (readers keep their snapshots). Resets the log and the state file. */
int repl_basecopy_install(kt_repl *repl, const char *temp_path,
                          const repl_msg_basecopy_begin *begin, char *error, size_t error_size);
/* PRAGMA integrity_check on a database file, and its page size. */
int repl_basecopy_verify(const char *path, uint32_t *page_size, char *error, size_t error_size);

#endif /* KT_REPLICATION_INTERNAL_H */
