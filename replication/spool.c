/*
 * spool.c — a node's log of transactions: keytrustee-repl.log in the state directory.
 *
 * Both nodes keep one. On the active it holds every committed transaction, so that a passive
 * that was away can be streamed what it missed: appended after the passive acknowledged, before
 * COMMIT returns — not synced in synchronous mode (syncrep.c says why that is safe; it is synced
 * before SQLite starts a new -wal generation, at a stop, and by compactions), synced otherwise.
 * On the passive it is the spool: each received transaction is appended and fdatasynced before
 * the acknowledgement, and applied to the database only once the active confirms it (apply.c).
 *
 * Format: a sequence of records, each
 *     u32 payload length | u32 type | u32 CRC-32C of (type, payload) | payload
 * (little-endian). Types:
 *     1 HEADER   "KTREPLOG", u32 version 1, base position, base origin cursor. Always first, and
 *                only first. The base is the position just before the first entry: the genesis
 *                of a new log, the copied position after a base copy, or the last entry dropped
 *                by a compaction.
 *     2 ENTRY    an entry (position.c); txid = previous + 1 and prev = previous hash, always.
 *     3 CONFIRM  u64 txid, hash: the active committed everything up to there (passive only).
 *     4 APPLIED  u64 txid, hash: the passive's database holds everything up to there. Written
 *                without a sync, but only after the -wal holding those transactions was
 *                fdatasynced, so it can lag the database and never lead it (apply.c).
 *     A CONFIRM or APPLIED about an entry before the base (left behind by a compaction) is
 *     ignored.
 * The file is longer than its records: appends write over zeros written ahead, 128 KiB at a
 * time (preallocate says why), and a run of zeros after the last record is free space.
 * Invariants
 *   - Entries form one chain from the base: opening checks every link and every hash.
 *   - Only a torn or damaged tail is ever lost: opening stops at the first record that is short,
 *     fails its CRC or breaks the chain; unless only zeros follow, it truncates the file there
 *     (fsynced) and says so in the log. A damaged HEADER makes the log unusable (an error naming
 *     the file).
 *   - Entries up to the confirmed txid are never truncated away; unconfirmed ones are dropped
 *     when the active says they are not part of its history (walreceiver.c).
 *   - Compaction and reset write a whole new file and rename it into place. A compaction copies
 *     the entries it keeps without holding the lock (repl_spool_compact), and an entry is read
 *     without it too (repl_spool_read): a commit waiting on an append is never held up by them.
 * Thread safety: every function takes the spool's own lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/internal.h"

enum { RECORD_HEADER = 1, RECORD_ENTRY = 2, RECORD_CONFIRM = 3, RECORD_APPLIED = 4 };
#define RECORD_PREFIX_BYTES 12u
#define SPOOL_MAGIC "KTREPLOG"
#define SPOOL_VERSION 1u
#define PREALLOCATE_BYTES (128u << 10)

typedef struct spool_item {
    uint64_t txid;
    uint64_t epoch;
    unsigned char hash[KT_HASH_BYTES];
    uint64_t offset;   /* of the record */
    uint64_t length;   /* of the record, prefix included */
    repl_wal_cursor origin;
    int64_t time_ms;
} spool_item;

struct repl_spool {
    pthread_mutex_t lock;
    char *path;
    int fd;
    repl_logger logger;
    kt_repl_position base;
    repl_wal_cursor base_origin;
    uint64_t confirmed;
    kt_repl_position applied;
    uint64_t size;          /* where the next record goes (the logical end) */
    uint64_t allocated;     /* the file's length: zeros from `size` on (preallocated) */
    uint64_t writeback_from; /* unsynced appends from here on have not been handed to the disk
                                yet (start_writeback); a hint only, clamped to `size` */
    spool_item *items;      /* items[i].txid == base.txid + 1 + i */
    size_t count, capacity;
    uint64_t rewrites;      /* counts cuts and rewrites: a compaction in progress checks it */
    bool compacting;        /* one compaction at a time: they share the temporary file's name */
    repl_failpoint_id torn_point;        /* an entry's record half written */
    repl_failpoint_id before_sync_point; /* an entry's record written, not synced */
};

/* ---- records -------------------------------------------------------------------------------- */

static void record_begin(repl_buffer *buffer, uint32_t type)
{
    unsigned char prefix[RECORD_PREFIX_BYTES] = {0};
    repl_put_le32(prefix + 4, type);
    repl_buffer_put(buffer, prefix, sizeof prefix);
}

/* Fills in the length and CRC of the record that starts at `start`. */
static void record_finish(repl_buffer *buffer, size_t start)
{
    if (buffer->failed) {
        return;
    }
    unsigned char *prefix = buffer->data + start;
    size_t payload = buffer->length - start - RECORD_PREFIX_BYTES;
    repl_put_le32(prefix, (uint32_t)payload);
    uint32_t crc = repl_crc32c(0, prefix + 4, 4);
    crc = repl_crc32c(crc, prefix + RECORD_PREFIX_BYTES, payload);
    repl_put_le32(prefix + 8, crc);
}

static void encode_header_record(repl_buffer *buffer, const kt_repl_position *base,
                                 const repl_wal_cursor *origin)
{
    size_t start = buffer->length;
    record_begin(buffer, RECORD_HEADER);
    repl_buffer_put(buffer, SPOOL_MAGIC, 8);
    repl_buffer_put_u32(buffer, SPOOL_VERSION);
    repl_position_encode(buffer, base);
    repl_cursor_encode(buffer, origin);
    record_finish(buffer, start);
}

static void encode_mark_record(repl_buffer *buffer, uint32_t type, uint64_t txid,
                               const unsigned char *hash)
{
    size_t start = buffer->length;
    record_begin(buffer, type);
    repl_buffer_put_u64(buffer, txid);
    repl_buffer_put(buffer, hash, KT_HASH_BYTES);
    record_finish(buffer, start);
}

/* Reads the record at `offset`: 1 with its type and malloc'd payload, 0 when the file ends there
 * or the record is torn or damaged, -1 on an I/O error or when memory ran out. *payload is NULL
 * unless 1 is returned. */
static int read_record(int fd, uint64_t offset, uint64_t file_size, uint32_t *type,
                       unsigned char **payload, uint32_t *length)
{
    unsigned char prefix[RECORD_PREFIX_BYTES];
    *payload = NULL;
    if (file_size - offset < RECORD_PREFIX_BYTES) {
        return 0;
    }
    if (repl_pread_full(fd, prefix, sizeof prefix, offset) != (long)sizeof prefix) {
        return -1;
    }
    *length = repl_get_le32(prefix);
    *type = repl_get_le32(prefix + 4);
    if (*length > REPL_MAX_MESSAGE_BYTES ||
        *length > file_size - offset - RECORD_PREFIX_BYTES) {
        return 0;
    }
    *payload = malloc(*length ? *length : 1);
    if (*payload == NULL) {
        return -1;
    }
    if (repl_pread_full(fd, *payload, *length, offset + RECORD_PREFIX_BYTES) != (long)*length) {
        free(*payload);
        *payload = NULL;
        return -1;
    }
    uint32_t crc = repl_crc32c(0, prefix + 4, 4);
    crc = repl_crc32c(crc, *payload, *length);
    if (crc != repl_get_le32(prefix + 8)) {
        free(*payload);
        *payload = NULL;
        return 0;
    }
    return 1;
}

/* ---- the in-memory index -------------------------------------------------------------------- */

static kt_repl_position tip_locked(const repl_spool *spool)
{
    if (spool->count == 0) {
        return spool->base;
    }
    const spool_item *last = &spool->items[spool->count - 1];
    kt_repl_position tip = {last->epoch, last->txid, {0}};
    memcpy(tip.hash, last->hash, KT_HASH_BYTES);
    return tip;
}

static const spool_item *item_at(const repl_spool *spool, uint64_t txid)
{
    if (txid <= spool->base.txid || txid - spool->base.txid > spool->count) {
        return NULL;
    }
    return &spool->items[txid - spool->base.txid - 1];
}

static int index_add(repl_spool *spool, const repl_entry *entry, uint64_t offset,
                     uint64_t length)
{
    if (spool->count == spool->capacity) {
        size_t capacity = spool->capacity ? spool->capacity * 2 : 1024;
        spool_item *grown = realloc(spool->items, capacity * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        spool->items = grown;
        spool->capacity = capacity;
    }
    spool_item *item = &spool->items[spool->count++];
    item->txid = entry->txid;
    item->epoch = entry->epoch;
    memcpy(item->hash, entry->hash, KT_HASH_BYTES);
    item->offset = offset;
    item->length = length;
    item->origin = entry->origin;
    item->time_ms = repl_now_ms();
    return 0;
}

/* Whether (txid, hash) is the base or a retained entry. */
static bool holds(const repl_spool *spool, uint64_t txid, const unsigned char *hash)
{
    if (hash == NULL) {
        return false;
    }
    if (txid == spool->base.txid) {
        return memcmp(spool->base.hash, hash, KT_HASH_BYTES) == 0;
    }
    const spool_item *item = item_at(spool, txid);
    return item != NULL && memcmp(item->hash, hash, KT_HASH_BYTES) == 0;
}

static bool entry_follows(const repl_spool *spool, const repl_entry *entry)
{
    kt_repl_position tip = tip_locked(spool);
    return entry->txid == tip.txid + 1 && memcmp(entry->prev, tip.hash, KT_HASH_BYTES) == 0;
}

/* ---- opening -------------------------------------------------------------------------------- */

static int create_file(const char *path, const kt_repl_position *base,
                       const repl_wal_cursor *origin)
{
    repl_buffer buffer = {0};
    encode_header_record(&buffer, base, origin);
    if (buffer.failed) {
        errno = ENOMEM;
        return -1;
    }
    int result = repl_write_file_atomic(path, buffer.data, buffer.length);
    repl_buffer_free(&buffer);
    return result;
}

static int load_header(repl_spool *spool, uint64_t file_size, uint64_t *offset)
{
    uint32_t type = 0, length = 0;
    unsigned char *payload = NULL;
    if (read_record(spool->fd, 0, file_size, &type, &payload, &length) != 1) {
        return -1;
    }
    repl_reader reader;
    repl_reader_init(&reader, payload, length);
    const unsigned char *magic = repl_reader_take(&reader, 8);
    uint32_t version = repl_reader_u32(&reader);
    repl_position_decode(&reader, &spool->base);
    repl_cursor_decode(&reader, &spool->base_origin);
    bool good = type == RECORD_HEADER && magic != NULL && memcmp(magic, SPOOL_MAGIC, 8) == 0 &&
                version == SPOOL_VERSION && repl_reader_done(&reader);
    free(payload);
    *offset = RECORD_PREFIX_BYTES + length;
    spool->confirmed = spool->base.txid;
    spool->applied = spool->base;
    return good ? 0 : -1;
}

/* Applies one record read at load time; false when it does not fit the log (a damaged tail). */
static bool load_record(repl_spool *spool, uint32_t type, const unsigned char *payload,
                        uint32_t length, uint64_t offset)
{
    repl_reader reader;
    repl_reader_init(&reader, payload, length);
    if (type == RECORD_ENTRY) {
        repl_entry entry;
        return repl_entry_decode(&reader, &entry) == 0 && repl_reader_done(&reader) &&
               entry_follows(spool, &entry) &&
               index_add(spool, &entry, offset, RECORD_PREFIX_BYTES + (uint64_t)length) == 0;
    }
    if (type == RECORD_CONFIRM || type == RECORD_APPLIED) {
        uint64_t txid = repl_reader_u64(&reader);
        const unsigned char *hash = repl_reader_take(&reader, KT_HASH_BYTES);
        if (repl_reader_done(&reader) && txid < spool->base.txid) {
            return true; /* about entries a compaction dropped: nothing left to mark */
        }
        if (!repl_reader_done(&reader) || !holds(spool, txid, hash)) {
            return false;
        }
        if (type == RECORD_CONFIRM && txid > spool->confirmed) {
            spool->confirmed = txid;
        }
        if (type == RECORD_APPLIED && txid > spool->applied.txid) {
            spool->applied.txid = txid;
            memcpy(spool->applied.hash, hash, KT_HASH_BYTES);
            spool->applied.epoch = txid == spool->base.txid ? spool->base.epoch
                                                           : item_at(spool, txid)->epoch;
        }
        return true;
    }
    return false;
}

/* 1 when the file holds only zeros from `offset` to `end` (space preallocated by appends, not a
 * torn record), 0 when something else is there, -1 on a read error. */
static int tail_is_zero(int fd, uint64_t offset, uint64_t end)
{
    unsigned char chunk[65536];
    while (offset < end) {
        size_t want = end - offset < sizeof chunk ? (size_t)(end - offset) : sizeof chunk;
        long got = repl_pread_full(fd, chunk, want, offset);
        if (got != (long)want) {
            return -1;
        }
        for (size_t index = 0; index < want; index++) {
            if (chunk[index] != 0) {
                return 0;
            }
        }
        offset += want;
    }
    return 1;
}

static int load_records(repl_spool *spool, uint64_t file_size, uint64_t offset)
{
    for (;;) {
        uint32_t type = 0, length = 0;
        unsigned char *payload = NULL;
        int got = read_record(spool->fd, offset, file_size, &type, &payload, &length);
        if (got < 0) {
            return -1;
        }
        bool fits = got == 1 && load_record(spool, type, payload, length, offset);
        free(payload);
        if (!fits) {
            break;
        }
        offset += RECORD_PREFIX_BYTES + (uint64_t)length;
    }
    spool->size = offset;
    spool->allocated = file_size;
    int zeros = tail_is_zero(spool->fd, offset, file_size);
    if (zeros < 0) {
        return -1;
    }
    if (!zeros) { /* a torn or damaged tail: drop it, durably */
        spool->allocated = offset;
        repl_log(&spool->logger, KT_REPL_LOG_WARNING,
                 "replication log %s: dropped %llu bytes of a torn or damaged tail at offset %llu",
                 spool->path, (unsigned long long)(file_size - offset),
                 (unsigned long long)offset);
        if (ftruncate(spool->fd, (off_t)offset) != 0 || fdatasync(spool->fd) != 0) {
            return -1;
        }
    }
    return 0;
}

static int open_file(repl_spool *spool, char *error, size_t error_size)
{
    spool->fd = open(spool->path, O_RDWR | O_CLOEXEC);
    struct stat status;
    if (spool->fd < 0 || fstat(spool->fd, &status) != 0) {
        repl_error(error, error_size, "cannot open the replication log %s: %m", spool->path);
        return -1;
    }
    uint64_t offset = 0;
    spool->count = 0;
    if (load_header(spool, (uint64_t)status.st_size, &offset) != 0) {
        repl_error(error, error_size,
                   "the replication log %s has no valid header; move it away and re-run "
                   "`ktadmin init-slave`",
                   spool->path);
        return -1;
    }
    if (load_records(spool, (uint64_t)status.st_size, offset) != 0) {
        repl_error(error, error_size, "cannot read the replication log %s: %m", spool->path);
        return -1;
    }
    return 0;
}

int repl_spool_open(repl_spool **out, const char *path, const kt_repl_position *genesis,
                    const repl_wal_cursor *genesis_origin, const repl_logger *logger,
                    char *error, size_t error_size)
{
    *out = NULL;
    repl_spool *spool = calloc(1, sizeof *spool);
    if (spool == NULL || (spool->path = repl_string_copy(path)) == NULL) {
        free(spool);
        repl_error(error, error_size, "out of memory opening the replication log");
        return -1;
    }
    spool->fd = -1;
    spool->logger = *logger;
    spool->torn_point = REPL_FAILPOINT_COUNT;
    spool->before_sync_point = REPL_FAILPOINT_COUNT;
    if (pthread_mutex_init(&spool->lock, NULL) != 0) {
        free(spool->path);
        free(spool);
        repl_error(error, error_size, "cannot create a mutex");
        return -1;
    }
    if (access(path, F_OK) != 0) {
        repl_wal_cursor none = {0};
        if (genesis == NULL) {
            repl_error(error, error_size, "there is no replication log %s", path);
            repl_spool_close(spool);
            return -1;
        }
        if (create_file(path, genesis, genesis_origin ? genesis_origin : &none) != 0) {
            repl_error(error, error_size, "cannot create the replication log %s: %m", path);
            repl_spool_close(spool);
            return -1;
        }
    }
    if (open_file(spool, error, error_size) != 0) {
        repl_spool_close(spool);
        return -1;
    }
    *out = spool;
    return 0;
}

void repl_spool_close(repl_spool *spool)
{
    if (spool == NULL) {
        return;
    }
    if (spool->fd >= 0) {
        (void)close(spool->fd);
    }
    (void)pthread_mutex_destroy(&spool->lock);
    free(spool->items);
    free(spool->path);
    free(spool);
}

/* ---- queries -------------------------------------------------------------------------------- */

kt_repl_position repl_spool_base(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    kt_repl_position base = spool->base;
    (void)pthread_mutex_unlock(&spool->lock);
    return base;
}

kt_repl_position repl_spool_tip(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    kt_repl_position tip = tip_locked(spool);
    (void)pthread_mutex_unlock(&spool->lock);
    return tip;
}

repl_wal_cursor repl_spool_tip_origin(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    repl_wal_cursor origin =
        spool->count ? spool->items[spool->count - 1].origin : spool->base_origin;
    (void)pthread_mutex_unlock(&spool->lock);
    return origin;
}

uint64_t repl_spool_confirmed(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    uint64_t confirmed = spool->confirmed;
    (void)pthread_mutex_unlock(&spool->lock);
    return confirmed;
}

kt_repl_position repl_spool_applied(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    kt_repl_position applied = spool->applied;
    (void)pthread_mutex_unlock(&spool->lock);
    return applied;
}

uint64_t repl_spool_bytes(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    uint64_t size = spool->size;
    (void)pthread_mutex_unlock(&spool->lock);
    return size;
}

int64_t repl_spool_entry_time(repl_spool *spool, uint64_t txid)
{
    (void)pthread_mutex_lock(&spool->lock);
    const spool_item *item = item_at(spool, txid);
    int64_t time_ms = item ? item->time_ms : 0;
    (void)pthread_mutex_unlock(&spool->lock);
    return time_ms;
}

bool repl_spool_position_at(repl_spool *spool, uint64_t txid, kt_repl_position *position)
{
    bool found = false;
    (void)pthread_mutex_lock(&spool->lock);
    if (txid == spool->base.txid) {
        *position = spool->base;
        found = true;
    } else {
        const spool_item *item = item_at(spool, txid);
        if (item != NULL) {
            position->epoch = item->epoch;
            position->txid = item->txid;
            memcpy(position->hash, item->hash, KT_HASH_BYTES);
            found = true;
        }
    }
    (void)pthread_mutex_unlock(&spool->lock);
    return found;
}

uint64_t repl_spool_retention_point(repl_spool *spool, uint64_t retain_bytes)
{
    (void)pthread_mutex_lock(&spool->lock);
    uint64_t kept = 0;
    size_t index = spool->count;
    while (index > 0 && kept + spool->items[index - 1].length <= retain_bytes) {
        kept += spool->items[index - 1].length;
        index--;
    }
    uint64_t keep_from = spool->base.txid + 1 + index;
    (void)pthread_mutex_unlock(&spool->lock);
    return keep_from;
}

/* ---- changes -------------------------------------------------------------------------------- */

/* Makes the file reach at least `needed` bytes, zero-filled ahead of the records. Why: an append
 * that extends a file makes its fdatasync write the file's new length too, which costs as much
 * again as the data (here ~170 us against ~85 us); a record written over zeros already on disk
 * needs only its own blocks. The zeros read as the end of the log (see tail_is_zero). Only
 * appends that are synced at once need it (the passive's spool, an asynchronous active's log);
 * the receiver writes the zeros ahead between two transactions (repl_spool_preallocate_ahead),
 * so that an append seldom pays for them. Best effort: when the zeros cannot be written the
 * record is simply appended. Holds spool->lock. */
static void preallocate(repl_spool *spool, uint64_t needed, bool wait_written)
{
    static const unsigned char zeros[65536];
    if (needed <= spool->allocated) {
        return;
    }
    uint64_t start = spool->allocated > spool->size ? spool->allocated : spool->size;
    uint64_t target = (needed / PREALLOCATE_BYTES + 1) * PREALLOCATE_BYTES;
    for (uint64_t offset = start; offset < target;) {
        size_t length = target - offset < sizeof zeros ? (size_t)(target - offset) : sizeof zeros;
        if (repl_pwrite_all(spool->fd, zeros, length, offset) != 0) {
            (void)!ftruncate(spool->fd, (off_t)spool->allocated);
            return;
        }
        offset += length;
    }
    if (wait_written) { /* on the device, so that the next append's fdatasync has less to do */
        (void)sync_file_range(spool->fd, (off64_t)start, (off64_t)(target - start),
                              SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    }
    spool->allocated = target;
}

void repl_spool_preallocate_ahead(repl_spool *spool, uint64_t ahead)
{
    (void)pthread_mutex_lock(&spool->lock);
    if (spool->allocated < spool->size + ahead) {
        preallocate(spool, spool->size + ahead, true);
    }
    (void)pthread_mutex_unlock(&spool->lock);
}

void repl_spool_set_failpoints(repl_spool *spool, repl_failpoint_id torn,
                               repl_failpoint_id before_sync)
{
    spool->torn_point = torn;
    spool->before_sync_point = before_sync;
}

/* Writes encoded records at the end; on failure cuts the file back so no partial record stays.
 * `before_sync` is the failpoint between the write and the sync (REPL_FAILPOINT_COUNT: none). */
static int append_bytes(repl_spool *spool, const repl_buffer *buffer, bool sync,
                        repl_failpoint_id before_sync)
{
    if (buffer->failed) {
        errno = ENOMEM;
        return -1;
    }
    if (sync) {
        preallocate(spool, spool->size + buffer->length, false);
    }
    int written = repl_pwrite_all(spool->fd, buffer->data, buffer->length, spool->size);
    if (written == 0 && sync) {
        repl_failpoint(before_sync);
    }
    if (written != 0 || (sync && fdatasync(spool->fd) != 0)) {
        int saved = errno;
        if (ftruncate(spool->fd, (off_t)spool->size) != 0) {
            repl_log(&spool->logger, KT_REPL_LOG_ERROR,
                     "replication log %s: cannot cut back a failed append: %m", spool->path);
        }
        spool->allocated = spool->size;
        errno = saved;
        return -1;
    }
    spool->size += buffer->length;
    return 0;
}

/* Lock held. Appends that are synced later (before a new -wal generation, at a stop) are handed
 * to the disk WRITEBACK_BYTES at a time, so that the later sync finds little left and does not hit
 * the disk with megabytes at once while commits wait on it. Not after every append: that was one
 * more small write for the disk per commit, in the queue where the -wal's and the passive's
 * fsyncs wait (commit_bench, 1 writer: the log append took 48 us with it, 26 without). */
#define WRITEBACK_BYTES (256u << 10)

static void start_writeback(repl_spool *spool)
{
    if (spool->writeback_from > spool->size) {
        spool->writeback_from = spool->size; /* cut or compacted since */
    }
    if (spool->size - spool->writeback_from < WRITEBACK_BYTES) {
        return;
    }
    (void)sync_file_range(spool->fd, (off64_t)spool->writeback_from,
                          (off64_t)(spool->size - spool->writeback_from), SYNC_FILE_RANGE_WRITE);
    spool->writeback_from = spool->size;
}

int repl_spool_append(repl_spool *spool, const repl_entry *entry, bool sync)
{
    repl_buffer buffer = {0};
    size_t start = buffer.length;
    record_begin(&buffer, RECORD_ENTRY);
    repl_entry_encode(&buffer, entry);
    record_finish(&buffer, start);
    int result = -1;
    (void)pthread_mutex_lock(&spool->lock);
    if (!entry_follows(spool, entry)) {
        errno = EINVAL;
    } else {
        uint64_t offset = spool->size;
        if (repl_failpoint_fires(spool->torn_point)) {
            (void)repl_pwrite_all(spool->fd, buffer.data, buffer.length / 2, offset);
            repl_failpoint_kill(spool->torn_point);
        }
        if (append_bytes(spool, &buffer, sync, spool->before_sync_point) == 0 &&
            index_add(spool, entry, offset, buffer.length) == 0) {
            result = 0;
        }
        if (result == 0 && !sync) {
            start_writeback(spool);
        } else if (result == 0) {
            spool->writeback_from = spool->size;
        }
    }
    (void)pthread_mutex_unlock(&spool->lock);
    repl_buffer_free(&buffer);
    return result;
}

int repl_spool_confirm(repl_spool *spool, uint64_t txid, const unsigned char *hash)
{
    int result = -1;
    (void)pthread_mutex_lock(&spool->lock);
    const spool_item *item = item_at(spool, txid);
    if (txid <= spool->confirmed) {
        result = 0; /* already known */
    } else if (item != NULL && memcmp(item->hash, hash, KT_HASH_BYTES) == 0) {
        repl_buffer buffer = {0};
        encode_mark_record(&buffer, RECORD_CONFIRM, txid, hash);
        result = append_bytes(spool, &buffer, false, REPL_FAILPOINT_COUNT);
        repl_buffer_free(&buffer);
        if (result == 0) {
            spool->confirmed = txid;
        }
    } else {
        errno = EINVAL;
    }
    (void)pthread_mutex_unlock(&spool->lock);
    return result;
}

int repl_spool_note_applied(repl_spool *spool, const kt_repl_position *applied)
{
    int result = 0;
    (void)pthread_mutex_lock(&spool->lock);
    if (applied->txid > spool->confirmed || !holds(spool, applied->txid, applied->hash)) {
        errno = EINVAL;
        result = -1;
    } else if (applied->txid > spool->applied.txid) {
        repl_buffer buffer = {0};
        encode_mark_record(&buffer, RECORD_APPLIED, applied->txid, applied->hash);
        result = append_bytes(spool, &buffer, false, REPL_FAILPOINT_COUNT);
        repl_buffer_free(&buffer);
        if (result == 0) {
            spool->applied = *applied;
        }
    }
    (void)pthread_mutex_unlock(&spool->lock);
    return result;
}

/* The CONFIRM and APPLIED records that restate what the spool knows (after a cut or a rewrite
 * dropped the originals); only those at or after `from`. */
static void encode_marks(const repl_spool *spool, repl_buffer *buffer, uint64_t from)
{
    const spool_item *confirmed = item_at(spool, spool->confirmed);
    if (confirmed != NULL && spool->confirmed >= from) {
        encode_mark_record(buffer, RECORD_CONFIRM, confirmed->txid, confirmed->hash);
    }
    if (spool->applied.txid >= from && spool->applied.txid > spool->base.txid) {
        encode_mark_record(buffer, RECORD_APPLIED, spool->applied.txid, spool->applied.hash);
    }
}

int repl_spool_sync(repl_spool *spool)
{
    (void)pthread_mutex_lock(&spool->lock);
    int result = fdatasync(spool->fd);
    (void)pthread_mutex_unlock(&spool->lock);
    return result;
}

int repl_spool_truncate_after(repl_spool *spool, uint64_t txid)
{
    int result = 0;
    (void)pthread_mutex_lock(&spool->lock);
    const spool_item *first_dropped = item_at(spool, txid + 1);
    if (txid < spool->confirmed || txid < spool->base.txid) {
        errno = EINVAL;
        result = -1;
    } else if (first_dropped != NULL) {
        uint64_t size = first_dropped->offset;
        /* CONFIRM and APPLIED records behind the cut are lost with it: write them again. */
        repl_buffer buffer = {0};
        encode_marks(spool, &buffer, 0);
        if (ftruncate(spool->fd, (off_t)size) != 0) {
            result = -1;
        } else {
            spool->size = size;
            spool->allocated = size;
            spool->rewrites++;
            spool->count = (size_t)(txid - spool->base.txid);
            result = buffer.length
                         ? append_bytes(spool, &buffer, true, REPL_FAILPOINT_COUNT)
                         : fdatasync(spool->fd);
        }
        repl_buffer_free(&buffer);
    }
    (void)pthread_mutex_unlock(&spool->lock);
    return result;
}

/* Decodes the entry `txid` from a record just read; takes over `payload`. */
static int decode_read(uint32_t type, unsigned char *payload, uint32_t length, uint64_t txid,
                       repl_entry *entry)
{
    repl_reader reader;
    repl_reader_init(&reader, payload, length);
    if (type == RECORD_ENTRY && repl_entry_decode(&reader, entry) == 0 && entry->txid == txid) {
        entry->owned = payload;
        return 0;
    }
    free(payload);
    memset(entry, 0, sizeof *entry);
    return -1;
}

/* The record is read without the lock: the applier reads a whole batch, one entry after the
 * other, and holding the lock for each read would keep the receiver's append (and the
 * acknowledgement a commit waits for) behind it for milliseconds (the lock is not fair). A
 * rewrite in between (a compaction, a cut) is noticed and the read done again. */
int repl_spool_read(repl_spool *spool, uint64_t txid, repl_entry *entry)
{
    memset(entry, 0, sizeof *entry);
    for (int attempt = 0; attempt < 3; attempt++) {
        (void)pthread_mutex_lock(&spool->lock);
        const spool_item *item = item_at(spool, txid);
        uint64_t offset = item ? item->offset : 0, size = spool->size;
        uint64_t rewrites = spool->rewrites;
        int fd = spool->fd;
        (void)pthread_mutex_unlock(&spool->lock);
        if (item == NULL) {
            return -1;
        }
        uint32_t type = 0, length = 0;
        unsigned char *payload = NULL;
        int got = read_record(fd, offset, size, &type, &payload, &length);
        (void)pthread_mutex_lock(&spool->lock);
        bool unchanged = spool->rewrites == rewrites;
        (void)pthread_mutex_unlock(&spool->lock);
        if (unchanged) {
            return got == 1 ? decode_read(type, payload, length, txid, entry) : -1;
        }
        free(payload);
    }
    return -1;
}

/* Replaces the file with `buffer` (temporary file, fsync, rename) and reopens it. */
static int replace_file(repl_spool *spool, const repl_buffer *buffer)
{
    if (buffer->failed) {
        errno = ENOMEM;
        return -1;
    }
    if (repl_write_file_atomic(spool->path, buffer->data, buffer->length) != 0) {
        return -1;
    }
    int fd = open(spool->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    (void)close(spool->fd);
    spool->fd = fd;
    spool->size = buffer->length;
    spool->allocated = buffer->length;
    spool->rewrites++;
    return 0;
}

int repl_spool_reset(repl_spool *spool, const kt_repl_position *base,
                     const repl_wal_cursor *base_origin)
{
    repl_buffer buffer = {0};
    repl_wal_cursor none = {0};
    encode_header_record(&buffer, base, base_origin ? base_origin : &none);
    (void)pthread_mutex_lock(&spool->lock);
    int result = replace_file(spool, &buffer);
    if (result == 0) {
        spool->base = *base;
        spool->base_origin = base_origin ? *base_origin : none;
        spool->count = 0;
        spool->confirmed = base->txid;
        spool->applied = *base;
    }
    (void)pthread_mutex_unlock(&spool->lock);
    repl_buffer_free(&buffer);
    return result;
}

/* ---- compaction ---------------------------------------------------------------------------- */

/* What a compaction keeps, taken under the lock. */
typedef struct compaction {
    uint64_t keep_from;
    kt_repl_position base;       /* the last dropped entry: the new file's base */
    repl_wal_cursor base_origin;
    uint64_t copy_from;          /* the first kept record */
    uint64_t copied_to;          /* the end of the file when the copy started */
    uint64_t rewrites;
    repl_buffer prefix;          /* the new header record */
    int source;                  /* a duplicate of the log's descriptor */
    char *temporary;
    int target;
} compaction;

/* Holds the lock. False when there is nothing to drop. */
static bool compaction_plan(repl_spool *spool, uint64_t keep_from, compaction *plan)
{
    const spool_item *new_base = item_at(spool, keep_from - 1);
    if (keep_from <= spool->base.txid + 1 || new_base == NULL) {
        return false;
    }
    const spool_item *first_kept = item_at(spool, keep_from);
    plan->keep_from = keep_from;
    plan->base.epoch = new_base->epoch;
    plan->base.txid = new_base->txid;
    memcpy(plan->base.hash, new_base->hash, KT_HASH_BYTES);
    plan->base_origin = new_base->origin;
    plan->copy_from = first_kept ? first_kept->offset : spool->size;
    plan->copied_to = spool->size;
    plan->rewrites = spool->rewrites;
    /* The CONFIRM and APPLIED records that matter follow the entries they name, so they are in
     * the copied range; those about dropped entries are ignored when the file is loaded. */
    encode_header_record(&plan->prefix, &plan->base, &plan->base_origin);
    plan->source = dup(spool->fd);
    return true;
}

/* Copies [from, to) of the old file to the end of the new one. */
static int copy_range(int source, int target, uint64_t from, uint64_t to, uint64_t at)
{
    enum { CHUNK_BYTES = 1 << 20 };
    unsigned char *chunk = from < to ? malloc(CHUNK_BYTES) : NULL;
    int result = from < to && chunk == NULL ? -1 : 0;
    while (result == 0 && from < to) {
        size_t length = to - from < CHUNK_BYTES ? (size_t)(to - from) : CHUNK_BYTES;
        if (repl_pread_full(source, chunk, length, from) != (long)length ||
            repl_pwrite_all(target, chunk, length, at) != 0) {
            result = -1;
        }
        from += length;
        at += length;
    }
    free(chunk);
    return result;
}

/* Without the lock: the new file with everything kept so far, synced. */
static int compaction_copy(repl_spool *spool, compaction *plan)
{
    size_t size = strlen(spool->path) + sizeof ".compact";
    plan->temporary = malloc(size);
    if (plan->temporary == NULL || plan->prefix.failed || plan->source < 0) {
        errno = ENOMEM;
        return -1;
    }
    (void)snprintf(plan->temporary, size, "%s.compact", spool->path);
    plan->target = open(plan->temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (plan->target < 0 ||
        repl_pwrite_all(plan->target, plan->prefix.data, plan->prefix.length, 0) != 0 ||
        copy_range(plan->source, plan->target, plan->copy_from, plan->copied_to,
                   plan->prefix.length) != 0 ||
        fdatasync(plan->target) != 0) {
        return -1;
    }
    return 0;
}

/* Without the lock: what was appended while the copy ran, copied and synced too, until little
 * is left, so that the switch copies and syncs only that little while appends wait. (A passive
 * that receives an 18 MiB transaction during the copy would otherwise wait for its copy and
 * fdatasync under the lock, and fall silent for longer than the active tolerates.) */
static int compaction_catch_up(repl_spool *spool, compaction *plan)
{
    enum { CATCH_UP_ROUNDS = 4, LITTLE_BYTES = 256 * 1024 };
    for (int round = 0; round < CATCH_UP_ROUNDS; round++) {
        (void)pthread_mutex_lock(&spool->lock);
        uint64_t size = spool->size;
        bool rewritten = spool->rewrites != plan->rewrites || size < plan->copied_to;
        (void)pthread_mutex_unlock(&spool->lock);
        if (rewritten) {
            errno = EAGAIN; /* cut or rewritten meanwhile: try again later */
            return -1;
        }
        if (size - plan->copied_to <= LITTLE_BYTES) {
            return 0;
        }
        if (copy_range(plan->source, plan->target, plan->copied_to, size,
                       plan->prefix.length + (plan->copied_to - plan->copy_from)) != 0 ||
            fdatasync(plan->target) != 0) {
            return -1;
        }
        plan->copied_to = size;
    }
    return 0;
}

/* Holds the lock: what was appended meanwhile, then the new file takes the old one's place. */
static int compaction_switch(repl_spool *spool, compaction *plan)
{
    uint64_t shift_to = plan->prefix.length;
    uint64_t end = shift_to + (spool->size - plan->copy_from);
    if (spool->rewrites != plan->rewrites || spool->size < plan->copied_to) {
        errno = EAGAIN; /* cut or rewritten meanwhile: try again later */
        return -1;
    }
    if (copy_range(spool->fd, plan->target, plan->copied_to, spool->size,
                   shift_to + (plan->copied_to - plan->copy_from)) != 0 ||
        fdatasync(plan->target) != 0 || rename(plan->temporary, spool->path) != 0 ||
        repl_fsync_directory_of(spool->path) != 0) {
        return -1;
    }
    size_t dropped = (size_t)(plan->keep_from - spool->base.txid - 1);
    memmove(spool->items, spool->items + dropped, (spool->count - dropped) * sizeof *spool->items);
    spool->count -= dropped;
    for (size_t index = 0; index < spool->count; index++) {
        spool->items[index].offset = spool->items[index].offset - plan->copy_from + shift_to;
    }
    (void)close(spool->fd);
    spool->fd = plan->target;
    plan->target = -1;
    spool->size = end;
    spool->allocated = end;
    spool->rewrites++;
    spool->base = plan->base;
    spool->base_origin = plan->base_origin;
    if (spool->confirmed < plan->base.txid) {
        spool->confirmed = plan->base.txid;
    }
    if (spool->applied.txid < plan->base.txid) {
        spool->applied = plan->base;
    }
    return 0;
}

static void compaction_end(compaction *plan)
{
    if (plan->target >= 0) {
        (void)close(plan->target);
        (void)unlink(plan->temporary);
    }
    if (plan->source >= 0) {
        (void)close(plan->source);
    }
    free(plan->temporary);
    repl_buffer_free(&plan->prefix);
}

/* The lock is held only to plan and to switch files: the bulk of the copy (the retained entries,
 * tens of megabytes) happens without it, so appends, and the commits waiting on them, go on.
 * A compaction asked for while another runs (a listener and a commit path, a role change) does
 * nothing: the running one drops as much. */
int repl_spool_compact(repl_spool *spool, uint64_t keep_from)
{
    compaction plan;
    memset(&plan, 0, sizeof plan);
    plan.source = -1;
    plan.target = -1;
    (void)pthread_mutex_lock(&spool->lock);
    bool planned = !spool->compacting && compaction_plan(spool, keep_from, &plan);
    if (planned) {
        spool->compacting = true;
    }
    (void)pthread_mutex_unlock(&spool->lock);
    int result = planned ? compaction_copy(spool, &plan) : 0;
    if (planned && result == 0) {
        result = compaction_catch_up(spool, &plan);
    }
    (void)pthread_mutex_lock(&spool->lock);
    if (planned && result == 0) {
        result = compaction_switch(spool, &plan);
    }
    int saved = errno;
    compaction_end(&plan);
    if (planned) {
        spool->compacting = false;
    }
    (void)pthread_mutex_unlock(&spool->lock);
    errno = saved;
    return result;
}
