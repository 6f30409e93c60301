/*
 * backup.h — what the files of `ktadmin backup` share: backup.c (options, the steps, roll,
 * outcome), backup_write.c (packing the copy, .keytrustee and the manifest into the file) and
 * backup_verify.c (`ktadmin backup verify`).
 */
#ifndef KT_KTADMIN_BACKUP_H
#define KT_KTADMIN_BACKUP_H

#include <limits.h>
#include <stdbool.h>

#include "app/ktadmin/archive.h"

typedef struct ktadmin_backup_options {
    const char *output;
    long roll;
    const char *recipient;
    const char *passphrase_file;
    bool cleartext;
    bool quiet;
    bool verbose;
} ktadmin_backup_options;

/* One run of `ktadmin backup`. */
typedef struct ktadmin_backup_run {
    kt_paths paths;
    char output[PATH_MAX];          /* the output directory */
    ktadmin_backup_keys keys;
    int lock_fd;
    json_t *copy;                   /* keytrustee-db's answer to the backup op */
    char copy_directory[PATH_MAX];  /* where keytrustee-db wrote the copy (inside the db dir) */
    char final_path[PATH_MAX];      /* the backup file written */
} ktadmin_backup_run;

/* Writes the backup file (temporary name, fsync, rename, fsync of the directory). */
int ktadmin_backup_write(ktadmin_backup_run *run, char *error, size_t error_size);
/* Removes copies left in the db directory by earlier runs that died, and their temporary files. */
void ktadmin_backup_remove_stale_copies(const ktadmin_backup_run *run);
/* `ktadmin backup verify FILE ...` (argv[0] is "verify"). */
int ktadmin_backup_verify(ktadmin_context *context, int argc, char **argv);

#endif /* KT_KTADMIN_BACKUP_H */
