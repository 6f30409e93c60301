/*
 * failover.c — the rules that decide where a call goes after a failed attempt, and whether a
 * refused write means that the key server pair is degraded.
 *
 * They are pure functions of what each attempt ended with (kt_attempt_outcome), so that
 * tests/unit/test_ktclient.c checks every rule without a network; request.c applies them.
 *
 * Reads are safe to repeat, so a read moves to the other node on anything that is not an answer
 * about the request itself: connection refused, connect or I/O timeout, TLS failure, a cut
 * connection, or any 5xx. A 4xx is an answer about the request (401/403: who is asking; 404: what
 * is asked for) and the other node, holding the same data, would give the same one.
 *
 * Writes are not safe to repeat once they may have reached a server: the first node could have
 * committed the write before the connection broke. A write therefore moves only when
 *   - nothing was sent (the connection or the TLS handshake failed),
 *   - the node's keytrusteed answered 503 "unavailable" (its database service is down: the write
 *     never reached a database) or 503 "fenced" (an old active that another node replaced: it
 *     refused the write before storing anything), or
 *   - the node is the passive (503 "passive"): it names the active, and the write goes there when
 *     that is the other configured server (a node naming a server this client was not registered
 *     with is not followed: that could send keys anywhere). A passive that names no active leaves
 *     the other configured server as the only candidate.
 *
 * Role change: while `ktadmin switchover` hands the active role over, each node may for a moment
 * answer "passive" naming the other, or one of them may be restarting (503 "unavailable") while
 * the other names it. Nothing was stored; a write that met exactly that starts over once after a
 * second (kt_failover_role_change), so clients that know both nodes keep working through it.
 *
 * Degraded: writes need both nodes (the seed: "New write operations ... are not allowed unless
 * both Key Trustee Servers are operational"). A write refused for that reason is recognised from
 * the answers: an active that says write_unavailable (its peer is down), or one node unreachable
 * while the other says it is the passive (the active is down).
 */
#include <stdint.h>
#include <string.h>

#include "app/ktclient/internal.h"

static bool transport_failed(const kt_attempt_outcome *outcome)
{
    return outcome->failure != KT_TLS_OK;
}

static bool answered_code(const kt_attempt_outcome *outcome, int status, const char *code)
{
    return !transport_failed(outcome) && outcome->http_status == status &&
           strcmp(outcome->code, code) == 0;
}

bool kt_failover_unhealthy(const kt_attempt_outcome *outcome)
{
    return transport_failed(outcome) || outcome->http_status >= 500;
}

/* The node could not take the write and nothing of it reached a database. */
static bool unreachable_for_write(const kt_attempt_outcome *outcome)
{
    return (transport_failed(outcome) && !outcome->sent) ||
           answered_code(outcome, 503, "unavailable") || answered_code(outcome, 503, "fenced");
}

static bool is_passive_refusal(const kt_attempt_outcome *outcome)
{
    return answered_code(outcome, 503, "passive");
}

kt_failover_step kt_failover_next(bool write, const kt_attempt_outcome *outcome,
                                  const kt_url *other)
{
    if (other == NULL)
        return KT_FAILOVER_STOP;
    if (!write)
        return kt_failover_unhealthy(outcome) ? KT_FAILOVER_OTHER : KT_FAILOVER_STOP;
    if (unreachable_for_write(outcome))
        return KT_FAILOVER_OTHER;
    if (!is_passive_refusal(outcome))
        return KT_FAILOVER_STOP;
    if (!outcome->has_active)
        return KT_FAILOVER_OTHER;
    return kt_url_same(&outcome->active, other) ? KT_FAILOVER_OTHER : KT_FAILOVER_STOP;
}

/* The configured server that is not `server`, or SIZE_MAX when only one is configured. */
static size_t peer_of(size_t server, size_t server_count)
{
    return server_count == 2 ? 1 - server : SIZE_MAX;
}

/* The passive's answer points at `server` as the active (or points nowhere). */
static bool names_as_active(const kt_attempt_outcome *passive, const kt_url *server)
{
    return !passive->has_active || kt_url_same(&passive->active, server);
}

/* The node said it is the passive and named the other configured server as the active. */
static bool points_to_other(const kt_url *servers, const kt_attempt_outcome *outcome)
{
    return is_passive_refusal(outcome) && outcome->has_active &&
           kt_url_same(&outcome->active, &servers[1 - outcome->server]);
}

bool kt_failover_role_change(const kt_url *servers, size_t server_count,
                             const kt_attempt_outcome *outcomes, size_t count)
{
    if (server_count != 2 || count != 2 || outcomes[0].server == outcomes[1].server)
        return false;
    for (size_t index = 0; index < 2; index++) {
        const kt_attempt_outcome *other = &outcomes[1 - index];
        if (points_to_other(servers, &outcomes[index]) &&
            (points_to_other(servers, other) || answered_code(other, 503, "unavailable")))
            return true;
    }
    return false;
}

bool kt_failover_degraded(const kt_url *servers, size_t server_count,
                          const kt_attempt_outcome *outcomes, size_t count, size_t *down)
{
    *down = SIZE_MAX;
    for (size_t index = 0; index < count; index++) {
        if (answered_code(&outcomes[index], 503, "write_unavailable")) {
            *down = peer_of(outcomes[index].server, server_count);
            return true;
        }
    }
    if (count != 2)
        return false;
    for (size_t index = 0; index < 2; index++) {
        const kt_attempt_outcome *unreachable = &outcomes[index];
        const kt_attempt_outcome *passive = &outcomes[1 - index];
        if (unreachable_for_write(unreachable) && is_passive_refusal(passive) &&
            names_as_active(passive, &servers[unreachable->server])) {
            *down = unreachable->server;
            return true;
        }
    }
    return false;
}
