/*
 * archive_read.c — reading a backup file (the format is in archive.h): authenticate it frame by
 * frame and unpack its entries into a private directory.
 *
 * Nothing is trusted before it is authenticated, except what must be read to find the key (the
 * header's protection fields, whose cost limits are checked before Argon2id runs). The header
 * itself is authenticated with the first frame. Every failure says what is wrong in words an
 * operator can act on: no key or the wrong one (named by key id), a wrong passphrase, altered or
 * damaged data (with the byte offset), a truncated file, bytes after the end, an entry name that
 * would leave the directory. Entry names are limited to ".keytrustee/..." and "db/..." made of
 * plain components, so a crafted file cannot write anywhere else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktadmin/archive.h"

#define HEADER_MAX      256u
#define FRAME_BODY_MAX  (1u + KTADMIN_CHUNK_BYTES + KT_STREAM_OVERHEAD)
#define NAME_DEPTH_MAX  4
#define MANIFEST_NAME   "manifest.json"

typedef struct archive_reader {
    int fd;
    const char *path;
    const ktadmin_backup_keys *keys;
    ktadmin_protection protection;
    unsigned char header[HEADER_MAX];
    size_t header_length;
    kt_stream *stream;
    bool read_frame;             /* the first frame (which authenticates the header) was read */
    bool ended;                  /* the last chunk was read */
    kt_secret *chunk;            /* flags byte + payload, decrypted */
    size_t chunk_length;         /* bytes of chunk holding payload, from index 1 */
    size_t chunk_offset;         /* next payload byte */
    unsigned char *frame;
    uint64_t offset;             /* bytes of the file read so far */
    kt_hash_state file_hash;     /* cleartext: every byte before the current frame */
    char *error;
    size_t error_size;
} archive_reader;

static int fail(archive_reader *reader, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(archive_reader *reader, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    (void)vsnprintf(reader->error, reader->error_size, format, arguments);
    va_end(arguments);
    return -1;
}

static uint64_t get_u64(const unsigned char *in)
{
    uint64_t value = 0;
    for (int index = 0; index < 8; index++)
        value = value << 8 | in[index];
    return value;
}

static uint32_t get_u32(const unsigned char *in)
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

/* Reads exactly `length` bytes: 1 done, 0 end of file before any byte, -1 short or error. */
static int read_exactly(archive_reader *reader, void *out, size_t length)
{
    unsigned char *cursor = out;
    size_t done = 0;
    while (done < length) {
        ssize_t got = read(reader->fd, cursor + done, length - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return fail(reader, "cannot read %s: %s", reader->path, strerror(errno));
        if (got == 0)
            break;
        done += (size_t)got;
    }
    reader->offset += done;
    if (done == length)
        return 1;
    if (done == 0)
        return 0;
    return fail(reader, "%s is truncated: it ends at byte %llu, before the end of the backup",
                reader->path, (unsigned long long)reader->offset);
}

static int read_header_part(archive_reader *reader, size_t length)
{
    if (reader->header_length + length > sizeof reader->header)
        return fail(reader, "%s has a malformed header", reader->path);
    int got = read_exactly(reader, reader->header + reader->header_length, length);
    if (got == 0)
        return fail(reader, "%s is truncated inside its header", reader->path);
    if (got < 0)
        return -1;
    kt_hash_update(&reader->file_hash, reader->header + reader->header_length, length);
    reader->header_length += length;
    return 0;
}

/* ---- finding the key ------------------------------------------------------------------------ */

static int passphrase_key(archive_reader *reader, kt_secret **key)
{
    size_t start = reader->header_length;
    if (read_header_part(reader, KT_PASSPHRASE_SALT_BYTES + 16) != 0)
        return -1;
    if (reader->keys->passphrase == NULL)
        return fail(reader, "%s is protected with a passphrase: give it with --passphrase-file "
                    "FILE", reader->path);
    const unsigned char *fields = reader->header + start;
    kt_passphrase_cost cost = {get_u64(fields + KT_PASSPHRASE_SALT_BYTES),
                               get_u64(fields + KT_PASSPHRASE_SALT_BYTES + 8)};
    char detail[512];
    if (kt_passphrase_key(key, reader->keys->passphrase, fields, &cost, detail, sizeof detail) != 0)
        return fail(reader, "%s: %s", reader->path, detail);
    return 0;
}

static int backup_key_key(archive_reader *reader, kt_secret **key)
{
    size_t start = reader->header_length;
    if (read_header_part(reader, KT_SEAL_KEY_ID_BYTES + KT_SEALED_KEY_BYTES) != 0)
        return -1;
    const unsigned char *id = reader->header + start;
    char wanted[KTADMIN_KEY_ID_CHARS + 1], given[KTADMIN_KEY_ID_CHARS + 1];
    ktadmin_key_id_text(id, wanted);
    if (reader->keys->secret_key == NULL)
        return fail(reader, "%s is encrypted to backup key %s: give its secret key with "
                    "--secret-key FILE", reader->path, wanted);
    unsigned char public_key[KT_SEAL_PUBLIC_BYTES], given_id[KT_SEAL_KEY_ID_BYTES];
    if (kt_seal_public_from_secret(public_key, reader->keys->secret_key) != 0)
        return fail(reader, "the backup secret key is unusable");
    kt_seal_key_id(given_id, public_key);
    ktadmin_key_id_text(given_id, given);
    if (!kt_equal(given_id, id, sizeof given_id))
        return fail(reader, "%s is encrypted to backup key %s, but --secret-key holds key %s: "
                    "give the secret key of %s", reader->path, wanted, given, wanted);
    if (kt_unseal_key(key, id + KT_SEAL_KEY_ID_BYTES, reader->keys->secret_key) != 0)
        return fail(reader, "%s was altered: its sealed file key does not open with backup key "
                    "%s", reader->path, wanted);
    return 0;
}

static int open_stream(archive_reader *reader)
{
    kt_secret *key = NULL;
    int result = reader->protection == KTADMIN_PASSPHRASE ? passphrase_key(reader, &key)
                                                          : backup_key_key(reader, &key);
    size_t check_at = reader->header_length;
    if (result == 0)
        result = read_header_part(reader, KT_STREAM_KEY_CHECK_BYTES + KT_STREAM_HEADER_BYTES);
    if (result == 0) {
        unsigned char check[KT_STREAM_KEY_CHECK_BYTES];
        kt_stream_key_check(check, key);
        if (!kt_equal(check, reader->header + check_at, sizeof check))
            result = reader->protection == KTADMIN_PASSPHRASE
                         ? fail(reader, "the passphrase does not open %s (a wrong passphrase, or "
                                "the file's header was altered)", reader->path)
                         : fail(reader, "%s was altered: its key check does not match",
                                reader->path);
    }
    if (result == 0 &&
        kt_stream_decrypt_start(&reader->stream,
                                reader->header + check_at + KT_STREAM_KEY_CHECK_BYTES, key) != 0)
        result = fail(reader, "cannot start decrypting %s (out of memory?)", reader->path);
    kt_secret_free(key);
    return result;
}

static int read_header(archive_reader *reader)
{
    if (read_header_part(reader, 12) != 0) {
        if (reader->offset < 12)
            return fail(reader, "%s is not a keytrustee backup (it is shorter than a header)",
                        reader->path);
        return -1;
    }
    if (memcmp(reader->header, KTADMIN_ARCHIVE_MAGIC, 8) != 0)
        return fail(reader, "%s is not a keytrustee backup (it does not start with %s)",
                    reader->path, KTADMIN_ARCHIVE_MAGIC);
    if (reader->header[8] != KTADMIN_ARCHIVE_VERSION)
        return fail(reader, "%s has backup format %u; this ktadmin reads format %u (use the "
                    "keytrustee release that made it, or a newer one)", reader->path,
                    reader->header[8], KTADMIN_ARCHIVE_VERSION);
    if (reader->header[9] > KTADMIN_BACKUP_KEY || reader->header[10] != 0 ||
        reader->header[11] != 0)
        return fail(reader, "%s has a malformed header", reader->path);
    reader->protection = (ktadmin_protection)reader->header[9];
    if (reader->protection == KTADMIN_CLEARTEXT)
        return 0;
    return open_stream(reader);
}

/* ---- frames --------------------------------------------------------------------------------- */

static int check_end(archive_reader *reader)
{
    unsigned char extra;
    int got = read_exactly(reader, &extra, 1);
    if (got == 0)
        return 0;
    if (got > 0)
        return fail(reader, "%s has data after the end of the backup (from byte %llu): it was "
                    "altered", reader->path, (unsigned long long)reader->offset - 1);
    return -1;
}

static int open_frame(archive_reader *reader, size_t length, uint64_t at, size_t *plain)
{
    if (reader->stream == NULL) {
        memcpy(reader->chunk->bytes, reader->frame, length);
        *plain = length;
        return 0;
    }
    bool last = false;
    const void *associated = reader->read_frame ? NULL : reader->header;
    size_t associated_length = reader->read_frame ? 0 : reader->header_length;
    if (kt_stream_decrypt(reader->stream, reader->chunk->bytes, plain, reader->frame, length,
                          associated, associated_length, &last) != 0)
        return fail(reader, "%s was altered or damaged: the block at byte %llu fails "
                    "authentication%s", reader->path, (unsigned long long)at,
                    reader->read_frame ? "" : " (or the header was altered)");
    if (*plain == 0 || last != ((reader->chunk->bytes[0] & 1) != 0))
        return fail(reader, "%s is malformed at byte %llu", reader->path, (unsigned long long)at);
    return 0;
}

/* A cleartext file's last chunk: the BLAKE2b-256 of everything before its frame. */
static int check_cleartext_trailer(archive_reader *reader, const kt_hash_state *before,
                                   size_t plain)
{
    unsigned char digest[KT_HASH_BYTES];
    kt_hash_state copy = *before;
    kt_hash_final(&copy, digest);
    if (plain != 1 + KT_HASH_BYTES || !kt_equal(digest, reader->chunk->bytes + 1, KT_HASH_BYTES))
        return fail(reader, "%s was altered or damaged: its checksum does not match",
                    reader->path);
    reader->chunk_length = 1;
    return 0;
}

static int next_frame(archive_reader *reader)
{
    unsigned char prefix[4];
    uint64_t at = reader->offset;
    int got = read_exactly(reader, prefix, sizeof prefix);
    if (got == 0)
        return fail(reader, "%s is truncated: it ends at byte %llu, before the end of the backup",
                    reader->path, (unsigned long long)reader->offset);
    if (got < 0)
        return -1;
    uint32_t length = get_u32(prefix);
    if (length < 1 || length > FRAME_BODY_MAX)
        return fail(reader, "%s is damaged at byte %llu (a block of %u bytes)", reader->path,
                    (unsigned long long)at, length);
    got = read_exactly(reader, reader->frame, length);
    if (got <= 0)
        return got == 0 ? fail(reader, "%s is truncated at byte %llu", reader->path,
                               (unsigned long long)reader->offset)
                        : -1;
    kt_hash_state before = reader->file_hash;
    kt_hash_update(&reader->file_hash, prefix, sizeof prefix);
    kt_hash_update(&reader->file_hash, reader->frame, length);
    size_t plain = 0;
    if (open_frame(reader, length, at, &plain) != 0)
        return -1;
    reader->read_frame = true;
    reader->ended = (reader->chunk->bytes[0] & 1) != 0;
    reader->chunk_length = plain;
    reader->chunk_offset = 1;
    if (reader->ended && reader->stream == NULL &&
        check_cleartext_trailer(reader, &before, plain) != 0)
        return -1;
    return reader->ended ? check_end(reader) : 0;
}

/* Whether the payload is exhausted (loads frames until a byte is available or the end). */
static int payload_done(archive_reader *reader, bool *done)
{
    while (reader->chunk_offset >= reader->chunk_length && !reader->ended)
        if (next_frame(reader) != 0)
            return -1;
    *done = reader->chunk_offset >= reader->chunk_length;
    return 0;
}

/* The next up to `want` payload bytes, in place (secret memory); *length 0 never happens. */
static int take_payload(archive_reader *reader, size_t want, const unsigned char **bytes,
                        size_t *length)
{
    bool done = false;
    if (payload_done(reader, &done) != 0)
        return -1;
    if (done)
        return fail(reader, "%s ends in the middle of an entry: it was altered", reader->path);
    size_t available = reader->chunk_length - reader->chunk_offset;
    *length = want < available ? want : available;
    *bytes = reader->chunk->bytes + reader->chunk_offset;
    reader->chunk_offset += *length;
    return 0;
}

static int read_payload(archive_reader *reader, void *out, size_t length)
{
    unsigned char *cursor = out;
    while (length > 0) {
        const unsigned char *bytes = NULL;
        size_t got = 0;
        if (take_payload(reader, length, &bytes, &got) != 0)
            return -1;
        memcpy(cursor, bytes, got);
        cursor += got;
        length -= got;
    }
    return 0;
}

/* ---- entries -------------------------------------------------------------------------------- */

static bool component_valid(const char *start, size_t length)
{
    if (length == 0 || (length == 1 && start[0] == '.') ||
        (length == 2 && start[0] == '.' && start[1] == '.'))
        return false;
    for (size_t index = 0; index < length; index++) {
        char c = start[index];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '.' || c == '_' || c == '-';
        if (!plain)
            return false;
    }
    return true;
}

bool ktadmin_entry_name_valid(const char *name)
{
    if (strncmp(name, ".keytrustee/", 12) != 0 && strncmp(name, "db/", 3) != 0)
        return false;
    int depth = 0;
    for (const char *start = name;; depth++) {
        const char *slash = strchr(start, '/');
        size_t length = slash == NULL ? strlen(start) : (size_t)(slash - start);
        if (depth >= NAME_DEPTH_MAX || !component_valid(start, length))
            return false;
        if (slash == NULL)
            return true;
        start = slash + 1;
    }
}

/* Creates the parent directories of `name` under `directory` (0700). */
static int make_parents(archive_reader *reader, const char *directory, const char *name)
{
    char path[PATH_MAX];
    for (const char *slash = strchr(name, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        int written = snprintf(path, sizeof path, "%s/%.*s", directory, (int)(slash - name), name);
        if (written < 0 || (size_t)written >= sizeof path)
            return fail(reader, "the path %s/%s is too long", directory, name);
        struct stat status;
        if (mkdir(path, 0700) != 0 && (errno != EEXIST || lstat(path, &status) != 0 ||
                                       !S_ISDIR(status.st_mode)))
            return fail(reader, "cannot create %s: %s", path, strerror(errno));
    }
    return 0;
}


static int copy_entry_data(archive_reader *reader, int fd, const char *path,
                           ktadmin_archive_entry *entry)
{
    kt_hash_state state;
    kt_hash_init(&state);
    for (uint64_t left = entry->size; left > 0;) {
        const unsigned char *bytes = NULL;
        size_t got = 0;
        size_t want = left < KTADMIN_CHUNK_BYTES ? (size_t)left : KTADMIN_CHUNK_BYTES;
        if (take_payload(reader, want, &bytes, &got) != 0)
            return -1;
        kt_hash_update(&state, bytes, got);
        if (kt_write_all(fd, bytes, got) != 0)
            return fail(reader, "cannot write %s: %s", path, strerror(errno));
        left -= got;
    }
    kt_hash_final(&state, entry->hash);
    if (fsync(fd) != 0)
        return fail(reader, "cannot flush %s: %s", path, strerror(errno));
    return 0;
}

static int extract_file(archive_reader *reader, const char *directory,
                        ktadmin_archive_entry *entry)
{
    char path[PATH_MAX];
    if (!ktadmin_entry_name_valid(entry->name))
        return fail(reader, "%s holds an entry named \"%s\", which is not a keytrustee file: it "
                    "was altered", reader->path, entry->name);
    if (make_parents(reader, directory, entry->name) != 0)
        return -1;
    if (kt_path_join(path, sizeof path, directory, entry->name) != 0)
        return fail(reader, "the path %s/%s is too long", directory, entry->name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == EEXIST)
        return fail(reader, "%s holds %s twice: it was altered", reader->path, entry->name);
    if (fd < 0)
        return fail(reader, "cannot create %s: %s", path, strerror(errno));
    int result = copy_entry_data(reader, fd, path, entry);
    if (close(fd) != 0 && result == 0)
        result = fail(reader, "cannot write %s: %s", path, strerror(errno));
    return result;
}

static int read_manifest(archive_reader *reader, uint64_t size, ktadmin_archive_contents *contents)
{
    bool done = false;
    if (size == 0 || size > KTADMIN_MANIFEST_MAX)
        return fail(reader, "%s has a manifest of %llu bytes: it was altered", reader->path,
                    (unsigned long long)size);
    char *text = malloc((size_t)size + 1);
    if (text == NULL)
        return fail(reader, "out of memory reading the manifest");
    int result = read_payload(reader, text, (size_t)size);
    text[size] = '\0';
    json_error_t parse_error;
    if (result == 0)
        contents->manifest = json_loads(text, JSON_REJECT_DUPLICATES, &parse_error);
    free(text);
    if (result == 0 && !json_is_object(contents->manifest))
        result = fail(reader, "the manifest of %s is not a JSON object", reader->path);
    if (result == 0)
        result = payload_done(reader, &done);
    if (result == 0 && !done)
        result = fail(reader, "%s holds data after its manifest: it was altered", reader->path);
    return result;
}

static int read_entry_header(archive_reader *reader, unsigned char *kind,
                             ktadmin_archive_entry *entry)
{
    unsigned char fields[3];
    unsigned char numbers[12];
    memset(entry, 0, sizeof *entry);
    if (read_payload(reader, fields, sizeof fields) != 0)
        return -1;
    *kind = fields[0];
    size_t name_length = (size_t)fields[1] << 8 | fields[2];
    if (name_length == 0 || name_length > KTADMIN_ENTRY_NAME_MAX)
        return fail(reader, "%s holds a malformed entry: it was altered", reader->path);
    if (read_payload(reader, entry->name, name_length) != 0 ||
        read_payload(reader, numbers, sizeof numbers) != 0)
        return -1;
    entry->name[name_length] = '\0';
    entry->mode = get_u32(numbers);
    entry->size = get_u64(numbers + 4);
    return 0;
}

static int extract_entries(archive_reader *reader, const char *directory,
                           ktadmin_archive_contents *contents)
{
    for (;;) {
        bool done = false;
        unsigned char kind = 0;
        ktadmin_archive_entry entry;
        if (payload_done(reader, &done) != 0)
            return -1;
        if (done)
            return fail(reader, "%s has no manifest: it is incomplete or was altered",
                        reader->path);
        if (read_entry_header(reader, &kind, &entry) != 0)
            return -1;
        if (kind == 'M' && strcmp(entry.name, MANIFEST_NAME) == 0)
            return read_manifest(reader, entry.size, contents);
        if (kind != 'F')
            return fail(reader, "%s holds an entry of unknown kind: it was altered",
                        reader->path);
        if (contents->file_count >= KTADMIN_ARCHIVE_FILES_MAX)
            return fail(reader, "%s holds more than %u files: it was altered", reader->path,
                        KTADMIN_ARCHIVE_FILES_MAX);
        if (extract_file(reader, directory, &entry) != 0)
            return -1;
        contents->files[contents->file_count++] = entry;
    }
}

/* ---- the interface -------------------------------------------------------------------------- */

void ktadmin_archive_contents_clear(ktadmin_archive_contents *contents)
{
    json_decref(contents->manifest);
    memset(contents, 0, sizeof *contents);
}

int ktadmin_archive_extract(const char *path, const ktadmin_backup_keys *keys,
                            const char *directory, ktadmin_archive_contents *contents,
                            char *error, size_t error_size)
{
    memset(contents, 0, sizeof *contents);
    archive_reader reader = {.path = path, .keys = keys, .error = error,
                             .error_size = error_size};
    kt_hash_init(&reader.file_hash);
    reader.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (reader.fd < 0) {
        snprintf(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    reader.chunk = kt_secret_new(FRAME_BODY_MAX);
    reader.frame = malloc(FRAME_BODY_MAX);
    int result = reader.chunk != NULL && reader.frame != NULL
                     ? 0
                     : fail(&reader, "out of memory reading %s", path);
    if (result == 0)
        result = read_header(&reader);
    if (result == 0)
        result = extract_entries(&reader, directory, contents);
    contents->protection = reader.protection;
    (void)close(reader.fd);
    kt_stream_free(reader.stream);
    kt_secret_free(reader.chunk);
    if (reader.frame != NULL)
        kt_wipe(reader.frame, FRAME_BODY_MAX); /* a cleartext file's frames hold secrets */
    free(reader.frame);
    if (result != 0) {
        json_decref(contents->manifest);
        contents->manifest = NULL;
    }
    return result;
}
