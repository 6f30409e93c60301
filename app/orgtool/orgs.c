/*
 * orgs.c — the org commands of keytrustee-orgtool: `add`, `list` and `set-auth`.
 *
 * add makes a new auth secret (base64 of 16 random bytes), seals it and sends org.add; it does not
 * print the secret (the original printed nothing): `list` shows it. list prints one JSON object
 * keyed by org name, each with auth_secret, contacts, creation, expiration, key_info, name, state
 * and uuid, as the original did; the decrypted secrets live in kt_secret buffers and in jansson
 * memory that is zeroed when freed. set-auth replaces the secret; "" removes it, after which
 * registrations into the org need no secret.
 */
#include <stdio.h>
#include <string.h>

#include "app/orgtool/orgtool.h"
#include "storage/storage.h"

static const char add_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] add -n ORG -c EMAILS\n"
    "  -n, --name ORG          org name: letters, digits, '_', '.', '-' (at most 64)\n"
    "  -c, --contacts EMAILS   contact addresses, separated by commas\n";
static const char list_usage[] = "usage: keytrustee-orgtool [--confdir DIR] list\n";
static const char set_auth_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] set-auth -n ORG -s SECRET\n"
    "  -n, --name ORG       the org\n"
    "  -s, --secret SECRET  the new auth secret (at most 128 printable ASCII characters);\n"
    "                       \"\" removes it: registrations then need no secret\n";

typedef struct org_options {
    const char *name;
    const char *contacts;
    char *secret; /* argv memory: wiped once copied */
} org_options;

static orgtool_parse_result parse_org_options(orgtool_context *context, int argc, char **argv,
                                              const char *usage, org_options *options)
{
    static const struct option long_options[] = {
        {"name", required_argument, NULL, 'n'},
        {"contacts", required_argument, NULL, 'c'},
        {"secret", required_argument, NULL, 's'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":n:c:s:h", long_options, NULL)) != -1) {
        switch (result) {
        case 'n': options->name = optarg; break;
        case 'c': options->contacts = optarg; break;
        case 's': options->secret = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(usage, stdout); return ORGTOOL_PARSE_HELP;
        default: orgtool_option_error(argv[0], usage, result, argv); return ORGTOOL_PARSE_ERROR;
        }
    }
    return orgtool_no_operands(argv[0], usage, argc, argv);
}

/* Rejects options that the command does not take. */
static bool only_options(const char *command, const char *usage, const org_options *options,
                         bool contacts, bool secret)
{
    const char *extra = (!contacts && options->contacts != NULL) ? "-c"
                        : (!secret && options->secret != NULL) ? "-s" : NULL;
    if (extra == NULL)
        return true;
    orgtool_usage_error(command, usage, "option %s does not apply to %s", extra, command);
    return false;
}

/* ---- add ------------------------------------------------------------------------------------- */

static bool contact_valid(const char *contact, size_t length)
{
    if (length == 0 || memchr(contact, '@', length) == NULL)
        return false;
    for (size_t index = 0; index < length; index++) {
        unsigned char character = (unsigned char)contact[index];
        if (character <= ' ' || character >= 0x7f)
            return false;
    }
    return true;
}

/* "a@x, b@y" -> "a@x,b@y"; every entry must look like an e-mail address. */
static int normalize_contacts(const char *text, char out[KT_CONTACTS_MAX + 1])
{
    size_t used = 0;
    const char *cursor = text;
    for (;;) {
        const char *comma = strchr(cursor, ',');
        const char *end = comma != NULL ? comma : cursor + strlen(cursor);
        while (cursor < end && *cursor == ' ')
            cursor++;
        while (end > cursor && end[-1] == ' ')
            end--;
        size_t length = (size_t)(end - cursor);
        if (!contact_valid(cursor, length) || used + length + 1 > KT_CONTACTS_MAX)
            return -1;
        if (used > 0)
            out[used++] = ',';
        memcpy(out + used, cursor, length);
        used += length;
        out[used] = '\0';
        if (comma == NULL)
            return 0;
        cursor = comma + 1;
    }
}

static json_t *build_add_request(const kt_server_keys *keys, const char *name,
                                 const char *contacts)
{
    kt_secret *secret = orgtool_new_auth_secret();
    json_t *request = json_pack("{s:s, s:s, s:s}", "op", "org.add", "name", name, "contacts",
                                contacts);
    int sealed = secret != NULL && request != NULL
                     ? orgtool_seal_auth(keys, name, secret, request) : -1;
    kt_secret_free(secret);
    if (sealed != 0) {
        json_decref(request);
        return NULL;
    }
    return request;
}

static int send_add(orgtool_context *context, const char *name, const char *contacts)
{
    kt_server_keys *keys = NULL;
    if (orgtool_load_keys(context, "add", &keys) != 0)
        return ORGTOOL_EXIT_FAILURE;
    json_t *request = build_add_request(keys, name, contacts);
    kt_server_keys_free(keys);
    if (request == NULL) {
        orgtool_fail("add", "cannot seal the new auth secret (out of memory?)");
        return ORGTOOL_EXIT_FAILURE;
    }
    json_t *response = NULL;
    int exit_code = orgtool_call(context, "add", request, &response);
    json_decref(request);
    if (exit_code != ORGTOOL_EXIT_OK)
        return exit_code;
    const char *uuid = json_string_value(json_object_get(json_object_get(response, "org"),
                                                         "uuid"));
    printf("Added org %s (uuid %s); `keytrustee-orgtool list` shows its auth secret\n", name,
           uuid != NULL ? uuid : "unknown");
    json_decref(response);
    return ORGTOOL_EXIT_OK;
}

int orgtool_add(orgtool_context *context, int argc, char **argv)
{
    org_options options = {.name = NULL};
    orgtool_parse_result parsed = parse_org_options(context, argc, argv, add_usage, &options);
    if (parsed != ORGTOOL_PARSE_OK)
        return orgtool_parse_exit(parsed);
    if (!only_options("add", add_usage, &options, true, false) ||
        !orgtool_check_org_name("add", add_usage, options.name))
        return ORGTOOL_EXIT_USAGE;
    char contacts[KT_CONTACTS_MAX + 1];
    if (options.contacts == NULL || normalize_contacts(options.contacts, contacts) != 0) {
        orgtool_usage_error("add", add_usage, "give the contacts with -c EMAILS: e-mail addresses "
                            "separated by commas, %u characters in all at most", KT_CONTACTS_MAX);
        return ORGTOOL_EXIT_USAGE;
    }
    return send_add(context, options.name, contacts);
}

/* ---- list ------------------------------------------------------------------------------------ */

/* The wire's contacts ("a@x,b@y", or already a list) as a JSON list. */
static json_t *contacts_list(const json_t *contacts)
{
    if (json_is_array(contacts))
        return json_deep_copy(contacts);
    json_t *list = json_array();
    const char *text = json_string_value(contacts);
    while (list != NULL && text != NULL && *text != '\0') {
        const char *comma = strchr(text, ',');
        size_t length = comma != NULL ? (size_t)(comma - text) : strlen(text);
        if (length > 0 && json_array_append_new(list, json_stringn(text, length)) != 0) {
            json_decref(list);
            return NULL;
        }
        text = comma != NULL ? comma + 1 : text + length;
    }
    return list;
}

static json_t *integer_time(const json_t *org, const char *key)
{
    char text[32];
    orgtool_format_time(json_integer_value(json_object_get(org, key)), text);
    return json_string(text);
}

/* One org as the original printed it. The secret goes into jansson memory wiped when freed. */
static json_t *describe_org(const json_t *org, const char *name, const kt_secret *secret)
{
    json_t *state = json_object_get(org, "state");
    json_t *uuid = json_object_get(org, "uuid");
    return json_pack("{s:s%, s:o, s:o, s:o, s:n, s:s, s:O?, s:O?}",
                     "auth_secret", (const char *)secret->bytes, secret->length,
                     "contacts", contacts_list(json_object_get(org, "contacts")),
                     "creation", integer_time(org, "created"),
                     "expiration", integer_time(org, "expires"),
                     "key_info",
                     "name", name,
                     "state", state,
                     "uuid", uuid);
}

/* Adds one org to the output; -1 after reporting a failure. */
static int add_listed_org(const kt_server_keys *keys, const json_t *org, json_t *output)
{
    const char *name = json_string_value(json_object_get(org, "name"));
    if (name == NULL) {
        orgtool_fail("list", "keytrustee-db sent an org without a name");
        return -1;
    }
    kt_secret *secret = NULL;
    if (orgtool_open_auth(keys, name, org, &secret) != 0) {
        orgtool_fail("list", "cannot open the auth secret of org %s: it was sealed with another "
                     "server key or altered (is --confdir the right .keytrustee?)", name);
        return -1;
    }
    json_t *described = describe_org(org, name, secret);
    kt_secret_free(secret);
    if (described == NULL || json_object_set_new(output, name, described) != 0) {
        orgtool_fail("list", "cannot show org %s (out of memory, or a secret that is not UTF-8)",
                     name);
        return -1;
    }
    return 0;
}

static int print_orgs(const kt_server_keys *keys, const json_t *orgs)
{
    json_t *output = json_object();
    if (output == NULL) {
        orgtool_fail("list", "out of memory");
        return ORGTOOL_EXIT_FAILURE;
    }
    int failures = 0;
    size_t index;
    const json_t *org;
    json_array_foreach((json_t *)orgs, index, org)
        failures += add_listed_org(keys, org, output) != 0;
    int printed = orgtool_print_json("list", output);
    json_decref(output);
    return failures == 0 && printed == 0 ? ORGTOOL_EXIT_OK : ORGTOOL_EXIT_FAILURE;
}

int orgtool_list(orgtool_context *context, int argc, char **argv)
{
    org_options options = {.name = NULL};
    orgtool_parse_result parsed = parse_org_options(context, argc, argv, list_usage, &options);
    if (parsed != ORGTOOL_PARSE_OK)
        return orgtool_parse_exit(parsed);
    if (options.name != NULL || !only_options("list", list_usage, &options, false, false)) {
        orgtool_usage_error("list", list_usage, "list takes no options: it shows every org");
        return ORGTOOL_EXIT_USAGE;
    }
    kt_server_keys *keys = NULL;
    if (orgtool_load_keys(context, "list", &keys) != 0)
        return ORGTOOL_EXIT_FAILURE;
    json_t *request = json_pack("{s:s}", "op", "org.list");
    json_t *response = NULL;
    int exit_code = request == NULL ? ORGTOOL_EXIT_FAILURE
                                    : orgtool_call(context, "list", request, &response);
    json_decref(request);
    if (exit_code == ORGTOOL_EXIT_OK)
        exit_code = print_orgs(keys, json_object_get(response, "orgs"));
    json_decref(response);
    kt_server_keys_free(keys);
    return exit_code;
}

/* ---- set-auth -------------------------------------------------------------------------------- */

static bool secret_text_valid(const char *secret, size_t length)
{
    for (size_t index = 0; index < length; index++) {
        unsigned char character = (unsigned char)secret[index];
        if (character < 0x20 || character > 0x7e)
            return false;
    }
    return length <= KT_AUTH_SECRET_MAX;
}

/* Copies the secret out of argv and wipes argv's copy, so it leaves the process listing. */
static kt_secret *take_secret(char *argument)
{
    size_t length = strlen(argument);
    kt_secret *secret = kt_secret_from(argument, length);
    kt_wipe(argument, length);
    return secret;
}

static int send_set_auth(orgtool_context *context, const char *name, const kt_secret *secret)
{
    kt_server_keys *keys = NULL;
    if (secret->length > 0 && orgtool_load_keys(context, "set-auth", &keys) != 0)
        return ORGTOOL_EXIT_FAILURE;
    json_t *request = json_pack("{s:s, s:s}", "op", "org.set_auth", "name", name);
    if (request == NULL || orgtool_seal_auth(keys, name, secret, request) != 0) {
        kt_server_keys_free(keys);
        json_decref(request);
        orgtool_fail("set-auth", "cannot seal the auth secret (out of memory?)");
        return ORGTOOL_EXIT_FAILURE;
    }
    kt_server_keys_free(keys);
    json_t *response = NULL;
    int exit_code = orgtool_call(context, "set-auth", request, &response);
    json_decref(request);
    json_decref(response);
    if (exit_code == ORGTOOL_EXIT_OK && secret->length > 0)
        printf("Set the auth secret of org %s\n", name);
    else if (exit_code == ORGTOOL_EXIT_OK)
        printf("Removed the auth secret of org %s: registrations need no secret now\n", name);
    return exit_code;
}

int orgtool_set_auth(orgtool_context *context, int argc, char **argv)
{
    org_options options = {.name = NULL};
    orgtool_parse_result parsed =
        parse_org_options(context, argc, argv, set_auth_usage, &options);
    if (parsed != ORGTOOL_PARSE_OK)
        return orgtool_parse_exit(parsed);
    if (!only_options("set-auth", set_auth_usage, &options, false, true) ||
        !orgtool_check_org_name("set-auth", set_auth_usage, options.name))
        return ORGTOOL_EXIT_USAGE;
    if (options.secret == NULL ||
        !secret_text_valid(options.secret, strlen(options.secret))) {
        if (options.secret != NULL)
            kt_wipe(options.secret, strlen(options.secret));
        orgtool_usage_error("set-auth", set_auth_usage, "give the secret with -s SECRET: at most "
                            "%u printable ASCII characters, or \"\" for none", KT_AUTH_SECRET_MAX);
        return ORGTOOL_EXIT_USAGE;
    }
    kt_secret *secret = take_secret(options.secret);
    if (secret == NULL) {
        orgtool_fail("set-auth", "out of memory");
        return ORGTOOL_EXIT_FAILURE;
    }
    int exit_code = send_set_auth(context, options.name, secret);
    kt_secret_free(secret);
    return exit_code;
}
