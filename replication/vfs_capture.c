/*
 * vfs_capture.c — the VFS shim the active's writer opens the database with. It passes every call
 * to SQLite's "unix" VFS and intervenes at one point: the xSync of the -wal file that ends a
 * commit (with synchronous=FULL a commit ends with exactly one, after its last frame; the commit
 * becomes visible only after that xSync returns OK — see SQLite's wal.c, sqlite3WalFrames).
 *
 * At that xSync the shim
 *   1. reads the -wal header; if its salts are those of the generation it knows, the transaction
 *      starts where the last shipped commit frame ended; otherwise the file was restarted after a
 *      checkpoint and the transaction starts right after the new header;
 *   2. reads the frames back from the file from there, stopping at the first frame whose salts or
 *      checksum do not hold, and keeps those up to the last commit frame (not the xWrite calls:
 *      a transaction larger than the page cache spills frames early, and SQLite rewrites their
 *      checksums at commit);
 *   3. hands them to syncrep.c, which ships them, syncs the -wal locally, waits for the passive's
 *      acknowledgement and appends the transaction to the log;
 *   4. on failure, truncates the -wal back to where the transaction started and fsyncs it before
 *      returning the error. Without that, the frames stay in the file with valid checksums and a
 *      crash would bring the "refused" transaction back through SQLite's recovery.
 * An xSync with no new commit frame (a checkpoint's, a header's) is passed through.
 *
 * At startup, before any connection exists, repl_capture_reconcile makes the -wal agree with the
 * log: the log's last entry records where its commit frame ended (salts, offset, checksum). A
 * valid transaction after that point was written but never logged — the process died between
 * writing it and its acknowledgement — so it was never reported committed: it is cut off. More
 * than one such transaction cannot come from a crash (one writer, one commit at a time) and means
 * something else wrote the database: startup refuses rather than guess.
 *
 * If a truncation itself fails, the shim is "poisoned": every later commit is refused until the
 * process restarts and reconciliation cleans the file.
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
    kt_repl *repl;
    sqlite3_vfs vfs;
    sqlite3_vfs *real;
    char name[48];
    bool registered;
    repl_wal_cursor committed; /* where the last committed transaction ends, in the -wal */
    bool poisoned;
    repl_frames frames;        /* reused from commit to commit */
};

typedef struct capture_file {
    sqlite3_file base;
    repl_capture *capture;
    sqlite3_file *real;       /* the unix VFS's file, right after this struct */
    bool is_wal;
} capture_file;

#define CAPTURE_FILE_BYTES ((sizeof(capture_file) + 15) & ~(size_t)15)

static sqlite3_file *real_file(sqlite3_file *file) { return ((capture_file *)file)->real; }

/* ---- the -wal commit path ------------------------------------------------------------------- */

static long read_through(void *context, void *buffer, size_t length, uint64_t offset)
{
    sqlite3_file *file = context;
    int rc = file->pMethods->xRead(file, buffer, (int)length, (sqlite3_int64)offset);
    if (rc == SQLITE_OK) {
        return (long)length;
    }
    if (rc == SQLITE_IOERR_SHORT_READ) {
        return 0; /* unix zero-fills; a partial frame is as good as none */
    }
    return -1;
}

typedef struct local_sync_context {
    sqlite3_file *real;
    int flags;
} local_sync_context;

static int local_sync(void *context)
{
    local_sync_context *sync = context;
    return sync->real->pMethods->xSync(sync->real, sync->flags);
}

static void record_outcome(repl_capture *capture, kt_store_status outcome)
{
    kt_repl *repl = capture->repl;
    (void)pthread_mutex_lock(&repl->mutex);
    repl->have_outcome = true;
    repl->outcome = outcome;
    (void)pthread_mutex_unlock(&repl->mutex);
}

/* Cuts the -wal back to `start` and makes that durable; poisons the shim when it cannot. */
static void truncate_back(capture_file *file, const repl_wal_cursor *start)
{
    sqlite3_file *real = file->real;
    int rc = real->pMethods->xTruncate(real, (sqlite3_int64)start->offset);
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
    file->capture->committed = *start;
}

static int capture_wal_sync(capture_file *file, int flags)
{
    repl_capture *capture = file->capture;
    sqlite3_file *real = file->real;
    if (capture->poisoned) {
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_FSYNC;
    }
    repl_wal_cursor header, end;
    unsigned commits = 0;
    if (repl_wal_read_header(read_through, real, &header) != 0) {
        capture->poisoned = true;
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_FSYNC;
    }
    if (!header.valid) {
        return real->pMethods->xSync(real, flags);
    }
    const repl_wal_cursor *committed = &capture->committed;
    bool same_generation = committed->valid && committed->salt1 == header.salt1 &&
                           committed->salt2 == header.salt2 &&
                           committed->page_size == header.page_size;
    repl_wal_cursor start = same_generation ? *committed : header;
    repl_frames_reset(&capture->frames);
    if (repl_wal_scan(read_through, real, &start, &capture->frames, &end, &commits) != 0) {
        truncate_back(file, &start);
        record_outcome(capture, KT_STORE_REFUSED);
        return SQLITE_IOERR_FSYNC;
    }
    if (commits == 0) {
        return real->pMethods->xSync(real, flags);
    }
    local_sync_context sync = {real, flags};
    kt_store_status outcome = KT_STORE_REFUSED;
    int rc = repl_syncrep_commit(capture->repl, &capture->frames, &end, local_sync, &sync,
                                 &outcome);
    if (rc == SQLITE_OK) {
        capture->committed = end;
        return SQLITE_OK;
    }
    truncate_back(file, &start);
    record_outcome(capture, outcome);
    return rc;
}

/* ---- pass-through io methods ---------------------------------------------------------------- */

static int capture_close(sqlite3_file *file)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xClose(real);
}

static int capture_read(sqlite3_file *file, void *buffer, int amount, sqlite3_int64 offset)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xRead(real, buffer, amount, offset);
}

static int capture_write(sqlite3_file *file, const void *buffer, int amount,
                         sqlite3_int64 offset)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xWrite(real, buffer, amount, offset);
}

static int capture_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xTruncate(real, size);
}

static int capture_sync(sqlite3_file *file, int flags)
{
    capture_file *capture = (capture_file *)file;
    if (capture->is_wal) {
        return capture_wal_sync(capture, flags);
    }
    return capture->real->pMethods->xSync(capture->real, flags);
}

static int capture_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    sqlite3_file *real = real_file(file);
    return real->pMethods->xFileSize(real, size);
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

int repl_capture_register(kt_repl *repl, char *error, size_t error_size)
{
    static int instance;
    repl_capture *capture = calloc(1, sizeof *capture);
    sqlite3_vfs *real = sqlite3_vfs_find("unix");
    if (capture == NULL || real == NULL || real->iVersion < 2) {
        free(capture);
        repl_error(error, error_size, "cannot set up the replication VFS over SQLite's unix VFS");
        return -1;
    }
    capture->repl = repl;
    capture->real = real;
    capture->committed = repl->capture ? repl->capture->committed : capture->committed;
    (void)snprintf(capture->name, sizeof capture->name, "keytrustee-repl-%d",
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
    if (sqlite3_vfs_register(vfs, 0) != SQLITE_OK) {
        free(capture);
        repl_error(error, error_size, "cannot register the replication VFS");
        return -1;
    }
    capture->registered = true;
    free(repl->capture); /* the reconciliation's placeholder, if any */
    repl->capture = capture;
    return 0;
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

/* Whether another process has the database open: SQLite's unix VFS holds a shared lock on the
 * -shm's "DMS" byte (offset 128) for as long as a connection is open. Cutting the -wal under such
 * a connection would pull frames from under its wal-index. F_GETLK only asks; and this process
 * holds no lock on the file yet (reconciliation runs before any connection opens), so closing
 * the descriptor releases nothing. */
static bool database_in_use(const kt_repl *repl)
{
    size_t size = strlen(repl->database_path) + sizeof "-shm";
    char *shm_path = malloc(size);
    if (shm_path == NULL) {
        return true;
    }
    (void)snprintf(shm_path, size, "%s-shm", repl->database_path);
    int fd = open(shm_path, O_RDWR | O_CLOEXEC);
    free(shm_path);
    if (fd < 0) {
        return false;
    }
    struct flock probe = {0};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    probe.l_start = 128;
    probe.l_len = 1;
    bool in_use = fcntl(fd, F_GETLK, &probe) != 0 || probe.l_type != F_UNLCK;
    (void)close(fd);
    return in_use;
}

static int reconcile_file(kt_repl *repl, int fd, repl_wal_cursor *committed, char *error,
                          size_t error_size)
{
    repl_wal_cursor header, from, end;
    unsigned commits = 0;
    if (repl_wal_read_header(repl_wal_read_fd, &fd, &header) != 0) {
        repl_error(error, error_size, "cannot read %s: %m", repl->wal_path);
        return -1;
    }
    memset(committed, 0, sizeof *committed);
    if (!header.valid) {
        return 0;
    }
    repl_wal_cursor logged = repl_spool_tip_origin(repl->spool);
    if (logged_end(fd, &logged, &header, &from, error, error_size) != 0) {
        return -1;
    }
    if (repl_wal_scan(repl_wal_read_fd, &fd, &from, NULL, &end, &commits) != 0) {
        repl_error(error, error_size, "cannot read %s: %m", repl->wal_path);
        return -1;
    }
    *committed = from;
    if (commits == 0) {
        return 0;
    }
    if (commits > 1) {
        repl_error(error, error_size,
                   "%s holds %u committed transactions that the replication log does not; "
                   "something other than keytrustee-db wrote the database",
                   repl->wal_path, commits);
        return -1;
    }
    if (database_in_use(repl)) {
        repl_error(error, error_size,
                   "%s holds a transaction that was never acknowledged, and another process has "
                   "the database open; stop it and start again",
                   repl->wal_path);
        return -1;
    }
    if (ftruncate(fd, (off_t)from.offset) != 0 || fsync(fd) != 0) {
        repl_error(error, error_size, "cannot truncate %s: %m", repl->wal_path);
        return -1;
    }
    repl_log(&repl->logger, KT_REPL_LOG_WARNING,
             "replication: removed a transaction from the -wal that was written but never "
             "acknowledged (the process stopped during its commit)");
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
