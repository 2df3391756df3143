/* test_utf8.c - common/utf8: every function against a small independent reference decoder.
 *
 * The reference decodes by the textbook rule (lead byte -> length, accumulate 6 bits per
 * continuation byte, then reject overlongs, surrogates and values above U+10FFFF), unlike
 * utf8.h's byte-range tests. Checked: known valid and invalid sequences, every string of 1 to 3
 * bytes, round trips of random code points, and random byte strings (fresh each run: see
 * check_seed) through decode, step, the DFA, check and the lossy copy.
 */
#include "../check.h"
#include "common/err.h"
#include "common/sbuf.h"
#include "common/utf8.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* ---- the reference */

/* Sequence length announced by a lead byte (0: not a lead byte). */
static int ref_len(uint8_t b)
{
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0) return 4;
    return 0;
}

/* Length of the valid character at s[0..n) with *cp, or 0. */
static int ref_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    int len = ref_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t v = s[0] & lead_mask[len];
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min_cp[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Is s[0..k) the beginning of some valid character? Past the second byte only continuation
 * bytes are constrained, and each lead byte's second-byte range contains 0x80 or 0xBF, so
 * completing with all 0x80 or all 0xBF is a complete test. */
static int ref_prefix(const uint8_t *s, size_t k)
{
    int len = ref_len(s[0]);
    if (len == 0 || k > (size_t)len) return 0;
    uint8_t b[4];
    uint32_t cp;
    for (int fill = 0; fill < 2; fill++) {
        for (int i = 0; i < len; i++) b[i] = (size_t)i < k ? s[i] : fill ? 0xBF : 0x80;
        if (ref_decode(b, (size_t)len, &cp) == len) return 1;
    }
    return 0;
}

/* utf8_step's contract, from the reference. */
static int ref_step(const uint8_t *s, size_t n)
{
    uint32_t cp;
    int len = ref_decode(s, n, &cp);
    if (len) return len;
    size_t k = 0;
    while (k < n && k < 4 && ref_prefix(s, k + 1)) k++;
    int full = ref_len(s[0]);
    if (k == n && full > 0 && k < (size_t)full) return 0; /* unfinished */
    return -(int)(k > 0 ? k : 1);
}

/* Validity of a whole buffer, with the offset of the first bad sequence. */
static int ref_check(const uint8_t *s, size_t n, size_t *bad)
{
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        int l = ref_decode(s + i, n - i, &cp);
        if (!l) {
            *bad = i;
            return 0;
        }
        i += (size_t)l;
    }
    return 1;
}

/* ---- one string through everything */

static void check_string(const uint8_t *s, size_t n)
{
    const char *c = (const char *)s;
    size_t bad = 0, rbad = 0;
    int ok = ref_check(s, n, &rbad);
    CHECK_EQ(utf8_check(c, n, &bad), ok ? 0 : ERR_UTF8);
    CHECK_EQ(utf8_check(c, n, NULL), ok ? 0 : ERR_UTF8);
    if (!ok) CHECK_EQ(bad, rbad);

    /* the DFA accepts exactly the valid strings and ends on a boundary */
    int st = 0;
    for (size_t i = 0; i < n && st >= 0; i++) st = utf8_dfa_next(st, s[i]);
    CHECK_EQ(st == 0, ok);

    for (size_t i = 0; i < n; i++) {
        uint32_t cp = 0xFFFFFFFF, rcp = 0xEEEEEEEE;
        int rl = ref_decode(s + i, n - i, &rcp);
        CHECK_EQ(utf8_decode(c + i, n - i, &cp), rl);
        if (rl) CHECK_EQ(cp, rcp);
        CHECK_EQ(utf8_step(c + i, n - i), ref_step(s + i, n - i));
    }

    /* lossy copy: valid strings unchanged; otherwise each bad byte becomes U+FFFD */
    struct sbuf out = {0}, want = {0};
    CHECK_EQ(utf8_append_lossy(&out, c, n), 0);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = ref_decode(s + i, n - i, &cp);
        if (l) {
            CHECK_EQ(sbuf_append(&want, c + i, (size_t)l), 0);
            i += (size_t)l;
        } else {
            CHECK_EQ(sbuf_append(&want, UTF8_REPLACEMENT, 3), 0);
            i++;
        }
    }
    CHECK_EQ(out.n, want.n);
    CHECK(out.n == 0 || memcmp(out.s, want.s, out.n) == 0);
    CHECK_EQ(utf8_check(out.s ? out.s : "", out.n, NULL), 0);
    sbuf_fini(&out);
    sbuf_fini(&want);
}

static void check_known(const char *s, int valid)
{
    size_t n = strlen(s), bad = 99;
    CHECK_EQ(utf8_check(s, n, &bad), valid ? 0 : ERR_UTF8);
    if (!valid) CHECK_EQ(bad, 0);
    uint32_t cp;
    CHECK_EQ(utf8_decode(s, n, &cp), valid ? (long long)n : 0);
    check_string((const uint8_t *)s, n);
}

int main(void)
{
    rng_state = check_seed();

    /* boundaries of each length and of the excluded ranges */
    const char *valid[] = {"\x7F",         "\xC2\x80",         "\xDF\xBF",
                           "\xE0\xA0\x80", "\xED\x9F\xBF",     "\xEE\x80\x80",
                           "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",
                           "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    const char *invalid[] = {
        "\xC0\x80",
        "\xC1\xBF",
        "\xE0\x80\x80",
        "\xE0\x9F\xBF",
        "\xF0\x80\x80\x80",
        "\xF0\x8F\xBF\xBF", /* overlong */
        "\xED\xA0\x80",
        "\xED\xBF\xBF",
        "\xED\xB0\x80", /* surrogates */
        "\xF4\x90\x80\x80",
        "\xF5\x80\x80\x80",
        "\xF7\xBF\xBF\xBF",
        "\xF8\x88\x80\x80\x80",
        "\xFF", /* above U+10FFFF / never a lead */
        "\xC2",
        "\xE2\x82",
        "\xF0\x9F\x98", /* truncated */
        "\x80",
        "\xBF",
        "\xC2\x41",
        "\xE2\x28\xA1", /* stray / missing continuation */
    };
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) check_known(valid[i], 1);
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) check_known(invalid[i], 0);

    /* step: unfinished prefixes wait, invalid ones give their maximal subpart */
    CHECK_EQ(utf8_step("\xE2\x82", 2), 0);
    CHECK_EQ(utf8_step("\xF0\x9F\x98", 3), 0);
    CHECK_EQ(utf8_step("\xE2\x82"
                       "A",
                       3),
             -2);
    CHECK_EQ(utf8_step("\xED\xA0\x80", 3), -1);
    CHECK_EQ(utf8_step("\xF0\x9F\x98"
                       "A",
                       4),
             -3);
    CHECK_EQ(utf8_step("\xC0\x80", 2), -1);

    /* every string of 1..3 bytes */
    uint8_t b[8];
    for (uint32_t v = 0; v < 256; v++) {
        b[0] = (uint8_t)v;
        check_string(b, 1);
    }
    for (uint32_t v = 0; v < 65536; v++) {
        b[0] = (uint8_t)(v >> 8), b[1] = (uint8_t)v;
        check_string(b, 2);
    }
    for (uint32_t v = 0; v < (1u << 24); v++) {
        b[0] = (uint8_t)(v >> 16), b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)v;
        uint32_t cp, rcp = 0;
        int rl = ref_decode(b, 3, &rcp);
        CHECK_EQ(utf8_decode((const char *)b, 3, &cp), rl);
        if (rl) CHECK_EQ(cp, rcp);
        CHECK_EQ(utf8_step((const char *)b, 3), ref_step(b, 3));
    }

    /* random code points: encode, then decode, step and check agree with the reference */
    for (int i = 0; i < 1000000; i++) {
        uint32_t cp;
        switch (rnd() % 4) { /* every length about equally often */
        case 0: cp = rnd() % 0x80; break;
        case 1: cp = 0x80 + rnd() % (0x800 - 0x80); break;
        case 2: cp = 0x800 + rnd() % (0x10000 - 0x800); break;
        default: cp = 0x10000 + rnd() % (0x110000 - 0x10000); break;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char e[4];
        int len = utf8_encode(cp, e);
        CHECK_EQ(len, cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4);
        uint32_t back = 0, rback = 0;
        CHECK_EQ(ref_decode((const uint8_t *)e, (size_t)len, &rback), len);
        CHECK_EQ(rback, cp);
        CHECK_EQ(utf8_decode(e, (size_t)len, &back), len);
        CHECK_EQ(back, cp);
        CHECK_EQ(utf8_step(e, (size_t)len), len);
        CHECK_EQ(utf8_check(e, (size_t)len, NULL), 0);
        for (int k = 1; k < len; k++) { /* every proper prefix is unfinished, not valid */
            CHECK_EQ(utf8_step(e, (size_t)k), 0);
            CHECK_EQ(utf8_decode(e, (size_t)k, &back), 0);
            CHECK_EQ(utf8_check(e, (size_t)k, NULL), ERR_UTF8);
        }
    }

    /* random byte strings: mostly valid text with damage, and raw noise */
    uint8_t s[64];
    for (int iter = 0; iter < 200000; iter++) {
        size_t n = 0, want = 1 + rnd() % sizeof s;
        int noise = rnd() % 4 == 0;
        while (n < want) {
            if (noise) {
                uint32_t r = rnd(); /* favour the bytes near the interesting ranges */
                s[n++] = (uint8_t)(r % 3 == 0 ? 0x80 + (r >> 8) % 0x80 : r >> 8);
                continue;
            }
            uint32_t cp = rnd() % 5 == 0 ? rnd() % 0x80 : rnd() % 0x110000;
            char e[4];
            int len = utf8_encode(cp, e);
            if (n + (size_t)len > sizeof s) break;
            memcpy(s + n, e, (size_t)len);
            n += (size_t)len;
        }
        if (n == 0) continue;
        if (!noise && rnd() % 2) { /* damage: flip, cut or insert a byte */
            size_t at = rnd() % n;
            switch (rnd() % 3) {
            case 0: s[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: n = at > 0 ? at : n; break;
            default: s[at] = (uint8_t)(0x80 + rnd() % 0x80); break;
            }
        }
        check_string(s, n);
    }

    /* the ASCII fast path in utf8_check: a bad byte at every offset of a long buffer */
    char big[300];
    for (size_t at = 0; at < sizeof big; at++) {
        memset(big, 'a', sizeof big);
        big[at] = (char)0xFF;
        size_t bad = 0;
        CHECK_EQ(utf8_check(big, sizeof big, &bad), ERR_UTF8);
        CHECK_EQ(bad, at);
    }
    memset(big, 'a', sizeof big);
    CHECK_EQ(utf8_check(big, sizeof big, NULL), 0);
    CHECK_EQ(utf8_check("", 0, NULL), 0);
    return 0;
}
