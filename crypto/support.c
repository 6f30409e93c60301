/*
 * support.c — plumbing shared by the other files of crypto/: error text formatting and the
 * mbedTLS random generator that certificate creation and TLS connections draw from.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crypto/internal.h"

void kt_crypto_error(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0)
        return;
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(error, error_size, format, arguments);
    va_end(arguments);
    if (written < 0)
        error[0] = '\0';
}

int kt_mbedtls_random_init(kt_mbedtls_random *random, const char *personalization)
{
    mbedtls_entropy_init(&random->entropy);
    mbedtls_ctr_drbg_init(&random->drbg);
    int result = mbedtls_ctr_drbg_seed(&random->drbg, mbedtls_entropy_func, &random->entropy,
                                       (const unsigned char *)personalization,
                                       strlen(personalization));
    if (result != 0) {
        kt_mbedtls_random_free(random);
        return -1;
    }
    return 0;
}

void kt_mbedtls_random_free(kt_mbedtls_random *random)
{
    mbedtls_ctr_drbg_free(&random->drbg);
    mbedtls_entropy_free(&random->entropy);
}
