/*
 * ownership.c — `ktadmin init` (and `db --bootstrap`) run as root hand the home to the service
 * user, so that keytrusteed and keytrustee-db can still read and write it after they drop root
 * (app/common/privilege.c). Nothing happens when ktadmin is not root or the user (keytrustee)
 * does not exist; the package that creates the user runs `ktadmin init` after creating it.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"

#define OPEN_DIRECTORIES 16

static uid_t owner_uid;
static gid_t owner_gid;

static int hand_over(const char *path, const struct stat *status, int type, struct FTW *where)
{
    (void)status;
    (void)type;
    (void)where;
    if (lchown(path, owner_uid, owner_gid) != 0) {
        ktadmin_fail("cannot hand %s to user %s: %s", path, KT_SERVICE_USER, strerror(errno));
        return 1;
    }
    return 0;
}

int ktadmin_hand_to_service_user(const kt_paths *paths)
{
    if (kt_user_ids(KT_SERVICE_USER, &owner_uid, &owner_gid) != 0)
        return 0;
    if (nftw(paths->home, hand_over, OPEN_DIRECTORIES, FTW_PHYS) != 0)
        return -1;
    if (strncmp(paths->dbdir, paths->home, strlen(paths->home)) != 0 &&
        nftw(paths->dbdir, hand_over, OPEN_DIRECTORIES, FTW_PHYS) != 0)
        return -1;
    printf("Handed %s to user %s\n", paths->home, KT_SERVICE_USER);
    return 0;
}
