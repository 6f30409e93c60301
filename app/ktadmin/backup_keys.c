/*
 * backup_keys.c — the keys that protect backups: `ktadmin backup-key generate --output DIR`, and
 * reading passphrase files and backup key files (formats in archive.h).
 *
 * The backup key pair is X25519: backups are sealed to the public half, which may sit on every
 * key server (e.g. as .keytrustee/backup-recipient.pub, the default recipient of `ktadmin
 * backup`); the secret half opens them and belongs offline, with whoever may restore a node.
 * Files holding a secret — the secret key, a passphrase — must not be readable by group or
 * others: reading one refuses and names the chmod that fixes it, as the server key file does.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktadmin/archive.h"

#define PUBLIC_KEY_LABEL   "keytrustee-backup-public-key-v1"
#define SECRET_KEY_LABEL   "keytrustee-backup-secret-key-v1"
#define PUBLIC_KEY_FILE    "keytrustee-backup.pub"
#define SECRET_KEY_FILE    "keytrustee-backup.key"
#define KEY_FILE_MAX       256u
#define PASSPHRASE_MAX     1024u

static const char backup_key_usage[] =
    "usage: ktadmin [--confdir DIR] backup-key generate --output DIR\n"
    "  --output DIR   where to write keytrustee-backup.pub (the public key, for `ktadmin backup\n"
    "                 --recipient`) and keytrustee-backup.key (the secret key: keep it offline)\n";

const char *ktadmin_protection_name(ktadmin_protection protection)
{
    switch (protection) {
    case KTADMIN_PASSPHRASE: return "passphrase";
    case KTADMIN_BACKUP_KEY: return "backup-key";
    case KTADMIN_CLEARTEXT: break;
    }
    return "cleartext";
}

void ktadmin_backup_keys_clear(ktadmin_backup_keys *keys)
{
    kt_secret_free(keys->passphrase);
    kt_secret_free(keys->secret_key);
    kt_wipe(keys, sizeof *keys);
}

void ktadmin_key_id_text(const unsigned char id[KT_SEAL_KEY_ID_BYTES],
                         char text[KTADMIN_KEY_ID_CHARS + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < KT_SEAL_KEY_ID_BYTES; index++) {
        text[2 * index] = digits[id[index] >> 4];
        text[2 * index + 1] = digits[id[index] & 0x0F];
    }
    text[KTADMIN_KEY_ID_CHARS] = '\0';
}

/* Refuses a file holding a secret that group or others can read. */
static int check_private_file(const char *path, const char *what, char *error, size_t error_size)
{
    struct stat status;
    if (stat(path, &status) != 0) {
        snprintf(error, error_size, "cannot read the %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    if ((status.st_mode & 077) != 0) {
        snprintf(error, error_size, "the %s %s can be read by other users (mode %03o); run "
                 "`chmod 600 %s` first", what, path, (unsigned)(status.st_mode & 0777), path);
        return -1;
    }
    return 0;
}

int ktadmin_read_passphrase(const char *path, kt_secret **passphrase, char *error,
                            size_t error_size)
{
    *passphrase = NULL;
    kt_secret *text = NULL;
    if (check_private_file(path, "passphrase file", error, error_size) != 0 ||
        kt_read_secret_file(path, PASSPHRASE_MAX, &text, error, error_size) != 0)
        return -1;
    size_t length = text->length;
    if (length > 0 && text->bytes[length - 1] == '\n')
        length--;
    if (length > 0 && text->bytes[length - 1] == '\r')
        length--;
    if (length == 0) {
        kt_secret_free(text);
        snprintf(error, error_size, "the passphrase file %s is empty", path);
        return -1;
    }
    *passphrase = kt_secret_from(text->bytes, length);
    kt_secret_free(text);
    if (*passphrase == NULL) {
        snprintf(error, error_size, "out of memory reading %s", path);
        return -1;
    }
    return 0;
}

/* Decodes "LABEL BASE64\n" holding exactly KT_SEAL_PUBLIC_BYTES bytes into `out`. */
static int decode_key_line(const kt_secret *text, const char *label, unsigned char *out)
{
    size_t label_length = strlen(label);
    size_t length = text->length;
    if (length < label_length + 2 || text->bytes[length - 1] != '\n' ||
        memcmp(text->bytes, label, label_length) != 0 || text->bytes[label_length] != ' ')
        return -1;
    size_t decoded = 0;
    const char *encoded = (const char *)text->bytes + label_length + 1;
    size_t encoded_length = length - label_length - 2;
    if (kt_base64_decode(out, KT_SEAL_PUBLIC_BYTES, &decoded, encoded, encoded_length) != 0 ||
        decoded != KT_SEAL_PUBLIC_BYTES)
        return -1;
    return 0;
}

int ktadmin_read_public_key(const char *path, unsigned char key[KT_SEAL_PUBLIC_BYTES],
                            char *error, size_t error_size)
{
    kt_secret *text = NULL;
    if (kt_read_secret_file(path, KEY_FILE_MAX, &text, error, error_size) != 0)
        return -1;
    int result = decode_key_line(text, PUBLIC_KEY_LABEL, key);
    kt_secret_free(text);
    if (result != 0)
        snprintf(error, error_size, "%s is not a backup public key (a line \"%s BASE64\" made by "
                 "`ktadmin backup-key generate`)", path, PUBLIC_KEY_LABEL);
    return result;
}

int ktadmin_read_secret_key(const char *path, kt_secret **key, char *error, size_t error_size)
{
    *key = NULL;
    kt_secret *text = NULL;
    if (check_private_file(path, "backup secret key", error, error_size) != 0 ||
        kt_read_secret_file(path, KEY_FILE_MAX, &text, error, error_size) != 0)
        return -1;
    kt_secret *secret = kt_secret_new(KT_SEAL_SECRET_BYTES);
    int result = secret != NULL ? decode_key_line(text, SECRET_KEY_LABEL, secret->bytes) : -1;
    kt_secret_free(text);
    if (result != 0) {
        kt_secret_free(secret);
        snprintf(error, error_size, "%s is not a backup secret key (a line \"%s BASE64\" made by "
                 "`ktadmin backup-key generate`)", path, SECRET_KEY_LABEL);
        return -1;
    }
    *key = secret;
    return 0;
}

/* ---- backup-key generate -------------------------------------------------------------------- */

/* "LABEL BASE64\n" of 32 bytes, into a secret buffer (the secret key's line is secret). */
static kt_secret *key_line(const char *label, const unsigned char *bytes)
{
    size_t label_length = strlen(label);
    size_t encoded_size = kt_base64_encoded_size(KT_SEAL_PUBLIC_BYTES);
    kt_secret *line = kt_secret_new(label_length + 1 + encoded_size);
    if (line == NULL)
        return NULL;
    memcpy(line->bytes, label, label_length);
    line->bytes[label_length] = ' ';
    char *encoded = (char *)line->bytes + label_length + 1;
    if (kt_base64_encode(encoded, encoded_size, bytes, KT_SEAL_PUBLIC_BYTES) != 0) {
        kt_secret_free(line);
        return NULL;
    }
    line->length = label_length + 1 + strlen(encoded) + 1;
    line->bytes[line->length - 1] = '\n';
    return line;
}

static int write_key_pair(const char *directory, char *public_path, char *secret_path,
                          unsigned char public_key[KT_SEAL_PUBLIC_BYTES])
{
    char error[PATH_MAX + 256];
    kt_secret *secret_key = NULL;
    if (kt_path_join(public_path, PATH_MAX, directory, PUBLIC_KEY_FILE) != 0 ||
        kt_path_join(secret_path, PATH_MAX, directory, SECRET_KEY_FILE) != 0) {
        ktadmin_fail("the path %s is too long", directory);
        return -1;
    }
    if (access(public_path, F_OK) == 0 || access(secret_path, F_OK) == 0) {
        ktadmin_fail("%s already holds a backup key pair; move it away first (backups made with "
                     "it still need its secret key)", directory);
        return -1;
    }
    if (kt_seal_keypair(public_key, &secret_key) != 0) {
        ktadmin_fail("cannot make a key pair (out of memory?)");
        return -1;
    }
    kt_secret *secret_line = key_line(SECRET_KEY_LABEL, secret_key->bytes);
    kt_secret *public_line = key_line(PUBLIC_KEY_LABEL, public_key);
    kt_secret_free(secret_key);
    int result = -1;
    if (secret_line == NULL || public_line == NULL)
        ktadmin_fail("out of memory");
    else if (kt_write_file_atomic(secret_path, secret_line->bytes, secret_line->length, 0600,
                                  error, sizeof error) != 0 ||
             kt_write_file_atomic(public_path, public_line->bytes, public_line->length, 0644,
                                  error, sizeof error) != 0)
        ktadmin_fail("%s", error);
    else
        result = 0;
    kt_secret_free(secret_line);
    kt_secret_free(public_line);
    return result;
}

static ktadmin_parse_result parse_generate(ktadmin_context *context, int argc, char **argv,
                                           const char **output)
{
    static const struct option long_options[] = {
        {"output", required_argument, NULL, 'o'},
        {"confdir", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int result;
    while ((result = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (result) {
        case 'o': *output = optarg; break;
        case 'C': context->confdir = optarg; break;
        case 'h': fputs(backup_key_usage, stdout); return KTADMIN_PARSE_HELP;
        default:
            ktadmin_option_error("backup-key", backup_key_usage, result, argv);
            return KTADMIN_PARSE_ERROR;
        }
    }
    if (optind >= argc || strcmp(argv[optind], "generate") != 0 || optind + 1 != argc) {
        ktadmin_usage_error("backup-key", backup_key_usage, "the only action is `generate`");
        return KTADMIN_PARSE_ERROR;
    }
    if (*output == NULL) {
        ktadmin_usage_error("backup-key", backup_key_usage, "--output DIR is required");
        return KTADMIN_PARSE_ERROR;
    }
    return KTADMIN_PARSE_OK;
}

int ktadmin_backup_key(ktadmin_context *context, int argc, char **argv)
{
    const char *output = NULL;
    ktadmin_parse_result parsed = parse_generate(context, argc, argv, &output);
    if (parsed != KTADMIN_PARSE_OK)
        return parsed == KTADMIN_PARSE_HELP ? KTADMIN_EXIT_OK : KTADMIN_EXIT_USAGE;
    char error[PATH_MAX + 256], public_path[PATH_MAX], secret_path[PATH_MAX];
    unsigned char public_key[KT_SEAL_PUBLIC_BYTES], id[KT_SEAL_KEY_ID_BYTES];
    char id_text[KTADMIN_KEY_ID_CHARS + 1];
    if (kt_private_directory(output, error, sizeof error) != 0) {
        ktadmin_fail("%s", error);
        return KTADMIN_EXIT_FAILURE;
    }
    if (write_key_pair(output, public_path, secret_path, public_key) != 0)
        return KTADMIN_EXIT_FAILURE;
    kt_seal_key_id(id, public_key);
    ktadmin_key_id_text(id, id_text);
    printf("Wrote the backup public key %s (key id %s)\n", public_path, id_text);
    printf("Wrote the backup secret key %s\n", secret_path);
    printf("Keep the secret key offline (not on the key servers), with whoever may restore a "
           "node: backups made with --recipient %s cannot be restored without it, and anyone "
           "holding it can read them. Then delete it here.\n", public_path);
    printf("To make it the default on a node: cp %s $KEYTRUSTEE_HOME/.keytrustee/%s\n",
           public_path, KTADMIN_DEFAULT_RECIPIENT_FILE);
    return KTADMIN_EXIT_OK;
}
