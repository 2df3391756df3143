/* cache_scope.c - per-request prefix-cache salts (see cache_scope.h). */
#include "cache_scope.h"

#include "auth.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint64_t secret[2];
static pthread_once_t secret_once = PTHREAD_ONCE_INIT;

static void secret_init(void)
{
    if (getrandom(secret, sizeof secret, 0) == (ssize_t)sizeof secret) return;
    /* no entropy source: still unpredictable enough to separate keys within this process */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    secret[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    secret[1] = (uint64_t)(uintptr_t)&ts ^ 0xbf58476d1ce4e5b9ull;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t cache_scope_siphash(const uint64_t k[2], const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
    size_t full = n - n % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int b = 0; b < 8; b++) m |= (uint64_t)p[i + (size_t)b] << (8 * b);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (size_t i = full; i < n; i++) last |= (uint64_t)p[i] << (8 * (i - full));
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* Append a length-prefixed field, so that (key, salt) pairs cannot run into each other. */
static size_t field(unsigned char *buf, size_t at, const char *s, size_t n)
{
    for (int b = 0; b < 4; b++) buf[at++] = (unsigned char)(n >> (8 * b));
    if (n) memcpy(buf + at, s, n);
    return at + n;
}

uint64_t cache_scope_salt(const char *key, size_t key_len, const char *cache_salt,
                          size_t cache_salt_len)
{
    if (key_len > AUTH_MAX_KEY) key_len = AUTH_MAX_KEY;
    if (!key && !cache_salt) return 0;
    if (cache_salt_len > CACHE_SCOPE_MAX_SALT) cache_salt_len = CACHE_SCOPE_MAX_SALT;
    pthread_once(&secret_once, secret_init);
    unsigned char buf[2 + 4 + AUTH_MAX_KEY + 4 + CACHE_SCOPE_MAX_SALT];
    size_t n = 0;
    buf[n++] = key ? 'k' : '-';
    buf[n++] = cache_salt ? 's' : '-';
    n = field(buf, n, key, key_len);
    n = field(buf, n, cache_salt, cache_salt_len);
    uint64_t h = cache_scope_siphash(secret, buf, n);
    memset(buf, 0, sizeof buf); /* the key is not left on the stack */
    return h ? h : 1;
}
