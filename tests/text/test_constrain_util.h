/* test_constrain_util.h - shared by the constrained-decoding tests and benchmark: a random JSON
 * schema generator, a small JSON schema validator (the keywords jsonschema.c supports), a
 * synthetic byte-level vocabulary, and a driver that samples random allowed tokens until the
 * constraint is complete. Header-only (static functions), test code only. */
#ifndef TANDEM_TEST_CONSTRAIN_UTIL_H
#define TANDEM_TEST_CONSTRAIN_UTIL_H

#include "../../common/err.h"
#include "../../engine/text/constrain.h"
#include "../check.h"

#include <jansson.h>
#include <stdint.h>

struct trng {
    uint64_t s;
};

static inline uint64_t trng_next(struct trng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline int trng_int(struct trng *r, int n) { return (int)(trng_next(r) % (uint64_t)n); }

/* ---- random values and schemas ---- */

static const char *const gen_names[] = {"a",
                                        "ab",
                                        "abc",
                                        "name",
                                        "n",
                                        "id",
                                        "x_y",
                                        "caf\xc3\xa9",
                                        "\xe6\x97\xa5\xe6\x9c\xac",
                                        "long property name",
                                        "b"};
static const char *const gen_strings[] = {"",
                                          "a",
                                          "hello world",
                                          "quote\"d",
                                          "back\\slash",
                                          "tab\there",
                                          "\xc3\xa9t\xc3\xa9",
                                          "\xf0\x9f\x98\x80",
                                          "line\nbreak",
                                          "A"};

static inline json_t *gen_value(struct trng *r, int depth)
{
    switch (trng_int(r, depth > 1 ? 6 : 8)) {
    case 0: return json_integer(trng_int(r, 2001) - 1000);
    case 1: return json_real((double)(trng_int(r, 20001) - 10000) / 16.0);
    case 2: return json_string(gen_strings[trng_int(r, 10)]);
    case 3: return json_boolean(trng_int(r, 2));
    case 4: return json_null();
    case 5: return json_string(gen_names[trng_int(r, 11)]);
    case 6: {
        json_t *a = json_array();
        for (int i = trng_int(r, 3); i > 0; i--) json_array_append_new(a, gen_value(r, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = trng_int(r, 3); i > 0; i--)
            json_object_set_new(o, gen_names[trng_int(r, 11)], gen_value(r, depth + 1));
        return o;
    }
    }
}

static inline json_t *gen_schema(struct trng *r, int depth)
{
    static const char *const scalars[] = {"string", "number", "integer", "boolean", "null"};
    int k = trng_int(r, depth >= 3 ? 9 : 14);
    switch (k) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4: {
        json_t *t = json_pack("{s:s}", "type", scalars[k]);
        if (k == 0 && trng_int(r, 2)) { /* a string with length bounds */
            int mn = trng_int(r, 4);
            if (trng_int(r, 2)) json_object_set_new(t, "minLength", json_integer(mn));
            else mn = 0;
            if (trng_int(r, 2))
                json_object_set_new(t, "maxLength", json_integer(mn + trng_int(r, 6)));
        }
        return t;
    }
    case 5: {
        json_t *e = json_array();
        for (int i = 1 + trng_int(r, 4); i > 0; i--) json_array_append_new(e, gen_value(r, 1));
        return json_pack("{s:o}", "enum", e);
    }
    case 6: return json_pack("{s:o, s:s}", "const", gen_value(r, 1), "description", "a constant");
    case 7: return json_pack("{s:[s, s]}", "type", scalars[trng_int(r, 3)], "null");
    case 8: return trng_int(r, 2) ? json_true() : json_object();
    case 9:
    case 10:
    case 11: { /* object */
        json_t *props = json_object(), *req = json_array();
        int n = trng_int(r, 5);
        for (int i = 0; i < n; i++) {
            const char *nm = gen_names[trng_int(r, 11)];
            if (json_object_get(props, nm)) continue;
            json_object_set_new(props, nm, gen_schema(r, depth + 1));
            if (trng_int(r, 2)) json_array_append_new(req, json_string(nm));
        }
        json_t *o = json_pack("{s:s}", "type", "object");
        if (n || trng_int(r, 2)) json_object_set_new(o, "properties", props);
        else json_decref(props);
        int add = trng_int(r, 4);
        if (add == 1) json_object_set_new(o, "additionalProperties", json_false());
        if (add == 2) json_object_set_new(o, "additionalProperties", json_true());
        if (add == 3) json_object_set_new(o, "additionalProperties", gen_schema(r, depth + 1));
        if (add != 1 && trng_int(r, 4) == 0) json_array_append_new(req, json_string("extra"));
        if (json_array_size(req)) json_object_set_new(o, "required", req);
        else json_decref(req);
        return o;
    }
    case 12: { /* array */
        json_t *a = json_pack("{s:s, s:o}", "type", "array", "items", gen_schema(r, depth + 1));
        int mn = trng_int(r, 3);
        if (trng_int(r, 2)) json_object_set_new(a, "minItems", json_integer(mn));
        else mn = 0;
        if (trng_int(r, 2)) json_object_set_new(a, "maxItems", json_integer(mn + trng_int(r, 3)));
        return a;
    }
    default: { /* anyOf */
        json_t *alts = json_array();
        for (int i = 2 + trng_int(r, 2); i > 0; i--)
            json_array_append_new(alts, gen_schema(r, depth + 1));
        return json_pack("{s:o, s:s}", "anyOf", alts, "title", "either");
    }
    }
}

/* ---- validator (the supported subset; additionalProperties absent = allowed) ---- */

static inline int type_ok(const char *t, const json_t *v)
{
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    return 0;
}

static inline int validate(const json_t *s, const json_t *v)
{
    if (json_is_true(s)) return 1;
    if (!json_is_object(s)) return 0;
    json_t *x;
    if ((x = json_object_get(s, "anyOf"))) {
        for (size_t i = 0; i < json_array_size(x); i++)
            if (validate(json_array_get(x, i), v)) return 1;
        return 0;
    }
    if ((x = json_object_get(s, "const")) && !json_equal(x, (json_t *)v)) return 0;
    if ((x = json_object_get(s, "enum"))) {
        size_t i = 0;
        while (i < json_array_size(x) && !json_equal(json_array_get(x, i), (json_t *)v)) i++;
        if (i == json_array_size(x)) return 0;
    }
    if ((x = json_object_get(s, "type"))) {
        int ok = json_is_string(x) && type_ok(json_string_value(x), v);
        for (size_t i = 0; json_is_array(x) && i < json_array_size(x); i++)
            ok |= type_ok(json_string_value(json_array_get(x, i)), v);
        if (!ok) return 0;
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(s, "properties");
        json_t *add = json_object_get(s, "additionalProperties");
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val)
        {
            json_t *ps = json_object_get(props, k);
            if (ps) {
                if (!validate(ps, val)) return 0;
            } else if (add && json_is_false(add)) {
                return 0;
            } else if (add && json_is_object(add) && !validate(add, val)) {
                return 0;
            }
        }
        json_t *req = json_object_get(s, "required");
        for (size_t i = 0; i < json_array_size(req); i++)
            if (!json_object_get(v, json_string_value(json_array_get(req, i)))) return 0;
    }
    if (json_is_string(v)) { /* lengths in characters: UTF-8 lead bytes */
        json_int_t chars = 0;
        for (const char *p = json_string_value(v); *p; p++) chars += ((uint8_t)*p & 0xc0) != 0x80;
        json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
        if (mn && chars < json_integer_value(mn)) return 0;
        if (mx && chars > json_integer_value(mx)) return 0;
    }
    if (json_is_array(v)) {
        json_t *items = json_object_get(s, "items");
        for (size_t i = 0; items && i < json_array_size(v); i++)
            if (!validate(items, json_array_get(v, i))) return 0;
        json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
        if (mn && (json_int_t)json_array_size(v) < json_integer_value(mn)) return 0;
        if (mx && (json_int_t)json_array_size(v) > json_integer_value(mx)) return 0;
    }
    return 1;
}

/* ---- a synthetic byte-level vocabulary: all 256 bytes, JSON fragments, random pieces, a few
 * added tokens (never allowed in JSON) and EOS last ---- */

struct tvocab {
    int n;
    char **pieces;
    size_t *lens;
    uint8_t *added;
    int32_t eos;
};

static inline void tvocab_add(struct tvocab *v, const char *p, size_t len, int added)
{
    v->pieces[v->n] = malloc(len + 1);
    memcpy(v->pieces[v->n], p, len);
    v->pieces[v->n][len] = 0;
    v->lens[v->n] = len;
    v->added[v->n] = (uint8_t)added;
    v->n++;
}

static inline void tvocab_make(struct tvocab *v, struct trng *r, int n_random)
{
    static const char *const frags[] = {
        "{\"",
        "\":",
        "\": ",
        "\",",
        "\"}",
        "\"]",
        "},",
        "}]",
        "]}",
        "[{",
        "[]",
        "{}",
        "true",
        "false",
        "null",
        "tr",
        "ue",
        "nu",
        "ll",
        ", ",
        ",\n",
        "\n  ",
        "    ",
        "  ",
        "\n",
        "\\n",
        "\\\"",
        "\\u00e9",
        "\\ud83d",
        "12",
        "345",
        "0.",
        ".5",
        "e+",
        "E-",
        "-1",
        "name",
        "ab",
        "abc",
        "id",
        "\":\"",
        "\"\"",
        "\"a\"",
        "caf\xc3\xa9",
        "\xc3",
        "\xa9",
        "\xe6\x97\xa5",
        "\xf0\x9f",
        "\x98\x80",
        " \"",
        "\"\n",
        "x_y",
        "extra",
        "long",
        " property",
        "\"long property name\":",
        "\xe6\x97\xa5\xe6\x9c\xac",
        "hello",
        " world",
        "\"a\":1",
    };
    int cap = 256 + (int)(sizeof frags / sizeof frags[0]) + n_random + 8;
    v->n = 0;
    v->pieces = calloc((size_t)cap, sizeof *v->pieces);
    v->lens = calloc((size_t)cap, sizeof *v->lens);
    v->added = calloc((size_t)cap, 1);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        tvocab_add(v, &c, 1, 0);
    }
    for (size_t i = 0; i < sizeof frags / sizeof frags[0]; i++)
        tvocab_add(v, frags[i], strlen(frags[i]), 0);
    static const char alpha[] = "abcdefgxyz ABC_-019\"\\{}[]:,.\n\t";
    for (int i = 0; i < n_random; i++) {
        char buf[12];
        int len = 2 + trng_int(r, 6);
        for (int k = 0; k < len; k++) buf[k] = alpha[trng_int(r, (int)sizeof alpha - 1)];
        tvocab_add(v, buf, (size_t)len, 0);
    }
    tvocab_add(v, "<|User|>", 8, 1);
    tvocab_add(v, "\"", 1, 1); /* an added token whose text is JSON: must never be allowed */
    v->eos = v->n;
    tvocab_add(v, "<|eos|>", 7, 1);
}

static inline void tvocab_free(struct tvocab *v)
{
    for (int i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->lens);
    free(v->added);
}

/* ---- driver ---- */

struct drive_stats {
    long steps, oracle_checks;
};

static inline int has_closer(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '"' || p[i] == '}' || p[i] == ']' || p[i] == ',') return 1;
    return 0;
}

static inline int is_ws_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') return 0;
    return n > 0;
}

/* What the driver's closing phase needs to know of the JSON text so far (which the grammar
 * has accepted): the lexical nesting and whether an object key comes next. Text outside JSON
 * (the literals of a tool call) has no brackets or quotes, so it passes through. */
#define JLEX_MAX 64
struct jlex_core {
    int depth, in_str, esc;
    int pending;      /* after ',' or ':', until the value that must follow starts */
    int key_pos;      /* in an object after '{' or ',': a key or '}' comes next */
    uint64_t objects; /* bit d: the container open at depth d is an object */
};
struct jlex {
    struct jlex_core c;
    uint32_t serial;       /* containers opened so far */
    uint32_t id[JLEX_MAX]; /* per open container: its serial */
};

static inline void jlex_step(struct jlex_core *c, char ch)
{
    if (c->in_str) {
        if (c->esc) c->esc = 0;
        else if (ch == '\\') c->esc = 1;
        else if (ch == '"') c->in_str = 0;
        return;
    }
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') return;
    int key = c->key_pos;
    c->key_pos = 0;
    if (ch == ',' || ch == ':') c->pending = 1;
    else if (!(ch == '"' && key)) c->pending = 0; /* a key is still part of what is owed */
    if (ch == '"') {
        c->in_str = 1;
    } else if (ch == '{' || ch == '[') {
        if (c->depth >= 0 && c->depth < JLEX_MAX) {
            if (ch == '{') c->objects |= 1ull << c->depth;
            else c->objects &= ~(1ull << c->depth);
        }
        c->depth++;
        c->key_pos = ch == '{';
    } else if (ch == '}' || ch == ']') {
        c->depth--;
    } else if (ch == ',') {
        c->key_pos = c->depth > 0 && c->depth <= JLEX_MAX && (c->objects >> (c->depth - 1) & 1);
    }
}

static inline void jlex_feed(struct jlex *l, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!l->c.in_str && (p[i] == '{' || p[i] == '[') && l->c.depth >= 0 &&
            l->c.depth < JLEX_MAX)
            l->id[l->c.depth] = ++l->serial;
        jlex_step(&l->c, p[i]);
    }
}

/* The nesting: open containers, plus one inside a string, plus two from a ',' or ':' until the
 * value it wants starts (a key included), because closing the container is never a longer way
 * to the end than going on after a ','. */
static inline int jlex_level_core(const struct jlex_core *c)
{
    return c->depth + c->in_str + 2 * c->pending;
}

static inline int jlex_level(const struct jlex *l) { return jlex_level_core(&l->c); }

/* jlex_level after p[0..n), l unchanged */
static inline int jlex_level_after(const struct jlex *l, const char *p, size_t n)
{
    struct jlex_core c = l->c;
    for (size_t i = 0; i < n; i++) jlex_step(&c, p[i]);
    return jlex_level_core(&c);
}

/* Every property name gen_schema uses, and the fallback tool parameter: a required key is one
 * of these ("extra" first: it is the one required without being declared). */
static const char *const drive_keys[] = {"extra",
                                         "a",
                                         "ab",
                                         "abc",
                                         "name",
                                         "n",
                                         "id",
                                         "x_y",
                                         "caf\xc3\xa9",
                                         "\xe6\x97\xa5\xe6\x9c\xac",
                                         "long property name",
                                         "b",
                                         "city"};
/* Short values, written whole with their key when the grammar takes one of them. */
static const char *const drive_values[] = {"null", "0", "true", "false", "\"\"", "{}", "[]"};
#define N_DRIVE_KEYS ((int)(sizeof drive_keys / sizeof drive_keys[0]))
#define N_DRIVE_VALUES ((int)(sizeof drive_values / sizeof drive_values[0]))

/* Would the grammar accept out[0..at) followed by s? (a replay from scratch) */
static inline int drive_probe(const struct constrain_vocab *cv, struct jsonschema_grammar *g,
                              const char *out, size_t at, const char *s)
{
    struct constrain *o;
    CHECK_EQ(constrain_create(cv, g, &o, NULL), 0);
    CHECK_EQ(constrain_accept_bytes(o, out, at), 0);
    int ok = constrain_accept_bytes(o, s, strlen(s)) == 0;
    constrain_destroy(o);
    return ok;
}

/* What writing `key` after out[0..at) (at a key position) costs: 0 the grammar does not take it
 * there; 1 + v with the short value drive_values[v]; after those, a value that starts as a
 * scalar, then one that starts as an array, then one that starts as an object (whose own required
 * keys may have to be written too). */
static inline int drive_key_class(const struct constrain_vocab *cv, struct jsonschema_grammar *g,
                                  const char *out, size_t at, const char *key)
{
    char buf[96];
    snprintf(buf, sizeof buf, "\"%s\":", key);
    if (!drive_probe(cv, g, out, at, buf)) return 0;
    for (int v = 0; v < N_DRIVE_VALUES; v++) {
        snprintf(buf, sizeof buf, "\"%s\":%s", key, drive_values[v]);
        if (drive_probe(cv, g, out, at, buf)) return 1 + v;
    }
    snprintf(buf, sizeof buf, "\"%s\":{", key);
    if (drive_probe(cv, g, out, at, buf)) return 1 + N_DRIVE_VALUES + 2;
    snprintf(buf, sizeof buf, "\"%s\":[", key);
    if (drive_probe(cv, g, out, at, buf)) return 1 + N_DRIVE_VALUES + 1;
    return 1 + N_DRIVE_VALUES; /* a scalar */
}

/* Would the grammar close the object after out[0..at) (at a key position) with the keys of
 * mask, each with its short value (class 1 + v: drive_values[v])? */
static inline int drive_closes_with(const struct constrain_vocab *cv, struct jsonschema_grammar *g,
                                    const char *out, size_t at, uint32_t mask, const uint8_t *cls)
{
    char buf[1024];
    size_t n = 0;
    for (int h = 0; h < N_DRIVE_KEYS; h++)
        if (mask >> h & 1)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "\"%s\":%s,", drive_keys[h],
                                  drive_values[cls[h] - 1]);
    if (n == 0) return 0;
    buf[n - 1] = '}';
    return drive_probe(cv, g, out, at, buf);
}

/* Of ids[0..m), the token with the longest piece that is a prefix of s[0..n), or -1. */
static inline int32_t drive_prefix_token(const int32_t *ids, int m, const char *s, size_t n,
                                         const char *(*piece)(void *, int, size_t *), void *pud,
                                         size_t *len)
{
    int32_t t = -1;
    *len = 0;
    for (int i = 0; i < m; i++) {
        size_t pl;
        const char *p = piece(pud, ids[i], &pl);
        if (pl > *len && pl <= n && memcmp(p, s, pl) == 0) {
            *len = pl;
            t = ids[i];
        }
    }
    return t;
}

/* Sample random allowed tokens until EOS. Returns the output (malloc'd, *len) or NULL when it
 * did not finish within max_steps. piece(i) gives token bytes. With oracle_every > 0, every
 * that many steps a sample of tokens is checked against a replay from scratch (the mask must
 * say exactly what constrain_accept says).
 *
 * Two phases. For the first max_steps / 2 steps the walk is free: any allowed token, with a
 * mild preference for tokens holding a closing character, EOS one time in three when allowed.
 * That walk alone need not end, and how often it does depends on the draw: whether opening or
 * closing tokens are more often allowed depends on the vocabulary drawn, and where openers win,
 * the nesting climbs to the grammar's depth limit and stays there; and an object whose schema
 * requires a key but also allows any other key is left only when a random walk happens to spell
 * the required key. So the second half closes the output:
 *   - EOS as soon as it is allowed;
 *   - otherwise a random one of the allowed tokens that leave the lexical nesting lowest, pure
 *     whitespace only when nothing else is allowed: strings close, containers close as soon as
 *     the grammar lets them;
 *   - where a key must come but '}' is not allowed (a required key is missing), a key of
 *     drive_keys not yet written in that object that the grammar accepts there: first those
 *     whose value differs from an undeclared key's (declared properties), then the others;
 *     within each, the cheapest (drive_key_class: with a short value, else a scalar, array,
 *     object value; the value is then closed as above); and where keys with short values are
 *     enough to close the object, only the ones it needs (drive_closes_with, one key left out
 *     at a time). It is spelled out with the longest allowed tokens. Every required key is one
 *     of drive_keys and each is written at most once per object, so the object can close after
 *     at most that many keys.
 * Each level thus closes within a bounded number of tokens (whitespace, numbers and enums are
 * bounded by the grammar), so the output finishes within the budget whatever was drawn. */
static inline char *drive(const struct constrain_vocab *cv, struct jsonschema_grammar *g,
                          const char *(*piece)(void *, int, size_t *), void *pud, int32_t eos_id,
                          struct trng *r, int max_steps, int oracle_every, size_t *len,
                          struct drive_stats *st)
{
    int n = constrain_vocab_size(cv);
    struct constrain *c;
    char err[ERR_LEN];
    CHECK_EQ(constrain_create(cv, g, &c, err), 0);
    uint64_t *bits = malloc(((size_t)n + 63) / 64 * 8);
    int32_t *ids = malloc((size_t)n * sizeof *ids), *low = malloc((size_t)n * sizeof *low);
    size_t cap = 256, at = 0;
    char *out = malloc(cap);
    int finished = 0;
    struct jlex lex;
    memset(&lex, 0, sizeof lex);
    char forced[96]; /* closing phase: a key being spelled out */
    size_t forced_len = 0, forced_at = 0;
    /* per open object (by nesting level): its id, the keys written or found not allowed, each
     * key's drive_key_class and that of a key no schema declares, found when the object first
     * needs a key */
    uint32_t keys_obj[JLEX_MAX] = {0}, keys_tried[JLEX_MAX] = {0};
    uint8_t keys_class[JLEX_MAX][N_DRIVE_KEYS], keys_free[JLEX_MAX];
    uint32_t keys_later[JLEX_MAX]; /* keys the object can close without */
    uint8_t keys_known[JLEX_MAX];  /* keys_class, keys_free and keys_later are set */
    for (int step = 0; step < max_steps; step++) {
        int closing = step >= max_steps / 2;
        int k = constrain_allowed(c, bits);
        CHECK(k > 0);
        int m = 0, eos_ok = 0, n_close = 0;
        int32_t eos = -1;
        for (int i = 0; i < n; i++) {
            if (!(bits[i / 64] >> (i % 64) & 1)) continue;
            size_t pl;
            const char *p = piece(pud, i, &pl);
            if (i == eos_id) {
                eos_ok = 1;
                eos = i;
                continue;
            }
            ids[m++] = i;
            if (has_closer(p, pl)) n_close++;
        }
        CHECK_EQ(k, m + eos_ok);
        CHECK_EQ(eos_ok, constrain_done(c));
        if (oracle_every && step % oracle_every == 0) {
            /* every allowed token and a sample of others, replayed from scratch */
            for (int probe = 0; probe < 24; probe++) {
                int t = probe < 12 && m ? ids[trng_int(r, m)] : trng_int(r, n);
                struct constrain *o;
                CHECK_EQ(constrain_create(cv, g, &o, err), 0);
                CHECK_EQ(constrain_accept_bytes(o, out, at), 0);
                int ok = constrain_accept(o, t) == 0;
                int bit = (int)(bits[t / 64] >> (t % 64) & 1);
                if (ok != bit) {
                    size_t pl;
                    const char *p = piece(pud, t, &pl);
                    fprintf(stderr,
                            "mask/accept mismatch: token %d \"%.*s\" bit %d accept %d after "
                            "\"%.*s\"\n",
                            t, (int)pl, p, bit, ok, (int)at, out);
                }
                CHECK_EQ(ok, bit);
                constrain_destroy(o);
                st->oracle_checks++;
            }
        }
        if (eos_ok && (m == 0 || closing || trng_int(r, 3) == 0)) {
            CHECK_EQ(constrain_accept(c, eos), 0);
            finished = 1;
            break;
        }
        int32_t t = -1;
        if (closing && forced_at < forced_len) {
            size_t tl;
            t = drive_prefix_token(ids, m, forced + forced_at, forced_len - forced_at, piece, pud,
                                   &tl);
            CHECK(t >= 0); /* the whole key was accepted: see below */
            forced_at += tl;
        } else if (closing) {
            /* the lowest-nesting tokens into low[0..kept), of the non-whitespace ones if any */
            int best = INT32_MAX, best_ws = 2, kept = 0;
            for (int i = 0; i < m; i++) {
                size_t pl;
                const char *p = piece(pud, ids[i], &pl);
                int lv = jlex_level_after(&lex, p, pl), ws = is_ws_piece(p, pl);
                if (ws > best_ws || (ws == best_ws && lv > best)) continue;
                if (ws < best_ws || lv < best) kept = 0;
                best = lv;
                best_ws = ws;
                low[kept++] = ids[i];
            }
            int d = lex.c.depth - 1, close_ok = 0;
            for (int i = 0; i < m && lex.c.key_pos && !close_ok; i++) {
                size_t pl;
                const char *p = piece(pud, ids[i], &pl);
                close_ok = pl == 1 && p[0] == '}';
            }
            if (lex.c.key_pos && !lex.c.in_str && !close_ok && d >= 0 && d < JLEX_MAX) {
                /* a key must come and '}' may not: see above */
                if (keys_obj[d] != lex.id[d]) {
                    keys_obj[d] = lex.id[d];
                    keys_tried[d] = 0;
                    keys_known[d] = 0;
                }
                forced_len = forced_at = 0;
                /* the cheap case first (any object that only needs some key: json_object's):
                 * one key with a null value that lets the object close */
                for (int h = 0; h < N_DRIVE_KEYS && !keys_known[d] && !forced_len; h++) {
                    if (keys_tried[d] >> h & 1) continue;
                    snprintf(forced, sizeof forced, "\"%s\":null}", drive_keys[h]);
                    if (drive_probe(cv, g, out, at, forced)) {
                        forced_len = strlen(forced) - 1;
                        keys_tried[d] |= 1u << h;
                    }
                }
                if (!forced_len && !keys_known[d]) {
                    keys_known[d] = 1;
                    for (int h = 0; h < N_DRIVE_KEYS; h++)
                        keys_class[d][h] = (uint8_t)drive_key_class(cv, g, out, at, drive_keys[h]);
                    keys_free[d] = (uint8_t)drive_key_class(cv, g, out, at, "undeclared");
                    /* if the keys with short values are enough to close the object, find the
                     * few of them it needs (the others can only be optional) */
                    uint32_t short_keys = 0;
                    for (int h = 0; h < N_DRIVE_KEYS; h++)
                        if (keys_class[d][h] >= 1 && keys_class[d][h] <= N_DRIVE_VALUES)
                            short_keys |= 1u << h;
                    keys_later[d] = 0;
                    if (drive_closes_with(cv, g, out, at, short_keys, keys_class[d])) {
                        uint32_t need = short_keys;
                        for (int h = 0; h < N_DRIVE_KEYS; h++)
                            if ((need >> h & 1) &&
                                drive_closes_with(cv, g, out, at, need & ~(1u << h), keys_class[d]))
                                need &= ~(1u << h);
                        keys_later[d] = ((1u << N_DRIVE_KEYS) - 1) & ~need;
                    }
                }
                while (!forced_len) {
                    /* not the keys the object can close without; declared keys first (a class
                     * other than an undeclared key's): only they and "extra" can be required;
                     * then the cheapest */
                    int pick = -1, pick_rank = 0;
                    for (int h = 0; h < N_DRIVE_KEYS; h++) {
                        if ((keys_tried[d] >> h & 1) || !keys_class[d][h]) continue;
                        int rank = (int)(keys_later[d] >> h & 1) * 512 +
                                   (keys_class[d][h] == keys_free[d]) * 256 + keys_class[d][h];
                        if (pick < 0 || rank < pick_rank) {
                            pick = h;
                            pick_rank = rank;
                        }
                    }
                    if (pick < 0) break;
                    int cl = keys_class[d][pick], v = cl - 1;
                    snprintf(forced, sizeof forced, "\"%s\":%s", drive_keys[pick],
                             v < N_DRIVE_VALUES ? drive_values[v] : "");
                    if (drive_probe(cv, g, out, at, forced)) {
                        forced_len = strlen(forced);
                        keys_tried[d] |= 1u << pick;
                    } else {
                        /* the class is out of date: an anyOf alternative has been ruled out
                         * since the object's first key */
                        keys_class[d][pick] =
                            (uint8_t)drive_key_class(cv, g, out, at, drive_keys[pick]);
                        if (keys_class[d][pick] == cl || keys_class[d][pick] == 0)
                            keys_tried[d] |= 1u << pick;
                    }
                }
                if (forced_len) {
                    /* accepted as a whole, so its first byte is allowed: with a byte-level
                     * vocabulary some token is a prefix of it, and so on to its end */
                    size_t tl;
                    t = drive_prefix_token(ids, m, forced, forced_len, piece, pud, &tl);
                    CHECK(t >= 0);
                    forced_at = tl;
                }
            }
            if (t < 0) t = low[trng_int(r, kept)];
        } else if (n_close && trng_int(r, 2) == 0) {
            int pick = trng_int(r, n_close);
            t = -1;
            for (int i = 0; i < m; i++) {
                size_t pl;
                const char *p = piece(pud, ids[i], &pl);
                if (has_closer(p, pl) && pick-- == 0) {
                    t = ids[i];
                    break;
                }
            }
        } else {
            t = ids[trng_int(r, m)];
        }
        size_t pl;
        const char *p = piece(pud, t, &pl);
        CHECK_EQ(constrain_accept(c, t), 0);
        jlex_feed(&lex, p, pl);
        while (at + pl + 1 > cap) out = realloc(out, cap *= 2);
        memcpy(out + at, p, pl);
        at += pl;
        st->steps++;
    }
    /* after EOS nothing is allowed */
    if (finished) CHECK_EQ(constrain_allowed(c, bits), 0);
    constrain_destroy(c);
    free(bits);
    free(ids);
    free(low);
    out[at] = 0;
    *len = at;
    if (!finished) {
        free(out);
        return NULL;
    }
    return out;
}

#endif
