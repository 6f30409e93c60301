/*
 * failpoint.c — named points in the commit path where a test can have the process killed with
 * SIGKILL, so that the fault suite (tests/integration/test_repl_faults.sh) can crash a node at an
 * exact step rather than at a random moment.
 *
 * Arming
 *   KT_FAILPOINT=NAME[:COUNT] in the environment of a process arms one point: the COUNT-th time
 *   (default 1) any thread reaches it, the process writes one line to stderr
 *   ("keytrustee failpoint NAME reached: killing the process") and kills itself with SIGKILL.
 *   The variable is read once, the first time replication starts in the process (kt_repl_start,
 *   kt_repl_base_copy) or kt_repl_failpoint is called. An unknown name makes kt_repl_start fail,
 *   so that a misspelt test does not silently test nothing.
 * Cost when not armed: one load of a global flag and a predicted branch (repl_failpoint and
 *   repl_failpoint_fires are inline functions in internal.h); nothing else runs.
 * The points (docs/replication.md says what each one leaves behind and what the suite checks):
 *   every name is listed once in `names` below, in the order of repl_failpoint_id.
 * Torn writes: for the points that stand in the middle of a write (mid-send, mid-log-record,
 *   mid-spool-record, mid-apply), the caller asks repl_failpoint_fires first, writes half of what
 *   it was writing, then calls repl_failpoint_kill.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replication/internal.h"

bool repl_failpoints_armed;

static const char *const names[REPL_FAILPOINT_COUNT] = {
    [REPL_FP_ACTIVE_BEFORE_WAL_WRITE] = "active-before-wal-write",
    [REPL_FP_ACTIVE_BEFORE_SHIP] = "active-before-ship",
    [REPL_FP_ACTIVE_MID_SEND] = "active-mid-send",
    [REPL_FP_ACTIVE_AFTER_LOCAL_SYNC] = "active-after-local-sync",
    [REPL_FP_ACTIVE_AFTER_ACK] = "active-after-ack",
    [REPL_FP_ACTIVE_MID_LOG_RECORD] = "active-mid-log-record",
    [REPL_FP_ACTIVE_AFTER_LOG] = "active-after-log",
    [REPL_FP_ACTIVE_BEFORE_ANSWER] = "active-before-answer",
    [REPL_FP_ACTIVE_BEFORE_CONFIRM] = "active-before-confirm",
    [REPL_FP_ACTIVE_MID_CHECKPOINT] = "active-mid-checkpoint",
    [REPL_FP_PASSIVE_MID_SPOOL_RECORD] = "passive-mid-spool-record",
    [REPL_FP_PASSIVE_BEFORE_SPOOL_SYNC] = "passive-before-spool-sync",
    [REPL_FP_PASSIVE_AFTER_SPOOL_SYNC] = "passive-after-spool-sync",
    [REPL_FP_PASSIVE_MID_APPLY] = "passive-mid-apply",
    [REPL_FP_PASSIVE_AFTER_APPLY_SYNC] = "passive-after-apply-sync",
    [REPL_FP_PASSIVE_MID_CHECKPOINT] = "passive-mid-checkpoint",
};

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static repl_failpoint_id armed_point = REPL_FAILPOINT_COUNT;
static unsigned long armed_count = 1;
static unsigned long hits;
static bool setting_unknown;

const char *repl_failpoint_name(repl_failpoint_id id)
{
    return id < REPL_FAILPOINT_COUNT ? names[id] : "unknown";
}

static repl_failpoint_id find_point(const char *name, size_t length)
{
    for (int id = 0; id < REPL_FAILPOINT_COUNT; id++) {
        if (strlen(names[id]) == length && strncmp(names[id], name, length) == 0) {
            return (repl_failpoint_id)id;
        }
    }
    return REPL_FAILPOINT_COUNT;
}

static void read_setting(void)
{
    const char *setting = getenv("KT_FAILPOINT");
    if (setting == NULL || setting[0] == '\0') {
        return;
    }
    const char *colon = strchr(setting, ':');
    size_t length = colon ? (size_t)(colon - setting) : strlen(setting);
    repl_failpoint_id id = find_point(setting, length);
    unsigned long count = 1;
    if (colon != NULL) {
        char *end = NULL;
        errno = 0;
        count = strtoul(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || count == 0) {
            id = REPL_FAILPOINT_COUNT;
        }
    }
    if (id == REPL_FAILPOINT_COUNT) {
        setting_unknown = true;
        return;
    }
    armed_point = id;
    armed_count = count;
    __atomic_store_n(&repl_failpoints_armed, true, __ATOMIC_SEQ_CST);
}

int repl_failpoint_setup(char *error, size_t error_size)
{
    (void)pthread_once(&setup_once, read_setting);
    if (setting_unknown) {
        repl_error(error, error_size,
                   "KT_FAILPOINT names no failpoint (expected NAME or NAME:COUNT, COUNT >= 1; "
                   "the names are in docs/replication.md)");
        return -1;
    }
    return 0;
}

bool repl_failpoint_is(repl_failpoint_id id)
{
    return repl_failpoints_armed && armed_point == id;
}

bool repl_failpoint_hit(repl_failpoint_id id)
{
    if (!repl_failpoint_is(id)) {
        return false;
    }
    return __atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST) == armed_count;
}

_Noreturn void repl_failpoint_kill(repl_failpoint_id id)
{
    char line[128];
    int length = snprintf(line, sizeof line,
                          "keytrustee failpoint %s reached: killing the process\n",
                          repl_failpoint_name(id));
    if (length > 0) {
        (void)!write(STDERR_FILENO, line, (size_t)length);
    }
    (void)kill(getpid(), SIGKILL);
    for (;;) {
        (void)pause(); /* SIGKILL is on its way; nothing after this point may run */
    }
}

void kt_repl_failpoint(const char *name)
{
    (void)pthread_once(&setup_once, read_setting);
    if (!repl_failpoints_armed || name == NULL) {
        return;
    }
    repl_failpoint_id id = find_point(name, strlen(name));
    if (id < REPL_FAILPOINT_COUNT) {
        repl_failpoint(id);
    }
}
