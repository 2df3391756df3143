/* jinja_value.c - the render arena and Jinja values: construction, truth, equality, order,
 * printing as Python prints (str() and repr()), JSON as Python's json.dumps writes it, and
 * conversion from jansson values.
 *
 * Values are small structs passed by value; lists, dicts and strings built while rendering live
 * in the render's arena (never freed one by one), strings of the context are borrowed from the
 * caller's json_t. The arena has a byte budget: passing it is a clean ERR_NOMEM naming the limit.
 * Threads: pure, on the arena given.
 */
#include "jinja_internal.h"

#include "common/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena */

struct jblock {
    struct jblock *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

#define BLOCK_SIZE (64u << 10)

void *ja_alloc(struct jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && (n > a->limit || a->used > a->limit - n)) return NULL;
    struct jblock *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->next = a->head;
        b->size = size;
        b->used = 0;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

void ja_free(struct jarena *a)
{
    while (a->head) {
        struct jblock *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->used = 0;
}

/* ---- errors and limits */

int jr_fail(struct jrender *r, const char *fmt, ...)
{
    char msg[ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(r->err, ERR_INVAL, "chat template line %d: %s", r->line, msg);
}

int jr_nomem(struct jrender *r)
{
    return err_set(r->err, ERR_NOMEM,
                   "chat template line %d: out of memory (the render's limit is %zu bytes)",
                   r->line, r->arena.limit);
}

int jr_step(struct jrender *r)
{
    if (++r->steps > r->max_steps)
        return jr_fail(r, "more than %ld loop iterations and calls (the limit)", r->max_steps);
    return 0;
}

/* ---- construction */

struct jvalue jv_undef(void) { return (struct jvalue){.t = JV_UNDEF}; }
struct jvalue jv_none(void) { return (struct jvalue){.t = JV_NONE}; }
struct jvalue jv_bool(int b) { return (struct jvalue){.t = JV_BOOL, .u.b = !!b}; }
struct jvalue jv_int(int64_t i) { return (struct jvalue){.t = JV_INT, .u.i = i}; }
struct jvalue jv_float(double f) { return (struct jvalue){.t = JV_FLOAT, .u.f = f}; }

struct jvalue jv_str(const char *p, size_t n)
{
    struct jvalue v = {.t = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

int jv_str_copy(struct jrender *r, const char *p, size_t n, struct jvalue *out)
{
    char *s = ja_alloc(&r->arena, n + 1);
    if (!s) return jr_nomem(r);
    if (n) memcpy(s, p, n);
    *out = jv_str(s, n);
    return 0;
}

int jv_new_list(struct jrender *r, struct jvalue *out)
{
    struct jlist *l = ja_alloc(&r->arena, sizeof *l);
    if (!l) return jr_nomem(r);
    *out = (struct jvalue){.t = JV_LIST, .u.l = l};
    return 0;
}

int jv_new_dict(struct jrender *r, enum jv_type t, struct jvalue *out)
{
    struct jdict *d = ja_alloc(&r->arena, sizeof *d);
    if (!d) return jr_nomem(r);
    *out = (struct jvalue){.t = t, .u.d = d};
    return 0;
}

int jl_push(struct jrender *r, struct jlist *l, struct jvalue v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct jvalue *nv = ja_alloc(&r->arena, cap * sizeof *nv);
        if (!nv) return jr_nomem(r);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

struct jvalue *jd_getv(const struct jdict *d, struct jvalue k)
{
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) return &d->v[i];
    return NULL;
}

struct jvalue *jd_get(const struct jdict *d, const char *key, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s.n == n && memcmp(d->k[i].u.s.p, key, n) == 0)
            return &d->v[i];
    return NULL;
}

int jd_set(struct jrender *r, struct jdict *d, struct jvalue k, struct jvalue v)
{
    struct jvalue *have = jd_getv(d, k);
    if (have) {
        *have = v;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct jvalue *nk = ja_alloc(&r->arena, cap * sizeof *nk);
        struct jvalue *nv = ja_alloc(&r->arena, cap * sizeof *nv);
        if (!nk || !nv) return jr_nomem(r);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return 0;
}

/* ---- truth, equality, order */

int jv_is_num(struct jvalue v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }

double jv_num(struct jvalue v)
{
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.t == JV_BOOL ? v.u.b : 0;
}

int jv_truthy(struct jvalue v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

/* nested values compare to this depth (a list may contain itself) */
#define MAX_VALUE_DEPTH 200

static int equal_at(struct jvalue a, struct jvalue b, int depth);

int jv_equal(struct jvalue a, struct jvalue b) { return equal_at(a, b, 0); }

static int equal_at(struct jvalue a, struct jvalue b, int depth)
{
    if (depth > MAX_VALUE_DEPTH) return 0;
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return (a.t == JV_INT ? a.u.i : a.u.b) == (b.t == JV_INT ? b.u.i : b.u.b);
        return jv_num(a) == jv_num(b);
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!equal_at(a.u.l->v[i], b.u.l->v[i], depth + 1)) return 0;
        return 1;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            struct jvalue *o = jd_getv(b.u.d, a.u.d->k[i]);
            if (!o || !equal_at(a.u.d->v[i], *o, depth + 1)) return 0;
        }
        return 1;
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.macro == b.u.macro;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return 0;
    }
}

const char *jv_type_name(struct jvalue v)
{
    static const char *const names[] = {
        "undefined", "NoneType",  "bool",        "int",   "float",    "str",   "list",
        "dict",      "Namespace", "LoopContext", "Macro", "function", "method"};
    return names[v.t];
}

static int compare_at(struct jrender *r, struct jvalue a, struct jvalue b, int *cmp, int depth);

int jv_compare(struct jrender *r, struct jvalue a, struct jvalue b, int *cmp)
{
    return compare_at(r, a, b, cmp, 0);
}

static int compare_at(struct jrender *r, struct jvalue a, struct jvalue b, int *cmp, int depth)
{
    if (depth > MAX_VALUE_DEPTH) return jr_fail(r, "values nested too deeply to compare");
    if (jv_is_num(a) && jv_is_num(b)) {
        double x = jv_num(a), y = jv_num(b);
        if (a.t == JV_INT && b.t == JV_INT) *cmp = a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
        else *cmp = x < y ? -1 : x > y;
        return 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        *cmp = c ? (c < 0 ? -1 : 1) : a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
        return 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return compare_at(r, a.u.l->v[i], b.u.l->v[i], cmp, depth + 1);
        }
        *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return 0;
    }
    return jr_fail(r, "cannot order '%s' and '%s'", jv_type_name(a), jv_type_name(b));
}

/* ---- UTF-8 positions (strings index by code point, as Python's do) */

size_t utf8_count(const char *p, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)p[i] & 0xC0) != 0x80;
    return c;
}

size_t utf8_offset(const char *p, size_t n, size_t cps)
{
    size_t i = 0;
    while (i < n) {
        if (((unsigned char)p[i] & 0xC0) != 0x80) {
            if (cps == 0) return i;
            cps--;
        }
        i++;
    }
    return n;
}

/* ---- printing */

static int put(struct jrender *r, struct sbuf *b, const char *s, size_t n)
{
    if (r->arena.limit && b->n + n > r->arena.limit) return jr_nomem(r);
    return sbuf_append(b, s, n) ? jr_nomem(r) : 0;
}

static int puts_(struct jrender *r, struct sbuf *b, const char *s)
{
    return put(r, b, s, strlen(s));
}

/* Python's repr(float): the shortest digits that read back, positional for 1e-4 <= |x| < 1e16 */
static void float_repr(double f, char *out, size_t cap)
{
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e: [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    int neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char *o = out;
    size_t room = cap;
#define EMIT(...)                                                                                  \
    do {                                                                                           \
        int k_ = snprintf(o, room, __VA_ARGS__);                                                   \
        if (k_ > 0 && (size_t)k_ < room) {                                                         \
            o += k_;                                                                               \
            room -= (size_t)k_;                                                                    \
        }                                                                                          \
    } while (0)
    if (neg) EMIT("-");
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++) EMIT("%c", (size_t)i < nd ? digits[i] : '0');
            EMIT(".");
            if ((size_t)exp + 1 < nd) EMIT("%.*s", (int)(nd - (size_t)exp - 1), digits + exp + 1);
            else EMIT("0");
        } else {
            EMIT("0.");
            for (int i = 0; i < -exp - 1; i++) EMIT("0");
            EMIT("%.*s", (int)nd, digits);
        }
    } else {
        EMIT("%c", digits[0]);
        if (nd > 1) EMIT(".%.*s", (int)(nd - 1), digits + 1);
        EMIT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
#undef EMIT
}

static int repr(struct jrender *r, struct sbuf *b, struct jvalue v, int depth);

static int str_repr(struct jrender *r, struct sbuf *b, const char *s, size_t n)
{
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int rc = put(r, b, &q, 1);
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '\\') rc = puts_(r, b, "\\\\");
        else if (c == '\n') rc = puts_(r, b, "\\n");
        else if (c == '\r') rc = puts_(r, b, "\\r");
        else if (c == '\t') rc = puts_(r, b, "\\t");
        else if (c == (unsigned char)q)
            rc = put(r, b, esc, (size_t)snprintf(esc, sizeof esc, "\\%c", q));
        else if (c < 0x20 || c == 0x7f)
            rc = put(r, b, esc, (size_t)snprintf(esc, sizeof esc, "\\x%02x", c));
        else rc = put(r, b, (const char *)&c, 1);
    }
    return rc ? rc : put(r, b, &q, 1);
}

static int scalar_str(struct jrender *r, struct sbuf *b, struct jvalue v)
{
    char num[48];
    switch (v.t) {
    case JV_UNDEF: return 0;
    case JV_NONE: return puts_(r, b, "None");
    case JV_BOOL: return puts_(r, b, v.u.b ? "True" : "False");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return puts_(r, b, num);
    case JV_FLOAT: float_repr(v.u.f, num, sizeof num); return puts_(r, b, num);
    case JV_STR: return put(r, b, v.u.s.p, v.u.s.n);
    case JV_LOOP: return puts_(r, b, "<LoopContext>");
    case JV_MACRO: return puts_(r, b, "<Macro>");
    case JV_FUNC:
    case JV_METHOD: return puts_(r, b, "<function>");
    default: return -1;
    }
}

static int repr(struct jrender *r, struct sbuf *b, struct jvalue v, int depth)
{
    if (depth > 100) return jr_fail(r, "value nested too deeply to print");
    int rc = 0;
    if (v.t == JV_STR) return str_repr(r, b, v.u.s.p, v.u.s.n);
    if (v.t == JV_LIST) {
        rc = puts_(r, b, "[");
        for (size_t i = 0; i < v.u.l->n && !rc; i++) {
            if (i) rc = puts_(r, b, ", ");
            if (!rc) rc = repr(r, b, v.u.l->v[i], depth + 1);
        }
        return rc ? rc : puts_(r, b, "]");
    }
    if (v.t == JV_DICT || v.t == JV_NS) {
        rc = puts_(r, b, v.t == JV_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v.u.d->n && !rc; i++) {
            if (i) rc = puts_(r, b, ", ");
            if (!rc) rc = repr(r, b, v.u.d->k[i], depth + 1);
            if (!rc) rc = puts_(r, b, ": ");
            if (!rc) rc = repr(r, b, v.u.d->v[i], depth + 1);
        }
        return rc ? rc : puts_(r, b, v.t == JV_NS ? "}>" : "}");
    }
    if (v.t == JV_UNDEF) return puts_(r, b, "Undefined");
    return scalar_str(r, b, v);
}

int jv_append_str(struct jrender *r, struct sbuf *b, struct jvalue v)
{
    int rc = scalar_str(r, b, v);
    return rc == -1 ? repr(r, b, v, 0) : rc;
}

int jv_to_str(struct jrender *r, struct jvalue v, struct jvalue *out)
{
    if (v.t == JV_STR || v.t == JV_UNDEF) {
        *out = v.t == JV_STR ? v : jv_str("", 0);
        return 0;
    }
    struct sbuf b = {0};
    int rc = jv_append_str(r, &b, v);
    if (rc == 0) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

/* ---- JSON (Python's json.dumps with ensure_ascii=False) */

static int json_str(struct jrender *r, struct sbuf *b, const char *s, size_t n)
{
    int rc = puts_(r, b, "\"");
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        switch (c) {
        case '"': rc = puts_(r, b, "\\\""); break;
        case '\\': rc = puts_(r, b, "\\\\"); break;
        case '\n': rc = puts_(r, b, "\\n"); break;
        case '\r': rc = puts_(r, b, "\\r"); break;
        case '\t': rc = puts_(r, b, "\\t"); break;
        case '\b': rc = puts_(r, b, "\\b"); break;
        case '\f': rc = puts_(r, b, "\\f"); break;
        default:
            if (c < 0x20) rc = put(r, b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
            else rc = put(r, b, (const char *)&c, 1);
        }
    }
    return rc ? rc : puts_(r, b, "\"");
}

struct json_style {
    int indent, sort_keys;
    const char *item_sep, *key_sep;
};

static int newline(struct jrender *r, struct sbuf *b, const struct json_style *st, int level)
{
    if (st->indent < 0) return 0;
    int rc = puts_(r, b, "\n");
    for (int i = 0; i < level * st->indent && !rc; i++) rc = puts_(r, b, " ");
    return rc;
}

static int json_val(struct jrender *r, struct sbuf *b, struct jvalue v, const struct json_style *st,
                    int level)
{
    char num[48];
    int rc = 0;
    if (level > 100) return jr_fail(r, "value nested too deeply for tojson");
    switch (v.t) {
    case JV_NONE: return puts_(r, b, "null");
    case JV_BOOL: return puts_(r, b, v.u.b ? "true" : "false");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return puts_(r, b, num);
    case JV_FLOAT:
        if (isnan(v.u.f)) return puts_(r, b, "NaN");
        if (isinf(v.u.f)) return puts_(r, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        float_repr(v.u.f, num, sizeof num);
        return puts_(r, b, num);
    case JV_STR: return json_str(r, b, v.u.s.p, v.u.s.n);
    case JV_LIST:
        if (v.u.l->n == 0) return puts_(r, b, "[]");
        rc = puts_(r, b, "[");
        for (size_t i = 0; i < v.u.l->n && !rc; i++) {
            if (i) rc = puts_(r, b, st->item_sep);
            if (!rc) rc = newline(r, b, st, level + 1);
            if (!rc) rc = json_val(r, b, v.u.l->v[i], st, level + 1);
        }
        if (!rc) rc = newline(r, b, st, level);
        return rc ? rc : puts_(r, b, "]");
    case JV_DICT: {
        const struct jdict *d = v.u.d;
        if (d->n == 0) return puts_(r, b, "{}");
        size_t *order = ja_alloc(&r->arena, d->n * sizeof *order);
        if (!order) return jr_nomem(r);
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        for (size_t i = 1; st->sort_keys && i < d->n; i++) /* insertion sort: stable */
            for (size_t j = i; j > 0; j--) {
                int c = 0;
                if ((rc = jv_compare(r, d->k[order[j - 1]], d->k[order[j]], &c))) return rc;
                if (c <= 0) break;
                size_t t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        rc = puts_(r, b, "{");
        for (size_t i = 0; i < d->n && !rc; i++) {
            struct jvalue k = d->k[order[i]];
            if (i) rc = puts_(r, b, st->item_sep);
            if (!rc) rc = newline(r, b, st, level + 1);
            if (rc) break;
            if (k.t == JV_STR) {
                rc = json_str(r, b, k.u.s.p, k.u.s.n);
            } else if (k.t == JV_NONE || k.t == JV_BOOL) {
                rc = puts_(r, b, k.t == JV_NONE ? "\"null\"" : k.u.b ? "\"true\"" : "\"false\"");
            } else {
                rc = puts_(r, b, "\"");
                if (!rc) rc = jv_append_str(r, b, k);
                if (!rc) rc = puts_(r, b, "\"");
            }
            if (!rc) rc = puts_(r, b, st->key_sep);
            if (!rc) rc = json_val(r, b, d->v[order[i]], st, level + 1);
        }
        if (!rc) rc = newline(r, b, st, level);
        return rc ? rc : puts_(r, b, "}");
    }
    default: return jr_fail(r, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

int jv_to_json(struct jrender *r, struct jvalue v, int indent, const char *item_sep,
               const char *key_sep, int sort_keys, struct jvalue *out)
{
    struct json_style st = {.indent = indent, .sort_keys = sort_keys};
    st.item_sep = item_sep ? item_sep : indent >= 0 ? "," : ", ";
    st.key_sep = key_sep ? key_sep : ": ";
    struct sbuf b = {0};
    int rc = json_val(r, &b, v, &st, 0);
    if (rc == 0) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

/* ---- from jansson (strings borrowed) */

int jv_from_json(struct jrender *r, const json_t *j, struct jvalue *out)
{
    int rc = 0;
    switch (json_typeof(j)) {
    case JSON_NULL: *out = jv_none(); return 0;
    case JSON_TRUE: *out = jv_bool(1); return 0;
    case JSON_FALSE: *out = jv_bool(0); return 0;
    case JSON_INTEGER: *out = jv_int((int64_t)json_integer_value(j)); return 0;
    case JSON_REAL: *out = jv_float(json_real_value(j)); return 0;
    case JSON_STRING: *out = jv_str(json_string_value(j), json_string_length(j)); return 0;
    case JSON_ARRAY: {
        if ((rc = jv_new_list(r, out))) return rc;
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x)
        {
            struct jvalue v;
            if ((rc = jv_from_json(r, x, &v)) || (rc = jl_push(r, out->u.l, v))) return rc;
        }
        return 0;
    }
    case JSON_OBJECT: {
        if ((rc = jv_new_dict(r, JV_DICT, out))) return rc;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)j, k, x)
        {
            struct jvalue v;
            if ((rc = jv_from_json(r, x, &v))) return rc;
            /* keys are unique in a JSON object: append without the lookup */
            struct jdict *d = out->u.d;
            if (d->n == d->cap) {
                if ((rc = jd_set(r, d, jv_str(k, strlen(k)), v))) return rc;
            } else {
                d->k[d->n] = jv_str(k, strlen(k));
                d->v[d->n++] = v;
            }
        }
        return 0;
    }
    }
    *out = jv_none();
    return 0;
}

/* ---- iteration */

int jv_iterate(struct jrender *r, struct jvalue v, struct jlist **out)
{
    struct jvalue l;
    int rc;
    if (v.t == JV_LIST) {
        *out = v.u.l;
        return 0;
    }
    if ((rc = jv_new_list(r, &l))) return rc;
    *out = l.u.l;
    if (v.t == JV_UNDEF) return 0;
    if (v.t == JV_DICT) {
        for (size_t i = 0; i < v.u.d->n; i++)
            if ((rc = jl_push(r, l.u.l, v.u.d->k[i]))) return rc;
        return 0;
    }
    if (v.t == JV_STR) {
        const char *s = v.u.s.p;
        size_t n = v.u.s.n;
        for (size_t i = 0; i < n;) {
            size_t k = i + 1;
            while (k < n && ((unsigned char)s[k] & 0xC0) == 0x80) k++;
            if ((rc = jl_push(r, l.u.l, jv_str(s + i, k - i)))) return rc;
            i = k;
        }
        return 0;
    }
    return jr_fail(r, "'%s' object is not iterable", jv_type_name(v));
}
