/*
 * basecopy.c — full copies of the database (PostgreSQL's pg_basebackup plays this part), and the
 * content checksum that says two copies hold the same thing.
 *
 * A consistent snapshot at a known position (the active)
 *   A read connection takes SQLite's WAL write lock (xShmLock, as apply.c does). While it holds
 *   it no write transaction can be in progress, so every commit whose xSync returned is visible
 *   and nothing else is: the log's tip is exactly the visible state. It starts a read transaction
 *   (the snapshot), releases the lock (the writer waited a few milliseconds at most), and copies
 *   the snapshot page by page with the backup API into a temporary file, which is then streamed:
 *   BASECOPY_BEGIN (epoch, position, size, page size), CHUNKs of 1 MiB, BASECOPY_END (BLAKE2b of
 *   the whole file).
 *
 * Receiving (the passive, or `ktadmin init-slave`)
 *   Written to a temporary file in the state directory, its hash checked, fsynced, then opened
 *   and checked with PRAGMA integrity_check. Only then is it installed:
 *     - no database yet: stale -wal and -shm files are removed (their frames could otherwise be
 *       replayed onto the copy), the copy is renamed into place, the directory fsynced;
 *     - a live database: its pages are applied through the -wal as one commit (apply.c), so
 *       readers keep their snapshots and a crash leaves either the old content or the new.
 *   The state file says "base copy pending" from before the install until the log has been reset
 *   to the copy's position: a crash in between makes the node ask for a new copy.
 *
 * The checksum: BLAKE2b-256 over every page of the latest committed content, page 1's bytes 24-27
 * (file change counter) and 92-95 (version-valid-for) zeroed — they count local writes, and the
 * backup API sets them on a copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/internal.h"

#define CHUNK_BYTES (1u << 20)
#define WAL_WRITE_LOCK 0
#define LOCK_TIMEOUT_MS 5000

/* ---- snapshot (active) ---------------------------------------------------------------------- */

static int lock_writer(sqlite3_file *file)
{
    int64_t deadline = repl_now_ms() + LOCK_TIMEOUT_MS;
    for (;;) {
        int rc = file->pMethods->xShmLock(file, WAL_WRITE_LOCK, 1,
                                          SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc != SQLITE_BUSY || repl_now_ms() > deadline) {
            return rc;
        }
        repl_sleep_ms(1);
    }
}

static void unlock_writer(sqlite3_file *file)
{
    (void)file->pMethods->xShmLock(file, WAL_WRITE_LOCK, 1,
                                   SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

/* Starts a read transaction on `source` while no write transaction can run, and reads the log's
 * tip then: the snapshot's position. */
static int begin_snapshot(kt_repl *repl, sqlite3 *source, kt_repl_position *position,
                          uint32_t *schema_cookie)
{
    sqlite3_file *file = NULL;
    int rc = sqlite3_exec(source, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_file_control(source, "main", SQLITE_FCNTL_FILE_POINTER, &file);
    }
    if (rc != SQLITE_OK || file == NULL || file->pMethods == NULL ||
        file->pMethods->iVersion < 2) {
        return rc != SQLITE_OK ? rc : SQLITE_ERROR;
    }
    rc = lock_writer(file);
    if (rc != SQLITE_OK) {
        return rc;
    }
    *position = repl_spool_tip(repl->spool);
    rc = sqlite3_exec(source, "BEGIN; SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    unlock_writer(file);
    sqlite3_stmt *statement = NULL;
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(source, "PRAGMA schema_version", -1, &statement, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(statement) == SQLITE_ROW ? SQLITE_OK : SQLITE_ERROR;
        *schema_cookie = (uint32_t)sqlite3_column_int64(statement, 0);
    }
    (void)sqlite3_finalize(statement);
    return rc;
}

/* The backup API bumps the copy's schema cookie (so that its other connections reload the
 * schema); put the source's back, so that the copy holds exactly the source's content. */
static int restore_schema_cookie(const char *path, uint32_t schema_cookie)
{
    unsigned char bytes[4];
    repl_put_be32(bytes, schema_cookie);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int result = fd >= 0 && repl_pwrite_all(fd, bytes, sizeof bytes, 40) == 0 ? 0 : -1;
    if (fd >= 0) {
        (void)close(fd);
    }
    return result;
}

int repl_basecopy_snapshot(kt_repl *repl, const char *snapshot_path, kt_repl_position *position,
                           char *error, size_t error_size)
{
    sqlite3 *source = NULL, *copy = NULL;
    uint32_t schema_cookie = 0;
    (void)unlink(snapshot_path);
    int rc = sqlite3_open_v2(repl->database_path, &source, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_busy_timeout(source, 5000);
    }
    if (rc == SQLITE_OK) {
        rc = begin_snapshot(repl, source, position, &schema_cookie);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_open_v2(snapshot_path, &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                             NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_backup *backup = sqlite3_backup_init(copy, "main", source, "main");
        if (backup == NULL) {
            rc = sqlite3_errcode(copy);
        } else {
            rc = sqlite3_backup_step(backup, -1);
            int finished = sqlite3_backup_finish(backup);
            rc = rc == SQLITE_DONE ? finished : rc;
        }
    }
    if (rc != SQLITE_OK) {
        repl_error(error, error_size, "cannot take a snapshot of %s: %s", repl->database_path,
                   sqlite3_errstr(rc));
    }
    (void)sqlite3_close(copy);
    (void)sqlite3_exec(source, "COMMIT", NULL, NULL, NULL);
    (void)sqlite3_close(source);
    if (rc == SQLITE_OK && restore_schema_cookie(snapshot_path, schema_cookie) != 0) {
        repl_error(error, error_size, "cannot write the snapshot %s: %m", snapshot_path);
        return -1;
    }
    return rc == SQLITE_OK ? 0 : -1;
}

/* ---- sending -------------------------------------------------------------------------------- */

static uint32_t file_page_size(int fd)
{
    unsigned char header[100];
    if (repl_pread_full(fd, header, sizeof header, 0) != (long)sizeof header) {
        return 0;
    }
    uint32_t size = (uint32_t)header[16] << 8 | header[17];
    return size == 1 ? 65536 : size;
}

static int send_chunks(repl_channel *channel, int fd, uint64_t size, int timeout_ms,
                       unsigned char hash[KT_HASH_BYTES])
{
    unsigned char *chunk = malloc(CHUNK_BYTES);
    if (chunk == NULL) {
        return -1;
    }
    kt_hash_state state;
    kt_hash_init(&state);
    int result = 0;
    for (uint64_t offset = 0; offset < size && result == 0; offset += CHUNK_BYTES) {
        size_t length = size - offset < CHUNK_BYTES ? (size_t)(size - offset) : CHUNK_BYTES;
        if (repl_pread_full(fd, chunk, length, offset) != (long)length) {
            result = -1;
            break;
        }
        kt_hash_update(&state, chunk, length);
        result = repl_channel_send(channel, REPL_MSG_BASECOPY_CHUNK, chunk, length, timeout_ms);
    }
    kt_hash_final(&state, hash);
    free(chunk);
    return result;
}

int repl_basecopy_send(kt_repl *repl, repl_channel *channel, char *error, size_t error_size,
                       kt_repl_position *sent_position)
{
    char name[80];
    static unsigned counter;
    (void)snprintf(name, sizeof name, "keytrustee-repl-snapshot-%u.tmp",
                   __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST));
    char *path = repl_path_join(repl->state_directory, name);
    if (path == NULL) {
        repl_error(error, error_size, "out of memory");
        return -1;
    }
    repl_msg_basecopy_begin begin = {0};
    int result = repl_basecopy_snapshot(repl, path, &begin.position, error, error_size);
    int fd = result == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat status;
    if (result == 0 && (fd < 0 || fstat(fd, &status) != 0)) {
        repl_error(error, error_size, "cannot read the snapshot %s: %m", path);
        result = -1;
    }
    if (result == 0) {
        (void)pthread_mutex_lock(&repl->mutex);
        begin.epoch = repl->epoch;
        (void)pthread_mutex_unlock(&repl->mutex);
        begin.size = (uint64_t)status.st_size;
        begin.page_size = file_page_size(fd);
        repl_buffer message = {0};
        repl_encode_basecopy_begin(&message, &begin);
        unsigned char hash[KT_HASH_BYTES];
        int timeout = repl->peer_timeout_ms * 10;
        result = message.failed ? -1
                                : repl_channel_send(channel, REPL_MSG_BASECOPY_BEGIN, message.data,
                                                    message.length, timeout);
        repl_buffer_free(&message);
        if (result == 0) {
            result = send_chunks(channel, fd, begin.size, timeout, hash);
        }
        if (result == 0) {
            result = repl_channel_send(channel, REPL_MSG_BASECOPY_END, hash, sizeof hash, timeout);
        }
        if (result != 0) {
            repl_error(error, error_size, "%s", repl_channel_error(channel));
        }
    }
    if (fd >= 0) {
        (void)close(fd);
    }
    (void)unlink(path);
    free(path);
    *sent_position = begin.position;
    return result;
}

/* ---- receiving ------------------------------------------------------------------------------ */

static int receive_chunks(repl_channel *channel, int fd, uint64_t size, int timeout_ms,
                          unsigned char hash[KT_HASH_BYTES], char *error, size_t error_size)
{
    kt_hash_state state;
    kt_hash_init(&state);
    uint64_t received = 0;
    int result = -1;
    for (;;) {
        uint8_t type = 0;
        unsigned char *payload = NULL;
        size_t length = 0;
        int got = repl_channel_receive(channel, &type, &payload, &length, timeout_ms, timeout_ms);
        if (got != 1) {
            repl_error(error, error_size, "the copy stopped arriving: %s",
                       got < 0 ? repl_channel_error(channel) : "timed out");
            break;
        }
        if (type == REPL_MSG_BASECOPY_CHUNK && length <= size - received &&
            repl_pwrite_all(fd, payload, length, received) == 0) {
            kt_hash_update(&state, payload, length);
            received += length;
            free(payload);
            continue;
        }
        bool end = type == REPL_MSG_BASECOPY_END && length == KT_HASH_BYTES && received == size;
        if (end) {
            memcpy(hash, payload, KT_HASH_BYTES);
            result = 0;
        } else {
            repl_error(error, error_size, "the copy arrived damaged or out of order");
        }
        free(payload);
        break;
    }
    unsigned char computed[KT_HASH_BYTES];
    kt_hash_final(&state, computed);
    if (result == 0 && !kt_equal(computed, hash, KT_HASH_BYTES)) {
        repl_error(error, error_size, "the copy does not match its checksum");
        result = -1;
    }
    return result;
}

int repl_basecopy_verify(const char *path, uint32_t *page_size, char *error, size_t error_size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *statement = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    const char *verdict = NULL;
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &statement, NULL);
    }
    if (rc == SQLITE_OK && sqlite3_step(statement) == SQLITE_ROW) {
        verdict = (const char *)sqlite3_column_text(statement, 0);
    }
    bool good = verdict != NULL && strcmp(verdict, "ok") == 0;
    if (!good) {
        repl_error(error, error_size, "the copy fails its integrity check: %s",
                   verdict ? verdict : (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    }
    (void)sqlite3_finalize(statement);
    statement = NULL;
    *page_size = 0;
    if (good && sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &statement, NULL) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        *page_size = (uint32_t)sqlite3_column_int(statement, 0);
    }
    (void)sqlite3_finalize(statement);
    (void)sqlite3_close(db);
    return good ? 0 : -1;
}

static void remove_companions(const char *path)
{
    static const char *const suffixes[] = {"-wal", "-shm", "-journal"};
    for (size_t index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++) {
        char companion[4096];
        if (snprintf(companion, sizeof companion, "%s%s", path, suffixes[index]) <
            (int)sizeof companion) {
            (void)unlink(companion);
        }
    }
}

int repl_basecopy_receive(repl_channel *channel, const unsigned char *begin_payload,
                          size_t begin_length, const char *temp_path,
                          repl_msg_basecopy_begin *begin, int timeout_ms, char *error,
                          size_t error_size)
{
    if (repl_decode_basecopy_begin(begin_payload, begin_length, begin) != 0) {
        repl_error(error, error_size, "the copy's announcement is malformed");
        return -1;
    }
    remove_companions(temp_path);
    int fd = open(temp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        repl_error(error, error_size, "cannot create %s: %m", temp_path);
        return -1;
    }
    unsigned char hash[KT_HASH_BYTES];
    int result = receive_chunks(channel, fd, begin->size, timeout_ms, hash, error, error_size);
    if (result == 0 && fsync(fd) != 0) {
        repl_error(error, error_size, "cannot fsync %s: %m", temp_path);
        result = -1;
    }
    if (close(fd) != 0 && result == 0) {
        repl_error(error, error_size, "cannot write %s: %m", temp_path);
        result = -1;
    }
    uint32_t page_size = 0;
    if (result == 0 && repl_basecopy_verify(temp_path, &page_size, error, error_size) != 0) {
        result = -1;
    }
    if (result == 0 && page_size != begin->page_size) {
        repl_error(error, error_size, "the copy's page size is not the announced one");
        result = -1;
    }
    remove_companions(temp_path);
    if (result != 0) {
        (void)unlink(temp_path);
    }
    return result;
}

/* Renames a verified copy into place where there is no database. */
static int install_file(const char *temp_path, const char *database_path, char *error,
                        size_t error_size)
{
    remove_companions(database_path);
    if (rename(temp_path, database_path) != 0 || repl_fsync_directory_of(database_path) != 0) {
        repl_error(error, error_size, "cannot move the copy to %s: %m", database_path);
        return -1;
    }
    return 0;
}

static int install_locked(kt_repl *repl, const char *temp_path,
                          const repl_msg_basecopy_begin *begin, char *error, size_t error_size)
{
    repl_state_file state = {begin->epoch, begin->position, true};
    if (repl_state_save(repl->state_path, &state, error, error_size) != 0) {
        return -1;
    }
    int result;
    if (repl->apply == NULL && access(repl->database_path, F_OK) != 0) {
        result = install_file(temp_path, repl->database_path, error, error_size);
        if (result == 0) {
            result = repl_apply_open(&repl->apply, repl->database_path, &repl->logger, error,
                                     error_size);
        }
    } else {
        result = repl->apply != NULL ? 0
                                     : repl_apply_open(&repl->apply, repl->database_path,
                                                       &repl->logger, error, error_size);
        if (result == 0) {
            result = repl_apply_image(repl->apply, temp_path, error, error_size);
        }
        (void)unlink(temp_path);
    }
    if (result == 0 && repl_spool_reset(repl->spool, &begin->position, NULL) != 0) {
        repl_error(error, error_size, "cannot reset the replication log: %m");
        result = -1;
    }
    if (result == 0) {
        state.basecopy_pending = false;
        result = repl_state_save(repl->state_path, &state, error, error_size);
    }
    return result;
}

int repl_basecopy_install(kt_repl *repl, const char *temp_path,
                          const repl_msg_basecopy_begin *begin, char *error, size_t error_size)
{
    (void)pthread_mutex_lock(&repl->apply_mutex);
    (void)pthread_mutex_lock(&repl->mutex);
    repl->needs_basecopy = true;
    (void)pthread_mutex_unlock(&repl->mutex);
    int result = install_locked(repl, temp_path, begin, error, error_size);
    if (result == 0) {
        (void)pthread_mutex_lock(&repl->mutex);
        repl->needs_basecopy = false;
        repl->applied = begin->position;
        repl->epoch = begin->epoch;
        (void)pthread_cond_broadcast(&repl->changed);
        (void)pthread_mutex_unlock(&repl->mutex);
    }
    (void)pthread_mutex_unlock(&repl->apply_mutex);
    return result;
}

/* ---- `ktadmin init-slave` ------------------------------------------------------------------- */

static int fetch_copy(const kt_repl_config *config, repl_channel *channel, const char *temp_path,
                      repl_msg_basecopy_begin *begin, char *error, size_t error_size)
{
    uint8_t type = 0;
    unsigned char *payload = NULL;
    size_t length = 0;
    int got = repl_channel_receive(channel, &type, &payload, &length, 120000, 30000);
    if (got != 1 || type != REPL_MSG_BASECOPY_BEGIN) {
        repl_error(error, error_size, "the active did not send a copy: %s",
                   got < 0 ? repl_channel_error(channel) : "no answer");
        free(payload);
        return -1;
    }
    int result = repl_basecopy_receive(channel, payload, length, temp_path, begin, 30000, error,
                                       error_size);
    free(payload);
    (void)config;
    return result;
}

static int create_node_files(const kt_repl_config *config, const repl_msg_basecopy_begin *begin,
                             char *error, size_t error_size)
{
    char *spool_path = repl_path_join(config->state_directory, "keytrustee-repl.log");
    char *state_path = repl_path_join(config->state_directory, "keytrustee-repl.state");
    int result = -1;
    repl_logger logger = {config->log, config->log_context};
    repl_spool *spool = NULL;
    if (spool_path != NULL && state_path != NULL) {
        (void)unlink(spool_path);
        result = repl_spool_open(&spool, spool_path, &begin->position, NULL, &logger, error,
                                 error_size);
        repl_spool_close(spool);
    }
    if (result == 0) {
        repl_state_file state = {begin->epoch, begin->position, false};
        result = repl_state_save(state_path, &state, error, error_size);
    }
    free(spool_path);
    free(state_path);
    return result;
}

int kt_repl_base_copy(const kt_repl_config *config, char *error, size_t error_size)
{
    if (config->database_path == NULL || config->state_directory == NULL ||
        config->master_host == NULL || config->pair_key == NULL ||
        config->pair_key->length != KT_REPL_PAIR_KEY_BYTES) {
        repl_error(error, error_size, "a base copy needs the master, the pair key, the database "
                                      "path and the state directory");
        return -1;
    }
    if (access(config->database_path, F_OK) == 0) {
        repl_error(error, error_size, "%s already exists: a base copy goes into an empty "
                                      "directory",
                   config->database_path);
        return -1;
    }
    const char *port = config->master_port ? config->master_port : KT_REPL_DEFAULT_PORT;
    repl_channel *channel = NULL;
    if (kt_crypto_init() != 0 ||
        repl_channel_connect(&channel, config->master_host, port, config->pair_key,
                             REPL_PURPOSE_BASECOPY, 5000, error, error_size) != 0) {
        return -1;
    }
    char *temp_path = repl_path_join(config->state_directory, "keytrustee-repl-basecopy.tmp");
    repl_msg_basecopy_begin begin;
    int result = temp_path ? fetch_copy(config, channel, temp_path, &begin, error, error_size) : -1;
    if (result == 0) {
        result = install_file(temp_path, config->database_path, error, error_size);
    }
    if (result == 0) {
        result = create_node_files(config, &begin, error, error_size);
    }
    if (result == 0) {
        repl_msg_ack ack = {begin.position, begin.position.txid};
        repl_buffer message = {0};
        repl_encode_ack(&message, &ack);
        (void)repl_channel_send(channel, REPL_MSG_ACK, message.data, message.length, 5000);
        repl_buffer_free(&message);
    }
    free(temp_path);
    repl_channel_close(channel);
    return result;
}

/* ---- the content checksum ------------------------------------------------------------------- */

/* ---- the content checksum ---------------------------------------------------------------- */

/* Where the newest committed image of each page is: `wal_offsets[n]` is the offset of page n's
 * data in the -wal, 0 when it is in the database file. */
typedef struct content_map {
    uint64_t *wal_offsets;
    uint32_t pages;       /* database size after the last commit in the -wal (0: none) */
    uint32_t capacity;
} content_map;

static int map_page(content_map *map, uint32_t number, uint64_t offset)
{
    if (number >= map->capacity) {
        uint32_t capacity = number + 1 > 2 * map->capacity ? number + 1 : 2 * map->capacity;
        uint64_t *grown = realloc(map->wal_offsets, (size_t)capacity * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        memset(grown + map->capacity, 0, (size_t)(capacity - map->capacity) * sizeof *grown);
        map->wal_offsets = grown;
        map->capacity = capacity;
    }
    map->wal_offsets[number] = offset;
    return 0;
}

/* Walks the -wal's committed transactions one at a time (frames are contiguous from the start of
 * each transaction, so the k-th frame's place is known). */
static int map_wal(int fd, uint32_t page_size, content_map *map)
{
    repl_wal_cursor cursor;
    if (fd < 0) {
        return 0;
    }
    if (repl_wal_read_header(repl_wal_read_fd, &fd, &cursor) != 0) {
        return -1;
    }
    if (!cursor.valid || cursor.page_size != page_size) {
        return 0;
    }
    uint64_t frame_bytes = REPL_WAL_FRAME_HEADER_BYTES + (uint64_t)page_size;
    repl_frames frames = {0};
    int result = 0;
    for (;;) {
        repl_wal_scan_result found;
        repl_frames_reset(&frames);
        result = repl_wal_scan(repl_wal_read_fd, &fd, &cursor, &frames, &found.end, &found.commits);
        if (result != 0 || found.commits == 0) {
            break;
        }
        for (uint32_t index = 0; index < frames.count && result == 0; index++) {
            uint64_t data = cursor.offset + index * frame_bytes + REPL_WAL_FRAME_HEADER_BYTES;
            result = map_page(map, repl_frame_page_number(&frames, index), data);
        }
        map->pages = frames.db_size;
        cursor = found.end;
    }
    repl_frames_free(&frames);
    return result;
}

static uint32_t header_page_size(const unsigned char *header)
{
    uint32_t size = (uint32_t)header[16] << 8 | header[17];
    return size == 1 ? 65536 : size;
}

/* The database's size in pages when no -wal commit says otherwise: SQLite's rule (the header's
 * size when it is valid for this version of the file, else the file's length). */
static uint32_t file_pages(const unsigned char *header, uint64_t file_size, uint32_t page_size)
{
    uint32_t in_header = repl_get_be32(header + 28);
    bool valid = in_header != 0 && memcmp(header + 24, header + 92, 4) == 0;
    return valid ? in_header : (uint32_t)(file_size / page_size);
}

/* Hashes pages 1..pages: from the -wal where it has them, else from the database file (zeros past
 * its end and for the lock page, which SQLite never writes). */
static int hash_pages(int database, int wal, const content_map *map, uint32_t page_size,
                      uint32_t pages, unsigned char hash[KT_HASH_BYTES])
{
    unsigned char *page = malloc(page_size);
    if (page == NULL) {
        return -1;
    }
    uint32_t lock_page = (uint32_t)(0x40000000u / page_size + 1);
    kt_hash_state state;
    kt_hash_init(&state);
    int result = 0;
    for (uint32_t number = 1; number <= pages && result == 0; number++) {
        uint64_t in_wal = number < map->capacity ? map->wal_offsets[number] : 0;
        long got = number == lock_page ? 0
                   : in_wal != 0      ? repl_pread_full(wal, page, page_size, in_wal)
                                      : repl_pread_full(database, page, page_size,
                                                        (uint64_t)(number - 1) * page_size);
        if (got < 0) {
            result = -1;
            break;
        }
        memset(page + got, 0, page_size - (size_t)got);
        if (number == 1) { /* the change counters differ between copies of the same content */
            memset(page + 24, 0, 4);
            memset(page + 92, 0, 4);
        }
        kt_hash_update(&state, page, page_size);
    }
    kt_hash_final(&state, hash);
    free(page);
    return result;
}

/* Reads the content as of the latest commit, page by page (sqlite3_serialize cannot hold a
 * database past 2 GiB). A read transaction held meanwhile keeps a checkpoint from rewriting the
 * -wal under the reads. */
int kt_repl_database_checksum(const char *database_path, char out[KT_REPL_HASH_HEX_CHARS + 1],
                              char *error, size_t error_size)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(database_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_busy_timeout(db, 5000);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "BEGIN; SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    }
    char *wal_path = sqlite3_mprintf("%s-wal", database_path);
    int database = open(database_path, O_RDONLY | O_CLOEXEC);
    int wal = wal_path ? open(wal_path, O_RDONLY | O_CLOEXEC) : -1;
    unsigned char header[100];
    struct stat status;
    content_map map = {NULL, 0, 0};
    int result = -1;
    if (rc == SQLITE_OK && database >= 0 && fstat(database, &status) == 0 &&
        repl_pread_full(database, header, sizeof header, 0) == (long)sizeof header) {
        uint32_t page_size = header_page_size(header);
        uint32_t pages = 0;
        if (map_wal(wal, page_size, &map) == 0) {
            pages = map.pages ? map.pages : file_pages(header, (uint64_t)status.st_size, page_size);
            kt_repl_position digest = {0, 0, {0}};
            result = hash_pages(database, wal, &map, page_size, pages, digest.hash);
            kt_repl_position_hex(&digest, out);
        }
    }
    if (result != 0) {
        repl_error(error, error_size, "cannot read %s: %s", database_path,
                   rc != SQLITE_OK ? sqlite3_errstr(rc) : strerror(errno));
    }
    free(map.wal_offsets);
    sqlite3_free(wal_path);
    if (database >= 0) {
        (void)close(database);
    }
    if (wal >= 0) {
        (void)close(wal);
    }
    (void)sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    (void)sqlite3_close(db);
    return result;
}
