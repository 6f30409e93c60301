/*
 * crypto.h — the contract of crypto/: every cryptographic operation keytrustee performs.
 *
 * crypto/ wraps libsodium (keys, signatures, AEAD, hashing, randomness, encodings) and mbedTLS
 * (X.509 certificates and TLS client connections). It depends on nothing else of ours, so every
 * other folder may use it.
 *
 * Conventions
 *   - Functions that can fail return 0 on success and -1 on failure. Those whose failure a user
 *     must understand take `char *error, size_t error_size` and write one sentence there saying
 *     what failed and what to do. Error text never contains secret bytes.
 *   - Secrets (private keys, symmetric keys, plaintext deposits, auth secrets) live in
 *     kt_secret buffers: libsodium guarded, mlocked memory, zeroed when freed.
 *   - Comparisons of secrets and MACs use kt_equal (constant time).
 *
 * Server key material (the file .keytrustee/keytrustee-server.key)
 *   One 32-byte master secret, stored as the text line
 *       keytrustee-server-key-v1 <base64 of 32 bytes>\n
 *   in a file of mode 0600. Every server key is derived from it with libsodium's KDF
 *   (crypto_kdf_derive_from_key, context "ktserver"), so copying .keytrustee to the passive — the
 *   seed's rsync step — gives both nodes the same keys:
 *       subkey 1: deposit and auth-secret encryption key (XChaCha20-Poly1305)
 *       subkey 2: seed of the server's Ed25519 signing key; its fingerprint is the server's identity
 *       subkey 3: replication pair secret (peers prove they hold it on port 11381)
 */
#ifndef KT_CRYPTO_H
#define KT_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KT_KEY_BYTES             32u /* symmetric keys, master secret, hashes */
#define KT_SIGN_PUBLIC_BYTES     32u /* Ed25519 public key */
#define KT_SIGN_SECRET_BYTES     64u /* Ed25519 secret key (libsodium layout: seed || public) */
#define KT_SIGNATURE_BYTES       64u
#define KT_HASH_BYTES            32u /* BLAKE2b-256 */
#define KT_FINGERPRINT_CHARS     40u /* uppercase hex of the first 20 bytes of BLAKE2b-256(pk) */
#define KT_UUID_CHARS            36u /* 8-4-4-4-12 lowercase hex, version 4 */
#define KT_AEAD_NONCE_BYTES      24u
#define KT_AEAD_TAG_BYTES        16u
#define KT_AEAD_OVERHEAD         (KT_AEAD_NONCE_BYTES + KT_AEAD_TAG_BYTES)

/* Must be called once before anything else (calls sodium_init). Safe to call again. */
int kt_crypto_init(void);

/* ---- Secure memory -------------------------------------------------------------------------- */

typedef struct kt_secret {
    unsigned char *bytes; /* sodium_malloc'd, mlocked, guarded */
    size_t length;
} kt_secret;

/* A zero-filled secret buffer of `length` bytes (length may be 0), or NULL when memory is short. */
kt_secret *kt_secret_new(size_t length);
/* A secret holding a copy of `length` bytes at `bytes`. */
kt_secret *kt_secret_from(const void *bytes, size_t length);
/* Zeroes and frees; NULL is allowed. */
void kt_secret_free(kt_secret *secret);

void kt_wipe(void *buffer, size_t length);                          /* sodium_memzero */
bool kt_equal(const void *a, const void *b, size_t length);          /* constant time */
void kt_random(void *buffer, size_t length);                        /* randombytes_buf */
void kt_uuid_generate(char out[KT_UUID_CHARS + 1]);                  /* random v4 uuid */
bool kt_uuid_valid(const char *text);                                /* 36 chars, lowercase hex */

/* ---- Encodings (libsodium; strict: no whitespace, no junk, padding required) ---------------- */

/* Characters needed to base64-encode `length` bytes, including the terminating NUL. */
size_t kt_base64_encoded_size(size_t length);
/* Standard alphabet with padding. Returns 0, or -1 when out_size is too small. */
int kt_base64_encode(char *out, size_t out_size, const void *in, size_t length);
/* Decodes exactly `text_length` characters. Returns 0 and the decoded length in *out_length,
 * or -1 when the text is not valid padded base64 or does not fit in out_size. */
int kt_base64_decode(void *out, size_t out_size, size_t *out_length, const char *text,
                     size_t text_length);
/* Uppercase hex; out_size must be at least 2 * length + 1. Returns 0 or -1. */
int kt_hex_encode(char *out, size_t out_size, const void *in, size_t length);

/* ---- Hashing ---------------------------------------------------------------------------------- */

void kt_hash(unsigned char out[KT_HASH_BYTES], const void *in, size_t length); /* BLAKE2b-256 */

/* Incremental BLAKE2b-256, for hashing files and long streams. */
typedef struct kt_hash_state {
    unsigned char opaque[384] __attribute__((aligned(64)));
} kt_hash_state;
void kt_hash_init(kt_hash_state *state);
void kt_hash_update(kt_hash_state *state, const void *in, size_t length);
void kt_hash_final(kt_hash_state *state, unsigned char out[KT_HASH_BYTES]);

/* ---- Named key derivation (kdf.c) ----------------------------------------------------------- */

#define KT_DERIVE_NAME_MAX 1024u /* longest label or name kt_derive_key accepts */

/* A key of KT_KEY_BYTES that depends only on `master` (KT_KEY_BYTES), `label` (what the key is for,
 * non-empty) and `name` (0 .. KT_DERIVE_NAME_MAX bytes): BLAKE2b-256 keyed by master over
 * label || 0x00 || name. The same inputs give the same key every time. *derived is a new secret
 * buffer; returns -1 (and NULL) on a bad argument or when memory is short. */
int kt_derive_key(kt_secret **derived, const kt_secret *master, const char *label,
                  const void *name, size_t name_length);

/* ---- Signatures (Ed25519) --------------------------------------------------------------------- */

/* A new key pair; *secret_key is a kt_secret of KT_SIGN_SECRET_BYTES. */
int kt_sign_keypair(unsigned char public_key[KT_SIGN_PUBLIC_BYTES], kt_secret **secret_key);
/* The public key belonging to a secret key. */
void kt_sign_public_from_secret(unsigned char public_key[KT_SIGN_PUBLIC_BYTES],
                                const kt_secret *secret_key);
int kt_sign(unsigned char signature[KT_SIGNATURE_BYTES], const void *message, size_t length,
            const kt_secret *secret_key);
bool kt_sign_verify(const unsigned char signature[KT_SIGNATURE_BYTES], const void *message,
                    size_t length, const unsigned char public_key[KT_SIGN_PUBLIC_BYTES]);
/* Identity of a public key: KT_FINGERPRINT_CHARS uppercase hex characters plus NUL. */
void kt_fingerprint(char out[KT_FINGERPRINT_CHARS + 1],
                    const unsigned char public_key[KT_SIGN_PUBLIC_BYTES]);
bool kt_fingerprint_valid(const char *text); /* 40 uppercase hex characters */

/* ---- Authenticated encryption (XChaCha20-Poly1305 IETF, random nonce) ------------------------ */

/* Box layout: nonce (24) || ciphertext || tag (16); box length = plain length + KT_AEAD_OVERHEAD.
 * `associated` binds the box to its identity (for deposits: org uuid, client fingerprint, deposit
 * uuid), so a box moved to another row fails to open. key->length must be KT_KEY_BYTES. */
int kt_aead_seal(unsigned char *box, size_t box_size, size_t *box_length, const void *plain,
                 size_t plain_length, const void *associated, size_t associated_length,
                 const kt_secret *key);
/* Opens a box into a new secret buffer (*plain). Returns -1 when the box is short, was altered,
 * or was sealed with another key or other associated data. */
int kt_aead_open(kt_secret **plain, const unsigned char *box, size_t box_length,
                 const void *associated, size_t associated_length, const kt_secret *key);

/* ---- Server key material ---------------------------------------------------------------------- */

typedef struct kt_server_keys {
    kt_secret *data_key;                                /* subkey 1 */
    kt_secret *signing_secret;                          /* from subkey 2, KT_SIGN_SECRET_BYTES */
    unsigned char signing_public[KT_SIGN_PUBLIC_BYTES];
    kt_secret *replication_key;                         /* subkey 3 */
    char fingerprint[KT_FINGERPRINT_CHARS + 1];         /* of signing_public */
} kt_server_keys;

/* Writes a new master secret to `path` (0600, written to a temporary file, fsynced, renamed, and
 * the directory fsynced). Fails if `path` exists. */
int kt_server_keys_create(const char *path, char *error, size_t error_size);
/* Loads and derives the keys. Refuses a file readable or writable by group or others, naming the
 * chmod that fixes it, and a file that is not exactly the format above. */
int kt_server_keys_load(const char *path, kt_server_keys **keys, char *error, size_t error_size);
void kt_server_keys_free(kt_server_keys *keys);

/* ---- Files holding secrets ------------------------------------------------------------------- */

/* Writes `length` bytes to `path` atomically with `mode` (temporary file in the same directory,
 * fsync, rename, fsync of the directory). */
int kt_write_file_atomic(const char *path, const void *data, size_t length, unsigned mode,
                         char *error, size_t error_size);
/* Reads a whole file of at most `max_length` bytes into a new secret buffer. */
int kt_read_secret_file(const char *path, size_t max_length, kt_secret **out, char *error,
                        size_t error_size);

/* ---- X.509 (mbedTLS) -------------------------------------------------------------------------- */

/* Creates an ECDSA P-256 key and a self-signed certificate for `host` (subject CN=host, and a
 * subjectAltName: IP address when host is a literal IPv4/IPv6 address, DNS name otherwise; also
 * localhost and 127.0.0.1 when `add_loopback`), valid from now for `valid_days`. Writes the
 * certificate PEM to cert_path (0644) and the private key PEM to key_path (0600), atomically. */
int kt_x509_self_signed(const char *host, bool add_loopback, unsigned valid_days,
                        const char *cert_path, const char *key_path, char *error,
                        size_t error_size);

/* Summary of the first certificate in a PEM file. */
typedef struct kt_x509_info {
    char subject[256];
    char issuer[256];
    char sha256_fingerprint[96]; /* AA:BB:... of the DER */
    int64_t not_before;          /* unix seconds */
    int64_t not_after;
} kt_x509_info;
int kt_x509_info_read(const char *cert_path, kt_x509_info *info, char *error, size_t error_size);

/* ---- TLS client (mbedTLS, TLS 1.2) ------------------------------------------------------------ */

typedef struct kt_tls_options {
    const char *ca_file;     /* PEM of the CA (or the pinned self-signed certificate) */
    bool skip_verify;        /* accept any certificate: for --skip-ssl-check only */
    int connect_timeout_ms;  /* 0 = 1000 */
    int io_timeout_ms;       /* 0 = 10000; applies to each read and write */
} kt_tls_options;

typedef struct kt_tls_client kt_tls_client;

/* What went wrong, so callers (client failover) can tell "try the other node" from the rest. */
typedef enum kt_tls_failure {
    KT_TLS_OK = 0,
    KT_TLS_CONNECT_FAILED, /* refused, unreachable, name did not resolve, connect timeout */
    KT_TLS_HANDSHAKE_FAILED,
    KT_TLS_CERTIFICATE_REJECTED,
    KT_TLS_TIMEOUT,        /* read or write timed out */
    KT_TLS_CLOSED,         /* peer closed or reset the connection */
    KT_TLS_ERROR
} kt_tls_failure;

/* Connects to host:port (numeric or name) and completes the handshake, verifying the server
 * certificate against options->ca_file and `host` unless skip_verify. On failure returns NULL and
 * sets *failure and the error text. */
kt_tls_client *kt_tls_connect(const char *host, const char *port, const kt_tls_options *options,
                              kt_tls_failure *failure, char *error, size_t error_size);
/* Writes all `length` bytes. Returns 0, or -1 with *failure set. */
int kt_tls_write(kt_tls_client *client, const void *data, size_t length, kt_tls_failure *failure);
/* Reads up to `size` bytes: returns the count (> 0), 0 when the peer closed, -1 on error. */
long kt_tls_read(kt_tls_client *client, void *buffer, size_t size, kt_tls_failure *failure);
void kt_tls_close(kt_tls_client *client); /* NULL allowed */
/* The SHA-256 fingerprint ("AA:BB:...", as kt_x509_info's) of the certificate the server
 * presented in this connection's handshake; -1 when there is none. */
int kt_tls_peer_fingerprint(const kt_tls_client *client, char out[96]);

/* ---- Backup encryption: sealed keys (sealed.c), passphrase keys (passphrase.c), streams
 *      (stream.c) ----------------------------------------------------------------------------- */

#define KT_SEAL_PUBLIC_BYTES      32u /* X25519 public key */
#define KT_SEAL_SECRET_BYTES      32u /* X25519 secret key */
#define KT_SEALED_KEY_BYTES       (KT_KEY_BYTES + 48u) /* a key sealed to a public key */
#define KT_SEAL_KEY_ID_BYTES      16u
#define KT_PASSPHRASE_SALT_BYTES  16u
#define KT_PASSPHRASE_OPERATIONS_MAX 16u
#define KT_PASSPHRASE_MEMORY_MAX  (1ull << 30) /* 1 GiB */
#define KT_STREAM_HEADER_BYTES    24u
#define KT_STREAM_OVERHEAD        17u /* bytes each stream message adds */
#define KT_STREAM_KEY_CHECK_BYTES 16u

/* A new X25519 key pair; *secret_key is a kt_secret of KT_SEAL_SECRET_BYTES. */
int kt_seal_keypair(unsigned char public_key[KT_SEAL_PUBLIC_BYTES], kt_secret **secret_key);
int kt_seal_public_from_secret(unsigned char public_key[KT_SEAL_PUBLIC_BYTES],
                               const kt_secret *secret_key);
/* Seals a KT_KEY_BYTES key to a public key (libsodium sealed box): only the secret key opens it. */
int kt_seal_key(unsigned char sealed[KT_SEALED_KEY_BYTES], const kt_secret *key,
                const unsigned char public_key[KT_SEAL_PUBLIC_BYTES]);
/* Opens a sealed key into a new secret; -1 when the secret key is not the one it was sealed to
 * or the sealed bytes were altered. */
int kt_unseal_key(kt_secret **key, const unsigned char sealed[KT_SEALED_KEY_BYTES],
                  const kt_secret *secret_key);
/* A short identity of a public key (BLAKE2b over a label and the key), to tell keys apart. */
void kt_seal_key_id(unsigned char id[KT_SEAL_KEY_ID_BYTES],
                    const unsigned char public_key[KT_SEAL_PUBLIC_BYTES]);

/* Argon2id cost; the default is libsodium's "moderate" (3 passes, 256 MiB). */
typedef struct kt_passphrase_cost {
    uint64_t operations;
    uint64_t memory_bytes;
} kt_passphrase_cost;
kt_passphrase_cost kt_passphrase_default_cost(void);
/* Whether a cost read from a file is one this build agrees to pay (see passphrase.c). */
bool kt_passphrase_cost_acceptable(const kt_passphrase_cost *cost);
/* A KT_KEY_BYTES key from a passphrase and salt with Argon2id. */
int kt_passphrase_key(kt_secret **key, const kt_secret *passphrase,
                      const unsigned char salt[KT_PASSPHRASE_SALT_BYTES],
                      const kt_passphrase_cost *cost, char *error, size_t error_size);

/* Streams of authenticated messages (XChaCha20-Poly1305 secretstream). Encrypting a message of
 * `length` bytes writes length + KT_STREAM_OVERHEAD bytes to `out`; the message marked `last`
 * ends the stream. Decrypting fails (-1) on an altered, reordered, repeated or foreign message,
 * or on anything after the last one; *last says whether the stream ended. The plaintext `out` of
 * a decryption should be a kt_secret's bytes when it holds secrets. */
typedef struct kt_stream kt_stream;
int kt_stream_encrypt_start(kt_stream **stream, unsigned char header[KT_STREAM_HEADER_BYTES],
                            const kt_secret *key);
int kt_stream_encrypt(kt_stream *stream, unsigned char *out, const void *in, size_t length,
                      const void *associated, size_t associated_length, bool last);
int kt_stream_decrypt_start(kt_stream **stream, const unsigned char header[KT_STREAM_HEADER_BYTES],
                            const kt_secret *key);
int kt_stream_decrypt(kt_stream *stream, unsigned char *out, size_t *out_length,
                      const unsigned char *in, size_t length, const void *associated,
                      size_t associated_length, bool *last);
void kt_stream_free(kt_stream *stream); /* NULL allowed; wipes the state */
/* A value that tells the right key from a wrong one without revealing the key. */
void kt_stream_key_check(unsigned char out[KT_STREAM_KEY_CHECK_BYTES], const kt_secret *key);

/* ---- Certificates to install (x509_check.c) -------------------------------------------------- */

#define KT_X509_NAMES_MAX  32u
#define KT_X509_NAME_CHARS 260u

/* The names a certificate is issued for: subjectAltName entries as "DNS:name" and "IP:address"
 * (other kinds are skipped), and the subject's CN. */
typedef struct kt_x509_names {
    size_t count;
    char names[KT_X509_NAMES_MAX][KT_X509_NAME_CHARS];
    char common_name[KT_X509_NAME_CHARS];
} kt_x509_names;
int kt_x509_names_read(const char *cert_path, kt_x509_names *names, char *error,
                       size_t error_size);
/* Whether `host` (a DNS name or an IP literal) is one of the names (see x509_check.c). */
bool kt_x509_names_match(const kt_x509_names *names, const char *host);

typedef struct kt_x509_server_check {
    const char *cert_path; /* PEM: the server certificate first, then any intermediates */
    const char *key_path;  /* PEM private key, unencrypted */
    const char *ca_path;   /* PEM of the issuing CA; NULL: the certificate must be self-signed */
    const char *host;      /* the name clients connect to */
    int64_t now;           /* unix seconds */
} kt_x509_server_check;
/* 0 when the key matches the certificate, it is valid at `now`, it chains to the CA (or verifies
 * against itself) and it names `host`; otherwise -1 with the first failed check in `error`. */
int kt_x509_check_server(const kt_x509_server_check *check, char *error, size_t error_size);

#endif /* KT_CRYPTO_H */
