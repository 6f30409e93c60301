/*
 * audit.c — keytrustee-db's side of the audit log (app/common/audit.c writes the chain).
 *
 * keytrustee-db records the admin-socket requests that change or reveal something, as sent by
 * the operator tools (ktadmin, keytrustee-orgtool): org.add, org.set_auth, client.add,
 * client.set_state, deposit.put, deposit.get, client.deposit, deposit.set_state, deposit.purge,
 * replication.set_synchronous and backup. The actor is "admin uid=U pid=P" (SO_PEERCRED), the
 * source "local", the result "ok" or the error code; the object is the org name, fingerprint, or
 * client and deposit uuid/handle from the request — never a box or a key.
 *
 * Requests from keytrusteed are not recorded here: keytrusteed records each API request itself
 * (with the client fingerprint and peer address, which only it knows), and recording its
 * admin-socket calls too would list every API event twice. keytrusteed is recognised by its
 * process name (/proc/PID/comm) at connection time. Renaming a process to evade this requires
 * the service user's privileges, which can also write the audit file directly: see
 * docs/security.md.
 *
 * Before an audited op runs, room for its event is reserved; when the audit log cannot be written
 * and the backlog is full, the op is refused with "audit_unavailable" and not performed.
 */
#include <stdio.h>
#include <string.h>

#include "app/keytrustee-db/service.h"

#define OBJECT_MAX 200

typedef struct audited_op {
    const char *name;
    const char *const *keys; /* request fields naming the object, in order */
} audited_op;

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const audited_op audited_ops[] = {
    {"org.add", KEYS("name")},
    {"org.set_auth", KEYS("name")},
    {"client.add", KEYS("fingerprint", "org", "name")},
    {"client.set_state", KEYS("fingerprint", "state")},
    {"deposit.put", KEYS("client", "uuid", "handle")},
    {"deposit.get", KEYS("client", "uuid", "handle")},
    {"client.deposit", KEYS("fingerprint", "uuid", "handle")},
    {"deposit.set_state", KEYS("client", "uuid", "state")},
    {"deposit.purge", KEYS("client", "uuid")},
    {"replication.set_synchronous", KEYS("synchronous")},
    {"backup", KEYS(NULL)},
    {"replication.promote", KEYS(NULL)},
    {"replication.switchover", KEYS("new_active_url")},
};

static const audited_op *find_audited(const char *name)
{
    for (size_t index = 0; index < sizeof audited_ops / sizeof audited_ops[0]; index++)
        if (strcmp(audited_ops[index].name, name) == 0)
            return &audited_ops[index];
    return NULL;
}

bool kt_db_peer_is_api(pid_t pid)
{
    char path[64];
    char name[32] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", (long)pid);
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return false;
    bool read = fgets(name, sizeof name, file) != NULL;
    (void)fclose(file);
    return read && strcmp(name, "keytrusteed\n") == 0;
}

/* "key=value key=value" of the named request fields that are present (strings and booleans). */
static void describe_object(const json_t *request, const char *const *keys, char *out,
                            size_t out_size)
{
    size_t used = 0;
    out[0] = '\0';
    for (; *keys != NULL && used < out_size; keys++) {
        const json_t *value = json_object_get(request, *keys);
        const char *text = json_is_string(value)  ? json_string_value(value)
                           : json_is_true(value)  ? "true"
                           : json_is_false(value) ? "false"
                                                  : NULL;
        if (text == NULL)
            continue;
        int written = snprintf(out + used, out_size - used, "%s%s=%.80s", used > 0 ? " " : "",
                               *keys, text);
        if (written < 0)
            return;
        used += (size_t)written;
    }
}

static void record(const kt_db_session *session, const char *op, const char *const *keys,
                   const json_t *request, const json_t *response)
{
    char actor[64];
    char object[OBJECT_MAX + 1];
    snprintf(actor, sizeof actor, "admin uid=%lu pid=%ld", (unsigned long)session->peer_uid,
             (long)session->peer_pid);
    describe_object(request, keys, object, sizeof object);
    const char *code = json_string_value(json_object_get(response, "error"));
    kt_audit_event event = {
        .actor = actor,
        .action = op,
        .object = object,
        .result = response == NULL ? "internal" : code != NULL ? code : "ok",
        .source = "local",
    };
    kt_audit_record(&event);
}

json_t *kt_db_audit_run(kt_db_session *session, const char *op, kt_db_op_function function,
                        const json_t *request)
{
    const audited_op *audited = session->peer_is_api ? NULL : find_audited(op);
    if (audited == NULL)
        return function(session, request);
    if (!kt_audit_reserve())
        return kt_response_error("audit_unavailable",
                                 "the audit log cannot be written on this node (see "
                                 "keytrustee-db's log); nothing was done");
    json_t *response = function(session, request);
    record(session, op, audited->keys, request, response);
    return response;
}
