/* test_detok.c - incremental detokenizer: UTF-8 split across tokens, invalid bytes, stop strings
 * across tokens, and a randomized comparison against a simple whole-text oracle.
 *
 * The tokenizer is synthetic (built with tok_create_vocab): id b < 256 is the single byte b,
 * id 256 a special token "<|end|>", ids 257.. a few multi-byte words, so any byte sequence can
 * be fed. The oracle decodes everything fed so far at once (U+FFFD per maximal invalid subpart),
 * and after each token checks for the first stop string to appear; the detokenizer's total
 * output must equal the oracle's text, be valid UTF-8 and never contain a stop string.
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../common/utf8.h"
#include "../../engine/text/detok.h"
#include "../../engine/text/tok.h"

#include <stdint.h>

static uint64_t rs;
static int n_stopped, n_fffd;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}

static const char *words[] = {"Hello",        " world", "\xc3\xa9t\xc3\xa9", "ST", "OP",
                              "\xe4\xb8\xad", "\n\n"};
#define N_WORDS 7

static struct tok *make_tok(void)
{
    static char bufs[256][8];
    const char *tokens[256 + 1 + N_WORDS];
    int32_t types[256 + 1 + N_WORDS];
    /* GPT-2 byte alphabet */
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        if (cp < 0x80) {
            bufs[b][0] = (char)cp;
            bufs[b][1] = 0;
        } else {
            bufs[b][0] = (char)(0xC0 | (cp >> 6));
            bufs[b][1] = (char)(0x80 | (cp & 63));
            bufs[b][2] = 0;
        }
        tokens[b] = bufs[b];
        types[b] = TOK_TYPE_NORMAL;
    }
    tokens[256] = "<|end|>";
    types[256] = TOK_TYPE_CONTROL;
    /* multi-byte words as added (user-defined) tokens: their content is their bytes */
    for (int i = 0; i < N_WORDS; i++) {
        tokens[257 + i] = words[i];
        types[257 + i] = TOK_TYPE_USER_DEFINED;
    }
    struct tok_vocab v = {.model = "gpt2",
                          .pre = "default",
                          .n_tokens = 256 + 1 + N_WORDS,
                          .tokens = tokens,
                          .token_types = types,
                          .bos_id = -1,
                          .eos_id = 256};
    struct tok *t;
    char err[ERR_LEN] = "";
    int rc = tok_create_vocab(&t, &v, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    return t;
}

/* ---- oracle */

static int prefix_of_valid(const unsigned char *s, int k)
{
    static const unsigned char second[] = {0x80, 0x90, 0xA0};
    for (int L = k + 1; L <= 4; L++)
        for (int j = 0; j < 3; j++) {
            unsigned char b[4];
            memcpy(b, s, (size_t)k);
            for (int q = k; q < L; q++) b[q] = q == 1 ? second[j] : 0x80;
            if (utf8_check((const char *)b, (size_t)L, NULL) == 0 && (b[0] & 0xC0) == 0xC0) {
                /* exactly one character of length L */
                int want = b[0] >= 0xF0 ? 4 : b[0] >= 0xE0 ? 3 : 2;
                if (want == L) return 1;
            }
        }
    return 0;
}

/* Decode with replacement; with final = 0 an unfinished valid tail is left out. */
static size_t oracle_decode(const unsigned char *s, size_t n, int final, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        int len = s[i] < 0x80 ? 1 : s[i] >= 0xF0 ? 4 : s[i] >= 0xE0 ? 3 : 2;
        if ((size_t)len <= n - i && utf8_check((const char *)s + i, (size_t)len, NULL) == 0) {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
            continue;
        }
        int k = 1; /* the maximal prefix of a valid sequence (1..3 bytes) */
        if (prefix_of_valid(s + i, 1))
            while (i + (size_t)k < n && k < 4 && prefix_of_valid(s + i, k + 1)) k++;
        if (i + (size_t)k == n && prefix_of_valid(s + i, k) && !final) break; /* unfinished */
        memcpy(out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i += (size_t)k;
    }
    return o;
}

static int run_case(struct tok *t, const int32_t *ids, size_t n, const char *const *stops, int ns,
                    unsigned flags)
{
    struct detok *d;
    char err[ERR_LEN];
    CHECK_EQ(detok_create(&d, t, stops, (size_t)ns, flags, err), 0);
    struct sbuf out = {0};
    unsigned char *bytes = malloc(n * 16 + 16);
    char *full = malloc(n * 48 + 64);
    size_t nb = 0, expect_len = 0;
    int expect_stopped = 0, stopped = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = detok_feed(d, ids[i], &out, err);
        CHECK(rc == 0 || rc == DETOK_STOPPED);
        size_t pl;
        const char *p = tok_piece(t, ids[i], &pl);
        if (!((flags & DETOK_SKIP_SPECIAL) && tok_is_special(t, ids[i]))) {
            memcpy(bytes + nb, p, pl);
            nb += pl;
        }
        if (!expect_stopped) {
            size_t fl = oracle_decode(bytes, nb, 0, full);
            size_t best = (size_t)-1;
            for (int k = 0; k < ns; k++) {
                if (!stops[k][0]) continue;
                const char *m = memmem(full, fl, stops[k], strlen(stops[k]));
                if (m && (size_t)(m - full) < best) best = (size_t)(m - full);
            }
            if (best != (size_t)-1) {
                expect_stopped = 1;
                expect_len = best;
            }
        }
        if (rc == DETOK_STOPPED) {
            stopped = 1;
            break;
        }
        /* nothing emitted may be a prefix of a stop or a partial character: checked below */
        CHECK_EQ(utf8_check(out.s ? out.s : "", out.n, NULL), 0);
    }
    if (!stopped) {
        int rc = detok_finish(d, &out);
        CHECK(rc == 0 || rc == DETOK_STOPPED);
        stopped = rc == DETOK_STOPPED;
    }
    size_t fl = oracle_decode(bytes, nb, 1, full);
    if (!expect_stopped) {
        size_t best = (size_t)-1;
        for (int k = 0; k < ns; k++) {
            if (!stops[k][0]) continue;
            const char *m = memmem(full, fl, stops[k], strlen(stops[k]));
            if (m && (size_t)(m - full) < best) best = (size_t)(m - full);
        }
        if (best != (size_t)-1) {
            expect_stopped = 1;
            expect_len = best;
        }
    }
    if (!expect_stopped) expect_len = fl;
    int ok = out.n == expect_len && memcmp(out.s ? out.s : "", full, expect_len) == 0 &&
             stopped == expect_stopped;
    if (!ok) {
        fprintf(stderr, "mismatch: got %zu bytes (stopped %d), want %zu (stopped %d)\n", out.n,
                stopped, expect_len, expect_stopped);
        fprintf(stderr, "  got : ");
        for (size_t i = 0; i < out.n; i++) fprintf(stderr, "%02x", (unsigned char)out.s[i]);
        fprintf(stderr, "\n  want: ");
        for (size_t i = 0; i < expect_len; i++) fprintf(stderr, "%02x", (unsigned char)full[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
    n_stopped += stopped;
    n_fffd += memmem(full, fl, "\xef\xbf\xbd", 3) != NULL;
    CHECK_EQ(utf8_check(out.s ? out.s : "", out.n, NULL), 0);
    for (int k = 0; k < ns; k++)
        if (stops[k][0]) CHECK(!memmem(out.s ? out.s : "", out.n, stops[k], strlen(stops[k])));
    sbuf_fini(&out);
    free(bytes);
    free(full);
    detok_destroy(d);
    return 0;
}

static void feed_expect(struct tok *t, struct detok *d, int32_t id, const char *want, int want_rc)
{
    struct sbuf out = {0};
    char err[ERR_LEN];
    int rc = detok_feed(d, id, &out, err);
    if (rc != want_rc || out.n != strlen(want))
        fprintf(stderr, "feed %d: rc %d, got %zu bytes \"%.*s\", want \"%s\"\n", id, rc, out.n,
                (int)out.n, out.s ? out.s : "", want);
    CHECK_EQ(rc, want_rc);
    CHECK_EQ(out.n, strlen(want));
    CHECK(out.n == 0 || memcmp(out.s, want, out.n) == 0);
    sbuf_fini(&out);
    (void)t;
}

int main(void)
{
    struct tok *t = make_tok();
    struct detok *d;
    char err[ERR_LEN];
    struct sbuf out = {0};

    /* a 2-byte and a 4-byte character split over tokens */
    CHECK_EQ(detok_create(&d, t, NULL, 0, 0, err), 0);
    feed_expect(t, d, 0xC3, "", 0);
    CHECK_EQ(detok_held(d), 1);
    feed_expect(t, d, 0xA9, "\xc3\xa9", 0);
    feed_expect(t, d, 0xF0, "", 0);
    feed_expect(t, d, 0x9F, "", 0);
    feed_expect(t, d, 0xA6, "", 0);
    feed_expect(t, d, 0x99, "\xf0\x9f\xa6\x99", 0);
    /* invalid bytes: replacement, and a byte after a broken sequence is kept */
    feed_expect(t, d, 0xFF, "\xef\xbf\xbd", 0);
    feed_expect(t, d, 0xC3, "", 0);
    feed_expect(t, d, 'A',
                "\xef\xbf\xbd"
                "A",
                0);
    feed_expect(t, d, 0xE4, "", 0);
    feed_expect(t, d, 0xB8, "", 0);
    CHECK_EQ(detok_finish(d, &out), 0);
    CHECK_EQ(out.n, 3);
    CHECK(memcmp(out.s, "\xef\xbf\xbd", 3) == 0);
    out.n = 0;
    detok_destroy(d);

    /* a stop string across tokens: "ST" + "OP" (ids 260, 261) */
    const char *stops[] = {"STOP", "\n\n"};
    CHECK_EQ(detok_create(&d, t, stops, 2, DETOK_SKIP_SPECIAL, err), 0);
    feed_expect(t, d, 257, "Hello", 0);
    feed_expect(t, d, 260, "", 0); /* "ST" held */
    CHECK_EQ(detok_held(d), 2);
    feed_expect(t, d, 256, "", 0);     /* special, skipped */
    feed_expect(t, d, 'O', "", 0);     /* "STO" held */
    feed_expect(t, d, 'X', "STOX", 0); /* no match: released */
    feed_expect(t, d, 'S', "", 0);
    feed_expect(t, d, 'T', "", 0);
    feed_expect(t, d, 261, "", DETOK_STOPPED); /* "ST" + "OP": stop, nothing emitted */
    CHECK_EQ(detok_stop_index(d), 0);
    feed_expect(t, d, 'Z', "", DETOK_STOPPED);
    CHECK_EQ(detok_finish(d, &out), DETOK_STOPPED);
    CHECK_EQ(out.n, 0);
    detok_destroy(d);

    /* held partial match flushed at the end */
    CHECK_EQ(detok_create(&d, t, stops, 2, 0, err), 0);
    feed_expect(t, d, 'a', "a", 0);
    feed_expect(t, d, 'S', "", 0);
    feed_expect(t, d, '\n', "S", 0); /* "\n" may start "\n\n" */
    CHECK_EQ(detok_finish(d, &out), 0);
    CHECK_EQ(out.n, 1);
    CHECK(memcmp(out.s, "\n", 1) == 0);
    out.n = 0;
    detok_destroy(d);

    /* text before the stop in the same token is emitted */
    const char *stop2[] = {"lo w"};
    CHECK_EQ(detok_create(&d, t, stop2, 1, 0, err), 0);
    feed_expect(t, d, 257, "Hel", 0);
    feed_expect(t, d, 258, "", DETOK_STOPPED);
    detok_destroy(d);

    /* bad arguments */
    const char *bad[] = {"\xff"};
    CHECK_EQ(detok_create(&d, t, bad, 1, 0, err), ERR_INVAL);
    CHECK_EQ(detok_create(&d, t, NULL, 0, 0, err), 0);
    CHECK_EQ(detok_feed(d, -5, &out, err), ERR_INVAL);
    CHECK_EQ(detok_feed(d, 99999, &out, err), 0); /* past the vocabulary: no text */
    CHECK_EQ(out.n, 0);
    detok_destroy(d);

    /* randomized: random ids biased towards UTF-8 lead/continuation bytes and stop pieces */
    rs = check_seed() | 1;
    static const char *alpha[] = {
        "a", "S", "T", "O", "P", "\xc3\xa9", "\xe4\xb8\xad", "\n", "\xf0\x9f\xa6\x99"};
    for (int iter = 0; iter < 3000; iter++) {
        char sbuf[4][32];
        const char *st[4];
        int ns = (int)(rnd() % 5);
        for (int k = 0; k < ns; k++) {
            int len = 1 + (int)(rnd() % 4);
            sbuf[k][0] = 0;
            for (int q = 0; q < len; q++) strcat(sbuf[k], alpha[rnd() % 9]);
            st[k] = sbuf[k];
        }
        size_t n = 1 + rnd() % 60;
        int32_t ids[64];
        for (size_t i = 0; i < n; i++) {
            uint32_t r = rnd() % 100;
            if (r < 30) ids[i] = (int32_t) "aSTOP\n"[rnd() % 6];
            else if (r < 55) ids[i] = (int32_t)(0x80 + rnd() % 0x40); /* continuation */
            else if (r < 70) ids[i] = (int32_t)(0xC0 + rnd() % 0x40); /* lead / invalid */
            else if (r < 80) ids[i] = 256;
            else if (r < 95) ids[i] = 257 + (int32_t)(rnd() % N_WORDS);
            else ids[i] = (int32_t)(rnd() % 256);
        }
        run_case(t, ids, n, st, ns, (rnd() & 1) ? DETOK_SKIP_SPECIAL : 0);
    }
    fprintf(stderr, "3000 random cases: %d ended by a stop string, %d with U+FFFD\n", n_stopped,
            n_fffd);
    sbuf_fini(&out);
    tok_destroy(t);
    return 0;
}
