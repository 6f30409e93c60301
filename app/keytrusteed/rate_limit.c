/*
 * rate_limit.c — failed authentications are limited per source address and per client, so that
 * guessing and hammering cost the attacker, never the other clients.
 *
 * What counts as a failure: an answer 401 (bad, missing or replayed signature, clock outside the
 * window, unknown client) or 403 (disabled client or org, wrong org secret, disabled deposit) on
 * an authenticated endpoint.
 *
 *   per source address  every such failure counts against the peer address (IPv6: its /64, since
 *                       one host usually owns a whole /64; an IPv4-mapped IPv6 address counts as
 *                       its IPv4 address). Once an address has KTD_RATE_FAILURES
 *                       failures within KTD_RATE_WINDOW seconds, its requests to authenticated
 *                       endpoints get 429 rate_limited until the window ends. An attacker can
 *                       only block the address it sends from (clients behind the same NAT share
 *                       it: see docs/security.md).
 *   per client          a failure counts against a client fingerprint only when the request's
 *                       signature verified with that client's key (the 403s of a disabled client
 *                       or org, or of its disabled deposits). Only the holder of the private key
 *                       can cause those, so nobody can use the limiter to block another client:
 *                       a forged X-KT-Client with a bad signature counts against the forger's
 *                       address alone. Once over the limit, requests claiming that fingerprint get
 *                       429 from any address until the window ends.
 *
 * The table is fixed-size (KTD_RATE_SLOTS entries, linear probing over a few slots); when those
 * are all busy, the entry whose window started first is replaced. A flood from many addresses
 * can therefore push an entry out early — it loses that entry's count, never blocks a bystander.
 * The 429 answers carry Retry-After (seconds until the window ends) and are not counted.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/keytrusteed/keytrusteed.h"

#define KEY_MAX 64
#define PROBES 8

typedef struct counter {
    char key[KEY_MAX]; /* "a:<address>" or "c:<fingerprint>"; "" when free */
    int64_t window_start;
    unsigned failures;
} counter;

static counter counters[KTD_RATE_SLOTS];
static pthread_mutex_t counters_mutex = PTHREAD_MUTEX_INITIALIZER;

static uint64_t key_hash(const char *key)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    for (; *key != '\0'; key++)
        hash = (hash ^ (unsigned char)*key) * 1099511628211ull;
    return hash;
}

/* 0 for a free slot, 1 for an expired one, 2 for one in use. */
static int occupancy(const counter *slot, int64_t now)
{
    if (slot->key[0] == '\0')
        return 0;
    return now - slot->window_start >= KTD_RATE_WINDOW ? 1 : 2;
}

/* Whether `candidate` is a better slot to recycle than `current`. */
static bool better_victim(const counter *candidate, const counter *current, int64_t now)
{
    int candidate_rank = occupancy(candidate, now);
    int current_rank = occupancy(current, now);
    if (candidate_rank != current_rank)
        return candidate_rank < current_rank;
    return candidate_rank == 2 && candidate->window_start < current->window_start;
}

/* The counter for key, creating (or recycling) one when create; NULL when absent. Call locked. */
static counter *find_counter(const char *key, int64_t now, bool create)
{
    size_t start = (size_t)(key_hash(key) % KTD_RATE_SLOTS);
    counter *victim = NULL;
    for (size_t probe = 0; probe < PROBES; probe++) {
        counter *slot = &counters[(start + probe) % KTD_RATE_SLOTS];
        if (strcmp(slot->key, key) == 0)
            return slot;
        if (victim == NULL || better_victim(slot, victim, now))
            victim = slot;
    }
    if (!create)
        return NULL;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->window_start = now;
    victim->failures = 0;
    return victim;
}

/* Seconds the key is still blocked for, 0 when it is not. */
static int64_t blocked_for(const char *key, int64_t now)
{
    (void)pthread_mutex_lock(&counters_mutex);
    const counter *slot = find_counter(key, now, false);
    int64_t remaining = 0;
    if (slot != NULL && slot->failures >= KTD_RATE_FAILURES &&
        now - slot->window_start < KTD_RATE_WINDOW)
        remaining = KTD_RATE_WINDOW - (now - slot->window_start);
    (void)pthread_mutex_unlock(&counters_mutex);
    return remaining;
}

static void count_failure(const char *key, int64_t now)
{
    (void)pthread_mutex_lock(&counters_mutex);
    counter *slot = find_counter(key, now, true);
    if (now - slot->window_start >= KTD_RATE_WINDOW) {
        slot->window_start = now;
        slot->failures = 0;
    }
    slot->failures++;
    (void)pthread_mutex_unlock(&counters_mutex);
}

/* "a:" + the peer address: IPv4 (also when IPv4-mapped in IPv6) whole, other IPv6 as its /64. */
static void address_key(const ktd_request *request, char key[KEY_MAX])
{
    const char *address = mg_get_request_info(request->connection)->remote_addr;
    struct in6_addr parsed;
    char text[INET6_ADDRSTRLEN];
    if (strchr(address, ':') == NULL || inet_pton(AF_INET6, address, &parsed) != 1) {
        snprintf(key, KEY_MAX, "a:%s", address);
        return;
    }
    if (IN6_IS_ADDR_V4MAPPED(&parsed) &&
        inet_ntop(AF_INET, &parsed.s6_addr[12], text, sizeof text) != NULL) {
        snprintf(key, KEY_MAX, "a:%s", text);
        return;
    }
    memset(&parsed.s6_addr[8], 0, 8); /* one host usually owns a whole /64 */
    if (inet_ntop(AF_INET6, &parsed, text, sizeof text) == NULL)
        snprintf(key, KEY_MAX, "a:%.40s", address);
    else
        snprintf(key, KEY_MAX, "a:%s/64", text);
}

static bool client_key(const ktd_request *request, char key[KEY_MAX])
{
    const char *claimed = mg_get_header(request->connection, "X-KT-Client");
    if (claimed == NULL || !kt_fingerprint_valid(claimed))
        return false;
    snprintf(key, KEY_MAX, "c:%s", claimed);
    return true;
}

static void refuse(ktd_request *request, int64_t seconds, const char *what)
{
    char retry_after[24];
    snprintf(retry_after, sizeof retry_after, "%lld", (long long)seconds);
    char message[256];
    snprintf(message, sizeof message,
             "too many failed authentications from this %s; retry in %lld s", what,
             (long long)seconds);
    json_t *body = json_pack("{s:s, s:s, s:I}", "error", "rate_limited", "message", message,
                             "retry_after", (json_int_t)seconds);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        ktd_respond_internal(request, "building the rate-limit answer");
        return;
    }
    ktd_header header = {"Retry-After", retry_after};
    request->error_code = "rate_limited";
    (void)ktd_respond(request, 429, "application/json", text, strlen(text), &header, 1);
    free(text);
}

bool ktd_rate_admit(ktd_request *request)
{
    int64_t now = (int64_t)time(NULL);
    char key[KEY_MAX];
    address_key(request, key);
    int64_t seconds = blocked_for(key, now);
    if (seconds > 0) {
        refuse(request, seconds, "address");
        return false;
    }
    if (client_key(request, key) && (seconds = blocked_for(key, now)) > 0) {
        refuse(request, seconds, "client");
        return false;
    }
    return true;
}

void ktd_rate_note(const ktd_request *request)
{
    if (request->status != 401 && request->status != 403)
        return;
    int64_t now = (int64_t)time(NULL);
    char key[KEY_MAX];
    address_key(request, key);
    count_failure(key, now);
    if (request->client[0] != '\0') { /* the signature verified: only the key holder did this */
        snprintf(key, sizeof key, "c:%s", request->client);
        count_failure(key, now);
    }
}

void ktd_rate_reset(void)
{
    (void)pthread_mutex_lock(&counters_mutex);
    memset(counters, 0, sizeof counters);
    (void)pthread_mutex_unlock(&counters_mutex);
}
