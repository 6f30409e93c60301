/*
 * paths.c — where keytrustee's files live, and the private directories that hold them.
 *
 * Every program finds its files the same way: `--confdir DIR` names the .keytrustee directory and
 * the home is its parent; otherwise $KEYTRUSTEE_HOME; otherwise /var/lib/keytrustee. Paths are
 * made absolute and lexically normalised here, once, because the daemons chdir("/") when they
 * detach and a relative path would then point somewhere else.
 *
 * kt_private_directory creates missing directories with mode 0700 and refuses existing ones that
 * group or others can reach, naming the chmod that fixes it: the home holds the server key and the
 * database, so a loose mode is an error, never a warning.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/common/app.h"
#include "app/common/internal.h"

int kt_path_join(char *out, size_t out_size, const char *directory, const char *name)
{
    int written = snprintf(out, out_size, "%s/%s", directory, name);
    if (written < 0 || (size_t)written >= out_size)
        return -1;
    return 0;
}

/* Drops the last component of an absolute normalised path in place ("/a/b" -> "/a", "/a" -> "/"). */
static void drop_last_component(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path)
        path[1] = '\0';
    else
        *slash = '\0';
}

/* Appends one component to an absolute normalised path; -1 when it does not fit. */
static int append_component(char *path, size_t path_size, const char *component, size_t length)
{
    size_t used = strlen(path);
    size_t separator = (used > 1) ? 1 : 0; /* "/" already ends in a separator */
    if (used + separator + length + 1 > path_size)
        return -1;
    if (separator)
        path[used++] = '/';
    memcpy(path + used, component, length);
    path[used + length] = '\0';
    return 0;
}

/* Makes `input` absolute (against the working directory) and removes ".", ".." and repeated or
 * trailing slashes without touching the file system, so it works for paths not created yet. */
static int normalise_path(char *out, size_t out_size, const char *input, char *error,
                          size_t error_size)
{
    char joined[PATH_MAX * 2];
    if (input[0] == '/') {
        if (snprintf(joined, sizeof joined, "%s", input) >= (int)sizeof joined)
            goto too_long;
    } else {
        char working[PATH_MAX];
        if (getcwd(working, sizeof working) == NULL) {
            kt_app_error(error, error_size, "cannot resolve the relative path %s: %s", input,
                         strerror(errno));
            return -1;
        }
        if (snprintf(joined, sizeof joined, "%s/%s", working, input) >= (int)sizeof joined)
            goto too_long;
    }
    if (out_size < 2)
        goto too_long;
    strcpy(out, "/");
    const char *cursor = joined;
    while (*cursor != '\0') {
        while (*cursor == '/')
            cursor++;
        size_t length = strcspn(cursor, "/");
        if (length == 0)
            break;
        if (length == 1 && cursor[0] == '.') {
            /* "." names the directory itself */
        } else if (length == 2 && cursor[0] == '.' && cursor[1] == '.') {
            drop_last_component(out);
        } else if (append_component(out, out_size, cursor, length) != 0) {
            goto too_long;
        }
        cursor += length;
    }
    return 0;
too_long:
    kt_app_error(error, error_size, "the path %s is too long", input);
    return -1;
}

/* Fills the directories that hang off the home (and the confdir when none was given). */
static int derive_paths(kt_paths *paths, bool have_confdir, const char *dbdir, char *error,
                        size_t error_size)
{
    if ((!have_confdir && kt_path_join(paths->confdir, sizeof paths->confdir, paths->home,
                                       ".keytrustee") != 0) ||
        kt_path_join(paths->ssldir, sizeof paths->ssldir, paths->confdir, ".ssl") != 0 ||
        kt_path_join(paths->rundir, sizeof paths->rundir, paths->home, "run") != 0 ||
        kt_path_join(paths->logdir, sizeof paths->logdir, paths->home, "logs") != 0) {
        kt_app_error(error, error_size, "the paths under %s are too long", paths->home);
        return -1;
    }
    if (dbdir != NULL)
        return normalise_path(paths->dbdir, sizeof paths->dbdir, dbdir, error, error_size);
    if (kt_path_join(paths->dbdir, sizeof paths->dbdir, paths->home, "db") != 0) {
        kt_app_error(error, error_size, "the paths under %s are too long", paths->home);
        return -1;
    }
    return 0;
}

int kt_paths_resolve(kt_paths *paths, const char *confdir, const char *dbdir, char *error,
                     size_t error_size)
{
    memset(paths, 0, sizeof *paths);
    if (confdir != NULL && confdir[0] == '\0') {
        kt_app_error(error, error_size, "--confdir needs a directory name");
        return -1;
    }
    if (dbdir != NULL && dbdir[0] == '\0') {
        kt_app_error(error, error_size, "--pg-rootdir needs a directory name");
        return -1;
    }
    if (confdir != NULL) {
        if (normalise_path(paths->confdir, sizeof paths->confdir, confdir, error, error_size) != 0)
            return -1;
        if (strcmp(paths->confdir, "/") == 0) {
            kt_app_error(error, error_size, "--confdir cannot be the root directory");
            return -1;
        }
        strcpy(paths->home, paths->confdir); /* same size, and the parent is shorter */
        drop_last_component(paths->home);
    } else {
        const char *home = getenv("KEYTRUSTEE_HOME");
        if (home == NULL || home[0] == '\0')
            home = KT_DEFAULT_HOME;
        if (normalise_path(paths->home, sizeof paths->home, home, error, error_size) != 0)
            return -1;
    }
    return derive_paths(paths, confdir != NULL, dbdir, error, error_size);
}

/* Checks an existing directory: a directory, owned by us (or we are root), closed to group and
 * others. */
static int check_private(const char *path, const struct stat *status, char *error,
                         size_t error_size)
{
    if (!S_ISDIR(status->st_mode)) {
        kt_app_error(error, error_size, "%s exists but is not a directory; move it away", path);
        return -1;
    }
    /* root may use a directory that belongs to the service user (sudo ktadmin ...). */
    if (geteuid() != 0 && status->st_uid != geteuid()) {
        kt_app_error(error, error_size,
                     "%s is owned by uid %lu, not by this user (uid %lu); run: chown -R %lu %s",
                     path, (unsigned long)status->st_uid, (unsigned long)geteuid(),
                     (unsigned long)geteuid(), path);
        return -1;
    }
    if ((status->st_mode & 077) != 0) {
        kt_app_error(error, error_size,
                     "%s is accessible by group or others (mode %04o); run: chmod 700 %s", path,
                     (unsigned)(status->st_mode & 07777), path);
        return -1;
    }
    return 0;
}

/* Creates one directory with mode 0700 whatever the umask; an existing one is left alone. */
static int make_directory(const char *path, char *error, size_t error_size)
{
    if (mkdir(path, 0700) != 0) {
        if (errno == EEXIST)
            return 0;
        kt_app_error(error, error_size, "cannot create the directory %s: %s", path,
                     strerror(errno));
        return -1;
    }
    /* The umask may have taken the owner's bits away; the mode must be exactly 0700. */
    if (chmod(path, 0700) != 0) {
        kt_app_error(error, error_size, "cannot set mode 0700 on %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int kt_private_directory(const char *path, char *error, size_t error_size)
{
    struct stat status;
    if (stat(path, &status) == 0)
        return check_private(path, &status, error, error_size);
    if (errno != ENOENT) {
        kt_app_error(error, error_size, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    char partial[PATH_MAX];
    if (snprintf(partial, sizeof partial, "%s", path) >= (int)sizeof partial) {
        kt_app_error(error, error_size, "the path %s is too long", path);
        return -1;
    }
    /* mkdir -p: each missing parent is created 0700 too; existing parents are not checked, since
     * they are usually system directories such as /var/lib. */
    for (char *slash = strchr(partial + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        int result = make_directory(partial, error, error_size);
        *slash = '/';
        if (result != 0)
            return -1;
    }
    if (make_directory(partial, error, error_size) != 0)
        return -1;
    if (stat(path, &status) != 0) {
        kt_app_error(error, error_size, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    return check_private(path, &status, error, error_size);
}
