/*
 * vfs_capture.c — the VFS shim the active's writer opens the database with. It passes every call
 * to SQLite's "unix" VFS and intervenes at a few points of the -wal file.
 *
 * Held commit frames (synchronous mode)
 *   SQLite takes a transaction as committed, in any process and after any crash, once its commit
 *   frame (the last frame, with a database size) is in the -wal with the right salts and checksum.
 *   The shim writes that frame "held": salt-1 xored with REPL_WAL_HOLD_MASK (walformat.c). Recovery
 *   then stops before it, whoever runs it; the checksum chain, which does not cover the salts, is
 *   untouched. The commit path releases the frame (xors it back) once the passive has acknowledged
 *   the transaction and the log has it. So a commit frame that is valid in the -wal is proof that
 *   the passive holds the transaction, which is what lets the log go without an fsync of its own.
 *
 * The xSync that ends a commit (with synchronous=FULL there is exactly one, after the last frame;
 * the commit becomes visible only after it returns OK — SQLite's wal.c, sqlite3WalFrames)
 *   1. reads the -wal header; if its salts are those of the generation it knows, the transaction
 *      starts where the last committed one ended; otherwise the file was restarted after a
 *      checkpoint and the transaction starts right after the new header;
 *   2. reads the frames back from there (a held commit frame counts as the end) as the -wal
 *      holds them, not as the xWrite calls came: a transaction larger than the page cache spills
 *      frames early, and SQLite rewrites their checksums at commit. The shim collects the -wal's
 *      writes and passes them to the file in one write (see "Write combining"), so the frames
 *      of a commit are usually read from that memory, and then written, before they are shipped;
 *   3. hands them to syncrep.c: ship, sync the -wal here, wait for the acknowledgement, append to
 *      the log, release;
 *   4. on failure before the log append, truncates the -wal back to where the transaction
 *      started and fsyncs it before returning the error, so that no crash brings a refused
 *      transaction back. After the log append (the release failed) it stays, and the shim is
 *      poisoned: startup releases it.
 * An xSync with no new commit frame (a checkpoint's, a header's) is passed through.
 * Other writes: a new -wal generation's header (offset 0) makes the log durable first (the old
 *   frames it overwrites may be the only durable copy of entries the log holds in memory); a
 *   TRUNCATE checkpoint keeps the file's blocks (capture_truncate says why); while a pending
 *   transaction waits at the end of the -wal (below), every write to it is refused.
 *
 * At startup, before any connection exists, repl_capture_reconcile makes the -wal and the log agree
 *   1. the log's last transaction is committed: if its commit frame is still held (the process
 *      stopped between the log append and the release), it is released;
 *   2. every transaction after it with a released commit frame is committed (the passive
 *      acknowledged it, or the node was not synchronous): it goes into the log (the append that
 *      a crash of the machine lost);
 *   3. a held transaction after those was in flight: on a synchronous active it is "pending",
 *      invisible, and every write is refused until the next handshake settles it — committed if
 *      the passive holds it (same txid and chain hash), cut off otherwise; on a node that is not
 *      synchronous it is committed at once;
 *   4. with no -wal at all, the database file must hold the log's last transaction; otherwise
 *      something opened and checkpointed the database before replication started (dropping a
 *      held frame with the -wal), and startup refuses with a sentence saying so.
 * The same settling of a pending transaction happens when the node turns asynchronous.
 *
 * The failpoint observer: the same pass-through, shipping nothing, which the passive opens its
 * own connection with when a failpoint on its database file is armed (failpoint.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/internal.h"

struct repl_capture {
    kt_repl *repl;             /* NULL for the failpoint observer */
    sqlite3_vfs vfs;
    sqlite3_vfs *real;
    char name[48];
    bool registered;
    bool ships;                /* false: the observer, which only counts failpoint hits */
    repl_wal_cursor committed; /* where the last committed transaction ends, in the -wal
                                  (repl->mutex: a handshake may move it, see settle_pending) */
    bool poisoned;
    repl_frames frames;        /* reused from commit to commit */
};

typedef struct capture_file {
    sqlite3_file base;
    repl_capture *capture;
    sqlite3_file *real;       /* the unix VFS's file, right after this struct */
    bool is_wal;
    bool is_main_database;
    uint32_t wal_page_size;   /* from the -wal header; 0 until known */
    uint64_t held_offset;     /* the commit frame written held in this transaction, 0: none */
    int sync_flags;           /* of the xSync being served */
    /* The active's -wal only: SQLite's writes not yet passed to the file, one contiguous run
     * (see "Write combining" below). */
    unsigned char *unwritten;
    size_t unwritten_length, unwritten_capacity;
    uint64_t unwritten_offset;
} capture_file;

#define CAPTURE_FILE_BYTES ((sizeof(capture_file) + 15) & ~(size_t)15)
#define WAL_KEPT_BYTES (64 << 20)

static sqlite3_file *real_file(sqlite3_file *file) { return ((capture_file *)file)->real; }

/* ---- write combining on the active's -wal ---------------------------------------------------
 * SQLite writes a frame in two calls, its 24-byte header and then its page, so a commit of 30
 * pages was 60 pwrite calls, and reading the frames back at the xSync 30 more. The shim collects
 * contiguous writes to the -wal in memory instead and passes them to the file in one write: at
 * the commit's xSync, before the transaction is shipped (so the file holds the frames before the
 * passive can, as it did write by write), and before anything that looks at the file (a read, the
 * size, a truncate, a sync, a close) or a write somewhere else. The xSync's scan reads the frames
 * from that memory. Nothing changes for anyone else: until the xSync returns no other connection
 * reads these frames (SQLite publishes them in the wal-index only after it), and a process killed
 * before the write loses frames that were not synced yet anyway. */
#define UNWRITTEN_MAX_BYTES (1u << 20)
#define UNIX_WRITE_MAX_BYTES 65536 /* the unix VFS's xWrite takes less than 128 KiB at a time */

/* Passes the collected writes to the file; SQLite's error code when it fails (they are dropped
 * either way: the caller fails the write, the commit, or whatever needed them). */
static int write_unwritten(capture_file *file)
{
    int rc = SQLITE_OK;
    for (size_t done = 0; rc == SQLITE_OK && done < file->unwritten_length;) {
        size_t amount = file->unwritten_length - done;
        if (amount > UNIX_WRITE_MAX_BYTES) {
            amount = UNIX_WRITE_MAX_BYTES;
        }
        rc = file->real->pMethods->xWrite(file->real, file->unwritten + done, (int)amount,
                                          (sqlite3_int64)(file->unwritten_offset + done));
        done += amount;
    }
    file->unwritten_length = 0;
    return rc;
}

/* Collects a write when it continues the run (or starts one); false when it must go to the file
 * (too large, out of memory). */
static bool collect_write(capture_file *file, const void *buffer, size_t amount, uint64_t offset)
{
    if (file->unwritten_length > 0 &&
        file->unwritten_offset + file->unwritten_length != offset) {
        return false;
    }
    size_t needed = file->unwritten_length + amount;
    if (needed > UNWRITTEN_MAX_BYTES) {
        return false;
    }
    if (needed > file->unwritten_capacity) {
        size_t capacity = file->unwritten_capacity ? file->unwritten_capacity : 65536;
        while (capacity < needed) {
            capacity *= 2;
        }
        unsigned char *grown = realloc(file->unwritten, capacity);
        if (grown == NULL) {
            return false;
        }
        file->unwritten = grown;
        file->unwritten_capacity = capacity;
    }
    if (file->unwritten_length == 0) {
        file->unwritten_offset = offset;
    }
    memcpy(file->unwritten + file->unwritten_length, buffer, amount);
    file->unwritten_length += amount;
    return true;
}

/* A write to the -wal: collected, or written after what was collected. */
static int write_combined(capture_file *file, const void *buffer, int amount,
                          sqlite3_int64 offset)
{
    if (collect_write(file, buffer, (size_t)amount, (uint64_t)offset)) {
        return SQLITE_OK;
    }
    int rc = write_unwritten(file);
    if (rc == SQLITE_OK && !collect_write(file, buffer, (size_t)amount, (uint64_t)offset)) {
        rc = file->real->pMethods->xWrite(file->real, buffer, amount, offset);
    }
    return rc;
}

/* ---- the -wal commit path ------------------------------------------------------------------- */

/* The -wal as SQLite wrote it: a range wholly inside the collected writes is read from them,
 * anything else from the file, after the collected writes reach it when the range overlaps them. */
static long read_through(void *context, void *buffer, size_t length, uint64_t offset)
{
    capture_file *capture = context;
    uint64_t start = capture->unwritten_offset, end = start + capture->unwritten_length;
    if (capture->unwritten_length > 0 && offset >= start && offset + length <= end) {
        memcpy(buffer, capture->unwritten + (offset - start), length);
        return (long)length;
    }
    if (capture->unwritten_length > 0 && offset < end && offset + length > start &&
        write_unwritten(capture) != SQLITE_OK) {
        return -1;
    }
    sqlite3_file *file = capture->real;
    int rc = file->pMethods->xRead(file, buffer, (int)length, (sqlite3_int64)offset);
    if (rc == SQLITE_OK) {
        return (long)length;
    }
    if (rc == SQLITE_IOERR_SHORT_READ) {
        return 0; /* unix zero-fills; a partial frame is as good as none */
    }
    return -1;
}

/* Zeros written ahead of the -wal's end, WAL_AHEAD_BYTES at a time, so that a commit's frames
 * overwrite blocks already on disk. Why: an fdatasync that extends the file must also commit the
 * file system's journal for the new length (measured here: the active's -wal fdatasync took 6.4 ms
 * for 160 KiB appended against 0.9 ms for the passive's preallocated spool with the same bytes).
 * SQLite reads zeros past the last commit as the end of the -wal (their salts do not match), as it
 * reads the older frames a TRUNCATE checkpoint leaves behind (capture_truncate); so does the
 * capture's own scan. Done in local_sync, after the fdatasync, while the commit waits for the
 * passive's acknowledgement anyway; the zeros reach the disk with the next commit's fdatasync, which
 * then records the new length once per WAL_AHEAD_BYTES instead of once per commit. Best effort: a
 * failure leaves the file as SQLite wrote it. Never past WAL_KEPT_BYTES (the -wal a TRUNCATE
 * checkpoint keeps). */
#define WAL_AHEAD_BYTES (1u << 20)

static void zero_fill_ahead(capture_file *file)
{
    static const unsigned char zeros[65536];
    sqlite3_file *real = file->real;
    sqlite3_int64 size = 0;
    if (file->held_offset == 0 || file->wal_page_size == 0 ||
        real->pMethods->xFileSize(real, &size) != SQLITE_OK) {
        return;
    }
    uint64_t end = file->held_offset + REPL_WAL_FRAME_HEADER_BYTES + file->wal_page_size;
    if ((uint64_t)size >= end + WAL_AHEAD_BYTES / 2 || end + WAL_AHEAD_BYTES > WAL_KEPT_BYTES) {
        return;
    }
    uint64_t target = ((end + WAL_AHEAD_BYTES) / WAL_AHEAD_BYTES + 1) * WAL_AHEAD_BYTES;
    if (target > WAL_KEPT_BYTES) {
        target = WAL_KEPT_BYTES;
    }
    for (uint64_t offset = (uint64_t)size; offset < target; offset += sizeof zeros) {
        int amount = (int)(target - offset < sizeof zeros ? target - offset : sizeof zeros);
        if (real->pMethods->xWrite(real, zeros, amount, (sqlite3_int64)offset) != SQLITE_OK) {
            return;
        }
    }
}

static int local_sync(void *context)
{
    capture_file *file = context;
    int rc = file->real->pMethods->xSync(file->real, file->sync_flags);
    if (rc == SQLITE_OK) {
        zero_fill_ahead(file);
    }
    return rc;
}

/* Rewrites the 24-byte header of the frame at `offset` with salt-1 xored (holds or releases). */
static int toggle_hold(sqlite3_file *real, uint64_t offset)
{
    unsigned char header[REPL_WAL_FRAME_HEADER_BYTES];
    if (real->pMethods->xRead(real, header, sizeof header, (sqlite3_int64)offset) != SQLITE_OK) {
        return -1;
    }
    repl_wal_hold_header(header);
    return real->pMethods->xWrite(real, header, sizeof header, (sqlite3_int64)offset) == SQLITE_OK
               ? 0
               : -1;
}

static int release(void *context)
{
    capture_file *file = context;
    int result = toggle_hold(file->real, file->held_offset);
    if (result == 0) {
        file->held_offset = 0;
    }
    return result;
}

static void record_outcome(repl_capture *capture, kt_store_status outcome)
{
    kt_repl *repl = capture->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    repl->have_outcome = true;
    repl->outcome = outcome;
    (void)pthread_mutex_unlock(&repl->mutex);
}

static repl_wal_cursor committed_cursor(repl_capture *capture)
{
    (void)pthread_mutex_lock(&capture->repl->mutex);
    repl_wal_cursor committed = capture->committed;
    (void)pthread_mutex_unlock(&capture->repl->mutex);
    return committed;
}

static void set_committed(repl_capture *capture, const repl_wal_cursor *committed)
{
    (void)pthread_mutex_lock(&capture->repl->mutex);
    capture->committed = *committed;
    (void)pthread_mutex_unlock(&capture->repl->mutex);
}

/* Cuts the -wal back to `start` and makes that durable; poisons the shim when it cannot. */
static void truncate_back(capture_file *file, const repl_wal_cursor *start)
{
    sqlite3_file *real = file->real;
    file->held_offset = 0;
    /* What was collected may begin before `start` (a new generation's header): written first. */
    int rc = write_unwritten(file);
    if (rc == SQLITE_OK) {
        rc = real->pMethods->xTruncate(real, (sqlite3_int64)start->offset);
    }
    if (rc == SQLITE_OK) {
        rc = real->pMethods->xSync(real, SQLITE_SYNC_FULL);
    }
    if (rc != SQLITE_OK) {
        file->capture->poisoned = true;
        repl_log(&file->capture->repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot cut a refused transaction out of the -wal (SQLite code "
                 "%d); refusing every write until keytrustee-db restarts",
                 rc);
    }
    set_committed(file->capture, start);
}

/* Where the transaction being committed starts: after the last committed one when the -wal is
 * still in its generation, else right after the (new) header. */
static repl_wal_cursor transaction_start(repl_capture *capture, const repl_wal_cursor *header)
{
    repl_wal_cursor committed = committed_cursor(capture);
    bool same_generation = committed.valid && committed.salt1 == header->salt1 &&
                           committed.salt2 == header->salt2 &&
                           committed.page_size == header->page_size;
    return same_generation ? committed : *header;
}

/* Refuses the commit and leaves nothing of it in the -wal. */
static int refuse_commit(capture_file *file, const repl_wal_cursor *start)
{
    truncate_back(file, start);
    record_outcome(file->capture, KT_STORE_REFUSED);
    return SQLITE_IOERR_FSYNC;
}

/* The xSync that ends a transaction: read its frames back, hand them to syncrep.c. */
static int commit(capture_file *file, const repl_wal_cursor *start,
                  const repl_wal_scan_result *found)
{
    repl_capture *capture = file->capture;
    if (file->held_offset != found->held_offset) { /* a commit frame held elsewhere: a bug */
        repl_log(&capture->repl->logger, KT_REPL_LOG_ERROR,
                 "replication: the commit frame is not where it was written held");
        return refuse_commit(file, start);
    }
    repl_commit_io io = {local_sync, release, file, found->held_offset != 0};
    kt_store_status outcome = KT_STORE_REFUSED;
    bool logged = false;
    int rc = repl_syncrep_commit(capture->repl, &capture->frames, &found->end, &io, &outcome,
                                 &logged);
    if (rc == SQLITE_OK) {
        set_committed(capture, &found->end);
        return SQLITE_OK;
    }
    if (logged) { /* committed in the log but not released: startup releases it */
        capture->poisoned = true;
    } else {
        truncate_back(file, start);
    }
    record_outcome(capture, outcome);
    return rc;
}

/* An xSync that ends no transaction (a checkpoint's, a new header's): passed on. */
static int sync_through(capture_file *file, int flags)
{
    int rc = write_unwritten(file);
    return rc == SQLITE_OK ? file->real->pMethods->xSync(file->real, flags) : rc;
}

static int capture_wal_sync(capture_file *file, int flags)
{
    repl_capture *capture = file->capture;
    if (capture->poisoned) {
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_FSYNC;
    }
    repl_wal_cursor header;
    if (repl_wal_read_header(read_through, file, &header) != 0) {
        capture->poisoned = true;
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_FSYNC;
    }
    if (!header.valid) {
        return sync_through(file, flags);
    }
    repl_wal_cursor start = transaction_start(capture, &header);
    repl_wal_scan_result found;
    repl_frames_reset(&capture->frames);
    if (repl_wal_scan_holding(read_through, file, &start, &capture->frames, false, &found) != 0) {
        repl_log(&capture->repl->logger, KT_REPL_LOG_WARNING, "replication: write refused: %s",
                 errno == EFBIG ? "its transaction changes more than 512 MiB of pages (split it)"
                                : "its frames cannot be read back from the -wal");
        repl_frames_free(&capture->frames); /* do not keep the memory of a huge transaction */
        return refuse_commit(file, &start);
    }
    if (found.commits == 0) {
        return sync_through(file, flags);
    }
    int rc = write_unwritten(file); /* the frames in the file before they leave for the passive */
    if (rc != SQLITE_OK) {
        repl_log(&capture->repl->logger, KT_REPL_LOG_WARNING,
                 "replication: write refused: its frames cannot be written to the -wal (SQLite "
                 "code %d)", rc);
        truncate_back(file, &start);
        record_outcome(capture, (rc & 0xff) == SQLITE_FULL ? KT_STORE_FULL : KT_STORE_REFUSED);
        return rc;
    }
    file->sync_flags = flags;
    return commit(file, &start, &found);
}

/* ---- pass-through io methods ---------------------------------------------------------------- */

static int capture_close(sqlite3_file *file)
{
    capture_file *capture = (capture_file *)file;
    int written = write_unwritten(capture);
    free(capture->unwritten);
    capture->unwritten = NULL;
    capture->unwritten_capacity = 0;
    int rc = capture->real->pMethods->xClose(capture->real);
    return written != SQLITE_OK ? written : rc;
}

static int capture_read(sqlite3_file *file, void *buffer, int amount, sqlite3_int64 offset)
{
    capture_file *capture = (capture_file *)file;
    int rc = write_unwritten(capture);
    return rc == SQLITE_OK ? capture->real->pMethods->xRead(capture->real, buffer, amount, offset)
                           : rc;
}

/* The failpoints that stand at a write: the active's -wal (a commit being written) and either
 * node's database file (in WAL mode only checkpoints write it). */
static void write_failpoints(const capture_file *file)
{
    bool ships = file->capture->ships;
    if (file->is_wal && ships) {
        repl_failpoint(REPL_FP_ACTIVE_BEFORE_WAL_WRITE);
    } else if (file->is_main_database) {
        repl_failpoint(ships ? REPL_FP_ACTIVE_MID_CHECKPOINT : REPL_FP_PASSIVE_MID_CHECKPOINT);
    }
}

/* Whether a write at `offset` starts a frame (its 24-byte header first). */
static bool starts_frame(capture_file *file, sqlite3_int64 offset)
{
    if (file->wal_page_size == 0) {
        repl_wal_cursor header;
        if (repl_wal_read_header(read_through, file, &header) != 0 || !header.valid) {
            return false;
        }
        file->wal_page_size = header.page_size;
    }
    uint64_t frame_bytes = REPL_WAL_FRAME_HEADER_BYTES + (uint64_t)file->wal_page_size;
    return offset >= (sqlite3_int64)REPL_WAL_HEADER_BYTES &&
           ((uint64_t)offset - REPL_WAL_HEADER_BYTES) % frame_bytes == 0;
}

/* Writes a commit frame held: salt-1 xored, so that no recovery takes it as a commit until the
 * commit path releases it (see the top of this file). */
static int write_held(capture_file *file, const void *buffer, int amount, sqlite3_int64 offset)
{
    unsigned char *copy = malloc((size_t)amount);
    if (copy == NULL) {
        return SQLITE_IOERR_NOMEM;
    }
    memcpy(copy, buffer, (size_t)amount);
    repl_wal_hold_header(copy);
    int rc = write_combined(file, copy, amount, offset);
    free(copy);
    if (rc == SQLITE_OK) {
        file->held_offset = (uint64_t)offset;
    }
    return rc;
}

/* A write to the active's -wal: refused while a pending transaction waits there for the passive;
 * a new generation's header syncs the log first; a commit frame is held when synchronous. */
static int wal_write(capture_file *file, const void *buffer, int amount, sqlite3_int64 offset)
{
    repl_capture *capture = file->capture;
    if (__atomic_load_n(&capture->repl->pending.present, __ATOMIC_ACQUIRE)) {
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_WRITE;
    }
    if (offset == 0) {
        file->wal_page_size = amount >= (int)REPL_WAL_HEADER_BYTES
                                  ? repl_get_be32((const unsigned char *)buffer + 8)
                                  : 0;
        if (repl_syncrep_before_wal_reset(capture->repl) != 0) {
            record_outcome(capture, KT_STORE_REFUSED);
            return SQLITE_IOERR_WRITE;
        }
    }
    if (amount >= (int)REPL_WAL_FRAME_HEADER_BYTES &&
        repl_get_be32((const unsigned char *)buffer + 4) != 0 && starts_frame(file, offset) &&
        repl_syncrep_holds_commits(capture->repl)) {
        return write_held(file, buffer, amount, offset);
    }
    return write_combined(file, buffer, amount, offset);
}

static int capture_write(sqlite3_file *file, const void *buffer, int amount,
                         sqlite3_int64 offset)
{
    capture_file *capture = (capture_file *)file;
    if (__builtin_expect(repl_failpoints_armed, 0)) {
        write_failpoints(capture);
    }
    if (capture->is_wal && capture->capture->ships) {
        return wal_write(capture, buffer, amount, offset);
    }
    sqlite3_file *real = real_file(file);
    return real->pMethods->xWrite(real, buffer, amount, offset);
}

/* A TRUNCATE checkpoint empties the -wal; the shim keeps its blocks instead, as a RESTART
 * checkpoint would: SQLite starts the next generation at offset 0 with new salts either way, and
 * the old frames behind it fail the salt test. Why: every commit would otherwise extend the file
 * again, and an fdatasync that must record a new file length commits the file system's journal
 * too (twice the cost of overwriting blocks already there). The file keeps the size of the
 * largest generation, which the writer's checkpoints bound.
 * A -wal larger than WAL_KEPT_BYTES is truncated for real; the log is synced first, as before a
 * new generation's header (wal_write): the frames cut off may be the only durable trace of log
 * entries the log holds only in memory (its synchronous appends are not synced, syncrep.c), and
 * a log that lags the database after a crash would no longer match the passive's positions. */
static int capture_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    capture_file *capture = (capture_file *)file;
    sqlite3_file *real = real_file(file);
    sqlite3_int64 current = 0;
    bool shipping_wal = capture->is_wal && capture->capture->ships;
    int rc = write_unwritten(capture);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (shipping_wal && size == 0 &&
        real->pMethods->xFileSize(real, &current) == SQLITE_OK && current <= WAL_KEPT_BYTES) {
        return SQLITE_OK; /* a -wal grown by a huge transaction is truncated all the same */
    }
    if (shipping_wal && repl_syncrep_before_wal_reset(capture->capture->repl) != 0) {
        return SQLITE_IOERR_TRUNCATE;
    }
    return real->pMethods->xTruncate(real, size);
}

static int capture_sync(sqlite3_file *file, int flags)
{
    capture_file *capture = (capture_file *)file;
    if (capture->is_wal && capture->capture->ships) {
        return capture_wal_sync(capture, flags);
    }
    return capture->real->pMethods->xSync(capture->real, flags);
}

static int capture_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    capture_file *capture = (capture_file *)file;
    int rc = write_unwritten(capture);
    return rc == SQLITE_OK ? capture->real->pMethods->xFileSize(capture->real, size) : rc;
}

static int capture_lock(sqlite3_file *file, int level)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xLock(real, level);
}

static int capture_unlock(sqlite3_file *file, int level)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xUnlock(real, level);
}

static int capture_check_reserved_lock(sqlite3_file *file, int *reserved)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xCheckReservedLock(real, reserved);
}

static int capture_file_control(sqlite3_file *file, int operation, void *argument)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xFileControl(real, operation, argument);
}

static int capture_sector_size(sqlite3_file *file)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xSectorSize(real);
}

static int capture_device_characteristics(sqlite3_file *file)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xDeviceCharacteristics(real);
}

static int capture_shm_map(sqlite3_file *file, int region, int size, int extend,
                           void volatile **address)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xShmMap(real, region, size, extend, address);
}

static int capture_shm_lock(sqlite3_file *file, int offset, int count, int flags)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xShmLock(real, offset, count, flags);
}

static void capture_shm_barrier(sqlite3_file *file)
{
    sqlite3_file *real = real_file(file);
    real->pMethods->xShmBarrier(real);
}

static int capture_shm_unmap(sqlite3_file *file, int delete_flag)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xShmUnmap(real, delete_flag);
}

static int capture_fetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **pointer)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xFetch(real, offset, amount, pointer);
}

static int capture_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *pointer)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xUnfetch(real, offset, pointer);
}

static const sqlite3_io_methods capture_methods = {
    3,
    capture_close,
    capture_read,
    capture_write,
    capture_truncate,
    capture_sync,
    capture_file_size,
    capture_lock,
    capture_unlock,
    capture_check_reserved_lock,
    capture_file_control,
    capture_sector_size,
    capture_device_characteristics,
    capture_shm_map,
    capture_shm_lock,
    capture_shm_barrier,
    capture_shm_unmap,
    capture_fetch,
    capture_unfetch,
};

/* ---- pass-through vfs methods --------------------------------------------------------------- */

static sqlite3_vfs *real_vfs(sqlite3_vfs *vfs) { return ((repl_capture *)vfs->pAppData)->real; }

static int capture_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                        int *out_flags)
{
    repl_capture *capture = vfs->pAppData;
    capture_file *wrapper = (capture_file *)file;
    memset(wrapper, 0, sizeof *wrapper);
    wrapper->capture = capture;
    wrapper->real = (sqlite3_file *)((char *)file + CAPTURE_FILE_BYTES);
    wrapper->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    wrapper->is_main_database = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    memset(wrapper->real, 0, (size_t)capture->real->szOsFile);
    int rc = capture->real->xOpen(capture->real, name, wrapper->real, flags, out_flags);
    if (rc != SQLITE_OK || wrapper->real->pMethods == NULL) {
        file->pMethods = NULL;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    file->pMethods = &capture_methods;
    return SQLITE_OK;
}

static int capture_delete(sqlite3_vfs *vfs, const char *name, int sync_directory)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xDelete(real, name, sync_directory);
}

static int capture_access(sqlite3_vfs *vfs, const char *name, int flags, int *result)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xAccess(real, name, flags, result);
}

static int capture_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *out)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xFullPathname(real, name, size, out);
}

static void *capture_dl_open(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xDlOpen(real, name);
}

static void capture_dl_error(sqlite3_vfs *vfs, int size, char *message)
{
    sqlite3_vfs *real = real_vfs(vfs);
    real->xDlError(real, size, message);
}

static void (*capture_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xDlSym(real, handle, symbol);
}

static void capture_dl_close(sqlite3_vfs *vfs, void *handle)
{
    sqlite3_vfs *real = real_vfs(vfs);
    real->xDlClose(real, handle);
}

static int capture_randomness(sqlite3_vfs *vfs, int size, char *out)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xRandomness(real, size, out);
}

static int capture_sleep(sqlite3_vfs *vfs, int microseconds)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xSleep(real, microseconds);
}

static int capture_current_time(sqlite3_vfs *vfs, double *now)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xCurrentTime(real, now);
}

static int capture_get_last_error(sqlite3_vfs *vfs, int size, char *message)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xGetLastError(real, size, message);
}

static int capture_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *now)
{
    sqlite3_vfs *real = real_vfs(vfs);
    return real->xCurrentTimeInt64(real, now);
}

/* ---- registration --------------------------------------------------------------------------- */

static void fill_vfs(repl_capture *capture, sqlite3_vfs *real)
{
    static int instance;
    capture->real = real;
    (void)snprintf(capture->name, sizeof capture->name, "keytrustee-%s-%d",
                   capture->ships ? "repl" : "failpoint",
                   __atomic_add_fetch(&instance, 1, __ATOMIC_SEQ_CST));
    sqlite3_vfs *vfs = &capture->vfs;
    vfs->iVersion = 2;
    vfs->szOsFile = (int)(CAPTURE_FILE_BYTES + (size_t)real->szOsFile);
    vfs->mxPathname = real->mxPathname;
    vfs->zName = capture->name;
    vfs->pAppData = capture;
    vfs->xOpen = capture_open;
    vfs->xDelete = capture_delete;
    vfs->xAccess = capture_access;
    vfs->xFullPathname = capture_full_pathname;
    vfs->xDlOpen = capture_dl_open;
    vfs->xDlError = capture_dl_error;
    vfs->xDlSym = capture_dl_sym;
    vfs->xDlClose = capture_dl_close;
    vfs->xRandomness = capture_randomness;
    vfs->xSleep = capture_sleep;
    vfs->xCurrentTime = capture_current_time;
    vfs->xGetLastError = capture_get_last_error;
    vfs->xCurrentTimeInt64 = capture_current_time_int64;
}

int repl_capture_register(kt_repl *repl, char *error, size_t error_size)
{
    repl_capture *capture = calloc(1, sizeof *capture);
    sqlite3_vfs *real = sqlite3_vfs_find("unix");
    if (capture == NULL || real == NULL || real->iVersion < 2) {
        free(capture);
        repl_error(error, error_size, "cannot set up the replication VFS over SQLite's unix VFS");
        return -1;
    }
    capture->repl = repl;
    capture->ships = true;
    capture->committed = repl->capture ? repl->capture->committed : capture->committed;
    fill_vfs(capture, real);
    if (sqlite3_vfs_register(&capture->vfs, 0) != SQLITE_OK) {
        free(capture);
        repl_error(error, error_size, "cannot register the replication VFS");
        return -1;
    }
    capture->registered = true;
    free(repl->capture); /* the reconciliation's placeholder, if any */
    repl->capture = capture;
    return 0;
}

/* The observer: the same pass-through, shipping nothing, for the passive's own connection when a
 * failpoint on its database file is armed. Registered once per process, never removed (tests
 * only). */
static repl_capture observer;

static void register_observer(void)
{
    sqlite3_vfs *real = sqlite3_vfs_find("unix");
    if (real == NULL || real->iVersion < 2) {
        return;
    }
    observer.ships = false;
    fill_vfs(&observer, real);
    observer.registered = sqlite3_vfs_register(&observer.vfs, 0) == SQLITE_OK;
}

const char *repl_capture_observer_vfs_name(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, register_observer);
    return observer.registered ? observer.name : NULL;
}

void repl_capture_unregister(kt_repl *repl)
{
    repl_capture *capture = repl->capture;
    if (capture == NULL) {
        return;
    }
    if (capture->registered) {
        (void)sqlite3_vfs_unregister(&capture->vfs);
    }
    repl_frames_free(&capture->frames);
    free(capture);
    repl->capture = NULL;
}

const char *repl_capture_vfs_name(const repl_capture *capture)
{
    return capture && capture->registered ? capture->name : NULL;
}

/* ---- startup -------------------------------------------------------------------------------- */

int repl_wal_committed_end(const char *wal_path, repl_wal_cursor *end, unsigned *commits)
{
    memset(end, 0, sizeof *end);
    *commits = 0;
    int fd = open(wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    repl_wal_cursor start;
    int result = repl_wal_read_header(repl_wal_read_fd, &fd, &start);
    if (result == 0 && start.valid) {
        result = repl_wal_scan(repl_wal_read_fd, &fd, &start, NULL, end, commits);
    }
    (void)close(fd);
    return result;
}

/* The point in the current -wal after which nothing is logged. */
static int logged_end(int fd, const repl_wal_cursor *logged, const repl_wal_cursor *header,
                      repl_wal_cursor *from, char *error, size_t error_size)
{
    bool same_generation = logged->valid && logged->salt1 == header->salt1 &&
                           logged->salt2 == header->salt2 &&
                           logged->page_size == header->page_size;
    if (!same_generation) {
        *from = *header; /* restarted after the last logged commit, which a checkpoint holds */
        return 0;
    }
    struct stat status;
    if (fstat(fd, &status) != 0 || (uint64_t)status.st_size < logged->offset) {
        repl_error(error, error_size,
                   "the -wal file is shorter than the replication log says it must be; the "
                   "database was changed behind keytrustee-db's back");
        return -1;
    }
    *from = *logged;
    return 0;
}

/* Startup, step 1: the log's last transaction is committed; when its commit frame is still held
 * (the node stopped between the log append and the release), release it. */
static int release_logged_tip(int fd, const repl_wal_cursor *header, const repl_wal_cursor *from)
{
    uint64_t frame_bytes = REPL_WAL_FRAME_HEADER_BYTES + (uint64_t)header->page_size;
    if (from->offset < REPL_WAL_HEADER_BYTES + frame_bytes) {
        return 0;
    }
    uint64_t at = from->offset - frame_bytes;
    unsigned char frame[REPL_WAL_FRAME_HEADER_BYTES];
    if (repl_pread_full(fd, frame, sizeof frame, at) != (long)sizeof frame) {
        return -1;
    }
    if (repl_get_be32(frame + 4) == 0 ||
        repl_get_be32(frame + 8) != (header->salt1 ^ REPL_WAL_HOLD_MASK)) {
        return 0;
    }
    repl_wal_hold_header(frame);
    return repl_pwrite_all(fd, frame, sizeof frame, at) == 0 && fdatasync(fd) == 0 ? 0 : -1;
}

static int release_at(int fd, uint64_t offset)
{
    unsigned char frame[REPL_WAL_FRAME_HEADER_BYTES];
    if (repl_pread_full(fd, frame, sizeof frame, offset) != (long)sizeof frame) {
        return -1;
    }
    repl_wal_hold_header(frame);
    return repl_pwrite_all(fd, frame, sizeof frame, offset) == 0 && fdatasync(fd) == 0 ? 0 : -1;
}

/* Appends a committed transaction found in the -wal to the log (not synced). */
static int adopt(kt_repl *repl, const repl_frames *frames, const repl_wal_cursor *end)
{
    kt_repl_position tip = repl_spool_tip(repl->spool);
    repl_entry entry;
    repl_entry_build(&entry, repl->epoch, &tip, frames, end);
    return repl_spool_append(repl->spool, &entry, false);
}

static void set_pending(kt_repl *repl, const repl_frames *frames, const repl_wal_cursor *start,
                        const repl_wal_scan_result *found)
{
    kt_repl_position tip = repl_spool_tip(repl->spool);
    repl_entry entry;
    repl_entry_build(&entry, repl->epoch, &tip, frames, &found->end);
    repl_pending *pending = &repl->pending;
    pending->position = repl_entry_position(&entry);
    pending->start = *start;
    pending->end = found->end;
    pending->held_offset = found->held_offset;
    __atomic_store_n(&pending->present, true, __ATOMIC_RELEASE);
    repl_log(&repl->logger, KT_REPL_LOG_WARNING,
             "replication: transaction %llu was in flight when this node stopped; it stays "
             "invisible until the passive says whether it holds it",
             (unsigned long long)pending->position.txid);
}

/* Startup, steps 2 and 3: the transactions after the log's end. A released one is committed (the
 * passive acknowledged it, or the node was asynchronous): it goes into the log. A held one was in
 * flight: pending for a synchronous active, committed otherwise. `cursor` ends after the last
 * committed one. */
static int walk_unlogged(kt_repl *repl, int fd, repl_wal_cursor *cursor, unsigned *adopted)
{
    repl_frames frames = {0};
    int result = 0;
    for (;;) {
        repl_wal_scan_result found;
        repl_frames_reset(&frames);
        result = repl_wal_scan_holding(repl_wal_read_fd, &fd, cursor, &frames, true, &found);
        if (result != 0 || found.commits == 0) {
            break;
        }
        if (found.held_offset != 0 && repl->role == KT_REPL_ACTIVE && repl->synchronous) {
            set_pending(repl, &frames, cursor, &found);
            break;
        }
        if ((found.held_offset != 0 && release_at(fd, found.held_offset) != 0) ||
            adopt(repl, &frames, &found.end) != 0) {
            result = -1;
            break;
        }
        (*adopted)++;
        *cursor = found.end;
    }
    repl_frames_free(&frames);
    return result;
}

static int reconcile_file(kt_repl *repl, int fd, repl_wal_cursor *committed, char *error,
                          size_t error_size)
{
    repl_wal_cursor header, from;
    if (repl_wal_read_header(repl_wal_read_fd, &fd, &header) != 0) {
        repl_error(error, error_size, "cannot read %s: %m", repl->wal_path);
        return -1;
    }
    memset(committed, 0, sizeof *committed);
    if (!header.valid) {
        return 0;
    }
    repl_wal_cursor logged = repl_spool_tip_origin(repl->spool);
    unsigned adopted = 0;
    if (logged_end(fd, &logged, &header, &from, error, error_size) != 0) {
        return -1;
    }
    if (release_logged_tip(fd, &header, &from) != 0 ||
        walk_unlogged(repl, fd, &from, &adopted) != 0 ||
        (adopted > 0 && repl_spool_sync(repl->spool) != 0)) {
        repl_error(error, error_size, "cannot reconcile %s with the replication log: %m",
                   repl->wal_path);
        return -1;
    }
    if (adopted > 0) {
        repl_log(&repl->logger, KT_REPL_LOG_INFO,
                 "replication: %u committed transaction(s) found in the -wal were added to the log",
                 adopted);
    }
    *committed = from;
    return 0;
}

typedef struct page_frame {
    uint32_t number;
    uint32_t index;
} page_frame;

/* By page number, the latest frame first. */
static int compare_page_frames(const void *left, const void *right)
{
    const page_frame *a = left, *b = right;
    if (a->number != b->number) {
        return a->number < b->number ? -1 : 1;
    }
    return a->index > b->index ? -1 : a->index < b->index;
}

/* Whether the database file holds the last image of every page of `entry`: 1, 0, or -1. */
static int database_holds(const char *database_path, const repl_entry *entry)
{
    size_t record = 4 + (size_t)entry->page_size;
    page_frame *order = malloc(((size_t)entry->frame_count + 1) * sizeof *order);
    unsigned char *page = malloc(entry->page_size);
    int fd = open(database_path, O_RDONLY | O_CLOEXEC);
    int result = fd >= 0 && page != NULL && order != NULL ? 1 : -1;
    for (uint32_t index = 0; result == 1 && index < entry->frame_count; index++) {
        order[index].number = repl_get_le32(entry->frames + index * record);
        order[index].index = index;
    }
    if (result == 1) {
        qsort(order, entry->frame_count, sizeof *order, compare_page_frames);
    }
    for (uint32_t at = 0; result == 1 && at < entry->frame_count; at++) {
        if (at > 0 && order[at].number == order[at - 1].number) {
            continue; /* an earlier image of a page already compared */
        }
        const unsigned char *image = entry->frames + order[at].index * record + 4;
        uint64_t offset = (uint64_t)(order[at].number - 1) * entry->page_size;
        if (repl_pread_full(fd, page, entry->page_size, offset) != (long)entry->page_size ||
            memcmp(page, image, entry->page_size) != 0) {
            result = 0;
        }
    }
    free(order);
    free(page);
    if (fd >= 0) {
        (void)close(fd);
    }
    return result;
}

/* With no -wal at all, the database file must hold the log's last transaction. It would not if
 * something opened and checkpointed the database before startup reconciled its -wal (a commit
 * frame still held is invisible to SQLite, so the checkpoint dropped it with the -wal). Applying
 * it again could undo newer pages, so startup refuses instead and says why. */
static int check_tip_in_database(kt_repl *repl, char *error, size_t error_size)
{
    kt_repl_position tip = repl_spool_tip(repl->spool);
    if (tip.txid == repl_spool_base(repl->spool).txid) {
        return 0;
    }
    repl_entry entry;
    if (repl_spool_read(repl->spool, tip.txid, &entry) != 0) {
        repl_error(error, error_size, "cannot read transaction %llu from the replication log",
                   (unsigned long long)tip.txid);
        return -1;
    }
    int holds = database_holds(repl->database_path, &entry);
    repl_entry_free(&entry);
    if (holds != 1) {
        repl_error(error, error_size,
                   "%s lacks transaction %llu, which the replication log says is committed: its "
                   "-wal was checkpointed and removed before replication reconciled it (open the "
                   "database only after replication started); copy the database back from the "
                   "passive",
                   repl->database_path, (unsigned long long)tip.txid);
        return -1;
    }
    return 0;
}

int repl_capture_reconcile(kt_repl *repl, char *error, size_t error_size)
{
    repl_wal_cursor committed = {0};
    int fd = open(repl->wal_path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        repl_error(error, error_size, "cannot open %s: %m", repl->wal_path);
        return -1;
    }
    if (fd >= 0) {
        int result = reconcile_file(repl, fd, &committed, error, error_size);
        (void)close(fd);
        if (result != 0) {
            return result;
        }
    }
    if (!committed.valid && check_tip_in_database(repl, error, error_size) != 0) {
        return -1;
    }
    if (repl->capture == NULL) {
        repl->capture = calloc(1, sizeof *repl->capture);
        if (repl->capture == NULL) {
            repl_error(error, error_size, "out of memory");
            return -1;
        }
    }
    repl->capture->committed = committed;
    return 0;
}

/* ---- the pending transaction ------------------------------------------------------------------ */

static int release_pending(int fd, void *context)
{
    const repl_pending *pending = context;
    return release_at(fd, pending->held_offset);
}

static int cut_pending(int fd, void *context)
{
    const repl_pending *pending = context;
    return ftruncate(fd, (off_t)pending->start.offset) == 0 && fdatasync(fd) == 0 ? 0 : -1;
}

/* Logs the released pending transaction, read back from the -wal. */
static int log_pending(kt_repl *repl, const repl_pending *pending)
{
    int fd = open(repl->wal_path, O_RDONLY | O_CLOEXEC);
    repl_frames frames = {0};
    repl_wal_scan_result found;
    int result = fd >= 0 ? repl_wal_scan_holding(repl_wal_read_fd, &fd, &pending->start, &frames,
                                                 true, &found)
                         : -1;
    if (result == 0 && (found.commits != 1 || found.end.offset != pending->end.offset)) {
        errno = EIO;
        result = -1;
    }
    if (result == 0) {
        result = adopt(repl, &frames, &found.end) == 0 ? repl_spool_sync(repl->spool) : -1;
    }
    repl_frames_free(&frames);
    if (fd >= 0) {
        (void)close(fd);
    }
    return result;
}

int repl_capture_settle_pending(kt_repl *repl, const kt_repl_position *passive_tip)
{
    if (!__atomic_load_n(&repl->pending.present, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    repl_pending pending = repl->pending; /* only this thread changes it while present */
    bool commit_it = passive_tip == NULL || repl_position_same(passive_tip, &pending.position);
    char error[256];
    int result = repl_apply_change_wal(repl->database_path, &repl->logger,
                                       commit_it ? release_pending : cut_pending, &pending, error,
                                       sizeof error);
    if (result == 0 && commit_it) {
        result = log_pending(repl, &pending);
        (void)snprintf(error, sizeof error, "cannot log it: %s", strerror(errno));
    }
    if (result != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot settle transaction %llu, in flight at the last stop: %s",
                 (unsigned long long)pending.position.txid, error);
        return -1;
    }
    (void)pthread_mutex_lock(&repl->mutex);
    if (commit_it) {
        repl->capture->committed = pending.end;
    }
    __atomic_store_n(&repl->pending.present, false, __ATOMIC_RELEASE);
    (void)pthread_mutex_unlock(&repl->mutex);
    repl_log(&repl->logger, KT_REPL_LOG_INFO,
             "replication: transaction %llu, in flight at the last stop, is %s",
             (unsigned long long)pending.position.txid,
             commit_it ? "committed" : "dropped (the passive does not hold it)");
    return 0;
}
