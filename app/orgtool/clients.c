/*
 * clients.c — the client commands of keytrustee-orgtool: `disable-client` and `enable-client`
 * (client.set_state by fingerprint, as the original) and `list-clients` (client.list, optionally
 * for one org), which prints one JSON object keyed by fingerprint.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "app/orgtool/orgtool.h"
#include "storage/storage.h"

static const char disable_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] disable-client --fingerprint FP\n"
    "  --fingerprint FP   the client's fingerprint (40 hexadecimal characters)\n";
static const char enable_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] enable-client --fingerprint FP\n"
    "  --fingerprint FP   the client's fingerprint (40 hexadecimal characters)\n";
static const char list_clients_usage[] =
    "usage: keytrustee-orgtool [--confdir DIR] list-clients [-n ORG]\n"
    "  -n, --name ORG   only the clients of this org\n";

typedef struct client_options {
    const char *fingerprint;
    const char *org;
} client_options;

static orgtool_parse_result parse_client_options(orgtool_context *context, int argc, char **argv,
                                                 const char *usage, client_options *options)
{
    static const struct option long_options[] = {
        {"fingerprint", required_argument, NULL, 'f'},
        {"name", required_argument, NULL, 'n'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":f:n:h", long_options, NULL)) != -1) {
        switch (result) {
        case 'f': options->fingerprint = optarg; break;
        case 'n': options->org = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(usage, stdout); return ORGTOOL_PARSE_HELP;
        default: orgtool_option_error(argv[0], usage, result, argv); return ORGTOOL_PARSE_ERROR;
        }
    }
    return orgtool_no_operands(argv[0], usage, argc, argv);
}

/* Uppercases a fingerprint typed in either case and checks it; false after a usage error. */
static bool normalize_fingerprint(const char *command, const char *usage, const char *text,
                                  char out[KT_FINGERPRINT_CHARS + 1])
{
    if (text == NULL) {
        orgtool_usage_error(command, usage, "give the client with --fingerprint FP");
        return false;
    }
    size_t length = strlen(text);
    for (size_t index = 0; index < length && index < KT_FINGERPRINT_CHARS; index++)
        out[index] = (char)toupper((unsigned char)text[index]);
    out[length < KT_FINGERPRINT_CHARS ? length : KT_FINGERPRINT_CHARS] = '\0';
    if (length == KT_FINGERPRINT_CHARS && kt_fingerprint_valid(out))
        return true;
    orgtool_usage_error(command, usage, "'%s' is not a client fingerprint (40 hexadecimal "
                        "characters, as `list-clients` shows)", text);
    return false;
}

static int set_client_state(orgtool_context *context, int argc, char **argv, const char *usage,
                            kt_state state)
{
    const char *command = argv[0];
    client_options options = {.fingerprint = NULL};
    orgtool_parse_result parsed = parse_client_options(context, argc, argv, usage, &options);
    if (parsed != ORGTOOL_PARSE_OK)
        return orgtool_parse_exit(parsed);
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    if (options.org != NULL) {
        orgtool_usage_error(command, usage, "-n does not apply: a fingerprint names one client");
        return ORGTOOL_EXIT_USAGE;
    }
    if (!normalize_fingerprint(command, usage, options.fingerprint, fingerprint))
        return ORGTOOL_EXIT_USAGE;
    json_t *request = json_pack("{s:s, s:s, s:s}", "op", "client.set_state", "fingerprint",
                                fingerprint, "state", kt_state_name(state));
    json_t *response = NULL;
    int exit_code = request == NULL ? ORGTOOL_EXIT_FAILURE
                                    : orgtool_call(context, command, request, &response);
    json_decref(request);
    json_decref(response);
    if (exit_code == ORGTOOL_EXIT_OK)
        printf("%s client %s\n", state == KT_STATE_DISABLED ? "Disabled" : "Enabled",
               fingerprint);
    return exit_code;
}

int orgtool_disable_client(orgtool_context *context, int argc, char **argv)
{
    return set_client_state(context, argc, argv, disable_usage, KT_STATE_DISABLED);
}

int orgtool_enable_client(orgtool_context *context, int argc, char **argv)
{
    return set_client_state(context, argc, argv, enable_usage, KT_STATE_ACTIVE);
}

static json_t *describe_client(const json_t *client)
{
    char created[32];
    orgtool_format_time(json_integer_value(json_object_get(client, "created")), created);
    return json_pack("{s:s, s:O?, s:O?, s:O?, s:O?, s:O?}",
                     "created", created,
                     "fingerprint", json_object_get(client, "fingerprint"),
                     "name", json_object_get(client, "name"),
                     "org", json_object_get(client, "org"),
                     "public_key", json_object_get(client, "public_key"),
                     "state", json_object_get(client, "state"));
}

static int print_clients(const json_t *clients)
{
    json_t *output = json_object();
    int failures = output == NULL;
    size_t index;
    const json_t *client;
    json_array_foreach((json_t *)clients, index, client) {
        const char *fingerprint = json_string_value(json_object_get(client, "fingerprint"));
        if (output != NULL && fingerprint != NULL &&
            json_object_set_new(output, fingerprint, describe_client(client)) != 0)
            failures++;
    }
    if (failures != 0) {
        orgtool_fail("list-clients", "out of memory while formatting the clients");
        json_decref(output);
        return ORGTOOL_EXIT_FAILURE;
    }
    int printed = orgtool_print_json("list-clients", output);
    json_decref(output);
    return printed == 0 ? ORGTOOL_EXIT_OK : ORGTOOL_EXIT_FAILURE;
}

int orgtool_list_clients(orgtool_context *context, int argc, char **argv)
{
    client_options options = {.fingerprint = NULL};
    orgtool_parse_result parsed =
        parse_client_options(context, argc, argv, list_clients_usage, &options);
    if (parsed != ORGTOOL_PARSE_OK)
        return orgtool_parse_exit(parsed);
    if (options.fingerprint != NULL) {
        orgtool_usage_error("list-clients", list_clients_usage, "--fingerprint does not apply");
        return ORGTOOL_EXIT_USAGE;
    }
    if (options.org != NULL &&
        !orgtool_check_org_name("list-clients", list_clients_usage, options.org))
        return ORGTOOL_EXIT_USAGE;
    json_t *request = json_pack("{s:s}", "op", "client.list");
    if (request != NULL && options.org != NULL &&
        json_object_set_new(request, "org", json_string(options.org)) != 0) {
        json_decref(request);
        request = NULL;
    }
    json_t *response = NULL;
    int exit_code = request == NULL ? ORGTOOL_EXIT_FAILURE
                                    : orgtool_call(context, "list-clients", request, &response);
    json_decref(request);
    if (exit_code == ORGTOOL_EXIT_OK)
        exit_code = print_clients(json_object_get(response, "clients"));
    json_decref(response);
    return exit_code;
}
