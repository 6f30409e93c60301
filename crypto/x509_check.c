/*
 * x509_check.c — what `ktadmin cert` needs to know about a certificate before it is installed:
 * the names it carries, and whether it is fit to serve as this node's TLS certificate.
 *
 * kt_x509_check_server runs the checks in the order an operator fixes them: both files parse;
 * the key belongs to the certificate (mbedtls_pk_check_pair); the certificate is valid now; it
 * chains to the given CA (or, without one, is self-signed and verifies against itself); and the
 * node's host name is among its names. Each failure is one sentence saying which check failed.
 *
 * Names: mbedTLS 2.28 lists only dNSName entries of the subjectAltName extension, so the
 * extension is read here from the certificate's raw extensions, as crypto/tls_client.c does for
 * its address check. A host that is an IP literal must appear as an iPAddress entry; a DNS name
 * must match a dNSName entry (case-insensitive, "*." matching exactly one leftmost label), or the
 * subject's CN when the certificate has no dNSName at all (RFC 6125's fallback).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "crypto/internal.h"

#define KEY_FILE_MAX (64u * 1024u)
#define SAN_DNS_NAME (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)
#define SAN_IP_ADDRESS (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)

static void describe_mbedtls(int ret, char *out, size_t out_size)
{
    mbedtls_strerror(ret, out, out_size);
}

/* ---- names ---------------------------------------------------------------------------------- */

static void add_name(kt_x509_names *names, const char *prefix, const char *value, size_t length)
{
    if (names->count >= KT_X509_NAMES_MAX)
        return;
    char *slot = names->names[names->count];
    int written = snprintf(slot, KT_X509_NAME_CHARS, "%s%.*s", prefix, (int)length, value);
    if (written > 0 && (size_t)written < KT_X509_NAME_CHARS)
        names->count++;
}

static void add_address(kt_x509_names *names, const unsigned char *bytes, size_t length)
{
    char text[INET6_ADDRSTRLEN];
    int family = length == 4 ? AF_INET : length == 16 ? AF_INET6 : 0;
    if (family != 0 && inet_ntop(family, bytes, text, sizeof text) != NULL)
        add_name(names, "IP:", text, strlen(text));
}

/* Adds the dNSName and iPAddress entries of a GeneralNames DER in [cursor, end). */
static int read_general_names(unsigned char *cursor, const unsigned char *end,
                              kt_x509_names *names)
{
    size_t length = 0;
    if (mbedtls_asn1_get_tag(&cursor, end, &length,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return -1;
    end = cursor + length;
    while (cursor < end) {
        int tag = *cursor++;
        if (mbedtls_asn1_get_len(&cursor, end, &length) != 0)
            return -1;
        if (tag == SAN_DNS_NAME)
            add_name(names, "DNS:", (const char *)cursor, length);
        else if (tag == SAN_IP_ADDRESS)
            add_address(names, cursor, length);
        cursor += length;
    }
    return 0;
}

/* Extensions ::= SEQUENCE OF SEQUENCE { extnID OID, critical BOOLEAN OPTIONAL, OCTET STRING }. */
static int read_san_extension(const mbedtls_x509_crt *certificate, kt_x509_names *names)
{
    unsigned char *cursor = certificate->v3_ext.p;
    size_t length = 0;
    if (cursor == NULL)
        return 0;
    const unsigned char *end = cursor + certificate->v3_ext.len;
    if (mbedtls_asn1_get_tag(&cursor, end, &length,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return -1;
    end = cursor + length;
    while (cursor < end) {
        if (mbedtls_asn1_get_tag(&cursor, end, &length,
                                 MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
            return -1;
        unsigned char *extension_end = cursor + length;
        size_t oid_length = 0;
        if (mbedtls_asn1_get_tag(&cursor, extension_end, &oid_length, MBEDTLS_ASN1_OID) != 0)
            return -1;
        bool is_san = oid_length == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
                      memcmp(cursor, MBEDTLS_OID_SUBJECT_ALT_NAME, oid_length) == 0;
        cursor += oid_length;
        if (is_san) {
            int critical = 0;
            (void)mbedtls_asn1_get_bool(&cursor, extension_end, &critical); /* optional */
            if (mbedtls_asn1_get_tag(&cursor, extension_end, &length,
                                     MBEDTLS_ASN1_OCTET_STRING) != 0)
                return -1;
            return read_general_names(cursor, cursor + length, names);
        }
        cursor = extension_end;
    }
    return 0;
}

static void read_common_name(const mbedtls_x509_crt *certificate, kt_x509_names *names)
{
    for (const mbedtls_x509_name *entry = &certificate->subject; entry != NULL;
         entry = entry->next) {
        if (entry->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &entry->oid) == 0) {
            snprintf(names->common_name, sizeof names->common_name, "%.*s",
                     (int)entry->val.len, (const char *)entry->val.p);
            return;
        }
    }
}

static int collect_names(const mbedtls_x509_crt *certificate, kt_x509_names *names)
{
    memset(names, 0, sizeof *names);
    read_common_name(certificate, names);
    return read_san_extension(certificate, names);
}

static int parse_certificates(mbedtls_x509_crt *chain, const char *path, const char *what,
                              char *error, size_t error_size)
{
    int ret = mbedtls_x509_crt_parse_file(chain, path);
    if (ret == 0)
        return 0;
    char detail[160];
    describe_mbedtls(ret, detail, sizeof detail);
    kt_crypto_error(error, error_size,
                    "cannot read %s from %s (%s); give a PEM file holding the certificate", what,
                    path, detail);
    return -1;
}

int kt_x509_names_read(const char *cert_path, kt_x509_names *names, char *error,
                       size_t error_size)
{
    mbedtls_x509_crt chain;
    mbedtls_x509_crt_init(&chain);
    int result = parse_certificates(&chain, cert_path, "a certificate", error, error_size);
    if (result == 0 && collect_names(&chain, names) != 0) {
        kt_crypto_error(error, error_size, "the subjectAltName extension of %s is malformed",
                        cert_path);
        result = -1;
    }
    mbedtls_x509_crt_free(&chain);
    return result;
}

/* ---- host name matching --------------------------------------------------------------------- */

static bool dns_name_matches(const char *pattern, const char *host)
{
    if (strcasecmp(pattern, host) == 0)
        return true;
    if (strncmp(pattern, "*.", 2) != 0)
        return false;
    const char *dot = strchr(host, '.');
    return dot != NULL && dot != host && strcasecmp(pattern + 1, dot) == 0;
}

bool kt_x509_names_match(const kt_x509_names *names, const char *host)
{
    unsigned char address[16];
    bool is_address = inet_pton(AF_INET, host, address) == 1 ||
                      inet_pton(AF_INET6, host, address) == 1;
    bool has_dns = false;
    for (size_t index = 0; index < names->count; index++) {
        const char *name = names->names[index];
        if (is_address && strncmp(name, "IP:", 3) == 0) {
            unsigned char listed[16];
            int family = strchr(name + 3, ':') != NULL ? AF_INET6 : AF_INET;
            size_t size = family == AF_INET ? 4 : 16;
            if (inet_pton(family, name + 3, listed) == 1 &&
                inet_pton(family, host, address) == 1 && memcmp(listed, address, size) == 0)
                return true;
        } else if (strncmp(name, "DNS:", 4) == 0) {
            has_dns = true;
            if (!is_address && dns_name_matches(name + 4, host))
                return true;
        }
    }
    return !is_address && !has_dns && names->common_name[0] != '\0' &&
           dns_name_matches(names->common_name, host);
}

/* ---- the checks ----------------------------------------------------------------------------- */

static int parse_private_key(mbedtls_pk_context *key, const char *path, char *error,
                             size_t error_size)
{
    kt_secret *text = NULL;
    if (kt_read_secret_file(path, KEY_FILE_MAX, &text, error, error_size) != 0)
        return -1;
    kt_secret *terminated = kt_secret_new(text->length + 1); /* mbedTLS's PEM parser wants NUL */
    int ret = MBEDTLS_ERR_PK_ALLOC_FAILED;
    if (terminated != NULL) {
        memcpy(terminated->bytes, text->bytes, text->length);
        ret = mbedtls_pk_parse_key(key, terminated->bytes, terminated->length, NULL, 0);
    }
    kt_secret_free(text);
    kt_secret_free(terminated);
    if (ret == 0)
        return 0;
    char detail[160];
    describe_mbedtls(ret, detail, sizeof detail);
    kt_crypto_error(error, error_size,
                    "cannot read a private key from %s (%s); give the unencrypted PEM key of the "
                    "certificate",
                    path, detail);
    return -1;
}

static int64_t x509_unix_time(const mbedtls_x509_time *when)
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

static int check_validity(const mbedtls_x509_crt *certificate, int64_t now, const char *path,
                          char *error, size_t error_size)
{
    if (now < x509_unix_time(&certificate->valid_from)) {
        kt_crypto_error(error, error_size,
                        "the certificate in %s is not valid until %04d-%02d-%02d %02d:%02d UTC; "
                        "check this machine's clock or wait",
                        path, certificate->valid_from.year, certificate->valid_from.mon,
                        certificate->valid_from.day, certificate->valid_from.hour,
                        certificate->valid_from.min);
        return -1;
    }
    if (now > x509_unix_time(&certificate->valid_to)) {
        kt_crypto_error(error, error_size,
                        "the certificate in %s expired on %04d-%02d-%02d %02d:%02d UTC; renew it",
                        path, certificate->valid_to.year, certificate->valid_to.mon,
                        certificate->valid_to.day, certificate->valid_to.hour,
                        certificate->valid_to.min);
        return -1;
    }
    return 0;
}

static bool self_signed(const mbedtls_x509_crt *certificate)
{
    return certificate->issuer_raw.len == certificate->subject_raw.len &&
           memcmp(certificate->issuer_raw.p, certificate->subject_raw.p,
                  certificate->subject_raw.len) == 0;
}

static void describe_chain_failure(uint32_t flags, const kt_x509_server_check *check,
                                   char *error, size_t error_size)
{
    char detail[256];
    if (mbedtls_x509_crt_verify_info(detail, sizeof detail, "", flags) < 0)
        detail[0] = '\0';
    detail[strcspn(detail, "\n")] = '\0';
    if (check->ca_path != NULL)
        kt_crypto_error(error, error_size,
                        "the certificate in %s does not verify against the CA in %s (%s); give "
                        "the CA that issued it (with any intermediate certificates after the "
                        "server certificate in --cert)",
                        check->cert_path, check->ca_path, detail);
    else
        kt_crypto_error(error, error_size,
                        "the self-signed certificate in %s does not verify against itself (%s)",
                        check->cert_path, detail);
}

/* Verifies the chain, without a name check (done separately, so IP addresses work). */
static int check_chain(mbedtls_x509_crt *chain, const kt_x509_server_check *check, char *error,
                       size_t error_size)
{
    mbedtls_x509_crt authority;
    mbedtls_x509_crt_init(&authority);
    int result = -1;
    if (check->ca_path == NULL && !self_signed(chain)) {
        char issuer[256];
        if (mbedtls_x509_dn_gets(issuer, sizeof issuer, &chain->issuer) < 0)
            issuer[0] = '\0';
        kt_crypto_error(error, error_size,
                        "the certificate in %s is issued by \"%s\", not self-signed; give that "
                        "CA's certificate with --ca",
                        check->cert_path, issuer);
    } else if (check->ca_path != NULL) {
        if (parse_certificates(&authority, check->ca_path, "the CA certificate", error,
                               error_size) == 0)
            result = 0;
    } else {
        /* A self-signed certificate is its own trust anchor. */
        result = mbedtls_x509_crt_parse_der(&authority, chain->raw.p, chain->raw.len) == 0 ? 0
                                                                                            : -1;
        if (result != 0)
            kt_crypto_error(error, error_size, "out of memory checking %s", check->cert_path);
    }
    uint32_t flags = 0;
    if (result == 0 &&
        mbedtls_x509_crt_verify(chain, &authority, NULL, NULL, &flags, NULL, NULL) != 0) {
        describe_chain_failure(flags, check, error, error_size);
        result = -1;
    }
    mbedtls_x509_crt_free(&authority);
    return result;
}

static int check_pair(mbedtls_x509_crt *chain, const kt_x509_server_check *check, char *error,
                      size_t error_size)
{
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    int result = parse_private_key(&key, check->key_path, error, error_size);
    if (result == 0 && mbedtls_pk_check_pair(&chain->pk, &key) != 0) {
        kt_crypto_error(error, error_size,
                        "the key in %s does not belong to the certificate in %s; give the key "
                        "the certificate was issued for",
                        check->key_path, check->cert_path);
        result = -1;
    }
    mbedtls_pk_free(&key);
    return result;
}

static int check_host(const mbedtls_x509_crt *certificate, const kt_x509_server_check *check,
                      char *error, size_t error_size)
{
    kt_x509_names names;
    if (collect_names(certificate, &names) != 0) {
        kt_crypto_error(error, error_size, "the subjectAltName extension of %s is malformed",
                        check->cert_path);
        return -1;
    }
    if (kt_x509_names_match(&names, check->host))
        return 0;
    char listed[512] = "";
    size_t used = 0;
    for (size_t index = 0; index < names.count && used < sizeof listed; index++) {
        int written = snprintf(listed + used, sizeof listed - used, "%s%s", index ? ", " : "",
                               names.names[index]);
        used += written > 0 ? (size_t)written : 0;
    }
    kt_crypto_error(error, error_size,
                    "the certificate in %s is not issued for \"%s\" (the external_address in "
                    "keytrustee.conf): it names %s%s%s; get one whose subjectAltName lists %s",
                    check->cert_path, check->host, listed[0] ? listed : "no subjectAltName",
                    names.common_name[0] ? " and CN=" : "", names.common_name, check->host);
    return -1;
}

int kt_x509_check_server(const kt_x509_server_check *check, char *error, size_t error_size)
{
    mbedtls_x509_crt chain;
    mbedtls_x509_crt_init(&chain);
    int result = parse_certificates(&chain, check->cert_path, "a certificate", error, error_size);
    if (result == 0)
        result = check_pair(&chain, check, error, error_size);
    if (result == 0)
        result = check_validity(&chain, check->now, check->cert_path, error, error_size);
    if (result == 0)
        result = check_chain(&chain, check, error, error_size);
    if (result == 0)
        result = check_host(&chain, check, error, error_size);
    mbedtls_x509_crt_free(&chain);
    return result;
}
