/*
 * test_storage.c — storage/ against real SQLite files in a temporary directory.
 *
 * Covers the schema (creation, reopening, versions, refusing a newer database), every operation on
 * orgs, clients and deposits including their limits and the scoping of deposits to their client,
 * batches with per-request savepoints, readers beside the writer, the WAL and durability settings,
 * checkpoints, and what happens when a COMMIT fails.
 *
 * Failing commits are produced by a small VFS shim registered here over the default unix VFS: it
 * counts syncs of the -wal file and can make the next ones fail with SQLITE_IOERR_FSYNC, which is
 * exactly how replication/'s VFS reports a passive that did not acknowledge. It can also make -wal
 * writes fail with SQLITE_FULL, as a full disk does.
 */
#include <dirent.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/storage.h"
#include "tests/unit/unit.h"

/* ---- A VFS whose -wal syncs can be made to fail --------------------------------------------- */

#define SHIM_VFS_NAME "kt-test-failing-sync"

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* the unix VFS's file, allocated right after this structure */
    bool is_wal;
} shim_file;

static struct {
    sqlite3_vfs vfs;
    sqlite3_vfs *real;
    int wal_syncs;       /* syncs of a -wal file seen so far */
    int failing_syncs;   /* how many of the next -wal syncs fail (SQLITE_IOERR_FSYNC) */
    int failing_writes;  /* how many of the next -wal writes fail (SQLITE_FULL) */
} shim;

static sqlite3_file *real_file(sqlite3_file *file)
{
    return ((shim_file *)file)->real;
}

static int shim_close(sqlite3_file *file)
{
    return real_file(file)->pMethods->xClose(real_file(file));
}

static int shim_read(sqlite3_file *file, void *buffer, int amount, sqlite3_int64 offset)
{
    return real_file(file)->pMethods->xRead(real_file(file), buffer, amount, offset);
}

static int shim_write(sqlite3_file *file, const void *buffer, int amount, sqlite3_int64 offset)
{
    if (((shim_file *)file)->is_wal && shim.failing_writes > 0) {
        shim.failing_writes--;
        return SQLITE_FULL;
    }
    return real_file(file)->pMethods->xWrite(real_file(file), buffer, amount, offset);
}

static int shim_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    return real_file(file)->pMethods->xTruncate(real_file(file), size);
}

static int shim_sync(sqlite3_file *file, int flags)
{
    if (((shim_file *)file)->is_wal) {
        shim.wal_syncs++;
        if (shim.failing_syncs > 0) {
            shim.failing_syncs--;
            return SQLITE_IOERR_FSYNC;
        }
    }
    return real_file(file)->pMethods->xSync(real_file(file), flags);
}

static int shim_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    return real_file(file)->pMethods->xFileSize(real_file(file), size);
}

static int shim_lock(sqlite3_file *file, int level)
{
    return real_file(file)->pMethods->xLock(real_file(file), level);
}

static int shim_unlock(sqlite3_file *file, int level)
{
    return real_file(file)->pMethods->xUnlock(real_file(file), level);
}

static int shim_check_reserved(sqlite3_file *file, int *reserved)
{
    return real_file(file)->pMethods->xCheckReservedLock(real_file(file), reserved);
}

static int shim_file_control(sqlite3_file *file, int operation, void *argument)
{
    return real_file(file)->pMethods->xFileControl(real_file(file), operation, argument);
}

static int shim_sector_size(sqlite3_file *file)
{
    return real_file(file)->pMethods->xSectorSize(real_file(file));
}

static int shim_device_characteristics(sqlite3_file *file)
{
    return real_file(file)->pMethods->xDeviceCharacteristics(real_file(file));
}

static int shim_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **out)
{
    return real_file(file)->pMethods->xShmMap(real_file(file), region, size, extend, out);
}

static int shim_shm_lock(sqlite3_file *file, int offset, int count, int flags)
{
    return real_file(file)->pMethods->xShmLock(real_file(file), offset, count, flags);
}

static void shim_shm_barrier(sqlite3_file *file)
{
    real_file(file)->pMethods->xShmBarrier(real_file(file));
}

static int shim_shm_unmap(sqlite3_file *file, int delete_flag)
{
    return real_file(file)->pMethods->xShmUnmap(real_file(file), delete_flag);
}

static int shim_fetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **out)
{
    return real_file(file)->pMethods->xFetch(real_file(file), offset, amount, out);
}

static int shim_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *page)
{
    return real_file(file)->pMethods->xUnfetch(real_file(file), offset, page);
}

static const sqlite3_io_methods shim_methods = {
    3,          shim_close,        shim_read,         shim_write,
    shim_truncate, shim_sync,      shim_file_size,    shim_lock,
    shim_unlock, shim_check_reserved, shim_file_control, shim_sector_size,
    shim_device_characteristics, shim_shm_map, shim_shm_lock, shim_shm_barrier,
    shim_shm_unmap, shim_fetch,    shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                     int *out_flags)
{
    (void)vfs;
    shim_file *wrapper = (shim_file *)file;
    wrapper->real = (sqlite3_file *)(wrapper + 1);
    wrapper->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    int code = shim.real->xOpen(shim.real, name, wrapper->real, flags, out_flags);
    wrapper->base.pMethods = wrapper->real->pMethods ? &shim_methods : NULL;
    return code;
}

static int shim_register(void)
{
    if (shim.real) {
        return 0;
    }
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    if (!real || real->iVersion < 2) {
        return -1;
    }
    shim.vfs = *real; /* every other method is the real one, with its own pAppData */
    shim.vfs.pNext = NULL;
    shim.vfs.zName = SHIM_VFS_NAME;
    shim.vfs.szOsFile = (int)sizeof(shim_file) + real->szOsFile;
    shim.vfs.xOpen = shim_open;
    shim.real = real;
    return sqlite3_vfs_register(&shim.vfs, 0) == SQLITE_OK ? 0 : -1;
}

/* ---- Test worlds ----------------------------------------------------------------------------- */

typedef struct test_world {
    char directory[128];
    char path[192];
    kt_store *store;
    kt_org org;
    kt_client_record client;
} test_world;

static unsigned char small_box[KT_AEAD_OVERHEAD + 16];

static kt_store_options writer_options(void)
{
    kt_store_options options = {.writer = true, .create = true, .vfs = SHIM_VFS_NAME};
    return options;
}

static kt_store *open_store(const char *path, bool writer)
{
    kt_store_options options = writer_options();
    options.writer = writer;
    options.create = writer;
    kt_store *store = NULL;
    char error[512];
    if (kt_store_open(&store, path, &options, error, sizeof error) != 0) {
        fprintf(stderr, "    kt_store_open: %s\n", error);
        return NULL;
    }
    return store;
}

static void make_org(kt_org *org, const char *name)
{
    memset(org, 0, sizeof *org);
    kt_uuid_generate(org->uuid);
    snprintf(org->name, sizeof org->name, "%s", name);
    snprintf(org->contacts, sizeof org->contacts, "ops@example.com");
    org->created = 1700000000;
}

static int make_client(kt_client_record *client, const char *org_uuid, const char *name)
{
    memset(client, 0, sizeof *client);
    kt_secret *secret = NULL;
    if (kt_sign_keypair(client->public_key, &secret) != 0) {
        return -1;
    }
    kt_secret_free(secret);
    kt_fingerprint(client->fingerprint, client->public_key);
    snprintf(client->org_uuid, sizeof client->org_uuid, "%s", org_uuid);
    snprintf(client->name, sizeof client->name, "%s", name);
    client->created = 1700000100;
    return 0;
}

static void make_deposit(kt_deposit *deposit, const char *client, const char *handle,
                         int64_t created)
{
    memset(deposit, 0, sizeof *deposit);
    kt_uuid_generate(deposit->uuid);
    snprintf(deposit->client, sizeof deposit->client, "%s", client);
    snprintf(deposit->handle, sizeof deposit->handle, "%s", handle);
    snprintf(deposit->description, sizeof deposit->description, "deposit %s", handle);
    deposit->created = created;
    deposit->box = small_box;
    deposit->box_length = sizeof small_box;
}

/* A fresh directory and writer with one org ("acme") and one client in it. */
static int world_open(test_world *world)
{
    memset(world, 0, sizeof *world);
    const char *base = getenv("TMPDIR");
    snprintf(world->directory, sizeof world->directory, "%s/kt-storage-XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(world->directory)) {
        return -1;
    }
    snprintf(world->path, sizeof world->path, "%s/%s", world->directory, KT_DB_FILE_NAME);
    world->store = open_store(world->path, true);
    if (!world->store) {
        return -1;
    }
    make_org(&world->org, "acme");
    if (kt_store_org_add(world->store, &world->org) != KT_STORE_OK ||
        make_client(&world->client, world->org.uuid, "host-1") != 0 ||
        kt_store_client_add(world->store, &world->client) != KT_STORE_OK) {
        return -1;
    }
    return 0;
}

static void remove_directory(const char *directory)
{
    DIR *listing = opendir(directory);
    if (!listing) {
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(listing)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) {
            continue;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/%s", directory, entry->d_name);
        CHECK(unlink(path) == 0);
    }
    closedir(listing);
    CHECK(rmdir(directory) == 0);
}

static void world_close(test_world *world)
{
    kt_store_close(world->store);
    world->store = NULL;
    if (world->directory[0]) {
        remove_directory(world->directory);
    }
}

static long long file_size(const char *path)
{
    struct stat status;
    return stat(path, &status) == 0 ? (long long)status.st_size : -1;
}

static long long wal_size(const test_world *world)
{
    char path[256];
    snprintf(path, sizeof path, "%s-wal", world->path);
    return file_size(path);
}

/* Runs a one-value query on the file through a plain SQLite connection of its own. */
static int query_text(const char *path, const char *sql, char *out, size_t size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *statement = NULL;
    int code = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (code == SQLITE_OK) code = sqlite3_prepare_v2(db, sql, -1, &statement, NULL);
    if (code == SQLITE_OK) code = sqlite3_step(statement);
    if (code == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(statement, 0);
        snprintf(out, size, "%s", text ? (const char *)text : "");
        code = SQLITE_OK;
    } else if (code == SQLITE_DONE) {
        out[0] = '\0';
        code = SQLITE_OK;
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return code == SQLITE_OK ? 0 : -1;
}

static bool deposit_exists(kt_store *store, const char *client, const char *uuid)
{
    kt_deposit found;
    kt_store_status status = kt_store_deposit_get(store, client, uuid, &found);
    kt_deposit_clear(&found);
    return status == KT_STORE_OK;
}

/* ---- Visitors -------------------------------------------------------------------------------- */

typedef struct collected {
    int count;
    int stop_after; /* 0: never stop */
    char names[8][KT_HANDLE_MAX + 1];
} collected;

static int remember(collected *seen, const char *name)
{
    if (seen->count < 8) {
        snprintf(seen->names[seen->count], sizeof seen->names[0], "%s", name);
    }
    seen->count++;
    return seen->stop_after != 0 && seen->count >= seen->stop_after;
}

static int collect_org(const kt_org *org, void *context)
{
    return remember(context, org->name);
}

static int collect_client(const kt_client_record *client, void *context)
{
    return remember(context, client->name);
}

static int collect_deposit(const kt_deposit *deposit, void *context)
{
    return deposit->box == NULL ? remember(context, deposit->handle) : 1;
}

/* ---- Schema ---------------------------------------------------------------------------------- */

TEST(create_migrates_to_latest_version)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    CHECK_EQ_INT(kt_store_latest_schema_version(), 1);
    CHECK_EQ_INT(kt_store_schema_version(world.store), kt_store_latest_schema_version());
    char text[64];
    CHECK(query_text(world.path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                                   "name IN ('orgs', 'clients', 'deposits')", text,
                     sizeof text) == 0);
    CHECK_EQ_STR(text, "3");
    CHECK_EQ_STR(kt_store_error_message(world.store), "no error");
    world_close(&world);
}

TEST(reopen_keeps_data_and_version)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "kept", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    kt_store_close(world.store);
    world.store = open_store(world.path, true);
    REQUIRE(world.store != NULL);
    CHECK_EQ_INT(kt_store_schema_version(world.store), 1);
    kt_org org;
    CHECK_EQ_INT(kt_store_org_get(world.store, "acme", &org), KT_STORE_OK);
    CHECK(deposit_exists(world.store, world.client.fingerprint, deposit.uuid));
    world_close(&world);
}

TEST(open_without_create_fails_for_missing_file)
{
    kt_store_options options = {.writer = true, .create = false};
    kt_store *store = (kt_store *)&options; /* must be reset to NULL */
    char error[512] = "";
    CHECK(kt_store_open(&store, "/nonexistent-kt-dir/keytrustee.db", &options, error,
                        sizeof error) != 0);
    CHECK(store == NULL);
    CHECK(strstr(error, "cannot open the database") != NULL);
}

TEST(newer_schema_is_refused)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_store_close(world.store);
    world.store = NULL;
    char text[64];
    CHECK(query_text(world.path, "PRAGMA user_version = 99", text, sizeof text) == 0);
    kt_store_options options = writer_options();
    kt_store *store = NULL;
    char error[512] = "";
    CHECK(kt_store_open(&store, world.path, &options, error, sizeof error) != 0);
    CHECK(store == NULL);
    CHECK_EQ_STR(error, "database schema version 99 is newer than this keytrustee (1); "
                        "upgrade keytrustee");
    options.writer = false;
    error[0] = '\0';
    CHECK(kt_store_open(&store, world.path, &options, error, sizeof error) != 0);
    CHECK(strstr(error, "newer than this keytrustee") != NULL);
    world_close(&world);
}

TEST(wal_synchronous_full_and_foreign_keys_are_in_force)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    char mode[32];
    CHECK(query_text(world.path, "PRAGMA journal_mode", mode, sizeof mode) == 0);
    CHECK_EQ_STR(mode, "wal");
    /* synchronous is per connection, so watch it work: with FULL every commit syncs the WAL */
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "first", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    int before = shim.wal_syncs;
    make_deposit(&deposit, world.client.fingerprint, "second", 2);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    CHECK(shim.wal_syncs > before);
    /* foreign keys: a deposit for a client that does not exist */
    make_deposit(&deposit, "0123456789ABCDEF0123456789ABCDEF01234567", "orphan", 3);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    CHECK(strstr(kt_store_error_message(world.store), "no client") != NULL);
    world_close(&world);
}

/* ---- Orgs ------------------------------------------------------------------------------------ */

TEST(org_add_get_and_conflicts)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_org org;
    CHECK_EQ_INT(kt_store_org_get(world.store, "acme", &org), KT_STORE_OK);
    CHECK_EQ_STR(org.uuid, world.org.uuid);
    CHECK_EQ_STR(org.contacts, "ops@example.com");
    CHECK_EQ_INT(org.created, 1700000000);
    CHECK_EQ_INT(org.state, KT_STATE_ACTIVE);
    CHECK_EQ_INT(org.auth_box_length, 0);
    CHECK_EQ_INT(kt_store_org_get_by_uuid(world.store, world.org.uuid, &org), KT_STORE_OK);
    CHECK_EQ_STR(org.name, "acme");

    kt_org same_name;
    make_org(&same_name, "acme");
    CHECK_EQ_INT(kt_store_org_add(world.store, &same_name), KT_STORE_CONFLICT);
    CHECK(strstr(kt_store_error_message(world.store), "named 'acme' already exists") != NULL);
    kt_org same_uuid = world.org;
    snprintf(same_uuid.name, sizeof same_uuid.name, "other");
    CHECK_EQ_INT(kt_store_org_add(world.store, &same_uuid), KT_STORE_CONFLICT);
    CHECK(strstr(kt_store_error_message(world.store), "uuid") != NULL);

    CHECK_EQ_INT(kt_store_org_get(world.store, "nobody", &org), KT_STORE_NOT_FOUND);
    CHECK_EQ_STR(kt_store_error_message(world.store), "no org is named 'nobody'");
    char uuid[KT_UUID_CHARS + 1];
    kt_uuid_generate(uuid);
    CHECK_EQ_INT(kt_store_org_get_by_uuid(world.store, uuid, &org), KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(kt_store_org_get_by_uuid(world.store, "not-a-uuid", &org), KT_STORE_INVALID);
    world_close(&world);
}

TEST(org_invalid_fields_are_refused)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    const char *bad_names[] = {"", "has space", "slash/name", "caf\xc3\xa9", "semi;colon",
                               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t index = 0; index < sizeof bad_names / sizeof bad_names[0]; index++) {
        kt_org org;
        make_org(&org, "placeholder");
        memset(org.name, 0, sizeof org.name);
        memcpy(org.name, bad_names[index], strnlen(bad_names[index], KT_ORG_NAME_MAX));
        if (strlen(bad_names[index]) > KT_ORG_NAME_MAX) {
            memset(org.name, 'A', sizeof org.name); /* no terminator inside the array */
        }
        CHECK_EQ_INT(kt_store_org_add(world.store, &org), KT_STORE_INVALID);
        CHECK(strstr(kt_store_error_message(world.store), "org name") != NULL);
    }
    kt_org good;
    make_org(&good, "Good_name-1.x");
    CHECK_EQ_INT(kt_store_org_add(world.store, &good), KT_STORE_OK);
    kt_org bad;
    make_org(&bad, "bad-uuid");
    snprintf(bad.uuid, sizeof bad.uuid, "%s", "zzzzzzzz-zzzz-4zzz-8zzz-zzzzzzzzzzzz");
    CHECK_EQ_INT(kt_store_org_add(world.store, &bad), KT_STORE_INVALID);
    make_org(&bad, "bad-contacts");
    snprintf(bad.contacts, sizeof bad.contacts, "line\nbreak");
    CHECK_EQ_INT(kt_store_org_add(world.store, &bad), KT_STORE_INVALID);
    make_org(&bad, "bad-expiry");
    bad.expires = -5;
    CHECK_EQ_INT(kt_store_org_add(world.store, &bad), KT_STORE_INVALID);
    make_org(&bad, "bad-state");
    bad.state = (kt_state)7;
    CHECK_EQ_INT(kt_store_org_add(world.store, &bad), KT_STORE_INVALID);
    make_org(&bad, "bad-box");
    bad.auth_box_length = KT_AEAD_OVERHEAD - 1;
    CHECK_EQ_INT(kt_store_org_add(world.store, &bad), KT_STORE_INVALID);
    kt_org org;
    CHECK_EQ_INT(kt_store_org_get(world.store, "has space", &org), KT_STORE_INVALID);
    CHECK_EQ_INT(kt_store_org_add(world.store, NULL), KT_STORE_INVALID);
    CHECK_EQ_INT(kt_store_org_add(NULL, &good), KT_STORE_INVALID);
    world_close(&world);
}

TEST(org_list_set_auth_and_state)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_org org;
    make_org(&org, "zeta");
    CHECK_EQ_INT(kt_store_org_add(world.store, &org), KT_STORE_OK);
    make_org(&org, "beta");
    org.auth_box_length = KT_AUTH_BOX_MAX;
    memset(org.auth_box, 0xA5, sizeof org.auth_box);
    CHECK_EQ_INT(kt_store_org_add(world.store, &org), KT_STORE_OK);
    collected seen = {0};
    CHECK_EQ_INT(kt_store_org_list(world.store, collect_org, &seen), KT_STORE_OK);
    CHECK_EQ_INT(seen.count, 3);
    CHECK_EQ_STR(seen.names[0], "acme");
    CHECK_EQ_STR(seen.names[1], "beta");
    CHECK_EQ_STR(seen.names[2], "zeta");
    collected first = {.stop_after = 1};
    CHECK_EQ_INT(kt_store_org_list(world.store, collect_org, &first), KT_STORE_OK);
    CHECK_EQ_INT(first.count, 1);

    unsigned char box[KT_AEAD_OVERHEAD + 20];
    for (size_t index = 0; index < sizeof box; index++) {
        box[index] = (unsigned char)index;
    }
    CHECK_EQ_INT(kt_store_org_set_auth(world.store, "acme", box, sizeof box), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_org_get(world.store, "acme", &org), KT_STORE_OK);
    CHECK_EQ_INT(org.auth_box_length, sizeof box);
    CHECK(memcmp(org.auth_box, box, sizeof box) == 0);
    CHECK_EQ_INT(kt_store_org_set_auth(world.store, "acme", NULL, 0), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_org_get(world.store, "acme", &org), KT_STORE_OK);
    CHECK_EQ_INT(org.auth_box_length, 0);
    CHECK_EQ_INT(kt_store_org_set_auth(world.store, "acme", box, KT_AUTH_BOX_MAX + 1),
                 KT_STORE_INVALID);
    CHECK_EQ_INT(kt_store_org_set_auth(world.store, "nobody", box, sizeof box),
                 KT_STORE_NOT_FOUND);

    CHECK_EQ_INT(kt_store_org_set_state(world.store, "zeta", KT_STATE_DISABLED), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_org_get(world.store, "zeta", &org), KT_STORE_OK);
    CHECK_EQ_INT(org.state, KT_STATE_DISABLED);
    CHECK_EQ_INT(kt_store_org_set_state(world.store, "nobody", KT_STATE_DISABLED),
                 KT_STORE_NOT_FOUND);
    world_close(&world);
}

/* A visitor that re-enters the listing it is called from. */
static int reenter_org_list(const kt_org *org, void *context)
{
    (void)org;
    kt_store *store = context;
    collected ignored = {0};
    CHECK_EQ_INT(kt_store_org_list(store, collect_org, &ignored), KT_STORE_ERROR);
    kt_org found;
    CHECK_EQ_INT(kt_store_org_get(store, "acme", &found), KT_STORE_OK); /* other queries work */
    return 0;
}

TEST(listing_reentry_is_refused_not_corrupted)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    CHECK_EQ_INT(kt_store_org_list(world.store, reenter_org_list, world.store), KT_STORE_OK);
    world_close(&world);
}

/* ---- Clients --------------------------------------------------------------------------------- */

TEST(client_add_get_state_and_list)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_client_record client;
    CHECK_EQ_INT(kt_store_client_get(world.store, world.client.fingerprint, &client),
                 KT_STORE_OK);
    CHECK_EQ_STR(client.org_name, "acme");
    CHECK_EQ_STR(client.org_uuid, world.org.uuid);
    CHECK_EQ_STR(client.name, "host-1");
    CHECK(memcmp(client.public_key, world.client.public_key, KT_SIGN_PUBLIC_BYTES) == 0);
    CHECK_EQ_INT(client.created, 1700000100);
    CHECK_EQ_INT(client.state, KT_STATE_ACTIVE);
    CHECK_EQ_INT(client.org_state, KT_STATE_ACTIVE);

    /* The org's state comes with the client, so one lookup authorizes a request. */
    CHECK_EQ_INT(kt_store_org_set_state(world.store, "acme", KT_STATE_DISABLED), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_client_get(world.store, world.client.fingerprint, &client),
                 KT_STORE_OK);
    CHECK_EQ_INT(client.org_state, KT_STATE_DISABLED);
    CHECK_EQ_INT(client.state, KT_STATE_ACTIVE);
    CHECK_EQ_INT(kt_store_org_set_state(world.store, "acme", KT_STATE_ACTIVE), KT_STORE_OK);

    CHECK_EQ_INT(kt_store_client_add(world.store, &world.client), KT_STORE_CONFLICT);

    kt_client_record orphan;
    char unknown_org[KT_UUID_CHARS + 1];
    kt_uuid_generate(unknown_org);
    REQUIRE(make_client(&orphan, unknown_org, "orphan") == 0);
    CHECK_EQ_INT(kt_store_client_add(world.store, &orphan), KT_STORE_INVALID);
    CHECK(strstr(kt_store_error_message(world.store), "no org") != NULL);

    kt_client_record impostor;
    REQUIRE(make_client(&impostor, world.org.uuid, "impostor") == 0);
    impostor.public_key[0] ^= 1;
    CHECK_EQ_INT(kt_store_client_add(world.store, &impostor), KT_STORE_INVALID);

    kt_org other;
    make_org(&other, "other");
    CHECK_EQ_INT(kt_store_org_add(world.store, &other), KT_STORE_OK);
    kt_client_record second;
    REQUIRE(make_client(&second, other.uuid, "host-2") == 0);
    CHECK_EQ_INT(kt_store_client_add(world.store, &second), KT_STORE_OK);

    CHECK_EQ_INT(kt_store_client_set_state(world.store, second.fingerprint, KT_STATE_DISABLED),
                 KT_STORE_OK);
    CHECK_EQ_INT(kt_store_client_get(world.store, second.fingerprint, &client), KT_STORE_OK);
    CHECK_EQ_INT(client.state, KT_STATE_DISABLED);
    CHECK_EQ_INT(kt_store_client_set_state(world.store, orphan.fingerprint, KT_STATE_DISABLED),
                 KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(kt_store_client_get(world.store, orphan.fingerprint, &client),
                 KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(kt_store_client_get(world.store, "abc", &client), KT_STORE_INVALID);

    collected all = {0};
    CHECK_EQ_INT(kt_store_client_list(world.store, NULL, collect_client, &all), KT_STORE_OK);
    CHECK_EQ_INT(all.count, 2);
    CHECK_EQ_STR(all.names[0], "host-1");
    CHECK_EQ_STR(all.names[1], "host-2");
    collected of_other = {0};
    CHECK_EQ_INT(kt_store_client_list(world.store, "other", collect_client, &of_other),
                 KT_STORE_OK);
    CHECK_EQ_INT(of_other.count, 1);
    CHECK_EQ_STR(of_other.names[0], "host-2");
    collected none = {0};
    CHECK_EQ_INT(kt_store_client_list(world.store, "nobody", collect_client, &none),
                 KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(none.count, 0);
    world_close(&world);
}

/* ---- Deposits -------------------------------------------------------------------------------- */

TEST(deposit_put_get_and_conflicts)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "disk/sda1", 42);
    deposit.state = KT_STATE_ACTIVE;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);

    kt_deposit found;
    CHECK_EQ_INT(kt_store_deposit_get(world.store, world.client.fingerprint, deposit.uuid,
                                      &found), KT_STORE_OK);
    CHECK_EQ_STR(found.handle, "disk/sda1");
    CHECK_EQ_STR(found.description, "deposit disk/sda1");
    CHECK_EQ_STR(found.client, world.client.fingerprint);
    CHECK_EQ_INT(found.created, 42);
    CHECK_EQ_INT(found.box_length, sizeof small_box);
    CHECK(found.box && memcmp(found.box, small_box, sizeof small_box) == 0);
    kt_deposit_clear(&found);
    CHECK(found.box == NULL && found.box_length == 0);
    kt_deposit_clear(&found); /* twice is fine */

    CHECK_EQ_INT(kt_store_deposit_get_by_handle(world.store, world.client.fingerprint,
                                                "disk/sda1", &found), KT_STORE_OK);
    CHECK_EQ_STR(found.uuid, deposit.uuid);
    kt_deposit_clear(&found);
    CHECK_EQ_INT(kt_store_deposit_get_by_handle(world.store, world.client.fingerprint,
                                                "disk/sdb1", &found), KT_STORE_NOT_FOUND);

    kt_deposit same_handle;
    make_deposit(&same_handle, world.client.fingerprint, "disk/sda1", 43);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &same_handle), KT_STORE_CONFLICT);
    CHECK_EQ_STR(kt_store_error_message(world.store),
                 "this client already has a deposit with that handle");
    kt_deposit same_uuid = deposit;
    snprintf(same_uuid.handle, sizeof same_uuid.handle, "another");
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &same_uuid), KT_STORE_CONFLICT);
    world_close(&world);
}

TEST(deposit_invalid_fields_are_refused)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    const char *fingerprint = world.client.fingerprint;
    kt_deposit deposit;
    make_deposit(&deposit, fingerprint, "tab\there", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    CHECK(strstr(kt_store_error_message(world.store), "control character") != NULL);
    make_deposit(&deposit, fingerprint, "", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "bad \xff utf8", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "overlong \xc0\xaf slash", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "Schl\xc3\xbcssel \xe2\x82\xac", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    make_deposit(&deposit, fingerprint, "x", 1);
    memset(deposit.handle, 'h', KT_HANDLE_MAX);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK); /* 255 bytes */
    make_deposit(&deposit, fingerprint, "x", 1);
    memset(deposit.handle, 'h', sizeof deposit.handle); /* 256 bytes, no terminator */
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "long-description", 1);
    memset(deposit.description, 'd', sizeof deposit.description);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "short-box", 1);
    deposit.box_length = KT_AEAD_OVERHEAD - 1;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "no-box", 1);
    deposit.box = NULL;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, "lowercase0123456789abcdef0123456789abcde", "bad-client", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    make_deposit(&deposit, fingerprint, "bad-uuid", 1);
    deposit.uuid[0] = 'X';
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    world_close(&world);
}

TEST(deposit_box_of_maximum_size_round_trips)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    unsigned char *box = malloc(KT_DEPOSIT_BOX_MAX + 1);
    REQUIRE(box != NULL);
    for (size_t index = 0; index < KT_DEPOSIT_BOX_MAX + 1; index++) {
        box[index] = index % 7 == 0 ? 0 : (unsigned char)(index * 31u);
    }
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "big", 1);
    deposit.box = box;
    deposit.box_length = KT_DEPOSIT_BOX_MAX;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    kt_deposit found;
    CHECK_EQ_INT(kt_store_deposit_get(world.store, world.client.fingerprint, deposit.uuid,
                                      &found), KT_STORE_OK);
    CHECK_EQ_INT(found.box_length, KT_DEPOSIT_BOX_MAX);
    CHECK(found.box && memcmp(found.box, box, KT_DEPOSIT_BOX_MAX) == 0);
    kt_deposit_clear(&found);
    make_deposit(&deposit, world.client.fingerprint, "too-big", 1);
    deposit.box = box;
    deposit.box_length = KT_DEPOSIT_BOX_MAX + 1;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_INVALID);
    free(box);
    world_close(&world);
}

TEST(deposit_list_search_is_literal_and_ordered)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    const char *handles[] = {"100%_done", "100x done", "plain", "under_score"};
    const int64_t created[] = {30, 10, 20, 40};
    for (size_t index = 0; index < 4; index++) {
        kt_deposit deposit;
        make_deposit(&deposit, world.client.fingerprint, handles[index], created[index]);
        CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    }
    collected all = {0};
    CHECK_EQ_INT(kt_store_deposit_list(world.store, world.client.fingerprint, NULL,
                                       collect_deposit, &all), KT_STORE_OK);
    CHECK_EQ_INT(all.count, 4);
    CHECK_EQ_STR(all.names[0], "100x done");
    CHECK_EQ_STR(all.names[1], "plain");
    CHECK_EQ_STR(all.names[2], "100%_done");
    CHECK_EQ_STR(all.names[3], "under_score");
    collected percent = {0};
    CHECK_EQ_INT(kt_store_deposit_list(world.store, world.client.fingerprint, "%",
                                       collect_deposit, &percent), KT_STORE_OK);
    CHECK_EQ_INT(percent.count, 1);
    CHECK_EQ_STR(percent.names[0], "100%_done");
    collected underscore = {0};
    CHECK_EQ_INT(kt_store_deposit_list(world.store, world.client.fingerprint, "_",
                                       collect_deposit, &underscore), KT_STORE_OK);
    CHECK_EQ_INT(underscore.count, 2);
    collected description = {0}; /* every description is "deposit <handle>" */
    CHECK_EQ_INT(kt_store_deposit_list(world.store, world.client.fingerprint, "deposit pl",
                                       collect_deposit, &description), KT_STORE_OK);
    CHECK_EQ_INT(description.count, 1);
    collected nothing = {0};
    CHECK_EQ_INT(kt_store_deposit_list(world.store, world.client.fingerprint, "absent",
                                       collect_deposit, &nothing), KT_STORE_OK);
    CHECK_EQ_INT(nothing.count, 0);
    world_close(&world);
}

TEST(deposit_state_purge_and_client_scoping)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_client_record other;
    REQUIRE(make_client(&other, world.org.uuid, "host-2") == 0);
    CHECK_EQ_INT(kt_store_client_add(world.store, &other), KT_STORE_OK);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "mine", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);

    kt_deposit found;
    CHECK_EQ_INT(kt_store_deposit_get(world.store, other.fingerprint, deposit.uuid, &found),
                 KT_STORE_NOT_FOUND);
    CHECK(found.box == NULL);
    CHECK_EQ_INT(kt_store_deposit_get_by_handle(world.store, other.fingerprint, "mine", &found),
                 KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(kt_store_deposit_set_state(world.store, other.fingerprint, deposit.uuid,
                                            KT_STATE_DISABLED), KT_STORE_NOT_FOUND);
    CHECK_EQ_INT(kt_store_deposit_purge(world.store, other.fingerprint, deposit.uuid),
                 KT_STORE_NOT_FOUND);
    collected listed = {0};
    CHECK_EQ_INT(kt_store_deposit_list(world.store, other.fingerprint, NULL, collect_deposit,
                                       &listed), KT_STORE_OK);
    CHECK_EQ_INT(listed.count, 0);
    kt_deposit same_handle; /* handles are per client */
    make_deposit(&same_handle, other.fingerprint, "mine", 2);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &same_handle), KT_STORE_OK);

    CHECK_EQ_INT(kt_store_deposit_set_state(world.store, world.client.fingerprint,
                                            deposit.uuid, KT_STATE_DISABLED), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_get(world.store, world.client.fingerprint, deposit.uuid,
                                      &found), KT_STORE_OK);
    CHECK_EQ_INT(found.state, KT_STATE_DISABLED);
    kt_deposit_clear(&found);
    CHECK_EQ_INT(kt_store_deposit_purge(world.store, world.client.fingerprint, deposit.uuid),
                 KT_STORE_OK);
    CHECK(!deposit_exists(world.store, world.client.fingerprint, deposit.uuid));
    CHECK_EQ_INT(kt_store_deposit_purge(world.store, world.client.fingerprint, deposit.uuid),
                 KT_STORE_NOT_FOUND);
    CHECK(deposit_exists(world.store, other.fingerprint, same_handle.uuid));
    world_close(&world);
}

/* ---- Batches and readers --------------------------------------------------------------------- */

TEST(batch_keeps_good_requests_and_drops_the_failing_one)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    const char *client = world.client.fingerprint;
    kt_deposit first, conflicting, third;
    make_deposit(&first, client, "a", 1);
    make_deposit(&conflicting, client, "a", 2);
    make_deposit(&third, client, "c", 3);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_ERROR);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &first), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &conflicting), KT_STORE_CONFLICT);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &third), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_OK);
    CHECK(deposit_exists(world.store, client, first.uuid));
    CHECK(!deposit_exists(world.store, client, conflicting.uuid));
    CHECK(deposit_exists(world.store, client, third.uuid));
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_ERROR); /* no batch open */
    kt_store_counts counts;
    CHECK_EQ_INT(kt_store_count(world.store, &counts), KT_STORE_OK);
    CHECK_EQ_INT(counts.orgs, 1);
    CHECK_EQ_INT(counts.clients, 1);
    CHECK_EQ_INT(counts.deposits, 2);
    world_close(&world);
}

TEST(batch_rollback_discards_everything)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "discarded", 1);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_org_set_state(world.store, "acme", KT_STATE_DISABLED), KT_STORE_OK);
    CHECK(deposit_exists(world.store, world.client.fingerprint, deposit.uuid));
    kt_store_rollback(world.store);
    kt_store_rollback(world.store); /* nothing open: no effect */
    CHECK(!deposit_exists(world.store, world.client.fingerprint, deposit.uuid));
    kt_org org;
    CHECK_EQ_INT(kt_store_org_get(world.store, "acme", &org), KT_STORE_OK);
    CHECK_EQ_INT(org.state, KT_STATE_ACTIVE);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK); /* usable after */
    world_close(&world);
}

TEST(reader_sees_committed_rows_only)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_store *reader = open_store(world.path, false);
    REQUIRE(reader != NULL);
    const char *client = world.client.fingerprint;
    kt_deposit committed, pending;
    make_deposit(&committed, client, "committed", 1);
    make_deposit(&pending, client, "pending", 2);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &committed), KT_STORE_OK);
    CHECK(deposit_exists(reader, client, committed.uuid));
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &pending), KT_STORE_OK);
    CHECK(!deposit_exists(reader, client, pending.uuid));
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_OK);
    CHECK(deposit_exists(reader, client, pending.uuid));

    kt_deposit refused;
    make_deposit(&refused, client, "from-reader", 3);
    CHECK_EQ_INT(kt_store_deposit_put(reader, &refused), KT_STORE_ERROR);
    CHECK(strstr(kt_store_error_message(reader), "reader") != NULL);
    CHECK_EQ_INT(kt_store_begin(reader), KT_STORE_ERROR);
    CHECK_EQ_INT(kt_store_checkpoint(reader), KT_STORE_ERROR);
    CHECK_EQ_INT(kt_store_schema_version(reader), 1);
    kt_store_close(reader);
    world_close(&world);
}

TEST(read_transaction_is_one_snapshot)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_store *reader = open_store(world.path, false);
    REQUIRE(reader != NULL);
    const char *client = world.client.fingerprint;
    kt_deposit first, later;
    make_deposit(&first, client, "first", 1);
    make_deposit(&later, client, "later", 2);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &first), KT_STORE_OK);

    CHECK_EQ_INT(kt_store_read_begin(reader), KT_STORE_OK);
    CHECK(deposit_exists(reader, client, first.uuid));
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &later), KT_STORE_OK); /* committed meanwhile */
    CHECK_EQ_INT(kt_store_client_set_state(world.store, client, KT_STATE_DISABLED), KT_STORE_OK);
    kt_client_record seen;
    CHECK_EQ_INT(kt_store_client_get(reader, client, &seen), KT_STORE_OK);
    CHECK_EQ_INT(seen.state, KT_STATE_ACTIVE);        /* still the snapshot of read_begin */
    CHECK(!deposit_exists(reader, client, later.uuid));
    kt_store_read_end(reader);
    kt_store_read_end(reader); /* nothing open: no effect */

    CHECK_EQ_INT(kt_store_client_get(reader, client, &seen), KT_STORE_OK);
    CHECK_EQ_INT(seen.state, KT_STATE_DISABLED); /* a new read sees the change at once */
    CHECK(deposit_exists(reader, client, later.uuid));
    CHECK_EQ_INT(kt_store_read_begin(reader), KT_STORE_OK); /* usable again */
    kt_store_read_end(reader);

    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_read_begin(world.store), KT_STORE_ERROR); /* inside a batch */
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_OK);
    kt_store_close(reader);
    world_close(&world);
}

/* ---- Maintenance ----------------------------------------------------------------------------- */

TEST(integrity_check_and_counts)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    CHECK_EQ_INT(kt_store_integrity_check(world.store), KT_STORE_OK);
    kt_store_counts counts = {0};
    CHECK_EQ_INT(kt_store_count(world.store, &counts), KT_STORE_OK);
    CHECK_EQ_INT(counts.orgs, 1);
    CHECK_EQ_INT(counts.clients, 1);
    CHECK_EQ_INT(counts.deposits, 0);
    world_close(&world);
}

TEST(manual_checkpoints_leave_the_wal_until_checkpoint_truncates_it)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_store_close(world.store);
    kt_store_options options = writer_options();
    options.manual_checkpoints = true;
    char error[512];
    REQUIRE(kt_store_open(&world.store, world.path, &options, error, sizeof error) == 0);
    long long database_before = file_size(world.path);
    unsigned char *box = calloc(1, KT_DEPOSIT_BOX_MAX);
    REQUIRE(box != NULL);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    for (int index = 0; index < 80; index++) { /* ~1400 pages: past the default autocheckpoint */
        char handle[32];
        snprintf(handle, sizeof handle, "bulk-%d", index);
        kt_deposit deposit;
        make_deposit(&deposit, world.client.fingerprint, handle, index);
        deposit.box = box;
        deposit.box_length = KT_DEPOSIT_BOX_MAX;
        CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    }
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_OK);
    free(box);
    CHECK_EQ_INT(file_size(world.path), database_before); /* nothing checkpointed */
    CHECK(wal_size(&world) > 80LL * KT_DEPOSIT_MAX);
    kt_store_close(world.store);
    CHECK(wal_size(&world) > 0); /* no checkpoint on close either */
    REQUIRE(kt_store_open(&world.store, world.path, &options, error, sizeof error) == 0);
    CHECK_EQ_INT(kt_store_checkpoint(world.store), KT_STORE_OK);
    CHECK_EQ_INT(wal_size(&world), 0);
    CHECK(file_size(world.path) > 80LL * KT_DEPOSIT_MAX);
    kt_store_counts counts;
    CHECK_EQ_INT(kt_store_count(world.store, &counts), KT_STORE_OK);
    CHECK_EQ_INT(counts.deposits, 80);
    CHECK_EQ_INT(kt_store_integrity_check(world.store), KT_STORE_OK);
    world_close(&world);
}

TEST(checkpoint_reports_busy_reader)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_store_close(world.store);
    kt_store_options options = writer_options();
    options.manual_checkpoints = true;
    options.busy_timeout_ms = 50;
    char error[512];
    REQUIRE(kt_store_open(&world.store, world.path, &options, error, sizeof error) == 0);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "held", 1);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    sqlite3 *reader = NULL; /* a read transaction holding the current WAL snapshot */
    REQUIRE(sqlite3_open_v2(world.path, &reader, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM deposits;", NULL, NULL, NULL) ==
          SQLITE_OK);
    make_deposit(&deposit, world.client.fingerprint, "after", 2);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_checkpoint(world.store), KT_STORE_ERROR);
    CHECK(strstr(kt_store_error_message(world.store), "could not finish") != NULL);
    CHECK(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_close(reader) == SQLITE_OK);
    CHECK_EQ_INT(kt_store_checkpoint(world.store), KT_STORE_OK);
    CHECK_EQ_INT(wal_size(&world), 0);
    world_close(&world);
}

/* ---- Failed commits -------------------------------------------------------------------------- */

typedef struct classifier_record {
    int calls;
    int last_code;
    kt_store_status verdict;
} classifier_record;

static kt_store_status record_classification(void *context, int sqlite_code)
{
    classifier_record *record = context;
    record->calls++;
    record->last_code = sqlite_code;
    return record->verdict;
}

TEST(failed_commit_is_classified_and_rolled_back)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    classifier_record record = {.verdict = KT_STORE_REFUSED};
    kt_store_set_commit_classifier(world.store, record_classification, &record);
    const char *client = world.client.fingerprint;
    kt_deposit lost, kept;
    make_deposit(&lost, client, "lost", 1);
    make_deposit(&kept, client, "kept", 2);

    shim.failing_syncs = 1;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &lost), KT_STORE_REFUSED);
    CHECK_EQ_INT(shim.failing_syncs, 0);
    CHECK_EQ_INT(record.calls, 1);
    CHECK_EQ_INT(record.last_code, SQLITE_IOERR_FSYNC);
    CHECK(strstr(kt_store_error_message(world.store), "refused") != NULL);
    CHECK(!deposit_exists(world.store, client, lost.uuid));
    kt_store *reader = open_store(world.path, false);
    REQUIRE(reader != NULL);
    CHECK(!deposit_exists(reader, client, lost.uuid));

    CHECK_EQ_INT(kt_store_deposit_put(world.store, &kept), KT_STORE_OK);
    CHECK_EQ_INT(record.calls, 1);
    CHECK(deposit_exists(world.store, client, kept.uuid));
    CHECK(deposit_exists(reader, client, kept.uuid));
    CHECK(!deposit_exists(reader, client, lost.uuid));
    kt_store_close(reader);

    kt_store_close(world.store); /* and the lost row does not come back from the WAL */
    world.store = open_store(world.path, true);
    REQUIRE(world.store != NULL);
    CHECK(!deposit_exists(world.store, client, lost.uuid));
    CHECK(deposit_exists(world.store, client, kept.uuid));
    CHECK_EQ_INT(kt_store_integrity_check(world.store), KT_STORE_OK);
    world_close(&world);
}

TEST(failed_batch_commit_loses_the_whole_batch)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    classifier_record record = {.verdict = KT_STORE_INDETERMINATE};
    kt_store_set_commit_classifier(world.store, record_classification, &record);
    const char *client = world.client.fingerprint;
    kt_deposit first, second, after;
    make_deposit(&first, client, "first", 1);
    make_deposit(&second, client, "second", 2);
    make_deposit(&after, client, "after", 3);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &first), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &second), KT_STORE_OK);
    shim.failing_syncs = 1;
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_INDETERMINATE);
    CHECK_EQ_INT(record.calls, 1);
    CHECK(!deposit_exists(world.store, client, first.uuid));
    CHECK(!deposit_exists(world.store, client, second.uuid));
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &after), KT_STORE_OK);
    CHECK(deposit_exists(world.store, client, after.uuid));
    world_close(&world);
}

TEST(failed_commit_without_classifier_is_an_error)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    kt_deposit deposit;
    make_deposit(&deposit, world.client.fingerprint, "unlucky", 1);
    shim.failing_syncs = 1;
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_ERROR);
    CHECK(strstr(kt_store_error_message(world.store), "commit failed") != NULL);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &deposit), KT_STORE_OK);
    world_close(&world);
}

TEST(batch_abandoned_by_sqlite_fails_to_its_end)
{
    test_world world;
    REQUIRE(world_open(&world) == 0);
    const char *client = world.client.fingerprint;
    kt_deposit first;
    make_deposit(&first, client, "first", 1);
    unsigned char *box = calloc(1, KT_DEPOSIT_BOX_MAX);
    REQUIRE(box != NULL);
    CHECK_EQ_INT(kt_store_begin(world.store), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &first), KT_STORE_OK);
    /* Large rows overflow the page cache, which spills to the WAL mid-batch; that write fails. */
    shim.failing_writes = 1;
    kt_store_status status = KT_STORE_OK;
    for (int index = 0; index < 200 && status == KT_STORE_OK; index++) {
        char handle[32];
        snprintf(handle, sizeof handle, "spill-%d", index);
        kt_deposit large;
        make_deposit(&large, client, handle, 2 + index);
        large.box = box;
        large.box_length = KT_DEPOSIT_BOX_MAX;
        status = kt_store_deposit_put(world.store, &large);
    }
    free(box);
    shim.failing_writes = 0;
    CHECK_EQ_INT(status, KT_STORE_FULL);
    kt_deposit later;
    make_deposit(&later, client, "later", 500);
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &later), KT_STORE_FULL);
    CHECK(strstr(kt_store_error_message(world.store), "earlier request") != NULL);
    CHECK_EQ_INT(kt_store_commit(world.store), KT_STORE_FULL);
    CHECK(!deposit_exists(world.store, client, first.uuid));
    CHECK(!deposit_exists(world.store, client, later.uuid));
    CHECK_EQ_INT(kt_store_deposit_put(world.store, &later), KT_STORE_OK);
    CHECK_EQ_INT(kt_store_integrity_check(world.store), KT_STORE_OK);
    world_close(&world);
}

/* ---- Names ----------------------------------------------------------------------------------- */

TEST(status_and_state_names)
{
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_OK), "ok");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_NOT_FOUND), "not_found");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_CONFLICT), "conflict");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_INVALID), "invalid");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_REFUSED), "refused");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_INDETERMINATE), "indeterminate");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_FULL), "full");
    CHECK_EQ_STR(kt_store_status_name(KT_STORE_ERROR), "error");
    CHECK_EQ_STR(kt_state_name(KT_STATE_ACTIVE), "active");
    CHECK_EQ_STR(kt_state_name(KT_STATE_DISABLED), "disabled");
    kt_state state = KT_STATE_ACTIVE;
    CHECK(kt_state_parse("disabled", &state) == 0 && state == KT_STATE_DISABLED);
    CHECK(kt_state_parse("active", &state) == 0 && state == KT_STATE_ACTIVE);
    CHECK(kt_state_parse("Active", &state) == -1);
    CHECK(kt_state_parse(NULL, &state) == -1);
    CHECK_EQ_STR(kt_store_error_message(NULL), "no store");
    kt_store_close(NULL);
}

int main(void)
{
    if (kt_crypto_init() != 0 || shim_register() != 0) {
        fprintf(stderr, "test_storage: cannot initialise crypto or register the test VFS\n");
        return 1;
    }
    memset(small_box, 0x5A, sizeof small_box);
    small_box[3] = 0;
    return unit_run();
}
