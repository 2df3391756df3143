/* constrain.c - the grammar automaton and the per-step token mask (see constrain.h).
 *
 * Automaton: the state is a small set of stacks (several when an anyOf is still undecided);
 * each stack is an array of frames: ROOT at the bottom, then one frame per open value
 * (object, array, string, number, literal, sequence) and a KEY frame while an object key is
 * being written. feed() consumes one byte on one stack and adds the 0..k resulting stacks to a
 * set (anyOf forks when its value starts; identical stacks are merged; more than CMAXS live
 * alternatives are cut, which can only remove valid outputs, never add invalid ones). Numbers
 * end at the first byte that cannot continue them: the frame is popped and the byte handed to
 * the parent. Every state has a completion (the grammar has no dead ends: jsonschema.c), so
 * the model can always finish.
 *
 * Mask: the vocabulary is kept as a flattened trie (tokens sorted by bytes + the common prefix
 * length with the previous token). walk() steps the automaton once per new byte along that
 * order, reusing the states of the shared prefix, and skips every token under a prefix that
 * died. Inside a JSON string (and a free object key) almost every token is possible, so that
 * case is special-cased: tokens without '"', '\\' and control bytes are allowed straight from
 * a precomputed bitset (per UTF-8 continuation state), and only the tokens whose first such
 * byte is '"' or '\\' are walked, from the byte where they leave plain text.
 * Threads: see constrain.h. All scratch memory is allocated at constrain_create.
 */
#include "constrain.h"

#include "common/err.h"
#include "common/utf8.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CMAXD 48 /* frames per stack */
#define CMAXS 8  /* live alternatives */

enum { FK_ROOT = 1, FK_VAL, FK_KEY };
enum { R_BEFORE = 0, R_IN, R_DONE };
enum { S_START = 0, S_BODY, S_ESC, S_HEX };
enum { N_START = 0, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
enum { O_START = 0, O_FIRST, O_NEXT, O_COLON, O_VAL, O_AFTER };
enum { A_START = 0, A_FIRST, A_NEXT, A_AFTER };

#define MAX_INT_DIGITS 15
#define MAX_FRAC_DIGITS 15
#define MAX_EXP_DIGITS 2

/* 24 bytes, no padding (stacks are compared with memcmp) */
struct cframe {
    uint32_t node;
    uint8_t fk, st, ws, u8; /* frame kind, state, whitespace run, UTF-8 state (utf8.h DFA) */
    uint16_t pos, aux;      /* literal/key/digit position; object: current prop + 1; hex flags */
    uint32_t cnt;           /* array: items so far */
    uint64_t bits;          /* object: props used; key: candidate props */
};

struct cstack {
    uint32_t depth;
    uint32_t pad;
    struct cframe f[CMAXD];
};

struct cset {
    int n;
    struct cstack s[CMAXS];
};

/* A token list in trie order: entry i is token tok[i] from byte off[i]; lcp[i] = common prefix
 * (from the offsets) with entry i-1. */
struct wlist {
    const struct constrain_vocab *v; /* for the sort comparator */
    uint32_t n;
    uint32_t *tok;
    uint16_t *off;
    uint16_t *lcp;
    uint8_t *pv;    /* string list: bit u = the plain prefix is valid UTF-8 from
                       state u and ends on a character boundary */
    uint32_t *base; /* the trie nodes that start at entry i (depths lcp[i] + 1 ..
                       length) have their subtree end (one past the last entry) at
                       ends[base[i] + depth - lcp[i] - 1] */
    uint32_t *ends;
    /* what walk() reads, in trie order and contiguous (the walk runs with cold caches between
     * decode steps, so it should stream through memory rather than chase token ids) */
    struct wentry *e;
    uint8_t *ebytes;
};

struct wentry {
    uint32_t tok;
    uint32_t boff;      /* bytes at ebytes + boff (from the entry's offset on) */
    uint32_t ends_base; /* = base[i] */
    uint16_t len;       /* bytes from the offset */
    uint16_t lcp;
    uint16_t tail; /* bytes[tail..len) are string bytes (relative to the offset) */
    uint8_t pv;
    uint8_t pad;
};

struct constrain_vocab {
    int n;
    int32_t eos;
    uint32_t *boff; /* token i: bytes[boff[i] .. boff[i] + blen[i]) */
    uint16_t *blen;
    uint16_t *tail; /* token i: bytes[tail[i]..) are all string bytes (no '"', '\\',
                       control) */
    uint8_t *bytes;
    uint8_t *added;
    uint32_t *added_ids;
    uint32_t n_added;
    int maxlen;
    size_t words;
    uint64_t *plain[UTF8_DFA_STATES]; /* tokens of string bytes only, valid from state u */
    struct wlist all, str;
};

struct constrain {
    const struct constrain_vocab *v;
    struct jsonschema_grammar *g;
    struct cset cur;
    struct cset *levels; /* [maxlen + 1] walk scratch */
    struct cset tmp[2];
    struct cset one; /* single-stack start set */
    uint64_t *bits;
    int ended; /* EOS accepted */
};

static int is_plain(uint8_t b) { return b != '"' && b != '\\' && b >= 0x20; }
static int is_ws(uint8_t b) { return b == ' ' || b == '\n' || b == '\r' || b == '\t'; }
static int is_digit(uint8_t b) { return b >= '0' && b <= '9'; }

/* ---- the automaton ---- */

static void set_add(struct cset *out, const struct cstack *s)
{
    size_t sz = s->depth * sizeof(struct cframe);
    for (int i = 0; i < out->n; i++)
        if (out->s[i].depth == s->depth && memcmp(out->s[i].f, s->f, sz) == 0) return;
    if (out->n == CMAXS) return; /* too many alternatives: drop (sound, see above) */
    struct cstack *d = &out->s[out->n++];
    d->depth = s->depth;
    memcpy(d->f, s->f, sz);
}

static void stack_copy(struct cstack *d, const struct cstack *s)
{
    d->depth = s->depth;
    memcpy(d->f, s->f, s->depth * sizeof(struct cframe));
}

static struct cframe *top(struct cstack *s) { return &s->f[s->depth - 1]; }

/* The frame on top finished its value and was popped: tell the parent. */
static void child_done(const struct jsonschema_grammar *g, struct cstack *s)
{
    for (;;) {
        struct cframe *p = top(s);
        if (p->fk == FK_ROOT) {
            p->st = R_DONE;
            return;
        }
        const struct jsonschema_node *n = &g->nodes[p->node];
        if (n->kind == JSK_OBJECT) {
            p->st = O_AFTER;
            p->ws = 0;
        } else if (n->kind == JSK_ARRAY) {
            p->cnt++;
            p->st = A_AFTER;
            p->ws = 0;
        } else if (n->kind == JSK_SEQ) {
            if (++p->pos == n->n_alts) {
                s->depth--;
                continue;
            }
        }
        return;
    }
}

static void feed(const struct jsonschema_grammar *g, struct cstack *s, uint8_t b, struct cset *out);

/* Start a value of `node` with byte b on stack s (s is consumed). */
static void push_value(const struct jsonschema_grammar *g, struct cstack *s, uint32_t node,
                       uint8_t b, struct cset *out)
{
    const struct jsonschema_node *n = &g->nodes[node];
    if (n->kind == JSK_ANYOF) {
        for (uint32_t i = 0; i < n->n_alts; i++) {
            struct cstack c;
            if (i + 1 < n->n_alts) stack_copy(&c, s);
            push_value(g, i + 1 < n->n_alts ? &c : s, n->alts[i], b, out);
        }
        return;
    }
    if (n->kind == JSK_ANY) {
        int k;
        if (b == '{' || b == '[') {
            if (s->depth + 4 > CMAXD) return; /* too deep: only scalars from here */
            k = b == '{' ? 0 : 1;
        } else if (b == '"') k = 2;
        else if (b == '-' || is_digit(b)) k = 3;
        else if (b == 't') k = 4;
        else if (b == 'f') k = 5;
        else if (b == 'n') k = 6;
        else return;
        push_value(g, s, n->alts[k], b, out);
        return;
    }
    if (s->depth == CMAXD) return;
    struct cframe *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->node = node;
    f->fk = FK_VAL;
    feed(g, s, b, out);
}

/* Whitespace in a structural position: count it against the grammar's max_ws (not counted
 * when free, so free whitespace adds no states). Returns 1 if b was whitespace (handled). */
static int ws_byte(const struct jsonschema_grammar *g, struct cstack *s, struct cframe *f,
                   uint8_t b, struct cset *out)
{
    if (!is_ws(b)) return 0;
    if (g->max_ws == JSONSCHEMA_WS_FREE) {
        set_add(out, s);
    } else if (f->ws < g->max_ws && f->ws < UINT8_MAX) {
        f->ws++;
        set_add(out, s);
    }
    return 1;
}

/* Does the string node limit its length? (Then its frame counts characters in cnt.) */
static int str_bounded(const struct jsonschema_node *n)
{
    return n->min_items > 0 || n->max_items != UINT32_MAX;
}

static int more_keys(const struct jsonschema_node *n, uint64_t used)
{
    if (n->additional >= 0) return 1;
    uint64_t all = n->n_props == 64 ? ~0ull : (1ull << n->n_props) - 1;
    return (used & all) != all;
}

static void push_key(const struct jsonschema_node *n, struct cstack *s, struct cset *out)
{
    struct cframe *o = top(s);
    if (s->depth == CMAXD || !more_keys(n, o->bits)) return;
    uint64_t all = n->n_props == 64 ? ~0ull : (1ull << n->n_props) - 1;
    struct cframe *k = &s->f[s->depth++];
    memset(k, 0, sizeof *k);
    k->node = o->node;
    k->fk = FK_KEY;
    k->bits = n->additional >= 0 ? all : all & ~o->bits;
    set_add(out, s);
}

static void key_byte(const struct jsonschema_grammar *g, struct cstack *s, struct cframe *k,
                     uint8_t b, struct cset *out)
{
    const struct jsonschema_node *n = &g->nodes[k->node];
    int free_ok = n->additional >= 0;
    if (b == '"' && k->u8 == 0) {
        struct cframe *o = &s->f[s->depth - 2];
        int found = -1;
        for (uint64_t m = k->bits; m; m &= m - 1) {
            int i = __builtin_ctzll(m);
            if (n->props[i].name_len == k->pos) {
                found = i;
                break;
            }
        }
        if (found >= 0) {
            if ((o->bits >> found) & 1) return; /* duplicate key */
            o->bits |= 1ull << found;
            o->aux = (uint16_t)(found + 1);
        } else {
            if (!free_ok) return;
            o->aux = 0;
        }
        s->depth--;
        o->st = O_COLON;
        o->ws = 0;
        set_add(out, s);
        return;
    }
    if (b == '\\' || b < 0x20 || b == '"') return;
    int u = utf8_dfa_next(k->u8, b);
    if (u < 0) return;
    k->u8 = (uint8_t)u;
    uint64_t cand = 0;
    if (k->pos < UINT16_MAX) {
        for (uint64_t m = k->bits; m; m &= m - 1) {
            int i = __builtin_ctzll(m);
            if (n->props[i].name_len > k->pos && (uint8_t)n->props[i].name[k->pos] == b)
                cand |= 1ull << i;
        }
        k->pos++;
    }
    k->bits = cand;
    if (!cand && !free_ok) return;
    set_add(out, s);
}

/* Consume b on stack s; add the resulting stacks to out. s is scratch (modified). */
static void feed(const struct jsonschema_grammar *g, struct cstack *s, uint8_t b, struct cset *out)
{
    for (;;) {
        struct cframe *f = top(s);
        if (f->fk == FK_ROOT) {
            if (f->st != R_BEFORE) return;
            int raw = g->nodes[g->root].kind == JSK_SEQ || g->nodes[g->root].kind == JSK_LITERAL;
            if (!raw && ws_byte(g, s, f, b, out)) return; /* JSON may start after whitespace */
            f->st = R_IN;
            push_value(g, s, g->root, b, out);
            return;
        }
        if (f->fk == FK_KEY) {
            key_byte(g, s, f, b, out);
            return;
        }
        const struct jsonschema_node *n = &g->nodes[f->node];
        switch (n->kind) {
        case JSK_STRING:
            switch (f->st) {
            case S_START:
                if (b != '"') return;
                f->st = S_BODY;
                set_add(out, s);
                return;
            case S_BODY:
                if (f->u8 == 0 && b == '"') {
                    if (f->cnt < n->min_items) return;
                    s->depth--;
                    child_done(g, s);
                    set_add(out, s);
                    return;
                }
                if (f->u8 == 0 && str_bounded(n)) { /* a character starts */
                    if (f->cnt >= n->max_items) return;
                    f->cnt++;
                }
                if (f->u8 == 0 && b == '\\') {
                    f->st = S_ESC;
                    set_add(out, s);
                    return;
                }
                if (b < 0x20) return;
                {
                    int u = utf8_dfa_next(f->u8, b);
                    if (u < 0) return;
                    f->u8 = (uint8_t)u;
                }
                set_add(out, s);
                return;
            case S_ESC:
                if (b == 'u') {
                    f->st = S_HEX;
                    f->pos = 0;
                    f->aux = 0;
                } else if (strchr("\"\\/bfnrt", b) && b) {
                    f->st = S_BODY;
                } else {
                    return;
                }
                set_add(out, s);
                return;
            case S_HEX: {
                int v;
                if (is_digit(b)) v = b - '0';
                else if (b >= 'a' && b <= 'f') v = b - 'a' + 10;
                else if (b >= 'A' && b <= 'F') v = b - 'A' + 10;
                else return;
                if (f->pos == 0 && v == 0xd) f->aux |= 1;
                if (f->pos == 1 && (f->aux & 1) && v >= 8) return;  /* no surrogates */
                if (f->pos == 3 && !(f->aux & 2) && v == 0) return; /* no \u0000 */
                if (v) f->aux |= 2;
                if (++f->pos == 4) f->st = S_BODY;
                set_add(out, s);
                return;
            }
            }
            return;
        case JSK_NUMBER:
        case JSK_INTEGER: {
            int real = n->kind == JSK_NUMBER;
            switch (f->st) {
            case N_START:
            case N_MINUS:
                if (b == '-' && f->st == N_START) f->st = N_MINUS;
                else if (b == '0') f->st = N_ZERO;
                else if (is_digit(b)) f->st = N_INT, f->pos = 1;
                else return;
                set_add(out, s);
                return;
            case N_DOT:
                if (!is_digit(b)) return;
                f->st = N_FRAC;
                f->pos = 1;
                set_add(out, s);
                return;
            case N_E:
                if (b == '+' || b == '-') f->st = N_ESIGN;
                else if (is_digit(b)) f->st = N_EXP, f->pos = 1;
                else return;
                set_add(out, s);
                return;
            case N_ESIGN:
                if (!is_digit(b)) return;
                f->st = N_EXP;
                f->pos = 1;
                set_add(out, s);
                return;
            default: /* final states: ZERO, INT, FRAC, EXP */
                if (is_digit(b)) {
                    int cap = f->st == N_INT    ? MAX_INT_DIGITS
                              : f->st == N_FRAC ? MAX_FRAC_DIGITS
                              : f->st == N_EXP  ? MAX_EXP_DIGITS
                                                : 0;
                    if (f->pos < cap) {
                        f->pos++;
                        set_add(out, s);
                    }
                    return;
                }
                if (real && b == '.' && (f->st == N_ZERO || f->st == N_INT)) {
                    f->st = N_DOT;
                    set_add(out, s);
                    return;
                }
                if (real && (b == 'e' || b == 'E') && f->st != N_EXP) {
                    f->st = N_E;
                    set_add(out, s);
                    return;
                }
                /* the number ended: the parent takes b */
                s->depth--;
                child_done(g, s);
                continue;
            }
            return;
        }
        case JSK_ENUM: {
            /* texts[cnt..bits) all start with the pos bytes matched so far */
            if (f->st == 0) {
                f->st = 1;
                f->cnt = 0;
                f->bits = n->n_texts;
            }
            uint32_t lo = f->cnt, hi = (uint32_t)f->bits, pos = f->pos;
            uint32_t a = lo;
            if (a < hi && n->text_lens[a] == pos) a++; /* the one text that ends here */
            /* [a, hi) is sorted by the byte at pos: find the run equal to b */
            uint32_t x = a, y = hi;
            while (x < y) {
                uint32_t mid = x + (y - x) / 2;
                if ((uint8_t)n->texts[mid][pos] < b) x = mid + 1;
                else y = mid;
            }
            uint32_t e = x;
            y = hi;
            while (e < y) {
                uint32_t mid = e + (y - e) / 2;
                if ((uint8_t)n->texts[mid][pos] <= b) e = mid + 1;
                else y = mid;
            }
            if (x < e && pos < UINT16_MAX) {
                f->cnt = x;
                f->bits = e;
                f->pos++;
                if (e - x == 1 && n->text_lens[x] == pos + 1) {
                    s->depth--;
                    child_done(g, s);
                }
                set_add(out, s);
                return;
            }
            if (lo < hi && n->text_lens[lo] == pos && pos > 0) {
                /* a complete value (a number that another value extends): the parent takes b */
                s->depth--;
                child_done(g, s);
                continue;
            }
            return;
        }
        case JSK_CONST:
        case JSK_LITERAL:
            if (f->pos >= n->text_len || (uint8_t)n->text[f->pos] != b) return;
            if (++f->pos == n->text_len) {
                s->depth--;
                child_done(g, s);
            }
            set_add(out, s);
            return;
        case JSK_SEQ: push_value(g, s, n->alts[f->pos], b, out); return;
        case JSK_OBJECT:
            switch (f->st) {
            case O_START:
                if (b != '{') return;
                f->st = O_FIRST;
                set_add(out, s);
                return;
            case O_FIRST:
            case O_NEXT:
                if (ws_byte(g, s, f, b, out)) return;
                if (b == '"') {
                    push_key(n, s, out);
                    return;
                }
                if (b == '}' && f->st == O_FIRST && (n->required & ~f->bits) == 0) {
                    s->depth--;
                    child_done(g, s);
                    set_add(out, s);
                }
                return;
            case O_COLON:
                if (ws_byte(g, s, f, b, out)) return;
                if (b != ':') return;
                f->st = O_VAL;
                f->ws = 0;
                set_add(out, s);
                return;
            case O_VAL:
                if (ws_byte(g, s, f, b, out)) return;
                push_value(g, s, f->aux ? n->props[f->aux - 1].node : (uint32_t)n->additional, b,
                           out);
                return;
            case O_AFTER:
                if (ws_byte(g, s, f, b, out)) return;
                if (b == ',' && more_keys(n, f->bits)) {
                    f->st = O_NEXT;
                    f->ws = 0;
                    set_add(out, s);
                } else if (b == '}' && (n->required & ~f->bits) == 0) {
                    s->depth--;
                    child_done(g, s);
                    set_add(out, s);
                }
                return;
            }
            return;
        case JSK_ARRAY:
            switch (f->st) {
            case A_START:
                if (b != '[') return;
                f->st = A_FIRST;
                set_add(out, s);
                return;
            case A_FIRST:
            case A_NEXT:
                if (ws_byte(g, s, f, b, out)) return;
                if (b == ']' && f->st == A_FIRST) {
                    if (n->min_items == 0) {
                        s->depth--;
                        child_done(g, s);
                        set_add(out, s);
                    }
                    return;
                }
                if (n->max_items == 0) return;
                push_value(g, s, n->items, b, out);
                return;
            case A_AFTER:
                if (ws_byte(g, s, f, b, out)) return;
                if (b == ',' && f->cnt < n->max_items) {
                    f->st = A_NEXT;
                    f->ws = 0;
                    set_add(out, s);
                } else if (b == ']' && f->cnt >= n->min_items) {
                    s->depth--;
                    child_done(g, s);
                    set_add(out, s);
                }
                return;
            }
            return;
        case JSK_ANY:
        case JSK_ANYOF: return; /* never frames */
        }
        return;
    }
}

/* Could the output end here? (numbers end without a terminator) */
static int at_end(const struct jsonschema_grammar *g, const struct cstack *s0)
{
    struct cstack s;
    stack_copy(&s, s0);
    for (;;) {
        struct cframe *f = top(&s);
        if (f->fk == FK_ROOT) return f->st == R_DONE;
        if (f->fk != FK_VAL) return 0;
        const struct jsonschema_node *n = &g->nodes[f->node];
        if (n->kind == JSK_ENUM && f->st == 1 && f->pos > 0 && n->text_lens[f->cnt] == f->pos) {
            s.depth--;
            child_done(g, &s);
            continue;
        }
        int k = n->kind;
        if ((k != JSK_NUMBER && k != JSK_INTEGER) ||
            !(f->st == N_ZERO || f->st == N_INT || f->st == N_FRAC || f->st == N_EXP))
            return 0;
        s.depth--;
        child_done(g, &s);
    }
}

static void step_set(const struct jsonschema_grammar *g, const struct cset *in, uint8_t b,
                     struct cset *out)
{
    struct cstack tmp;
    out->n = 0;
    for (int i = 0; i < in->n; i++) {
        stack_copy(&tmp, &in->s[i]);
        feed(g, &tmp, b, out);
    }
}

/* The raw literal text that must come next on s, or NULL (for added tokens). */
static const char *next_literal(const struct jsonschema_grammar *g, const struct cstack *s,
                                size_t *len)
{
    const struct cframe *f = &s->f[s->depth - 1];
    uint32_t node;
    if (f->fk == FK_ROOT) {
        if (f->st != R_BEFORE) return NULL;
        node = g->root;
    } else if (f->fk == FK_VAL && g->nodes[f->node].kind == JSK_LITERAL) {
        *len = g->nodes[f->node].text_len - f->pos;
        return g->nodes[f->node].text + f->pos;
    } else if (f->fk == FK_VAL && g->nodes[f->node].kind == JSK_SEQ) {
        node = g->nodes[f->node].alts[f->pos];
    } else {
        return NULL;
    }
    while (g->nodes[node].kind == JSK_SEQ) node = g->nodes[node].alts[0];
    if (g->nodes[node].kind != JSK_LITERAL) return NULL;
    *len = g->nodes[node].text_len;
    return g->nodes[node].text;
}

/* Does the raw literal next on s start with the whole text of an added token (a tool-call
 * marker, "</think>")? Then that token is the only way on: the marker is never spelled out in
 * ordinary tokens, which a client would see as text. */
static int marker_next(const struct constrain_vocab *v, const struct jsonschema_grammar *g,
                       const struct cstack *s);

/* ---- vocabulary ---- */

static const uint8_t *tok_bytes(const struct constrain_vocab *v, uint32_t t)
{
    return v->bytes + v->boff[t];
}

static int cmp_entry(const void *a, const void *b, void *arg)
{
    const struct wlist *L = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    const struct constrain_vocab *v = L->v;
    uint32_t ti = L->tok[i], tj = L->tok[j];
    const uint8_t *p = tok_bytes(v, ti) + L->off[i], *q = tok_bytes(v, tj) + L->off[j];
    size_t n = v->blen[ti] - L->off[i], m = v->blen[tj] - L->off[j];
    int c = memcmp(p, q, n < m ? n : m);
    if (c) return c;
    return n < m ? -1 : n > m ? 1 : 0;
}

/* Sort the entries of L by their bytes; fill lcp, and the subtree ends of the trie nodes (one
 * pass with a stack of open nodes, as a depth-first walk of the trie would). */
static int wlist_sort(const struct constrain_vocab *v, struct wlist *L)
{
    uint32_t nn = L->n ? L->n : 1;
    uint32_t *idx = malloc(nn * sizeof *idx);
    uint32_t *tok = malloc(nn * sizeof *tok);
    uint16_t *off = malloc(nn * sizeof *off);
    uint8_t *pv = L->pv ? malloc(nn) : NULL;
    L->lcp = malloc(nn * sizeof *L->lcp);
    L->base = malloc((nn + 1) * sizeof *L->base);
    if (!idx || !tok || !off || (L->pv && !pv) || !L->lcp || !L->base) {
        free(idx), free(tok), free(off), free(pv);
        return ERR_NOMEM;
    }
    for (uint32_t i = 0; i < L->n; i++) idx[i] = i;
    L->v = v;
    qsort_r(idx, L->n, sizeof *idx, cmp_entry, L);
    for (uint32_t i = 0; i < L->n; i++) {
        tok[i] = L->tok[idx[i]];
        off[i] = L->off[idx[i]];
        if (pv) pv[i] = L->pv[idx[i]];
    }
    free(L->tok), free(L->off), free(L->pv), free(idx);
    L->tok = tok, L->off = off, L->pv = pv;
    uint32_t total = 0;
    for (uint32_t i = 0; i < L->n; i++) {
        uint16_t l = 0;
        size_t m = v->blen[tok[i]] - off[i];
        if (i) {
            const uint8_t *p = tok_bytes(v, tok[i - 1]) + off[i - 1],
                          *q = tok_bytes(v, tok[i]) + off[i];
            size_t n = v->blen[tok[i - 1]] - off[i - 1];
            while (l < n && l < m && p[l] == q[l]) l++;
        }
        L->lcp[i] = l;
        L->base[i] = total;
        total += (uint32_t)(m - l);
    }
    L->base[L->n] = total;
    L->ends = malloc((total ? total : 1) * sizeof *L->ends);
    uint32_t *open = malloc(((size_t)v->maxlen + 1) * sizeof *open); /* ends slot per depth */
    if (!L->ends || !open) {
        free(open);
        return ERR_NOMEM;
    }
    uint32_t depth = 0;
    for (uint32_t i = 0; i <= L->n; i++) {
        uint32_t l = i < L->n ? L->lcp[i] : 0;
        for (; depth > l; depth--) L->ends[open[depth]] = i; /* close deeper nodes */
        if (i == L->n) break;
        uint32_t m = v->blen[tok[i]] - off[i];
        for (uint32_t d = l + 1; d <= m; d++) open[d] = L->base[i] + d - l - 1;
        depth = m;
    }
    free(open);
    /* the contiguous copy */
    size_t nbytes = 0;
    for (uint32_t i = 0; i < L->n; i++) nbytes += v->blen[tok[i]] - off[i];
    L->e = malloc(nn * sizeof *L->e);
    L->ebytes = malloc(nbytes ? nbytes : 1);
    if (!L->e || !L->ebytes) return ERR_NOMEM;
    size_t at = 0;
    for (uint32_t i = 0; i < L->n; i++) {
        struct wentry *w = &L->e[i];
        uint32_t t = tok[i];
        w->tok = t;
        w->boff = (uint32_t)at;
        w->len = (uint16_t)(v->blen[t] - off[i]);
        w->lcp = L->lcp[i];
        w->tail = (uint16_t)(v->tail[t] > off[i] ? v->tail[t] - off[i] : 0);
        w->pv = pv ? pv[i] : 0;
        w->pad = 0;
        w->ends_base = L->base[i];
        memcpy(L->ebytes + at, tok_bytes(v, t) + off[i], w->len);
        at += w->len;
    }
    return 0;
}

static void wlist_free(struct wlist *L)
{
    free(L->tok), free(L->off), free(L->lcp), free(L->pv), free(L->base), free(L->ends);
    free(L->e), free(L->ebytes);
}

void constrain_vocab_destroy(struct constrain_vocab *v)
{
    if (!v) return;
    free(v->boff), free(v->blen), free(v->tail), free(v->bytes), free(v->added), free(v->added_ids);
    for (int u = 0; u < UTF8_DFA_STATES; u++) free(v->plain[u]);
    wlist_free(&v->all);
    wlist_free(&v->str);
    free(v);
}

int constrain_vocab_size(const struct constrain_vocab *v) { return v->n; }

int constrain_vocab_create_pieces(const char *const *pieces, const size_t *lens,
                                  const uint8_t *added, int n, int32_t eos,
                                  struct constrain_vocab **out, char *err)
{
    if (n <= 0) return err_set(err, ERR_INVAL, "empty vocabulary");
    struct constrain_vocab *v = calloc(1, sizeof *v);
    if (!v) return err_set(err, ERR_NOMEM, "out of memory");
    v->n = n;
    v->eos = eos >= 0 && eos < n ? eos : -1;
    v->words = ((size_t)n + 63) / 64;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i] > CONSTRAIN_MAX_TOKEN_BYTES ? 0 : lens[i];
    v->boff = malloc((size_t)n * sizeof *v->boff);
    v->blen = malloc((size_t)n * sizeof *v->blen);
    v->tail = malloc((size_t)n * sizeof *v->tail);
    v->bytes = malloc(total ? total : 1);
    v->added = calloc((size_t)n, 1);
    v->added_ids = malloc((size_t)n * sizeof *v->added_ids);
    v->all.tok = malloc((size_t)n * sizeof(uint32_t));
    v->all.off = calloc((size_t)n, sizeof(uint16_t));
    v->str.tok = malloc((size_t)n * sizeof(uint32_t));
    v->str.off = malloc((size_t)n * sizeof(uint16_t));
    v->str.pv = malloc((size_t)n);
    int ok = v->boff && v->blen && v->tail && v->bytes && v->added && v->added_ids && v->all.tok &&
             v->all.off && v->str.tok && v->str.off && v->str.pv;
    for (int u = 0; u < UTF8_DFA_STATES && ok; u++)
        ok = (v->plain[u] = calloc(v->words, 8)) != NULL;
    if (!ok) {
        constrain_vocab_destroy(v);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t len = lens[i] > CONSTRAIN_MAX_TOKEN_BYTES ? 0 : lens[i]; /* never allowed */
        v->boff[i] = (uint32_t)at;
        v->blen[i] = (uint16_t)len;
        memcpy(v->bytes + at, pieces[i], len);
        size_t tl = len;
        while (tl > 0 && is_plain((uint8_t)pieces[i][tl - 1])) tl--;
        v->tail[i] = (uint16_t)tl;
        at += len;
        v->added[i] = added ? added[i] != 0 : 0;
        if (i == v->eos || len == 0) continue;
        if (v->added[i]) {
            v->added_ids[v->n_added++] = (uint32_t)i;
            continue;
        }
        if ((int)len > v->maxlen) v->maxlen = (int)len;
        v->all.tok[v->all.n++] = (uint32_t)i;
        const uint8_t *p = (const uint8_t *)pieces[i];
        size_t k = 0;
        while (k < len && is_plain(p[k])) k++;
        /* plain prefix p[0..k): valid from which UTF-8 states, ending where */
        uint8_t pv = 0;
        for (int u = 0; u < UTF8_DFA_STATES; u++) {
            int st = u;
            for (size_t j = 0; j < k && st >= 0; j++) st = utf8_dfa_next(st, p[j]);
            if (st < 0) continue;
            if (k == len) v->plain[u][i / 64] |= 1ull << (i % 64);
            else if (st == 0) pv |= (uint8_t)(1u << u);
        }
        if (k < len && (p[k] == '"' || p[k] == '\\') && pv) {
            v->str.tok[v->str.n] = (uint32_t)i;
            v->str.off[v->str.n] = (uint16_t)k;
            v->str.pv[v->str.n++] = pv;
        }
    }
    if (wlist_sort(v, &v->all) || wlist_sort(v, &v->str)) {
        constrain_vocab_destroy(v);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    *out = v;
    return 0;
}

int constrain_vocab_create(const struct tok *t, struct constrain_vocab **out, char *err)
{
    int n = tok_vocab_size(t);
    if (n <= 0) return err_set(err, ERR_INVAL, "empty vocabulary");
    const char **pieces = malloc((size_t)n * sizeof *pieces);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    uint8_t *added = malloc((size_t)n);
    int rc;
    if (!pieces || !lens || !added) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = tok_piece(t, i, &len);
        pieces[i] = p ? p : "";
        lens[i] = p ? len : 0;
        added[i] = (uint8_t)(tok_is_added(t, i) || tok_is_special(t, i));
    }
    rc = constrain_vocab_create_pieces(pieces, lens, added, n, tok_eos(t), out, err);
out:
    free(pieces);
    free(lens);
    free(added);
    return rc;
}

/* ---- per request ---- */

int constrain_create(const struct constrain_vocab *v, struct jsonschema_grammar *g,
                     struct constrain **out, char *err)
{
    struct constrain *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "out of memory");
    c->v = v;
    c->levels = malloc(((size_t)v->maxlen + 2) * sizeof *c->levels);
    c->bits = malloc(v->words * 8);
    if (!c->levels || !c->bits) {
        free(c->levels);
        free(c->bits);
        free(c);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    c->g = jsonschema_ref(g);
    c->cur.n = 1;
    c->cur.s[0].depth = 1;
    memset(&c->cur.s[0].f[0], 0, sizeof(struct cframe));
    c->cur.s[0].f[0].fk = FK_ROOT;
    *out = c;
    return 0;
}

void constrain_destroy(struct constrain *c)
{
    if (!c) return;
    jsonschema_unref(c->g);
    free(c->levels);
    free(c->bits);
    free(c);
}

static void set_copy(struct cset *d, const struct cset *s)
{
    d->n = s->n;
    for (int i = 0; i < s->n; i++) stack_copy(&d->s[i], &s->s[i]);
}

/* Does every string byte keep s inside the same string (a string body, or an object key where
 * free keys are allowed)? Then only UTF-8 validity decides plain tokens. */
static int absorbs_plain(const struct jsonschema_grammar *g, const struct cstack *s)
{
    const struct cframe *f = &s->f[s->depth - 1];
    if (f->fk == FK_VAL)
        return g->nodes[f->node].kind == JSK_STRING && f->st == S_BODY &&
               !str_bounded(&g->nodes[f->node]);
    if (f->fk == FK_KEY) return g->nodes[f->node].additional >= 0;
    return 0;
}

/* ... and is the state after any plain text the same, except for the UTF-8 state? (Not in a
 * key that may still become a declared name: the candidates depend on the text.) */
static int in_plain_text(const struct jsonschema_grammar *g, const struct cstack *s)
{
    const struct cframe *f = &s->f[s->depth - 1];
    return absorbs_plain(g, s) && !(f->fk == FK_KEY && f->bits);
}

/* Mark every token of L accepted from `start` (and, for the string list, whose pv has bit u). */
static void walk(struct constrain *c, const struct wlist *L, const struct cset *start, int u,
                 int skip_plain, uint64_t *bits)
{
    struct cset *lv = c->levels;
    set_copy(&lv[0], start);
    /* lv[0..have] are the state sets along the last processed entry's bytes; m is the common
     * prefix of the current entry with it; `dead` the depth at which it died (or INT_MAX) */
    int have = 0, dead = INT_MAX, m = 0;
    uint32_t i = 0;
    while (i < L->n) {
        const struct wentry *e = &L->e[i];
        int l = e->lcp;
        if (l < m) m = l;
        if (m >= dead || (u >= 0 && !(e->pv >> u & 1)) || (skip_plain && e->tail == 0)) {
            i++;
            continue;
        }
        const uint8_t *p = L->ebytes + e->boff;
        int len = e->len;
        int d = m < have ? m : have;
        int ok = 1;
        dead = INT_MAX;
        while (d < len) {
            if (d >= e->tail && lv[d].n == 1 && absorbs_plain(c->g, &lv[d].s[0])) {
                /* inside a string with only string bytes left: just check UTF-8 */
                int st = lv[d].s[0].f[lv[d].s[0].depth - 1].u8;
                for (int k = d; k < len && st >= 0; k++) st = utf8_dfa_next(st, p[k]);
                ok = st >= 0;
                break;
            }
            step_set(c->g, &lv[d], p[d], &lv[d + 1]);
            d++;
            if (lv[d].n == 0) {
                dead = d;
                ok = 0;
                break;
            }
        }
        have = d;
        m = INT_MAX;
        if (ok) bits[e->tok / 64] |= 1ull << (e->tok % 64);
        if (dead != INT_MAX && dead > l) {
            /* the trie node of depth `dead` starts here: skip its whole subtree (every entry
             * in it shares the dead prefix; the next one shares less than `dead` with it, and
             * exactly lcp[e] with this entry) */
            i = L->ends[e->ends_base + (uint32_t)(dead - l - 1)];
            continue;
        }
        i++;
    }
}

static int marker_next(const struct constrain_vocab *v, const struct jsonschema_grammar *g,
                       const struct cstack *s)
{
    if (!g->has_literals) return 0;
    size_t ll = 0;
    const char *lit = next_literal(g, s, &ll);
    for (uint32_t k = 0; lit && k < v->n_added; k++) {
        uint32_t t = v->added_ids[k];
        if (v->blen[t] > 0 && v->blen[t] <= ll && memcmp(lit, tok_bytes(v, t), v->blen[t]) == 0)
            return 1;
    }
    return 0;
}

/* Fill bits; returns 1 if any token is allowed. */
static int allowed(struct constrain *c, uint64_t *bits)
{
    const struct constrain_vocab *v = c->v;
    memset(bits, 0, v->words * 8);
    if (c->ended) return 0;
    struct cset rest;
    rest.n = 0;
    int eos_ok = 0;
    for (int i = 0; i < c->cur.n; i++) {
        const struct cstack *s = &c->cur.s[i];
        if (at_end(c->g, s)) eos_ok = 1;
        if (marker_next(v, c->g, s)) continue; /* only the added token, below */
        if (!absorbs_plain(c->g, s)) {
            set_add(&rest, s);
            continue;
        }
        /* tokens of string bytes only: from the bitset */
        int u = s->f[s->depth - 1].u8;
        const uint64_t *pl = v->plain[u];
        for (size_t w = 0; w < v->words; w++) bits[w] |= pl[w];
        c->one.n = 1;
        stack_copy(&c->one.s[0], s);
        if (in_plain_text(c->g, s)) {
            /* the others from where they leave the plain text */
            c->one.s[0].f[s->depth - 1].u8 = 0;
            walk(c, &v->str, &c->one, u, 0, bits);
        } else {
            /* a key that may still be a declared name: walk the non-plain tokens in full */
            walk(c, &v->all, &c->one, -1, 1, bits);
        }
    }
    if (rest.n) walk(c, &v->all, &rest, -1, 0, bits);
    if (c->g->has_literals) {
        for (uint32_t k = 0; k < v->n_added; k++) {
            uint32_t t = v->added_ids[k];
            const uint8_t *p = tok_bytes(v, t);
            size_t len = v->blen[t];
            for (int i = 0; i < c->cur.n; i++) {
                size_t ll = 0;
                const char *lit = next_literal(c->g, &c->cur.s[i], &ll);
                if (lit && ll >= len && memcmp(lit, p, len) == 0) {
                    bits[t / 64] |= 1ull << (t % 64);
                    break;
                }
            }
        }
    }
    int any = 0;
    for (size_t w = 0; w < v->words && !any; w++) any = bits[w] != 0;
    if (v->eos >= 0 && (eos_ok || !any)) {
        bits[v->eos / 64] |= 1ull << (v->eos % 64);
        any = 1;
    }
    return any;
}

int constrain_allowed(struct constrain *c, uint64_t *bits)
{
    if (!allowed(c, bits)) return 0;
    int count = 0;
    for (size_t w = 0; w < c->v->words; w++) count += __builtin_popcountll(bits[w]);
    return count;
}

void constrain_mask(struct constrain *c, float *logits, int vocab)
{
    allowed(c, c->bits);
    int n = vocab < c->v->n ? vocab : c->v->n;
    const uint64_t *b = c->bits;
    int full = n / 64;
    for (int w = 0; w < full; w++) {
        uint64_t m = ~b[w]; /* the masked ones */
        float *l = logits + (size_t)w * 64;
        if (m == ~0ull) {
            for (int k = 0; k < 64; k++) l[k] = -INFINITY;
            continue;
        }
        for (; m; m &= m - 1) l[__builtin_ctzll(m)] = -INFINITY;
    }
    for (int i = full * 64; i < n; i++)
        if (!(b[i / 64] >> (i % 64) & 1)) logits[i] = -INFINITY;
    for (int i = n; i < vocab; i++) logits[i] = -INFINITY;
}

/* cur = the states after p[0..n) from `from` (cur itself, or a subset); ERR_INVAL if none. */
static int advance(struct constrain *c, const struct cset *from, const uint8_t *p, size_t n)
{
    set_copy(&c->tmp[0], from);
    int a = 0;
    for (size_t i = 0; i < n; i++) {
        step_set(c->g, &c->tmp[a], p[i], &c->tmp[a ^ 1]);
        a ^= 1;
        if (c->tmp[a].n == 0) return ERR_INVAL;
    }
    set_copy(&c->cur, &c->tmp[a]);
    return 0;
}

int constrain_accept(struct constrain *c, int32_t token)
{
    const struct constrain_vocab *v = c->v;
    if (c->ended || token < 0 || token >= v->n) return ERR_INVAL;
    if (token == v->eos) {
        if (!constrain_done(c)) return ERR_INVAL;
        c->ended = 1;
        return 0;
    }
    const uint8_t *p = tok_bytes(v, (uint32_t)token);
    size_t len = v->blen[token];
    if (len == 0) return ERR_INVAL;
    if (v->added[token]) {
        int ok = 0;
        for (int i = 0; i < c->cur.n && !ok; i++) {
            size_t ll = 0;
            const char *lit = next_literal(c->g, &c->cur.s[i], &ll);
            ok = lit && ll >= len && memcmp(lit, p, len) == 0;
        }
        if (!ok) return ERR_INVAL;
    } else {
        /* only the alternatives that may go on in ordinary tokens (as the mask) */
        c->one.n = 0;
        for (int i = 0; i < c->cur.n; i++)
            if (!marker_next(v, c->g, &c->cur.s[i])) set_add(&c->one, &c->cur.s[i]);
        if (c->one.n == 0) return ERR_INVAL;
        if (c->one.n < c->cur.n) return advance(c, &c->one, p, len);
    }
    return advance(c, &c->cur, p, len);
}

int constrain_accept_bytes(struct constrain *c, const char *s, size_t n)
{
    if (c->ended) return ERR_INVAL;
    return advance(c, &c->cur, (const uint8_t *)s, n);
}

int constrain_done(const struct constrain *c)
{
    if (c->ended) return 1;
    for (int i = 0; i < c->cur.n; i++)
        if (at_end(c->g, &c->cur.s[i])) return 1;
    return 0;
}

void constrain_hook_mask(void *c, float *logits, int vocab) { constrain_mask(c, logits, vocab); }
int constrain_hook_accept(void *c, int32_t token) { return constrain_accept(c, token); }
void constrain_hook_destroy(void *c) { constrain_destroy(c); }
