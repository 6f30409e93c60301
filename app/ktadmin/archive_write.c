/*
 * archive_write.c — writing a backup file (the format is in archive.h).
 *
 * The writer fills one chunk of payload at a time in secret memory (the payload holds the server
 * key and every deposit box), and when the chunk is full emits it as one frame: encrypted as one
 * secretstream message, or as it is for a cleartext file. Memory stays at about two chunks
 * whatever the size of the database. The caller owns the file descriptor: it fsyncs and renames
 * the file once ktadmin_archive_finish has returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/ktadmin/archive.h"

#define HEADER_MAX        256u
#define FRAME_PREFIX      4u
#define FRAME_BODY_MAX    (1u + KTADMIN_CHUNK_BYTES + KT_STREAM_OVERHEAD)
#define MANIFEST_NAME     "manifest.json"

struct ktadmin_archive_writer {
    int fd;
    ktadmin_protection protection;
    kt_stream *stream;                   /* NULL for cleartext */
    unsigned char header[HEADER_MAX];
    size_t header_length;
    bool wrote_frame;                    /* the first frame authenticates the header */
    kt_secret *chunk;                    /* flags byte + payload */
    size_t used;                         /* payload bytes in chunk */
    kt_secret *read_buffer;              /* file data on its way into the chunk */
    unsigned char *frame;                /* length prefix + body */
    kt_hash_state file_hash;             /* cleartext: every byte written */
};

static void put_u16(unsigned char *out, uint16_t value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

static void put_u32(unsigned char *out, uint32_t value)
{
    for (int index = 0; index < 4; index++)
        out[index] = (unsigned char)(value >> (24 - 8 * index));
}

static void put_u64(unsigned char *out, uint64_t value)
{
    for (int index = 0; index < 8; index++)
        out[index] = (unsigned char)(value >> (56 - 8 * index));
}


static int write_out(ktadmin_archive_writer *writer, const void *data, size_t length,
                     char *error, size_t error_size)
{
    if (kt_write_all(writer->fd, data, length) != 0) {
        snprintf(error, error_size, "cannot write the backup file: %s", strerror(errno));
        return -1;
    }
    kt_hash_update(&writer->file_hash, data, length);
    return 0;
}

/* ---- the header ----------------------------------------------------------------------------- */

static void header_add(ktadmin_archive_writer *writer, const void *bytes, size_t length)
{
    memcpy(writer->header + writer->header_length, bytes, length);
    writer->header_length += length;
}

static int passphrase_header(ktadmin_archive_writer *writer, const ktadmin_backup_keys *keys,
                             kt_secret **key, char *error, size_t error_size)
{
    unsigned char salt[KT_PASSPHRASE_SALT_BYTES], number[8];
    kt_passphrase_cost cost = kt_passphrase_default_cost();
    kt_random(salt, sizeof salt);
    if (kt_passphrase_key(key, keys->passphrase, salt, &cost, error, error_size) != 0)
        return -1;
    header_add(writer, salt, sizeof salt);
    put_u64(number, cost.operations);
    header_add(writer, number, sizeof number);
    put_u64(number, cost.memory_bytes);
    header_add(writer, number, sizeof number);
    return 0;
}

static int backup_key_header(ktadmin_archive_writer *writer, const ktadmin_backup_keys *keys,
                             kt_secret **key, char *error, size_t error_size)
{
    unsigned char id[KT_SEAL_KEY_ID_BYTES], sealed[KT_SEALED_KEY_BYTES];
    *key = kt_secret_new(KT_KEY_BYTES);
    if (*key == NULL || !keys->has_public_key) {
        snprintf(error, error_size, "%s", *key == NULL ? "out of memory" : "no backup public key");
        return -1;
    }
    kt_random((*key)->bytes, (*key)->length);
    if (kt_seal_key(sealed, *key, keys->public_key) != 0) {
        snprintf(error, error_size, "cannot seal the file key to the backup public key");
        return -1;
    }
    kt_seal_key_id(id, keys->public_key);
    header_add(writer, id, sizeof id);
    header_add(writer, sealed, sizeof sealed);
    return 0;
}

/* The protection fields, the key check and the stream header. */
static int protection_header(ktadmin_archive_writer *writer, const ktadmin_backup_keys *keys,
                             char *error, size_t error_size)
{
    kt_secret *key = NULL;
    int result = writer->protection == KTADMIN_PASSPHRASE
                     ? passphrase_header(writer, keys, &key, error, error_size)
                     : backup_key_header(writer, keys, &key, error, error_size);
    unsigned char check[KT_STREAM_KEY_CHECK_BYTES], stream_header[KT_STREAM_HEADER_BYTES];
    if (result == 0) {
        kt_stream_key_check(check, key);
        header_add(writer, check, sizeof check);
        result = kt_stream_encrypt_start(&writer->stream, stream_header, key);
        if (result != 0)
            snprintf(error, error_size, "cannot start the encryption (out of memory?)");
        else
            header_add(writer, stream_header, sizeof stream_header);
    }
    kt_secret_free(key);
    return result;
}

static int write_header(ktadmin_archive_writer *writer, const ktadmin_backup_keys *keys,
                        char *error, size_t error_size)
{
    unsigned char start[12] = {0};
    memcpy(start, KTADMIN_ARCHIVE_MAGIC, 8);
    start[8] = (unsigned char)KTADMIN_ARCHIVE_VERSION;
    start[9] = (unsigned char)writer->protection;
    header_add(writer, start, sizeof start);
    if (writer->protection != KTADMIN_CLEARTEXT &&
        protection_header(writer, keys, error, error_size) != 0)
        return -1;
    return write_out(writer, writer->header, writer->header_length, error, error_size);
}

/* ---- frames and chunks ---------------------------------------------------------------------- */

static int emit_chunk(ktadmin_archive_writer *writer, bool last, char *error, size_t error_size)
{
    size_t plain_length = 1 + writer->used;
    size_t body_length = plain_length;
    writer->chunk->bytes[0] = last ? 1 : 0;
    if (writer->stream != NULL) {
        const void *associated = writer->wrote_frame ? NULL : writer->header;
        size_t associated_length = writer->wrote_frame ? 0 : writer->header_length;
        body_length += KT_STREAM_OVERHEAD;
        if (kt_stream_encrypt(writer->stream, writer->frame + FRAME_PREFIX, writer->chunk->bytes,
                              plain_length, associated, associated_length, last) != 0) {
            snprintf(error, error_size, "cannot encrypt the backup");
            return -1;
        }
    } else {
        memcpy(writer->frame + FRAME_PREFIX, writer->chunk->bytes, plain_length);
    }
    put_u32(writer->frame, (uint32_t)body_length);
    writer->wrote_frame = true;
    writer->used = 0;
    return write_out(writer, writer->frame, FRAME_PREFIX + body_length, error, error_size);
}

static int append_payload(ktadmin_archive_writer *writer, const unsigned char *data,
                          size_t length, char *error, size_t error_size)
{
    while (length > 0) {
        size_t room = KTADMIN_CHUNK_BYTES - writer->used;
        size_t take = length < room ? length : room;
        memcpy(writer->chunk->bytes + 1 + writer->used, data, take);
        writer->used += take;
        data += take;
        length -= take;
        if (writer->used == KTADMIN_CHUNK_BYTES && emit_chunk(writer, false, error, error_size) != 0)
            return -1;
    }
    return 0;
}

static int append_entry_header(ktadmin_archive_writer *writer, char kind, const char *name,
                               uint32_t mode, uint64_t size, char *error, size_t error_size)
{
    size_t name_length = strlen(name);
    unsigned char fields[1 + 2 + KTADMIN_ENTRY_NAME_MAX + 4 + 8];
    if (name_length == 0 || name_length > KTADMIN_ENTRY_NAME_MAX) {
        snprintf(error, error_size, "the entry name %s is too long", name);
        return -1;
    }
    fields[0] = (unsigned char)kind;
    put_u16(fields + 1, (uint16_t)name_length);
    memcpy(fields + 3, name, name_length);
    put_u32(fields + 3 + name_length, mode);
    put_u64(fields + 7 + name_length, size);
    return append_payload(writer, fields, 15 + name_length, error, error_size);
}

/* ---- the interface -------------------------------------------------------------------------- */

void ktadmin_archive_writer_free(ktadmin_archive_writer *writer)
{
    if (writer == NULL)
        return;
    kt_stream_free(writer->stream);
    kt_secret_free(writer->chunk);
    kt_secret_free(writer->read_buffer);
    if (writer->frame != NULL)
        kt_wipe(writer->frame, FRAME_PREFIX + FRAME_BODY_MAX); /* cleartext frames hold secrets */
    free(writer->frame);
    kt_wipe(writer, sizeof *writer);
    free(writer);
}

int ktadmin_archive_create(ktadmin_archive_writer **out, int fd, const ktadmin_backup_keys *keys,
                           char *error, size_t error_size)
{
    *out = NULL;
    ktadmin_archive_writer *writer = calloc(1, sizeof *writer);
    if (writer != NULL) {
        writer->fd = fd;
        writer->protection = keys->protection;
        writer->chunk = kt_secret_new(1 + KTADMIN_CHUNK_BYTES);
        writer->read_buffer = kt_secret_new(KTADMIN_CHUNK_BYTES);
        writer->frame = malloc(FRAME_PREFIX + FRAME_BODY_MAX);
        kt_hash_init(&writer->file_hash);
    }
    if (writer == NULL || writer->chunk == NULL || writer->read_buffer == NULL ||
        writer->frame == NULL) {
        ktadmin_archive_writer_free(writer);
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    if (write_header(writer, keys, error, error_size) != 0) {
        ktadmin_archive_writer_free(writer);
        return -1;
    }
    *out = writer;
    return 0;
}

/* Copies exactly `size` bytes of `fd` into the payload, hashing them. */
static int append_file_data(ktadmin_archive_writer *writer, int fd, const char *path,
                            uint64_t size, unsigned char hash[KT_HASH_BYTES], char *error,
                            size_t error_size)
{
    kt_hash_state state;
    kt_hash_init(&state);
    uint64_t done = 0;
    while (done <= size) {
        ssize_t got = read(fd, writer->read_buffer->bytes, writer->read_buffer->length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
            return -1;
        }
        if (got == 0 || done + (uint64_t)got > size)
            break;
        kt_hash_update(&state, writer->read_buffer->bytes, (size_t)got);
        if (append_payload(writer, writer->read_buffer->bytes, (size_t)got, error,
                           error_size) != 0)
            return -1;
        done += (uint64_t)got;
    }
    kt_hash_final(&state, hash);
    if (done != size || read(fd, writer->read_buffer->bytes, 1) != 0) {
        snprintf(error, error_size, "%s changed size while it was being backed up; run the "
                 "backup again", path);
        return -1;
    }
    return 0;
}

int ktadmin_archive_add_file(ktadmin_archive_writer *writer, const char *name, const char *path,
                             ktadmin_archive_entry *entry, char *error, size_t error_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat status;
    if (fd < 0 || fstat(fd, &status) != 0) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0)
            (void)close(fd);
        return -1;
    }
    if (!S_ISREG(status.st_mode)) {
        snprintf(error, error_size, "cannot back up %s: it is not a regular file", path);
        (void)close(fd);
        return -1;
    }
    memset(entry, 0, sizeof *entry);
    snprintf(entry->name, sizeof entry->name, "%s", name);
    entry->mode = (uint32_t)(status.st_mode & 07777);
    entry->size = (uint64_t)status.st_size;
    int result = append_entry_header(writer, 'F', name, entry->mode, entry->size, error,
                                     error_size);
    if (result == 0)
        result = append_file_data(writer, fd, path, entry->size, entry->hash, error, error_size);
    (void)close(fd);
    return result;
}

int ktadmin_archive_finish(ktadmin_archive_writer *writer, const char *manifest, char *error,
                           size_t error_size)
{
    size_t length = strlen(manifest);
    if (append_entry_header(writer, 'M', MANIFEST_NAME, 0600, length, error, error_size) != 0 ||
        append_payload(writer, (const unsigned char *)manifest, length, error, error_size) != 0)
        return -1;
    if (writer->used > 0 && emit_chunk(writer, false, error, error_size) != 0)
        return -1;
    if (writer->stream == NULL) {
        /* The cleartext trailer: BLAKE2b-256 of every byte before the last frame. */
        unsigned char digest[KT_HASH_BYTES];
        kt_hash_final(&writer->file_hash, digest);
        kt_hash_init(&writer->file_hash);
        memcpy(writer->chunk->bytes + 1, digest, sizeof digest);
        writer->used = sizeof digest;
    }
    return emit_chunk(writer, true, error, error_size);
}
