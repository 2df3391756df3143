/* test_sbuf.c - common/sbuf: appends of random lengths against a plain array, termination,
 * embedded NUL bytes, reuse after n = 0, and fini. */
#include "../check.h"
#include "common/err.h"
#include "common/sbuf.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

int main(void)
{
    rng_state = check_seed();
    struct sbuf b = {0};
    sbuf_fini(&b); /* an empty buffer may be finished */
    sbuf_fini(NULL);
    CHECK_EQ(sbuf_append(&b, "", 0), 0);
    CHECK(b.s && b.s[0] == 0 && b.n == 0);
    CHECK_EQ(sbuf_append(&b, "a\0b", 3), 0);
    CHECK_EQ(b.n, 3);
    CHECK(memcmp(b.s, "a\0b", 4) == 0);
    sbuf_fini(&b);
    CHECK(!b.s && b.n == 0 && b.cap == 0);

    static char want[1 << 20], piece[5000];
    for (int round = 0; round < 20; round++) {
        size_t n = 0;
        b.n = 0; /* reuse keeps the capacity */
        while (n + sizeof piece < sizeof want) {
            size_t k = rnd() % (rnd() % 8 == 0 ? sizeof piece : 40);
            for (size_t i = 0; i < k; i++) piece[i] = (char)rnd();
            CHECK_EQ(sbuf_append(&b, piece, k), 0);
            memcpy(want + n, piece, k);
            n += k;
            CHECK_EQ(b.n, n);
            CHECK(b.cap > b.n);
            CHECK_EQ(b.s[b.n], 0);
        }
        CHECK(memcmp(b.s, want, n) == 0);
    }
    /* reserve: room for that many more bytes, then appends within it do not move the buffer */
    for (int round = 0; round < 20; round++) {
        size_t extra = rnd() % 100000, used = 0;
        CHECK_EQ(sbuf_reserve(&b, extra), 0);
        CHECK(b.cap >= b.n + extra + 1);
        const char *s0 = b.s;
        while (used < extra) {
            size_t k = rnd() % 300;
            if (k > extra - used) k = extra - used;
            CHECK_EQ(sbuf_append(&b, piece, k), 0);
            used += k;
        }
        CHECK(b.s == s0);
    }
    CHECK_EQ(sbuf_reserve(&b, (size_t)-1), ERR_NOMEM); /* overflow is refused, not wrapped */
    sbuf_fini(&b);
    return 0;
}
