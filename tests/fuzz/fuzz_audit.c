/*
 * fuzz_audit.c — the audit log's reader (app/common/audit.c): `ktadmin audit verify` over a file
 * anyone who can write it may have shaped, and the writer's reading of the file's last entry when
 * it continues the chain.
 *
 * Input: the bytes of an audit.log. Properties: verification never crashes, and says why when it
 * refuses; when the file verifies, appending one event through the real writer (open, record,
 * close) leaves a file that still verifies, with exactly one entry more.
 */
#include <stdio.h>
#include <string.h>

#include "app/common/app.h"
#include "tests/fuzz/fuzz.h"

static long verified_entries(const char *path, char *message, size_t message_size)
{
    long entries = 0;
    char head[128];
    message[0] = '\0';
    if (kt_audit_verify(path, &entries, head, sizeof head, message, message_size) != 0) {
        FUZZ_CHECK(message[0] != '\0', "a refusal without a reason");
        return -1;
    }
    FUZZ_CHECK(entries >= 1, "an intact chain of %ld entries", entries);
    return entries;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_audit");
    kt_paths paths;
    memset(&paths, 0, sizeof paths);
    snprintf(paths.home, sizeof paths.home, "%s", fuzz_directory());
    snprintf(paths.logdir, sizeof paths.logdir, "%s/logs", fuzz_directory());
    char error[512] = "";
    if (kt_private_directory(paths.logdir, error, sizeof error) != 0)
        return 0;
    const char *path = fuzz_file_write("logs/" KT_AUDIT_FILE, data, size, 0600);
    char message[PATH_MAX + 256];
    long before = verified_entries(path, message, sizeof message);
    if (before < 0)
        return 0;
    FUZZ_CHECK(kt_audit_open(&paths, "fuzz", error, sizeof error) == 0, "open: %s", error);
    kt_audit_event event = {"fuzz", "fuzz.event", "object", "ok", "local"};
    FUZZ_CHECK(kt_audit_reserve(), "no room for one event");
    kt_audit_record(&event);
    kt_audit_close();
    long after = verified_entries(path, message, sizeof message);
    FUZZ_CHECK(after == before + 1, "after appending: %ld entries (was %ld): %s", after, before,
               message);
    return 0;
}
