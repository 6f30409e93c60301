/*
 * main.c — the ktclient program: the command line of the client library (ktclient.h).
 *
 *   ktclient [--confdir DIR] [--connect-timeout MS] COMMAND [OPTIONS]
 *                                                  (both options may also follow the command)
 *     register --server URL [--passive-server URL] --org ORG --auth SECRET [--clientname NAME]
 *              [--cacert FILE | --skip-ssl-check]          prints the client fingerprint
 *     put --handle H [--file F] [--description D]          reads stdin without --file; prints uuid
 *     get (--handle H | --uuid U)                          content to stdout, byte for byte
 *     list [--json] [--search S]                           one deposit per line, or JSON
 *     delete --uuid U
 *     mount-key --name NAME [--raw]                        a mount point's key: hex, or raw bytes
 *     create-master-key                                    when register could not store it
 *     fingerprint                                          prints the client fingerprint
 *
 * --connect-timeout MS given to register is kept in client.conf; given to another command it
 * overrides client.conf for that run. A write refused because one key server is down prints one
 * line naming that node and exits 3 (ktclient.h, "Servers and failover").
 *
 * Scripts rely on this: results go to stdout alone and in a fixed shape; diagnostics go to stderr
 * as "ktclient: COMMAND: message"; the exit status is the library status (0 ok, 1 other error,
 * 2 usage, 3 server unavailable or write refused, 4 not found, 5 authentication refused).
 * Without --confdir, $KTCLIENT_CONFDIR is used. Options take their value as the next argument or
 * after '=' (--org=acme). Every use of a client registered with --skip-ssl-check prints the
 * warning of KT_CLIENT_SKIP_SSL_WARNING.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "app/ktclient/ktclient.h"

#define ERROR_CHARS 2048

/* ---- Options ----------------------------------------------------------------------------------- */

typedef struct options {
    const char *command;
    const char *confdir;
    const char *server;
    const char *passive_server;
    const char *org;
    const char *auth;
    const char *clientname;
    const char *cacert;
    const char *handle;
    const char *file;
    const char *description;
    const char *uuid;
    const char *search;
    const char *connect_timeout;
    const char *name;
    bool skip_ssl_check;
    bool json;
    bool raw;
    bool help;
} options;

typedef struct option_spec {
    const char *name;
    size_t offset;    /* of a const char * field, or of a bool field for flags */
    bool takes_value;
} option_spec;

static const option_spec option_specs[] = {
    {"confdir", offsetof(options, confdir), true},
    {"server", offsetof(options, server), true},
    {"passive-server", offsetof(options, passive_server), true},
    {"org", offsetof(options, org), true},
    {"auth", offsetof(options, auth), true},
    {"clientname", offsetof(options, clientname), true},
    {"cacert", offsetof(options, cacert), true},
    {"handle", offsetof(options, handle), true},
    {"file", offsetof(options, file), true},
    {"description", offsetof(options, description), true},
    {"uuid", offsetof(options, uuid), true},
    {"search", offsetof(options, search), true},
    {"connect-timeout", offsetof(options, connect_timeout), true},
    {"name", offsetof(options, name), true},
    {"skip-ssl-check", offsetof(options, skip_ssl_check), false},
    {"json", offsetof(options, json), false},
    {"raw", offsetof(options, raw), false},
    {"help", offsetof(options, help), false},
};
#define OPTION_COUNT (sizeof option_specs / sizeof option_specs[0])

typedef struct command_spec {
    const char *name;
    const char *allowed; /* space-separated option names, besides confdir and help */
    const char *help;
    int (*run)(const options *given);
} command_spec;

static int run_register(const options *given);
static int run_put(const options *given);
static int run_get(const options *given);
static int run_list(const options *given);
static int run_delete(const options *given);
static int run_mount_key(const options *given);
static int run_create_master_key(const options *given);
static int run_fingerprint(const options *given);

static const command_spec commands[] = {
    {"register", "server passive-server org auth clientname cacert skip-ssl-check",
     "usage: ktclient [--confdir DIR] register --server URL [--passive-server URL] --org ORG\n"
     "                --auth SECRET [--clientname NAME] (--cacert FILE | --skip-ssl-check)\n"
     "Creates a key pair, registers it with the key server and saves it in DIR.\n"
     "  --server URL          the active key server, https://HOST[:PORT] (port 11371 by default)\n"
     "  --passive-server URL  the passive key server, used for reads when the active is down\n"
     "  --org ORG             the organization to join\n"
     "  --auth SECRET         the organization's auth secret (keytrustee-orgtool list);\n"
     "                        leave it out only when the org has none\n"
     "  --clientname NAME     this client's name (default: the host name)\n"
     "  --cacert FILE         the server's CA certificate (ssl-cert-keytrustee-ca.pem);\n"
     "                        a copy is kept in DIR\n"
     "  --skip-ssl-check      do not verify the server certificate (unsafe)\n"
     "  --connect-timeout MS  how long to wait for a key server to accept a connection before\n"
     "                        trying the other one (default 1000; kept in DIR/client.conf)\n"
     "Prints the client fingerprint, then stores the client's master key (for mount-key).\n"
     "Registration is a write: it is refused (exit 3) while one key server is down.\n",
     run_register},
    {"put", "handle file description",
     "usage: ktclient [--confdir DIR] put --handle H [--file F] [--description D]\n"
     "Stores a deposit (1 byte to 64 KiB) read from F, or from standard input without --file.\n"
     "Prints the new deposit's uuid.\n",
     run_put},
    {"get", "handle uuid",
     "usage: ktclient [--confdir DIR] get (--handle H | --uuid U)\n"
     "Writes a deposit's content, byte for byte, to standard output.\n",
     run_get},
    {"list", "json search",
     "usage: ktclient [--confdir DIR] list [--json] [--search S]\n"
     "Lists deposits, one per line: uuid, handle, created (UTC), state, description, separated\n"
     "by tabs (control characters shown as '?'). --json prints {\"deposits\": [...]} instead.\n"
     "--search S lists only the deposits the server's substring search matches.\n"
     "The deposit " KT_CLIENT_MASTER_HANDLE " is this client's master key (see mount-key).\n",
     run_list},
    {"delete", "uuid",
     "usage: ktclient [--confdir DIR] delete --uuid U\n"
     "Deletes a deposit for good.\n",
     run_delete},
    {"mount-key", "name raw",
     "usage: ktclient [--confdir DIR] mount-key --name NAME [--raw]\n"
     "Prints the 32-byte key of mount point NAME as 64 lowercase hex characters (--raw: the\n"
     "bytes themselves). The key is derived from this client's master key, which register\n"
     "stored on the key servers, so the same NAME always gives the same key; it needs only a\n"
     "read, and works while either key server is down. Nothing is written to disk.\n",
     run_mount_key},
    {"create-master-key", "",
     "usage: ktclient [--confdir DIR] create-master-key\n"
     "Stores this client's master key deposit (" KT_CLIENT_MASTER_HANDLE "), for a client whose\n"
     "registration could not store it. Refused when it exists: replacing it would change every\n"
     "mount key. A write: both key servers must be up.\n",
     run_create_master_key},
    {"fingerprint", "",
     "usage: ktclient [--confdir DIR] fingerprint\n"
     "Prints this client's fingerprint, the identity the key server knows it by.\n",
     run_fingerprint},
};
#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static const char overall_usage[] =
    "usage: ktclient [--confdir DIR] [--connect-timeout MS] COMMAND [OPTIONS]\n"
    "Commands: register, put, get, list, delete, mount-key, create-master-key, fingerprint;\n"
    "ktclient COMMAND --help for each.\n"
    "DIR holds the client's registration (default: $KTCLIENT_CONFDIR).\n"
    "--connect-timeout MS overrides, for this run, how long to wait for a key server to accept a\n"
    "connection before trying the other one (client.conf's connect_timeout_ms, default 1000).\n"
    "Exit status: 0 ok, 1 error, 2 usage, 3 server unavailable or write refused (one key server\n"
    "down: existing keys still work), 4 not found, 5 authentication refused.\n";

static int usage_error(const char *command, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *command, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "ktclient: %s%s", command != NULL ? command : "", command != NULL ? ": " : "");
    vfprintf(stderr, format, arguments);
    va_end(arguments);
    fprintf(stderr, "\ntry: ktclient %s%s--help\n", command != NULL ? command : "",
            command != NULL ? " " : "");
    return KT_CLIENT_USAGE;
}

static const option_spec *find_option(const char *name, size_t length)
{
    for (size_t index = 0; index < OPTION_COUNT; index++)
        if (strlen(option_specs[index].name) == length &&
            strncmp(option_specs[index].name, name, length) == 0)
            return &option_specs[index];
    return NULL;
}

static const command_spec *find_command(const char *name)
{
    for (size_t index = 0; index < COMMAND_COUNT; index++)
        if (strcmp(commands[index].name, name) == 0)
            return &commands[index];
    return NULL;
}

static bool allowed_for(const command_spec *command, const char *name)
{
    if (strcmp(name, "confdir") == 0 || strcmp(name, "help") == 0 ||
        strcmp(name, "connect-timeout") == 0)
        return true;
    if (command == NULL)
        return false;
    size_t length = strlen(name);
    for (const char *cursor = command->allowed; *cursor != '\0';) {
        size_t word = strcspn(cursor, " ");
        if (word == length && strncmp(cursor, name, length) == 0)
            return true;
        cursor += word + (cursor[word] == ' ' ? 1 : 0);
    }
    return false;
}

/* Parses argv[*index] (an option) and maybe its value; returns 0 or a usage exit status. */
static int take_option(int argc, char **argv, int *index, const command_spec *command,
                       options *given)
{
    const char *label = command != NULL ? command->name : NULL;
    const char *argument = argv[*index] + 2;
    const char *equals = strchr(argument, '=');
    size_t name_length = equals != NULL ? (size_t)(equals - argument) : strlen(argument);
    const option_spec *spec = find_option(argument, name_length);
    if (spec != NULL && command == NULL && !allowed_for(NULL, spec->name))
        return usage_error(NULL, "--%s must follow the command", spec->name);
    if (spec == NULL || !allowed_for(command, spec->name))
        return usage_error(label, "unknown option '%.*s'", (int)name_length + 2, argv[*index]);
    char *field = (char *)given + spec->offset;
    if (!spec->takes_value) {
        if (equals != NULL)
            return usage_error(label, "--%s takes no value", spec->name);
        *(bool *)field = true;
        return 0;
    }
    const char *value = equals != NULL ? equals + 1 : NULL;
    if (value == NULL) {
        if (*index + 1 >= argc)
            return usage_error(label, "--%s needs a value", spec->name);
        value = argv[++*index];
    }
    if (*(const char **)field != NULL)
        return usage_error(label, "--%s given twice", spec->name);
    *(const char **)field = value;
    return 0;
}

static int parse_arguments(int argc, char **argv, options *given, const command_spec **command)
{
    memset(given, 0, sizeof *given);
    *command = NULL;
    for (int index = 1; index < argc; index++) {
        const char *argument = argv[index];
        if (strncmp(argument, "--", 2) == 0 && argument[2] != '\0') {
            int status = take_option(argc, argv, &index, *command, given);
            if (status != 0)
                return status;
        } else if (*command == NULL) {
            *command = find_command(argument);
            if (*command == NULL)
                return usage_error(NULL, "unknown command '%s'", argument);
            given->command = (*command)->name;
        } else {
            return usage_error((*command)->name, "unexpected argument '%s'", argument);
        }
    }
    return 0;
}

/* ---- Shared pieces ------------------------------------------------------------------------------ */

static int fail(const char *command, kt_client_status status, const char *message)
{
    fprintf(stderr, "ktclient: %s: %s\n", command, message);
    return (int)status;
}

static const char *confdir_of(const options *given)
{
    if (given->confdir != NULL && given->confdir[0] != '\0')
        return given->confdir;
    const char *environment = getenv("KTCLIENT_CONFDIR");
    return (environment != NULL && environment[0] != '\0') ? environment : NULL;
}

/* The --connect-timeout value in milliseconds, 0 when not given, -1 (after the usage message)
 * when it is not a number from 1 to 60000. */
static long connect_timeout_of(const options *given, int *status)
{
    long milliseconds = 0;
    if (given->connect_timeout == NULL)
        return 0;
    if (kt_client_parse_connect_timeout(given->connect_timeout, &milliseconds) != 0) {
        *status = usage_error(given->command, "--connect-timeout takes a number of milliseconds "
                              "from 1 to %d", KT_CLIENT_MAX_CONNECT_TIMEOUT_MS);
        return -1;
    }
    return milliseconds;
}

static kt_client *open_client(const options *given, int *status)
{
    const char *confdir = confdir_of(given);
    if (confdir == NULL) {
        *status = usage_error(given->command, "no configuration directory: give --confdir DIR "
                              "or set KTCLIENT_CONFDIR");
        return NULL;
    }
    long timeout = connect_timeout_of(given, status);
    if (timeout < 0)
        return NULL;
    char error[ERROR_CHARS];
    kt_client *client = kt_client_open(confdir, error, sizeof error);
    if (client == NULL) {
        *status = fail(given->command, KT_CLIENT_ERROR, error);
        return NULL;
    }
    if (timeout > 0 &&
        kt_client_set_connect_timeout(client, timeout, error, sizeof error) != KT_CLIENT_OK) {
        kt_client_close(client);
        *status = usage_error(given->command, "%s", error);
        return NULL;
    }
    if (kt_client_skips_ssl_check(client))
        fprintf(stderr, "%s\n", KT_CLIENT_SKIP_SSL_WARNING);
    return client;
}

static int finish_output(const char *command)
{
    if (fflush(stdout) != 0 || ferror(stdout) != 0)
        return fail(command, KT_CLIENT_ERROR, "cannot write to standard output");
    return 0;
}

/* ---- register ----------------------------------------------------------------------------------- */

static int run_register(const options *given)
{
    const char *confdir = confdir_of(given);
    if (confdir == NULL)
        return usage_error("register", "no configuration directory: give --confdir DIR or set "
                           "KTCLIENT_CONFDIR");
    if (given->server == NULL || given->org == NULL)
        return usage_error("register", "--server URL and --org ORG are required");
    int usage = 0;
    long timeout = connect_timeout_of(given, &usage);
    if (timeout < 0)
        return usage;
    if (given->skip_ssl_check)
        fprintf(stderr, "%s\n", KT_CLIENT_SKIP_SSL_WARNING);
    kt_client_registration registration = {
        .server = given->server, .passive_server = given->passive_server, .org = given->org,
        .auth = given->auth, .name = given->clientname, .ca_file = given->cacert,
        .skip_ssl_check = given->skip_ssl_check, .connect_timeout_ms = (int)timeout};
    char fingerprint[KT_FINGERPRINT_CHARS + 1];
    char error[ERROR_CHARS];
    kt_client_status status =
        kt_client_register(confdir, &registration, fingerprint, error, sizeof error);
    if (status == KT_CLIENT_USAGE)
        return usage_error("register", "%s", error);
    if (fingerprint[0] != '\0') /* registered, even if the master key could not be stored */
        printf("%s\n", fingerprint);
    int output = finish_output("register");
    if (status != KT_CLIENT_OK)
        return fail("register", status, error);
    return output;
}

/* ---- put ---------------------------------------------------------------------------------------- */

/* Reads all of a descriptor into a secret buffer; one byte over the limit is read to detect it. */
static kt_secret *read_deposit(int descriptor, const char *source, char *error, size_t error_size)
{
    kt_secret *buffer = kt_secret_new(KT_CLIENT_MAX_SECRET + 1);
    if (buffer == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    size_t used = 0;
    while (used < buffer->length) {
        ssize_t count = read(descriptor, buffer->bytes + used, buffer->length - used);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0) {
            snprintf(error, error_size, "cannot read %s: %s", source, strerror(errno));
            kt_secret_free(buffer);
            return NULL;
        }
        if (count == 0)
            break;
        used += (size_t)count;
    }
    if (used == 0 || used > KT_CLIENT_MAX_SECRET) {
        snprintf(error, error_size, "%s %s; a deposit holds 1 byte to 64 KiB", source,
                 used == 0 ? "is empty" : "is larger than 64 KiB");
        kt_secret_free(buffer);
        return NULL;
    }
    buffer->length = used;
    return buffer;
}

static kt_secret *read_deposit_source(const options *given, char *error, size_t error_size)
{
    if (given->file == NULL)
        return read_deposit(STDIN_FILENO, "standard input", error, error_size);
    int descriptor = open(given->file, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0) {
        snprintf(error, error_size, "cannot open %s: %s", given->file, strerror(errno));
        return NULL;
    }
    kt_secret *secret = read_deposit(descriptor, given->file, error, error_size);
    (void)close(descriptor);
    return secret;
}

static int run_put(const options *given)
{
    if (given->handle == NULL)
        return usage_error("put", "--handle H is required");
    if (!kt_client_handle_valid(given->handle))
        return usage_error("put", "a handle must be 1 to %u bytes without control characters",
                           KT_CLIENT_MAX_HANDLE);
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    kt_secret *secret = read_deposit_source(given, error, sizeof error);
    if (secret == NULL) {
        kt_client_close(client);
        return fail("put", KT_CLIENT_ERROR, error);
    }
    char uuid[KT_UUID_CHARS + 1];
    kt_client_status result = kt_client_put(client, given->handle, secret->bytes, secret->length,
                                            given->description, uuid, error, sizeof error);
    kt_secret_free(secret);
    kt_client_close(client);
    if (result == KT_CLIENT_USAGE)
        return usage_error("put", "%s", error);
    if (result != KT_CLIENT_OK)
        return fail("put", result, error);
    printf("%s\n", uuid);
    return finish_output("put");
}

/* ---- get ---------------------------------------------------------------------------------------- */

static int write_all(int descriptor, const unsigned char *bytes, size_t length)
{
    while (length > 0) {
        ssize_t count = write(descriptor, bytes, length);
        if (count < 0 && errno == EINTR)
            continue;
        if (count <= 0)
            return -1;
        bytes += count;
        length -= (size_t)count;
    }
    return 0;
}

static int run_get(const options *given)
{
    if ((given->handle == NULL) == (given->uuid == NULL))
        return usage_error("get", "give exactly one of --handle H and --uuid U");
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    kt_secret *secret = NULL;
    kt_client_status result =
        given->uuid != NULL
            ? kt_client_get_by_uuid(client, given->uuid, &secret, error, sizeof error)
            : kt_client_get_by_handle(client, given->handle, &secret, error, sizeof error);
    kt_client_close(client);
    if (result == KT_CLIENT_USAGE)
        return usage_error("get", "%s", error);
    if (result != KT_CLIENT_OK)
        return fail("get", result, error);
    int written = write_all(STDOUT_FILENO, secret->bytes, secret->length);
    kt_secret_free(secret);
    if (written != 0)
        return fail("get", KT_CLIENT_ERROR, "cannot write the deposit to standard output");
    return 0;
}

/* ---- list --------------------------------------------------------------------------------------- */

/* Prints untrusted text with control characters replaced by '?'. */
static void print_safe(const char *text)
{
    for (; *text != '\0'; text++) {
        unsigned char byte = (unsigned char)*text;
        putchar((byte < 0x20 || byte == 0x7f) ? '?' : byte);
    }
}

static int print_line(const kt_client_deposit *deposit, void *context)
{
    (void)context;
    char created[32] = "?";
    time_t seconds = (time_t)deposit->created;
    struct tm broken;
    if (gmtime_r(&seconds, &broken) != NULL)
        (void)strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &broken);
    print_safe(deposit->uuid);
    putchar('\t');
    print_safe(deposit->handle);
    printf("\t%s\t", created);
    print_safe(deposit->state);
    putchar('\t');
    print_safe(deposit->description);
    putchar('\n');
    return 0;
}

/* The JSON list being built; `failed` records a memory failure that stopped the walk. */
typedef struct json_list {
    json_t *deposits;
    bool failed;
} json_list;

static int add_json(const kt_client_deposit *deposit, void *context)
{
    json_list *list = context;
    json_t *item = json_pack("{s:s, s:s, s:s, s:I, s:s}", "uuid", deposit->uuid, "handle",
                             deposit->handle, "description", deposit->description, "created",
                             (json_int_t)deposit->created, "state", deposit->state);
    if (item == NULL || json_array_append_new(list->deposits, item) != 0) {
        list->failed = true;
        return -1;
    }
    return 0;
}

static int print_json(json_t *deposits)
{
    json_t *root = json_pack("{s:O}", "deposits", deposits);
    if (root == NULL || json_dumpf(root, stdout, JSON_COMPACT) != 0) {
        json_decref(root);
        return -1;
    }
    json_decref(root);
    putchar('\n');
    return 0;
}

static int run_list(const options *given)
{
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    json_list list = {.deposits = json_array()};
    kt_client_status result =
        kt_client_list(client, given->search, given->json ? add_json : print_line, &list, error,
                       sizeof error);
    kt_client_close(client);
    if (result == KT_CLIENT_OK && given->json &&
        (list.deposits == NULL || list.failed || print_json(list.deposits) != 0)) {
        result = KT_CLIENT_ERROR;
        snprintf(error, sizeof error, "out of memory formatting the list as JSON");
    }
    json_decref(list.deposits);
    if (result == KT_CLIENT_USAGE)
        return usage_error("list", "%s", error);
    if (result != KT_CLIENT_OK)
        return fail("list", result, error);
    return finish_output("list");
}

/* ---- delete, fingerprint ------------------------------------------------------------------------ */

static int run_delete(const options *given)
{
    if (given->uuid == NULL)
        return usage_error("delete", "--uuid U is required");
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    kt_client_status result = kt_client_delete(client, given->uuid, error, sizeof error);
    kt_client_close(client);
    if (result == KT_CLIENT_USAGE)
        return usage_error("delete", "%s", error);
    if (result != KT_CLIENT_OK)
        return fail("delete", result, error);
    return 0;
}

/* ---- mount-key, create-master-key ------------------------------------------------------------- */

/* Writes the key as lowercase hex and a newline, through a secret buffer. */
static int write_hex(const kt_secret *key)
{
    static const char digits[] = "0123456789abcdef";
    kt_secret *text = kt_secret_new(2 * key->length + 1);
    if (text == NULL)
        return -1;
    for (size_t index = 0; index < key->length; index++) {
        text->bytes[2 * index] = (unsigned char)digits[key->bytes[index] >> 4];
        text->bytes[2 * index + 1] = (unsigned char)digits[key->bytes[index] & 0x0f];
    }
    text->bytes[2 * key->length] = '\n';
    int result = write_all(STDOUT_FILENO, text->bytes, text->length);
    kt_secret_free(text);
    return result;
}

static int run_mount_key(const options *given)
{
    if (given->name == NULL)
        return usage_error("mount-key", "--name NAME is required");
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    kt_secret *key = NULL;
    kt_client_status result = kt_client_mount_key(client, given->name, &key, error, sizeof error);
    kt_client_close(client);
    if (result == KT_CLIENT_USAGE)
        return usage_error("mount-key", "%s", error);
    if (result != KT_CLIENT_OK)
        return fail("mount-key", result, error);
    int written = given->raw ? write_all(STDOUT_FILENO, key->bytes, key->length) : write_hex(key);
    kt_secret_free(key);
    if (written != 0)
        return fail("mount-key", KT_CLIENT_ERROR, "cannot write the key to standard output");
    return 0;
}

static int run_create_master_key(const options *given)
{
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    char error[ERROR_CHARS];
    kt_client_status result = kt_client_create_master_key(client, error, sizeof error);
    kt_client_close(client);
    if (result != KT_CLIENT_OK)
        return fail("create-master-key", result, error);
    return 0;
}

static int run_fingerprint(const options *given)
{
    int status = 0;
    kt_client *client = open_client(given, &status);
    if (client == NULL)
        return status;
    printf("%s\n", kt_client_fingerprint(client));
    kt_client_close(client);
    return finish_output("fingerprint");
}

/* ---- main --------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (kt_client_library_init() != 0) {
        fprintf(stderr, "ktclient: cannot initialise the crypto library (libsodium)\n");
        return KT_CLIENT_ERROR;
    }
    options given;
    const command_spec *command = NULL;
    int status = parse_arguments(argc, argv, &given, &command);
    if (status != 0)
        return status;
    if (command == NULL) {
        fputs(overall_usage, given.help ? stdout : stderr);
        return given.help ? 0 : KT_CLIENT_USAGE;
    }
    if (given.help) {
        fputs(command->help, stdout);
        return finish_output(command->name);
    }
    return command->run(&given);
}
