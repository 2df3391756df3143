/* fuzz_headers.c - libFuzzer target for the GGUF and safetensors readers (suite `fuzz`; built
 * only when the compiler supports -fsanitize=fuzzer, i.e. a clang build:
 *   CC=clang meson setup build-fuzz && meson test -C build-fuzz --suite fuzz).
 *
 * Input byte 0 picks the mode: bit 0 = GGUF or safetensors; bit 1 = raw (the rest of the input is
 * the file) or patch (the rest is a list of (u16 offset, u8 value) patches applied to a small
 * valid file built at start-up with the writers, so mutations land inside a real header).
 * The file is handed to the reader through a memfd. Success or error are both fine; a crash,
 * a sanitizer report or a leak is a failure. Every tensor byte of a file that opens is read. */
#include "common/err.h"
#include "engine/weights/gguf.h"
#include "engine/weights/safetensors.h"
#include "kernels/cpu/qtype.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char *good[2];
static size_t good_n[2];

static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) abort();
    fclose(f);
    return b;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char p[64], err[ERR_LEN];
    snprintf(p, sizeof p, "/tmp/tandem-fuzz-%d.gguf", (int)getpid());
    struct gguf_writer *w;
    int64_t ne[2] = {32, 2};
    const char *toks[2] = {"a", "bc"};
    int32_t ints[2] = {1, 2};
    if (gguf_writer_create(p, &w, err) ||
        gguf_writer_set_str(w, "general.architecture", "deepseek2") ||
        gguf_writer_set_u32(w, "deepseek2.block_count", 1) ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 2) ||
        gguf_writer_set_arr(w, "x", GGUF_TYPE_INT32, ints, 2) ||
        gguf_writer_add_tensor(w, "t0", QTYPE_Q8_0, 2, ne, err) ||
        gguf_writer_add_tensor(w, "t1", QTYPE_F32, 1, ne, err) || gguf_writer_begin(w, err))
        abort();
    static unsigned char z[2 * 34 + 128];
    if (gguf_writer_write(w, z, 2 * 34 + 128, err) || gguf_writer_finish(w, err)) abort();
    gguf_writer_destroy(w);
    good[0] = slurp(p, &good_n[0]);
    unlink(p);
    snprintf(p, sizeof p, "/tmp/tandem-fuzz-%d.safetensors", (int)getpid());
    struct sft_writer *s;
    int64_t sh[2] = {2, 3};
    if (sft_writer_create(p, &s, err) || sft_writer_meta(s, "k", "v", err) ||
        sft_writer_add(s, "a", QTYPE_BF16, 2, sh, err) ||
        sft_writer_add(s, "b", QTYPE_F32, 1, sh, err) || sft_writer_begin(s, err) ||
        sft_writer_write(s, z, 12 + 8, err) || sft_writer_finish(s, err))
        abort();
    sft_writer_destroy(s);
    good[1] = slurp(p, &good_n[1]);
    unlink(p);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int sft = data[0] & 1, raw = data[0] & 2;
    unsigned char *buf;
    size_t n;
    if (raw) {
        n = size - 1;
        buf = malloc(n + 1);
        memcpy(buf, data + 1, n);
    } else {
        n = good_n[sft];
        buf = malloc(n);
        memcpy(buf, good[sft], n);
        for (size_t i = 1; i + 3 <= size; i += 3) {
            size_t off = ((size_t)data[i] | (size_t)data[i + 1] << 8) % n;
            buf[off] = data[i + 2];
        }
    }
    int fd = memfd_create("fuzz", 0);
    if (fd < 0 || (n && write(fd, buf, n) != (ssize_t)n)) abort();
    char p[64], err[ERR_LEN];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    volatile unsigned sum = 0;
    if (sft) {
        struct sft_file *f;
        if (sft_open(p, &f, err) == 0) {
            for (int i = 0; i < sft_n_tensors(f); i++) {
                const struct sft_tensor *t = sft_at(f, i);
                for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
            }
            sft_close(f);
        }
    } else {
        struct gguf_ctx *g;
        if (gguf_open(p, &g, err) == 0) {
            for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
                struct gguf_tensor_info ti;
                gguf_tensor_info(g, i, &ti);
                for (size_t k = 0; k < ti.nbytes; k++) sum += ((const uint8_t *)ti.data)[k];
            }
            for (int64_t i = 0; i < gguf_n_kv(g); i++) {
                int et;
                uint64_t cnt;
                if (gguf_get_arr(g, i, &et, &cnt, NULL) == 0)
                    for (uint64_t j = 0; j < cnt && j < 64; j++) {
                        const char *s;
                        size_t l;
                        int64_t v;
                        if (gguf_arr_str(g, i, j, &s, &l, NULL) == 0 && l)
                            sum += (unsigned char)s[l - 1];
                        if (gguf_arr_i64(g, i, j, &v, NULL) == 0) sum += (unsigned)v;
                    }
            }
            gguf_close(g);
        }
    }
    close(fd);
    free(buf);
    return 0;
}
