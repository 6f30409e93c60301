/*
 * nonce_cache.c — the replay cache: every (client, nonce) pair accepted in the last window.
 *
 * A signed request is accepted only while its timestamp is within 300 s of the server clock, so
 * a nonce must be remembered until its timestamp + 300 s; after that the timestamp check refuses
 * a replay by itself. The cache is an open-addressing hash table of 16-byte BLAKE2b digests of
 * (fingerprint, nonce) with their expiry, guarded by one mutex (a lookup is a few memory reads).
 *
 * Expired entries are reused in place and dropped whenever the table is rebuilt, which happens
 * when it is three quarters full; a rebuild sizes it for the live entries at half full (so 32 to
 * 48 bytes per live nonce), growing by doubling up to MAX_SLOTS. Linear probing at three quarters
 * full looks at ~2.5 slots for a nonce it holds and ~8.5 for a new one: a few cache lines, under
 * the mutex. At that bound, with more than 3/4 of MAX_SLOTS live nonces, new requests are refused
 * (KTD_NONCE_FULL) rather than forgetting a nonce that could then be replayed: replay protection
 * never silently lapses.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"

#define DIGEST_BYTES 16u
#define MIN_SLOTS    ((size_t)1 << 12)
#define MAX_SLOTS    ((size_t)1 << 21) /* 48 MiB of slots; ~1.5M live nonces */

typedef struct slot {
    unsigned char digest[DIGEST_BYTES];
    int64_t expires; /* 0: empty */
} slot;

typedef struct table {
    slot *slots;
    size_t capacity; /* a power of two */
    size_t used;     /* non-empty slots, expired ones included */
} table;

static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static table cache;
static int64_t last_rebuild; /* a full table is rebuilt at most once a second */

static void digest_of(unsigned char digest[DIGEST_BYTES], const char *fingerprint,
                      const unsigned char nonce[KTD_NONCE_BYTES])
{
    unsigned char input[KT_FINGERPRINT_CHARS + KTD_NONCE_BYTES];
    unsigned char hash[KT_HASH_BYTES];
    memcpy(input, fingerprint, KT_FINGERPRINT_CHARS);
    memcpy(input + KT_FINGERPRINT_CHARS, nonce, KTD_NONCE_BYTES);
    kt_hash(hash, input, sizeof input);
    memcpy(digest, hash, DIGEST_BYTES);
}

static size_t home_slot(const unsigned char digest[DIGEST_BYTES], size_t capacity)
{
    uint64_t value;
    memcpy(&value, digest, sizeof value);
    return (size_t)value & (capacity - 1);
}

/* Places an entry known to be absent (used while rebuilding). */
static void place(table *into, const slot *entry)
{
    size_t index = home_slot(entry->digest, into->capacity);
    while (into->slots[index].expires != 0)
        index = (index + 1) & (into->capacity - 1);
    into->slots[index] = *entry;
    into->used++;
}

static size_t live_entries(int64_t now)
{
    size_t live = 0;
    for (size_t index = 0; index < cache.capacity; index++)
        live += cache.slots[index].expires > now;
    return live;
}

/* Rebuilds the table without its expired entries, at a size fit for the live ones. */
static int rebuild(int64_t now)
{
    size_t live = live_entries(now);
    size_t capacity = MIN_SLOTS;
    while (capacity < live * 2 && capacity < MAX_SLOTS)
        capacity *= 2;
    table fresh = {calloc(capacity, sizeof(slot)), capacity, 0};
    if (fresh.slots == NULL)
        return -1;
    for (size_t index = 0; index < cache.capacity; index++)
        if (cache.slots[index].expires > now)
            place(&fresh, &cache.slots[index]);
    free(cache.slots);
    cache = fresh;
    return 0;
}

/* Whether one more entry leaves the table at most three quarters full. */
static bool fits_one_more(void)
{
    return (cache.used + 1) * 4 <= cache.capacity * 3;
}

/* Room for one more entry, rebuilding when three quarters full. */
static bool make_room(int64_t now)
{
    if (cache.slots == NULL || !fits_one_more()) {
        if (cache.capacity == MAX_SLOTS && last_rebuild == now)
            return false;
        if (rebuild(now) != 0)
            return false;
        last_rebuild = now;
    }
    return fits_one_more();
}

static ktd_nonce_result remember_locked(const unsigned char digest[DIGEST_BYTES],
                                        int64_t expires, int64_t now)
{
    if (!make_room(now))
        return KTD_NONCE_FULL;
    size_t index = home_slot(digest, cache.capacity);
    slot *reusable = NULL;
    for (; cache.slots[index].expires != 0; index = (index + 1) & (cache.capacity - 1)) {
        slot *current = &cache.slots[index];
        bool expired = current->expires <= now;
        if (!expired && memcmp(current->digest, digest, DIGEST_BYTES) == 0)
            return KTD_NONCE_REPLAYED;
        if (expired && reusable == NULL)
            reusable = current;
    }
    if (reusable == NULL) {
        reusable = &cache.slots[index];
        cache.used++;
    }
    memcpy(reusable->digest, digest, DIGEST_BYTES);
    reusable->expires = expires;
    return KTD_NONCE_FRESH;
}

ktd_nonce_result ktd_nonce_remember(const char *fingerprint,
                                    const unsigned char nonce[KTD_NONCE_BYTES], int64_t expires,
                                    int64_t now)
{
    unsigned char digest[DIGEST_BYTES];
    digest_of(digest, fingerprint, nonce);
    if (expires <= now)
        expires = now + 1;
    if (pthread_mutex_lock(&cache_mutex) != 0)
        return KTD_NONCE_FULL;
    ktd_nonce_result result = remember_locked(digest, expires, now);
    (void)pthread_mutex_unlock(&cache_mutex); /* cannot fail: this thread holds it */
    return result;
}

void ktd_nonce_cache_free(void)
{
    if (pthread_mutex_lock(&cache_mutex) != 0)
        return;
    free(cache.slots);
    memset(&cache, 0, sizeof cache);
    (void)pthread_mutex_unlock(&cache_mutex);
}
