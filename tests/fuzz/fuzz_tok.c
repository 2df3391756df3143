/* fuzz_tok.c - libFuzzer target: tokenizer encode and decode.
 *
 * Byte 0 picks the mode. Encode (bit 0 clear): the rest is text, encoded with the flags of bits
 * 1-2 (TOK_ENC_SPECIAL, TOK_ENC_BOS). Properties: invalid UTF-8 is rejected with ERR_UTF8 and
 * leaves the output unchanged; valid text encodes, every id is in the vocabulary, and without
 * TOK_ENC_SPECIAL/BOS decoding gives back exactly the input bytes (byte-level BPE is lossless).
 * Plain-text marking (bits 0 clear, 3 set): valid text x marked with tok_mark_plain (bit 4:
 * keep_think) and encoded with TOK_ENC_SPECIAL | TOK_ENC_MARKED gives exactly the ids of x
 * encoded without special matching (keep_think: unless x holds "<think>"/"</think>"); invalid
 * text is rejected by the encoder as before.
 * Decode (bit 0 set): the rest is a list of little-endian u16 ids (reduced modulo vocab + 8, so
 * a few are out of range); decoding must succeed or fail with ERR_INVAL and leave the output
 * unchanged; tok_piece must agree with tok_decode on one id.
 */
#include "fuzz_common.h"
#include "common/utf8.h"

#include <stdint.h>
#include <string.h>

static struct tok *tk;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tk = fuzz_load_tokenizer();
    return 0;
}

static void fuzz_encode(const char *text, size_t n, unsigned flags)
{
    struct tok_ids ids = {0};
    char err[ERR_LEN] = "";
    int bad = utf8_check(text, n, NULL) != 0;
    int rc = tok_encode(tk, text, n, flags, &ids, err);
    if (bad) {
        if (rc != ERR_UTF8 || ids.n != 0) abort();
        tok_ids_fini(&ids);
        return;
    }
    if (rc != 0) abort();
    int vocab = tok_vocab_size(tk);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.v[i] < 0 || ids.v[i] >= vocab) abort();
    if (flags == 0) {
        struct sbuf back = {0};
        if (tok_decode(tk, ids.v, ids.n, 0, &back, err) != 0) abort();
        if (back.n != n || (n && memcmp(back.s, text, n) != 0)) abort();
        sbuf_fini(&back);
    }
    tok_ids_fini(&ids);
}

static void fuzz_mark(const char *text, size_t n, int keep_think)
{
    if (utf8_check(text, n, NULL) != 0) return;
    if (keep_think && (memmem(text, n, "<think>", 7) || memmem(text, n, "</think>", 8))) return;
    struct sbuf m = {0};
    struct tok_ids a = {0}, b = {0};
    char err[ERR_LEN] = "";
    if (tok_mark_plain(tk, text, n, keep_think, &m) != 0) abort();
    if (tok_encode(tk, m.s ? m.s : "", m.n, TOK_ENC_SPECIAL | TOK_ENC_MARKED, &a, err) != 0 ||
        tok_encode(tk, text, n, 0, &b, err) != 0)
        abort();
    if (a.n != b.n || (a.n && memcmp(a.v, b.v, a.n * sizeof *a.v) != 0)) abort();
    sbuf_fini(&m);
    tok_ids_fini(&a);
    tok_ids_fini(&b);
}

static void fuzz_decode(const uint8_t *p, size_t n, unsigned flags)
{
    int vocab = tok_vocab_size(tk);
    size_t k = n / 2;
    int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
    if (!ids) return;
    int any_bad = 0;
    for (size_t i = 0; i < k; i++) {
        ids[i] = (int32_t)((p[2 * i] | p[2 * i + 1] << 8) % (vocab + 8));
        if (ids[i] >= vocab) any_bad = 1;
    }
    struct sbuf out = {0};
    char err[ERR_LEN] = "";
    if (sbuf_append(&out, "x", 1) != 0) abort();
    int rc = tok_decode(tk, ids, k, flags, &out, err);
    if (any_bad ? (rc != ERR_INVAL || out.n != 1) : rc != 0) abort();
    if (k && ids[0] < vocab) {
        size_t len;
        const char *piece = tok_piece(tk, ids[0], &len);
        struct sbuf one = {0};
        if (!piece || tok_decode(tk, ids, 1, 0, &one, err) != 0) abort();
        if (one.n != len || (len && memcmp(one.s, piece, len) != 0)) abort();
        sbuf_fini(&one);
    }
    sbuf_fini(&out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if ((data[0] & 9) == 8) {
        fuzz_mark((const char *)data + 1, size - 1, (data[0] >> 4) & 1);
        return 0;
    }
    if (data[0] & 1) fuzz_decode(data + 1, size - 1, (data[0] >> 1) & 1 ? TOK_DEC_SKIP_SPECIAL : 0);
    else
        fuzz_encode((const char *)data + 1, size - 1,
                    ((data[0] >> 1) & 1 ? TOK_ENC_SPECIAL : 0) |
                        ((data[0] >> 2) & 1 ? TOK_ENC_BOS : 0));
    return 0;
}
