/*
 * mount.c — the client's master key and the per-mount-point keys derived from it.
 *
 * The seed promises that with one key server down, existing clients keep "creating new mount
 * points". A new key would be a write, and writes need both nodes; so a mount point's key is not
 * stored but derived: `register` stores one master key deposit (32 random bytes under the reserved
 * handle KT_CLIENT_MASTER_HANDLE) while both nodes are up, and `mount-key --name NAME` reads it —
 * a read, served by whichever node answers — and derives
 *
 *     BLAKE2b-256 keyed by the master key over "keytrustee-mount-key-v1" || 0x00 || NAME
 *
 * with crypto.h's kt_derive_key. Both nodes hold the same master key deposit, so the key of a
 * name is the same whichever node answered and however often it is asked. The master key and the
 * derived key stay in kt_secret buffers and are never written to the client's disk.
 */
#include <string.h>

#include "app/ktclient/internal.h"

kt_client_status kt_client_store_master_key(const kt_client_endpoint *endpoint, char *error,
                                            size_t error_size)
{
    kt_secret *master = kt_secret_new(KT_CLIENT_MASTER_KEY_BYTES);
    if (master == NULL)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "out of memory creating the master key");
    kt_random(master->bytes, master->length);
    char uuid[KT_UUID_CHARS + 1];
    char reason[1024] = "";
    kt_client_status status =
        kt_client_put_on(endpoint, KT_CLIENT_MASTER_HANDLE, master->bytes, master->length,
                         "ktclient master key: every mount key derives from it; never delete",
                         uuid, reason, sizeof reason);
    kt_secret_free(master);
    if (status == KT_CLIENT_OK)
        return KT_CLIENT_OK;
    return kt_client_fail(status, error, error_size, "%s", reason);
}

/* Fetches the master key deposit and checks its size. */
static kt_client_status fetch_master(kt_client *client, kt_secret **master, char *error,
                                     size_t error_size)
{
    char reason[1024] = "";
    kt_client_status status =
        kt_client_get_by_handle(client, KT_CLIENT_MASTER_HANDLE, master, reason, sizeof reason);
    if (status == KT_CLIENT_NOT_FOUND)
        return kt_client_fail(status, error, error_size,
                              "this client has no master key deposit (its registration could not "
                              "store one); create it with ktclient create-master-key while both "
                              "key servers are up");
    if (status != KT_CLIENT_OK)
        return kt_client_fail(status, error, error_size, "%s", reason);
    if ((*master)->length != KT_CLIENT_MASTER_KEY_BYTES) {
        kt_secret_free(*master);
        *master = NULL;
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "the deposit " KT_CLIENT_MASTER_HANDLE " is not a master key of %u "
                              "bytes; it was not written by ktclient register",
                              KT_CLIENT_MASTER_KEY_BYTES);
    }
    return KT_CLIENT_OK;
}

kt_client_status kt_client_mount_key(kt_client *client, const char *name, kt_secret **key,
                                     char *error, size_t error_size)
{
    *key = NULL;
    if (!kt_client_text_valid(name, KT_CLIENT_MAX_MOUNT_NAME))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "a mount point name must be 1 to %u bytes without control "
                              "characters", KT_CLIENT_MAX_MOUNT_NAME);
    kt_secret *master = NULL;
    kt_client_status status = fetch_master(client, &master, error, error_size);
    if (status != KT_CLIENT_OK)
        return status;
    if (kt_derive_key(key, master, KT_CLIENT_MOUNT_KEY_LABEL, name, strlen(name)) != 0)
        status = kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                "out of memory deriving the mount key");
    kt_secret_free(master);
    return status;
}

kt_client_status kt_client_create_master_key(kt_client *client, char *error, size_t error_size)
{
    kt_secret *master = NULL;
    kt_client_status status = fetch_master(client, &master, error, error_size);
    kt_secret_free(master);
    if (status == KT_CLIENT_OK)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "this client already has a master key deposit; it is kept, since "
                              "replacing it would change every mount key");
    if (status != KT_CLIENT_NOT_FOUND)
        return status;
    return kt_client_store_master_key(kt_client_endpoint_of(client), error, error_size);
}
