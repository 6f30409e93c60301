/*
 * secret.c — library start-up, guarded memory for secrets, constant-time comparison, randomness
 * and random (version 4) UUIDs.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

int kt_crypto_init(void)
{
    /* sodium_init returns 1 when already initialised, which is fine. */
    return sodium_init() < 0 ? -1 : 0;
}

/*
 * Secret buffers and their per-thread cache.
 *
 * Every secret lives in a sodium_malloc region: mlocked, between guard pages, wiped when freed.
 * Getting such a region costs an mmap, two mprotects, an mlock and, at free, a munmap — with TLB
 * shootdowns across cores. keytrusteed needs a few secret buffers per request, and paying that
 * on each one made the kernel's page-table work the biggest cost of a deposit read.
 *
 * So a freed buffer is wiped (all of its capacity, not just the bytes used) and kept in a small
 * per-thread cache by power-of-two size class, still mlocked and guarded, for the next
 * kt_secret_new of that class. What this gives up: a secret shorter than its region no longer ends
 * exactly at the guard page, so an overflow past `length` is caught only at the region's end.
 * Under AddressSanitizer the cache is off, so a use after kt_secret_free is still reported.
 */
#define SECRET_SMALLEST_CLASS_BITS 6u  /* 64 bytes */
#define SECRET_CLASS_COUNT         13u /* up to 256 KiB */
#define SECRET_CACHED_PER_CLASS    4u

#if defined(__SANITIZE_ADDRESS__)
#define SECRET_CACHE_ENABLED 0
#else
#define SECRET_CACHE_ENABLED 1
#endif

typedef struct secret_block {
    kt_secret secret; /* first: a kt_secret * is a secret_block * */
    size_t capacity;
    struct secret_block *next;
} secret_block;

typedef struct secret_cache {
    secret_block *free_blocks[SECRET_CLASS_COUNT];
    unsigned counts[SECRET_CLASS_COUNT];
} secret_cache;

static __thread secret_cache *thread_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void release_block(secret_block *block)
{
    sodium_free(block->secret.bytes); /* zeroes before unmapping */
    free(block);
}

/* Runs at thread exit: hands the thread's cached regions back to the system. */
static void destroy_cache(void *opaque)
{
    secret_cache *cache = opaque;
    for (unsigned index = 0; index < SECRET_CLASS_COUNT; index++) {
        while (cache->free_blocks[index] != NULL) {
            secret_block *block = cache->free_blocks[index];
            cache->free_blocks[index] = block->next;
            release_block(block);
        }
    }
    free(cache);
}

static void create_cache_key(void)
{
    if (pthread_key_create(&cache_key, destroy_cache) != 0)
        cache_key = (pthread_key_t)-1;
}

static secret_cache *current_cache(void)
{
    if (!SECRET_CACHE_ENABLED)
        return NULL;
    if (thread_cache != NULL)
        return thread_cache;
    if (pthread_once(&cache_key_once, create_cache_key) != 0 || cache_key == (pthread_key_t)-1)
        return NULL;
    secret_cache *cache = calloc(1, sizeof *cache);
    if (cache == NULL)
        return NULL;
    if (pthread_setspecific(cache_key, cache) != 0) {
        free(cache);
        return NULL;
    }
    thread_cache = cache;
    return cache;
}

/* The size class holding `length` bytes, or SECRET_CLASS_COUNT when it is too big to cache. */
static unsigned size_class(size_t length, size_t *capacity)
{
    size_t size = (size_t)1 << SECRET_SMALLEST_CLASS_BITS;
    for (unsigned index = 0; index < SECRET_CLASS_COUNT; index++, size <<= 1) {
        if (length <= size) {
            *capacity = size;
            return index;
        }
    }
    *capacity = length > 0 ? length : 1;
    return SECRET_CLASS_COUNT;
}

kt_secret *kt_secret_new(size_t length)
{
    size_t capacity = 0;
    unsigned index = size_class(length, &capacity);
    secret_cache *cache = index < SECRET_CLASS_COUNT ? current_cache() : NULL;
    secret_block *block = NULL;
    if (cache != NULL && cache->free_blocks[index] != NULL) {
        block = cache->free_blocks[index];
        cache->free_blocks[index] = block->next;
        cache->counts[index]--;
    } else {
        block = calloc(1, sizeof *block);
        if (block == NULL)
            return NULL;
        block->secret.bytes = sodium_malloc(capacity);
        if (block->secret.bytes == NULL) {
            free(block);
            return NULL;
        }
        block->capacity = capacity;
        /* sodium_malloc fills with 0xdb to expose uninitialised use; callers are promised zeros
         * (cached blocks were wiped when they were freed). */
        sodium_memzero(block->secret.bytes, capacity);
    }
    block->next = NULL;
    block->secret.length = length;
    return &block->secret;
}

kt_secret *kt_secret_from(const void *bytes, size_t length)
{
    kt_secret *secret = kt_secret_new(length);
    if (secret != NULL && length > 0)
        memcpy(secret->bytes, bytes, length);
    return secret;
}

void kt_secret_free(kt_secret *secret)
{
    if (secret == NULL)
        return;
    secret_block *block = (secret_block *)secret;
    sodium_memzero(block->secret.bytes, block->capacity);
    size_t capacity = 0;
    unsigned index = size_class(block->capacity, &capacity);
    secret_cache *cache = index < SECRET_CLASS_COUNT && capacity == block->capacity
                              ? current_cache()
                              : NULL;
    if (cache != NULL && cache->counts[index] < SECRET_CACHED_PER_CLASS) {
        block->next = cache->free_blocks[index];
        cache->free_blocks[index] = block;
        cache->counts[index]++;
        return;
    }
    release_block(block);
}

void kt_wipe(void *buffer, size_t length)
{
    if (buffer != NULL)
        sodium_memzero(buffer, length);
}

bool kt_equal(const void *a, const void *b, size_t length)
{
    return sodium_memcmp(a, b, length) == 0;
}

void kt_random(void *buffer, size_t length)
{
    randombytes_buf(buffer, length);
}

void kt_uuid_generate(char out[KT_UUID_CHARS + 1])
{
    unsigned char bytes[16];
    randombytes_buf(bytes, sizeof bytes);
    bytes[6] = (unsigned char)((bytes[6] & 0x0f) | 0x40); /* version 4 */
    bytes[8] = (unsigned char)((bytes[8] & 0x3f) | 0x80); /* RFC 4122 variant */

    static const char digits[] = "0123456789abcdef";
    size_t position = 0;
    for (size_t index = 0; index < sizeof bytes; index++) {
        if (index == 4 || index == 6 || index == 8 || index == 10)
            out[position++] = '-';
        out[position++] = digits[bytes[index] >> 4];
        out[position++] = digits[bytes[index] & 0x0f];
    }
    out[position] = '\0';
}

bool kt_uuid_valid(const char *text)
{
    if (text == NULL)
        return false;
    for (size_t index = 0; index < KT_UUID_CHARS; index++) {
        char character = text[index];
        bool dash_position = index == 8 || index == 13 || index == 18 || index == 23;
        if (dash_position) {
            if (character != '-')
                return false;
        } else if (!((character >= '0' && character <= '9') ||
                     (character >= 'a' && character <= 'f'))) {
            return false; /* also stops at a NUL of a short string */
        }
    }
    return text[KT_UUID_CHARS] == '\0';
}
