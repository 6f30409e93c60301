/*
 * apply.c — the passive's applier: confirmed transactions from the spool into its SQLite
 * database, with stock libsqlite3, while readers keep reading.
 *
 * How pages get in (verified on SQLite 3.40.1, see /work/shared/reference/replication.md)
 *   1. Take SQLite's WAL write lock through the VFS: SQLITE_FCNTL_FILE_POINTER on our own
 *      connection, then xShmLock(WAL_WRITE_LOCK = 0, exclusive). Only through xShmLock: POSIX
 *      locks are per process, and SQLite tracks its own connections' shm locks itself.
 *   2. Append the pages to the -wal as frames with this node's own salts and checksum chain,
 *      after the last valid commit frame (starting a new -wal generation, with fresh random
 *      salts, when the file is empty after a TRUNCATE checkpoint). Only the last frame of a batch
 *      is a commit frame, so a batch becomes visible at once or not at all.
 *   3. fdatasync the -wal.
 *   4. Make the two copies of the wal-index header disagree (xShmMap region 0; fixed values in
 *      the unused field of each copy — fixed, not flipped, because a flip would cancel out on the
 *      next apply). The next reader then finds the header "dirty", takes the write lock and
 *      rebuilds the index from the -wal (SQLite's walIndexRecover): it sees the new commit.
 *   5. Release the lock and run one read ourselves, so that no client pays for the rebuild.
 *   Readers inside a read transaction keep their snapshot: their frames do not move.
 *
 * Why re-applying is safe: frames are whole page images, so applying transactions a, ..., b on
 * top of a database that already holds some of them gives the same content as applying them once,
 * provided they are applied as one commit. An APPLIED record goes into the spool after each batch
 * (after the -wal's fdatasync, so it never leads the database), so after a crash at most one batch
 * is applied again, and the first batch after a restart always covers it (batches only grow).
 *
 * Batches: a batch is one commit, so only the newest image of each page is written (a page every
 * transaction touches goes in once per batch, not once per transaction). The applier waits
 * APPLY_INTERVAL_MS after an apply before the next, so that confirmations gather: fewer, larger
 * batches, fewer fsyncs of the passive's -wal and fewer index rebuilds competing with the spool's
 * fsync, which a synchronous commit waits on. A lone transaction is applied at once.
 *
 * Checkpoints: the passive checkpoints its own -wal (RESTART) when it holds more than
 * REPL_APPLY_MAX_WAL_FRAMES frames, so that index rebuilds stay cheap (about 1.5 ms per 1,000
 * frames), and the next apply writes a new generation over the same blocks: the -wal is never
 * truncated while the passive runs, so its fdatasync records no new size
 * (repl_apply_checkpoint_keeping_wal). Promotion and a stop empty it (TRUNCATE,
 * repl_apply_checkpoint). Nothing to coordinate with the active: each node's -wal is its own.
 *
 * The same lock-and-invalidate is how the active releases or cuts a pending transaction in its
 * own -wal while its writer's connection is open (repl_apply_change_wal, vfs_capture.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/internal.h"

#define WAL_WRITE_LOCK 0
#define WALINDEX_REGION_BYTES 32768
#define LOCK_TIMEOUT_MS 5000
#define FLUSH_BYTES (1u << 20)
#define MAX_BATCH_ENTRIES 256u
#define MAX_BATCH_BYTES (64u << 20)
#define REPL_APPLY_MAX_WAL_FRAMES 1000u
#define APPLY_INTERVAL_MS 50
#define PENDING_BYTE_OFFSET 0x40000000u

struct repl_apply {
    sqlite3 *db;
    sqlite3_file *file;        /* the main database file of `db`, for the shm calls */
    char *database_path;
    char *wal_path;
    repl_logger logger;
    uint32_t page_size;
    mode_t mode;
    repl_wal_cursor end;       /* where our last commit frame ends (valid while have_end) */
    bool have_end;
    bool restart_wal;          /* everything is checkpointed: the next apply starts a new
                                  generation over the -wal's blocks */
};

typedef struct wal_appender {
    repl_apply *apply;
    int fd;
    repl_wal_cursor cursor;
    unsigned char *pending;    /* last page added: written once we know if it is the commit */
    uint32_t pending_page;
    bool has_pending;
    repl_buffer out;
    uint64_t out_offset;
} wal_appender;

/* ---- the connection ------------------------------------------------------------------------- */

static int run_read(repl_apply *apply)
{
    return sqlite3_exec(apply->db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
}

static int query_text(sqlite3 *db, const char *sql, char *out, size_t out_size)
{
    sqlite3_stmt *statement = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &statement, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(statement);
        if (rc == SQLITE_ROW) {
            const unsigned char *text = sqlite3_column_text(statement, 0);
            (void)snprintf(out, out_size, "%s", text ? (const char *)text : "");
            rc = SQLITE_OK;
        }
    }
    (void)sqlite3_finalize(statement);
    return rc;
}

static int open_connection(repl_apply *apply, char *error, size_t error_size)
{
    char value[32];
    const char *vfs = repl_failpoint_is(REPL_FP_PASSIVE_MID_CHECKPOINT)
                          ? repl_capture_observer_vfs_name()
                          : NULL;
    int rc = sqlite3_open_v2(apply->database_path, &apply->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc == SQLITE_OK) {
        rc = sqlite3_busy_timeout(apply->db, 2000);
    }
    if (rc == SQLITE_OK) {
        rc = query_text(apply->db, "PRAGMA journal_mode", value, sizeof value);
    }
    if (rc == SQLITE_OK && strcmp(value, "wal") != 0) {
        rc = query_text(apply->db, "PRAGMA journal_mode=WAL", value, sizeof value);
    }
    if (rc == SQLITE_OK) {
        rc = query_text(apply->db, "PRAGMA page_size", value, sizeof value);
        apply->page_size = (uint32_t)strtoul(value, NULL, 10);
    }
    if (rc == SQLITE_OK) {
        rc = run_read(apply); /* opens the -wal and maps the wal-index */
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_file_control(apply->db, "main", SQLITE_FCNTL_FILE_POINTER, &apply->file);
    }
    if (rc != SQLITE_OK || apply->file == NULL || apply->file->pMethods == NULL ||
        apply->file->pMethods->iVersion < 2) {
        repl_error(error, error_size, "cannot open %s for applying: %s", apply->database_path,
                   apply->db ? sqlite3_errmsg(apply->db) : sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

int repl_apply_open(repl_apply **out, const char *database_path, const repl_logger *logger,
                    char *error, size_t error_size)
{
    *out = NULL;
    repl_apply *apply = calloc(1, sizeof *apply);
    size_t wal_size = strlen(database_path) + sizeof "-wal";
    if (apply == NULL || (apply->database_path = repl_string_copy(database_path)) == NULL ||
        (apply->wal_path = malloc(wal_size)) == NULL) {
        repl_apply_close(apply);
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    (void)snprintf(apply->wal_path, wal_size, "%s-wal", database_path);
    apply->logger = *logger;
    struct stat status;
    apply->mode = stat(database_path, &status) == 0 ? (status.st_mode & 0777) : 0600;
    if (open_connection(apply, error, error_size) != 0) {
        repl_apply_close(apply);
        return -1;
    }
    *out = apply;
    return 0;
}

void repl_apply_close(repl_apply *apply)
{
    if (apply == NULL) {
        return;
    }
    if (apply->db != NULL) {
        (void)sqlite3_close(apply->db);
    }
    free(apply->database_path);
    free(apply->wal_path);
    free(apply);
}

/* ---- the write lock and the wal-index ------------------------------------------------------- */

static int lock_writer(repl_apply *apply)
{
    sqlite3_file *file = apply->file;
    int64_t deadline = repl_now_ms() + LOCK_TIMEOUT_MS;
    for (;;) {
        int rc = file->pMethods->xShmLock(file, WAL_WRITE_LOCK, 1,
                                          SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc == SQLITE_OK) {
            return 0;
        }
        if (rc != SQLITE_BUSY || repl_now_ms() > deadline) {
            return -1;
        }
        repl_sleep_ms(1);
    }
}

static void unlock_writer(repl_apply *apply)
{
    sqlite3_file *file = apply->file;
    (void)file->pMethods->xShmLock(file, WAL_WRITE_LOCK, 1,
                                   SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

/* Makes the two wal-index header copies (48 bytes each at offsets 0 and 48) disagree: the
 * 'unused' u32 of each (offsets 4 and 52) gets a different fixed value. */
static int invalidate_index(repl_apply *apply)
{
    sqlite3_file *file = apply->file;
    void volatile *region = NULL;
    int rc = file->pMethods->xShmMap(file, 0, WALINDEX_REGION_BYTES, 0, &region);
    if (rc != SQLITE_OK || region == NULL) {
        return -1;
    }
    volatile uint32_t *words = region;
    file->pMethods->xShmBarrier(file);
    words[13] = 0x4B545232u; /* copy 1 first: readers read copy 0 first */
    file->pMethods->xShmBarrier(file);
    words[1] = 0x4B545231u;
    file->pMethods->xShmBarrier(file);
    return 0;
}

/* ---- appending frames ----------------------------------------------------------------------- */

static int flush(wal_appender *appender)
{
    if (appender->out.failed) {
        errno = ENOMEM;
        return -1;
    }
    if (appender->out.length == 0) {
        return 0;
    }
    if (repl_pwrite_all(appender->fd, appender->out.data, appender->out.length,
                        appender->out_offset) != 0) {
        return -1;
    }
    appender->out_offset += appender->out.length;
    appender->out.length = 0;
    return 0;
}

static int emit(wal_appender *appender, uint32_t page_number, const unsigned char *page,
                uint32_t db_size)
{
    unsigned char header[REPL_WAL_FRAME_HEADER_BYTES];
    repl_wal_frame_header(header, page_number, db_size, page, &appender->cursor);
    repl_buffer_put(&appender->out, header, sizeof header);
    repl_buffer_put(&appender->out, page, appender->cursor.page_size);
    return appender->out.length >= FLUSH_BYTES ? flush(appender) : (appender->out.failed ? -1 : 0);
}

/* Where to append: after the last valid commit frame, or a new generation. */
static int find_append_point(wal_appender *appender)
{
    repl_apply *apply = appender->apply;
    repl_wal_cursor header;
    unsigned commits = 0;
    if (repl_wal_read_header(repl_wal_read_fd, &appender->fd, &header) != 0) {
        return -1;
    }
    if (header.valid && header.page_size == apply->page_size && !apply->restart_wal) {
        struct stat status;
        if (apply->have_end && apply->end.salt1 == header.salt1 &&
            apply->end.salt2 == header.salt2 && fstat(appender->fd, &status) == 0 &&
            (uint64_t)status.st_size >= apply->end.offset) {
            appender->cursor = apply->end;
        } else if (repl_wal_scan(repl_wal_read_fd, &appender->fd, &header, NULL,
                                 &appender->cursor, &commits) != 0) {
            return -1;
        }
        appender->out_offset = appender->cursor.offset;
        return 0;
    }
    unsigned char raw[REPL_WAL_HEADER_BYTES];
    uint32_t sequence = header.valid ? header.checkpoint_sequence + 1 : 0;
    repl_wal_new_header(raw, apply->page_size, sequence, &appender->cursor);
    /* After repl_apply_checkpoint_keeping_wal the old frames stay where they are: new salts
     * make them invalid, and cut_after_end invalidates the one right after the new ones. */
    if (!apply->restart_wal && ftruncate(appender->fd, 0) != 0) {
        return -1;
    }
    repl_buffer_put(&appender->out, raw, sizeof raw);
    appender->out_offset = 0;
    return 0;
}

static int appender_begin(wal_appender *appender, repl_apply *apply)
{
    memset(appender, 0, sizeof *appender);
    appender->apply = apply;
    appender->fd = -1;
    appender->pending = malloc(apply->page_size);
    if (appender->pending == NULL || lock_writer(apply) != 0) {
        free(appender->pending);
        appender->pending = NULL;
        return -1;
    }
    appender->fd = open(apply->wal_path, O_RDWR | O_CREAT | O_CLOEXEC, apply->mode);
    if (appender->fd < 0 || find_append_point(appender) != 0) {
        if (appender->fd >= 0) {
            (void)close(appender->fd);
        }
        unlock_writer(apply);
        free(appender->pending);
        appender->pending = NULL;
        return -1;
    }
    return 0;
}

static int appender_add(wal_appender *appender, uint32_t page_number, const unsigned char *page)
{
    if (appender->has_pending &&
        emit(appender, appender->pending_page, appender->pending, 0) != 0) {
        return -1;
    }
    memcpy(appender->pending, page, appender->apply->page_size);
    appender->pending_page = page_number;
    appender->has_pending = true;
    return 0;
}

static void appender_end(wal_appender *appender)
{
    if (appender->fd >= 0) {
        (void)close(appender->fd);
    }
    free(appender->pending);
    repl_buffer_free(&appender->out);
}

/* Makes sure nothing after the frames just written reads as a frame of this generation: the
 * frame header that follows them, if the file goes on, is zeroed (page number 0 and no salts end
 * SQLite's recovery and repl_wal_scan). Not a truncation: the -wal keeps its blocks and its size,
 * so its fdatasync writes data only, without a journal commit for a new file size. */
static int cut_after_end(wal_appender *appender)
{
    static const unsigned char zeros[REPL_WAL_FRAME_HEADER_BYTES];
    struct stat status;
    uint64_t end = appender->cursor.offset;
    if (fstat(appender->fd, &status) != 0) {
        return -1;
    }
    if ((uint64_t)status.st_size >= end + sizeof zeros) {
        return repl_pwrite_all(appender->fd, zeros, sizeof zeros, end);
    }
    return (uint64_t)status.st_size > end ? ftruncate(appender->fd, (off_t)end) : 0;
}

/* Writes what is left of the batch, the commit frame last, and makes it durable. The failpoint
 * in the middle of an apply writes half of it first. */
static int write_durably(wal_appender *appender, uint32_t db_size)
{
    if (emit(appender, appender->pending_page, appender->pending, db_size) != 0) {
        return -1;
    }
    if (repl_failpoint_fires(REPL_FP_PASSIVE_MID_APPLY)) {
        (void)repl_pwrite_all(appender->fd, appender->out.data, appender->out.length / 2,
                              appender->out_offset);
        repl_failpoint_kill(REPL_FP_PASSIVE_MID_APPLY);
    }
    if (flush(appender) != 0 || cut_after_end(appender) != 0 || fdatasync(appender->fd) != 0) {
        return -1;
    }
    repl_failpoint(REPL_FP_PASSIVE_AFTER_APPLY_SYNC);
    return 0;
}

/* Writes the commit frame, makes it durable and visible. */
static int appender_commit(wal_appender *appender, uint32_t db_size, char *error,
                           size_t error_size)
{
    repl_apply *apply = appender->apply;
    int result = -1;
    if (!appender->has_pending) {
        repl_error(error, error_size, "nothing to apply");
    } else if (write_durably(appender, db_size) != 0) {
        repl_error(error, error_size, "cannot write %s: %m", apply->wal_path);
    } else if (invalidate_index(apply) != 0) {
        repl_error(error, error_size, "cannot reach the wal-index of %s", apply->database_path);
    } else {
        result = 0;
    }
    apply->have_end = result == 0;
    apply->end = appender->cursor;
    apply->restart_wal = apply->restart_wal && result != 0;
    unlock_writer(apply);
    appender_end(appender);
    if (result == 0 && run_read(apply) != SQLITE_OK) {
        repl_log(&apply->logger, KT_REPL_LOG_WARNING,
                 "replication: the first read after applying failed: %s", sqlite3_errmsg(apply->db));
    }
    return result;
}

static void appender_abort(wal_appender *appender)
{
    appender->apply->have_end = false;
    unlock_writer(appender->apply);
    appender_end(appender);
}

/* ---- a change to the active's -wal ---------------------------------------------------------- */

int repl_apply_change_wal(const char *database_path, const repl_logger *logger,
                          repl_wal_change change, void *context, char *error, size_t error_size)
{
    repl_apply *apply = NULL;
    if (repl_apply_open(&apply, database_path, logger, error, error_size) != 0) {
        return -1;
    }
    int result = -1;
    if (lock_writer(apply) != 0) {
        repl_error(error, error_size, "cannot take the WAL write lock of %s", database_path);
    } else {
        int fd = open(apply->wal_path, O_RDWR | O_CLOEXEC);
        if (fd < 0 || change(fd, context) != 0) {
            repl_error(error, error_size, "cannot change %s: %m", apply->wal_path);
        } else if (invalidate_index(apply) != 0) {
            repl_error(error, error_size, "cannot reach the wal-index of %s", database_path);
        } else {
            result = 0;
        }
        if (fd >= 0) {
            (void)close(fd);
        }
        unlock_writer(apply);
    }
    if (result == 0) {
        (void)run_read(apply);
    }
    repl_apply_close(apply);
    return result;
}

/* ---- what gets applied ---------------------------------------------------------------------- */

/* One page image of a batch, and where it came from (the later, the newer). */
typedef struct batch_page {
    uint32_t number;
    uint64_t sequence;
    const unsigned char *image;
} batch_page;

/* By page number, the newest image first. */
static int compare_batch_pages(const void *left, const void *right)
{
    const batch_page *a = left, *b = right;
    if (a->number != b->number) {
        return a->number < b->number ? -1 : 1;
    }
    return a->sequence > b->sequence ? -1 : a->sequence < b->sequence;
}

/* Every page image of the batch, sorted so that the newest image of each page comes first. */
static batch_page *collect_pages(const repl_entry *entries, size_t count, size_t *total)
{
    *total = 0;
    for (size_t index = 0; index < count; index++) {
        *total += entries[index].frame_count;
    }
    batch_page *pages = malloc((*total ? *total : 1) * sizeof *pages);
    if (pages == NULL) {
        return NULL;
    }
    size_t at = 0;
    for (size_t index = 0; index < count; index++) {
        size_t record = 4 + (size_t)entries[index].page_size;
        for (uint32_t frame = 0; frame < entries[index].frame_count; frame++) {
            const unsigned char *raw = entries[index].frames + frame * record;
            pages[at] = (batch_page){repl_get_le32(raw), at, raw + 4};
            at++;
        }
    }
    qsort(pages, *total, sizeof *pages, compare_batch_pages);
    return pages;
}

/* The batch becomes one commit, so only the newest image of each page is written: a page that
 * every transaction touches (a table's last leaf, say) goes in once rather than once per
 * transaction, which divides what an apply writes and syncs, and what readers then index, by
 * the size of the batch. Pages past the batch's final database size are left out (SQLite's
 * checkpoint would skip them). */
static int add_newest_pages(wal_appender *appender, const batch_page *pages, size_t total,
                            uint32_t db_size)
{
    for (size_t at = 0; at < total; at++) {
        bool older = at > 0 && pages[at].number == pages[at - 1].number;
        if (!older && pages[at].number <= db_size &&
            appender_add(appender, pages[at].number, pages[at].image) != 0) {
            return -1;
        }
    }
    return 0;
}

int repl_apply_entries(repl_apply *apply, const repl_entry *entries, size_t count, char *error,
                       size_t error_size)
{
    for (size_t index = 0; index < count; index++) {
        if (entries[index].page_size != apply->page_size) {
            repl_error(error, error_size, "transaction %llu has %u-byte pages, the database %u",
                       (unsigned long long)entries[index].txid, entries[index].page_size,
                       apply->page_size);
            return -1;
        }
    }
    size_t total = 0;
    batch_page *pages = count > 0 ? collect_pages(entries, count, &total) : NULL;
    wal_appender appender;
    if (pages == NULL || appender_begin(&appender, apply) != 0) {
        free(pages);
        repl_error(error, error_size, "cannot start appending to %s: %m", apply->wal_path);
        return -1;
    }
    uint32_t db_size = entries[count - 1].db_size;
    int added = add_newest_pages(&appender, pages, total, db_size);
    free(pages);
    if (added != 0) {
        repl_error(error, error_size, "cannot write %s: %m", apply->wal_path);
        appender_abort(&appender);
        return -1;
    }
    return appender_commit(&appender, db_size, error, error_size);
}

static uint32_t image_page_size(const unsigned char *header)
{
    uint32_t size = (uint32_t)header[16] << 8 | header[17];
    return size == 1 ? 65536 : size;
}

static int add_image_pages(wal_appender *appender, int fd, uint32_t pages)
{
    uint32_t page_size = appender->apply->page_size;
    uint32_t lock_page = PENDING_BYTE_OFFSET / page_size + 1;
    unsigned char *page = malloc(page_size);
    if (page == NULL) {
        return -1;
    }
    int result = 0;
    for (uint32_t number = 1; number <= pages && result == 0; number++) {
        if (number == lock_page) {
            continue; /* SQLite never uses the page holding the lock bytes */
        }
        if (repl_pread_full(fd, page, page_size, (uint64_t)(number - 1) * page_size) !=
            (long)page_size) {
            result = -1;
        } else {
            result = appender_add(appender, number, page);
        }
    }
    free(page);
    return result;
}

int repl_apply_image(repl_apply *apply, const char *image_path, char *error, size_t error_size)
{
    int fd = open(image_path, O_RDONLY | O_CLOEXEC);
    unsigned char header[100];
    struct stat status;
    if (fd < 0 || fstat(fd, &status) != 0 ||
        repl_pread_full(fd, header, sizeof header, 0) != (long)sizeof header) {
        repl_error(error, error_size, "cannot read the copy %s: %m", image_path);
        if (fd >= 0) {
            (void)close(fd);
        }
        return -1;
    }
    uint32_t page_size = image_page_size(header);
    if (page_size != apply->page_size || status.st_size % page_size != 0) {
        repl_error(error, error_size,
                   "the copy has %u-byte pages and this database %u: move the passive's database "
                   "away and run `ktadmin init-slave`",
                   page_size, apply->page_size);
        (void)close(fd);
        return -1;
    }
    uint32_t pages = (uint32_t)(status.st_size / page_size);
    wal_appender appender;
    int result = -1;
    if (appender_begin(&appender, apply) != 0) {
        repl_error(error, error_size, "cannot start appending to %s: %m", apply->wal_path);
    } else if (add_image_pages(&appender, fd, pages) != 0) {
        repl_error(error, error_size, "cannot copy pages into %s: %m", apply->wal_path);
        appender_abort(&appender);
    } else {
        result = appender_commit(&appender, pages, error, error_size);
    }
    (void)close(fd);
    return result;
}

uint32_t repl_apply_wal_frames(repl_apply *apply)
{
    if (!apply->have_end || apply->end.offset < REPL_WAL_HEADER_BYTES) {
        return 0;
    }
    return (uint32_t)((apply->end.offset - REPL_WAL_HEADER_BYTES) /
                      (REPL_WAL_FRAME_HEADER_BYTES + apply->end.page_size));
}

static bool wal_file_empty(const repl_apply *apply)
{
    struct stat status;
    return stat(apply->wal_path, &status) != 0 ? errno == ENOENT : status.st_size == 0;
}

int repl_apply_checkpoint(repl_apply *apply, uint32_t max_frames)
{
    if (max_frames > 0 ? repl_apply_wal_frames(apply) <= max_frames : wal_file_empty(apply)) {
        return 0;
    }
    /* Readers in long transactions make TRUNCATE wait: give up quickly and try after the next
     * apply rather than hold up the applier. */
    (void)sqlite3_busy_timeout(apply->db, 100);
    char result[64] = "";
    int rc = query_text(apply->db, "PRAGMA wal_checkpoint(TRUNCATE)", result, sizeof result);
    (void)sqlite3_busy_timeout(apply->db, 2000);
    apply->have_end = false;
    apply->restart_wal = false;
    if (rc != SQLITE_OK) {
        repl_log(&apply->logger, KT_REPL_LOG_WARNING, "replication: checkpoint failed: %s",
                 sqlite3_errmsg(apply->db));
        return -1;
    }
    return 0;
}

/* The applier's own checkpoint, once the -wal holds more than `max_frames` frames. RESTART, not
 * TRUNCATE: it returns OK only once every page is in the database file and no reader uses the
 * -wal, and it leaves the file as it is, so the next apply writes a new generation over the same
 * blocks. After a TRUNCATE every apply grew the file again, and every fdatasync that records a
 * new size is a journal commit on the disk where the spool's fsync, which a commit waits on,
 * queues behind it. Readers in long transactions make it wait: it gives up after 100 ms and tries
 * again after the next apply. */
int repl_apply_checkpoint_keeping_wal(repl_apply *apply, uint32_t max_frames)
{
    if (repl_apply_wal_frames(apply) <= max_frames) {
        return 0;
    }
    int in_wal = 0, checkpointed = 0;
    (void)sqlite3_busy_timeout(apply->db, 100);
    int rc = sqlite3_wal_checkpoint_v2(apply->db, NULL, SQLITE_CHECKPOINT_RESTART, &in_wal,
                                       &checkpointed);
    (void)sqlite3_busy_timeout(apply->db, 2000);
    if (rc == SQLITE_BUSY) {
        return 0;
    }
    if (rc != SQLITE_OK) {
        repl_log(&apply->logger, KT_REPL_LOG_WARNING, "replication: checkpoint failed: %s",
                 sqlite3_errmsg(apply->db));
        return -1;
    }
    apply->have_end = false;
    apply->restart_wal = in_wal == checkpointed;
    return 0;
}

/* ---- the applier thread --------------------------------------------------------------------- */

static void free_entries(repl_entry *entries, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        repl_entry_free(&entries[index]);
    }
    free(entries);
}

/* Reads the entries after `applied` up to `last`; checks they continue `applied`. */
static int read_batch(kt_repl *repl, const kt_repl_position *applied, uint64_t last,
                      repl_entry **out, size_t *count)
{
    size_t wanted = (size_t)(last - applied->txid);
    repl_entry *entries = calloc(wanted, sizeof *entries);
    if (entries == NULL) {
        return -1;
    }
    *count = 0;
    size_t bytes = 0;
    /* The cut depends only on the entries, so the batch after a crash covers the one before. */
    for (uint64_t txid = applied->txid + 1; txid <= last && bytes < MAX_BATCH_BYTES; txid++) {
        if (repl_spool_read(repl->spool, txid, &entries[*count]) != 0) {
            free_entries(entries, *count);
            return -1;
        }
        bytes += entries[*count].frames_length;
        (*count)++;
    }
    if (memcmp(entries[0].prev, applied->hash, KT_HASH_BYTES) != 0) {
        free_entries(entries, *count);
        return -1;
    }
    *out = entries;
    return 0;
}

/* The passive keeps only what it has not applied yet: nothing asks it for older entries (the
 * active streams from the passive's tip or its confirmed position, never below what it
 * applied), and a compaction then copies almost nothing. */
static void compact_spool(kt_repl *repl, uint64_t applied)
{
    if (repl_spool_bytes(repl->spool) <= repl->retain_bytes) {
        return;
    }
    if (repl_spool_compact(repl->spool, applied + 1) != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_WARNING, "replication: compacting the spool failed: %m");
    }
}

static int apply_batch(kt_repl *repl, const kt_repl_position *applied, uint64_t last)
{
    repl_entry *entries = NULL;
    size_t count = 0;
    char error[256];
    if (read_batch(repl, applied, last, &entries, &count) != 0 || count == 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: cannot read transactions %llu..%llu from the spool",
                 (unsigned long long)applied->txid + 1, (unsigned long long)last);
        return -1;
    }
    kt_repl_position reached = repl_entry_position(&entries[count - 1]);
    int result = repl_apply_entries(repl->apply, entries, count, error, sizeof error);
    free_entries(entries, count);
    if (result == 0 && repl_spool_note_applied(repl->spool, &reached) != 0) {
        repl_error(error, sizeof error, "cannot record the applied position: %m");
        result = -1;
    }
    if (result != 0) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR, "replication: applying failed: %s", error);
        return -1;
    }
    (void)pthread_mutex_lock(&repl->mutex);
    repl->applied = reached;
    (void)pthread_cond_broadcast(&repl->changed);
    (void)pthread_mutex_unlock(&repl->mutex);
    (void)repl_apply_checkpoint_keeping_wal(repl->apply, REPL_APPLY_MAX_WAL_FRAMES);
    compact_spool(repl, reached.txid);
    return 0;
}

int repl_applier_catch_up(kt_repl *repl)
{
    int result = 0;
    (void)pthread_mutex_lock(&repl->apply_mutex);
    /* What is confirmed now, not what gets confirmed meanwhile: chasing the few confirmations
     * that arrive during an apply made every apply two or three, each with its fsync and index
     * rebuild, all competing with the spool's fsync that commits wait on. */
    uint64_t confirmed = repl_spool_confirmed(repl->spool);
    for (;;) {
        (void)pthread_mutex_lock(&repl->mutex);
        kt_repl_position applied = repl->applied;
        bool usable = repl->apply != NULL && !repl->needs_basecopy && !repl->stopping;
        (void)pthread_mutex_unlock(&repl->mutex);
        if (!usable || confirmed <= applied.txid) {
            break;
        }
        uint64_t last = confirmed - applied.txid > MAX_BATCH_ENTRIES
                            ? applied.txid + MAX_BATCH_ENTRIES
                            : confirmed;
        if (apply_batch(repl, &applied, last) != 0) {
            result = -1;
            break;
        }
    }
    (void)pthread_mutex_unlock(&repl->apply_mutex);
    return result;
}

/* Waits `milliseconds` unless replication stops first (confirmations do not wake it: on the
 * passive only the applier itself and a stop broadcast `changed`). */
static void rest(kt_repl *repl, int milliseconds)
{
    struct timespec pause;
    repl_deadline(&pause, milliseconds);
    (void)pthread_mutex_lock(&repl->mutex);
    while (!repl->stopping && repl_wait_until(&repl->changed, &repl->mutex, &pause)) {
    }
    (void)pthread_mutex_unlock(&repl->mutex);
}

/* The applier runs at background priority (SCHED_IDLE): it competes for the CPU with the
 * receiver, whose acknowledgement every commit waits on, while nothing waits on the applier.
 * Measured on this 2-core machine with both nodes on it (commit_bench, 1 writer): p99 2.5 ms with
 * the applier at normal priority, 1.4 ms with it at SCHED_IDLE, and 12% more commits/s. A
 * thread cannot go back to normal priority without CAP_SYS_NICE (keytrustee-db runs as its own
 * user), so when the CPU is saturated and the applier falls behind by more than APPLY_LAG_ENTRIES,
 * the guard thread, at normal priority, applies instead (one apply_mutex for both). */
#define APPLY_LAG_ENTRIES (4 * MAX_BATCH_ENTRIES)
#define APPLY_GUARD_INTERVAL_MS 1000

static void run_in_background(kt_repl *repl)
{
    struct sched_param parameters = {0};
    int code = pthread_setschedparam(pthread_self(), SCHED_IDLE, &parameters);
    if (code != 0) {
        errno = code;
        repl_log(&repl->logger, KT_REPL_LOG_WARNING,
                 "replication: the applier stays at normal priority (SCHED_IDLE refused: %m)");
    }
}

static void *apply_guard_main(void *argument)
{
    kt_repl *repl = argument;
    for (;;) {
        rest(repl, APPLY_GUARD_INTERVAL_MS);
        (void)pthread_mutex_lock(&repl->mutex);
        bool stop = repl->stopping;
        uint64_t applied = repl->applied.txid;
        (void)pthread_mutex_unlock(&repl->mutex);
        if (stop) {
            return NULL;
        }
        if (repl_spool_confirmed(repl->spool) > applied + APPLY_LAG_ENTRIES) {
            (void)repl_applier_catch_up(repl);
        }
    }
}

static void *applier_main(void *argument)
{
    kt_repl *repl = argument;
    run_in_background(repl);
    for (;;) {
        struct timespec deadline;
        repl_deadline(&deadline, 1000);
        (void)pthread_mutex_lock(&repl->mutex);
        while (!repl->stopping && repl_spool_confirmed(repl->spool) <= repl->applied.txid &&
               repl_wait_until(&repl->apply_wanted, &repl->mutex, &deadline)) {
        }
        bool stop = repl->stopping;
        (void)pthread_mutex_unlock(&repl->mutex);
        if (stop) {
            return NULL;
        }
        /* After a failure, do not spin; after an apply, let confirmations gather so that the
         * next apply (and the index rebuild every reader then does) serves many at once. */
        rest(repl, repl_applier_catch_up(repl) != 0 ? 1000 : APPLY_INTERVAL_MS);
    }
}

int repl_applier_start(kt_repl *repl, char *error, size_t error_size)
{
    if (pthread_create(&repl->applier, NULL, applier_main, repl) != 0) {
        repl_error(error, error_size, "cannot start the replication applier thread");
        return -1;
    }
    repl->applier_started = true;
    if (pthread_create(&repl->apply_guard, NULL, apply_guard_main, repl) != 0) {
        repl_error(error, error_size, "cannot start the replication applier's guard thread");
        return -1;
    }
    repl->apply_guard_started = true;
    return 0;
}

void repl_applier_stop(kt_repl *repl)
{
    (void)pthread_mutex_lock(&repl->mutex);
    repl->stopping = true;
    (void)pthread_cond_broadcast(&repl->changed);
    (void)pthread_cond_broadcast(&repl->apply_wanted);
    (void)pthread_mutex_unlock(&repl->mutex);
    if (repl->applier_started) {
        (void)pthread_join(repl->applier, NULL);
        repl->applier_started = false;
    }
    if (repl->apply_guard_started) {
        (void)pthread_join(repl->apply_guard, NULL);
        repl->apply_guard_started = false;
    }
}
