/*
 * tls.c — the certificate CivetWeb serves.
 *
 * CivetWeb 1.15 built with mbedTLS reads its key and certificate from a single PEM file
 * (ssl_certificate). keytrusteed keeps the installed files apart (.ssl/ssl-cert-keytrustee-pk.pem
 * and ssl-cert-keytrustee.pem), so at each start and each SIGHUP it joins them in memory (a
 * kt_secret: the key is secret) and checks with mbedTLS that both parse and that the key belongs to
 * the certificate. At start the join is written to a 0600 file under run/ that server.c removes as
 * soon as CivetWeb has read it; on SIGHUP it is handed to CivetWeb in memory (mg_tls_reload).
 * Checking first means a bad certificate is reported at the terminal before daemonizing, and a bad
 * replacement on SIGHUP is refused with the reason while the running one keeps serving.
 */
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

#define PEM_FILE_MAX (256u * 1024u)

static int read_pem(const kt_paths *paths, const char *name, kt_secret **pem, char *error,
                    size_t error_size)
{
    char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, paths->ssldir, name) != 0) {
        snprintf(error, error_size, "the path of %s is too long", name);
        return -1;
    }
    return kt_read_secret_file(path, PEM_FILE_MAX, pem, error, error_size);
}

/* key, a newline when the key lacks one, certificate, and a NUL that mbedTLS's PEM parser needs
 * (not counted in the length). */
static kt_secret *join(const kt_secret *key, const kt_secret *certificate)
{
    bool newline = key->length > 0 && key->bytes[key->length - 1] != '\n';
    size_t length = key->length + (newline ? 1 : 0) + certificate->length;
    kt_secret *pem = kt_secret_new(length + 1);
    if (pem == NULL)
        return NULL;
    memcpy(pem->bytes, key->bytes, key->length);
    if (newline)
        pem->bytes[key->length] = '\n';
    memcpy(pem->bytes + length - certificate->length, certificate->bytes, certificate->length);
    pem->bytes[length] = '\0';
    pem->length = length;
    return pem;
}

static void describe_mbedtls_error(int code, const char *what, char *error, size_t error_size)
{
    char reason[128];
    mbedtls_strerror(code, reason, sizeof reason);
    snprintf(error, error_size, "%s (%s); install a PEM key and certificate in .keytrustee/.ssl/",
             what, reason);
}

static int check_pem(const kt_secret *pem, char *error, size_t error_size)
{
    mbedtls_pk_context key;
    mbedtls_x509_crt certificate;
    mbedtls_pk_init(&key);
    mbedtls_x509_crt_init(&certificate);
    int result = -1;
    int code = mbedtls_pk_parse_key(&key, pem->bytes, pem->length + 1, NULL, 0);
    if (code != 0) {
        describe_mbedtls_error(code,
                               "the TLS private key " KT_CERT_KEY_FILE
                               " does not parse (it must not be encrypted)",
                               error, error_size);
    } else if ((code = mbedtls_x509_crt_parse(&certificate, pem->bytes, pem->length + 1)) != 0) {
        describe_mbedtls_error(code, "the TLS certificate " KT_CERT_FILE " does not parse", error,
                               error_size);
    } else if ((code = mbedtls_pk_check_pair(&certificate.pk, &key)) != 0) {
        describe_mbedtls_error(code, "the TLS private key does not belong to the certificate",
                               error, error_size);
    } else {
        if (mbedtls_x509_time_is_past(&certificate.valid_to))
            kt_log(KT_LOG_WARNING, "the TLS certificate has expired; clients will refuse it");
        result = 0;
    }
    mbedtls_x509_crt_free(&certificate);
    mbedtls_pk_free(&key);
    return result;
}

int ktd_tls_pem_load(const kt_paths *paths, kt_secret **pem, char *error, size_t error_size)
{
    kt_secret *key = NULL, *certificate = NULL;
    *pem = NULL;
    if (read_pem(paths, KT_CERT_KEY_FILE, &key, error, error_size) == 0 &&
        read_pem(paths, KT_CERT_FILE, &certificate, error, error_size) == 0) {
        *pem = join(key, certificate);
        if (*pem == NULL)
            snprintf(error, error_size, "out of memory while reading the TLS files");
    }
    kt_secret_free(key);
    kt_secret_free(certificate);
    if (*pem != NULL && check_pem(*pem, error, error_size) != 0) {
        kt_secret_free(*pem);
        *pem = NULL;
    }
    return *pem != NULL ? 0 : -1;
}

int ktd_tls_pem_write(const kt_paths *paths, const kt_secret *pem, char *path, size_t path_size,
                      char *error, size_t error_size)
{
    char name[64];
    snprintf(name, sizeof name, "keytrusteed-tls-%ld.pem", (long)getpid());
    if (kt_path_join(path, path_size, paths->rundir, name) != 0) {
        snprintf(error, error_size, "the path of %s is too long", name);
        return -1;
    }
    return kt_write_file_atomic(path, pem->bytes, pem->length, 0600, error, error_size);
}
