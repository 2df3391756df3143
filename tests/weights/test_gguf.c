/* test_gguf.c - GGUF writer -> reader round trip, and malformed files: truncated at every header
 * byte, wrong magic, unsupported version, huge counts, bad/unaligned/overlapping offsets, unknown
 * types, nested arrays, duplicate names. Every malformed file must give an error, never a crash. */
#include "check.h"
#include "common/err.h"
#include "engine/weights/gguf.h"
#include "kernels/cpu/qtype.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void path_of(char *buf, const char *name) { snprintf(buf, 512, "%s/%s", dir, name); }

static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    CHECK(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    CHECK(fread(b, 1, *n, f) == *n);
    fclose(f);
    return b;
}

static void spit(const char *p, const void *b, size_t n)
{
    FILE *f = fopen(p, "wb");
    CHECK(f);
    CHECK(fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* open must fail with a non-empty message containing `want` (if given) */
static void expect_fail(const unsigned char *b, size_t n, const char *want)
{
    char p[512], err[ERR_LEN] = "";
    path_of(p, "bad.gguf");
    spit(p, b, n);
    struct gguf_ctx *g = (struct gguf_ctx *)1;
    int rc = gguf_open(p, &g, err);
    if (rc == 0) {
        fprintf(stderr, "malformed file (%zu bytes) opened fine; expected '%s'\n", n,
                want ? want : "");
        exit(1);
    }
    CHECK(g == NULL);
    CHECK(strlen(err) > 0);
    CHECK_CONTAINS(err, "bad.gguf");
    if (want) CHECK_CONTAINS(err, want);
}

static size_t find(const unsigned char *b, size_t n, const char *s)
{
    size_t l = strlen(s);
    for (size_t i = 0; i + l <= n; i++)
        if (memcmp(b + i, s, l) == 0) return i;
    CHECK(!"pattern not found");
    return 0;
}

int main(void)
{
    unsigned long long seed = check_seed();
    srand((unsigned)seed);
    snprintf(dir, sizeof dir, "/tmp/tandem-test-gguf-%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    char p[512], err[ERR_LEN];
    path_of(p, "good.gguf");

    /* ---- write */
    struct gguf_writer *w;
    CHECK_EQ(gguf_writer_create(p, &w, err), 0);
    CHECK_EQ(gguf_writer_set_str(w, "general.architecture", "deepseek2"), 0);
    CHECK_EQ(gguf_writer_set_u32(w, "deepseek2.block_count", 3), 0);
    CHECK_EQ(gguf_writer_set_f32(w, "deepseek2.rope.freq_base", 10000.0f), 0);
    CHECK_EQ(gguf_writer_set_bool(w, "deepseek2.expert_weights_norm", 1), 0);
    CHECK_EQ(gguf_writer_set_u64(w, "big", 1ull << 40), 0);
    CHECK_EQ(gguf_writer_set_i32(w, "neg", -5), 0);
    int32_t arr[3] = {7, -8, 9};
    CHECK_EQ(gguf_writer_set_arr(w, "ints", GGUF_TYPE_INT32, arr, 3), 0);
    const char *toks[3] = {"a", "<｜User｜>", ""};
    CHECK_EQ(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), 0);
    CHECK(gguf_writer_set_u32(w, "neg", 1) != 0); /* duplicate key */
    CHECK_EQ(gguf_writer_set_alignment(w, 64), 0);
    int64_t ne_a[2] = {64, 3}, ne_b[3] = {32, 2, 2};
    CHECK_EQ(gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", QTYPE_F32, 2, ne_a, err), 0);
    CHECK_EQ(gguf_writer_add_tensor(w, "blk.1.ffn_up_exps.weight", QTYPE_Q8_0, 3, ne_b, err), 0);
    CHECK(gguf_writer_add_tensor(w, "bad", QTYPE_Q4_K, 1, ne_a, err) != 0); /* 64 % 256 */
    CHECK_EQ(gguf_writer_begin(w, err), 0);
    float a[192];
    for (int i = 0; i < 192; i++) a[i] = (float)rand() / RAND_MAX;
    CHECK_EQ(gguf_writer_write(w, a, 100, err), 0); /* chunked */
    CHECK_EQ(gguf_writer_write(w, (char *)a + 100, sizeof a - 100, err), 0);
    unsigned char q[4 * 34];
    for (size_t i = 0; i < sizeof q; i++) q[i] = (unsigned char)rand();
    CHECK_EQ(gguf_writer_write(w, q, sizeof q, err), 0);
    CHECK(gguf_writer_write(w, q, 1, err) != 0); /* too much */
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    gguf_writer_destroy(w);

    /* ---- read back */
    struct gguf_ctx *g;
    if (gguf_open(p, &g, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    CHECK_EQ(gguf_version(g), 3);
    CHECK_EQ(gguf_alignment(g), 64);
    CHECK_EQ(gguf_n_kv(g), 9);
    const char *s;
    CHECK_EQ(gguf_find_str(g, "general.architecture", &s, err), 0);
    CHECK_STR(s, "deepseek2");
    int64_t v;
    CHECK_EQ(gguf_find_i64(g, "deepseek2.block_count", &v, err), 0);
    CHECK_EQ(v, 3);
    CHECK_EQ(gguf_find_i64(g, "big", &v, err), 0);
    CHECK_EQ(v, 1ll << 40);
    uint32_t u32;
    CHECK(gguf_get_u32(g, gguf_find_key(g, "big"), &u32, err) != 0); /* out of range */
    CHECK_CONTAINS(err, "big");
    CHECK(gguf_get_u32(g, gguf_find_key(g, "neg"), &u32, err) != 0);
    int32_t i32;
    CHECK_EQ(gguf_get_i32(g, gguf_find_key(g, "neg"), &i32, err), 0);
    CHECK_EQ(i32, -5);
    float f;
    CHECK_EQ(gguf_get_f32(g, gguf_find_key(g, "deepseek2.rope.freq_base"), &f, err), 0);
    CHECK_NEAR(f, 10000, 0);
    int bo;
    CHECK_EQ(gguf_get_bool(g, gguf_find_key(g, "deepseek2.expert_weights_norm"), &bo, err), 0);
    CHECK_EQ(bo, 1);
    CHECK(gguf_get_str(g, gguf_find_key(g, "neg"), &s, err) != 0);
    CHECK_EQ(gguf_find_i64(g, "absent", &v, err), ERR_NOT_FOUND);
    int et;
    uint64_t n;
    int64_t ki = gguf_find_key(g, "ints");
    CHECK_EQ(gguf_get_arr(g, ki, &et, &n, err), 0);
    CHECK_EQ(et, GGUF_TYPE_INT32);
    CHECK_EQ(n, 3);
    CHECK_EQ(gguf_arr_i64(g, ki, 1, &v, err), 0);
    CHECK_EQ(v, -8);
    CHECK(gguf_arr_i64(g, ki, 3, &v, err) != 0);
    ki = gguf_find_key(g, "tokenizer.ggml.tokens");
    size_t len;
    CHECK_EQ(gguf_arr_str(g, ki, 1, &s, &len, err), 0);
    CHECK(len == strlen("<｜User｜>") && memcmp(s, "<｜User｜>", len) == 0);
    CHECK_EQ(gguf_arr_str(g, ki, 2, &s, &len, err), 0);
    CHECK_EQ(len, 0);
    CHECK_EQ(gguf_n_tensors(g), 2);
    struct gguf_tensor_info ti;
    CHECK_EQ(gguf_tensor_info(g, gguf_find_tensor(g, "blk.0.attn_norm.weight"), &ti), 0);
    CHECK_EQ(ti.type, QTYPE_F32);
    CHECK_EQ(ti.ne[0], 64);
    CHECK_EQ(ti.ne[1], 3);
    CHECK_EQ(ti.nbytes, sizeof a);
    CHECK(memcmp(ti.data, a, sizeof a) == 0);
    CHECK_EQ(gguf_tensor_info(g, gguf_find_tensor(g, "blk.1.ffn_up_exps.weight"), &ti), 0);
    CHECK_EQ(ti.offset % 64, 0);
    CHECK_EQ(ti.nbytes, sizeof q);
    CHECK(memcmp(ti.data, q, sizeof q) == 0);
    CHECK_EQ(gguf_find_tensor(g, "nope"), -1);
    size_t used = gguf_data_offset(g) + ti.offset + ti.nbytes; /* trailing padding is optional */
    gguf_close(g);

    /* ---- malformed */
    size_t sz;
    unsigned char *good = slurp(p, &sz);
    unsigned char *b = malloc(sz + 64);
    size_t data_start = find(good, sz, "blk.1.ffn_up_exps.weight") + 24 + 4 + 24 + 4 + 8;
    /* truncated at every point of the header and at several points of the data */
    for (size_t cut = 0; cut < used; cut += (cut < data_start + 8 ? 1 : 37))
        expect_fail(good, cut, NULL);
    memcpy(b, good, sz);
    b[0] = 'X';
    expect_fail(b, sz, "magic");
    memcpy(b, good, sz);
    b[4] = 1;
    expect_fail(b, sz, "version");
    memcpy(b, good, sz);
    b[4] = 0;
    b[7] = 3; /* big-endian looking version */
    expect_fail(b, sz, "version");
    memcpy(b, good, sz);
    memset(b + 8, 0xff, 8); /* tensor count */
    expect_fail(b, sz, "tensor count");
    memcpy(b, good, sz);
    memset(b + 16, 0x7f, 8); /* kv count */
    expect_fail(b, sz, "metadata count");
    /* huge string length of the first key */
    memcpy(b, good, sz);
    memset(b + 24, 0xee, 8);
    expect_fail(b, sz, "string length");
    /* huge array count */
    memcpy(b, good, sz);
    size_t ai = find(b, sz, "ints") + 4 + 4 + 4; /* key, type, elem type -> count */
    memset(b + ai, 0x7f, 8);
    expect_fail(b, sz, "ints");
    /* unknown value type */
    memcpy(b, good, sz);
    size_t ki2 = find(b, sz, "neg") + 3;
    b[ki2] = 99;
    expect_fail(b, sz, "neg");
    /* tensor fields of the second tensor */
    size_t t1 = find(good, sz, "blk.1.ffn_up_exps.weight") + 24;
    memcpy(b, good, sz);
    b[t1] = 9; /* n_dims */
    expect_fail(b, sz, "n_dims");
    memcpy(b, good, sz);
    b[t1 + 4 + 24] = 77; /* unknown ggml type */
    expect_fail(b, sz, "blk.1.ffn_up_exps.weight");
    memcpy(b, good, sz);
    b[t1 + 4] = 33; /* ne[0] not a multiple of q8_0's 32 */
    expect_fail(b, sz, "multiple");
    memcpy(b, good, sz);
    memset(b + t1 + 4 + 8, 0xff, 8); /* ne[1] huge -> overflow */
    expect_fail(b, sz, "blk.1.ffn_up_exps.weight");
    memcpy(b, good, sz);
    b[t1 + 4 + 24 + 4] += 1; /* unaligned offset */
    expect_fail(b, sz, "aligned");
    memcpy(b, good, sz);
    b[t1 + 4 + 24 + 4 + 5] = 1; /* offset way out */
    expect_fail(b, sz, "beyond");
    memcpy(b, good, sz);
    memset(b + t1 + 4 + 24 + 4, 0, 8); /* offset 0: overlaps tensor 0 */
    expect_fail(b, sz, "overlap");
    /* duplicate key */
    memcpy(b, good, sz);
    memcpy(b + find(b, sz, "big"), "neg", 3);
    expect_fail(b, sz, "duplicate");
    /* invalid UTF-8 in a tensor name */
    memcpy(b, good, sz);
    b[t1 - 3] = 0xff;
    expect_fail(b, sz, "UTF-8");
    /* random byte flips in the header: must never crash (error or success both fine) */
    for (int it = 0; it < 800; it++) {
        memcpy(b, good, sz);
        int k = 1 + rand() % 4;
        for (int j = 0; j < k; j++) b[rand() % data_start] = (unsigned char)rand();
        path_of(p, "fuzz.gguf");
        spit(p, b, sz);
        if (gguf_open(p, &g, err) == 0) {
            for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
                gguf_tensor_info(g, i, &ti);
                volatile unsigned char x = 0;
                if (ti.nbytes) x = ((const unsigned char *)ti.data)[ti.nbytes - 1];
                (void)x;
            }
            gguf_close(g);
        }
    }
    free(b);
    free(good);

    /* files written by llama.cpp/ggml (in ../shared/testdata, when present) */
    const char *sh = getenv("TANDEM_SHARED");
    char rp[1024];
    snprintf(rp, sizeof rp, "%s/testdata/ggml-quants/ggml-quants-512x64.gguf",
             sh ? sh : "/nonexistent");
    if (sh && access(rp, R_OK) == 0) {
        CHECK_EQ(gguf_open(rp, &g, err), 0);
        int64_t i = gguf_find_tensor(g, "w.q4_K");
        CHECK(i >= 0);
        CHECK_EQ(gguf_tensor_info(g, i, &ti), 0);
        CHECK_EQ(ti.type, QTYPE_Q4_K);
        CHECK_EQ(ti.ne[0], 512);
        CHECK_EQ(ti.ne[1], 64);
        CHECK_EQ(ti.nbytes, 64 * 2 * 144);
        gguf_close(g);
        snprintf(rp, sizeof rp, "%s/testdata/llama-vocab/ggml-vocab-deepseek-llm.gguf", sh);
        CHECK_EQ(gguf_open(rp, &g, err), 0);
        ki = gguf_find_key(g, "tokenizer.ggml.tokens");
        CHECK_EQ(gguf_get_arr(g, ki, &et, &n, err), 0);
        CHECK_EQ(n, 102400);
        CHECK_EQ(gguf_arr_str(g, ki, 100000, &s, &len, err), 0);
        CHECK(len > 0);
        CHECK_EQ(gguf_find_i64(g, "tokenizer.ggml.bos_token_id", &v, err), 0);
        CHECK_EQ(v, 100000);
        gguf_close(g);
    } else {
        fprintf(stderr, "(no ../shared testdata: llama.cpp-written files not checked)\n");
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("gguf ok\n");
    return 0;
}
