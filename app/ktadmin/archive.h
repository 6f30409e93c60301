/*
 * archive.h — the backup file format of `ktadmin backup`, `backup verify` and `restore`, and the
 * keys that protect it.
 *
 * A backup file (NAME.ktbackup) is a small container of our own, written and read as a stream so
 * that a database of any size passes through a fixed amount of memory. Integers are big-endian.
 *
 *   header
 *     "KTBACKUP"               8 bytes
 *     format version           1 byte (1)
 *     protection               1 byte: 0 cleartext, 1 passphrase, 2 backup key
 *     reserved                 2 bytes (0)
 *     passphrase:   Argon2id salt (16), passes (8), memory bytes (8), key check (16)
 *     backup key:   key id of the backup public key (16), file key sealed to it (80),
 *                   key check (16)
 *     encrypted:    secretstream header (24)
 *   frames, each: body length (4), body
 *     encrypted:  the body is one secretstream message (XChaCha20-Poly1305) holding a chunk; the
 *                 first message authenticates the whole header as associated data; the last
 *                 carries the FINAL tag. Altered, reordered, missing or extra data fails.
 *     cleartext:  the body is the chunk itself.
 *   a chunk: flags (1 byte, bit 0 = last chunk), then up to KTADMIN_CHUNK_BYTES of payload.
 *     In a cleartext file the last chunk's payload is the BLAKE2b-256 of every byte before that
 *     frame: it catches damage, not a forger (who can recompute it): --cleartext is the operator's
 *     choice to rely on where the file is kept.
 *   payload: the chunks' payloads in order, a sequence of entries:
 *     kind (1: 'F' file, 'M' manifest), name length (2), name (UTF-8, relative: ".keytrustee/..."
 *     or "db/..."), mode (4), size (8), then size bytes of data.
 *     The manifest (JSON, described in backup.c) is the last entry; it lists every file with its
 *     size, mode and BLAKE2b-256, which the reader compares with what it extracted.
 *
 * Keys: with a passphrase, the file key is Argon2id(passphrase, salt); with a backup key, it is
 * random and sealed to the backup public key (X25519 sealed box), and only the secret half opens
 * it. The key check (crypto.h) lets the reader say "wrong passphrase" or "wrong backup key" instead
 * of "altered", and the key id names the backup key a file was made for.
 *
 * Backup key files (`ktadmin backup-key generate`), one line each:
 *   keytrustee-backup-public-key-v1 BASE64(32 bytes)     (mode 0644)
 *   keytrustee-backup-secret-key-v1 BASE64(32 bytes)     (mode 0600: keep it offline)
 */
#ifndef KT_KTADMIN_ARCHIVE_H
#define KT_KTADMIN_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/ktadmin/ktadmin.h"
#include "crypto/crypto.h"

#define KTADMIN_ARCHIVE_MAGIC       "KTBACKUP"
#define KTADMIN_ARCHIVE_VERSION     1u
#define KTADMIN_CHUNK_BYTES         (64u * 1024u)
#define KTADMIN_ENTRY_NAME_MAX      255u
#define KTADMIN_ARCHIVE_FILES_MAX   64u
#define KTADMIN_MANIFEST_MAX        (1u << 20)
#define KTADMIN_BACKUP_EXTENSION    ".ktbackup"
#define KTADMIN_BACKUP_PREFIX       "keytrustee-backup-"
#define KTADMIN_KEY_ID_CHARS        (2u * KT_SEAL_KEY_ID_BYTES)
/* In .keytrustee: the backup public key `ktadmin backup` uses when no protection is named. */
#define KTADMIN_DEFAULT_RECIPIENT_FILE "backup-recipient.pub"

typedef enum ktadmin_protection {
    KTADMIN_CLEARTEXT = 0,
    KTADMIN_PASSPHRASE = 1,
    KTADMIN_BACKUP_KEY = 2
} ktadmin_protection;

const char *ktadmin_protection_name(ktadmin_protection protection); /* "cleartext", ... */

/* What the operator gave to protect or open a backup. */
typedef struct ktadmin_backup_keys {
    ktadmin_protection protection;                /* writing: how to protect */
    kt_secret *passphrase;                        /* --passphrase-file */
    bool has_public_key;                          /* --recipient (writing) */
    unsigned char public_key[KT_SEAL_PUBLIC_BYTES];
    kt_secret *secret_key;                        /* --secret-key (reading) */
} ktadmin_backup_keys;

/* Reads a passphrase file (0600 or stricter; one trailing newline is not part of it). */
int ktadmin_read_passphrase(const char *path, kt_secret **passphrase, char *error,
                            size_t error_size);
int ktadmin_read_public_key(const char *path, unsigned char key[KT_SEAL_PUBLIC_BYTES],
                            char *error, size_t error_size);
int ktadmin_read_secret_key(const char *path, kt_secret **key, char *error, size_t error_size);
/* Hex key id of a backup public key, for messages. */
void ktadmin_key_id_text(const unsigned char id[KT_SEAL_KEY_ID_BYTES],
                         char text[KTADMIN_KEY_ID_CHARS + 1]);
void ktadmin_backup_keys_clear(ktadmin_backup_keys *keys);

/* ---- writing (archive_write.c) -------------------------------------------------------------- */

typedef struct ktadmin_archive_entry {
    char name[KTADMIN_ENTRY_NAME_MAX + 1];
    uint32_t mode;
    uint64_t size;
    unsigned char hash[KT_HASH_BYTES]; /* BLAKE2b-256 of the data */
} ktadmin_archive_entry;

typedef struct ktadmin_archive_writer ktadmin_archive_writer;

/* Starts a file on `fd` (which stays the caller's): writes the header. */
int ktadmin_archive_create(ktadmin_archive_writer **writer, int fd,
                           const ktadmin_backup_keys *keys, char *error, size_t error_size);
/* Adds the file at `path` as entry `name`; fills *entry. The data passes through secret memory. */
int ktadmin_archive_add_file(ktadmin_archive_writer *writer, const char *name, const char *path,
                             ktadmin_archive_entry *entry, char *error, size_t error_size);
/* Adds the manifest (last) and ends the file: the final chunk, then everything is written. */
int ktadmin_archive_finish(ktadmin_archive_writer *writer, const char *manifest, char *error,
                           size_t error_size);
void ktadmin_archive_writer_free(ktadmin_archive_writer *writer); /* NULL allowed */

/* ---- reading (archive_read.c) --------------------------------------------------------------- */

typedef struct ktadmin_archive_contents {
    ktadmin_protection protection;
    json_t *manifest;                                   /* parsed; the caller frees */
    ktadmin_archive_entry files[KTADMIN_ARCHIVE_FILES_MAX];
    size_t file_count;
} ktadmin_archive_contents;

/* Authenticates and unpacks a backup file into `directory` (which must exist, private and empty):
 * each file is created under its entry name (mode 0600, directories 0700) and hashed on the way.
 * Every problem — not a backup, no or wrong key, altered, truncated, extra bytes, a bad name — is
 * one sentence in `error`. What was written stays for the caller to remove. */
int ktadmin_archive_extract(const char *path, const ktadmin_backup_keys *keys,
                            const char *directory, ktadmin_archive_contents *contents,
                            char *error, size_t error_size);
void ktadmin_archive_contents_clear(ktadmin_archive_contents *contents);
/* Whether an entry name is one a backup may hold: ".keytrustee/..." or "db/...", at most four
 * components of letters, digits, '.', '_' and '-' (never "." or ".."). */
bool ktadmin_entry_name_valid(const char *name);

/* ---- checking and unpacking a backup (backup_check.c) --------------------------------------- */

/* What a checked backup holds, for messages and restore. */
typedef struct ktadmin_backup_summary {
    char host[256];
    char role[16];
    char external_address[300];
    char server_fingerprint[KT_FINGERPRINT_CHARS + 1];
    int64_t time;
    int64_t epoch;
    int64_t txid;
    int schema_version;
    ktadmin_protection protection;
    long long orgs, clients, deposits;
} ktadmin_backup_summary;

/* Extracts FILE into `directory` and checks it fully: every file against the manifest, the
 * database with integrity_check and a schema this keytrustee can open, the server key file
 * against the manifest's fingerprint. */
int ktadmin_backup_unpack(const char *file, const ktadmin_backup_keys *keys,
                          const char *directory, ktadmin_backup_summary *summary, char *error,
                          size_t error_size);
/* Options shared by verify and restore: --passphrase-file F | --secret-key F into keys. */
int ktadmin_opening_keys(const char *passphrase_file, const char *secret_key_file,
                         ktadmin_backup_keys *keys);
/* A new private directory "PARENT/PREFIXXXXXXX" (mkdtemp), and its removal with everything in it. */
int ktadmin_private_temporary(const char *parent, const char *prefix, char *out, size_t out_size,
                              char *error, size_t error_size);
void ktadmin_remove_tree(const char *path);

#endif /* KT_KTADMIN_ARCHIVE_H */
