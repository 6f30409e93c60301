/*
 * errors.c — formatting of the one-sentence error text that every fallible function of
 * app/common/ hands back through its `error, error_size` pair.
 */
#include <stdarg.h>
#include <stdio.h>

#include "app/common/internal.h"

void kt_app_error(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0)
        return;
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(error, error_size, format, arguments);
    va_end(arguments);
    /* A truncated sentence is still useful; only an encoding failure leaves nothing to show. */
    if (written < 0)
        error[0] = '\0';
}
