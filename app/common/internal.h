/*
 * internal.h — helpers shared by the files of app/common/ and used nowhere else.
 *
 * Nothing here is part of the contract in app.h; programs must not include this file.
 */
#ifndef KT_APP_COMMON_INTERNAL_H
#define KT_APP_COMMON_INTERNAL_H

#include <stddef.h>

/* Writes one formatted sentence into error (when error is not NULL and error_size > 0). */
void kt_app_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* KT_APP_COMMON_INTERNAL_H */
