/*
 * register.c — POST /v1/register: a new client joins an org.
 *
 * The body names the org, its auth secret, a client name and the client's Ed25519 public key. The
 * request is signed with that very key (proof of possession), so X-KT-Client must be the key's
 * fingerprint and the usual signature, clock and nonce checks apply.
 *
 * The org must exist (404) and be enabled (403). Its auth secret is stored sealed in the org's
 * auth_box (AEAD under the server data key, associated data "keytrustee-org-auth" || 0 || org
 * name); an empty box means the org takes registrations without a secret. The secret the client
 * sends — the text `keytrustee-orgtool list` shows as auth_secret — is compared with the opened
 * box in constant time, lengths included, inside fixed-size wiped buffers. Then client.add stores
 * the client (409 when the key is already registered).
 */
#include <stdio.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

#define ORG_AUTH_CONTEXT "keytrustee-org-auth"

typedef struct registration {
    const char *org;
    const char *auth; /* NULL when omitted */
    const char *name;
    const char *public_key_text;
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
} registration;

static int read_registration(ktd_request *request, const json_t *body, registration *form)
{
    static const char *const public_key_error =
        "the field \"public_key\" must be base64 of a 32-byte Ed25519 public key";
    if (ktd_body_string(request, body, "org", true, 1, KT_ORG_NAME_MAX, true, &form->org) != 0 ||
        ktd_body_string(request, body, "auth", false, 0, SIZE_MAX, false, &form->auth) != 0 ||
        ktd_body_string(request, body, "name", true, 1, KT_CLIENT_NAME_MAX, true,
                        &form->name) != 0 ||
        ktd_body_string(request, body, "public_key", true, 1, 64, true,
                        &form->public_key_text) != 0)
        return -1;
    size_t length = 0;
    if (kt_json_get_base64(body, "public_key", form->public_key, sizeof form->public_key,
                           &length) != 0 ||
        length != KT_SIGN_PUBLIC_BYTES) {
        ktd_respond_error(request, 400, "bad_request", NULL, "%s", public_key_error);
        return -1;
    }
    kt_fingerprint(form->fingerprint, form->public_key);
    return 0;
}

/* ---- The org and its secret ----------------------------------------------------------------- */

/* org.get; answers 404/403/... and returns NULL unless the org exists and is enabled. */
static json_t *enabled_org(ktd_request *request, const char *name)
{
    json_t *db_request = ktd_db_request(request, "org.get");
    json_t *response = NULL;
    json_t *org = NULL;
    if (db_request == NULL)
        return NULL;
    char not_found[KT_ORG_NAME_MAX + 64];
    snprintf(not_found, sizeof not_found, "no org named %s", name);
    if (json_object_set_new(db_request, "name", json_string(name)) != 0)
        ktd_respond_internal(request, "building org.get");
    else if (ktd_db_call(request, db_request, KTD_DB_READ, &response) != 0)
        ; /* answered */
    else if (ktd_db_error_code(response) != NULL)
        ktd_respond_db_error(request, response, not_found);
    else
        org = json_incref(json_object_get(response, "org"));
    json_decref(db_request);
    json_decref(response);
    const char *state = json_string_value(json_object_get(org, "state"));
    if (org != NULL && (state == NULL || strcmp(state, "active") != 0)) {
        ktd_respond_error(request, 403, "forbidden", NULL, "the org %s is disabled", name);
        json_decref(org);
        org = NULL;
    }
    return org;
}

/* Opens the org's auth_box. *secret stays NULL when the org has no secret. */
static int open_auth_box(ktd_request *request, const json_t *org, kt_secret **secret)
{
    unsigned char box[KT_AUTH_BOX_MAX];
    size_t box_length = 0;
    const char *name = json_string_value(json_object_get(org, "name"));
    const char *box_text = json_string_value(json_object_get(org, "auth_box"));
    *secret = NULL;
    if (name == NULL || box_text == NULL)
        return ktd_respond_internal(request, "reading org.get's org");
    if (box_text[0] == '\0')
        return 0;
    if (kt_json_get_base64(org, "auth_box", box, sizeof box, &box_length) != 0)
        return ktd_respond_internal(request, "decoding the org's auth_box");
    size_t name_length = strlen(name);
    unsigned char associated[sizeof ORG_AUTH_CONTEXT + KT_ORG_NAME_MAX];
    if (name_length > KT_ORG_NAME_MAX)
        return ktd_respond_internal(request, "an org name over the limit");
    memcpy(associated, ORG_AUTH_CONTEXT, sizeof ORG_AUTH_CONTEXT); /* with its NUL */
    memcpy(associated + sizeof ORG_AUTH_CONTEXT, name, name_length);
    if (kt_aead_open(secret, box, box_length, associated, sizeof ORG_AUTH_CONTEXT + name_length,
                     request->daemon->keys->data_key) != 0) {
        kt_log(KT_LOG_ERROR, "the auth secret of org %s does not open with this server's key",
               name);
        return ktd_respond_internal(request, "opening the org's auth secret");
    }
    return 0;
}

/* Compares in constant time over KT_AUTH_SECRET_MAX bytes, so neither the position of the first
 * difference nor the secret's length shows in the timing. */
static bool auth_matches(const kt_secret *expected, const char *given)
{
    size_t given_length = given != NULL ? strlen(given) : 0;
    if (expected->length > KT_AUTH_SECRET_MAX || given_length > KT_AUTH_SECRET_MAX)
        return false;
    kt_secret *left = kt_secret_new(KT_AUTH_SECRET_MAX);
    kt_secret *right = kt_secret_new(KT_AUTH_SECRET_MAX);
    bool same = false;
    if (left != NULL && right != NULL) {
        memcpy(left->bytes, expected->bytes, expected->length);
        if (given_length > 0)
            memcpy(right->bytes, given, given_length);
        same = kt_equal(left->bytes, right->bytes, KT_AUTH_SECRET_MAX) &
               (expected->length == given_length);
    }
    kt_secret_free(left);
    kt_secret_free(right);
    return same;
}

static int check_auth(ktd_request *request, const json_t *org, const registration *form)
{
    kt_secret *secret = NULL;
    if (open_auth_box(request, org, &secret) != 0)
        return -1;
    if (secret == NULL)
        return 0;
    bool same = auth_matches(secret, form->auth);
    kt_secret_free(secret);
    if (same)
        return 0;
    ktd_respond_error(request, 403, "forbidden", NULL,
                      form->auth == NULL || form->auth[0] == '\0'
                          ? "the org %s requires its auth secret (\"auth\")"
                          : "wrong auth secret for the org %s",
                      form->org);
    return -1;
}

/* ---- Storing the client --------------------------------------------------------------------- */

static int add_client(ktd_request *request, const registration *form)
{
    json_t *db_request = ktd_db_request(request, "client.add");
    json_t *response = NULL;
    if (db_request == NULL)
        return -1;
    int result = -1;
    if (json_object_update_new(db_request,
                               json_pack("{s:s, s:s, s:s, s:s}", "fingerprint", form->fingerprint,
                                         "org", form->org, "name", form->name, "public_key",
                                         form->public_key_text)) != 0)
        ktd_respond_internal(request, "building client.add");
    else if (ktd_db_call(request, db_request, KTD_DB_WRITE, &response) != 0)
        ; /* answered */
    else if (ktd_db_error_code(response) != NULL &&
             strcmp(ktd_db_error_code(response), "conflict") == 0)
        ktd_respond_error(request, 409, "conflict", NULL,
                          "the client %s is already registered", form->fingerprint);
    else if (ktd_db_error_code(response) != NULL)
        ktd_respond_db_error(request, response, "the org disappeared during registration");
    else
        result = 0;
    json_decref(db_request);
    json_decref(response);
    return result;
}

static void respond_registered(ktd_request *request, const registration *form)
{
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "fingerprint", form->fingerprint, "org",
                             form->org, "name", form->name, "server_fingerprint",
                             request->daemon->keys->fingerprint);
    if (body == NULL) {
        ktd_respond_internal(request, "building the registration answer");
        return;
    }
    ktd_respond_json(request, 201, body);
    json_decref(body);
}

void ktd_handle_register(ktd_request *request, const char *argument)
{
    (void)argument;
    static const char *const fields[] = {"org", "auth", "name", "public_key", NULL};
    registration form;
    if (ktd_body_read(request, KTD_BODY_JSON) != 0)
        return;
    const char *claimed = ktd_claimed_client(request);
    json_t *body = claimed != NULL ? ktd_body_object(request, fields) : NULL;
    if (body == NULL)
        return;
    if (read_registration(request, body, &form) == 0 &&
        ktd_verify_signature(request, form.public_key) == 0) {
        json_t *org = enabled_org(request, form.org);
        if (org != NULL && check_auth(request, org, &form) == 0 &&
            add_client(request, &form) == 0) {
            kt_log(KT_LOG_INFO, "registered client %s (%s) in org %s", form.fingerprint,
                   form.name, form.org);
            respond_registered(request, &form);
        }
        json_decref(org);
    }
    json_decref(body); /* the wiping allocator clears the auth secret */
}
