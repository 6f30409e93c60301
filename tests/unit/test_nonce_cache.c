/*
 * test_nonce_cache.c — keytrusteed's replay cache (app/keytrusteed/nonce_cache.c) on its own: a
 * nonce is remembered across every rebuild and growth of the table; an expired one is accepted
 * again; another client's identical nonce is its own; at the table's bound every request is
 * refused (a new nonce, and a replay), never a nonce forgotten, and room comes back once nonces
 * expire.
 */
#include <stdint.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"
#include "crypto/crypto.h"
#include "tests/unit/unit.h"

/* 3/4 of the table's largest size (MAX_SLOTS, 2^21): the most live nonces it holds. */
#define BOUND_LIVE_NONCES ((size_t)3 << 19)

static const char client_a[KT_FINGERPRINT_CHARS + 1] = "0123456789ABCDEF0123456789ABCDEF01234567";
static const char client_b[KT_FINGERPRINT_CHARS + 1] = "89ABCDEF0123456789ABCDEF0123456789ABCDEF";

static void nonce_number(unsigned char nonce[KTD_NONCE_BYTES], uint64_t number)
{
    memset(nonce, 0, KTD_NONCE_BYTES);
    memcpy(nonce, &number, sizeof number);
}

static size_t remember_many(const char *client, uint64_t first, size_t count, int64_t expires,
                            int64_t now, ktd_nonce_result expected)
{
    size_t matched = 0;
    unsigned char nonce[KTD_NONCE_BYTES];
    for (size_t index = 0; index < count; index++) {
        nonce_number(nonce, first + index);
        matched += ktd_nonce_remember(client, nonce, expires, now) == expected;
    }
    return matched;
}

TEST(every_nonce_is_remembered_across_the_table_growing)
{
    const size_t count = 200000; /* from the first 4,096 slots to 2^19: seven rebuilds */
    CHECK_EQ_INT(remember_many(client_a, 1, count, 1300, 1000, KTD_NONCE_FRESH), count);
    CHECK_EQ_INT(remember_many(client_a, 1, count, 1300, 1001, KTD_NONCE_REPLAYED), count);
    CHECK_EQ_INT(remember_many(client_b, 1, 1000, 1300, 1001, KTD_NONCE_FRESH), 1000);
    ktd_nonce_cache_free();
}

TEST(an_expired_nonce_is_accepted_again)
{
    CHECK_EQ_INT(remember_many(client_a, 7, 5000, 2010, 2000, KTD_NONCE_FRESH), 5000);
    CHECK_EQ_INT(remember_many(client_a, 7, 5000, 2010, 2009, KTD_NONCE_REPLAYED), 5000);
    CHECK_EQ_INT(remember_many(client_a, 7, 5000, 2030, 2010, KTD_NONCE_FRESH), 5000);
    CHECK_EQ_INT(remember_many(client_a, 7, 5000, 2030, 2011, KTD_NONCE_REPLAYED), 5000);
    ktd_nonce_cache_free();
}

TEST(at_its_bound_the_cache_refuses_new_nonces_and_forgets_none)
{
    unsigned char nonce[KTD_NONCE_BYTES];
    size_t fresh = 0;
    ktd_nonce_result result = KTD_NONCE_FRESH;
    while (result == KTD_NONCE_FRESH && fresh <= BOUND_LIVE_NONCES) {
        nonce_number(nonce, fresh);
        result = ktd_nonce_remember(client_a, nonce, 3300, 3000);
        fresh += result == KTD_NONCE_FRESH;
    }
    CHECK(result == KTD_NONCE_FULL);
    CHECK_EQ_INT(fresh, BOUND_LIVE_NONCES);
    /* Full: a new nonce is refused, and so is every nonce taken (never accepted a second time),
     * in the same second and after the next rebuild, a second later. */
    nonce_number(nonce, fresh + 1);
    CHECK(ktd_nonce_remember(client_a, nonce, 3300, 3000) == KTD_NONCE_FULL);
    CHECK_EQ_INT(remember_many(client_a, 0, 1000, 3300, 3000, KTD_NONCE_FRESH), 0);
    nonce_number(nonce, fresh - 1);
    CHECK(ktd_nonce_remember(client_a, nonce, 3300, 3001) != KTD_NONCE_FRESH);
    /* Once they expire there is room again. */
    nonce_number(nonce, fresh + 1);
    CHECK(ktd_nonce_remember(client_a, nonce, 3700, 3400) == KTD_NONCE_FRESH);
    ktd_nonce_cache_free();
}

int main(void)
{
    if (kt_crypto_init() != 0)
        return 1;
    return unit_run();
}
