/*
 * fuzz_db_ops.c — keytrustee-db's admin operations: framing, request validation and the storage
 * calls behind them (app/keytrustee-db/operations.c, request_fields.c, responses.c, storage/).
 *
 * Input: one byte choosing the node's role and write state (standalone, passive, active unable to
 * make writes durable, active and writable), then the byte stream a client sends on the admin
 * socket. The stream goes through kt_wire_receive on a socketpair and each request through
 * kt_operation_handle, as in admin_server.c, against a real SQLite database created at start-up
 * with one org ("acme"), one client (public key 32 bytes of 0x11) and one deposit (FUZZ_DEPOSIT),
 * so that lookups can find something (tests/fuzz/make_corpus.py writes seeds that name them).
 *
 * The writer thread is replaced by a stub that runs each write directly on the one store inside a
 * batch opened for the input and rolled back after it: every input starts from the same database,
 * and the session reads through that same store so a write is visible to the reads after it.
 * Replication's glue (may I write, set synchronous), the status op and the backup op are stubs
 * too: they read no request bytes.
 *
 * Properties: every response is an object with a boolean "ok"; a refusal carries an "error" code
 * from app.h's list and a "message" string; every response encodes as an admin-socket frame.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/common/app.h"
#include "app/keytrustee-db/service.h"
#include "storage/storage.h"
#include "tests/fuzz/fuzz.h"

#define STREAM_LIMIT (64u * 1024u)
#define FUZZ_DEPOSIT "5f0c4f4e-8a6b-4c1e-9d2a-3b7e6f1a2c90"
#define FUZZ_ACTIVE_URL "https://active.example:11371"

static kt_db_service service;
static kt_store *store;
static const char *write_refusal;   /* NULL: writable; else the reason code */

/* ---- stubs for the parts that read no request bytes ------------------------------------------ */

kt_store_status kt_writer_run(kt_writer *writer, const char *name, kt_write_function function,
                              void *arguments, char *message, size_t message_size)
{
    (void)writer;
    (void)name;
    kt_store_status status = function(store, arguments);
    if (status != KT_STORE_OK)
        snprintf(message, message_size, "%s", kt_store_error_message(store));
    return status;
}

bool kt_replication_glue_writable(const kt_replication_glue *glue, const char **reason,
                                  const char **message)
{
    (void)glue;
    if (write_refusal == NULL)
        return true;
    *reason = write_refusal;
    *message = strcmp(write_refusal, "passive") == 0 ? "this node is the passive"
                                                      : "the passive is not acknowledging";
    return false;
}

void kt_replication_glue_set_synchronous(kt_replication_glue *glue, bool synchronous)
{
    (void)glue;
    (void)synchronous;
}

json_t *kt_status_handle(kt_db_session *session, const json_t *request)
{
    (void)session;
    (void)request;
    return kt_response_ok();
}

/* The node has no switchover in progress: no active URL to hand writers to. */
const char *kt_replication_glue_handover_url(const kt_replication_glue *glue)
{
    (void)glue;
    return NULL;
}

/* promote and switchover end in SIGUSR1 and a restart of the whole service (role_change.c): not
 * something a fuzzing process can survive. Their few fields (force, new_active_url) go through
 * request_fields.c, which every other op exercises. */
json_t *kt_promote_handle(kt_db_session *session, const json_t *request)
{
    (void)session;
    (void)request;
    return kt_response_ok();
}

json_t *kt_switchover_handle(kt_db_session *session, const json_t *request)
{
    (void)session;
    (void)request;
    return kt_response_ok();
}

/* The backup op writes files and reads no request field. */
json_t *kt_backup_handle(kt_db_session *session, const json_t *request)
{
    (void)session;
    (void)request;
    return kt_response_ok();
}

/* ---- the database every input starts from ---------------------------------------------------- */

static void must(kt_store_status status, const char *what)
{
    if (status != KT_STORE_OK) {
        fprintf(stderr, "fuzz_db_ops: %s: %s\n", what, kt_store_error_message(store));
        abort();
    }
}

static void create_database(void)
{
    char error[512];
    snprintf(service.database_path, sizeof service.database_path, "%s/keytrustee.db",
             fuzz_directory());
    kt_store_options options = {.writer = true, .create = true};
    if (kt_store_open(&store, service.database_path, &options, error, sizeof error) != 0) {
        fprintf(stderr, "fuzz_db_ops: %s\n", error);
        abort();
    }
    kt_org org = {.name = "acme", .contacts = "ops@example.com", .created = 1700000000,
                  .state = KT_STATE_ACTIVE, .auth_box_length = KT_AEAD_OVERHEAD + 6};
    kt_uuid_generate(org.uuid);
    memset(org.auth_box, 0xab, org.auth_box_length);
    must(kt_store_org_add(store, &org), "adding the org");

    /* A fixed key, so the seeds can name the client: its fingerprint is in the corpus. */
    kt_client_record client = {.name = "host1", .created = 1700000000, .state = KT_STATE_ACTIVE};
    memset(client.public_key, 0x11, sizeof client.public_key);
    kt_fingerprint(client.fingerprint, client.public_key);
    memcpy(client.org_uuid, org.uuid, sizeof client.org_uuid);
    must(kt_store_client_add(store, &client), "adding the client");

    unsigned char box[KT_AEAD_OVERHEAD + 8];
    memset(box, 0xcd, sizeof box);
    kt_deposit deposit = {.uuid = FUZZ_DEPOSIT, .handle = "db-password", .description = "demo",
                          .created = 1700000000, .state = KT_STATE_ACTIVE, .box = box,
                          .box_length = sizeof box};
    memcpy(deposit.client, client.fingerprint, sizeof deposit.client);
    must(kt_store_deposit_put(store, &deposit), "adding the deposit");
    snprintf(service.settings.active_url, sizeof service.settings.active_url, "%s",
             FUZZ_ACTIVE_URL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup("fuzz_db_ops");
    create_database();
    return 0;
}

/* ---- one input ------------------------------------------------------------------------------- */

static void check_response(const json_t *response)
{
    static const char *const codes[] = {"bad_request", "not_found", "conflict", "passive",
                                        "write_unavailable", "indeterminate", "disk_full",
                                        "internal"};
    FUZZ_CHECK(json_is_object(response), "a response is not an object");
    const json_t *ok = json_object_get(response, "ok");
    FUZZ_CHECK(json_is_boolean(ok), "a response without a boolean \"ok\"");
    if (json_is_false(ok)) {
        const char *code = json_string_value(json_object_get(response, "error"));
        bool known = false;
        for (size_t index = 0; code != NULL && index < sizeof codes / sizeof codes[0]; index++)
            known = known || strcmp(code, codes[index]) == 0;
        FUZZ_CHECK(known, "unknown error code %s", code != NULL ? code : "(none)");
        FUZZ_CHECK(json_is_string(json_object_get(response, "message")), "an error without text");
    }
    size_t size = json_dumpb(response, NULL, 0, JSON_COMPACT);
    FUZZ_CHECK(size > 0 && size <= KT_WIRE_MAX, "a response does not encode (%zu bytes)", size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const refusals[] = {NULL, "passive", "write_unavailable", NULL};
    static const kt_db_role roles[] = {KT_ROLE_STANDALONE, KT_ROLE_PASSIVE, KT_ROLE_ACTIVE,
                                       KT_ROLE_ACTIVE};
    if (size == 0)
        return 0;
    write_refusal = refusals[data[0] & 3];
    service.settings.role = roles[data[0] & 3];
    data++;
    size--;
    if (size > STREAM_LIMIT)
        size = STREAM_LIMIT;

    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        abort();
    for (size_t sent = 0; sent < size;) {
        ssize_t count = send(pair[0], data + sent, size - sent, MSG_NOSIGNAL);
        FUZZ_CHECK(count > 0 || errno == EINTR, "the socketpair refused the input");
        if (count > 0)
            sent += (size_t)count;
    }
    (void)close(pair[0]);

    must(kt_store_begin(store), "opening the batch");
    kt_db_session session = {.service = &service, .reader = store, .peer_pid = 1};
    for (;;) {
        json_t *request = NULL;
        char error[512];
        if (kt_wire_receive(pair[1], 1000, &request, error, sizeof error) != 0) {
            if (errno == EBADMSG)
                continue; /* admin_server answers bad_request and reads on */
            break;
        }
        json_t *response = kt_operation_handle(&session, request);
        json_decref(request);
        FUZZ_CHECK(response != NULL, "no response (out of memory?)");
        check_response(response);
        json_decref(response);
    }
    kt_store_rollback(store);
    (void)close(pair[1]);
    return 0;
}
