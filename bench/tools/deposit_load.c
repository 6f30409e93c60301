/*
 * deposit_load.c — fills a freshly bootstrapped keytrustee database with N deposits, in big
 * batches, for the scale suite of `make bench` (bench/candidate.sh, candidate_scale_rows).
 *
 *   deposit_load --database FILE --server-key FILE --key-out FILE --uuids-out FILE --count N
 *                [--batch ROWS] [--secret-bytes BYTES]
 *
 * Why it exists: storing 1M deposits one replicated commit at a time takes longer than the whole
 * 15-minute budget of `make bench`. This tool writes the same rows the HTTPS path writes, through
 * the same storage/ functions keytrustee-db's writer calls, before keytrustee-db first starts:
 *   - an org "bench-scale" (no auth secret) as org.add stores it (kt_store_org_add);
 *   - one client with a fresh Ed25519 key pair as client.add stores it (kt_store_client_add); the
 *     secret key goes to --key-out in ktclient's client.key format ("keytrustee-client-key-v1
 *     <base64 of the 64-byte secret key>", 0600), so bench/wrk/kt_signed.lua can sign as it;
 *   - N deposits as deposit.put stores them (kt_store_deposit_put): a random secret of
 *     --secret-bytes sealed with XChaCha20-Poly1305 under the server's data key, bound to
 *     (org uuid, client fingerprint, deposit uuid) exactly as app/keytrusteed/deposits.c seals it,
 *     so keytrusteed opens them like any other deposit.
 * Rows are committed --batch at a time (default 20000) instead of one per commit, on a connection
 * with a 256 MiB page cache (large_cache below); those are the only differences from the API path,
 * and the reason it fits the budget. Neither changes what is stored.
 *
 * Invariants: the database must not be open by keytrustee-db (replication's log starts at the
 * first keytrustee-db start, so rows written before it are part of the base the passive copies
 * with `ktadmin init-slave`; rows written behind a running replication would not be). The org
 * must not exist yet (a second run on the same file fails with a conflict, changing nothing).
 * Every uuid stored is appended to --uuids-out, one a line, for random reads.
 *
 * Prints one JSON line: {"deposits", "seconds", "rows_per_s", "client", "batch", "secret_bytes"}.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "crypto/crypto.h"
#include "storage/storage.h"

#define ORG_NAME "bench-scale"
#define KEY_PREFIX "keytrustee-client-key-v1 "
#define ASSOCIATED_BYTES (KT_UUID_CHARS + 1 + KT_FINGERPRINT_CHARS + 1 + KT_UUID_CHARS)
#define SECRET_MAX 4096
/* SQLite page cache of the loading connection, in KiB (negative: PRAGMA cache_size's KiB form). */
#define LOAD_CACHE_PRAGMA "PRAGMA cache_size = -262144"

typedef struct load_options {
    const char *database;
    const char *server_key;
    const char *key_out;
    const char *uuids_out;
    long count;
    long batch;
    long secret_bytes;
} load_options;

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "deposit_load: %s%s%s\n", what, detail != NULL ? ": " : "",
            detail != NULL ? detail : "");
    return 1;
}

static int usage(void)
{
    fputs("usage: deposit_load --database FILE --server-key FILE --key-out FILE --uuids-out FILE "
          "--count N [--batch ROWS] [--secret-bytes BYTES]\n", stderr);
    return 2;
}

static int parse_count(const char *text, long low, long high, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < low || value > high)
        return -1;
    *out = value;
    return 0;
}

static int parse_options(int argc, char **argv, load_options *options)
{
    *options = (load_options){.batch = 20000, .secret_bytes = 40, .count = -1};
    for (int index = 1; index < argc; index += 2) {
        const char *name = argv[index], *value = index + 1 < argc ? argv[index + 1] : NULL;
        if (value == NULL)
            return -1;
        if (strcmp(name, "--database") == 0)
            options->database = value;
        else if (strcmp(name, "--server-key") == 0)
            options->server_key = value;
        else if (strcmp(name, "--key-out") == 0)
            options->key_out = value;
        else if (strcmp(name, "--uuids-out") == 0)
            options->uuids_out = value;
        else if (strcmp(name, "--count") == 0) {
            if (parse_count(value, 1, 100000000L, &options->count) != 0)
                return -1;
        } else if (strcmp(name, "--batch") == 0) {
            if (parse_count(value, 1, 1000000L, &options->batch) != 0)
                return -1;
        } else if (strcmp(name, "--secret-bytes") == 0) {
            if (parse_count(value, 1, SECRET_MAX, &options->secret_bytes) != 0)
                return -1;
        } else
            return -1;
    }
    return options->database && options->server_key && options->key_out && options->uuids_out &&
                   options->count > 0
               ? 0
               : -1;
}

/* Registered with sqlite3_auto_extension, so it runs on the connection kt_store_open makes: a
 * 256 MiB page cache instead of SQLite's 2 MiB default. Random uuids land all over the primary-key
 * index; with the small cache every batch spills and re-reads index pages (mostly system time).
 * Only memory changes — the rows, the indexes and the file's format are the same. */
static int large_cache(sqlite3 *db, const char **error, const struct sqlite3_api_routines *api)
{
    (void)api;
    if (sqlite3_exec(db, LOAD_CACHE_PRAGMA, NULL, NULL, NULL) != SQLITE_OK) {
        *error = sqlite3_mprintf("%s failed: %s", LOAD_CACHE_PRAGMA, sqlite3_errmsg(db));
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* A new key pair: the client row's public half, the secret half written to key_out. */
static int make_client(const char *key_out, kt_client_record *client)
{
    kt_secret *secret_key = NULL;
    if (kt_sign_keypair(client->public_key, &secret_key) != 0)
        return fail("cannot make a client key pair", NULL);
    size_t prefix = strlen(KEY_PREFIX);
    size_t encoded = kt_base64_encoded_size(KT_SIGN_SECRET_BYTES);
    kt_secret *line = kt_secret_new(prefix + encoded + 1);
    char error[512];
    int status = 1;
    if (line == NULL) {
        kt_secret_free(secret_key);
        return fail("out of secure memory", NULL);
    }
    memcpy(line->bytes, KEY_PREFIX, prefix);
    if (kt_base64_encode((char *)line->bytes + prefix, encoded, secret_key->bytes,
                         KT_SIGN_SECRET_BYTES) != 0)
        fail("cannot encode the client key", NULL);
    else {
        size_t length = strlen((const char *)line->bytes);
        line->bytes[length] = '\n';
        if (kt_write_file_atomic(key_out, line->bytes, length + 1, 0600, error, sizeof error) != 0)
            fail("cannot write the client key", error);
        else
            status = 0;
    }
    kt_secret_free(line);
    kt_secret_free(secret_key);
    if (status == 0) {
        kt_fingerprint(client->fingerprint, client->public_key);
        snprintf(client->name, sizeof client->name, "bench-scale-client");
        client->created = (int64_t)time(NULL);
        client->state = KT_STATE_ACTIVE;
    }
    return status;
}

static int add_org_and_client(kt_store *store, const char *key_out, kt_client_record *client)
{
    kt_org org = {.state = KT_STATE_ACTIVE};
    kt_uuid_generate(org.uuid);
    snprintf(org.name, sizeof org.name, "%s", ORG_NAME);
    org.created = (int64_t)time(NULL);
    kt_store_status status = kt_store_org_add(store, &org);
    if (status != KT_STORE_OK)
        return fail("cannot add the org " ORG_NAME " (is the database fresh?)",
                    kt_store_error_message(store));
    if (make_client(key_out, client) != 0)
        return 1;
    memcpy(client->org_uuid, org.uuid, sizeof client->org_uuid);
    snprintf(client->org_name, sizeof client->org_name, "%s", ORG_NAME);
    if (kt_store_client_add(store, client) != KT_STORE_OK)
        return fail("cannot add the client", kt_store_error_message(store));
    return 0;
}

/* One deposit sealed as app/keytrusteed/deposits.c seals it, then stored. */
static int put_deposit(kt_store *store, const kt_client_record *client, const kt_secret *data_key,
                       long number, kt_secret *secret, unsigned char *box, FILE *uuids)
{
    kt_deposit deposit = {.state = KT_STATE_ACTIVE, .created = (int64_t)time(NULL)};
    kt_uuid_generate(deposit.uuid);
    memcpy(deposit.client, client->fingerprint, sizeof deposit.client);
    snprintf(deposit.handle, sizeof deposit.handle, "scale-%ld", number);
    unsigned char associated[ASSOCIATED_BYTES];
    memcpy(associated, client->org_uuid, KT_UUID_CHARS);
    associated[KT_UUID_CHARS] = 0;
    memcpy(associated + KT_UUID_CHARS + 1, client->fingerprint, KT_FINGERPRINT_CHARS);
    associated[KT_UUID_CHARS + 1 + KT_FINGERPRINT_CHARS] = 0;
    memcpy(associated + KT_UUID_CHARS + 2 + KT_FINGERPRINT_CHARS, deposit.uuid, KT_UUID_CHARS);
    kt_random(secret->bytes, secret->length);
    size_t box_length = 0;
    if (kt_aead_seal(box, secret->length + KT_AEAD_OVERHEAD, &box_length, secret->bytes,
                     secret->length, associated, sizeof associated, data_key) != 0)
        return fail("cannot seal a deposit", NULL);
    deposit.box = box;
    deposit.box_length = box_length;
    if (kt_store_deposit_put(store, &deposit) != KT_STORE_OK)
        return fail("cannot store a deposit", kt_store_error_message(store));
    if (fprintf(uuids, "%s\n", deposit.uuid) < 0)
        return fail("cannot write the uuid list", strerror(errno));
    return 0;
}

static int load(kt_store *store, const load_options *options, const kt_server_keys *keys,
                FILE *uuids, kt_client_record *client)
{
    unsigned char box[SECRET_MAX + KT_AEAD_OVERHEAD];
    /* One secure buffer for every plaintext (refilled with random bytes per deposit): a guarded
     * sodium allocation per row would cost more than the row itself. */
    kt_secret *secret = kt_secret_new((size_t)options->secret_bytes);
    if (secret == NULL)
        return fail("out of secure memory", NULL);
    if (kt_store_begin(store) != KT_STORE_OK) {
        kt_secret_free(secret);
        return fail("cannot begin a transaction", kt_store_error_message(store));
    }
    if (add_org_and_client(store, options->key_out, client) != 0) {
        kt_store_rollback(store);
        kt_secret_free(secret);
        return 1;
    }
    int status = 0;
    for (long number = 0; number < options->count && status == 0; number++) {
        if (put_deposit(store, client, keys->data_key, number, secret, box, uuids) != 0) {
            kt_store_rollback(store);
            status = 1;
            break;
        }
        bool last = number + 1 == options->count;
        if (last || (number + 1) % options->batch == 0) {
            if (kt_store_commit(store) != KT_STORE_OK)
                status = fail("cannot commit a batch", kt_store_error_message(store));
            else if (!last && kt_store_begin(store) != KT_STORE_OK)
                status = fail("cannot begin a transaction", kt_store_error_message(store));
        }
    }
    kt_secret_free(secret);
    return status;
}

int main(int argc, char **argv)
{
    load_options options;
    if (parse_options(argc, argv, &options) != 0)
        return usage();
    if (kt_crypto_init() != 0)
        return fail("cannot initialise libsodium", NULL);
    char error[PATH_MAX + 256];
    kt_server_keys *keys = NULL;
    if (kt_server_keys_load(options.server_key, &keys, error, sizeof error) != 0)
        return fail("cannot load the server key", error);
    if (sqlite3_auto_extension((void (*)(void))large_cache) != SQLITE_OK) {
        kt_server_keys_free(keys);
        return fail("cannot register the page-cache setting", NULL);
    }
    kt_store_options store_options = {.writer = true};
    kt_store *store = NULL;
    if (kt_store_open(&store, options.database, &store_options, error, sizeof error) != 0) {
        kt_server_keys_free(keys);
        return fail("cannot open the database", error);
    }
    FILE *uuids = fopen(options.uuids_out, "a");
    if (uuids == NULL) {
        kt_store_close(store);
        kt_server_keys_free(keys);
        return fail("cannot open the uuid list", strerror(errno));
    }
    kt_client_record client = {0};
    double start = now_seconds();
    int status = load(store, &options, keys, uuids, &client);
    double seconds = now_seconds() - start;
    if (fclose(uuids) != 0 && status == 0)
        status = fail("cannot write the uuid list", strerror(errno));
    kt_store_close(store);
    kt_server_keys_free(keys);
    if (status == 0)
        printf("{\"deposits\": %ld, \"seconds\": %.3f, \"rows_per_s\": %.1f, \"client\": \"%s\", "
               "\"batch\": %ld, \"secret_bytes\": %ld}\n",
               options.count, seconds, (double)options.count / seconds, client.fingerprint,
               options.batch, options.secret_bytes);
    return status;
}
