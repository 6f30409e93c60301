/*
 * auth.c — org auth secrets: making a new one, and sealing and opening the auth_box the database
 * keeps instead of the secret.
 *
 * The box is XChaCha20-Poly1305 under the server's data key (derived from
 * .keytrustee/keytrustee-server.key, so both nodes of a pair can open it) with the associated data
 * "keytrustee-org-auth" 0x00 <org name>: a box copied onto another org does not open. keytrusteed
 * opens the same box to check a registration's secret. Secrets only ever live in kt_secret buffers.
 */
#include <stdio.h>
#include <string.h>

#include "app/orgtool/orgtool.h"
#include "storage/storage.h"

#define AUTH_CONTEXT        "keytrustee-org-auth"
#define AUTH_RANDOM_BYTES   16u
#define ASSOCIATED_DATA_MAX (sizeof AUTH_CONTEXT + KT_ORG_NAME_MAX)

/* "keytrustee-org-auth" 0x00 <name>; returns its length. */
static size_t associated_data(unsigned char out[ASSOCIATED_DATA_MAX], const char *org_name)
{
    size_t name_length = strnlen(org_name, KT_ORG_NAME_MAX);
    memcpy(out, AUTH_CONTEXT, sizeof AUTH_CONTEXT); /* includes the 0x00 separator */
    memcpy(out + sizeof AUTH_CONTEXT, org_name, name_length);
    return sizeof AUTH_CONTEXT + name_length;
}

int orgtool_load_keys(const orgtool_context *context, const char *command, kt_server_keys **keys)
{
    char error[PATH_MAX + 256];
    char key_path[PATH_MAX];
    kt_paths paths;
    if (kt_paths_resolve(&paths, context->confdir, NULL, error, sizeof error) != 0) {
        orgtool_fail(command, "%s", error);
        return -1;
    }
    if (kt_path_join(key_path, sizeof key_path, paths.confdir, KT_SERVER_KEY_FILE) != 0) {
        orgtool_fail(command, "the configuration directory path %s is too long", paths.confdir);
        return -1;
    }
    if (kt_server_keys_load(key_path, keys, error, sizeof error) != 0) {
        orgtool_fail(command, "%s (auth secrets are sealed with the server key; run this on a "
                     "Key Trustee Server node as the keytrustee user, with --confdir if the "
                     "keys are not in the default place)", error);
        return -1;
    }
    return 0;
}

kt_secret *orgtool_new_auth_secret(void)
{
    kt_secret *random_bytes = kt_secret_new(AUTH_RANDOM_BYTES);
    size_t text_size = kt_base64_encoded_size(AUTH_RANDOM_BYTES);
    kt_secret *text = kt_secret_new(text_size);
    kt_secret *secret = NULL;
    if (random_bytes != NULL && text != NULL) {
        kt_random(random_bytes->bytes, random_bytes->length);
        if (kt_base64_encode((char *)text->bytes, text_size, random_bytes->bytes,
                             random_bytes->length) == 0)
            secret = kt_secret_from(text->bytes, strlen((const char *)text->bytes));
    }
    kt_secret_free(random_bytes);
    kt_secret_free(text);
    return secret;
}

int orgtool_seal_auth(const kt_server_keys *keys, const char *org_name, const kt_secret *secret,
                      json_t *request)
{
    if (secret->length == 0)
        return json_object_set_new(request, "auth_box", json_string("")) == 0 ? 0 : -1;
    if (secret->length > KT_AUTH_SECRET_MAX)
        return -1;
    unsigned char associated[ASSOCIATED_DATA_MAX];
    size_t associated_length = associated_data(associated, org_name);
    unsigned char box[KT_AUTH_BOX_MAX];
    size_t box_length = 0;
    if (kt_aead_seal(box, sizeof box, &box_length, secret->bytes, secret->length, associated,
                     associated_length, keys->data_key) != 0)
        return -1;
    return kt_json_set_base64(request, "auth_box", box, box_length);
}

int orgtool_open_auth(const kt_server_keys *keys, const char *org_name, const json_t *org,
                      kt_secret **secret)
{
    unsigned char box[KT_AUTH_BOX_MAX];
    size_t box_length = 0;
    *secret = NULL;
    if (kt_json_get_base64(org, "auth_box", box, sizeof box, &box_length) != 0)
        return -1;
    if (box_length == 0) {
        *secret = kt_secret_new(0);
        return *secret != NULL ? 0 : -1;
    }
    unsigned char associated[ASSOCIATED_DATA_MAX];
    size_t associated_length = associated_data(associated, org_name);
    return kt_aead_open(secret, box, box_length, associated, associated_length, keys->data_key);
}
