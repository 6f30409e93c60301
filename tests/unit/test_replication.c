/*
 * test_replication.c — replication/'s pieces in one process, on real files and real sockets:
 * reading frames back from a -wal (spilled transactions, WAL resets), the spool's recovery of a
 * torn tail, the channel's authentication and its refusal of altered messages, applying into a
 * second database under an open reader, refused commits leaving no trace in the -wal, epoch
 * fencing, and a whole active/passive pair on loopback.
 *
 * A "crash" is emulated by copying the database and its -wal while the writer is still open:
 * what the copy shows after SQLite's recovery is what a kill -9 at that moment would leave.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "replication/internal.h"
#include "tests/unit/unit.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *walk)
{
    (void)status;
    (void)flag;
    (void)walk;
    return remove(path);
}

typedef struct scratch {
    char dir[64];
    char db[128];
    char wal[128];
} scratch;

static void scratch_make(scratch *place)
{
    (void)snprintf(place->dir, sizeof place->dir, "/tmp/kt-repl-unit.XXXXXX");
    if (mkdtemp(place->dir) == NULL) {
        abort();
    }
    (void)snprintf(place->db, sizeof place->db, "%s/keytrustee.db", place->dir);
    (void)snprintf(place->wal, sizeof place->wal, "%s/keytrustee.db-wal", place->dir);
}

static void scratch_remove(const scratch *place)
{
    (void)nftw(place->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int silence_count;
static void quiet_log(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    silence_count++;
    if (getenv("KT_REPL_TEST_VERBOSE") != NULL) {
        fprintf(stderr, "    [log %d] %s\n", level, message);
    }
}

static const repl_logger logger_of_tests = {quiet_log, NULL};

static kt_secret *test_key(unsigned char fill)
{
    kt_secret *key = kt_secret_new(32);
    memset(key->bytes, fill, 32);
    return key;
}

static kt_repl_config base_config(const scratch *place, kt_repl_role role, const kt_secret *key)
{
    kt_repl_config config;
    memset(&config, 0, sizeof config);
    config.role = role;
    config.database_path = place->db;
    config.state_directory = place->dir;
    config.pair_key = key;
    config.log = quiet_log;
    config.listen_host = "127.0.0.1";
    config.master_host = "127.0.0.1";
    config.ack_timeout_ms = 1000;
    return config;
}

static sqlite3 *open_writer(const char *path, const char *vfs, int cache_pages)
{
    sqlite3 *db = NULL;
    char sql[256];
    (void)snprintf(sql, sizeof sql,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;"
                   " PRAGMA cache_size=%d;"
                   " CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB)",
                   cache_pages);
    int enabled = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &enabled) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "    open_writer: %s\n", db ? sqlite3_errmsg(db) : "?");
        sqlite3_close(db);
        return NULL;
    }
    (void)sqlite3_busy_timeout(db, 5000);
    return db;
}

static int put(sqlite3 *db, const char *key, int rows)
{
    char sql[256];
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int row = 0; rc == SQLITE_OK && row < rows; row++) {
        (void)snprintf(sql, sizeof sql,
                       "INSERT OR REPLACE INTO kv VALUES ('%s-%d', randomblob(%d))", key, row,
                       rows > 1 ? 2048 : 40);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(db)) {
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

static long long count_rows(const char *path, const char *like)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *statement = NULL;
    long long count = -1;
    char sql[128];
    (void)snprintf(sql, sizeof sql, "SELECT count(*) FROM kv WHERE key LIKE '%s%%'", like);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &statement, NULL) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        count = sqlite3_column_int64(statement, 0);
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return count;
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char buffer[65536];
    ssize_t got;
    int result = in >= 0 && out >= 0 ? 0 : -1;
    while (result == 0 && (got = read(in, buffer, sizeof buffer)) > 0) {
        result = repl_write_all(out, buffer, (size_t)got);
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return result;
}

/* What a kill -9 now would leave: the database and -wal copied aside, opened fresh. */
static long long rows_after_crash(const scratch *place, const char *like)
{
    scratch crash;
    scratch_make(&crash);
    long long count = -1;
    if (copy_file(place->db, crash.db) == 0 &&
        (access(place->wal, F_OK) != 0 || copy_file(place->wal, crash.wal) == 0)) {
        count = count_rows(crash.db, like);
    }
    scratch_remove(&crash);
    return count;
}

static void checksum_of(const char *path, char out[KT_REPL_HASH_HEX_CHARS + 1])
{
    char error[256];
    if (kt_repl_database_checksum(path, out, error, sizeof error) != 0) {
        fprintf(stderr, "    checksum: %s\n", error);
        snprintf(out, KT_REPL_HASH_HEX_CHARS + 1, "error");
    }
}

static unsigned commits_in_wal(const char *wal_path)
{
    repl_wal_cursor end;
    unsigned commits = 0;
    if (repl_wal_committed_end(wal_path, &end, &commits) != 0) {
        return 9999;
    }
    return commits;
}

/* ---- positions, messages, state ------------------------------------------------------------- */

TEST(crc32c_matches_the_standard_and_chains)
{
    CHECK_EQ_INT(repl_crc32c(0, "123456789", 9), 0xE3069283u); /* RFC 3720's check value */
    unsigned char data[10007];
    kt_random(data, sizeof data);
    uint32_t whole = repl_crc32c(0, data, sizeof data);
    for (size_t cut = 0; cut < sizeof data; cut += 997) { /* odd lengths, unaligned starts */
        CHECK_EQ_INT(repl_crc32c(repl_crc32c(0, data, cut), data + cut, sizeof data - cut), whole);
    }
}

TEST(chain_hash_binds_content_and_history)
{
    unsigned char frames[4 + 512];
    memset(frames, 7, sizeof frames);
    repl_put_le32(frames, 1);
    repl_entry entry = {1, 1, {0}, {0}, 512, 1, 1, frames, sizeof frames, {0}, NULL};
    unsigned char first[KT_HASH_BYTES], second[KT_HASH_BYTES];
    repl_chain_hash(&entry, first);
    frames[100] ^= 1;
    repl_chain_hash(&entry, second);
    CHECK(memcmp(first, second, KT_HASH_BYTES) != 0);
    frames[100] ^= 1;
    entry.prev[0] = 1;
    repl_chain_hash(&entry, second);
    CHECK(memcmp(first, second, KT_HASH_BYTES) != 0);
}

TEST(entry_and_messages_round_trip_and_reject_damage)
{
    unsigned char frames[2 * (4 + 1024)];
    kt_random(frames, sizeof frames);
    repl_put_le32(frames, 3);
    repl_put_le32(frames + 4 + 1024, 9);
    repl_entry entry = {2, 5, {1}, {0}, 1024, 9, 2, frames, sizeof frames, {0}, NULL};
    repl_chain_hash(&entry, entry.hash);
    repl_msg_tx tx = {true, entry};
    repl_buffer buffer = {0};
    repl_encode_tx(&buffer, &tx);
    repl_msg_tx decoded;
    REQUIRE(repl_decode_tx(buffer.data, buffer.length, &decoded) == 0);
    CHECK(decoded.committed);
    CHECK_EQ_INT(decoded.entry.txid, 5);
    CHECK_EQ_INT(decoded.entry.frame_count, 2);
    CHECK(memcmp(decoded.entry.hash, entry.hash, KT_HASH_BYTES) == 0);
    CHECK(repl_decode_tx(buffer.data, buffer.length - 1, &decoded) != 0);
    buffer.data[buffer.length - 5] ^= 0x40; /* a page byte: the hash no longer holds */
    /* From the peer only the sizes are checked (the channel's AEAD vouches for the bytes); the
     * hash is checked when the entry is read back from the log, before it is applied. */
    REQUIRE(repl_decode_tx(buffer.data, buffer.length, &decoded) == 0);
    repl_reader reader;
    repl_reader_init(&reader, buffer.data + 1, buffer.length - 1);
    repl_entry damaged;
    CHECK(repl_entry_decode(&reader, &damaged) != 0);
    repl_buffer_free(&buffer);

    repl_msg_decision decision = {REPL_DECIDE_REFUSE, 3, {0}, {0}, "because"}, back;
    repl_encode_decision(&buffer, &decision);
    REQUIRE(repl_decode_decision(buffer.data, buffer.length, &back) == 0);
    CHECK_EQ_STR(back.reason, "because");
    CHECK_EQ_INT(back.epoch, 3);
    buffer.data[0] = 9;
    CHECK(repl_decode_decision(buffer.data, buffer.length, &back) != 0);
    repl_buffer_free(&buffer);
}

TEST(state_file_round_trip_and_tamper_detection)
{
    scratch place;
    scratch_make(&place);
    char path[160], error[256];
    (void)snprintf(path, sizeof path, "%s/state", place.dir);
    repl_state_file state = {7, {6, 42, {0}}, true}, loaded;
    kt_random(state.applied.hash, KT_HASH_BYTES);
    CHECK_EQ_INT(repl_state_load(path, &loaded, error, sizeof error), 0);
    REQUIRE(repl_state_save(path, &state, error, sizeof error) == 0);
    REQUIRE(repl_state_load(path, &loaded, error, sizeof error) == 1);
    CHECK_EQ_INT(loaded.epoch, 7);
    CHECK_EQ_INT(loaded.applied.txid, 42);
    CHECK(loaded.basecopy_pending);
    CHECK(repl_position_same(&loaded.applied, &state.applied));
    FILE *file = fopen(path, "r+");
    REQUIRE(file != NULL);
    fseek(file, 30, SEEK_SET);
    fputc('9', file);
    fclose(file);
    CHECK_EQ_INT(repl_state_load(path, &loaded, error, sizeof error), -1);
    scratch_remove(&place);
}

TEST(state_machine_allows_only_listed_transitions)
{
    CHECK(repl_state_transition_allowed(REPL_STATE_WAITING, REPL_STATE_HANDSHAKE));
    CHECK(repl_state_transition_allowed(REPL_STATE_CATCHUP, REPL_STATE_IN_SYNC));
    CHECK(repl_state_transition_allowed(REPL_STATE_IN_SYNC, REPL_STATE_WAITING));
    CHECK(repl_state_transition_allowed(REPL_STATE_FENCED, REPL_STATE_STOPPED));
    CHECK(!repl_state_transition_allowed(REPL_STATE_WAITING, REPL_STATE_IN_SYNC));
    CHECK(!repl_state_transition_allowed(REPL_STATE_FENCED, REPL_STATE_IN_SYNC));
    CHECK(!repl_state_transition_allowed(REPL_STATE_CONNECTING, REPL_STATE_IN_SYNC));
    CHECK_EQ_STR(repl_state_name(REPL_STATE_IN_SYNC), "in_sync");
    CHECK_EQ_STR(repl_state_name(REPL_STATE_WAITING), "waiting_for_passive");
}

/* ---- the spool ------------------------------------------------------------------------------ */

static repl_entry make_entry(const kt_repl_position *previous, unsigned char *frames, size_t size)
{
    repl_entry entry;
    memset(&entry, 0, sizeof entry);
    entry.epoch = 1;
    entry.txid = previous->txid + 1;
    memcpy(entry.prev, previous->hash, KT_HASH_BYTES);
    entry.page_size = 512;
    entry.db_size = 3;
    entry.frame_count = (uint32_t)(size / (4 + 512));
    entry.frames = frames;
    entry.frames_length = size;
    repl_chain_hash(&entry, entry.hash);
    return entry;
}

static int warnings_seen;

static void counting_log(void *context, kt_repl_log_level level, const char *message)
{
    (void)context;
    (void)message;
    warnings_seen += level <= KT_REPL_LOG_WARNING;
}

TEST(spool_append_recover_torn_tail_truncate_compact)
{
    scratch place;
    scratch_make(&place);
    char path[160], error[256];
    (void)snprintf(path, sizeof path, "%s/log", place.dir);
    repl_logger logger = {quiet_log, NULL};
    kt_repl_position genesis = {1, 0, {0}};
    kt_random(genesis.hash, KT_HASH_BYTES);
    repl_spool *spool = NULL;
    REQUIRE(repl_spool_open(&spool, path, &genesis, NULL, &logger, error, sizeof error) == 0);
    unsigned char frames[2 * (4 + 512)];
    kt_random(frames, sizeof frames);
    repl_put_le32(frames, 1);
    repl_put_le32(frames + 516, 2);
    kt_repl_position tip = genesis;
    for (int index = 0; index < 4; index++) {
        repl_entry entry = make_entry(&tip, frames, sizeof frames);
        CHECK(repl_spool_append(spool, &entry, true) == 0);
        tip = repl_entry_position(&entry);
    }
    uint64_t size = repl_spool_bytes(spool); /* the fourth entry ends here */
    repl_entry stale = make_entry(&genesis, frames, sizeof frames);
    CHECK(repl_spool_append(spool, &stale, true) != 0); /* does not follow the tip */
    kt_repl_position third;
    REQUIRE(repl_spool_position_at(spool, 3, &third));
    CHECK(repl_spool_confirm(spool, 3, third.hash) == 0);
    CHECK_EQ_INT(repl_spool_confirmed(spool), 3);
    kt_repl_position fourth;
    REQUIRE(repl_spool_position_at(spool, 4, &fourth));
    CHECK(repl_spool_note_applied(spool, &fourth) != 0); /* not confirmed: cannot be applied */
    CHECK(repl_spool_note_applied(spool, &third) == 0);
    CHECK_EQ_INT(repl_spool_applied(spool).txid, 3);
    repl_spool_close(spool);

    /* A torn tail: the fourth entry loses its end (and the records after it), garbage follows. */
    REQUIRE(truncate(path, (off_t)(size - 100)) == 0);
    int fd = open(path, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    CHECK(write(fd, "garbage", 7) == 7);
    close(fd);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) == 0);
    CHECK_EQ_INT(repl_spool_tip(spool).txid, 3);
    CHECK_EQ_INT(repl_spool_confirmed(spool), 0); /* the CONFIRM record was in the torn tail */
    CHECK_EQ_INT(repl_spool_applied(spool).txid, 0); /* and so was the APPLIED one */
    CHECK(repl_spool_confirm(spool, 2, third.hash) != 0); /* wrong hash */
    kt_repl_position second;
    REQUIRE(repl_spool_position_at(spool, 2, &second));
    CHECK(repl_spool_confirm(spool, 2, second.hash) == 0);
    /* Appends write over zeros written ahead (preallocated). */
    struct stat status;
    uint64_t good_size = repl_spool_bytes(spool);
    repl_spool_preallocate_ahead(spool, 64 * 1024);
    CHECK(stat(path, &status) == 0 && (uint64_t)status.st_size >= good_size + 64 * 1024);
    CHECK_EQ_INT(repl_spool_bytes(spool), good_size);
    repl_spool_close(spool);

    /* A power cut: the file grew but its last blocks hold zeros; or a record's bytes rotted. The
     * zeros are taken for preallocated space: kept, nothing logged as torn. */
    fd = open(path, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    unsigned char zeros[3000] = {0};
    CHECK(write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
    close(fd);
    uint64_t grown = stat(path, &status) == 0 ? (uint64_t)status.st_size : 0;
    warnings_seen = 0;
    repl_logger counting = {counting_log, NULL};
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &counting, error, sizeof error) == 0);
    CHECK_EQ_INT(repl_spool_tip(spool).txid, 3);
    CHECK_EQ_INT(repl_spool_bytes(spool), good_size);
    CHECK(stat(path, &status) == 0 && (uint64_t)status.st_size == grown);
    CHECK_EQ_INT(warnings_seen, 0);
    repl_spool_close(spool);
    fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    unsigned char byte = 0;
    CHECK(pread(fd, &byte, 1, (off_t)good_size - 10) == 1);
    byte ^= 0x10;
    CHECK(pwrite(fd, &byte, 1, (off_t)good_size - 10) == 1);
    close(fd);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) == 0);
    CHECK_EQ_INT(repl_spool_tip(spool).txid, 3);
    CHECK_EQ_INT(repl_spool_confirmed(spool), 0); /* the rotten record was the confirmation */
    CHECK(stat(path, &status) == 0 && (uint64_t)status.st_size < good_size);
    CHECK(repl_spool_confirm(spool, 2, second.hash) == 0);

    /* Unconfirmed entries can be dropped, confirmed ones cannot. */
    CHECK(repl_spool_truncate_after(spool, 1) != 0);
    CHECK(repl_spool_note_applied(spool, &second) == 0);
    CHECK(repl_spool_truncate_after(spool, 2) == 0);
    CHECK_EQ_INT(repl_spool_tip(spool).txid, 2);
    repl_entry entry;
    REQUIRE(repl_spool_read(spool, 2, &entry) == 0);
    CHECK(memcmp(entry.hash, second.hash, KT_HASH_BYTES) == 0);
    repl_entry_free(&entry);

    /* Compaction keeps positions and the chain. */
    tip = repl_spool_tip(spool);
    for (int index = 0; index < 3; index++) {
        repl_entry more = make_entry(&tip, frames, sizeof frames);
        CHECK(repl_spool_append(spool, &more, false) == 0);
        tip = repl_entry_position(&more);
    }
    CHECK(repl_spool_compact(spool, 4) == 0);
    CHECK_EQ_INT(repl_spool_base(spool).txid, 3);
    CHECK_EQ_INT(repl_spool_tip(spool).txid, 5);
    CHECK(repl_spool_read(spool, 2, &entry) != 0);
    REQUIRE(repl_spool_read(spool, 5, &entry) == 0);
    repl_entry_free(&entry);
    repl_spool_close(spool);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) == 0);
    CHECK(repl_position_same(&tip, &(kt_repl_position){0, 0, {0}}) == false);
    kt_repl_position reopened = repl_spool_tip(spool);
    CHECK(repl_position_same(&reopened, &tip));
    CHECK_EQ_INT(repl_spool_confirmed(spool), 3);
    CHECK_EQ_INT(repl_spool_applied(spool).txid, 3); /* the compaction's base */

    /* Confirmations and applied positions past the new base survive a compaction, and stale
     * ones about dropped entries do not count as damage. */
    kt_repl_position fifth;
    REQUIRE(repl_spool_position_at(spool, 5, &fifth));
    CHECK(repl_spool_confirm(spool, 5, fifth.hash) == 0);
    CHECK(repl_spool_note_applied(spool, &fifth) == 0);
    for (int index = 0; index < 3; index++) {
        repl_entry more = make_entry(&tip, frames, sizeof frames);
        CHECK(repl_spool_append(spool, &more, false) == 0);
        tip = repl_entry_position(&more);
    }
    CHECK(repl_spool_compact(spool, 5) == 0);
    repl_spool_close(spool);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) == 0);
    reopened = repl_spool_tip(spool);
    CHECK(repl_position_same(&reopened, &tip));
    CHECK_EQ_INT(repl_spool_base(spool).txid, 4);
    CHECK_EQ_INT(repl_spool_confirmed(spool), 5);
    CHECK_EQ_INT(repl_spool_applied(spool).txid, 5);
    repl_spool_close(spool);
    scratch_remove(&place);
}

/* Compactions run beside appends (they copy without the spool's lock) and beside each other:
 * an appender thread adds entries while two threads compact again and again. Afterwards the
 * chain is whole from the base to the last append, in memory and after reopening, and every
 * kept entry reads back. */
typedef struct spool_race {
    repl_spool *spool;
    kt_repl_position tip;
    int appended, failures;
    volatile int done;
    int compactions; /* finished while the appender ran (atomic) */
} spool_race;

enum { RACE_ENTRIES = 400 };

static void *race_appender(void *argument)
{
    spool_race *race = argument;
    unsigned char frames[4 + 512];
    kt_random(frames, sizeof frames);
    repl_put_le32(frames, 1);
    for (int index = 0; index < RACE_ENTRIES; index++) {
        repl_entry entry = make_entry(&race->tip, frames, sizeof frames);
        if (repl_spool_append(race->spool, &entry, false) != 0) {
            race->failures++;
            break;
        }
        race->tip = repl_entry_position(&entry);
        race->appended++;
        if (index == RACE_ENTRIES / 2) {
            /* Half way, let a compaction finish before going on, so that the two overlap on any
             * machine (a slow one under ASan could otherwise append everything first). */
            for (int wait = 0; wait < 10000 && !__atomic_load_n(&race->compactions,
                                                                 __ATOMIC_SEQ_CST); wait++) {
                (void)usleep(1000);
            }
        }
    }
    __atomic_store_n(&race->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *race_compactor(void *argument)
{
    spool_race *race = argument;
    while (!__atomic_load_n(&race->done, __ATOMIC_SEQ_CST)) {
        uint64_t tip = repl_spool_tip(race->spool).txid;
        if (tip <= 20) {
            continue;
        }
        if (repl_spool_compact(race->spool, tip - 10) == 0) {
            (void)__atomic_add_fetch(&race->compactions, 1, __ATOMIC_SEQ_CST);
        } else if (errno != EAGAIN) {
            race->failures++;
        }
    }
    return NULL;
}

TEST(spool_compaction_runs_beside_appends_and_itself)
{
    scratch place;
    scratch_make(&place);
    char path[160], error[256];
    (void)snprintf(path, sizeof path, "%s/log", place.dir);
    repl_logger logger = {quiet_log, NULL};
    kt_repl_position genesis = {1, 0, {0}};
    kt_random(genesis.hash, KT_HASH_BYTES);
    spool_race race = {.tip = genesis};
    REQUIRE(repl_spool_open(&race.spool, path, &genesis, NULL, &logger, error, sizeof error) == 0);
    pthread_t appender, compactors[2];
    REQUIRE(pthread_create(&appender, NULL, race_appender, &race) == 0);
    REQUIRE(pthread_create(&compactors[0], NULL, race_compactor, &race) == 0);
    REQUIRE(pthread_create(&compactors[1], NULL, race_compactor, &race) == 0);
    (void)pthread_join(appender, NULL);
    (void)pthread_join(compactors[0], NULL);
    (void)pthread_join(compactors[1], NULL);
    CHECK_EQ_INT(race.failures, 0);
    CHECK_EQ_INT(race.appended, RACE_ENTRIES);
    uint64_t base = repl_spool_base(race.spool).txid;
    CHECK(base > 0); /* something was compacted away */
    kt_repl_position tip = repl_spool_tip(race.spool);
    CHECK(repl_position_same(&tip, &race.tip));
    repl_spool_close(race.spool);
    repl_spool *spool = NULL;
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) == 0);
    tip = repl_spool_tip(spool);
    CHECK(repl_position_same(&tip, &race.tip));
    CHECK_EQ_INT(repl_spool_base(spool).txid, base);
    int unreadable = 0;
    for (uint64_t txid = base + 1; txid <= tip.txid; txid++) {
        repl_entry entry;
        if (repl_spool_read(spool, txid, &entry) != 0) {
            unreadable++;
            continue;
        }
        repl_entry_free(&entry);
    }
    CHECK_EQ_INT(unreadable, 0);
    struct stat status;
    char temporary[200];
    (void)snprintf(temporary, sizeof temporary, "%s.compact", path);
    CHECK(stat(temporary, &status) != 0); /* no compaction's file left behind */
    repl_spool_close(spool);
    scratch_remove(&place);
}

/* ---- the channel ---------------------------------------------------------------------------- */

typedef struct server_side {
    int listen_fd;
    const kt_secret *key;
    int accepted;            /* 1 authenticated, -1 refused */
    char error[256];
    repl_channel *channel;
} server_side;

static void *serve_one(void *argument)
{
    server_side *server = argument;
    int fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    uint8_t purpose = 0;
    server->accepted = repl_channel_accept(&server->channel, fd, "test-peer", server->key,
                                           &purpose, 2000, server->error,
                                           sizeof server->error) == 0 ? 1 : -1;
    return NULL;
}

static int listen_any(int *fd, char port[16])
{
    char error[256];
    if (repl_listen(fd, "127.0.0.1", "0", error, sizeof error) != 0) {
        return -1;
    }
    struct sockaddr_in address;
    socklen_t size = sizeof address;
    getsockname(*fd, (struct sockaddr *)&address, &size);
    snprintf(port, 16, "%u", ntohs(address.sin_port));
    return 0;
}

TEST(channel_authenticates_and_rejects_wrong_key_and_altered_messages)
{
    kt_secret *key = test_key(0x11), *wrong = test_key(0x22);
    char port[16], error[256];
    server_side server = {0};
    REQUIRE(listen_any(&server.listen_fd, port) == 0);
    server.key = key;

    /* Right key: a message goes both ways. */
    pthread_t thread;
    pthread_create(&thread, NULL, serve_one, &server);
    repl_channel *client = NULL;
    CHECK(repl_channel_connect(&client, "127.0.0.1", port, key, REPL_PURPOSE_STREAM, 2000, error,
                               sizeof error) == 0);
    pthread_join(thread, NULL);
    REQUIRE(client != NULL && server.accepted == 1);
    CHECK(repl_channel_send(client, REPL_MSG_HEARTBEAT, "hello", 5, 1000) == 0);
    uint8_t type = 0;
    unsigned char *payload = NULL;
    size_t length = 0;
    CHECK_EQ_INT(repl_channel_receive(server.channel, &type, &payload, &length, 1000, 1000), 1);
    CHECK(type == REPL_MSG_HEARTBEAT && length == 5 && memcmp(payload, "hello", 5) == 0);
    free(payload);
    CHECK_EQ_INT(repl_channel_receive(server.channel, &type, &payload, &length, 50, 50), 0);

    /* An altered frame (right length, wrong bytes) fails authentication and breaks the channel. */
    unsigned char forged[4 + 1 + 16 + 3];
    repl_put_le32(forged, sizeof forged - 4);
    memset(forged + 4, 0x5a, sizeof forged - 4);
    CHECK(repl_write_all(repl_channel_fd(client), forged, sizeof forged) == 0);
    CHECK_EQ_INT(repl_channel_receive(server.channel, &type, &payload, &length, 1000, 1000), -1);
    CHECK(strstr(repl_channel_error(server.channel), "failed authentication") != NULL);
    repl_channel_close(client);
    repl_channel_close(server.channel);

    /* Wrong key on the client: both sides refuse. */
    server.accepted = 0;
    server.channel = NULL;
    pthread_create(&thread, NULL, serve_one, &server);
    client = NULL;
    CHECK(repl_channel_connect(&client, "127.0.0.1", port, wrong, REPL_PURPOSE_STREAM, 2000, error,
                               sizeof error) != 0);
    pthread_join(thread, NULL);
    CHECK(client == NULL);
    CHECK(strstr(error, "does not hold our pair key") != NULL);
    CHECK_EQ_INT(server.accepted, -1);

    /* Wrong key on the server: the client notices first. */
    server.key = wrong;
    pthread_create(&thread, NULL, serve_one, &server);
    CHECK(repl_channel_connect(&client, "127.0.0.1", port, key, REPL_PURPOSE_STREAM, 2000, error,
                               sizeof error) != 0);
    pthread_join(thread, NULL);
    CHECK_EQ_INT(server.accepted, -1);
    close(server.listen_fd);
    kt_secret_free(key);
    kt_secret_free(wrong);
}

/* ---- capture: frames read back from the -wal ------------------------------------------------ */

/* Applies every entry of `source`'s log after `from` to the database at `target`. */
static int apply_log(const scratch *source, const char *target, uint64_t from)
{
    char path[160], error[256];
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.log", source->dir);
    repl_logger logger = {quiet_log, NULL};
    repl_spool *spool = NULL;
    repl_apply *apply = NULL;
    if (repl_spool_open(&spool, path, NULL, NULL, &logger, error, sizeof error) != 0 ||
        repl_apply_open(&apply, target, &logger, error, sizeof error) != 0) {
        fprintf(stderr, "    apply_log: %s\n", error);
        repl_spool_close(spool);
        return -1;
    }
    int result = 0;
    uint64_t tip = repl_spool_tip(spool).txid;
    for (uint64_t txid = from + 1; txid <= tip && result == 0; txid++) {
        repl_entry entry;
        result = repl_spool_read(spool, txid, &entry);
        if (result == 0) {
            result = repl_apply_entries(apply, &entry, 1, error, sizeof error);
        }
        repl_entry_free(&entry);
    }
    if (result != 0) {
        fprintf(stderr, "    apply_log: %s\n", error);
    }
    repl_apply_close(apply);
    repl_spool_close(spool);
    return result;
}

/* A standalone node whose writer starts from an empty database copied to `copy` first. */
typedef struct capture_fixture {
    scratch source, copy;
    kt_repl *repl;
    sqlite3 *writer;
    uint64_t base_txid;
} capture_fixture;

static int fixture_start(capture_fixture *fixture, int cache_pages)
{
    memset(fixture, 0, sizeof *fixture);
    scratch_make(&fixture->source);
    scratch_make(&fixture->copy);
    sqlite3 *db = open_writer(fixture->source.db, NULL, 2000); /* schema, before replication */
    if (db == NULL || sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != 0) {
        return -1;
    }
    sqlite3_close(db);
    if (copy_file(fixture->source.db, fixture->copy.db) != 0) {
        return -1;
    }
    kt_repl_config config = base_config(&fixture->source, KT_REPL_STANDALONE, NULL);
    char error[256];
    if (kt_repl_start(&fixture->repl, &config, error, sizeof error) != 0) {
        fprintf(stderr, "    %s\n", error);
        return -1;
    }
    fixture->writer = open_writer(fixture->source.db, kt_repl_vfs_name(fixture->repl), cache_pages);
    return fixture->writer ? 0 : -1;
}

static void fixture_stop(capture_fixture *fixture)
{
    sqlite3_close(fixture->writer);
    kt_repl_stop(fixture->repl);
    scratch_remove(&fixture->source);
    scratch_remove(&fixture->copy);
}

static bool same_content(const char *a, const char *b)
{
    char first[KT_REPL_HASH_HEX_CHARS + 1], second[KT_REPL_HASH_HEX_CHARS + 1];
    checksum_of(a, first);
    checksum_of(b, second);
    if (strcmp(first, second) != 0) {
        fprintf(stderr, "    checksums differ: %s vs %s\n", first, second);
    }
    return strcmp(first, second) == 0;
}

TEST(capture_small_and_spilled_transactions_replay_identically)
{
    capture_fixture fixture;
    REQUIRE(fixture_start(&fixture, 10) == 0); /* 10 pages of cache: big transactions spill */
    CHECK_EQ_INT(put(fixture.writer, "small", 1), SQLITE_OK);
    CHECK_EQ_INT(put(fixture.writer, "big", 400), SQLITE_OK); /* ~800 KiB, far past the cache */
    CHECK_EQ_INT(put(fixture.writer, "small2", 1), SQLITE_OK);
    sqlite3_exec(fixture.writer, "UPDATE kv SET value = randomblob(3000) WHERE key LIKE 'big-1%'",
                 NULL, NULL, NULL);
    kt_repl_status status;
    kt_repl_get_status(fixture.repl, &status);
    CHECK_EQ_INT(status.position.txid, 4);
    CHECK_EQ_STR(status.state, "standalone");
    CHECK(apply_log(&fixture.source, fixture.copy.db, 0) == 0);
    CHECK_EQ_INT(count_rows(fixture.copy.db, "big"), 400);
    CHECK(same_content(fixture.source.db, fixture.copy.db));
    fixture_stop(&fixture);
}

TEST(capture_follows_wal_resets)
{
    capture_fixture fixture;
    REQUIRE(fixture_start(&fixture, 2000) == 0);
    CHECK_EQ_INT(put(fixture.writer, "a", 3), SQLITE_OK);
    /* RESTART: the next writer rewrites the header at offset 0 and old frames stay behind. */
    CHECK_EQ_INT(sqlite3_exec(fixture.writer, "PRAGMA wal_checkpoint(RESTART)", NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK_EQ_INT(put(fixture.writer, "b", 1), SQLITE_OK);
    CHECK_EQ_INT(put(fixture.writer, "c", 1), SQLITE_OK);
    /* TRUNCATE: the -wal is emptied and started again. */
    CHECK_EQ_INT(sqlite3_exec(fixture.writer, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK_EQ_INT(put(fixture.writer, "d", 2), SQLITE_OK);
    kt_repl_status status;
    kt_repl_get_status(fixture.repl, &status);
    CHECK_EQ_INT(status.position.txid, 4);
    CHECK(apply_log(&fixture.source, fixture.copy.db, 0) == 0);
    CHECK_EQ_INT(count_rows(fixture.copy.db, "d"), 2);
    CHECK(same_content(fixture.source.db, fixture.copy.db));
    fixture_stop(&fixture);
}

/* ---- apply ---------------------------------------------------------------------------------- */

TEST(apply_keeps_open_readers_snapshot_and_checkpoints)
{
    capture_fixture fixture;
    REQUIRE(fixture_start(&fixture, 2000) == 0);
    CHECK_EQ_INT(put(fixture.writer, "first", 5), SQLITE_OK);
    CHECK(apply_log(&fixture.source, fixture.copy.db, 0) == 0);

    sqlite3 *reader = NULL;
    sqlite3_stmt *statement = NULL;
    REQUIRE(sqlite3_open_v2(fixture.copy.db, &reader, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(reader, "BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_prepare_v2(reader, "SELECT count(*) FROM kv", -1, &statement, NULL);
    CHECK(sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_int(statement, 0) == 5);
    sqlite3_reset(statement);

    CHECK_EQ_INT(put(fixture.writer, "second", 300), SQLITE_OK); /* grows the database */
    CHECK_EQ_INT(sqlite3_exec(fixture.writer, "DELETE FROM kv WHERE key LIKE 'second-1%'", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    CHECK(apply_log(&fixture.source, fixture.copy.db, 1) == 0);

    CHECK(sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_int(statement, 0) == 5);
    sqlite3_reset(statement);
    CHECK_EQ_INT(count_rows(fixture.copy.db, ""), count_rows(fixture.source.db, ""));
    CHECK(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(statement) == SQLITE_ROW &&
          sqlite3_column_int(statement, 0) == count_rows(fixture.source.db, ""));
    sqlite3_finalize(statement);
    sqlite3_close(reader);

    /* Shrinking (VACUUM) replicates too, and integrity holds. */
    CHECK_EQ_INT(sqlite3_exec(fixture.writer, "DELETE FROM kv; VACUUM", NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK(apply_log(&fixture.source, fixture.copy.db, 3) == 0);
    uint32_t page_size = 0;
    char error[256];
    CHECK(repl_basecopy_verify(fixture.copy.db, &page_size, error, sizeof error) == 0);
    CHECK(same_content(fixture.source.db, fixture.copy.db));

    /* The passive's own checkpoint, then more applies on the new -wal generation. */
    sqlite3 *checkpointer = NULL;
    REQUIRE(sqlite3_open_v2(fixture.copy.db, &checkpointer, SQLITE_OPEN_READWRITE, NULL) ==
            SQLITE_OK);
    CHECK(sqlite3_exec(checkpointer, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(checkpointer);
    CHECK_EQ_INT(put(fixture.writer, "third", 3), SQLITE_OK);
    CHECK(apply_log(&fixture.source, fixture.copy.db, 5) == 0);
    CHECK(same_content(fixture.source.db, fixture.copy.db));

    /* Applying everything again, as one batch, on top of what is there changes nothing: what a
     * passive does after a crash between applying and recording it. */
    char path[160];
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.log", fixture.source.dir);
    repl_spool *spool = NULL;
    repl_apply *apply = NULL;
    repl_entry entries[6];
    memset(entries, 0, sizeof entries);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger_of_tests, error, sizeof error) == 0);
    REQUIRE(repl_apply_open(&apply, fixture.copy.db, &logger_of_tests, error, sizeof error) == 0);
    for (uint64_t txid = 1; txid <= 6; txid++) {
        CHECK(repl_spool_read(spool, txid, &entries[txid - 1]) == 0);
    }
    CHECK(repl_apply_entries(apply, entries, 6, error, sizeof error) == 0);
    for (int index = 0; index < 6; index++) {
        repl_entry_free(&entries[index]);
    }
    repl_apply_close(apply);
    repl_spool_close(spool);
    CHECK(same_content(fixture.source.db, fixture.copy.db));
    fixture_stop(&fixture);
}

static long long file_size(const char *path)
{
    struct stat status;
    return stat(path, &status) == 0 ? (long long)status.st_size : -1;
}

/* The applier's checkpoint keeps the passive's -wal file: the next apply writes a new generation
 * over the old frames (new salts), and what follows it never reads as part of it. */
TEST(apply_after_checkpoint_reuses_the_wal_blocks)
{
    capture_fixture fixture;
    REQUIRE(fixture_start(&fixture, 2000) == 0);
    CHECK_EQ_INT(put(fixture.writer, "big", 200), SQLITE_OK);   /* a long first generation */
    CHECK_EQ_INT(put(fixture.writer, "small", 2), SQLITE_OK);
    char path[160], wal[200], error[256];
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.log", fixture.source.dir);
    (void)snprintf(wal, sizeof wal, "%s-wal", fixture.copy.db);
    repl_spool *spool = NULL;
    repl_apply *apply = NULL;
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger_of_tests, error, sizeof error) == 0);
    REQUIRE(repl_apply_open(&apply, fixture.copy.db, &logger_of_tests, error, sizeof error) == 0);
    uint64_t tip = repl_spool_tip(spool).txid;
    for (uint64_t txid = 1; txid <= tip; txid++) {
        repl_entry entry;
        CHECK(repl_spool_read(spool, txid, &entry) == 0);
        CHECK(repl_apply_entries(apply, &entry, 1, error, sizeof error) == 0);
        repl_entry_free(&entry);
    }
    long long before = file_size(wal);
    CHECK(before > 0);
    CHECK(repl_apply_checkpoint_keeping_wal(apply, 0) == 0);
    CHECK_EQ_INT(file_size(wal), before); /* checkpointed, not truncated */
    CHECK(same_content(fixture.source.db, fixture.copy.db));

    /* A short new generation over the long old one: readers, a fresh connection's recovery and
     * integrity_check see exactly the source. */
    CHECK_EQ_INT(put(fixture.writer, "after", 3), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(fixture.writer, "DELETE FROM kv WHERE key LIKE 'big-1%'", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    repl_spool_close(spool); /* this handle's index stops where it was opened: open it anew */
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger_of_tests, error, sizeof error) == 0);
    uint64_t last = repl_spool_tip(spool).txid;
    CHECK(last > tip);
    for (uint64_t txid = tip + 1; txid <= last; txid++) {
        repl_entry entry;
        CHECK(repl_spool_read(spool, txid, &entry) == 0);
        CHECK(repl_apply_entries(apply, &entry, 1, error, sizeof error) == 0);
        repl_entry_free(&entry);
    }
    CHECK_EQ_INT(file_size(wal), before); /* the new frames went over the old blocks */
    CHECK_EQ_INT(count_rows(fixture.copy.db, "after"), 3);
    CHECK_EQ_INT(count_rows(fixture.copy.db, ""), count_rows(fixture.source.db, ""));
    repl_apply_close(apply);
    repl_spool_close(spool);
    CHECK(same_content(fixture.source.db, fixture.copy.db)); /* recovery from the file alone */
    uint32_t page_size = 0;
    CHECK(repl_basecopy_verify(fixture.copy.db, &page_size, error, sizeof error) == 0);

    /* A stop (TRUNCATE) still empties it. */
    REQUIRE(repl_apply_open(&apply, fixture.copy.db, &logger_of_tests, error, sizeof error) == 0);
    CHECK(repl_apply_checkpoint(apply, 0) == 0);
    CHECK_EQ_INT(file_size(wal), 0);
    repl_apply_close(apply);
    CHECK(same_content(fixture.source.db, fixture.copy.db));
    fixture_stop(&fixture);
}

/* ---- refusals leave no trace ---------------------------------------------------------------- */

TEST(refused_commits_leave_nothing_behind)
{
    scratch place;
    scratch_make(&place);
    kt_secret *key = test_key(0x33);
    kt_repl_config config = base_config(&place, KT_REPL_ACTIVE, key);
    config.listen_port = "0";
    config.synchronous = false;
    kt_repl *repl = NULL;
    char error[256];
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    sqlite3 *writer = open_writer(place.db, kt_repl_vfs_name(repl), 10);
    REQUIRE(writer != NULL);
    CHECK_EQ_INT(put(writer, "kept", 1), SQLITE_OK); /* asynchronous: commits alone */
    kt_repl_set_synchronous(repl, true);

    /* No passive: refused at once, definitely. */
    CHECK(put(writer, "refused-small", 1) != SQLITE_OK);
    CHECK_EQ_INT(kt_repl_commit_failure(repl, SQLITE_IOERR_FSYNC), KT_STORE_REFUSED);
    CHECK_EQ_INT(kt_repl_commit_failure(repl, SQLITE_FULL), KT_STORE_FULL); /* not ours */
    CHECK(put(writer, "refused-big", 300) != SQLITE_OK); /* spilled frames, then refused */
    CHECK_EQ_INT(rows_after_crash(&place, "refused"), 0);
    CHECK_EQ_INT(count_rows(place.db, "refused"), 0);
    CHECK_EQ_INT(commits_in_wal(place.wal), 2); /* schema + "kept", nothing else */

    /* The first transaction after a WAL reset. */
    kt_repl_set_synchronous(repl, false);
    CHECK_EQ_INT(sqlite3_exec(writer, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL),
                 SQLITE_OK);
    kt_repl_set_synchronous(repl, true);
    CHECK(put(writer, "refused-after-reset", 2) != SQLITE_OK);
    CHECK_EQ_INT(rows_after_crash(&place, "refused"), 0);
    CHECK_EQ_INT(commits_in_wal(place.wal), 0);

    /* Writes work again once allowed, and the connection is fine. */
    kt_repl_set_synchronous(repl, false);
    CHECK_EQ_INT(put(writer, "later", 1), SQLITE_OK);
    CHECK_EQ_INT(rows_after_crash(&place, "later"), 1);
    kt_repl_status status;
    kt_repl_get_status(repl, &status);
    CHECK_EQ_INT(status.position.txid, 3);
    sqlite3_close(writer);
    kt_repl_stop(repl);
    kt_secret_free(key);
    scratch_remove(&place);
}

/* Holds the last commit frame of a -wal by hand, as the capture does while a commit waits for
 * the passive (salt-1 xored). Returns 0 or -1. */
static int hold_last_commit(const char *wal_path)
{
    repl_wal_cursor end;
    unsigned commits = 0;
    int fd = open(wal_path, O_RDWR);
    unsigned char header[REPL_WAL_FRAME_HEADER_BYTES];
    int result = fd >= 0 && repl_wal_committed_end(wal_path, &end, &commits) == 0 && commits > 0
                     ? 0
                     : -1;
    uint64_t at = result == 0 ? end.offset - REPL_WAL_FRAME_HEADER_BYTES - end.page_size : 0;
    if (result == 0 && pread(fd, header, sizeof header, (off_t)at) == (ssize_t)sizeof header) {
        repl_wal_hold_header(header);
        result = pwrite(fd, header, sizeof header, (off_t)at) == (ssize_t)sizeof header ? 0 : -1;
    }
    if (fd >= 0) {
        close(fd);
    }
    return result;
}

static uint64_t tip_of(kt_repl *repl)
{
    kt_repl_status status;
    kt_repl_get_status(repl, &status);
    return status.position.txid;
}

TEST(startup_settles_what_the_log_missed)
{
    scratch place;
    scratch_make(&place);
    kt_repl_config config = base_config(&place, KT_REPL_STANDALONE, NULL);
    kt_repl *repl = NULL;
    char error[256];
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    sqlite3 *writer = open_writer(place.db, kt_repl_vfs_name(repl), 2000);
    REQUIRE(writer != NULL);
    CHECK_EQ_INT(put(writer, "logged", 1), SQLITE_OK);
    uint64_t logged = tip_of(repl);
    sqlite3_close(writer);
    kt_repl_stop(repl);

    /* Committed transactions the log lost (a crash of the machine loses a log append that was
     * never synced): their commit frames are released, so they are taken into the log. */
    sqlite3 *other = open_writer(place.db, NULL, 2000);
    CHECK_EQ_INT(put(other, "unlogged-1", 1), SQLITE_OK);
    CHECK_EQ_INT(put(other, "unlogged-2", 1), SQLITE_OK);
    sqlite3_close(other);
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    CHECK_EQ_INT(tip_of(repl), logged + 2);
    CHECK_EQ_INT(count_rows(place.db, "unlogged"), 2);
    kt_repl_stop(repl);

    /* The log's last transaction with its commit frame still held (the node stopped between the
     * log append and the release): released at startup. */
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    writer = open_writer(place.db, kt_repl_vfs_name(repl), 2000);
    CHECK_EQ_INT(put(writer, "tip-held", 1), SQLITE_OK);
    sqlite3_close(writer);
    kt_repl_stop(repl);
    CHECK_EQ_INT(hold_last_commit(place.wal), 0);
    CHECK_EQ_INT(rows_after_crash(&place, "tip-held"), 0); /* SQLite alone does not see it */
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    CHECK_EQ_INT(count_rows(place.db, "tip-held"), 1);
    kt_repl_stop(repl);

    /* A held transaction the log does not know, on a node that is not synchronous: this node is
     * authoritative, it is committed. */
    other = open_writer(place.db, NULL, 2000);
    CHECK_EQ_INT(put(other, "held-async", 1), SQLITE_OK);
    sqlite3_close(other);
    CHECK_EQ_INT(hold_last_commit(place.wal), 0);
    uint64_t before = 0;
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    before = tip_of(repl);
    CHECK_EQ_INT(count_rows(place.db, "held-async"), 1);
    kt_repl_stop(repl);

    /* The same on a synchronous active: pending, invisible, every write refused, until the
     * passive settles it (here: the node turns asynchronous, which commits it). */
    kt_secret *key = test_key(7);
    kt_repl_config active = base_config(&place, KT_REPL_ACTIVE, key);
    active.listen_port = "0";
    active.synchronous = true;
    other = open_writer(place.db, NULL, 2000);
    CHECK_EQ_INT(put(other, "held-sync", 1), SQLITE_OK);
    sqlite3_close(other);
    CHECK_EQ_INT(hold_last_commit(place.wal), 0);
    REQUIRE(kt_repl_start(&repl, &active, error, sizeof error) == 0);
    writer = open_writer(place.db, kt_repl_vfs_name(repl), 2000);
    REQUIRE(writer != NULL);
    CHECK_EQ_INT(count_rows(place.db, "held-sync"), 0);
    kt_repl_status status;
    kt_repl_get_status(repl, &status);
    CHECK(!status.writable && strstr(status.reason, "in flight") != NULL);
    kt_repl_set_synchronous(repl, false);
    CHECK(put(writer, "after-settling", 1) == SQLITE_OK);
    CHECK_EQ_INT(count_rows(place.db, "held-sync"), 1);
    CHECK_EQ_INT(tip_of(repl), before + 2);
    sqlite3_close(writer);
    kt_repl_stop(repl);
    kt_secret_free(key);

    /* The -wal gone while the database lacks the log's last transaction (something opened and
     * checkpointed it first, dropping a held frame): startup refuses rather than guess. */
    REQUIRE(kt_repl_start(&repl, &config, error, sizeof error) == 0);
    writer = open_writer(place.db, kt_repl_vfs_name(repl), 2000);
    CHECK_EQ_INT(put(writer, "lost", 1), SQLITE_OK);
    sqlite3_close(writer);
    kt_repl_stop(repl);
    CHECK_EQ_INT(unlink(place.wal), 0);
    CHECK(kt_repl_start(&repl, &config, error, sizeof error) != 0);
    CHECK(strstr(error, "lacks transaction") != NULL);
    scratch_remove(&place);
}

/* ---- a pair in one process ------------------------------------------------------------------ */

typedef struct pair {
    scratch active_place, passive_place;
    kt_secret *key;
    kt_repl *active, *passive;
    sqlite3 *writer;
    char port[16];
} pair;

static bool wait_for(kt_repl *repl, const char *state, uint64_t txid, int timeout_ms)
{
    int64_t deadline = repl_now_ms() + timeout_ms;
    while (repl_now_ms() < deadline) {
        kt_repl_status status;
        kt_repl_get_status(repl, &status);
        if (strcmp(status.state, state) == 0 && status.position.txid >= txid) {
            return true;
        }
        repl_sleep_ms(10);
    }
    return false;
}

static int free_port(char port[16])
{
    int fd = -1;
    if (listen_any(&fd, port) != 0) {
        return -1;
    }
    close(fd);
    return 0;
}

/* Both nodes running, the passive in sync (after its base copy), commits synchronous or not. */
static int pair_start(pair *p, bool synchronous)
{
    memset(p, 0, sizeof *p);
    scratch_make(&p->active_place);
    scratch_make(&p->passive_place);
    p->key = test_key(0x44);
    char error[256];
    if (free_port(p->port) != 0) {
        return -1;
    }
    kt_repl_config config = base_config(&p->active_place, KT_REPL_ACTIVE, p->key);
    config.listen_port = p->port;
    if (kt_repl_start(&p->active, &config, error, sizeof error) != 0) {
        fprintf(stderr, "    %s\n", error);
        return -1;
    }
    p->writer = open_writer(p->active_place.db, kt_repl_vfs_name(p->active), 2000);
    kt_repl_config passive = base_config(&p->passive_place, KT_REPL_PASSIVE, p->key);
    passive.master_port = p->port;
    if (p->writer == NULL || kt_repl_start(&p->passive, &passive, error, sizeof error) != 0) {
        fprintf(stderr, "    %s\n", error);
        return -1;
    }
    if (!wait_for(p->passive, "in_sync", 1, 5000) || !wait_for(p->active, "in_sync", 1, 5000)) {
        fprintf(stderr, "    the pair did not get in sync\n");
        return -1;
    }
    kt_repl_set_synchronous(p->active, synchronous);
    return 0;
}

static void pair_stop(pair *p)
{
    kt_repl_stop(p->passive);
    sqlite3_close(p->writer);
    kt_repl_stop(p->active);
    kt_secret_free(p->key);
    scratch_remove(&p->active_place);
    scratch_remove(&p->passive_place);
}

TEST(pair_base_copy_then_synchronous_commits_match)
{
    pair p;
    REQUIRE(pair_start(&p, false) == 0);
    CHECK_EQ_INT(put(p.writer, "before", 3), SQLITE_OK); /* before the passive has a copy */
    CHECK(wait_for(p.passive, "in_sync", 2, 5000));
    CHECK(wait_for(p.active, "in_sync", 0, 5000));
    kt_repl_set_synchronous(p.active, true);
    CHECK_EQ_INT(put(p.writer, "sync", 1), SQLITE_OK);
    CHECK_EQ_INT(put(p.writer, "sync-big", 200), SQLITE_OK);
    kt_repl_status active;
    kt_repl_get_status(p.active, &active);
    CHECK(wait_for(p.passive, "in_sync", active.position.txid, 3000));
    CHECK_EQ_INT(count_rows(p.passive_place.db, "sync"), 201);
    CHECK(same_content(p.active_place.db, p.passive_place.db));
    kt_repl_status passive;
    kt_repl_get_status(p.passive, &passive);
    CHECK(repl_position_same(&passive.position, &active.position));
    CHECK(!passive.writable);
    CHECK(active.writable);
    pair_stop(&p);
}

TEST(pair_passive_with_newer_epoch_fences_the_active)
{
    pair p;
    REQUIRE(pair_start(&p, true) == 0);
    CHECK(wait_for(p.passive, "in_sync", 0, 5000));
    CHECK(wait_for(p.active, "in_sync", 0, 5000));
    CHECK_EQ_INT(put(p.writer, "x", 1), SQLITE_OK);
    kt_repl_status status;
    kt_repl_get_status(p.passive, &status);
    kt_repl_stop(p.passive);
    p.passive = NULL;
    /* The passive's node was promoted somewhere else in the meantime: epoch 2. */
    char path[160], error[256];
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.state", p.passive_place.dir);
    repl_state_file state = {2, status.position, false};
    REQUIRE(repl_state_save(path, &state, error, sizeof error) == 0);
    kt_repl_config passive = base_config(&p.passive_place, KT_REPL_PASSIVE, p.key);
    passive.master_port = p.port;
    REQUIRE(kt_repl_start(&p.passive, &passive, error, sizeof error) == 0);
    CHECK(wait_for(p.active, "fenced", 0, 5000));
    CHECK(wait_for(p.passive, "diverged", 0, 5000));
    CHECK(put(p.writer, "after-fence", 1) != SQLITE_OK);
    CHECK_EQ_INT(kt_repl_commit_failure(p.active, SQLITE_IOERR_FSYNC), KT_STORE_REFUSED);
    kt_repl_status active;
    kt_repl_get_status(p.active, &active);
    CHECK(!active.writable);
    CHECK_EQ_INT(count_rows(p.passive_place.db, "after-fence"), 0);
    pair_stop(&p);
}

TEST(pair_wrong_key_is_refused)
{
    pair p;
    REQUIRE(pair_start(&p, true) == 0);
    CHECK(wait_for(p.passive, "in_sync", 0, 5000));
    scratch other;
    scratch_make(&other);
    kt_secret *wrong = test_key(0x99);
    kt_repl_config config = base_config(&other, KT_REPL_PASSIVE, wrong);
    config.master_port = p.port;
    kt_repl *intruder = NULL;
    char error[256];
    int before = silence_count;
    REQUIRE(kt_repl_start(&intruder, &config, error, sizeof error) == 0);
    repl_sleep_ms(500);
    kt_repl_status status;
    kt_repl_get_status(intruder, &status);
    CHECK_EQ_STR(status.state, "connecting");
    CHECK(silence_count > before); /* both sides logged the refusal */
    kt_repl_get_status(p.active, &status);
    CHECK_EQ_STR(status.state, "in_sync"); /* the real passive kept its link */
    CHECK_EQ_INT(put(p.writer, "still", 1), SQLITE_OK);
    kt_repl_stop(intruder);
    kt_secret_free(wrong);
    scratch_remove(&other);
    pair_stop(&p);
}

/* Promotion keeps every spooled transaction, the unconfirmed one included, continues the chain
 * under epoch + 1, and the new active fences the old one when it listens again. */
TEST(promote_keeps_the_spool_and_fences_the_old_active)
{
    pair p;
    REQUIRE(pair_start(&p, true) == 0);
    CHECK_EQ_INT(put(p.writer, "confirmed", 3), SQLITE_OK);
    kt_repl_status active;
    kt_repl_get_status(p.active, &active);
    CHECK(wait_for(p.passive, "in_sync", active.position.txid, 5000));
    kt_repl_stop(p.passive);
    p.passive = NULL;
    /* One more transaction reaches the passive's spool but is never confirmed: the active
     * commits it (asynchronously here) and stops; the entry is copied into the spool as the
     * stream would have before the CONFIRM. */
    kt_repl_set_synchronous(p.active, false);
    CHECK_EQ_INT(put(p.writer, "unconfirmed", 2), SQLITE_OK);
    sqlite3_close(p.writer);
    p.writer = NULL;
    kt_repl_stop(p.active);
    p.active = NULL;
    char path[160], error[256];
    repl_spool *log = NULL, *spool = NULL;
    repl_entry entry;
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.log", p.active_place.dir);
    REQUIRE(repl_spool_open(&log, path, NULL, NULL, &logger_of_tests, error, sizeof error) == 0);
    kt_repl_position tip = repl_spool_tip(log);
    REQUIRE(repl_spool_read(log, tip.txid, &entry) == 0);
    (void)snprintf(path, sizeof path, "%s/keytrustee-repl.log", p.passive_place.dir);
    REQUIRE(repl_spool_open(&spool, path, NULL, NULL, &logger_of_tests, error, sizeof error) == 0);
    CHECK_EQ_INT(repl_spool_append(spool, &entry, true), 0);
    CHECK(repl_spool_confirmed(spool) < tip.txid);
    repl_entry_free(&entry);
    repl_spool_close(spool);
    repl_spool_close(log);

    kt_repl_config config = base_config(&p.passive_place, KT_REPL_PASSIVE, p.key);
    kt_repl_promotion promotion;
    REQUIRE(kt_repl_promote(&config, &promotion, error, sizeof error) == 0);
    CHECK_EQ_INT((long long)promotion.epoch, 2);
    CHECK_EQ_INT((long long)promotion.position.txid, (long long)tip.txid);
    CHECK_EQ_INT((long long)promotion.kept_unconfirmed, 1);
    CHECK_EQ_INT(count_rows(p.passive_place.db, "unconfirmed"), 2);
    CHECK_EQ_INT(count_rows(p.passive_place.db, "confirmed"), 3);
    CHECK(same_content(p.active_place.db, p.passive_place.db));

    /* The promoted node starts as the active at epoch 2 from that position and takes writes. */
    char new_port[16];
    REQUIRE(free_port(new_port) == 0);
    config.role = KT_REPL_ACTIVE;
    config.listen_port = new_port;
    kt_repl *promoted = NULL;
    REQUIRE(kt_repl_start(&promoted, &config, error, sizeof error) == 0);
    kt_repl_status status;
    kt_repl_get_status(promoted, &status);
    CHECK_EQ_INT((long long)status.epoch, 2);
    CHECK_EQ_INT((long long)status.position.txid, (long long)tip.txid);
    CHECK(memcmp(status.position.hash, tip.hash, KT_HASH_BYTES) == 0);
    sqlite3 *writer = open_writer(p.passive_place.db, kt_repl_vfs_name(promoted), 2000);
    REQUIRE(writer != NULL);
    CHECK_EQ_INT(put(writer, "after-promotion", 1), SQLITE_OK);
    kt_repl_get_status(promoted, &status);
    CHECK_EQ_INT((long long)status.position.txid, (long long)tip.txid + 1);

    /* Nobody at the old address yet: nothing to fence. Then the old active comes back. */
    CHECK_EQ_INT(kt_repl_fence_peer(promoted, "127.0.0.1", p.port, error, sizeof error), 0);
    kt_repl_config old = base_config(&p.active_place, KT_REPL_ACTIVE, p.key);
    old.listen_port = p.port;
    old.synchronous = false;
    REQUIRE(kt_repl_start(&p.active, &old, error, sizeof error) == 0);
    int fenced = kt_repl_fence_peer(promoted, "127.0.0.1", p.port, error, sizeof error);
    if (fenced != 1) {
        fprintf(stderr, "    fence: %s\n", error);
    }
    CHECK_EQ_INT(fenced, 1);
    kt_repl_get_status(p.active, &status);
    CHECK_EQ_STR(status.state, "fenced");
    CHECK(!status.writable);
    p.writer = open_writer(p.active_place.db, kt_repl_vfs_name(p.active), 2000);
    REQUIRE(p.writer != NULL);
    CHECK(put(p.writer, "on-the-old-active", 1) != SQLITE_OK); /* asynchronous, and still refused */
    CHECK_EQ_INT(count_rows(p.active_place.db, "on-the-old-active"), 0);
    /* An active of the same epoch is not taken for an old one. */
    CHECK_EQ_INT(kt_repl_fence_peer(p.active, "127.0.0.1", new_port, error, sizeof error), -1);
    sqlite3_close(writer);
    kt_repl_stop(promoted);
    pair_stop(&p);
}

int main(void)
{
    if (kt_crypto_init() != 0) {
        return 1;
    }
    return unit_run();
}
