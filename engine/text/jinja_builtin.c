/* jinja_builtin.c - what a template can call: filters, tests, methods of strings, dicts, lists
 * and `loop`, and the globals (range, namespace, raise_exception, strftime_now, dict).
 *
 * Each follows Python Jinja2 (and Python's str/dict/list) for the arguments chat templates use;
 * an unknown filter, test or method is a clear error naming it. upper and lower map every
 * Unicode letter one to one (the C library's C.UTF-8 tables; a letter whose mapping is longer,
 * such as German sharp s, stays); title, capitalize, the `lower`/`upper` tests and the
 * case-insensitive sort and unique are ASCII-only; whitespace for strip and split is Python's
 * (str.isspace).
 * Threads: pure, on the render's arena.
 */
#include "jinja_internal.h"

#include "common/err.h"
#include "common/utf8.h"

#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

enum { FN_RANGE = 1, FN_NAMESPACE, FN_RAISE, FN_STRFTIME, FN_DICT };

static const char *const globals[] = {
    "", "range", "namespace", "raise_exception", "strftime_now", "dict", NULL};

int jb_global(const char *name, struct jvalue *out)
{
    for (int i = 1; globals[i]; i++)
        if (strcmp(name, globals[i]) == 0) {
            *out = (struct jvalue){.t = JV_FUNC, .u.fn = i};
            return 1;
        }
    return 0;
}

/* ---- argument helpers */

struct argv_ {
    struct jvalue *args;
    size_t n_args;
    const char **kw_names;
    struct jvalue *kw;
    size_t n_kw;
};

/* the argument at position pos or named name; def when absent */
static struct jvalue arg(const struct argv_ *a, size_t pos, const char *name, struct jvalue def)
{
    for (size_t k = 0; name && k < a->n_kw; k++)
        if (strcmp(a->kw_names[k], name) == 0) return a->kw[k];
    return pos < a->n_args ? a->args[pos] : def;
}

static int need_str(struct jrender *r, struct jvalue v, const char *what)
{
    return v.t == JV_STR ? 0 : jr_fail(r, "%s expects a string, not '%s'", what, jv_type_name(v));
}

static int is_ws(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* bytes of the Python whitespace character (str.isspace) starting at p, or 0 */
static size_t ws_at(const char *p, const char *end)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t n = (size_t)(end - p);
    if (n >= 1 && u[0] < 0x80) return is_ws((char)u[0]) ? 1 : 0;
    if (n >= 2 && u[0] == 0xC2 && (u[1] == 0x85 || u[1] == 0xA0)) return 2;
    if (n < 3) return 0;
    unsigned cp = ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
    if ((u[0] & 0xF0) != 0xE0) return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return 3;
    return 0;
}

/* bytes of the whitespace character ending at end (after begin), or 0 */
static size_t ws_before(const char *begin, const char *end)
{
    for (size_t k = 1; k <= 3 && (size_t)(end - begin) >= k; k++)
        if (ws_at(end - k, end) == k) return k;
    return 0;
}

static struct jvalue strip(struct jvalue s, struct jvalue chars, int left, int right)
{
    const char *p = s.u.s.p, *b = p, *e = p + s.u.s.n;
    size_t k;
    if (chars.t == JV_STR) {
        while (left && b < e && memchr(chars.u.s.p, *b, chars.u.s.n)) b++;
        while (right && e > b && memchr(chars.u.s.p, e[-1], chars.u.s.n)) e--;
    } else {
        while (left && b < e && (k = ws_at(b, e))) b += k;
        while (right && e > b && (k = ws_before(b, e))) e -= k;
    }
    return jv_str(b, (size_t)(e - b));
}

/* upper ('u') or lower ('l') of one code point; Unicode when loc is not 0, else ASCII only */
static uint32_t case_map(uint32_t cp, char mode, locale_t loc)
{
    if (cp < 0x80 || !loc) {
        if (cp >= 0x80) return cp;
        return (uint32_t)(mode == 'u' ? toupper((int)cp) : tolower((int)cp));
    }
    wint_t m = mode == 'u' ? towupper_l((wint_t)cp, loc) : towlower_l((wint_t)cp, loc);
    return m > 0x10FFFF || (m >= 0xD800 && m <= 0xDFFF) ? cp : (uint32_t)m;
}

/* Case mapping: mode 'u' upper, 'l' lower (Unicode), 't' title, 'c' capitalize (ASCII) */
static int recase(struct jrender *r, struct jvalue s, char mode, struct jvalue *out)
{
    /* a mapped letter takes at most 3 bytes where it had 2 */
    char *o = ja_alloc(&r->arena, s.u.s.n * 2 + 1);
    if (!o) return jr_nomem(r);
    locale_t loc = 0;
    if (mode == 'u' || mode == 'l') {
        for (size_t i = 0; i < s.u.s.n && !loc; i++)
            if ((unsigned char)s.u.s.p[i] >= 0x80) loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", 0);
    }
    size_t n = 0;
    int prev_alpha = 0;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        size_t k = utf8_decode(s.u.s.p + i, s.u.s.n - i, &cp);
        if (k == 0) { /* not UTF-8: the byte passes through */
            o[n++] = s.u.s.p[i++];
            prev_alpha = 1;
            continue;
        }
        if (cp < 0x80) {
            int up = mode == 'u' || (mode == 't' && !prev_alpha) || (mode == 'c' && i == 0);
            o[n++] = (char)(up ? toupper((int)cp) : (mode == 'u' ? (int)cp : tolower((int)cp)));
            prev_alpha = isalpha((int)cp);
        } else if (mode == 'u' || mode == 'l') {
            n += (size_t)utf8_encode(case_map(cp, mode, loc), o + n);
            prev_alpha = 1;
        } else {
            memcpy(o + n, s.u.s.p + i, k);
            n += k;
            prev_alpha = 1;
        }
        i += k;
    }
    if (loc) freelocale(loc);
    *out = jv_str(o, n);
    return 0;
}

static const char *find(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0) return h;
    for (size_t i = 0; i + nn <= hn; i++)
        if (memcmp(h + i, n, nn) == 0) return h + i;
    return NULL;
}

static int replace(struct jrender *r, struct jvalue s, struct jvalue old, struct jvalue new_,
                   int64_t count, struct jvalue *out)
{
    int rc = need_str(r, old, "replace");
    if (!rc) rc = need_str(r, new_, "replace");
    if (rc) return rc;
    struct sbuf b = {0};
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    int64_t done = 0;
    if (old.u.s.n == 0) { /* Python inserts `new` around every character */
        while (!rc && (count < 0 || done < count)) {
            if (sbuf_append(&b, new_.u.s.p, new_.u.s.n)) rc = jr_nomem(r);
            done++;
            if (p >= end) break;
            size_t k = 1;
            while (p + k < end && ((unsigned char)p[k] & 0xC0) == 0x80) k++;
            if (!rc && sbuf_append(&b, p, k)) rc = jr_nomem(r);
            if (!rc && r->arena.limit && b.n > r->arena.limit) rc = jr_nomem(r);
            p += k;
        }
    }
    while (!rc && p < end) {
        const char *f = (count < 0 || done < count) && old.u.s.n
                            ? find(p, (size_t)(end - p), old.u.s.p, old.u.s.n)
                            : NULL;
        if (!f) {
            if (sbuf_append(&b, p, (size_t)(end - p))) rc = jr_nomem(r);
            break;
        }
        if (sbuf_append(&b, p, (size_t)(f - p)) || sbuf_append(&b, new_.u.s.p, new_.u.s.n))
            rc = jr_nomem(r);
        if (r->arena.limit && b.n > r->arena.limit) rc = jr_nomem(r);
        p = f + old.u.s.n;
        done++;
    }
    if (!rc) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

static int split(struct jrender *r, struct jvalue s, struct jvalue sep, int64_t maxsplit,
                 struct jvalue *out)
{
    int rc = jv_new_list(r, out);
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    int64_t done = 0;
    if (rc) return rc;
    if (sep.t == JV_STR && sep.u.s.n == 0) return jr_fail(r, "split: empty separator");
    if (sep.t != JV_STR) { /* runs of whitespace; no empty strings */
        size_t k;
        while (!rc) {
            while (p < end && (k = ws_at(p, end))) p += k;
            if (p >= end) break;
            const char *q = p;
            if (maxsplit >= 0 && done >= maxsplit) {
                const char *e = end;
                while (e > p && (k = ws_before(p, e))) e -= k;
                return jl_push(r, out->u.l, jv_str(p, (size_t)(e - p)));
            }
            while (q < end && !ws_at(q, end)) q++;
            rc = jl_push(r, out->u.l, jv_str(p, (size_t)(q - p)));
            done++;
            p = q;
        }
        return rc;
    }
    for (;;) {
        const char *f = maxsplit >= 0 && done >= maxsplit
                            ? NULL
                            : find(p, (size_t)(end - p), sep.u.s.p, sep.u.s.n);
        if (!f) return jl_push(r, out->u.l, jv_str(p, (size_t)(end - p)));
        if ((rc = jl_push(r, out->u.l, jv_str(p, (size_t)(f - p))))) return rc;
        p = f + sep.u.s.n;
        done++;
    }
}

static int affix(struct jrender *r, struct jvalue s, struct jvalue x, int end, int *out)
{
    *out = 0;
    if (x.t == JV_LIST) {
        for (size_t i = 0; i < x.u.l->n && !*out; i++) {
            int rc = affix(r, s, x.u.l->v[i], end, out);
            if (rc) return rc;
        }
        return 0;
    }
    int rc = need_str(r, x, end ? "endswith" : "startswith");
    if (rc) return rc;
    if (x.u.s.n <= s.u.s.n)
        *out = memcmp(s.u.s.p + (end ? s.u.s.n - x.u.s.n : 0), x.u.s.p, x.u.s.n) == 0;
    return 0;
}

/* str.format with {} / {0} / {name} fields and {{ }} escapes */
static int format(struct jrender *r, struct jvalue s, const struct argv_ *a, struct jvalue *out)
{
    struct sbuf b = {0};
    size_t auto_i = 0;
    int rc = 0;
    for (size_t i = 0; i < s.u.s.n && !rc; i++) {
        char c = s.u.s.p[i];
        if ((c == '{' || c == '}') && i + 1 < s.u.s.n && s.u.s.p[i + 1] == c) {
            if (sbuf_append(&b, &c, 1)) rc = jr_nomem(r);
            i++;
            continue;
        }
        if (c != '{') {
            if (sbuf_append(&b, &c, 1)) rc = jr_nomem(r);
            continue;
        }
        const char *close = memchr(s.u.s.p + i, '}', s.u.s.n - i);
        if (!close) return jr_fail(r, "format: unmatched '{'");
        const char *f = s.u.s.p + i + 1;
        size_t fn = (size_t)(close - f);
        struct jvalue v = jv_undef();
        if (fn == 0) {
            v = arg(a, auto_i++, NULL, jv_undef());
        } else if (isdigit((unsigned char)f[0])) {
            v = arg(a, (size_t)strtoul(f, NULL, 10), NULL, jv_undef());
        } else {
            for (size_t k = 0; k < a->n_kw; k++)
                if (strlen(a->kw_names[k]) == fn && memcmp(a->kw_names[k], f, fn) == 0)
                    v = a->kw[k];
        }
        if (v.t == JV_UNDEF) {
            sbuf_fini(&b);
            return jr_fail(r, "format: no argument for field '%.*s'", (int)(fn < 40 ? fn : 40), f);
        }
        if ((rc = jv_append_str(r, &b, v))) break;
        i = (size_t)(close - s.u.s.p);
    }
    if (!rc) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

static int join(struct jrender *r, struct jvalue items, struct jvalue sep, struct jvalue attr,
                struct jvalue *out);

/* ---- attributes and methods */

static const char *const str_methods[] = {
    "strip",   "lstrip", "rstrip", "split",      "startswith", "endswith", "upper", "lower",
    "replace", "format", "title",  "capitalize", "find",       "count",    "join",  NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const list_methods[] = {"append", "pop", "index", NULL};

static const char *method_of(const char *const *names, const char *name, size_t n)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], name, n) == 0) return names[i];
    return NULL;
}

static int bind(struct jrender *r, struct jvalue self, const char *name, struct jvalue *out)
{
    struct jmethod *m = ja_alloc(&r->arena, sizeof *m);
    if (!m) return jr_nomem(r);
    m->self = self;
    m->name = name;
    *out = (struct jvalue){.t = JV_METHOD, .u.m = m};
    return 0;
}

static int loop_attr(struct jrender *r, const struct jloop *lp, const char *name,
                     struct jvalue *out)
{
    size_t i = lp->index0, n = lp->length;
    *out = jv_undef();
    if (!strcmp(name, "index")) *out = jv_int((int64_t)i + 1);
    else if (!strcmp(name, "index0")) *out = jv_int((int64_t)i);
    else if (!strcmp(name, "revindex")) *out = jv_int((int64_t)(n - i));
    else if (!strcmp(name, "revindex0")) *out = jv_int((int64_t)(n - i - 1));
    else if (!strcmp(name, "first")) *out = jv_bool(i == 0);
    else if (!strcmp(name, "last")) *out = jv_bool(i + 1 == n);
    else if (!strcmp(name, "length")) *out = jv_int((int64_t)n);
    else if (!strcmp(name, "depth")) *out = jv_int(1);
    else if (!strcmp(name, "depth0")) *out = jv_int(0);
    else if (!strcmp(name, "previtem") && i > 0) *out = lp->items->v[i - 1];
    else if (!strcmp(name, "nextitem") && i + 1 < n) *out = lp->items->v[i + 1];
    else if (!strcmp(name, "cycle"))
        return bind(r, (struct jvalue){.t = JV_LOOP, .u.loop = (struct jloop *)lp}, "cycle", out);
    return 0;
}

int jb_attr(struct jrender *r, struct jvalue obj, const char *name, size_t n, struct jvalue *out)
{
    const char *m = NULL;
    *out = jv_undef();
    char key[32];
    switch (obj.t) {
    case JV_DICT:
        if ((m = method_of(dict_methods, name, n))) return bind(r, obj, m, out);
        /* fall through */
    case JV_NS: {
        struct jvalue *v = jd_get(obj.u.d, name, n);
        if (v) *out = *v;
        return 0;
    }
    case JV_STR:
        if ((m = method_of(str_methods, name, n))) return bind(r, obj, m, out);
        return 0;
    case JV_LIST:
        if ((m = method_of(list_methods, name, n))) return bind(r, obj, m, out);
        return 0;
    case JV_LOOP:
        snprintf(key, sizeof key, "%.*s", (int)(n < 31 ? n : 31), name);
        return loop_attr(r, obj.u.loop, key, out);
    default: return 0;
    }
}

static int call_method(struct jrender *r, struct jvalue self, const char *name,
                       const struct argv_ *a, struct jvalue *out)
{
    struct jvalue none = jv_none(), x = arg(a, 0, NULL, none);
    int rc = 0, t = 0;
    *out = jv_none();
    if (self.t == JV_LOOP) { /* loop.cycle */
        if (a->n_args == 0) return jr_fail(r, "loop.cycle needs arguments");
        *out = a->args[self.u.loop->index0 % a->n_args];
        return 0;
    }
    if (self.t == JV_STR) {
        if (!strcmp(name, "strip")) *out = strip(self, x, 1, 1);
        else if (!strcmp(name, "lstrip")) *out = strip(self, x, 1, 0);
        else if (!strcmp(name, "rstrip")) *out = strip(self, x, 0, 1);
        else if (!strcmp(name, "split")) {
            struct jvalue ms = arg(a, 1, "maxsplit", jv_int(-1));
            return split(r, self, arg(a, 0, "sep", none), ms.t == JV_INT ? ms.u.i : -1, out);
        } else if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            rc = affix(r, self, x, name[0] == 'e', &t);
            *out = jv_bool(t);
        } else if (!strcmp(name, "upper")) return recase(r, self, 'u', out);
        else if (!strcmp(name, "lower")) return recase(r, self, 'l', out);
        else if (!strcmp(name, "title")) return recase(r, self, 't', out);
        else if (!strcmp(name, "capitalize")) return recase(r, self, 'c', out);
        else if (!strcmp(name, "replace")) {
            struct jvalue c = arg(a, 2, "count", jv_int(-1));
            return replace(r, self, x, arg(a, 1, NULL, none), c.t == JV_INT ? c.u.i : -1, out);
        } else if (!strcmp(name, "format")) return format(r, self, a, out);
        else if (!strcmp(name, "find") || !strcmp(name, "count")) {
            if ((rc = need_str(r, x, name))) return rc;
            if (name[0] == 'f') {
                const char *f = find(self.u.s.p, self.u.s.n, x.u.s.p, x.u.s.n);
                *out = jv_int(f ? (int64_t)utf8_count(self.u.s.p, (size_t)(f - self.u.s.p)) : -1);
            } else {
                int64_t c = 0;
                const char *p = self.u.s.p, *end = p + self.u.s.n, *f;
                if (x.u.s.n == 0) c = (int64_t)utf8_count(p, self.u.s.n) + 1;
                else
                    while ((f = find(p, (size_t)(end - p), x.u.s.p, x.u.s.n))) {
                        c++;
                        p = f + x.u.s.n;
                    }
                *out = jv_int(c);
            }
        } else if (!strcmp(name, "join")) return join(r, x, self, jv_none(), out);
        return rc;
    }
    if (self.t == JV_DICT) {
        const struct jdict *d = self.u.d;
        if (!strcmp(name, "get")) {
            struct jvalue *v = jd_getv(d, x);
            *out = v ? *v : arg(a, 1, "default", none);
            return 0;
        }
        if ((rc = jv_new_list(r, out))) return rc;
        for (size_t i = 0; i < d->n && !rc; i++) {
            struct jvalue item = name[0] == 'k' ? d->k[i] : d->v[i];
            if (name[0] == 'i') { /* items(): (key, value) pairs */
                if ((rc = jv_new_list(r, &item)) || (rc = jl_push(r, item.u.l, d->k[i])) ||
                    (rc = jl_push(r, item.u.l, d->v[i])))
                    break;
            }
            rc = jl_push(r, out->u.l, item);
        }
        return rc;
    }
    if (self.t == JV_LIST) {
        struct jlist *l = self.u.l;
        if (!strcmp(name, "append")) {
            if (a->n_args != 1) return jr_fail(r, "append takes one argument");
            return jl_push(r, l, x);
        }
        if (!strcmp(name, "index")) {
            for (size_t i = 0; i < l->n; i++)
                if (jv_equal(l->v[i], x)) {
                    *out = jv_int((int64_t)i);
                    return 0;
                }
            return jr_fail(r, "index: value not in list");
        }
        /* pop([i]) */
        int64_t i = x.t == JV_INT ? x.u.i : -1;
        if (i < 0) i += (int64_t)l->n;
        if (i < 0 || i >= (int64_t)l->n) return jr_fail(r, "pop index out of range");
        *out = l->v[i];
        memmove(&l->v[i], &l->v[i + 1], (l->n - (size_t)i - 1) * sizeof *l->v);
        l->n--;
        return 0;
    }
    return jr_fail(r, "unknown method '%s'", name);
}

/* ---- global functions */

static int range(struct jrender *r, const struct argv_ *a, struct jvalue *out)
{
    int64_t v[3] = {0, 0, 1};
    if (a->n_args < 1 || a->n_args > 3) return jr_fail(r, "range takes 1 to 3 arguments");
    for (size_t i = 0; i < a->n_args; i++) {
        if (a->args[i].t != JV_INT) return jr_fail(r, "range arguments must be integers");
        v[a->n_args == 1 ? 1 : i] = a->args[i].u.i;
    }
    if (v[2] == 0) return jr_fail(r, "range step must not be zero");
    int rc = jv_new_list(r, out);
    for (int64_t x = v[0]; !rc && (v[2] > 0 ? x < v[1] : x > v[1]); x += v[2]) {
        if ((rc = jr_step(r))) break;
        rc = jl_push(r, out->u.l, jv_int(x));
        if (__builtin_add_overflow(x, v[2], &x)) break;
        x -= v[2];
    }
    return rc;
}

int jb_call(struct jrender *r, struct jvalue fn, struct jvalue *args, size_t n_args,
            const char **kw_names, struct jvalue *kw, size_t n_kw, struct jvalue *out)
{
    struct argv_ a = {args, n_args, kw_names, kw, n_kw};
    int rc = jr_step(r);
    if (rc) return rc;
    if (fn.t == JV_METHOD) return call_method(r, fn.u.m->self, fn.u.m->name, &a, out);
    switch (fn.u.fn) {
    case FN_RANGE: return range(r, &a, out);
    case FN_NAMESPACE:
    case FN_DICT:
        if ((rc = jv_new_dict(r, fn.u.fn == FN_NAMESPACE ? JV_NS : JV_DICT, out))) return rc;
        if (n_args == 1 && (args[0].t == JV_DICT || args[0].t == JV_NS))
            for (size_t i = 0; i < args[0].u.d->n && !rc; i++)
                rc = jd_set(r, out->u.d, args[0].u.d->k[i], args[0].u.d->v[i]);
        for (size_t i = 0; i < n_kw && !rc; i++)
            rc = jd_set(r, out->u.d, jv_str(kw_names[i], strlen(kw_names[i])), kw[i]);
        return rc;
    case FN_RAISE: {
        struct jvalue msg = jv_str("", 0);
        if (n_args && (rc = jv_to_str(r, args[0], &msg))) return rc;
        return err_set(r->err, ERR_INVAL, "chat template error: %.*s",
                       (int)(msg.u.s.n < 200 ? msg.u.s.n : 200), msg.u.s.p);
    }
    case FN_STRFTIME: {
        if (n_args != 1 || args[0].t != JV_STR)
            return jr_fail(r, "strftime_now takes a format string");
        char fmtz[128], buf[256];
        snprintf(fmtz, sizeof fmtz, "%.*s", (int)(args[0].u.s.n < 127 ? args[0].u.s.n : 127),
                 args[0].u.s.p);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t n = strftime(buf, sizeof buf, fmtz, &tm);
        return jv_str_copy(r, buf, n, out);
    }
    }
    return jr_fail(r, "not callable");
}

/* ---- tests */

int jb_test(struct jrender *r, const char *name, struct jvalue v, struct jvalue *args,
            size_t n_args, int *out)
{
    struct jvalue x = n_args ? args[0] : jv_undef();
    int c = 0, rc = 0;
    *out = 0;
    if (!strcmp(name, "defined")) *out = v.t != JV_UNDEF;
    else if (!strcmp(name, "undefined")) *out = v.t == JV_UNDEF;
    else if (!strcmp(name, "none")) *out = v.t == JV_NONE;
    else if (!strcmp(name, "string")) *out = v.t == JV_STR;
    else if (!strcmp(name, "mapping")) *out = v.t == JV_DICT;
    else if (!strcmp(name, "iterable"))
        *out = v.t == JV_LIST || v.t == JV_DICT || v.t == JV_STR || v.t == JV_UNDEF;
    else if (!strcmp(name, "sequence")) *out = v.t == JV_LIST || v.t == JV_DICT || v.t == JV_STR;
    else if (!strcmp(name, "number")) *out = jv_is_num(v);
    else if (!strcmp(name, "integer")) *out = v.t == JV_INT;
    else if (!strcmp(name, "float")) *out = v.t == JV_FLOAT;
    else if (!strcmp(name, "boolean")) *out = v.t == JV_BOOL;
    else if (!strcmp(name, "true")) *out = v.t == JV_BOOL && v.u.b;
    else if (!strcmp(name, "false")) *out = v.t == JV_BOOL && !v.u.b;
    else if (!strcmp(name, "callable"))
        *out = v.t == JV_MACRO || v.t == JV_FUNC || v.t == JV_METHOD;
    else if (!strcmp(name, "even") || !strcmp(name, "odd") || !strcmp(name, "divisibleby")) {
        if (v.t != JV_INT && v.t != JV_BOOL) return jr_fail(r, "test '%s' needs an integer", name);
        int64_t i = v.t == JV_INT ? v.u.i : v.u.b,
                d = name[0] == 'd' ? (x.t == JV_INT ? x.u.i : 0) : 2;
        if (d == 0) return jr_fail(r, "divisibleby needs a non-zero integer");
        *out = name[0] == 'o' ? i % 2 != 0 : d == -1 || i % d == 0; /* INT64_MIN % -1 is UB */
    } else if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==") ||
               !strcmp(name, "sameas"))
        *out = jv_equal(v, x);
    else if (!strcmp(name, "ne") || !strcmp(name, "!=")) *out = !jv_equal(v, x);
    else if (!strcmp(name, "lt") || !strcmp(name, "le") || !strcmp(name, "gt") ||
             !strcmp(name, "ge") || !strcmp(name, "lessthan") || !strcmp(name, "greaterthan")) {
        if ((rc = jv_compare(r, v, x, &c))) return rc;
        *out =
            name[0] == 'l' ? (name[1] == 'e' ? c <= 0 : c < 0) : (name[1] == 'e' ? c >= 0 : c > 0);
    } else if (!strcmp(name, "in")) {
        if (x.t == JV_STR && v.t == JV_STR) {
            *out = find(x.u.s.p, x.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        } else if (x.t == JV_LIST) {
            for (size_t i = 0; i < x.u.l->n && !*out; i++) *out = jv_equal(x.u.l->v[i], v);
        } else if (x.t == JV_DICT) {
            *out = jd_getv(x.u.d, v) != NULL;
        } else {
            return jr_fail(r, "test 'in' needs a string, list or dict");
        }
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if ((rc = need_str(r, v, name))) return rc;
        *out = 1;
        for (size_t i = 0; i < v.u.s.n; i++)
            if (name[0] == 'l' ? isupper((unsigned char)v.u.s.p[i])
                               : islower((unsigned char)v.u.s.p[i]))
                *out = 0;
    } else {
        return jr_fail(r, "unknown test '%s'", name);
    }
    return 0;
}

/* ---- filters */

/* obj.a.b (dotted; integer parts index lists), Jinja2's attribute getter */
static int get_path(struct jrender *r, struct jvalue obj, struct jvalue path, struct jvalue *out)
{
    if (path.t == JV_INT) {
        struct jvalue *v = obj.t == JV_LIST && path.u.i >= 0 && (size_t)path.u.i < obj.u.l->n
                               ? &obj.u.l->v[path.u.i]
                               : NULL;
        *out = v ? *v : jv_undef();
        return 0;
    }
    int rc = need_str(r, path, "attribute");
    if (rc) return rc;
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    *out = obj;
    while (!rc && p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot) dot = end;
        if (out->t == JV_UNDEF) break;
        if (out->t == JV_LIST && dot > p && isdigit((unsigned char)*p)) {
            size_t i = (size_t)strtoul(p, NULL, 10);
            *out = i < out->u.l->n ? out->u.l->v[i] : jv_undef();
        } else {
            struct jvalue *v = out->t == JV_DICT || out->t == JV_NS
                                   ? jd_get(out->u.d, p, (size_t)(dot - p))
                                   : NULL;
            if (v) *out = *v;
            else rc = jb_attr(r, *out, p, (size_t)(dot - p), out);
        }
        p = dot + 1;
    }
    return rc;
}

static int join(struct jrender *r, struct jvalue items, struct jvalue sep, struct jvalue attr,
                struct jvalue *out)
{
    struct jlist *l;
    int rc = jv_iterate(r, items, &l);
    struct sbuf b = {0};
    if (rc) return rc;
    if (sep.t != JV_STR && sep.t != JV_NONE && sep.t != JV_UNDEF) return need_str(r, sep, "join");
    for (size_t i = 0; i < l->n && !rc; i++) {
        struct jvalue v = l->v[i];
        if (i && sep.t == JV_STR && sbuf_append(&b, sep.u.s.p, sep.u.s.n)) rc = jr_nomem(r);
        if (!rc && attr.t != JV_NONE) rc = get_path(r, v, attr, &v);
        if (!rc) rc = jv_append_str(r, &b, v);
        if (!rc && r->arena.limit && b.n > r->arena.limit) rc = jr_nomem(r);
    }
    if (!rc) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

/* sort key comparison: case-insensitive strings unless case_sensitive */
static int key_cmp(struct jrender *r, struct jvalue a, struct jvalue b, int cs, int *c)
{
    if (!cs && a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        for (size_t i = 0; i < n; i++) {
            int x = tolower((unsigned char)a.u.s.p[i]), y = tolower((unsigned char)b.u.s.p[i]);
            if (x != y) {
                *c = x < y ? -1 : 1;
                return 0;
            }
        }
        *c = a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
        return 0;
    }
    return jv_compare(r, a, b, c);
}

/* stable insertion sort of l (a copy) by key (attribute path, or item / pair element) */
static int sort_list(struct jrender *r, struct jlist *l, struct jvalue attr, int cs, int reverse)
{
    int rc = 0;
    if (l->n > 100000) return jr_fail(r, "sort: more than 100000 items");
    for (size_t i = 1; i < l->n; i++)
        for (size_t j = i; j > 0; j--) {
            struct jvalue x = l->v[j - 1], y = l->v[j];
            if (attr.t != JV_NONE &&
                ((rc = get_path(r, x, attr, &x)) || (rc = get_path(r, y, attr, &y))))
                return rc;
            int c = 0;
            if ((rc = jr_step(r)) || (rc = key_cmp(r, x, y, cs, &c))) return rc;
            if (reverse ? c >= 0 : c <= 0) break;
            struct jvalue t = l->v[j];
            l->v[j] = l->v[j - 1];
            l->v[j - 1] = t;
        }
    return 0;
}

static int copy_list(struct jrender *r, struct jvalue v, struct jvalue *out)
{
    struct jlist *l;
    int rc = jv_iterate(r, v, &l);
    if (rc || (rc = jv_new_list(r, out))) return rc;
    for (size_t i = 0; i < l->n && !rc; i++) rc = jl_push(r, out->u.l, l->v[i]);
    return rc;
}

static int select_items(struct jrender *r, struct jvalue v, const struct argv_ *a, int by_attr,
                        int keep, struct jvalue *out)
{
    struct jlist *l;
    int rc = jv_iterate(r, v, &l);
    if (rc || (rc = jv_new_list(r, out))) return rc;
    size_t first = by_attr ? 1 : 0;
    struct jvalue test = arg(a, first, NULL, jv_none());
    if (test.t != JV_NONE && (rc = need_str(r, test, "select test"))) return rc;
    char tname[32];
    if (test.t == JV_STR)
        snprintf(tname, sizeof tname, "%.*s", (int)(test.u.s.n < 31 ? test.u.s.n : 31), test.u.s.p);
    for (size_t i = 0; i < l->n && !rc; i++) {
        struct jvalue x = l->v[i];
        int t;
        if (by_attr && (rc = get_path(r, x, arg(a, 0, NULL, jv_none()), &x))) break;
        if (test.t == JV_NONE) t = jv_truthy(x);
        else if ((rc = jb_test(r, tname, x, a->args + first + 1,
                               a->n_args > first + 1 ? a->n_args - first - 1 : 0, &t)))
            break;
        if (t == keep) rc = jl_push(r, out->u.l, l->v[i]);
    }
    return rc;
}

static int to_number(struct jrender *r, struct jvalue v, int want_int, struct jvalue def,
                     struct jvalue *out)
{
    (void)r;
    *out = def;
    if (v.t == JV_INT) *out = want_int ? v : jv_float((double)v.u.i);
    else if (v.t == JV_BOOL) *out = want_int ? jv_int(v.u.b) : jv_float(v.u.b);
    else if (v.t == JV_FLOAT) {
        if (!want_int) *out = v;
        else if (fabs(v.u.f) < 9.2e18) *out = jv_int((int64_t)v.u.f);
    } else if (v.t == JV_STR && v.u.s.n < 64) {
        char buf[64], *e;
        memcpy(buf, v.u.s.p, v.u.s.n);
        buf[v.u.s.n] = 0;
        const char *p = buf;
        while (is_ws(*p)) p++;
        if (want_int) {
            long long i = strtoll(p, &e, 10);
            while (is_ws(*e)) e++;
            if (e != p && !*e) *out = jv_int(i);
            else {
                double f = strtod(p, &e);
                while (is_ws(*e)) e++;
                if (e != p && !*e && fabs(f) < 9.2e18) *out = jv_int((int64_t)f);
            }
        } else {
            double f = strtod(p, &e);
            while (is_ws(*e)) e++;
            if (e != p && !*e) *out = jv_float(f);
        }
    }
    return 0;
}

int jb_filter(struct jrender *r, const char *name, struct jvalue v, struct jvalue *args,
              size_t n_args, const char **kw_names, struct jvalue *kw, size_t n_kw,
              struct jvalue *out)
{
    struct argv_ a = {args, n_args, kw_names, kw, n_kw};
    struct jvalue none = jv_none();
    struct jlist *l;
    int rc = 0;
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        int boolean = jv_truthy(arg(&a, 1, "boolean", jv_bool(0)));
        *out = (v.t == JV_UNDEF || (boolean && !jv_truthy(v)))
                   ? arg(&a, 0, "default_value", jv_str("", 0))
                   : v;
        return 0;
    }
    if (!strcmp(name, "safe")) {
        *out = v;
        return 0;
    }
    if (!strcmp(name, "tojson")) {
        struct jvalue ind = arg(&a, 0, "indent", none), seps = arg(&a, 2, "separators", none);
        const char *item_sep = NULL, *key_sep = NULL;
        if (ind.t != JV_NONE && ind.t != JV_INT)
            return jr_fail(r, "tojson: indent must be an integer");
        if (seps.t == JV_LIST && seps.u.l->n == 2 && seps.u.l->v[0].t == JV_STR &&
            seps.u.l->v[1].t == JV_STR) {
            /* arena strings are NUL-terminated; literals too */
            struct jvalue s0, s1;
            if ((rc = jv_str_copy(r, seps.u.l->v[0].u.s.p, seps.u.l->v[0].u.s.n, &s0)) ||
                (rc = jv_str_copy(r, seps.u.l->v[1].u.s.p, seps.u.l->v[1].u.s.n, &s1)))
                return rc;
            item_sep = s0.u.s.p;
            key_sep = s1.u.s.p;
        }
        int indent = ind.t == JV_INT ? (int)(ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : ind.u.i) : -1;
        return jv_to_json(r, v, indent, item_sep, key_sep,
                          jv_truthy(arg(&a, 3, "sort_keys", jv_bool(0))), out);
    }
    if (!strcmp(name, "string")) return jv_to_str(r, v, out);
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v.t == JV_STR) *out = jv_int((int64_t)utf8_count(v.u.s.p, v.u.s.n));
        else if (v.t == JV_LIST) *out = jv_int((int64_t)v.u.l->n);
        else if (v.t == JV_DICT || v.t == JV_NS) *out = jv_int((int64_t)v.u.d->n);
        else if (v.t == JV_UNDEF) *out = jv_int(0);
        else return jr_fail(r, "object of type '%s' has no len()", jv_type_name(v));
        return 0;
    }
    if (!strcmp(name, "int") || !strcmp(name, "float"))
        return to_number(r, v, name[0] == 'i',
                         arg(&a, 0, "default", name[0] == 'i' ? jv_int(0) : jv_float(0)), out);
    if (!strcmp(name, "abs")) {
        if (!jv_is_num(v)) return jr_fail(r, "bad operand type for abs(): '%s'", jv_type_name(v));
        if (v.t == JV_FLOAT) *out = jv_float(fabs(v.u.f));
        else if (v.t == JV_INT && v.u.i == INT64_MIN) return jr_fail(r, "integer overflow in abs");
        else *out = jv_int(v.t == JV_INT ? (v.u.i < 0 ? -v.u.i : v.u.i) : v.u.b);
        return 0;
    }
    if (!strcmp(name, "round")) {
        if (!jv_is_num(v)) return jr_fail(r, "round needs a number");
        struct jvalue p = arg(&a, 0, "precision", jv_int(0)),
                      m = arg(&a, 1, "method", jv_str("common", 6));
        double scale = pow(10, p.t == JV_INT ? (double)(p.u.i > 15    ? 15
                                                        : p.u.i < -15 ? -15
                                                                      : p.u.i)
                                             : 0);
        double x = jv_num(v) * scale;
        if (m.t == JV_STR && m.u.s.n == 4 && !memcmp(m.u.s.p, "ceil", 4)) x = ceil(x);
        else if (m.t == JV_STR && m.u.s.n == 5 && !memcmp(m.u.s.p, "floor", 5)) x = floor(x);
        else x = nearbyint(x); /* Python's round: half to even */
        *out = jv_float(x / scale);
        return 0;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if ((rc = jv_iterate(r, v, &l))) return rc;
        *out = l->n ? l->v[name[0] == 'f' ? 0 : l->n - 1] : jv_undef();
        return 0;
    }
    if (!strcmp(name, "list")) return copy_list(r, v, out);
    if (!strcmp(name, "reverse")) {
        if ((rc = copy_list(r, v, out))) return rc;
        for (size_t i = 0, n = out->u.l->n; i < n / 2; i++) {
            struct jvalue t = out->u.l->v[i];
            out->u.l->v[i] = out->u.l->v[n - 1 - i];
            out->u.l->v[n - 1 - i] = t;
        }
        if (v.t == JV_STR) return join(r, *out, jv_str("", 0), none, out);
        return 0;
    }
    if (!strcmp(name, "items")) {
        if (v.t == JV_UNDEF) return jv_new_list(r, out);
        if (v.t != JV_DICT) return jr_fail(r, "items needs a mapping");
        return call_method(r, v, "items", &(struct argv_){0}, out);
    }
    if (!strcmp(name, "join"))
        return join(r, v, arg(&a, 0, "d", jv_str("", 0)), arg(&a, 1, "attribute", none), out);
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr") || !strcmp(name, "select") ||
        !strcmp(name, "reject"))
        return select_items(r, v, &a, strstr(name, "attr") != NULL, name[0] == 's', out);
    if (!strcmp(name, "map")) {
        if ((rc = jv_iterate(r, v, &l)) || (rc = jv_new_list(r, out))) return rc;
        struct jvalue attr = arg(&a, 99, "attribute", none),
                      def = arg(&a, 99, "default", jv_undef());
        struct jvalue f = arg(&a, 0, NULL, none);
        if (attr.t == JV_NONE && (rc = need_str(r, f, "map"))) return rc;
        char fname[32] = "";
        if (attr.t == JV_NONE)
            snprintf(fname, sizeof fname, "%.*s", (int)(f.u.s.n < 31 ? f.u.s.n : 31), f.u.s.p);
        for (size_t i = 0; i < l->n && !rc; i++) {
            struct jvalue x;
            if (attr.t != JV_NONE) {
                if ((rc = get_path(r, l->v[i], attr, &x))) break;
                if (x.t == JV_UNDEF) x = def;
            } else if ((rc = jb_filter(r, fname, l->v[i], args + 1, n_args ? n_args - 1 : 0,
                                       kw_names, kw, n_kw, &x))) {
                break;
            }
            rc = jl_push(r, out->u.l, x);
        }
        return rc;
    }
    if (!strcmp(name, "unique")) {
        int cs = jv_truthy(arg(&a, 0, "case_sensitive", jv_bool(0)));
        struct jvalue attr = arg(&a, 1, "attribute", none);
        if ((rc = jv_iterate(r, v, &l)) || (rc = jv_new_list(r, out))) return rc;
        for (size_t i = 0; i < l->n && !rc; i++) {
            struct jvalue x = l->v[i];
            int seen = 0, c;
            if (attr.t != JV_NONE && (rc = get_path(r, x, attr, &x))) break;
            for (size_t j = 0; j < out->u.l->n && !seen && !rc; j++) {
                struct jvalue y = out->u.l->v[j];
                if (attr.t != JV_NONE && (rc = get_path(r, y, attr, &y))) break;
                if ((rc = jr_step(r))) break;
                if (!cs && x.t == JV_STR && y.t == JV_STR)
                    seen = key_cmp(r, x, y, 0, &c) == 0 && c == 0;
                else seen = jv_equal(x, y);
            }
            if (!seen && !rc) rc = jl_push(r, out->u.l, l->v[i]);
        }
        return rc;
    }
    if (!strcmp(name, "sort")) {
        if ((rc = copy_list(r, v, out))) return rc;
        return sort_list(r, out->u.l, arg(&a, 2, "attribute", none),
                         jv_truthy(arg(&a, 1, "case_sensitive", jv_bool(0))),
                         jv_truthy(arg(&a, 0, "reverse", jv_bool(0))));
    }
    if (!strcmp(name, "dictsort")) {
        if (v.t != JV_DICT) return jr_fail(r, "dictsort needs a mapping");
        if ((rc = call_method(r, v, "items", &(struct argv_){0}, out))) return rc;
        struct jvalue by = arg(&a, 1, "by", jv_str("key", 3));
        int by_value = by.t == JV_STR && by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5);
        return sort_list(r, out->u.l, jv_int(by_value),
                         jv_truthy(arg(&a, 0, "case_sensitive", jv_bool(0))),
                         jv_truthy(arg(&a, 2, "reverse", jv_bool(0))));
    }
    if (!strcmp(name, "sum") || !strcmp(name, "max") || !strcmp(name, "min")) {
        if ((rc = jv_iterate(r, v, &l))) return rc;
        struct jvalue attr = arg(&a, name[1] == 'u' ? 0 : 99, "attribute", none);
        *out = name[1] == 'u' ? arg(&a, 1, "start", jv_int(0)) : jv_undef();
        for (size_t i = 0; i < l->n && !rc; i++) {
            struct jvalue x = l->v[i];
            int c = 0;
            if (attr.t != JV_NONE && (rc = get_path(r, x, attr, &x))) break;
            if (name[1] == 'u') {
                if (!jv_is_num(x) || !jv_is_num(*out)) return jr_fail(r, "sum needs numbers");
                int64_t acc;
                if (out->t == JV_INT && x.t == JV_INT) {
                    if (__builtin_add_overflow(out->u.i, x.u.i, &acc))
                        return jr_fail(r, "integer overflow in sum");
                    *out = jv_int(acc);
                } else {
                    *out = jv_float(jv_num(*out) + jv_num(x));
                }
            } else if (out->t == JV_UNDEF || ((rc = key_cmp(r, x, *out, 0, &c)) == 0 &&
                                              (name[1] == 'a' ? c > 0 : c < 0))) {
                *out = x;
            }
        }
        return rc;
    }
    if (!strcmp(name, "indent")) {
        if ((rc = need_str(r, v, "indent"))) return rc;
        struct jvalue w = arg(&a, 0, "width", jv_int(4));
        int first = jv_truthy(arg(&a, 1, "first", jv_bool(0)));
        int64_t width = w.t == JV_INT ? (w.u.i < 0 ? 0 : w.u.i > 256 ? 256 : w.u.i) : 4;
        struct sbuf b = {0};
        for (size_t i = 0; i < v.u.s.n && !rc; i++) {
            if ((i == 0 && first) || (i > 0 && v.u.s.p[i - 1] == '\n' && v.u.s.p[i] != '\n'))
                for (int64_t k = 0; k < width && !rc; k++)
                    if (sbuf_append(&b, " ", 1)) rc = jr_nomem(r);
            if (!rc && sbuf_append(&b, &v.u.s.p[i], 1)) rc = jr_nomem(r);
        }
        if (!rc) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
        sbuf_fini(&b);
        return rc;
    }
    /* string filters */
    if (!strcmp(name, "trim") || !strcmp(name, "upper") || !strcmp(name, "lower") ||
        !strcmp(name, "title") || !strcmp(name, "capitalize") || !strcmp(name, "replace")) {
        struct jvalue s;
        if ((rc = jv_to_str(r, v, &s))) return rc;
        if (name[0] == 't' && name[1] == 'r') {
            *out = strip(s, arg(&a, 0, "chars", none), 1, 1);
            return 0;
        }
        if (name[0] == 'r') {
            struct jvalue c = arg(&a, 2, "count", none);
            return replace(r, s, arg(&a, 0, NULL, none), arg(&a, 1, NULL, none),
                           c.t == JV_INT ? c.u.i : -1, out);
        }
        return recase(r, s,
                      name[0] == 't'   ? 't'
                      : name[0] == 'c' ? 'c'
                      : name[0] == 'u' ? 'u'
                                       : 'l',
                      out);
    }
    return jr_fail(r, "unknown filter '%s'", name);
}
