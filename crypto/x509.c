/*
 * x509.c — the server's self-signed TLS certificate (ECDSA P-256, made with mbedTLS) and a
 * summary reader for certificate files. The certificate is marked as a CA so that clients can use
 * the certificate file itself as their --cacert.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "crypto/internal.h"

#define MAX_HOST_LENGTH    253u  /* longest DNS name */
#define MAX_VALID_DAYS     36500u
#define SERIAL_BYTES       16u
#define CERT_PEM_SIZE      4096u
#define KEY_PEM_SIZE       1024u
#define SAN_DER_SIZE       1024u
#define MAX_SAN_ENTRIES    3u
/* Certificates start an hour in the past so that a peer whose clock is a little behind does not
 * reject a certificate made a moment ago as "not yet valid". */
#define BACKDATE_SECONDS   3600

/* GeneralName tags (RFC 5280): context-specific, primitive. */
#define SAN_DNS_NAME       (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)
#define SAN_IP_ADDRESS     (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)

typedef struct san_entry {
    int tag;
    const unsigned char *data;
    size_t length;
} san_entry;

typedef struct host_name {
    const char *text;
    bool is_address;
    unsigned char address[16];
    size_t address_length; /* 4 or 16 when is_address */
} host_name;

/* Accepts an IPv4/IPv6 literal or a DNS name; the character check also keeps the subject
 * string free of the ',', '=' and '\' that mbedTLS would read as name syntax. */
static int classify_host(const char *text, host_name *host, char *error, size_t error_size)
{
    memset(host, 0, sizeof *host);
    host->text = text;
    size_t length = text == NULL ? 0 : strlen(text);
    if (length == 0 || length > MAX_HOST_LENGTH ||
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") !=
            length) {
        kt_crypto_error(error, error_size,
                        "\"%s\" is not a host name or IP address usable in a certificate; give "
                        "the server's DNS name or address",
                        text == NULL ? "" : text);
        return -1;
    }
    if (inet_pton(AF_INET, text, host->address) == 1) {
        host->is_address = true;
        host->address_length = 4;
    } else if (inet_pton(AF_INET6, text, host->address) == 1) {
        host->is_address = true;
        host->address_length = 16;
    } else if (strchr(text, ':') != NULL) {
        kt_crypto_error(error, error_size,
                        "\"%s\" is neither a valid IP address nor a DNS name; check the address",
                        text);
        return -1;
    }
    return 0;
}

/* The subjectAltName entries: the host, then localhost and 127.0.0.1 when asked for. */
static size_t collect_san_entries(const host_name *host, bool add_loopback,
                                  san_entry entries[MAX_SAN_ENTRIES])
{
    static const unsigned char loopback_address[4] = {127, 0, 0, 1};
    static const char localhost[] = "localhost";
    size_t count = 0;
    if (host->is_address)
        entries[count++] = (san_entry){SAN_IP_ADDRESS, host->address, host->address_length};
    else
        entries[count++] =
            (san_entry){SAN_DNS_NAME, (const unsigned char *)host->text, strlen(host->text)};
    if (!add_loopback)
        return count;
    if (host->is_address || strcmp(host->text, localhost) != 0)
        entries[count++] =
            (san_entry){SAN_DNS_NAME, (const unsigned char *)localhost, sizeof localhost - 1};
    if (!(host->address_length == 4 && memcmp(host->address, loopback_address, 4) == 0))
        entries[count++] = (san_entry){SAN_IP_ADDRESS, loopback_address, 4};
    return count;
}

/* DER of GeneralNames ::= SEQUENCE OF GeneralName, written backwards from the end of `buffer`
 * as mbedTLS's asn1write does (mbedTLS 2.28 has no subjectAltName writer). Returns the length,
 * with *start pointing at the first byte, or a negative mbedTLS error. */
static int write_san_der(unsigned char *buffer, size_t size, const san_entry *entries,
                         size_t count, unsigned char **start)
{
    unsigned char *cursor = buffer + size;
    size_t len = 0;
    int ret = 0;
    for (size_t index = count; index-- > 0;) {
        size_t entry_length = 0;
        MBEDTLS_ASN1_CHK_ADD(entry_length, mbedtls_asn1_write_raw_buffer(
                                               &cursor, buffer, entries[index].data,
                                               entries[index].length));
        MBEDTLS_ASN1_CHK_ADD(entry_length, mbedtls_asn1_write_len(&cursor, buffer, entry_length));
        MBEDTLS_ASN1_CHK_ADD(entry_length, mbedtls_asn1_write_tag(
                                               &cursor, buffer, (unsigned char)entries[index].tag));
        len += entry_length;
    }
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&cursor, buffer, len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&cursor, buffer,
                                                     MBEDTLS_ASN1_CONSTRUCTED |
                                                         MBEDTLS_ASN1_SEQUENCE));
    *start = cursor;
    return (int)len;
}

static int format_time(time_t when, char out[16])
{
    struct tm parts;
    if (gmtime_r(&when, &parts) == NULL || parts.tm_year + 1900 > 9999)
        return -1;
    return strftime(out, 16, "%Y%m%d%H%M%S", &parts) == 14 ? 0 : -1;
}

static int set_validity(mbedtls_x509write_cert *certificate, unsigned valid_days)
{
    char not_before[16];
    char not_after[16];
    time_t now = time(NULL);
    if (now == (time_t)-1 || format_time(now - BACKDATE_SECONDS, not_before) != 0 ||
        format_time(now + (time_t)valid_days * 86400, not_after) != 0)
        return -1;
    return mbedtls_x509write_crt_set_validity(certificate, not_before, not_after);
}

static int set_serial(mbedtls_x509write_cert *certificate)
{
    unsigned char bytes[SERIAL_BYTES];
    kt_random(bytes, sizeof bytes);
    /* Positive (top bit clear) and never zero or shorter than 16 bytes (next bit set). */
    bytes[0] = (unsigned char)((bytes[0] & 0x7f) | 0x40);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    int ret = mbedtls_mpi_read_binary(&serial, bytes, sizeof bytes);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(certificate, &serial);
    mbedtls_mpi_free(&serial);
    return ret;
}

/* Fills every field of the certificate; returns 0 or an mbedTLS error. */
static int describe_certificate(mbedtls_x509write_cert *certificate, mbedtls_pk_context *key,
                                const host_name *host, bool add_loopback, unsigned valid_days)
{
    char name[MAX_HOST_LENGTH + 4];
    (void)snprintf(name, sizeof name, "CN=%s", host->text); /* fits: length checked */
    san_entry entries[MAX_SAN_ENTRIES];
    size_t count = collect_san_entries(host, add_loopback, entries);
    unsigned char san_buffer[SAN_DER_SIZE];
    unsigned char *san = NULL;
    int ret = write_san_der(san_buffer, sizeof san_buffer, entries, count, &san);
    if (ret < 0)
        return ret;
    size_t san_length = (size_t)ret;

    mbedtls_x509write_crt_set_version(certificate, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(certificate, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(certificate, key);
    mbedtls_x509write_crt_set_issuer_key(certificate, key);
    if ((ret = set_serial(certificate)) != 0 ||
        (ret = set_validity(certificate, valid_days)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_name(certificate, name)) != 0 ||
        (ret = mbedtls_x509write_crt_set_issuer_name(certificate, name)) != 0 ||
        (ret = mbedtls_x509write_crt_set_basic_constraints(certificate, 1, 0)) != 0 ||
        (ret = mbedtls_x509write_crt_set_key_usage(
             certificate, MBEDTLS_X509_KU_DIGITAL_SIGNATURE | MBEDTLS_X509_KU_KEY_CERT_SIGN)) !=
            0 ||
        (ret = mbedtls_x509write_crt_set_subject_key_identifier(certificate)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(certificate)) != 0 ||
        (ret = mbedtls_x509write_crt_set_extension(
             certificate, MBEDTLS_OID_SUBJECT_ALT_NAME,
             MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, san, san_length)) != 0)
        return ret;
    return 0;
}

/* Makes the key and both PEM texts. The key PEM goes to a kt_secret; mbedTLS keeps its own copy
 * of the private key inside `key`, which mbedtls_pk_free zeroes. */
static int make_pems(const host_name *host, bool add_loopback, unsigned valid_days,
                     kt_mbedtls_random *random, unsigned char *cert_pem, kt_secret *key_pem)
{
    mbedtls_pk_context key;
    mbedtls_x509write_cert certificate;
    mbedtls_pk_init(&key);
    mbedtls_x509write_crt_init(&certificate);
    int ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                  mbedtls_ctr_drbg_random, &random->drbg);
    if (ret == 0)
        ret = describe_certificate(&certificate, &key, host, add_loopback, valid_days);
    if (ret == 0)
        ret = mbedtls_x509write_crt_pem(&certificate, cert_pem, CERT_PEM_SIZE,
                                        mbedtls_ctr_drbg_random, &random->drbg);
    if (ret == 0)
        ret = mbedtls_pk_write_key_pem(&key, key_pem->bytes, key_pem->length);
    mbedtls_x509write_crt_free(&certificate);
    mbedtls_pk_free(&key);
    return ret;
}

int kt_x509_self_signed(const char *host, bool add_loopback, unsigned valid_days,
                        const char *cert_path, const char *key_path, char *error,
                        size_t error_size)
{
    host_name name;
    if (classify_host(host, &name, error, error_size) != 0)
        return -1;
    if (valid_days == 0 || valid_days > MAX_VALID_DAYS) {
        kt_crypto_error(error, error_size,
                        "a certificate must be valid for 1 to %u days, not %u; choose another "
                        "validity",
                        MAX_VALID_DAYS, valid_days);
        return -1;
    }
    kt_mbedtls_random random;
    if (kt_mbedtls_random_init(&random, "keytrustee x509") != 0) {
        kt_crypto_error(error, error_size,
                        "could not seed the random generator for the certificate of %s", host);
        return -1;
    }
    unsigned char cert_pem[CERT_PEM_SIZE];
    kt_secret *key_pem = kt_secret_new(KEY_PEM_SIZE);
    int result = -1;
    int ret = key_pem == NULL ? MBEDTLS_ERR_PK_ALLOC_FAILED
                              : make_pems(&name, add_loopback, valid_days, &random, cert_pem,
                                          key_pem);
    if (ret != 0) {
        char detail[128];
        mbedtls_strerror(ret, detail, sizeof detail);
        kt_crypto_error(error, error_size, "could not create a certificate for %s: %s", host,
                        detail);
    } else if (kt_write_file_atomic(key_path, key_pem->bytes,
                                    strlen((const char *)key_pem->bytes), 0600, error,
                                    error_size) == 0 &&
               kt_write_file_atomic(cert_path, cert_pem, strlen((const char *)cert_pem), 0644,
                                    error, error_size) == 0) {
        /* The key is written first so that a certificate never exists without its key. */
        result = 0;
    }
    kt_secret_free(key_pem);
    kt_mbedtls_random_free(&random);
    return result;
}

static int64_t unix_time(const mbedtls_x509_time *when)
{
    struct tm parts = {
        .tm_year = when->year - 1900,
        .tm_mon = when->mon - 1,
        .tm_mday = when->day,
        .tm_hour = when->hour,
        .tm_min = when->min,
        .tm_sec = when->sec,
    };
    return (int64_t)timegm(&parts);
}

void kt_x509_format_fingerprint(const mbedtls_x509_buf *der, char out[96])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    (void)crypto_hash_sha256(digest, der->p, der->len); /* cannot fail */
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    (void)kt_hex_encode(hex, sizeof hex, digest, sizeof digest); /* sized exactly */
    size_t position = 0;
    for (size_t index = 0; index < sizeof digest; index++) {
        if (index > 0)
            out[position++] = ':';
        out[position++] = hex[2 * index];
        out[position++] = hex[2 * index + 1];
    }
    out[position] = '\0';
}

int kt_x509_info_read(const char *cert_path, kt_x509_info *info, char *error, size_t error_size)
{
    mbedtls_x509_crt chain;
    mbedtls_x509_crt_init(&chain);
    int ret = mbedtls_x509_crt_parse_file(&chain, cert_path);
    if (ret != 0) {
        char detail[128];
        mbedtls_strerror(ret, detail, sizeof detail);
        kt_crypto_error(error, error_size,
                        "could not read a PEM certificate from %s (%s); check the path and that "
                        "the file holds a certificate",
                        cert_path, detail);
        mbedtls_x509_crt_free(&chain);
        return -1;
    }
    memset(info, 0, sizeof *info);
    /* dn_gets truncates with an error when a name is longer than the field; keep what fits. */
    if (mbedtls_x509_dn_gets(info->subject, sizeof info->subject, &chain.subject) < 0)
        info->subject[sizeof info->subject - 1] = '\0';
    if (mbedtls_x509_dn_gets(info->issuer, sizeof info->issuer, &chain.issuer) < 0)
        info->issuer[sizeof info->issuer - 1] = '\0';
    kt_x509_format_fingerprint(&chain.raw, info->sha256_fingerprint);
    info->not_before = unix_time(&chain.valid_from);
    info->not_after = unix_time(&chain.valid_to);
    mbedtls_x509_crt_free(&chain);
    return 0;
}
