/* tok_tiktoken.c - a tiktoken-style BPE directory (Kimi-K2, Moonlight) -> struct tok_vocab.
 *
 * Files: tiktoken.model, one "BASE64 RANK" line per token (the rank is the token id, ranks
 * unique); tokenizer_config.json (optional): added_tokens_decoder {"ID": {"content", "special"}},
 * bos_token / eos_token (a string or {"content"}), chat_template. As tokenization_kimi.py does,
 * 256 special ids follow the last rank, named from added_tokens_decoder or
 * "<|reserved_token_ID|>".
 *
 * tiktoken merges the adjacent pair whose concatenation has the lowest rank (leftmost on ties).
 * That is byte-level BPE with one merge (left, right) per way of splitting each token into two
 * tokens, ranked by the token's own rank: those merges go to tok_create_vocab as merge_ids (all
 * splits of one token share its rank, so ties stay leftmost), with the "kimi" pre-tokenizer and
 * the rule that a piece which is a token is that token.
 *
 * tok_tiktoken_to_gguf writes the same directory in llama.cpp's GGUF form (byte-level token
 * strings, one merge per token found by replaying tiktoken on its bytes with the lower ranks,
 * pre "kimi-k2"), which tok_create_gguf reads back: synthetic Kimi/Moonlight models use it for
 * their whole-GGUF layout, the tests for GGUFs of hand-made vocabularies.
 *
 * Threads: called from one thread; nothing is kept. Ownership: *out as tok_create_vocab.
 */
#include "tok.h"

#include "common/err.h"
#include "engine/weights/gguf.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SPECIAL 256

struct tt {
    char **tok;   /* [n] raw bytes (NULL = hole) */
    size_t *len;  /* [n] */
    int32_t *typ; /* [n] enum tok_type */
    size_t n;
    int32_t *slot; /* bytes -> id, open addressing over base tokens; -1 empty */
    size_t mask;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int32_t lookup(const struct tt *t, const char *s, size_t n)
{
    for (uint64_t h = hash_bytes(s, n) & t->mask;; h = (h + 1) & t->mask) {
        int32_t id = t->slot[h];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->tok[id], s, n) == 0) return id;
    }
}

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* standard base64 with padding -> out (at least n bytes); length or -1 */
static long b64_decode(const char *s, size_t n, char *out)
{
    if (n == 0 || n % 4) return -1;
    long o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            v[k] = s[i + k] == '=' && i + 4 == n && k >= 2 ? (pad++, 0) : b64_val(s[i + k]);
            if (v[k] < 0 || (pad && s[i + k] != '=')) return -1;
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        out[o++] = (char)(x >> 16);
        if (pad < 2) out[o++] = (char)(x >> 8);
        if (pad < 1) out[o++] = (char)x;
    }
    return o;
}

static void tt_free(struct tt *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->tok[i]);
    free(t->tok);
    free(t->len);
    free(t->typ);
    free(t->slot);
}

static int grow(struct tt *t, size_t n)
{
    if (n <= t->n) return 0;
    char **a = realloc(t->tok, n * sizeof *a);
    if (a) t->tok = a;
    size_t *b = realloc(t->len, n * sizeof *b);
    if (b) t->len = b;
    int32_t *c = realloc(t->typ, n * sizeof *c);
    if (c) t->typ = c;
    if (!a || !b || !c) return ERR_NOMEM;
    for (size_t i = t->n; i < n; i++) {
        t->tok[i] = NULL;
        t->len[i] = 0;
        t->typ[i] = TOK_TYPE_NORMAL;
    }
    t->n = n;
    return 0;
}

/* tiktoken.model -> base tokens; *n_base = last rank + 1 */
static int read_ranks(struct tt *t, const char *path, size_t *n_base, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, ERR_IO, "cannot open %s", path);
    char line[4096], buf[3072];
    int rc = 0, ln = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        ln++;
        size_t n = strcspn(line, "\r\n");
        if (n == strlen(line) && !feof(f)) {
            rc = err_set(err, ERR_FORMAT, "%s:%d: line too long", path, ln);
            break;
        }
        line[n] = 0;
        if (n == 0) continue;
        char *sp = strchr(line, ' ');
        char *end = NULL;
        long rank = sp ? strtol(sp + 1, &end, 10) : -1;
        long len = sp ? b64_decode(line, (size_t)(sp - line), buf) : -1;
        if (!sp || !end || *end || end == sp + 1 || rank < 0 || rank >= (1 << 24) - N_SPECIAL ||
            len <= 0) {
            rc = err_set(err, ERR_FORMAT, "%s:%d: not \"BASE64 RANK\"", path, ln);
            break;
        }
        if ((rc = grow(t, (size_t)rank + 1))) break;
        if (t->tok[rank]) {
            rc = err_set(err, ERR_FORMAT, "%s:%d: rank %ld given twice", path, ln, rank);
            break;
        }
        if (!(t->tok[rank] = malloc((size_t)len))) rc = ERR_NOMEM;
        else {
            memcpy(t->tok[rank], buf, (size_t)len);
            t->len[rank] = (size_t)len;
        }
    }
    fclose(f);
    if (!rc && t->n == 0) rc = err_set(err, ERR_FORMAT, "%s: no tokens", path);
    *n_base = t->n;
    return rc;
}

static int index_tokens(struct tt *t, size_t n_base, const char *path, char *err)
{
    size_t cap = 16;
    while (cap < n_base * 2) cap *= 2;
    t->mask = cap - 1;
    if (!(t->slot = malloc(cap * sizeof *t->slot))) return ERR_NOMEM;
    memset(t->slot, 0xff, cap * sizeof *t->slot);
    for (size_t id = 0; id < n_base; id++) {
        if (!t->tok[id]) continue;
        if (lookup(t, t->tok[id], t->len[id]) >= 0)
            return err_set(err, ERR_FORMAT, "%s: the bytes of rank %zu occur twice", path, id);
        uint64_t h = hash_bytes(t->tok[id], t->len[id]) & t->mask;
        while (t->slot[h] >= 0) h = (h + 1) & t->mask;
        t->slot[h] = (int32_t)id;
    }
    return 0;
}

static const char *content_of(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

/* the special ids n_base .. n_base + N_SPECIAL - 1 (and any higher added_tokens_decoder id) */
static int add_specials(struct tt *t, size_t n_base, json_t *cfg, const char *path, char *err)
{
    json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    int rc = grow(t, n_base + N_SPECIAL);
    const char *key;
    json_t *v;
    json_object_foreach(dec, key, v)
    {
        char *end;
        long id = strtol(key, &end, 10);
        const char *c = content_of(v);
        if (rc) break;
        if (*end || id < 0 || id >= (1 << 24) || !c)
            return err_set(err, ERR_FORMAT, "%s: added_tokens_decoder entry '%s'", path, key);
        if ((size_t)id < n_base) continue; /* a base token (nothing to add) */
        if ((rc = grow(t, (size_t)id + 1))) break;
        free(t->tok[id]);
        t->len[id] = strlen(c);
        if (!(t->tok[id] = strdup(c))) return ERR_NOMEM;
        t->typ[id] =
            json_is_false(json_object_get(v, "special")) ? TOK_TYPE_USER_DEFINED : TOK_TYPE_CONTROL;
    }
    for (size_t id = n_base; !rc && id < t->n; id++) {
        if (t->tok[id]) continue;
        char name[48];
        snprintf(name, sizeof name, "<|reserved_token_%zu|>", id);
        t->len[id] = strlen(name);
        t->typ[id] = TOK_TYPE_CONTROL;
        if (!(t->tok[id] = strdup(name))) rc = ERR_NOMEM;
    }
    return rc;
}

/* one merge per split of a base token into two base tokens: [left, right, rank] */
static int make_merges(const struct tt *t, size_t n_base, int32_t **out, size_t *n_out)
{
    size_t cap = n_base * 2 + 16, n = 0;
    int32_t *m = malloc(cap * 3 * sizeof *m);
    if (!m) return ERR_NOMEM;
    for (size_t id = 0; id < n_base; id++) {
        const char *s = t->tok[id];
        for (size_t k = 1; s && k < t->len[id]; k++) {
            int32_t l = lookup(t, s, k), r = l < 0 ? -1 : lookup(t, s + k, t->len[id] - k);
            if (r < 0) continue;
            if (n == cap) {
                int32_t *g = realloc(m, cap * 2 * 3 * sizeof *m);
                if (!g) {
                    free(m);
                    return ERR_NOMEM;
                }
                m = g;
                cap *= 2;
            }
            m[3 * n] = l;
            m[3 * n + 1] = r;
            m[3 * n + 2] = (int32_t)id;
            n++;
        }
    }
    *out = m;
    *n_out = n;
    return 0;
}

static int32_t find_id(const struct tt *t, const char *content)
{
    if (!content) return -1;
    for (size_t id = t->n; id-- > 0;)
        if (t->tok[id] && t->len[id] == strlen(content) && !memcmp(t->tok[id], content, t->len[id]))
            return (int32_t)id;
    return -1;
}

/* tiktoken.model and tokenizer_config.json of dir -> t (base tokens indexed, the specials
 * added); *cfg: the parsed config or NULL (the caller's, json_decref) */
static int load_dir(struct tt *t, const char *dir, size_t *n_base, json_t **cfg, char *err)
{
    char path[4096], cpath[4096];
    snprintf(path, sizeof path, "%s/tiktoken.model", dir);
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    *cfg = NULL;
    int rc = read_ranks(t, path, n_base, err);
    if (!rc) rc = index_tokens(t, *n_base, path, err);
    if (!rc) {
        FILE *f = fopen(cpath, "rb");
        json_error_t je;
        if (f) {
            *cfg = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
            fclose(f);
            if (!*cfg || !json_is_object(*cfg))
                rc = err_set(err, ERR_FORMAT, "%s: bad JSON at line %d: %s", cpath, je.line,
                             je.text);
        }
    }
    if (!rc) rc = add_specials(t, *n_base, *cfg, cpath, err);
    return rc;
}

int tok_create_tiktoken(struct tok **out, const char *dir, char *err)
{
    *out = NULL;
    struct tt t = {0};
    size_t n_base = 0, n_merges = 0;
    int32_t *merges = NULL;
    json_t *cfg = NULL;
    int rc = load_dir(&t, dir, &n_base, &cfg, err);
    if (!rc) rc = make_merges(&t, n_base, &merges, &n_merges);
    if (!rc) {
        static const char empty[1] = "";
        const char **toks = malloc(t.n * sizeof *toks);
        if (!toks) rc = ERR_NOMEM;
        for (size_t i = 0; toks && i < t.n; i++) toks[i] = t.tok[i] ? t.tok[i] : empty;
        const char *tmpl = json_string_value(json_object_get(cfg, "chat_template"));
        struct tok_vocab v = {
            .model = "tiktoken",
            .pre = "kimi",
            .n_tokens = t.n,
            .tokens = toks,
            .token_lens = t.len,
            .token_types = t.typ,
            .n_merges = n_merges,
            .merge_ids = merges,
            .bos_id = find_id(&t, content_of(json_object_get(cfg, "bos_token"))),
            .eos_id = find_id(&t, content_of(json_object_get(cfg, "eos_token"))),
            .add_bos = json_is_true(json_object_get(cfg, "add_bos_token")),
            .chat_template = tmpl,
        };
        if (!rc) rc = tok_create_vocab(out, &v, err);
        free(toks);
    }
    free(merges);
    json_decref(cfg);
    tt_free(&t);
    return rc;
}

/* ---------------------------------------------------------------- llama.cpp's GGUF form */

/* convert_hf_to_gguf.py's QwenModel.bpe(mergeable_ranks, token, max_rank=id): tiktoken's BPE on
 * the bytes of base token id with the ranks below id (the lowest-ranked pair first, leftmost on
 * ties). 1 and *cut (the length of the left part) when it ends in two parts, else 0. cut is
 * scratch of len + 1 entries. */
static int replay_split(const struct tt *t, size_t id, size_t *cut, size_t *left)
{
    const char *s = t->tok[id];
    size_t k = t->len[id]; /* parts: s[cut[i] .. cut[i + 1]) for i < k */
    for (size_t i = 0; i <= k; i++) cut[i] = i;
    while (k > 2) {
        int32_t best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 2 <= k; i++) {
            int32_t r = lookup(t, s + cut[i], cut[i + 2] - cut[i]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = i;
            }
        }
        if (best < 0 || (size_t)best >= id) break;
        memmove(cut + at + 1, cut + at + 2, (k - at - 1) * sizeof *cut);
        k--;
    }
    *left = cut[1];
    return k == 2;
}

int tok_tiktoken_to_gguf(struct gguf_writer *w, const char *dir, int n_vocab, char *err)
{
    struct tt t = {0};
    size_t n_base = 0, nm = 0, maxlen = 0;
    json_t *cfg = NULL;
    int rc = load_dir(&t, dir, &n_base, &cfg, err);
    size_t n = t.n;
    if (!rc && n_vocab > 0 && (size_t)n_vocab < t.n)
        rc = err_set(err, ERR_INVAL, "%s: the tokenizer has %zu ids, the model %d", dir, t.n,
                     n_vocab);
    if (!rc && n_vocab > 0) n = (size_t)n_vocab;
    for (size_t i = 0; i < t.n; i++)
        if (t.len[i] > maxlen) maxlen = t.len[i];
    char **str = rc ? NULL : calloc(n, sizeof *str), **mer = rc ? NULL : calloc(n, sizeof *mer);
    int32_t *type = rc ? NULL : malloc(n * sizeof *type);
    size_t *cut = rc ? NULL : malloc((maxlen + 1) * sizeof *cut);
    if (!rc && (!str || !mer || !type || !cut)) rc = ERR_NOMEM;
    for (size_t id = 0; !rc && id < n; id++) {
        if (id >= t.n || !t.tok[id]) { /* beyond the tokenizer, or a rank not given */
            type[id] = TOK_TYPE_UNUSED;
            if ((str[id] = malloc(32))) snprintf(str[id], 32, "[PAD%zu]", id);
        } else if (id >= n_base) { /* a special id */
            type[id] = t.typ[id];
            str[id] = strndup(t.tok[id], t.len[id]);
        } else {
            type[id] = TOK_TYPE_NORMAL;
            if ((str[id] = malloc(2 * t.len[id] + 1)))
                tok_bytelevel_encode(t.tok[id], t.len[id], str[id]);
            size_t l;
            if (str[id] && t.len[id] > 1 && replay_split(&t, id, cut, &l)) {
                size_t r = t.len[id] - l;
                if (!(mer[nm] = malloc(2 * (l + r) + 2))) rc = ERR_NOMEM;
                else {
                    size_t o = tok_bytelevel_encode(t.tok[id], l, mer[nm]);
                    mer[nm][o++] = ' ';
                    tok_bytelevel_encode(t.tok[id] + l, r, mer[nm] + o);
                    nm++;
                }
            }
        }
        if (!str[id]) rc = ERR_NOMEM;
    }
    if (!rc) {
        const char *tmpl = json_string_value(json_object_get(cfg, "chat_template"));
        int bad = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
        bad |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "kimi-k2");
        bad |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)str, n);
        bad |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, n);
        bad |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mer, nm);
        if (json_is_boolean(json_object_get(cfg, "add_bos_token")))
            bad |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
                                        json_is_true(json_object_get(cfg, "add_bos_token")));
        if (tmpl) bad |= gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
        if (bad) rc = err_set(err, ERR_NOMEM, "out of memory for the GGUF tokenizer");
    }
    for (size_t i = 0; str && i < n; i++) free(str[i]);
    for (size_t i = 0; mer && i < nm; i++) free(mer[i]);
    free(str);
    free(mer);
    free(type);
    free(cut);
    json_decref(cfg);
    tt_free(&t);
    return rc;
}
