/*
 * status.c — the status op: what this node is and whether it takes writes, for keytrusteed's
 * /v1/health, `ktadmin status` and monitoring.
 *
 *   {"ok": true, "role": "standalone|active|passive", "writable": bool, "reason": CODE (when not
 *    writable), "version": KT_VERSION, "schema_version": N, "counts": {"orgs", "clients",
 *    "deposits"}, "replication": {...}, "active_url": URL (passive only),
 *    "last_backup": {"time", "result", "path"[, "message"]} or null (backup.c)}
 *
 * Counts and the schema version are read through the connection's reader store, so a status that
 * answers ok also proves the database can be read.
 */
#include "app/keytrustee-db/service.h"

#ifndef KT_VERSION
#define KT_VERSION "unknown"
#endif

/* The fields that do not need the database. */
static json_t *node_fields(const kt_db_service *service)
{
    const char *reason = NULL;
    const char *message = NULL;
    bool writable = kt_replication_glue_writable(service->replication, &reason, &message);
    json_t *response = json_pack("{s:b, s:s, s:b, s:s}", "ok", 1, "role",
                                 kt_db_role_name(service->settings.role), "writable", writable,
                                 "version", KT_VERSION);
    if (response != NULL && !writable)
        response = kt_response_attach(response, "reason", json_string(reason));
    if (response != NULL && service->settings.role == KT_ROLE_PASSIVE)
        response = kt_response_attach(response, "active_url",
                                      json_string(service->settings.active_url));
    char failed_change[sizeof service->role_change_error];
    (void)pthread_mutex_lock((pthread_mutex_t *)&service->role_mutex);
    snprintf(failed_change, sizeof failed_change, "%s", service->role_change_error);
    (void)pthread_mutex_unlock((pthread_mutex_t *)&service->role_mutex);
    if (response != NULL && failed_change[0] != '\0')
        response = kt_response_attach(response, "role_change_error", json_string(failed_change));
    return kt_response_attach(response, "replication",
                              kt_replication_glue_status(service->replication));
}

json_t *kt_status_handle(kt_db_session *session, const json_t *request)
{
    (void)request;
    json_t *failure = NULL;
    kt_store *reader = kt_session_reader(session, &failure);
    if (reader == NULL)
        return failure;
    kt_store_counts counts;
    kt_store_status status = kt_store_count(reader, &counts);
    if (status != KT_STORE_OK) {
        kt_log(KT_LOG_ERROR, "status: counting rows failed: %s", kt_store_error_message(reader));
        return kt_response_store_error(status, kt_store_error_message(reader));
    }
    json_t *response = node_fields(session->service);
    response = kt_response_attach(response, "schema_version",
                                  json_integer(kt_store_schema_version(reader)));
    response = kt_response_attach(response, "last_backup",
                                  kt_last_backup_object(&session->service->paths));
    return kt_response_attach(response, "counts",
                              json_pack("{s:I, s:I, s:I}", "orgs", (json_int_t)counts.orgs,
                                        "clients", (json_int_t)counts.clients, "deposits",
                                        (json_int_t)counts.deposits));
}
