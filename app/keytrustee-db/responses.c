/*
 * responses.c — the JSON that goes back over the admin socket: {"ok": true, ...} or
 * {"ok": false, "error": CODE, "message": TEXT}, and the org, client and deposit objects of
 * app.h's op table.
 *
 * Storage statuses map to error codes in one place (kt_response_store_error) so every op answers
 * the same failure the same way. Internal errors never carry their detail to the client: it is
 * logged where it happened, and the client is told to look at the log.
 */
#include <stdarg.h>
#include <stdio.h>

#include "app/keytrustee-db/service.h"

json_t *kt_response_ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

json_t *kt_response_error(const char *code, const char *format, ...)
{
    char message[1024];
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    if (written < 0)
        snprintf(message, sizeof message, "%s", code);
    /* Messages quote what the peer sent, cut to a length: keep them valid UTF-8, or json_pack
     * fails and the peer gets no answer at all (found by fuzz_db_ops: an unknown op name cut
     * in the middle of a two-byte character). */
    kt_text_make_printable(message);
    return json_pack("{s:b, s:s, s:s}", "ok", 0, "error", code, "message", message);
}

json_t *kt_response_store_error(kt_store_status status, const char *message)
{
    switch (status) {
    case KT_STORE_NOT_FOUND: return kt_response_error("not_found", "%s", message);
    case KT_STORE_CONFLICT: return kt_response_error("conflict", "%s", message);
    case KT_STORE_INVALID: return kt_response_error("bad_request", "%s", message);
    case KT_STORE_REFUSED: return kt_response_error("write_unavailable", "%s", message);
    case KT_STORE_INDETERMINATE: return kt_response_error("indeterminate", "%s", message);
    case KT_STORE_FULL: return kt_response_error("disk_full", "%s", message);
    case KT_STORE_OK:
    case KT_STORE_ERROR: break;
    }
    return kt_response_error("internal",
                             "internal error in keytrustee-db; the details are in its log");
}

json_t *kt_response_attach(json_t *response, const char *key, json_t *value)
{
    if (response == NULL || value == NULL || json_object_set_new(response, key, value) != 0) {
        json_decref(response);
        json_decref(value);
        return NULL;
    }
    return response;
}

json_t *kt_org_object(const kt_org *org)
{
    json_t *object = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "uuid", org->uuid, "name",
                               org->name, "contacts", org->contacts, "created",
                               (json_int_t)org->created, "expires", (json_int_t)org->expires,
                               "state", kt_state_name(org->state));
    if (object != NULL &&
        kt_json_set_base64(object, "auth_box", org->auth_box, org->auth_box_length) != 0) {
        json_decref(object);
        return NULL;
    }
    return object;
}

json_t *kt_client_object(const kt_client_record *client)
{
    json_t *object = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "fingerprint",
                               client->fingerprint, "org", client->org_name, "org_uuid",
                               client->org_uuid, "name", client->name, "created",
                               (json_int_t)client->created, "state",
                               kt_state_name(client->state), "org_state",
                               kt_state_name(client->org_state));
    if (object != NULL && kt_json_set_base64(object, "public_key", client->public_key,
                                             sizeof client->public_key) != 0) {
        json_decref(object);
        return NULL;
    }
    return object;
}

json_t *kt_deposit_object(const kt_deposit *deposit, bool with_box)
{
    json_t *object = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "uuid", deposit->uuid,
                               "client", deposit->client, "handle", deposit->handle,
                               "description", deposit->description, "created",
                               (json_int_t)deposit->created, "state",
                               kt_state_name(deposit->state));
    if (object != NULL && with_box &&
        kt_json_set_base64(object, "box", deposit->box, deposit->box_length) != 0) {
        json_decref(object);
        return NULL;
    }
    return object;
}
