/* test_safetensors.c - writer -> reader round trip and malformed headers: truncation, header
 * length, bad JSON, invalid UTF-8, duplicate keys, bad dtype/shape/offsets, overlap. */
#include "check.h"
#include "common/err.h"
#include "engine/weights/safetensors.h"
#include "kernels/cpu/qtype.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void spit(const char *p, const void *b, size_t n)
{
    FILE *f = fopen(p, "wb");
    CHECK(f);
    CHECK(fwrite(b, 1, n, f) == n);
    fclose(f);
}

static void expect_bytes(const void *b, size_t n, const char *want)
{
    char p[512], err[ERR_LEN] = "";
    snprintf(p, sizeof p, "%s/bad.safetensors", dir);
    spit(p, b, n);
    struct sft_file *f = (struct sft_file *)1;
    if (sft_open(p, &f, err) == 0) {
        fprintf(stderr, "malformed file (%zu bytes) opened; expected '%s'\n", n, want ? want : "");
        exit(1);
    }
    CHECK(f == NULL);
    CHECK_CONTAINS(err, "bad.safetensors");
    if (want) CHECK_CONTAINS(err, want);
}

/* header JSON + `data` bytes of data section */
static void expect_hdr(const char *json, size_t data, const char *want)
{
    size_t hl = strlen(json);
    unsigned char *b = calloc(1, 8 + hl + data);
    uint64_t h = hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, json, hl);
    expect_bytes(b, 8 + hl + data, want);
    free(b);
}

int main(void)
{
    unsigned long long seed = check_seed();
    srand((unsigned)seed);
    snprintf(dir, sizeof dir, "/tmp/tandem-test-sft-%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    char p[512], err[ERR_LEN];
    snprintf(p, sizeof p, "%s/good.safetensors", dir);

    struct sft_writer *w;
    CHECK_EQ(sft_writer_create(p, &w, err), 0);
    CHECK_EQ(sft_writer_meta(w, "format", "pt", err), 0);
    int64_t s1[2] = {3, 5}, s2[1] = {7}, s3[2] = {2, 4};
    CHECK_EQ(sft_writer_add(w, "a.weight", QTYPE_F8_E4M3, 2, s1, err), 0);
    CHECK_EQ(sft_writer_add(w, "a.weight_scale_inv", QTYPE_F32, 1, s2, err), 0);
    CHECK_EQ(sft_writer_add(w, "n.weight", QTYPE_BF16, 2, s3, err), 0);
    CHECK(sft_writer_add(w, "n.weight", QTYPE_BF16, 2, s3, err) != 0);
    CHECK(sft_writer_add(w, "q", QTYPE_Q4_K, 2, s3, err) != 0);
    CHECK_EQ(sft_writer_begin(w, err), 0);
    unsigned char d[15 + 28 + 16];
    for (size_t i = 0; i < sizeof d; i++) d[i] = (unsigned char)rand();
    CHECK_EQ(sft_writer_write(w, d, 20, err), 0);
    CHECK_EQ(sft_writer_write(w, d + 20, sizeof d - 20, err), 0);
    CHECK(sft_writer_write(w, d, 1, err) != 0);
    CHECK_EQ(sft_writer_finish(w, err), 0);
    sft_writer_destroy(w);

    struct sft_file *f;
    if (sft_open(p, &f, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    CHECK_EQ(sft_n_tensors(f), 3);
    CHECK_STR(sft_meta(f, "format"), "pt");
    const struct sft_tensor *t = sft_find(f, "a.weight");
    CHECK(t);
    CHECK_EQ(t->type, QTYPE_F8_E4M3);
    CHECK_EQ(t->ndim, 2);
    CHECK_EQ(t->shape[0], 3);
    CHECK_EQ(t->shape[1], 5);
    CHECK(memcmp(t->data, d, 15) == 0);
    t = sft_find(f, "n.weight");
    CHECK(t && t->type == QTYPE_BF16 && t->nbytes == 16);
    CHECK(memcmp(t->data, d + 43, 16) == 0);
    CHECK(sft_find(f, "zzz") == NULL);
    sft_close(f);

    /* truncation at every byte */
    FILE *fp = fopen(p, "rb");
    unsigned char buf[4096];
    size_t sz = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    for (size_t cut = 0; cut < sz; cut++) expect_bytes(buf, cut, NULL);
    /* header length */
    unsigned char b2[4096];
    memcpy(b2, buf, sz);
    memset(b2, 0xff, 8);
    expect_bytes(b2, sz, "header length");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "JSON");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} trailing", 8,
               "JSON");
    expect_hdr("[1,2,3]", 8, "not an object");
    expect_hdr("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "JSON");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, "JSON");
    expect_hdr("{\"a\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               "unknown dtype");
    expect_hdr("{\"a\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8,
               "not supported");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2,2,2,2],\"data_offsets\":[0,128]}}", 128,
               "rank");
    expect_hdr(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,8]}}", 8,
        "overflow");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 16,
               "bytes of data");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, "beyond");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
               "data_offsets");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               16, "overlap");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets");
    expect_hdr("{\"a\":5}", 8, "not an object");
    expect_hdr("{\"__metadata__\":{\"k\":1}}", 8, "__metadata__");
    /* random flips in the header: never a crash */
    size_t hl;
    {
        uint64_t h;
        memcpy(&h, buf, 8);
        hl = (size_t)h;
    }
    for (int it = 0; it < 800; it++) {
        memcpy(b2, buf, sz);
        for (int j = 0; j < 1 + rand() % 3; j++) b2[8 + rand() % hl] = (unsigned char)rand();
        snprintf(p, sizeof p, "%s/fuzz.safetensors", dir);
        spit(p, b2, sz);
        if (sft_open(p, &f, err) == 0) {
            for (int i = 0; i < sft_n_tensors(f); i++) {
                t = sft_at(f, i);
                volatile unsigned char x = 0;
                if (t->nbytes) x = ((const unsigned char *)t->data)[t->nbytes - 1];
                (void)x;
            }
            sft_close(f);
        }
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("safetensors ok\n");
    return 0;
}
