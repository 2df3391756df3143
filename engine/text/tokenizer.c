/* tokenizer.c - byte-level BPE: loading (tokenizer.json / GGUF vocab), encoding, decoding.
 *
 * What: the Hugging Face "BPE + ByteLevel" tokenizer family used by DeepSeek-V3/R1 and
 * DeepSeek-LLM/Coder, reimplemented from the format description.
 *
 * Pipeline of tok_encode():
 *   1. the whole input is checked to be valid UTF-8 (ERR_UTF8 otherwise);
 *   2. with TOK_ENC_SPECIAL, added tokens are found leftmost-longest (like HF's
 *      AddedVocabulary); whitespace next to an lstrip/rstrip token is dropped;
 *   3. every other section runs through the pre-tokenizer: a list of regex stages, each one
 *      splitting every piece of the previous stage into matches and the gaps between them
 *      (HF Split with behaviour "Isolated"); stages recurse depth-first, so no piece list is
 *      ever materialized;
 *   4. each final piece is BPE-merged directly on its bytes. The ByteLevel alphabet is a
 *      bijection byte <-> character, so a vocabulary string maps to the byte string it stands
 *      for, and merges are stored as (left id, right id) -> (rank, merged id) in a hash table.
 *      The merge loop is the classic linked list of symbols plus an indexed binary heap (one
 *      entry per symbol, updated in place, so scratch stays 28 bytes per byte) ordered by
 *      (rank, position), which is HF's order (lowest rank first, leftmost on ties). Tokens
 *      whose own bytes BPE back to themselves are marked at load, so a piece that is one such
 *      token skips merging; long texts also cache the results of short pieces per call.
 *
 * Regexes: PCRE2 in UTF mode, compiled once at load (JIT when available). Patterns from
 * tokenizer.json are written for Oniguruma/JavaScript; `\s` / `\S` are rewritten to the
 * JavaScript whitespace set (tab, LF, VT, FF, CR, space, U+00A0, U+1680, U+2000-U+200A, U+2028,
 * U+2029, U+202F, U+205F, U+3000, U+FEFF) so results agree with the JS reference used in the
 * tests (HF's Rust/Oniguruma \s differs only on U+0085 and U+FEFF). `$` matches only at the end
 * (PCRE2_DOLLAR_ENDONLY), as in JavaScript without the m flag.
 *
 * Threads: after creation everything here is read-only. tok_encode allocates its own scratch
 * (symbol list, heap, PCRE2 match data) once per call and frees it before returning.
 *
 * Invariants: ids are 0..n_vocab-1; every id has an entry in `tokens` (holes in the id space
 * get an empty NORMAL token that BPE can never produce). Byte strings of normal tokens are the
 * ByteLevel-decoded vocabulary strings; added tokens keep their content.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tok.h"

#include "common/err.h"
#include "common/log.h"
#include "common/utf8.h"

#include <jansson.h>
#include <malloc.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_STAGES 8
#define TOK_MAX_VOCAB (1 << 24)

struct tok_entry {
    uint32_t off, len; /* bytes in t->pool */
    uint8_t type;      /* enum tok_type */
    uint8_t special;   /* CONTROL: skipped by TOK_DEC_SKIP_SPECIAL, matched only with flag */
    uint8_t added;     /* an added token (matched before BPE) */
    uint8_t lstrip, rstrip;
    uint8_t whole; /* BPE of this token's own bytes gives exactly this token */
};

struct merge_slot { /* open addressing: key 0 = empty (pair (0,0) stored as key+1 trick) */
    uint64_t key;   /* ((uint64)left << 32 | right) + 1 */
    int32_t rank;
    int32_t merged;
};

struct trie_node { /* first-child / next-sibling byte trie */
    int32_t child, sibling;
    int32_t id; /* added token ending here, -1 if none */
    unsigned char byte;
};

struct byte_pair {
    int32_t rank; /* -1 = no merge */
    int32_t merged;
};

struct str_slot {
    uint32_t off, len;
    int32_t id; /* -1 = empty */
};

struct tok {
    int n_vocab;
    struct tok_entry *tok;
    char *pool;
    size_t pool_n, pool_cap;

    int32_t byte_id[256];        /* id of the token for each single byte, -1 if none */
    struct byte_pair *byte_pair; /* [256 * 256]: the merge of two single-byte tokens */

    struct merge_slot *merges; /* capacity merge_mask + 1 */
    uint64_t merge_mask;

    struct str_slot *strs; /* bytes -> id over normal tokens */
    uint64_t str_mask;

    /* added tokens, for matching before BPE */
    int32_t *added; /* ids, longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
    size_t added_maxlen;
    struct trie_node *trie; /* byte trie over added tokens; node 0 is the root */
    int n_trie;

    int n_stages;
    pcre2_code *stage[TOK_MAX_STAGES];
    int stage_jit[TOK_MAX_STAGES]; /* JIT-compiled: call pcre2_jit_match directly */
    int ignore_merges;
    int whole_pieces; /* tiktoken: a piece that is a token is that token */

    int32_t bos, eos;
    int add_bos;
    char *chat_template;
    char *bos_text, *eos_text;
};

/* ---------------------------------------------------------------- small buffers */

void tok_ids_fini(struct tok_ids *a)
{
    if (!a) return;
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

static int ids_reserve(struct tok_ids *a, size_t extra)
{
    if (a->n + extra <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < a->n + extra) cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return ERR_NOMEM;
    a->v = v;
    a->cap = cap;
    return 0;
}

int tok_ids_push(struct tok_ids *a, int32_t id)
{
    if (a->n == a->cap && ids_reserve(a, 1)) return ERR_NOMEM;
    a->v[a->n++] = id;
    return 0;
}

/* JavaScript's \s set (see the top of the file). */
static int is_js_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

/* ---------------------------------------------------------------- ByteLevel alphabet */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100 + k in byte order. */
static uint32_t byte_to_cp(unsigned b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
    return 256 + k;
}

/* Decode a ByteLevel string into bytes (out must hold n bytes). Returns the byte count, or -1 if
 * a character is outside the alphabet or the string is not valid UTF-8. */
static long bytelevel_decode(const int16_t *cp2byte, const char *s, size_t n, char *out)
{
    size_t i = 0;
    long o = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_decode(s + i, n - i, &cp);
        if (!l || cp >= 324 || cp2byte[cp] < 0) return -1;
        out[o++] = (char)cp2byte[cp];
        i += l;
    }
    return o;
}

/* ---------------------------------------------------------------- hash tables */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t c = 16;
    while (c < n) c *= 2;
    return c;
}

static int32_t str_lookup(const struct tok *t, const char *s, size_t n)
{
    if (!t->strs) return -1;
    uint64_t i = hash_bytes(s, n) & t->str_mask;
    for (;;) {
        const struct str_slot *e = &t->strs[i];
        if (e->id < 0) return -1;
        if (e->len == n && memcmp(t->pool + e->off, s, n) == 0) return e->id;
        i = (i + 1) & t->str_mask;
    }
}

/* Insert id's bytes (first insertion wins). */
static void str_insert(struct tok *t, int32_t id)
{
    const struct tok_entry *te = &t->tok[id];
    uint64_t i = hash_bytes(t->pool + te->off, te->len) & t->str_mask;
    for (;;) {
        struct str_slot *e = &t->strs[i];
        if (e->id < 0) {
            e->off = te->off;
            e->len = te->len;
            e->id = id;
            return;
        }
        if (e->len == te->len && memcmp(t->pool + e->off, t->pool + te->off, te->len) == 0) return;
        i = (i + 1) & t->str_mask;
    }
}

static const struct merge_slot *merge_lookup(const struct tok *t, int32_t l, int32_t r)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint64_t i = hash_u64(key) & t->merge_mask;
    for (;;) {
        const struct merge_slot *e = &t->merges[i];
        if (e->key == key) return e;
        if (e->key == 0) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* Later merges of the same pair overwrite earlier ones (HF and transformers.js build a map). */
static void merge_insert(struct tok *t, int32_t l, int32_t r, int32_t rank, int32_t merged)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint64_t i = hash_u64(key) & t->merge_mask;
    for (;;) {
        struct merge_slot *e = &t->merges[i];
        if (e->key == 0 || e->key == key) {
            e->key = key;
            e->rank = rank;
            e->merged = merged;
            return;
        }
        i = (i + 1) & t->merge_mask;
    }
}

/* The first merges of every piece join two single bytes: a direct table avoids hashing there. */
static int build_byte_pairs(struct tok *t)
{
    t->byte_pair = malloc(65536 * sizeof *t->byte_pair);
    if (!t->byte_pair) return ERR_NOMEM;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            const struct merge_slot *m = t->byte_id[a] >= 0 && t->byte_id[b] >= 0
                                             ? merge_lookup(t, t->byte_id[a], t->byte_id[b])
                                             : NULL;
            t->byte_pair[a * 256 + b] =
                m ? (struct byte_pair){m->rank, m->merged} : (struct byte_pair){-1, -1};
        }
    return 0;
}

static int mark_whole_tokens(struct tok *t);

/* ---------------------------------------------------------------- building */

static int pool_add(struct tok *t, const char *s, size_t n, uint32_t *off)
{
    if (t->pool_n + n > UINT32_MAX) return ERR_NOMEM;
    if (t->pool_n + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 20;
        while (cap < t->pool_n + n) cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p) return ERR_NOMEM;
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_n, s, n);
    *off = (uint32_t)t->pool_n;
    t->pool_n += n;
    return 0;
}

static struct tok *tok_alloc(int n_vocab)
{
    struct tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n_vocab;
    t->tok = calloc((size_t)n_vocab, sizeof *t->tok);
    if (!t->tok) {
        free(t);
        return NULL;
    }
    for (int i = 0; i < n_vocab; i++) t->tok[i].type = TOK_TYPE_NORMAL;
    t->bos = t->eos = -1;
    return t;
}

void tok_destroy(struct tok *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_stages; i++) pcre2_code_free(t->stage[i]);
    free(t->tok);
    free(t->pool);
    free(t->merges);
    free(t->byte_pair);
    free(t->strs);
    free(t->added);
    free(t->trie);
    free(t->chat_template);
    free(t->bos_text);
    free(t->eos_text);
    free(t);
}

/* Rewrite a pattern written for JavaScript/Oniguruma into PCRE2 syntax (see the top of the
 * file). */
static int rewrite_pattern(const char *src, size_t n, char **out, char *err)
{
    static const char ws[] = "\\t\\n\\x0b\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}"
                             "\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}";
    size_t cap = n * 8 + sizeof ws * 8 + 16, o = 0;
    char *d = malloc(cap);
    if (!d) return ERR_NOMEM;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + sizeof ws + 8 > cap) {
            cap *= 2;
            char *nd = realloc(d, cap);
            if (!nd) {
                free(d);
                return ERR_NOMEM;
            }
            d = nd;
        }
        char c = src[i];
        if (c == '\\' && i + 1 < n) {
            char e = src[i + 1];
            if (e == 's' || e == 'S') {
                if (in_class && e == 'S') {
                    free(d);
                    return err_set(err, ERR_UNSUPPORTED,
                                   "pre-tokenizer regex: \\S inside [] is not supported");
                }
                if (!in_class) d[o++] = '[';
                if (e == 'S') d[o++] = '^';
                memcpy(d + o, ws, sizeof ws - 1);
                o += sizeof ws - 1;
                if (!in_class) d[o++] = ']';
            } else {
                d[o++] = c;
                d[o++] = e;
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            d[o++] = c;
            if (i + 1 < n && src[i + 1] == '^') d[o++] = src[++i];
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        d[o++] = c;
    }
    d[o] = 0;
    *out = d;
    return 0;
}

static int add_stage(struct tok *t, const char *pat, size_t n, int literal, char *err)
{
    if (t->n_stages >= TOK_MAX_STAGES)
        return err_set(err, ERR_UNSUPPORTED, "more than %d pre-tokenizer stages", TOK_MAX_STAGES);
    char *p = NULL;
    int rc;
    uint32_t opts = PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK;
    if (literal) {
        opts |= PCRE2_LITERAL;
        p = malloc(n + 1);
        if (!p) return ERR_NOMEM;
        memcpy(p, pat, n);
        p[n] = 0;
    } else if ((rc = rewrite_pattern(pat, n, &p, err)) != 0) {
        return rc;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        rc = err_set(err, ERR_FORMAT, "pre-tokenizer regex does not compile at %zu: %s: %.80s",
                     (size_t)eo, (char *)msg, pat);
        free(p);
        return rc;
    }
    free(p);
    /* JIT when the platform has it; otherwise the interpreter */
    t->stage_jit[t->n_stages] = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    t->stage[t->n_stages++] = re;
    return 0;
}

/* The GPT-2 pattern, used by ByteLevel with use_regex=true and by GGUF pre "default"/"gpt2". */
static const char gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* llama.cpp's regex sets for GGUF tokenizer.ggml.pre (facts taken from llama-vocab.cpp). */
static const char *const pre_deepseek_llm[] = {
    "[\r\n]",
    "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf"
    "\xc7\x84-\xca\x93\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf"
    "\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81"
    "\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-\xe1\x8f\xb5"
    "\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf\xe1\xb4\x80-"
    "\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-\xe1\xbc\x95"
    "\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d\xe1\xbd\x90-"
    "\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd\xe1\xbe\x80-"
    "\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84\xe1\xbf\x86-"
    "\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-\xe1\xbf\xac"
    "\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87\xe2\x84\x8a-"
    "\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8"
    "\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf"
    "\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb"
    "\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-"
    "\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf\xea\x9d\xb1-\xea\x9e\x87"
    "\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86\xef\xac\x93-"
    "\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91"
    "\x8f\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-"
    "\xf0\x90\xb2\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f"
    "\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+",
    "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"
    "\xe3\x80\x80-\xe3\x80\x82]+",
    "\\s+$",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
    "\\p{N}+",
    NULL,
};
static const char *const pre_deepseek_coder[] = {
    "[\r\n]",      "\\s?\\p{L}+",
    "\\s?\\p{P}+", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
    "\\p{N}",      NULL,
};
static const char *const pre_deepseek_v3[] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
    "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
static const char *const pre_gpt2[] = {gpt2_re, NULL};
/* Kimi-K2 / Moonlight (tokenization_kimi.py's pat_str, as tiktoken's Rust regex reads it). Its
 * class intersections [X&&[^\p{Han}]] become (?:(?!\p{Han})[X]); (?i:'s|'t|...) is spelled out
 * with Unicode's simple case folds ('s also matches U+017F); \s is Unicode White_Space (Rust's,
 * not the JavaScript set that rewrite_pattern gives \s). */
#define KIMI_UP "(?:(?!\\p{sc:Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define KIMI_LO "(?:(?!\\p{sc:Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define KIMI_CONTR "(?:'[sS\xc5\xbf]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
#define KIMI_WS                                                                                    \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
static const char *const pre_kimi[] = {
    "\\p{sc:Han}+|[^\\r\\n\\p{L}\\p{N}]?" KIMI_UP "*" KIMI_LO "+" KIMI_CONTR
    "|[^\\r\\n\\p{L}\\p{N}]?" KIMI_UP "+" KIMI_LO "*" KIMI_CONTR "|\\p{N}{1,3}| ?[^" KIMI_WS
    "\\p{L}\\p{N}]+[\\r\\n]*|[" KIMI_WS "]*[\\r\\n]+|[" KIMI_WS "]+(?![^" KIMI_WS "])|[" KIMI_WS
    "]+",
    NULL,
};

/* Byte tables, merges and the string index, once tokens and their bytes are in place. */
static int finish_vocab(struct tok *t, char *err)
{
    (void)err;
    t->str_mask = pow2_at_least((uint64_t)t->n_vocab * 2) - 1;
    t->strs = malloc((t->str_mask + 1) * sizeof *t->strs);
    if (!t->strs) return ERR_NOMEM;
    for (uint64_t i = 0; i <= t->str_mask; i++) t->strs[i].id = -1;
    for (int i = 0; i < t->n_vocab; i++)
        if (!t->tok[i].added && t->tok[i].len > 0) str_insert(t, i);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = str_lookup(t, &c, 1);
    }
    /* added tokens, longest first */
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++) n += t->tok[i].added && t->tok[i].len > 0;
    t->added = malloc((size_t)(n ? n : 1) * sizeof *t->added);
    if (!t->added) return ERR_NOMEM;
    t->n_added = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        const struct tok_entry *e = &t->tok[i];
        if (!e->added || e->len == 0) continue;
        t->added[t->n_added++] = i;
        t->added_first[(unsigned char)t->pool[e->off]] = 1;
        if (e->len > t->added_maxlen) t->added_maxlen = e->len;
    }
    /* insertion sort by length descending (a few hundred entries) */
    for (int i = 1; i < t->n_added; i++) {
        int32_t x = t->added[i];
        int j = i - 1;
        while (j >= 0 && t->tok[t->added[j]].len < t->tok[x].len) {
            t->added[j + 1] = t->added[j];
            j--;
        }
        t->added[j + 1] = x;
    }
    /* the trie: at most 1 + total bytes nodes */
    size_t total = 1;
    for (int j = 0; j < t->n_added; j++) total += t->tok[t->added[j]].len;
    t->trie = malloc(total * sizeof *t->trie);
    if (!t->trie) return ERR_NOMEM;
    t->trie[0] = (struct trie_node){-1, -1, -1, 0};
    t->n_trie = 1;
    for (int j = 0; j < t->n_added; j++) {
        const struct tok_entry *e = &t->tok[t->added[j]];
        int32_t node = 0;
        for (uint32_t k = 0; k < e->len; k++) {
            unsigned char c = (unsigned char)t->pool[e->off + k];
            int32_t ch = t->trie[node].child;
            while (ch >= 0 && t->trie[ch].byte != c) ch = t->trie[ch].sibling;
            if (ch < 0) {
                ch = t->n_trie++;
                t->trie[ch] = (struct trie_node){-1, t->trie[node].child, -1, c};
                t->trie[node].child = ch;
            }
            node = ch;
        }
        if (t->trie[node].id < 0) t->trie[node].id = t->added[j];
    }
    return 0;
}

/* Add one merge given as two ByteLevel strings. Unknown parts are reported as ERR_FORMAT. */
static int add_merge(struct tok *t, const int16_t *cp2byte, const char *a, size_t na, const char *b,
                     size_t nb, int32_t rank, char *err)
{
    char buf[1024];
    if (na + nb > sizeof buf) return err_set(err, ERR_FORMAT, "merge %d is too long", (int)rank);
    long la = bytelevel_decode(cp2byte, a, na, buf);
    long lb = la < 0 ? -1 : bytelevel_decode(cp2byte, b, nb, buf + la);
    if (la <= 0 || lb <= 0)
        return err_set(err, ERR_FORMAT, "merge %d (\"%.*s %.*s\") is not ByteLevel text", (int)rank,
                       (int)na, a, (int)nb, b);
    int32_t l = str_lookup(t, buf, (size_t)la);
    int32_t r = str_lookup(t, buf + la, (size_t)lb);
    int32_t m = str_lookup(t, buf, (size_t)(la + lb));
    if (l < 0 || r < 0 || m < 0)
        return err_set(err, ERR_FORMAT,
                       "merge %d (\"%.*s %.*s\") uses a token missing from the vocabulary",
                       (int)rank, (int)na, a, (int)nb, b);
    merge_insert(t, l, r, rank, m);
    return 0;
}

/* Add the merge of tokens l and r (their bytes concatenated must be a token) with this rank. */
static int add_id_merge(struct tok *t, int32_t l, int32_t r, int32_t rank, char *err)
{
    if (l < 0 || r < 0 || l >= t->n_vocab || r >= t->n_vocab)
        return err_set(err, ERR_FORMAT, "merge %d: token id out of range", (int)rank);
    const struct tok_entry *a = &t->tok[l], *b = &t->tok[r];
    char small[512];
    size_t n = (size_t)a->len + b->len;
    char *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) return ERR_NOMEM;
    memcpy(buf, t->pool + a->off, a->len);
    memcpy(buf + a->len, t->pool + b->off, b->len);
    int32_t m = str_lookup(t, buf, n);
    if (buf != small) free(buf);
    if (m < 0)
        return err_set(err, ERR_FORMAT, "merge %d: the merged bytes are no token", (int)rank);
    merge_insert(t, l, r, rank, m);
    return 0;
}

static int alloc_merges(struct tok *t, size_t n)
{
    t->merge_mask = pow2_at_least((uint64_t)n * 2 + 16) - 1;
    t->merges = calloc(t->merge_mask + 1, sizeof *t->merges);
    return t->merges ? 0 : ERR_NOMEM;
}

static void make_cp2byte(int16_t *cp2byte)
{
    for (int i = 0; i < 324; i++) cp2byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) cp2byte[byte_to_cp(b)] = (int16_t)b;
}

/* Set token `id` from its vocabulary string: ByteLevel-decoded bytes for normal tokens, the
 * content itself for added/control ones (or where the string is no ByteLevel text). */
static int set_token(struct tok *t, const int16_t *cp2byte, int32_t id, const char *s, size_t n,
                     int bytelevel)
{
    char small[512];
    char *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) return ERR_NOMEM;
    long l = bytelevel ? bytelevel_decode(cp2byte, s, n, buf) : -1;
    int rc =
        l >= 0 ? pool_add(t, buf, (size_t)l, &t->tok[id].off) : pool_add(t, s, n, &t->tok[id].off);
    t->tok[id].len = (uint32_t)(l >= 0 ? (size_t)l : n);
    if (buf != small) free(buf);
    return rc;
}

static int set_pre_list(struct tok *t, const char *const *list, char *err)
{
    for (int i = 0; list[i]; i++) {
        int rc = add_stage(t, list[i], strlen(list[i]), 0, err);
        if (rc) return rc;
    }
    return 0;
}

int tok_create_vocab(struct tok **out, const struct tok_vocab *v, char *err)
{
    *out = NULL;
    int tiktoken = v->model && strcmp(v->model, "tiktoken") == 0 && v->merge_ids;
    if (!tiktoken && (!v->model || strcmp(v->model, "gpt2") != 0))
        return err_set(err, ERR_UNSUPPORTED,
                       "tokenizer model '%s' is not supported (only byte-level BPE, \"gpt2\")",
                       v->model ? v->model : "(none)");
    if (v->n_tokens == 0 || v->n_tokens > TOK_MAX_VOCAB)
        return err_set(err, ERR_FORMAT, "tokenizer vocabulary size %zu out of range", v->n_tokens);
    const char *const *pre = pre_gpt2;
    const char *pname = v->pre ? v->pre : "default";
    if (strcmp(pname, "deepseek-llm") == 0) pre = pre_deepseek_llm;
    else if (strcmp(pname, "deepseek-coder") == 0) pre = pre_deepseek_coder;
    else if (strcmp(pname, "deepseek-v3") == 0) pre = pre_deepseek_v3;
    else if (strcmp(pname, "kimi") == 0 || strcmp(pname, "kimi-k2") == 0) pre = pre_kimi;
    else if (strcmp(pname, "default") != 0 && strcmp(pname, "gpt2") != 0)
        return err_set(err, ERR_UNSUPPORTED,
                       "tokenizer.ggml.pre '%s' is not supported "
                       "(deepseek-v3, deepseek-llm, deepseek-coder, kimi-k2, gpt2)",
                       pname);

    struct tok *t = tok_alloc((int)v->n_tokens);
    if (!t) return ERR_NOMEM;
    int16_t cp2byte[324];
    make_cp2byte(cp2byte);
    int rc = 0;
    for (size_t i = 0; i < v->n_tokens && !rc; i++) {
        const char *s = v->tokens[i] ? v->tokens[i] : "";
        size_t n = v->token_lens ? v->token_lens[i] : strlen(s);
        int type = v->token_types ? v->token_types[i] : TOK_TYPE_NORMAL;
        struct tok_entry *e = &t->tok[i];
        e->type = (uint8_t)(type >= 1 && type <= 6 ? type : TOK_TYPE_NORMAL);
        e->special = e->type == TOK_TYPE_CONTROL;
        e->added = e->type == TOK_TYPE_CONTROL || e->type == TOK_TYPE_USER_DEFINED;
        rc = set_token(t, cp2byte, (int32_t)i, s, n, !e->added && !tiktoken);
    }
    if (!rc) rc = finish_vocab(t, err);
    if (!rc) rc = alloc_merges(t, v->n_merges);
    for (size_t i = 0; tiktoken && i < v->n_merges && !rc; i++) {
        const int32_t *m = v->merge_ids + 3 * i;
        rc = add_id_merge(t, m[0], m[1], m[2], err);
    }
    for (size_t i = 0; !tiktoken && i < v->n_merges && !rc; i++) {
        const char *m = v->merges[i] ? v->merges[i] : "";
        size_t n = v->merge_lens ? v->merge_lens[i] : strlen(m);
        const char *sp = memchr(m, ' ', n);
        if (!sp) {
            rc = err_set(err, ERR_FORMAT, "merge %zu has no space", i);
            break;
        }
        rc = add_merge(t, cp2byte, m, (size_t)(sp - m), sp + 1, n - (size_t)(sp - m) - 1,
                       (int32_t)i, err);
    }
    if (!rc) rc = build_byte_pairs(t);
    if (!rc) rc = mark_whole_tokens(t);
    if (!rc) rc = set_pre_list(t, pre, err);
    /* llama.cpp's "kimi-k2" GGUF holds a tiktoken vocabulary: tiktoken's whole-piece rule */
    t->whole_pieces = tiktoken || strcmp(pname, "kimi-k2") == 0;
    if (!rc) {
        t->bos = v->bos_id >= 0 && v->bos_id < t->n_vocab ? v->bos_id : -1;
        t->eos = v->eos_id >= 0 && v->eos_id < t->n_vocab ? v->eos_id : -1;
        t->add_bos = v->add_bos;
        if (v->chat_template && !(t->chat_template = strdup(v->chat_template))) rc = ERR_NOMEM;
    }
    if (!rc && t->bos >= 0 &&
        !(t->bos_text = strndup(t->pool + t->tok[t->bos].off, t->tok[t->bos].len)))
        rc = ERR_NOMEM;
    if (!rc && t->eos >= 0 &&
        !(t->eos_text = strndup(t->pool + t->tok[t->eos].off, t->tok[t->eos].len)))
        rc = ERR_NOMEM;
    if (rc) {
        tok_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------- tokenizer.json */

static int json_pre_tokenizer(struct tok *t, json_t *pt, char *err)
{
    if (!pt || json_is_null(pt)) return 0;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return err_set(err, ERR_FORMAT, "tokenizer.json: pre_tokenizer without type");
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(pt, "pretokenizers");
        if (!json_is_array(arr))
            return err_set(err, ERR_FORMAT,
                           "tokenizer.json: pre_tokenizer Sequence without pretokenizers");
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x)
        {
            int rc = json_pre_tokenizer(t, x, err);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        if (!beh || strcmp(beh, "Isolated") != 0)
            return err_set(err, ERR_UNSUPPORTED,
                           "tokenizer.json: Split behavior '%s' (only Isolated)",
                           beh ? beh : "(none)");
        if (json_is_true(json_object_get(pt, "invert")))
            return err_set(err, ERR_UNSUPPORTED, "tokenizer.json: Split with invert=true");
        json_t *pat = json_object_get(pt, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        if (json_is_string(re))
            return add_stage(t, json_string_value(re), json_string_length(re), 0, err);
        if (json_is_string(str))
            return add_stage(t, json_string_value(str), json_string_length(str), 1, err);
        return err_set(err, ERR_FORMAT, "tokenizer.json: Split without Regex/String pattern");
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (json_is_true(json_object_get(pt, "add_prefix_space")))
            return err_set(err, ERR_UNSUPPORTED, "tokenizer.json: ByteLevel add_prefix_space=true");
        json_t *ur = json_object_get(pt, "use_regex");
        if (!ur || json_is_true(ur)) return add_stage(t, gpt2_re, strlen(gpt2_re), 0, err);
        return 0;
    }
    return err_set(err, ERR_UNSUPPORTED, "tokenizer.json: pre-tokenizer type '%s'", type);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *config_token(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int load_config(struct tok *t, const char *dir, char *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg) {
        FILE *f = fopen(path, "rb");
        if (!f) return 0; /* optional */
        fclose(f);
        return err_set(err, ERR_FORMAT, "%s:%d: %s", path, je.line, je.text);
    }
    int rc = 0;
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    if (bos) t->bos = tok_find(t, bos);
    if (eos) t->eos = tok_find(t, eos);
    t->add_bos = json_is_true(json_object_get(cfg, "add_bos_token"));
    json_t *ct = json_object_get(cfg, "chat_template");
    const char *tmpl = NULL;
    if (json_is_string(ct)) {
        tmpl = json_string_value(ct);
    } else if (json_is_array(ct)) { /* [{"name": "default", "template": "..."}, ...] */
        size_t i;
        json_t *x;
        json_array_foreach(ct, i, x)
        {
            const char *name = json_string_value(json_object_get(x, "name"));
            const char *tt = json_string_value(json_object_get(x, "template"));
            if (tt && (!tmpl || (name && strcmp(name, "default") == 0))) tmpl = tt;
        }
    }
    if (tmpl && !(t->chat_template = strdup(tmpl))) rc = ERR_NOMEM;
    json_decref(cfg);
    return rc;
}

int tok_create_dir(struct tok **out, const char *dir, char *err)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text) return err_set(err, ERR_IO, "cannot read %s", path);
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) return err_set(err, ERR_FORMAT, "%s:%d: %s", path, je.line, je.text);

    struct tok *t = NULL;
    int rc = 0;
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    json_t *norm = json_object_get(root, "normalizer");
    if (!json_is_object(model) || !json_is_object(vocab) || !json_is_array(merges)) {
        rc = err_set(err, ERR_FORMAT, "%s: model.vocab / model.merges missing", path);
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE") != 0) {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: model type '%s' (only BPE)", path, mtype);
        goto done;
    }
    if (json_is_true(json_object_get(model, "byte_fallback")) ||
        json_is_string(json_object_get(model, "continuing_subword_prefix")) ||
        json_is_string(json_object_get(model, "end_of_word_suffix"))) {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: BPE with byte_fallback / subword prefix or suffix",
                     path);
        goto done;
    }
    if (norm && !json_is_null(norm)) {
        const char *nt = json_string_value(json_object_get(norm, "type"));
        json_t *list = json_object_get(norm, "normalizers");
        if (!nt || strcmp(nt, "Sequence") != 0 || json_array_size(list) != 0) {
            rc = err_set(err, ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported", path,
                         nt ? nt : "?");
            goto done;
        }
    }
    /* vocabulary size: the largest id + 1 over vocab and added tokens */
    long long max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_VOCAB) {
            rc = err_set(err, ERR_FORMAT, "%s: bad id for vocab entry \"%.60s\"", path, key);
            goto done;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t i;
    json_array_foreach(added, i, val)
    {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_VOCAB ||
            !json_is_string(json_object_get(val, "content"))) {
            rc =
                err_set(err, ERR_FORMAT, "%s: added_tokens[%zu] lacks a valid id/content", path, i);
            goto done;
        }
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) {
        rc = err_set(err, ERR_FORMAT, "%s: empty vocabulary", path);
        goto done;
    }
    t = tok_alloc((int)max_id + 1);
    if (!t) {
        rc = ERR_NOMEM;
        goto done;
    }
    int16_t cp2byte[324];
    make_cp2byte(cp2byte);
    json_array_foreach(added, i, val)
    { /* mark added tokens first, so set_token knows */
        struct tok_entry *e = &t->tok[json_integer_value(json_object_get(val, "id"))];
        e->added = 1;
        e->special = json_is_true(json_object_get(val, "special"));
        e->type = e->special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
        e->lstrip = json_is_true(json_object_get(val, "lstrip"));
        e->rstrip = json_is_true(json_object_get(val, "rstrip"));
    }
    json_array_foreach(added, i, val)
    {
        json_t *c = json_object_get(val, "content");
        int32_t id = (int32_t)json_integer_value(json_object_get(val, "id"));
        if ((rc = set_token(t, cp2byte, id, json_string_value(c), json_string_length(c), 0)))
            goto done;
    }
    json_object_foreach(vocab, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        if (t->tok[id].added) continue;
        if ((rc = set_token(t, cp2byte, id, key, strlen(key), 1))) goto done;
    }
    if ((rc = finish_vocab(t, err))) goto done;
    if ((rc = alloc_merges(t, json_array_size(merges)))) goto done;
    json_array_foreach(merges, i, val)
    {
        if (json_is_string(val)) { /* "left right" */
            const char *m = json_string_value(val);
            size_t n = json_string_length(val);
            const char *sp = memchr(m, ' ', n);
            if (!sp) {
                rc = err_set(err, ERR_FORMAT, "%s: merges[%zu] has no space", path, i);
                goto done;
            }
            rc = add_merge(t, cp2byte, m, (size_t)(sp - m), sp + 1, n - (size_t)(sp - m) - 1,
                           (int32_t)i, err);
        } else if (json_is_array(val) && json_array_size(val) == 2 &&
                   json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) {
            json_t *a = json_array_get(val, 0), *b = json_array_get(val, 1);
            rc = add_merge(t, cp2byte, json_string_value(a), json_string_length(a),
                           json_string_value(b), json_string_length(b), (int32_t)i, err);
        } else {
            rc = err_set(err, ERR_FORMAT, "%s: merges[%zu] is neither \"a b\" nor [a, b]", path, i);
        }
        if (rc) goto done;
    }
    if ((rc = build_byte_pairs(t))) goto done;
    if ((rc = mark_whole_tokens(t))) goto done;
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    if ((rc = json_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), err))) goto done;
    if (t->n_stages == 0 && (rc = add_stage(t, gpt2_re, strlen(gpt2_re), 0, err))) goto done;
    if ((rc = load_config(t, dir, err))) goto done;
    if (t->bos >= 0 && !(t->bos_text = strndup(t->pool + t->tok[t->bos].off, t->tok[t->bos].len)))
        rc = ERR_NOMEM;
    if (!rc && t->eos >= 0 &&
        !(t->eos_text = strndup(t->pool + t->tok[t->eos].off, t->tok[t->eos].len)))
        rc = ERR_NOMEM;
done:
    json_decref(root);
    malloc_trim(0); /* the parsed JSON (~200 MB of small objects) is gone: give it back */
    if (rc) {
        tok_destroy(t);
        return rc;
    }
    LOG_DEBUG("tok", "loaded %s: %d ids, %d added tokens, %d pre-tokenizer stages", path,
              t->n_vocab, t->n_added, t->n_stages);
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------- encoding */

/* One symbol of the piece being merged, with the candidate merge of it and its right
 * neighbour. The heap holds (rank, symbol index) pairs, at most one per symbol, updated in place,
 * so BPE scratch is 32 bytes per input byte whatever the input; comparisons only touch the
 * heap array. */
struct heap_ent {
    int32_t rank, pos;
};

struct bpe_sym {
    int32_t id;         /* -1 = merged away */
    int32_t prev, next; /* -1 = none */
    int32_t rank;       /* rank of the merge (this, next); -1 = none */
    int32_t merged;     /* its result */
    int32_t hpos;       /* index in the heap; -1 = not queued */
};

/* A per-call cache of BPE results for short pieces (words repeat a lot in long texts). Keys
 * point into the text being encoded, so the cache never outlives the call. */
#define CACHE_MAX_SLOTS 8192 /* power of two; about one slot per 8 bytes of text */
#define CACHE_MAX_PIECE 64
#define CACHE_MIN_TEXT 512 /* shorter texts are not worth the allocation */

struct cache_slot {
    const char *key; /* NULL = empty */
    uint32_t len, ids_off, n_ids;
};

/* Per-call scratch. */
struct enc {
    const struct tok *t;
    struct tok_ids *out;
    pcre2_match_data *md;
    struct bpe_sym *sym;
    struct heap_ent *heap; /* candidate merges ordered by (rank, symbol index) */
    size_t sym_cap, heap_n;
    struct cache_slot *cache; /* NULL = no cache */
    size_t cache_used, cache_mask;
    struct tok_ids cache_ids;
};

/* HF order: lowest rank first, leftmost on ties (symbols keep their original index). */
static int ent_less(struct heap_ent a, struct heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_set(struct enc *e, size_t i, struct heap_ent v)
{
    e->heap[i] = v;
    e->sym[v.pos].hpos = (int32_t)i;
}

static void heap_up(struct enc *e, size_t i)
{
    struct heap_ent v = e->heap[i];
    while (i > 0 && ent_less(v, e->heap[(i - 1) / 2])) {
        heap_set(e, i, e->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(e, i, v);
}

static void heap_down(struct enc *e, size_t i)
{
    struct heap_ent v = e->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        struct heap_ent best = v;
        if (l < e->heap_n && ent_less(e->heap[l], best)) {
            m = l;
            best = e->heap[l];
        }
        if (l + 1 < e->heap_n && ent_less(e->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        heap_set(e, i, e->heap[m]);
        i = m;
    }
    heap_set(e, i, v);
}

static void heap_remove(struct enc *e, int32_t v)
{
    size_t i = (size_t)e->sym[v].hpos;
    e->sym[v].hpos = -1;
    struct heap_ent last = e->heap[--e->heap_n];
    if (i == e->heap_n) return;
    heap_set(e, i, last);
    heap_down(e, i);
    heap_up(e, (size_t)e->sym[last.pos].hpos);
}

static void heap_add(struct enc *e, int32_t v)
{
    e->heap[e->heap_n] = (struct heap_ent){e->sym[v].rank, v};
    e->sym[v].hpos = (int32_t)e->heap_n;
    heap_up(e, e->heap_n++);
}

/* (Re)compute the candidate merge of symbol l and its right neighbour, and queue it. */
static void set_pair(struct enc *e, int32_t l)
{
    if (l < 0) return;
    struct bpe_sym *L = &e->sym[l];
    const struct merge_slot *m =
        L->next >= 0 ? merge_lookup(e->t, L->id, e->sym[L->next].id) : NULL;
    if (!m) {
        L->rank = -1;
        if (L->hpos >= 0) heap_remove(e, l);
        return;
    }
    L->rank = m->rank;
    L->merged = m->merged;
    if (L->hpos < 0) {
        heap_add(e, l);
    } else {
        size_t i = (size_t)L->hpos;
        e->heap[i].rank = m->rank;
        heap_down(e, i);
        heap_up(e, (size_t)L->hpos);
    }
}

static int bpe_merge(struct enc *e, const unsigned char *p, size_t n);

static int bpe_piece(struct enc *e, const unsigned char *p, size_t n)
{
    const struct tok *t = e->t;
    if (n == 0) return 0;
    if (n == 1) return t->byte_id[p[0]] >= 0 ? tok_ids_push(e->out, t->byte_id[p[0]]) : 0;
    /* most words are one token: known at load time (mark_whole_tokens), so no merging */
    int32_t whole = str_lookup(t, (const char *)p, n);
    if (whole >= 0 && (t->tok[whole].whole || t->whole_pieces)) return tok_ids_push(e->out, whole);
    if (!e->cache || n > CACHE_MAX_PIECE) return bpe_merge(e, p, n);
    uint64_t h = hash_bytes((const char *)p, n) & e->cache_mask;
    struct cache_slot *c;
    for (;; h = (h + 1) & e->cache_mask) {
        c = &e->cache[h];
        if (!c->key) break;
        if (c->len == n && memcmp(c->key, p, n) == 0) {
            int rc = ids_reserve(e->out, c->n_ids);
            if (rc) return rc;
            memcpy(e->out->v + e->out->n, e->cache_ids.v + c->ids_off, c->n_ids * sizeof(int32_t));
            e->out->n += c->n_ids;
            return 0;
        }
    }
    size_t before = e->out->n;
    int rc = bpe_merge(e, p, n);
    if (rc || e->cache_used >= (e->cache_mask + 1) * 3 / 4) return rc;
    size_t k = e->out->n - before;
    if (ids_reserve(&e->cache_ids, k)) return 0; /* no room: just do not cache */
    memcpy(e->cache_ids.v + e->cache_ids.n, e->out->v + before, k * sizeof(int32_t));
    *c = (struct cache_slot){(const char *)p, (uint32_t)n, (uint32_t)e->cache_ids.n, (uint32_t)k};
    e->cache_ids.n += k;
    e->cache_used++;
    return 0;
}

/* BPE of one piece of n >= 2 bytes; appends its ids. */
static int bpe_merge(struct enc *e, const unsigned char *p, size_t n)
{
    const struct tok *t = e->t;
    if (t->ignore_merges) {
        int32_t id = str_lookup(t, (const char *)p, n);
        if (id >= 0) return tok_ids_push(e->out, id);
    }
    if (n > e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap : 256;
        while (cap < n) cap *= 2;
        struct bpe_sym *sy = realloc(e->sym, cap * sizeof *sy);
        if (!sy) return ERR_NOMEM;
        e->sym = sy;
        struct heap_ent *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return ERR_NOMEM;
        e->heap = h;
        e->sym_cap = cap;
    }
    /* symbols: one per byte; bytes without a token are dropped (HF without unk) */
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id < 0) continue;
        e->sym[ns] = (struct bpe_sym){id, ns - 1, -1, -1, -1, -1};
        if (ns > 0) e->sym[ns - 1].next = ns;
        ns++;
    }
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) {
        if (ns == (int32_t)n) { /* every byte has a token: the first merges from the byte table */
            const struct byte_pair *bp = &t->byte_pair[p[i] * 256 + p[i + 1]];
            if (bp->rank < 0) continue;
            e->sym[i].rank = bp->rank;
            e->sym[i].merged = bp->merged;
            heap_add(e, i);
        } else {
            set_pair(e, i);
        }
    }
    while (e->heap_n) {
        int32_t l = e->heap[0].pos;
        struct bpe_sym *L = &e->sym[l];
        int32_t r = L->next;
        heap_remove(e, l);
        if (e->sym[r].hpos >= 0) heap_remove(e, r);
        L->id = L->merged;
        L->next = e->sym[r].next;
        if (L->next >= 0) e->sym[L->next].prev = l;
        e->sym[r].id = -1;
        set_pair(e, L->prev);
        set_pair(e, l);
    }
    if (ns == 0) return 0;
    int rc = ids_reserve(e->out, (size_t)ns);
    if (rc) return rc;
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) e->out->v[e->out->n++] = e->sym[i].id;
    return 0;
}

/* Split s[0..n) with stage k (Isolated): matches and gaps both go on to stage k+1. */
static int pre_split(struct enc *e, int k, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (k == e->t->n_stages) return bpe_piece(e, (const unsigned char *)s, n);
    pcre2_code *re = e->t->stage[k];
    size_t prev = 0, from = 0;
    int rc;
    while (from < n) {
        int m = e->t->stage_jit[k]
                    ? pcre2_jit_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, e->md, NULL)
                    : pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, e->md, NULL);
        /* the JIT's stack (32 KiB) can run out on long runs of a lookahead-per-character class
         * (Kimi's pattern): the interpreter keeps its frames on the heap */
        if (m == PCRE2_ERROR_JIT_STACKLIMIT)
            m = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md,
                            NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) return ERR_INTERNAL; /* match limit etc.: cannot happen for these patterns */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* empty match: skip one character, keep the gap */
            from = a + 1;
            while (from < n && ((unsigned char)s[from] & 0xC0) == 0x80) from++;
            continue;
        }
        if (a > prev && (rc = pre_split(e, k + 1, s + prev, a - prev))) return rc;
        if ((rc = pre_split(e, k + 1, s + a, b - a))) return rc;
        prev = from = b;
    }
    return prev < n ? pre_split(e, k + 1, s + prev, n - prev) : 0;
}

/* Find the leftmost-longest added token in s[from..n). Returns its id and sets *at, or -1. */
static int32_t find_added(const struct tok *t, const char *s, size_t n, size_t from, size_t *at)
{
    const struct trie_node *tr = t->trie;
    for (size_t i = from; i < n; i++) {
        if (!t->added_first[(unsigned char)s[i]]) continue;
        int32_t node = 0, best = -1;
        for (size_t k = i; k < n; k++) {
            int32_t ch = tr[node].child;
            while (ch >= 0 && tr[ch].byte != (unsigned char)s[k]) ch = tr[ch].sibling;
            if (ch < 0) break;
            node = ch;
            if (tr[node].id >= 0) best = tr[node].id;
        }
        if (best >= 0) {
            *at = i;
            return best;
        }
    }
    return -1;
}

/* ---- plain-text marking (tok_mark_plain, TOK_ENC_MARKED) */

#define MARK TOK_PLAIN_MARK
#define MARK_LEN (sizeof MARK - 1)

/* With keep_think, "<think>" and "</think>" stay recognizable (tok.h). */
static int mark_exempt(const struct tok *t, int32_t id, int keep_think)
{
    const struct tok_entry *e = &t->tok[id];
    const char *s = t->pool + e->off;
    return keep_think && ((e->len == 7 && memcmp(s, "<think>", 7) == 0) ||
                          (e->len == 8 && memcmp(s, "</think>", 8) == 0));
}

/* 1 when an added token (not exempt) starts at s[i], or s[i..n) is a proper prefix of one. */
static int needs_mark(const struct tok *t, const char *s, size_t n, size_t i, int keep_think)
{
    if (!t->added_first[(unsigned char)s[i]]) return 0;
    int32_t node = 0;
    for (size_t k = i; k < n; k++) {
        int32_t ch = t->trie[node].child;
        while (ch >= 0 && t->trie[ch].byte != (unsigned char)s[k]) ch = t->trie[ch].sibling;
        if (ch < 0) return 0;
        node = ch;
        if (t->trie[node].id >= 0 && !mark_exempt(t, t->trie[node].id, keep_think)) return 1;
    }
    return t->trie[node].child >= 0; /* the text ends inside an added token */
}

int tok_mark_plain(const struct tok *t, const char *s, size_t n, int keep_think, struct sbuf *out)
{
    size_t n0 = out->n, i = 0;
    int rc = 0;
    while (!rc && i < n) {
        size_t cl = 1; /* one character (a stray byte counts alone) */
        while (i + cl < n && ((unsigned char)s[i + cl] & 0xC0) == 0x80 && cl < 4) cl++;
        if (n - i >= MARK_LEN && memcmp(s + i, MARK, MARK_LEN) == 0) {
            rc = sbuf_append(out, MARK MARK, 2 * MARK_LEN); /* a literal marker, doubled */
            i += MARK_LEN;
            continue;
        }
        rc = sbuf_append(out, s + i, cl);
        if (!rc && t->n_added && needs_mark(t, s, n, i, keep_think))
            rc = sbuf_append(out, MARK, MARK_LEN);
        i += cl;
    }
    if (rc) out->n = n0;
    if (out->s) out->s[out->n] = 0;
    return rc;
}

/* s[0..n) without markers: a doubled marker is one literal marker, a single one is dropped.
 * out has room for n bytes; returns the length. */
static size_t unmark(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (n - i >= MARK_LEN && memcmp(s + i, MARK, MARK_LEN) == 0) {
            int twice = n - i >= 2 * MARK_LEN && memcmp(s + i + MARK_LEN, MARK, MARK_LEN) == 0;
            if (twice) {
                memcpy(out + o, MARK, MARK_LEN);
                o += MARK_LEN;
            }
            i += twice ? 2 * MARK_LEN : MARK_LEN;
            continue;
        }
        out[o++] = s[i++];
    }
    return o;
}

/* Length of the whitespace run ending at s[n) / starting at s[0]. */
static size_t ws_suffix(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        uint32_t cp;
        if (!utf8_decode(s + st, end - st, &cp) || !is_js_space(cp)) break;
        end = st;
    }
    return n - end;
}

static size_t ws_prefix(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_decode(s + i, n - i, &cp);
        if (!l || !is_js_space(cp)) break;
        i += l;
    }
    return i;
}

int tok_encode(const struct tok *t, const char *text, size_t len, unsigned flags,
               struct tok_ids *out, char *err)
{
    size_t bad;
    if (utf8_check(text, len, &bad))
        return err_set(err, ERR_UTF8, "invalid UTF-8 at byte %zu of %zu", bad, len);
    size_t n0 = out->n;
    struct enc e = {.t = t, .out = out};
    e.md = pcre2_match_data_create(4, NULL);
    if (!e.md) return ERR_NOMEM;
    if (len >= CACHE_MIN_TEXT) { /* optional: without it BPE just runs for every piece */
        size_t slots = 64;
        while (slots < CACHE_MAX_SLOTS && slots * 8 < len) slots *= 2;
        e.cache = calloc(slots, sizeof *e.cache);
        e.cache_mask = slots - 1;
    }
    int rc = 0;
    char *plain = NULL; /* TOK_ENC_MARKED: the unmarked text of each piece, at the piece's offset */
    if ((flags & TOK_ENC_MARKED) && len > 0 && !(plain = malloc(len))) rc = ERR_NOMEM;
    if (!rc && (flags & TOK_ENC_BOS) && t->bos >= 0) rc = tok_ids_push(out, t->bos);
    size_t pos = 0;
    while (!rc && pos < len) {
        size_t at = len;
        int32_t id = -1;
        if ((flags & TOK_ENC_SPECIAL) && t->n_added) id = find_added(t, text, len, pos, &at);
        size_t end = at; /* plain text is text[pos..end) */
        size_t next = len;
        if (id >= 0) {
            const struct tok_entry *te = &t->tok[id];
            if (te->lstrip) end -= ws_suffix(text + pos, at - pos);
            next = at + te->len;
            if (te->rstrip) next += ws_prefix(text + next, len - next);
        }
        if (end > pos && plain) {
            /* each run unmarked at its own offset: the cache's keys point into these copies,
             * so an earlier run's bytes must stay until the call ends */
            rc = pre_split(&e, 0, plain + pos, unmark(text + pos, end - pos, plain + pos));
        } else if (end > pos) {
            rc = pre_split(&e, 0, text + pos, end - pos);
        }
        if (!rc && id >= 0) rc = tok_ids_push(out, id);
        pos = next;
    }
    pcre2_match_data_free(e.md);
    free(plain);
    free(e.sym);
    free(e.heap);
    free(e.cache);
    tok_ids_fini(&e.cache_ids);
    if (rc) {
        out->n = n0;
        if (rc == ERR_INTERNAL) return err_set(err, rc, "pre-tokenizer regex failed");
        return err_set(err, rc, "tokenizer: %s", err_message(rc));
    }
    return 0;
}

/* At load: run BPE on every normal token's own bytes and mark those that come out as exactly
 * themselves; encoding then maps such a piece straight to its id. This is an exact shortcut
 * (BPE of a byte string depends on nothing else), not ignore_merges. */
static int mark_whole_tokens(struct tok *t)
{
    struct tok_ids ids = {0};
    struct enc e = {.t = t, .out = &ids};
    int rc = 0;
    for (int i = 0; i < t->n_vocab && !rc; i++) {
        struct tok_entry *te = &t->tok[i];
        if (te->added || te->len < 2) continue;
        ids.n = 0;
        rc = bpe_merge(&e, (const unsigned char *)t->pool + te->off, te->len);
        te->whole = !rc && ids.n == 1 && ids.v[0] == i;
    }
    free(e.sym);
    free(e.heap);
    tok_ids_fini(&ids);
    return rc;
}

/* ---------------------------------------------------------------- decoding and queries */

int tok_decode(const struct tok *t, const int32_t *ids, size_t n, unsigned flags, struct sbuf *out,
               char *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return err_set(err, ERR_INVAL,
                           "token id %lld at position %zu is out of range (vocabulary: %d)",
                           (long long)ids[i], i, t->n_vocab);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += t->tok[ids[i]].len;
    size_t n0 = out->n;
    /* reserve once, then copy */
    if (sbuf_reserve(out, total)) return ERR_NOMEM;
    char *d = out->s + n0;
    for (size_t i = 0; i < n; i++) {
        const struct tok_entry *te = &t->tok[ids[i]];
        if ((flags & TOK_DEC_SKIP_SPECIAL) && te->special) continue;
        memcpy(d, t->pool + te->off, te->len);
        d += te->len;
    }
    out->n = (size_t)(d - out->s);
    out->s[out->n] = 0;
    return 0;
}

const char *tok_piece(const struct tok *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->tok[id].len;
    return t->pool + t->tok[id].off;
}

int tok_vocab_size(const struct tok *t) { return t->n_vocab; }
int32_t tok_bos(const struct tok *t) { return t->bos; }
int32_t tok_eos(const struct tok *t) { return t->eos; }
int tok_add_bos(const struct tok *t) { return t->add_bos; }
const char *tok_chat_template(const struct tok *t) { return t->chat_template; }
const char *tok_bos_text(const struct tok *t) { return t->bos_text ? t->bos_text : ""; }
const char *tok_eos_text(const struct tok *t) { return t->eos_text ? t->eos_text : ""; }

int tok_is_special(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->tok[id].special;
}

int tok_is_added(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->tok[id].added;
}

int32_t tok_find(const struct tok *t, const char *text)
{
    size_t n = strlen(text);
    for (int j = 0; j < t->n_added; j++) {
        const struct tok_entry *te = &t->tok[t->added[j]];
        if (te->len == n && memcmp(t->pool + te->off, text, n) == 0) return t->added[j];
    }
    return str_lookup(t, text, n);
}
