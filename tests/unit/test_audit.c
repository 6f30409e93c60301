/*
 * test_audit.c — the audit chain (app/common/audit.c) without the daemons: events written by the
 * flusher verify; a reopened file continues the chain; two processes appending at the same time
 * (the keytrusteed + keytrustee-db case) still make one valid chain; a torn last line is cut off;
 * verification names the line of a modified, removed or reordered entry; a group-readable file
 * is refused with the chmod; the reservation bound holds.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "tests/unit/unit.h"

#define CHILD_EVENTS 200

static kt_paths temporary_home(void)
{
    kt_paths paths;
    memset(&paths, 0, sizeof paths);
    char template[] = "/tmp/kt-audit-XXXXXX";
    if (mkdtemp(template) == NULL)
        abort();
    snprintf(paths.home, sizeof paths.home, "%s", template);
    snprintf(paths.logdir, sizeof paths.logdir, "%s/logs", template);
    return paths;
}

static void audit_path(const kt_paths *paths, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", paths->logdir, KT_AUDIT_FILE);
}

static void remove_home(const kt_paths *paths)
{
    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", paths->home);
    if (system(command) != 0)
        fprintf(stderr, "    could not remove %s\n", paths->home);
}

static void record_events(int count, const char *actor)
{
    for (int index = 0; index < count; index++) {
        char object[32];
        snprintf(object, sizeof object, "object-%d", index);
        kt_audit_event event = {actor, "test.event", object, "ok", "local"};
        if (kt_audit_reserve())
            kt_audit_record(&event);
    }
}

static int verify(const char *path, long *entries, char *message, size_t size)
{
    char head[128];
    return kt_audit_verify(path, entries, head, sizeof head, message, size);
}

TEST(events_are_written_and_verify)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32], message[512];
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(10, "alice");
    kt_audit_close();
    audit_path(&paths, path, sizeof path);
    long entries = 0;
    CHECK_EQ_INT(verify(path, &entries, message, sizeof message), 0);
    CHECK_EQ_INT(entries, 11); /* chain start + 10 */
    struct stat status;
    CHECK(stat(path, &status) == 0 && (status.st_mode & 0777) == 0600);

    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(5, "bob");
    kt_audit_close();
    CHECK_EQ_INT(verify(path, &entries, message, sizeof message), 0);
    CHECK_EQ_INT(entries, 16); /* the reopened file continued the chain */
    remove_home(&paths);
}

TEST(two_processes_make_one_chain)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32], message[512];
    pid_t child = fork();
    if (child == 0) {
        int result = kt_audit_open(&paths, "child", error, sizeof error);
        for (int round = 0; result == 0 && round < 10; round++) {
            record_events(CHILD_EVENTS / 10, "child");
            usleep(30000);
        }
        kt_audit_close();
        _exit(result == 0 ? 0 : 1);
    }
    CHECK_EQ_INT(kt_audit_open(&paths, "parent", error, sizeof error), 0);
    for (int round = 0; round < 10; round++) {
        record_events(CHILD_EVENTS / 10, "parent");
        usleep(30000);
    }
    kt_audit_close();
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    audit_path(&paths, path, sizeof path);
    long entries = 0;
    CHECK_EQ_INT(verify(path, &entries, message, sizeof message), 0);
    CHECK_EQ_INT(entries, 2 * CHILD_EVENTS + 1);
    remove_home(&paths);
}

TEST(a_torn_tail_is_cut_off)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32], message[512];
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(3, "alice");
    kt_audit_close();
    audit_path(&paths, path, sizeof path);
    int fd = open(path, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "{\"seq\":4,\"ti", 12) == 12);
    close(fd);
    long entries = 0;
    CHECK(verify(path, &entries, message, sizeof message) != 0);
    CHECK(strstr(message, "line 5: torn") != NULL);
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(1, "alice");
    kt_audit_close();
    CHECK_EQ_INT(verify(path, &entries, message, sizeof message), 0);
    CHECK_EQ_INT(entries, 5);
    remove_home(&paths);
}

/* Rewrites the file with line `number` (1-based) replaced by `replacement` (NULL: removed). */
static void rewrite_line(const char *from, const char *to, int number, const char *replacement)
{
    FILE *in = fopen(from, "r");
    FILE *out = fopen(to, "w");
    char line[4096];
    for (int index = 1; in != NULL && out != NULL && fgets(line, sizeof line, in) != NULL;
         index++) {
        if (index != number)
            fputs(line, out);
        else if (replacement != NULL)
            fputs(replacement, out);
    }
    if (in != NULL)
        fclose(in);
    if (out != NULL)
        fclose(out);
}

TEST(tampering_is_found_at_its_line)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32], copy[PATH_MAX + 64], message[512];
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(6, "alice");
    kt_audit_close();
    audit_path(&paths, path, sizeof path);
    snprintf(copy, sizeof copy, "%s.copy", path);
    long entries = 0;

    rewrite_line(path, copy, 3, NULL);
    CHECK(verify(copy, &entries, message, sizeof message) != 0);
    CHECK(strstr(message, "line 3: sequence 3 follows 1") != NULL);

    rewrite_line(path, copy, 4, "{\"seq\":3}\n");
    CHECK(verify(copy, &entries, message, sizeof message) != 0);
    CHECK(strstr(message, "line 4: not an audit entry") != NULL);

    rewrite_line(path, copy, 1, NULL);
    CHECK(verify(copy, &entries, message, sizeof message) != 0);
    CHECK(strstr(message, "line 1: not the chain start") != NULL);
    remove_home(&paths);
}

TEST(a_readable_file_is_refused_and_the_bound_holds)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32];
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    kt_audit_close();
    audit_path(&paths, path, sizeof path);
    CHECK(chmod(path, 0640) == 0);
    CHECK(kt_audit_open(&paths, "unit", error, sizeof error) != 0);
    CHECK(strstr(error, "chmod 600") != NULL);
    CHECK(chmod(path, 0600) == 0);

    CHECK(setenv("KT_AUDIT_BACKLOG", "2", 1) == 0);
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    CHECK(kt_audit_reserve());
    CHECK(kt_audit_reserve());
    CHECK(!kt_audit_reserve()); /* two reserved, none written yet: the bound is reached */
    kt_audit_release();
    CHECK(kt_audit_reserve());
    kt_audit_release();
    kt_audit_release();
    kt_audit_close();
    CHECK(unsetenv("KT_AUDIT_BACKLOG") == 0);
    remove_home(&paths);
}

TEST(a_full_queue_waits_for_the_flusher_instead_of_refusing)
{
    kt_paths paths = temporary_home();
    char error[512] = "", path[PATH_MAX + 32], message[256] = "";
    CHECK(setenv("KT_AUDIT_BACKLOG", "2", 1) == 0);
    CHECK_EQ_INT(kt_audit_open(&paths, "unit", error, sizeof error), 0);
    record_events(2, "burst"); /* two queued: the bound, and the file is writable */
    CHECK(kt_audit_reserve()); /* granted once the flusher has written them */
    kt_audit_event event = {"burst", "test.event", "object-2", "ok", "local"};
    kt_audit_record(&event);
    kt_audit_close();
    CHECK(unsetenv("KT_AUDIT_BACKLOG") == 0);
    audit_path(&paths, path, sizeof path);
    long entries = 0;
    CHECK_EQ_INT(verify(path, &entries, message, sizeof message), 0);
    CHECK_EQ_INT(entries, 4); /* chain start and the three events */
    remove_home(&paths);
}

int main(void)
{
    if (kt_crypto_init() != 0)
        return 1;
    if (kt_log_open("test_audit", KT_LOG_ERROR, NULL) != 0)
        return 1;
    return unit_run();
}
