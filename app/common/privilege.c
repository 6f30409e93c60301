/*
 * privilege.c — what the two daemons do to run with as little power as they can:
 *
 *   kt_process_harden     no core dumps (RLIMIT_CORE 0) and not dumpable (PR_SET_DUMPABLE 0: no
 *                         ptrace by the same user, /proc/PID/mem and environ unreadable), so a
 *                         crash or a co-resident process cannot copy key material out of memory.
 *                         Key material itself lives in libsodium guarded allocations, which are
 *                         mlocked (never swapped); mlockall is not used, because locking every
 *                         CivetWeb and SQLite page would make RLIMIT_MEMLOCK the daemon's limit.
 *   kt_private_file_check refuses a key file that group or others may read, naming the chmod.
 *   kt_privilege_drop     after the ports are bound and the keys read: setgroups, setgid, setuid
 *                         to the service user (default "keytrustee"), then checks that root
 *                         cannot be regained. Skipped when not running as root or when the user
 *                         is "". A missing default user is a warning (the daemon stays root, as
 *                         before this existed); a missing user named with --user is an error.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/common/app.h"

int kt_process_harden(char *error, size_t error_size)
{
    struct rlimit none = {0, 0};
#if defined(__SANITIZE_ADDRESS__)
    /* LeakSanitizer ptraces the process at exit, which PR_SET_DUMPABLE 0 forbids a non-root
     * user: sanitizer builds (tests) keep only the core limit. */
    bool dumpable_allowed = true;
#else
    bool dumpable_allowed = false;
#endif
    if (setrlimit(RLIMIT_CORE, &none) != 0 ||
        (!dumpable_allowed && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)) {
        snprintf(error, error_size, "cannot disable core dumps: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int kt_private_file_check(const char *path, char *error, size_t error_size)
{
    struct stat status;
    if (stat(path, &status) != 0) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if ((status.st_mode & 077) != 0) {
        snprintf(error, error_size,
                 "%s is accessible by group or others (mode %04o); run: chmod 600 %s", path,
                 (unsigned)(status.st_mode & 07777), path);
        return -1;
    }
    return 0;
}

/* Whether the process can become root again (it must not). */
static bool can_regain_root(void)
{
    return setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0;
}

static int switch_to(const struct passwd *account, char *error, size_t error_size)
{
    if (setgroups(1, &account->pw_gid) != 0 || setgid(account->pw_gid) != 0 ||
        setuid(account->pw_uid) != 0) {
        snprintf(error, error_size, "cannot switch to user %s: %s", account->pw_name,
                 strerror(errno));
        return -1;
    }
    if (can_regain_root() || getuid() != account->pw_uid || geteuid() != account->pw_uid ||
        getgid() != account->pw_gid || getegid() != account->pw_gid) {
        snprintf(error, error_size, "switched to user %s but could still become root; refusing "
                 "to run", account->pw_name);
        return -1;
    }
    return 0;
}

int kt_privilege_drop(const char *user, bool user_given, char *error, size_t error_size)
{
    if (geteuid() != 0 || user == NULL || user[0] == '\0')
        return 0;
    errno = 0;
    struct passwd *account = getpwnam(user);
    if (account == NULL && !user_given) {
        kt_log(KT_LOG_WARNING, "running as root: the user %s does not exist (create it with "
               "useradd --system --no-create-home --shell /usr/sbin/nologin %s, chown -R the "
               "home to it, or pass --user '' to run as root on purpose)", user, user);
        return 0;
    }
    if (account == NULL) {
        snprintf(error, error_size, "--user %s: no such user (create it with useradd --system "
                 "--no-create-home --shell /usr/sbin/nologin %s)", user, user);
        return -1;
    }
    if (account->pw_uid == 0)
        return 0;
    if (switch_to(account, error, error_size) != 0)
        return -1;
    kt_log(KT_LOG_INFO, "running as user %s (uid %lu)", user, (unsigned long)account->pw_uid);
    return 0;
}

int kt_user_ids(const char *user, uid_t *uid, gid_t *gid)
{
    if (geteuid() != 0 || user == NULL || user[0] == '\0')
        return -1;
    const struct passwd *account = getpwnam(user);
    if (account == NULL || account->pw_uid == 0)
        return -1;
    *uid = account->pw_uid;
    *gid = account->pw_gid;
    return 0;
}
