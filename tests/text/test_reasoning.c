/* test_reasoning.c - the <think> splitter under every chunking: each case is fed whole, split at
 * every byte position (two chunks), every pair of positions (three chunks), byte by byte, and in
 * random chunks; the content/reasoning outputs must always be the same. */
#include "../../engine/text/reasoning.h"
#include "../check.h"

#include <stdint.h>

struct tcase {
    unsigned flags;
    const char *in, *content, *reasoning;
};

static const struct tcase cases[] = {
    {0, "hello", "hello", ""},
    {0, "<think>\nhmm, 2+2\n</think>\n\nIt is 4.", "It is 4.", "hmm, 2+2\n"},
    {REASONING_START_THINKING, "hmm\n</think>\n\nanswer", "answer", "hmm\n"},
    {REASONING_START_THINKING, "\nlong thought cut short", "", "long thought cut short"},
    {0, "a < b and <thin but </think> stays", "a < b and <thin but </think> stays", ""},
    {0, "x<think>y</think>z<think>w</think>v", "xzv", "yw"},
    {REASONING_START_THINKING, "<think> nested </think>after", "after", "<think> nested "},
    {0, "ends with <thi", "ends with <thi", ""},
    {REASONING_START_THINKING, "ends with </thin", "", "ends with </thin"},
    {0, "<<think>>", "<", ">"},
    {0, "<think></think>", "", ""},
    {0, "日本<think>考え</think>答え", "日本答え", "考え"},
    {REASONING_INLINE, "<think>r</think>c", "<think>r</think>c", ""},
    {REASONING_INLINE | REASONING_START_THINKING, "r</think>c", "<think>\nr</think>c", ""},
    {REASONING_INLINE | REASONING_START_THINKING, "", "<think>\n", ""},
};

static void run(const struct tcase *tc, const size_t *cuts, size_t n_cuts)
{
    struct reasoning r;
    struct sbuf c = {0}, t = {0};
    reasoning_init(&r, tc->flags);
    size_t len = strlen(tc->in), at = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        CHECK_EQ(reasoning_feed(&r, tc->in + at, end - at, &c, &t), 0);
        at = end;
    }
    CHECK_EQ(reasoning_finish(&r, &c, &t), 0);
    sbuf_append(&c, "", 0);
    sbuf_append(&t, "", 0);
    if (strcmp(c.s, tc->content) || strcmp(t.s, tc->reasoning)) {
        fprintf(stderr, "input \"%s\" flags %u cuts:", tc->in, tc->flags);
        for (size_t i = 0; i < n_cuts; i++) fprintf(stderr, " %zu", cuts[i]);
        fprintf(stderr, "\n");
    }
    CHECK_STR(c.s, tc->content);
    CHECK_STR(t.s, tc->reasoning);
    reasoning_fini(&r);
    sbuf_fini(&c);
    sbuf_fini(&t);
}

int main(void)
{
    uint64_t seed = check_seed();
    size_t n_runs = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct tcase *tc = &cases[k];
        size_t len = strlen(tc->in);
        run(tc, NULL, 0);
        for (size_t a = 0; a <= len; a++) {
            run(tc, &a, 1);
            for (size_t b = a; b <= len; b++) {
                size_t cuts[2] = {a, b};
                run(tc, cuts, 2);
                n_runs++;
            }
        }
        size_t *all = malloc((len + 1) * sizeof *all);
        for (size_t i = 0; i < len; i++) all[i] = i + 1;
        run(tc, all, len ? len - 1 : 0);
        for (int rep = 0; rep < 50; rep++) {
            size_t n = 0, at = 0;
            while (at < len) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                at += 1 + (seed >> 33) % 5;
                if (at < len) all[n++] = at;
            }
            run(tc, all, n);
        }
        free(all);
    }
    const char *p1 = "<｜User｜>hi<｜Assistant｜><think>\n";
    const char *p2 = "<｜User｜>hi<｜Assistant｜><think>x</think>y<｜User｜>again<｜Assistant｜>";
    CHECK_EQ(reasoning_prompt_open(p1, strlen(p1)), 1);
    CHECK_EQ(reasoning_prompt_open(p2, strlen(p2)), 0);
    CHECK_EQ(reasoning_prompt_open("", 0), 0);
    CHECK_EQ(reasoning_prompt_open("<think>", 6), 0); /* length is authoritative */
    fprintf(stderr, "%zu chunkings ok\n", n_runs);
    return 0;
}
