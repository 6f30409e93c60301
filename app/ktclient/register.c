/*
 * register.c — registering a new client with a key server pair (POST /v1/register).
 *
 * The order is chosen so that a failure leaves nothing half-made that the next attempt trips
 * over, and so that nothing is registered on the server that this host cannot then use:
 *   1. check every argument, and that the confdir holds no registration yet;
 *   2. create the confdir (0700) and copy the CA into it (server-ca.pem), checking that the CA
 *      file really is a certificate: the registration request already verifies with that copy;
 *   3. generate an Ed25519 key pair and send the signed registration (signing with the new key
 *      proves possession, docs/api.md);
 *   4. on 201, write client.key (0600) and then client.conf (0600), which marks the registration
 *      complete. On a failure before the server accepted the key, the CA copy and a directory we
 *      created are removed; after it, the files stay and the message names the fingerprint the
 *      org admin should disable;
 *   5. store the client's master key deposit (mount.c), from which mount keys derive. The client is
 *      registered and usable whatever happens here; when this write fails (the pair became
 *      degraded in between, say), the message says so and names `ktclient create-master-key`,
 *      which stores it later.
 * The org auth secret and the secret key travel only in kt_secret buffers and wiped jansson
 * memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktclient/internal.h"

#define MAX_CA_FILE (1024u * 1024u)
#define MAX_AUTH 1024u

/* Everything a registration works with, gathered so steps stay short. */
typedef struct registration_state {
    const char *confdir;
    kt_client_config config;
    kt_client_endpoint endpoint;
    char ca_copy[PATH_MAX];
    bool created_directory;
    bool copied_ca;
    bool registered; /* the server accepted the key: keep what is on disk */
    kt_secret *secret_key;
    unsigned char public_key[KT_SIGN_PUBLIC_BYTES];
} registration_state;

/* ---- Arguments ---------------------------------------------------------------------------------- */

static kt_client_status check_urls(registration_state *state,
                                   const kt_client_registration *registration, char *error,
                                   size_t error_size)
{
    kt_client_endpoint *endpoint = &state->endpoint;
    int timeout = registration->connect_timeout_ms;
    if (timeout < 0 || timeout > KT_CLIENT_MAX_CONNECT_TIMEOUT_MS)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the connect timeout must be 1 to %d milliseconds",
                              KT_CLIENT_MAX_CONNECT_TIMEOUT_MS);
    state->config.connect_timeout_ms =
        timeout > 0 ? timeout : KT_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    kt_client_endpoint_timeouts(endpoint, state->config.connect_timeout_ms);
    if (kt_url_parse(registration->server, &endpoint->servers[0], error, error_size) != 0)
        return KT_CLIENT_USAGE;
    endpoint->server_count = 1;
    (void)snprintf(state->config.server, sizeof state->config.server, "%s",
                   endpoint->servers[0].text);
    const char *passive = registration->passive_server;
    if (passive == NULL || passive[0] == '\0')
        return KT_CLIENT_OK;
    if (kt_url_parse(passive, &endpoint->servers[1], error, error_size) != 0)
        return KT_CLIENT_USAGE;
    if (kt_url_same(&endpoint->servers[0], &endpoint->servers[1]))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "--server and --passive-server name the same server; give the "
                              "passive node's URL or leave --passive-server out");
    endpoint->server_count = 2;
    (void)snprintf(state->config.passive_server, sizeof state->config.passive_server, "%s",
                   endpoint->servers[1].text);
    return KT_CLIENT_OK;
}

static kt_client_status check_names(registration_state *state,
                                    const kt_client_registration *registration, char *error,
                                    size_t error_size)
{
    if (!kt_client_text_valid(registration->org, KT_CLIENT_MAX_NAME))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the org name must be 1 to %u characters without control "
                              "characters", KT_CLIENT_MAX_NAME);
    (void)snprintf(state->config.org, sizeof state->config.org, "%s", registration->org);
    const char *auth = registration->auth;
    if (auth != NULL && auth[0] != '\0' && !kt_client_text_valid(auth, MAX_AUTH))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the auth secret must be at most %u characters without control "
                              "characters", MAX_AUTH);
    const char *name = registration->name;
    char host[KT_CLIENT_MAX_NAME + 1] = "";
    if (name == NULL || name[0] == '\0') {
        if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
            return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                  "cannot read this host's name (%s); give --clientname NAME",
                                  strerror(errno));
        host[sizeof host - 1] = '\0';
        name = host;
    }
    if (!kt_client_text_valid(name, KT_CLIENT_MAX_NAME))
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "the client name must be 1 to %u characters without control "
                              "characters", KT_CLIENT_MAX_NAME);
    (void)snprintf(state->config.name, sizeof state->config.name, "%s", name);
    return KT_CLIENT_OK;
}

static kt_client_status check_trust(registration_state *state,
                                    const kt_client_registration *registration, char *error,
                                    size_t error_size)
{
    bool has_ca = registration->ca_file != NULL && registration->ca_file[0] != '\0';
    if (has_ca && registration->skip_ssl_check)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "give either --cacert FILE or --skip-ssl-check, not both");
    if (!has_ca && !registration->skip_ssl_check)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "no way to verify the key server's certificate: give --cacert FILE "
                              "with the server's CA (on the server: "
                              ".keytrustee/.ssl/ssl-cert-keytrustee-ca.pem), or --skip-ssl-check "
                              "to accept any certificate (anyone on the network path could then "
                              "impersonate the key server); this client does not trust a "
                              "certificate on first use silently");
    state->config.skip_ssl_check = registration->skip_ssl_check;
    state->endpoint.tls.skip_verify = registration->skip_ssl_check;
    return KT_CLIENT_OK;
}

/* ---- The confdir -------------------------------------------------------------------------------- */

static bool file_exists(const char *directory, const char *name)
{
    char path[PATH_MAX];
    int written = snprintf(path, sizeof path, "%s/%s", directory, name);
    struct stat status;
    return written > 0 && (size_t)written < sizeof path && lstat(path, &status) == 0;
}

/* Creates the directory (and missing parents) 0700, or checks an existing one is private. */
static kt_client_status prepare_directory(registration_state *state, char *error,
                                          size_t error_size)
{
    const char *directory = state->confdir;
    if (file_exists(directory, KT_CLIENT_CONF_FILE) || file_exists(directory, KT_CLIENT_KEY_FILE))
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "%s already holds a registered client; refusing to overwrite it. "
                              "Use another --confdir, or remove that directory first", directory);
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", directory) >= (int)sizeof path)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size, "the --confdir path is too long");
    for (char *slash = strchr(path + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return kt_client_fail(KT_CLIENT_ERROR, error, error_size, "cannot create %s: %s",
                                  path, strerror(errno));
        *slash = '/';
    }
    if (mkdir(directory, 0700) == 0) {
        state->created_directory = true;
        return KT_CLIENT_OK;
    }
    struct stat status;
    if (errno != EEXIST || stat(directory, &status) != 0 || !S_ISDIR(status.st_mode))
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "cannot create the directory %s: %s", directory,
                              errno == EEXIST ? "a file of that name exists" : strerror(errno));
    if ((status.st_mode & 077) != 0)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "%s is accessible by group or others; it will hold the client key. "
                              "Fix it with: chmod 700 %s", directory, directory);
    return KT_CLIENT_OK;
}

static kt_secret *read_whole_file(const char *path, char *error, size_t error_size)
{
    kt_secret *data = NULL;
    if (kt_read_secret_file(path, MAX_CA_FILE, &data, error, error_size) != 0)
        return NULL;
    return data;
}

/* Checks the CA file holds a certificate and copies it into the confdir. */
static kt_client_status copy_ca(registration_state *state, const char *ca_file, char *error,
                                size_t error_size)
{
    kt_x509_info info;
    char reason[256] = "";
    if (kt_x509_info_read(ca_file, &info, reason, sizeof reason) != 0)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "--cacert %s: %s; give the server's CA certificate in PEM "
                              "(ssl-cert-keytrustee-ca.pem on the server)", ca_file, reason);
    if (snprintf(state->ca_copy, sizeof state->ca_copy, "%s/%s", state->confdir,
                 KT_CLIENT_CA_FILE) >= (int)sizeof state->ca_copy)
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size, "the --confdir path is too long");
    kt_secret *data = read_whole_file(ca_file, error, error_size);
    if (data == NULL)
        return KT_CLIENT_ERROR;
    int written = kt_write_file_atomic(state->ca_copy, data->bytes, data->length, 0644, error,
                                       error_size);
    kt_secret_free(data);
    if (written != 0)
        return KT_CLIENT_ERROR;
    state->copied_ca = true;
    (void)snprintf(state->config.ca_file, sizeof state->config.ca_file, "%s", KT_CLIENT_CA_FILE);
    state->endpoint.tls.ca_file = state->ca_copy;
    return KT_CLIENT_OK;
}

/* Removes what a failed registration made. */
static void undo(const registration_state *state)
{
    if (state->copied_ca)
        (void)unlink(state->ca_copy);
    if (state->created_directory)
        (void)rmdir(state->confdir);
}

/* ---- The request -------------------------------------------------------------------------------- */

static kt_secret *registration_body(const registration_state *state, const char *auth)
{
    char public_key[64];
    json_t *object = json_object();
    kt_secret *body = NULL;
    if (object != NULL &&
        kt_base64_encode(public_key, sizeof public_key, state->public_key,
                         sizeof state->public_key) == 0 &&
        json_object_set_new(object, "org", json_string(state->config.org)) == 0 &&
        (auth == NULL || auth[0] == '\0' ||
         json_object_set_new(object, "auth", json_string(auth)) == 0) &&
        json_object_set_new(object, "name", json_string(state->config.name)) == 0 &&
        json_object_set_new(object, "public_key", json_string(public_key)) == 0)
        body = kt_client_json_dump(object);
    json_decref(object);
    return body;
}

static kt_client_status check_answer(const kt_client_call *call, const char *fingerprint,
                                     char *error, size_t error_size)
{
    const kt_secret *body = call->response.body;
    json_t *answer = json_loadb((const char *)body->bytes, body->length, 0, NULL);
    const char *answered = json_string_value(json_object_get(answer, "fingerprint"));
    kt_client_status status = KT_CLIENT_OK;
    if (answered == NULL || strcmp(answered, fingerprint) != 0)
        status = kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                                "the key server accepted the registration but answered with "
                                "another fingerprint than %s; check that the URL names a "
                                "keytrustee server", fingerprint);
    json_decref(answer);
    return status;
}

static kt_client_status send_registration(registration_state *state, const char *auth,
                                          char *error, size_t error_size)
{
    if (kt_sign_keypair(state->public_key, &state->secret_key) != 0)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size, "cannot generate a key pair");
    kt_fingerprint(state->config.fingerprint, state->public_key);
    state->endpoint.fingerprint = state->config.fingerprint;
    state->endpoint.secret_key = state->secret_key;
    kt_secret *body = registration_body(state, auth);
    if (body == NULL)
        return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                              "out of memory preparing the registration");
    kt_client_call call = {.method = "POST", .target = "/v1/register", .body = body->bytes,
                           .body_length = body->length, .write = true};
    kt_client_status status = kt_client_perform(&state->endpoint, &call, error, error_size);
    kt_secret_free(body);
    if (status == KT_CLIENT_OK) {
        state->registered = true;
        status = check_answer(&call, state->config.fingerprint, error, error_size);
    }
    kt_http_response_clear(&call.response);
    return status;
}

/* ---- Saving ------------------------------------------------------------------------------------- */

static int save_files(const registration_state *state, char *error, size_t error_size)
{
    char path[PATH_MAX];
    kt_secret *key_text = NULL;
    if (kt_client_key_format(state->secret_key, &key_text) != 0) {
        kt_client_error(error, error_size, "out of memory writing the client key");
        return -1;
    }
    int result = -1;
    (void)snprintf(path, sizeof path, "%s/%s", state->confdir, KT_CLIENT_KEY_FILE);
    if (kt_write_file_atomic(path, key_text->bytes, key_text->length, 0600, error,
                             error_size) == 0) {
        char text[4096];
        (void)snprintf(path, sizeof path, "%s/%s", state->confdir, KT_CLIENT_CONF_FILE);
        if (kt_client_config_format(&state->config, text, sizeof text) != 0)
            kt_client_error(error, error_size, "the client configuration is too long to write");
        else
            result = kt_write_file_atomic(path, text, strlen(text), 0600, error, error_size);
    }
    kt_secret_free(key_text);
    return result;
}

static kt_client_status save_registration(const registration_state *state, char *error,
                                          size_t error_size)
{
    char reason[512] = "";
    if (save_files(state, reason, sizeof reason) == 0)
        return KT_CLIENT_OK;
    return kt_client_fail(KT_CLIENT_ERROR, error, error_size,
                          "the server registered client %s, but saving it in %s failed: %s. Fix "
                          "the cause, have the org admin disable that client (keytrustee-orgtool "
                          "disable-client --fingerprint %s), and register again into an empty "
                          "directory",
                          state->config.fingerprint, state->confdir, reason,
                          state->config.fingerprint);
}

/* Step 5: the master key deposit, through the endpoint the registration used. */
static kt_client_status store_master(const registration_state *state, char *error,
                                     size_t error_size)
{
    char reason[1024] = "";
    kt_client_status status = kt_client_store_master_key(&state->endpoint, reason, sizeof reason);
    if (status == KT_CLIENT_OK)
        return KT_CLIENT_OK;
    return kt_client_fail(status, error, error_size,
                          "client %s is registered and saved in %s, but its master key (for "
                          "ktclient mount-key) could not be stored: %s. Everything else works; "
                          "once both key servers are up run: ktclient --confdir %s "
                          "create-master-key",
                          state->config.fingerprint, state->confdir, reason, state->confdir);
}

kt_client_status kt_client_register(const char *confdir, const kt_client_registration *registration,
                                    char fingerprint[KT_FINGERPRINT_CHARS + 1], char *error,
                                    size_t error_size)
{
    registration_state state;
    memset(&state, 0, sizeof state);
    state.confdir = confdir;
    fingerprint[0] = '\0';
    if (confdir == NULL || confdir[0] == '\0')
        return kt_client_fail(KT_CLIENT_USAGE, error, error_size,
                              "no configuration directory given");
    kt_client_status status = check_urls(&state, registration, error, error_size);
    if (status == KT_CLIENT_OK)
        status = check_names(&state, registration, error, error_size);
    if (status == KT_CLIENT_OK)
        status = check_trust(&state, registration, error, error_size);
    if (status == KT_CLIENT_OK)
        status = prepare_directory(&state, error, error_size);
    if (status == KT_CLIENT_OK && !registration->skip_ssl_check)
        status = copy_ca(&state, registration->ca_file, error, error_size);
    if (status == KT_CLIENT_OK)
        status = send_registration(&state, registration->auth, error, error_size);
    if (status == KT_CLIENT_OK)
        status = save_registration(&state, error, error_size);
    if (status == KT_CLIENT_OK) {
        memcpy(fingerprint, state.config.fingerprint, KT_FINGERPRINT_CHARS + 1);
        status = store_master(&state, error, error_size);
    } else if (!state.registered) {
        undo(&state);
    }
    kt_secret_free(state.secret_key);
    return status;
}
