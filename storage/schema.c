/*
 * schema.c — the database schema as an ordered list of migrations, and the code that applies them.
 *
 * PRAGMA user_version holds the number of migrations applied. Opening a writer applies each
 * missing migration in its own transaction, with user_version bumped inside that transaction, so a
 * crash leaves the database at a whole version. A database newer than this build is refused rather
 * than guessed at. Migrations that have shipped are never edited: a change is a new entry.
 *
 * Tables are STRICT (SQLite 3.37 or later; Debian 12 has 3.40) and carry CHECK constraints that
 * repeat the limits of storage.h, so a row that breaks them cannot get in by any path.
 */
#include <stdio.h>

#include "storage/internal.h"

_Static_assert(KT_ORG_NAME_MAX == 64, "migration 1 spells out the org name limit");
_Static_assert(KT_CONTACTS_MAX == 512, "migration 1 spells out the contacts limit");
_Static_assert(KT_CLIENT_NAME_MAX == 128, "migration 1 spells out the client name limit");
_Static_assert(KT_HANDLE_MAX == 255, "migration 1 spells out the handle limit");
_Static_assert(KT_DESCRIPTION_MAX == 1024, "migration 1 spells out the description limit");
_Static_assert(KT_AEAD_OVERHEAD == 40, "migration 1 spells out the smallest box");
_Static_assert(KT_AUTH_BOX_MAX == 168, "migration 1 spells out the auth box limit");
_Static_assert(KT_DEPOSIT_BOX_MAX == 65576, "migration 1 spells out the deposit box limit");
_Static_assert(KT_UUID_CHARS == 36 && KT_FINGERPRINT_CHARS == 40 && KT_SIGN_PUBLIC_BYTES == 32,
               "migration 1 spells out identifier lengths");

/* Migration 1: orgs, their clients, and the clients' deposits. The UNIQUE (client, handle)
 * constraint is also the index for lookups by handle; deposits_by_client_created serves listings
 * (its entries end in the rowid, which breaks ties in creation order); clients_by_org serves an
 * org's client listing in its order. */
static const char migration_1[] =
    "CREATE TABLE orgs ("
    "  uuid     TEXT    NOT NULL PRIMARY KEY CHECK (length(uuid) = 36),"
    "  name     TEXT    NOT NULL UNIQUE"
    "           CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9_.-]*'),"
    "  contacts TEXT    NOT NULL DEFAULT '' CHECK (length(CAST(contacts AS BLOB)) <= 512),"
    "  created  INTEGER NOT NULL,"
    "  expires  INTEGER NOT NULL DEFAULT 0 CHECK (expires >= 0),"
    "  state    TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),"
    "  auth_box BLOB    CHECK (auth_box IS NULL OR length(auth_box) BETWEEN 40 AND 168)"
    ") STRICT;"
    "CREATE TABLE clients ("
    "  fingerprint TEXT    NOT NULL PRIMARY KEY CHECK (length(fingerprint) = 40),"
    "  org_uuid    TEXT    NOT NULL REFERENCES orgs (uuid),"
    "  name        TEXT    NOT NULL DEFAULT '' CHECK (length(CAST(name AS BLOB)) <= 128),"
    "  public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),"
    "  created     INTEGER NOT NULL,"
    "  state       TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled'))"
    ") STRICT;"
    "CREATE INDEX clients_by_org ON clients (org_uuid, created, fingerprint);"
    "CREATE TABLE deposits ("
    "  uuid        TEXT    NOT NULL PRIMARY KEY CHECK (length(uuid) = 36),"
    "  client      TEXT    NOT NULL REFERENCES clients (fingerprint),"
    "  handle      TEXT    NOT NULL CHECK (length(CAST(handle AS BLOB)) BETWEEN 1 AND 255),"
    "  description TEXT    NOT NULL DEFAULT ''"
    "              CHECK (length(CAST(description AS BLOB)) <= 1024),"
    "  created     INTEGER NOT NULL,"
    "  state       TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),"
    "  box         BLOB    NOT NULL CHECK (length(box) BETWEEN 40 AND 65576),"
    "  UNIQUE (client, handle)"
    ") STRICT;"
    "CREATE INDEX deposits_by_client_created ON deposits (client, created);";

static const char *const migrations[] = {
    migration_1,
};

#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

int kt_store_latest_schema_version(void)
{
    return MIGRATION_COUNT;
}

/* The integer a one-row PRAGMA answers. */
static int read_pragma_integer(sqlite3 *db, const char *pragma, int *value)
{
    sqlite3_stmt *statement = NULL;
    int code = sqlite3_prepare_v2(db, pragma, -1, &statement, NULL);
    if (code == SQLITE_OK) {
        code = sqlite3_step(statement);
    }
    if (code == SQLITE_ROW) {
        *value = sqlite3_column_int(statement, 0);
    }
    (void)sqlite3_finalize(statement); /* repeats the step's error, handled above */
    return code == SQLITE_ROW ? 0 : -1;
}

int kt_schema_read_version(sqlite3 *db, int *version)
{
    return read_pragma_integer(db, "PRAGMA user_version", version);
}

int kt_schema_page_count(sqlite3 *db, int *pages)
{
    return read_pragma_integer(db, "PRAGMA page_count", pages);
}

int kt_schema_refuse_newer(int version, char *error, size_t error_size)
{
    if (version <= MIGRATION_COUNT) {
        return 0;
    }
    snprintf(error, error_size,
             "database schema version %d is newer than this keytrustee (%d); upgrade keytrustee",
             version, MIGRATION_COUNT);
    return -1;
}

static int execute(sqlite3 *db, const char *sql, const char *doing, char *error,
                   size_t error_size)
{
    int code = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (code != SQLITE_OK) {
        snprintf(error, error_size, "%s: %s (%s)", doing, sqlite3_errmsg(db),
                 sqlite3_errstr(code));
        return -1;
    }
    return 0;
}

/* Inside an open transaction: applies migration `target` and records it. */
static int apply_migration(sqlite3 *db, int target, char *error, size_t error_size)
{
    char doing[96];
    snprintf(doing, sizeof doing, "migrating the database to schema version %d failed", target);
    if (execute(db, migrations[target - 1], doing, error, error_size) != 0) {
        return -1;
    }
    char record[64];
    snprintf(record, sizeof record, "PRAGMA user_version = %d", target);
    if (execute(db, record, doing, error, error_size) != 0) {
        return -1;
    }
    return execute(db, "COMMIT", doing, error, error_size);
}

/* Applies the next migration, re-reading the version under the write lock. *finished is set when
 * there was nothing left to do. */
static int migrate_next(sqlite3 *db, bool *finished, char *error, size_t error_size)
{
    if (execute(db, "BEGIN IMMEDIATE", "locking the database to migrate it failed", error,
                error_size) != 0) {
        return -1;
    }
    int version = 0;
    int result = 0;
    if (kt_schema_read_version(db, &version) != 0) {
        snprintf(error, error_size, "reading the schema version failed: %s", sqlite3_errmsg(db));
        result = -1;
    } else if (kt_schema_refuse_newer(version, error, error_size) != 0) {
        result = -1;
    } else if (version == MIGRATION_COUNT) {
        *finished = true;
    } else {
        result = apply_migration(db, version + 1, error, error_size);
    }
    if (!sqlite3_get_autocommit(db)) {
        /* nothing to keep: either finished (no change) or failed; a failure here changes nothing */
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return result;
}

int kt_schema_migrate(sqlite3 *db, char *error, size_t error_size)
{
    int version = 0;
    if (kt_schema_read_version(db, &version) != 0) {
        snprintf(error, error_size, "reading the schema version failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (kt_schema_refuse_newer(version, error, error_size) != 0) {
        return -1;
    }
    bool finished = version == MIGRATION_COUNT;
    while (!finished) {
        if (migrate_next(db, &finished, error, error_size) != 0) {
            return -1;
        }
    }
    return 0;
}

int kt_schema_check_current(sqlite3 *db, char *error, size_t error_size)
{
    int version = 0;
    if (kt_schema_read_version(db, &version) != 0) {
        snprintf(error, error_size, "reading the schema version failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (kt_schema_refuse_newer(version, error, error_size) != 0) {
        return -1;
    }
    if (version < MIGRATION_COUNT) {
        snprintf(error, error_size,
                 "database schema version %d is older than this keytrustee (%d); start "
                 "keytrustee-db once so it migrates the database", version, MIGRATION_COUNT);
        return -1;
    }
    return 0;
}
