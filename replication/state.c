/*
 * state.c — the one state machine of a replication node, in the style of Redis's replication.c:
 * every state has a name written down here, and repl_set_state is the only place that changes
 * the state, so every transition is checked and logged in one spot.
 *
 *   state         role      meaning
 *   standalone    -         no replication: commits are logged, nothing is shipped
 *   waiting_for_passive
 *                 active    no passive connected; synchronous commits are refused at once
 *   connecting    passive   trying to reach the active (retried with a growing pause)
 *   handshake     both      authenticated; positions are being compared
 *   basecopy      both      a full copy is on its way (the histories forked, or the active no
 *                           longer has what the passive misses, or the passive had nothing)
 *   catchup       both      streaming the transactions the passive misses; synchronous commits
 *                           wait (up to the acknowledgement timeout) for this to end
 *   in_sync       both      the passive acknowledged everything the active committed: each new
 *                           commit is shipped and acknowledged inside its COMMIT
 *   fenced        active    a node with a newer epoch exists: this node takes no more writes
 *                           (until an operator restarts it as a passive)
 *   diverged      passive   the active refused this passive (newer epoch here, confirmed
 *                           transactions the active lacks, different SQLite or page size): an
 *                           operator must look; the passive retries now and then
 *   stopped       both      kt_repl_stop ran
 *
 * Transitions (anything else is a bug, logged as such and still performed so the node does not
 * wedge):
 *   waiting_for_passive → handshake → {basecopy, catchup, fenced, waiting_for_passive}
 *   connecting → handshake → {basecopy, catchup, diverged, connecting}
 *   basecopy → {catchup, waiting_for_passive, connecting, diverged}
 *   catchup ⇄ in_sync;  catchup, in_sync → {waiting_for_passive, connecting}
 *   diverged → connecting;  in_sync, catchup → fenced;  everything → stopped
 */
#include <stdio.h>

#include "replication/internal.h"

static const char *const state_names[REPL_STATE_COUNT] = {
    [REPL_STATE_STANDALONE] = "standalone",
    [REPL_STATE_WAITING] = "waiting_for_passive",
    [REPL_STATE_CONNECTING] = "connecting",
    [REPL_STATE_HANDSHAKE] = "handshake",
    [REPL_STATE_BASECOPY] = "basecopy",
    [REPL_STATE_CATCHUP] = "catchup",
    [REPL_STATE_IN_SYNC] = "in_sync",
    [REPL_STATE_FENCED] = "fenced",
    [REPL_STATE_DIVERGED] = "diverged",
    [REPL_STATE_STOPPED] = "stopped",
};

#define BIT(state) (1u << (state))

/* allowed[from] is the set of states `from` may move to. */
static const unsigned allowed[REPL_STATE_COUNT] = {
    [REPL_STATE_STANDALONE] = 0,
    [REPL_STATE_WAITING] = BIT(REPL_STATE_HANDSHAKE) | BIT(REPL_STATE_FENCED),
    [REPL_STATE_CONNECTING] = BIT(REPL_STATE_HANDSHAKE),
    [REPL_STATE_HANDSHAKE] = BIT(REPL_STATE_BASECOPY) | BIT(REPL_STATE_CATCHUP) |
                             BIT(REPL_STATE_FENCED) | BIT(REPL_STATE_DIVERGED) |
                             BIT(REPL_STATE_WAITING) | BIT(REPL_STATE_CONNECTING),
    [REPL_STATE_BASECOPY] = BIT(REPL_STATE_CATCHUP) | BIT(REPL_STATE_WAITING) |
                            BIT(REPL_STATE_CONNECTING) | BIT(REPL_STATE_DIVERGED),
    [REPL_STATE_CATCHUP] = BIT(REPL_STATE_IN_SYNC) | BIT(REPL_STATE_WAITING) |
                           BIT(REPL_STATE_CONNECTING) | BIT(REPL_STATE_FENCED),
    [REPL_STATE_IN_SYNC] = BIT(REPL_STATE_CATCHUP) | BIT(REPL_STATE_WAITING) |
                           BIT(REPL_STATE_CONNECTING) | BIT(REPL_STATE_FENCED),
    [REPL_STATE_FENCED] = 0,
    [REPL_STATE_DIVERGED] = BIT(REPL_STATE_CONNECTING),
    [REPL_STATE_STOPPED] = 0,
};

const char *repl_state_name(repl_state state)
{
    return state < REPL_STATE_COUNT ? state_names[state] : "unknown";
}

bool repl_state_transition_allowed(repl_state from, repl_state to)
{
    if (from >= REPL_STATE_COUNT || to >= REPL_STATE_COUNT) {
        return false;
    }
    return to == REPL_STATE_STOPPED || (allowed[from] & BIT(to)) != 0;
}

void repl_set_state(kt_repl *repl, repl_state to, const char *why)
{
    repl_state from = repl->state;
    if (from == to) {
        return;
    }
    if (!repl_state_transition_allowed(from, to)) {
        repl_log(&repl->logger, KT_REPL_LOG_ERROR,
                 "replication: unexpected transition %s -> %s (%s)", repl_state_name(from),
                 repl_state_name(to), why);
    } else {
        kt_repl_log_level level = to == REPL_STATE_FENCED || to == REPL_STATE_DIVERGED
                                      ? KT_REPL_LOG_ERROR
                                      : KT_REPL_LOG_INFO;
        repl_log(&repl->logger, level, "replication: %s -> %s: %s", repl_state_name(from),
                 repl_state_name(to), why);
    }
    repl->state = to;
    (void)snprintf(repl->state_reason, sizeof repl->state_reason, "%s", why);
    (void)pthread_cond_broadcast(&repl->changed);
}
