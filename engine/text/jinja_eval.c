/* jinja_eval.c - rendering: statements, expressions, scopes, macro calls; jinja_render.
 *
 * Scopes follow Jinja2: the top level holds the context and top-level sets; each for-loop
 * iteration and each macro call opens a scope (a macro's parent is the top level), so a set
 * inside a loop does not leak out (that is what namespace() is for); if-blocks open none.
 * Undefined follows Jinja2's default Undefined: it prints as '', iterates as empty, is false,
 * and equals only undefined; arithmetic on it, calling it or taking its attributes is an error.
 * break/continue travel up as the positive codes FLOW_BREAK/FLOW_CONTINUE.
 * Threads: all state is in struct jrender; the template is only read.
 */
#include "jinja_internal.h"

#include "common/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

static int exec_body(struct jrender *r, struct jscope *sc, struct jnode *const *body, size_t n);
static int eval(struct jrender *r, struct jscope *sc, const struct jnode *n, struct jvalue *out);

void jinja_default_limits(struct jinja_limits *l)
{
    l->max_memory = (size_t)256 << 20;
    l->max_output = (size_t)64 << 20;
    l->max_steps = 10000000;
    l->max_depth = 64;
}

/* ---- output */

static int emit(struct jrender *r, const char *s, size_t n)
{
    if (r->out->n - r->out_start + n > r->max_output)
        return jr_fail(r, "output larger than %zu bytes (the limit)", r->max_output);
    return sbuf_append(r->out, s, n) ? jr_nomem(r) : 0;
}

static int emit_value(struct jrender *r, struct jvalue v)
{
    if (v.t == JV_STR) return emit(r, v.u.s.p, v.u.s.n);
    if (v.t == JV_UNDEF) return 0;
    struct jvalue s;
    int rc = jv_to_str(r, v, &s);
    return rc ? rc : emit(r, s.u.s.p, s.u.s.n);
}

/* ---- scopes */

static int scope_new(struct jrender *r, struct jscope *parent, struct jscope **out)
{
    struct jscope *s = ja_alloc(&r->arena, sizeof *s);
    if (!s) return jr_nomem(r);
    s->parent = parent;
    *out = s;
    return 0;
}

static int scope_set(struct jrender *r, struct jscope *sc, const char *name, struct jvalue v)
{
    return jd_set(r, &sc->vars, jv_str(name, strlen(name)), v);
}

static struct jvalue lookup(struct jscope *sc, const char *name)
{
    size_t n = strlen(name);
    for (; sc; sc = sc->parent) {
        struct jvalue *v = jd_get(&sc->vars, name, n);
        if (v) return *v;
    }
    struct jvalue g;
    if (jb_global(name, &g)) return g;
    return jv_undef();
}

/* ---- expressions */

static int type_error(struct jrender *r, const char *op, struct jvalue a, struct jvalue b)
{
    return jr_fail(r, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a),
                   jv_type_name(b));
}

static int concat(struct jrender *r, const char *a, size_t na, const char *b, size_t nb,
                  struct jvalue *out)
{
    char *s = ja_alloc(&r->arena, na + nb + 1);
    if (!s) return jr_nomem(r);
    if (na) memcpy(s, a, na);
    if (nb) memcpy(s + na, b, nb);
    *out = jv_str(s, na + nb);
    return 0;
}

static int repeat(struct jrender *r, struct jvalue v, int64_t times, struct jvalue *out)
{
    if (times < 0 || (v.t == JV_STR ? v.u.s.n == 0 : v.u.l->n == 0)) times = 0;
    if (v.t == JV_STR) {
        if (v.u.s.n && (uint64_t)times > r->arena.limit / v.u.s.n) return jr_nomem(r);
        char *s = ja_alloc(&r->arena, v.u.s.n * (size_t)times + 1);
        if (!s) return jr_nomem(r);
        for (int64_t i = 0; i < times; i++) memcpy(s + (size_t)i * v.u.s.n, v.u.s.p, v.u.s.n);
        *out = jv_str(s, v.u.s.n * (size_t)times);
        return 0;
    }
    int rc = jv_new_list(r, out);
    for (int64_t i = 0; i < times && !rc; i++)
        for (size_t k = 0; k < v.u.l->n && !rc; k++) rc = jl_push(r, out->u.l, v.u.l->v[k]);
    return rc;
}

static int arith(struct jrender *r, int op, struct jvalue a, struct jvalue b, struct jvalue *out)
{
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    const char *name = names[op];
    if (op == JOP_ADD && a.t == JV_STR && b.t == JV_STR)
        return concat(r, a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n, out);
    if (op == JOP_ADD && a.t == JV_LIST && b.t == JV_LIST) {
        int rc = jv_new_list(r, out);
        for (size_t i = 0; i < a.u.l->n && !rc; i++) rc = jl_push(r, out->u.l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n && !rc; i++) rc = jl_push(r, out->u.l, b.u.l->v[i]);
        return rc;
    }
    if (op == JOP_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(r, a, b.t == JV_INT ? b.u.i : b.u.b, out);
    if (op == JOP_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(r, b, a.t == JV_INT ? a.u.i : a.u.b, out);
    if (!jv_is_num(a) || !jv_is_num(b)) return type_error(r, name, a, b);
    int ints = a.t != JV_FLOAT && b.t != JV_FLOAT;
    int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
    double fx = jv_num(a), fy = jv_num(b);
    int64_t ri;
    switch (op) {
    case JOP_ADD:
    case JOP_SUB:
    case JOP_MUL:
        if (ints) {
            int ovf = op == JOP_ADD   ? __builtin_add_overflow(x, y, &ri)
                      : op == JOP_SUB ? __builtin_sub_overflow(x, y, &ri)
                                      : __builtin_mul_overflow(x, y, &ri);
            if (ovf) return jr_fail(r, "integer overflow in '%s'", name);
            *out = jv_int(ri);
        } else {
            *out = jv_float(op == JOP_ADD ? fx + fy : op == JOP_SUB ? fx - fy : fx * fy);
        }
        return 0;
    case JOP_DIV:
        if (fy == 0) return jr_fail(r, "division by zero");
        *out = jv_float(fx / fy);
        return 0;
    case JOP_FLOORDIV:
    case JOP_MOD:
        if (fy == 0) return jr_fail(r, "division by zero");
        if (ints) {
            if (x == INT64_MIN && y == -1) return jr_fail(r, "integer overflow in '%s'", name);
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            *out = jv_int(op == JOP_FLOORDIV ? q : m);
        } else {
            double q = floor(fx / fy), m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            *out = jv_float(op == JOP_FLOORDIV ? q : m);
        }
        return 0;
    case JOP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1;
            if (x == -1) acc = (y % 2) ? -1 : 1;
            else if (x == 0) acc = y == 0;
            else if (x != 1)
                for (int64_t i = 0; i < y; i++) /* |x| >= 2 overflows within 63 steps */
                    if (__builtin_mul_overflow(acc, x, &acc))
                        return jr_fail(r, "integer overflow in '**'");
            *out = jv_int(acc);
        } else {
            *out = jv_float(pow(fx, fy));
        }
        return 0;
    }
    return type_error(r, name, a, b);
}

static int contains(struct jrender *r, struct jvalue item, struct jvalue in, int *out)
{
    *out = 0;
    if (in.t == JV_STR) {
        if (item.t != JV_STR) return jr_fail(r, "'in <string>' requires a string on the left");
        if (item.u.s.n == 0) {
            *out = 1;
            return 0;
        }
        for (size_t i = 0; i + item.u.s.n <= in.u.s.n; i++)
            if (memcmp(in.u.s.p + i, item.u.s.p, item.u.s.n) == 0) {
                *out = 1;
                break;
            }
        return 0;
    }
    if (in.t == JV_LIST) {
        for (size_t i = 0; i < in.u.l->n && !*out; i++) *out = jv_equal(in.u.l->v[i], item);
        return 0;
    }
    if (in.t == JV_DICT || in.t == JV_NS) {
        *out = jd_getv(in.u.d, item) != NULL;
        return 0;
    }
    if (in.t == JV_UNDEF) return 0;
    return jr_fail(r, "argument of type '%s' is not iterable", jv_type_name(in));
}

static int binary(struct jrender *r, struct jscope *sc, const struct jnode *n, struct jvalue *out)
{
    struct jvalue a, b;
    int rc = eval(r, sc, n->a, &a);
    if (rc) return rc;
    if (n->op == JOP_AND || n->op == JOP_OR) {
        if (jv_truthy(a) == (n->op == JOP_OR)) {
            *out = a;
            return 0;
        }
        return eval(r, sc, n->b, out);
    }
    if ((rc = eval(r, sc, n->b, &b))) return rc;
    r->line = n->line;
    int c = 0;
    switch (n->op) {
    case JOP_CONCAT: {
        struct jvalue x, y;
        if ((rc = jv_to_str(r, a, &x)) || (rc = jv_to_str(r, b, &y))) return rc;
        return concat(r, x.u.s.p, x.u.s.n, y.u.s.p, y.u.s.n, out);
    }
    case JOP_EQ: *out = jv_bool(jv_equal(a, b)); return 0;
    case JOP_NE: *out = jv_bool(!jv_equal(a, b)); return 0;
    case JOP_LT:
    case JOP_LE:
    case JOP_GT:
    case JOP_GE:
        if ((rc = jv_compare(r, a, b, &c))) return rc;
        *out = jv_bool(n->op == JOP_LT   ? c < 0
                       : n->op == JOP_LE ? c <= 0
                       : n->op == JOP_GT ? c > 0
                                         : c >= 0);
        return 0;
    case JOP_IN:
    case JOP_NOTIN:
        if ((rc = contains(r, a, b, &c))) return rc;
        *out = jv_bool(n->op == JOP_IN ? c : !c);
        return 0;
    default: return arith(r, n->op, a, b, out);
    }
}

/* Python's slice indices for a sequence of length len */
static void slice_bounds(int64_t len, const int64_t *given, const int *has, int64_t *start,
                         int64_t *stop, int64_t step)
{
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
    for (int k = 0; k < 2; k++) {
        int64_t *o = k ? stop : start;
        if (!has[k]) {
            *o = (step < 0) == (k == 0) ? hi : lo;
            continue;
        }
        int64_t x = given[k];
        if (x < 0) x += len;
        if (x < lo) x = lo;
        if (x > hi) x = hi;
        *o = x;
    }
}

static int slice(struct jrender *r, struct jscope *sc, const struct jnode *n, struct jvalue *out)
{
    struct jvalue obj, part[3];
    int64_t given[3] = {0, 0, 1};
    int has[3] = {0};
    int rc = eval(r, sc, n->a, &obj);
    for (int k = 0; k < 3 && !rc; k++) {
        if (!n->args[k]) continue;
        if ((rc = eval(r, sc, n->args[k], &part[k]))) break;
        if (part[k].t == JV_NONE) continue;
        if (part[k].t != JV_INT && part[k].t != JV_BOOL)
            return jr_fail(r, "slice indices must be integers or None");
        given[k] = part[k].t == JV_INT ? part[k].u.i : part[k].u.b;
        has[k] = 1;
    }
    if (rc) return rc;
    int64_t step = given[2];
    if (step == 0) return jr_fail(r, "slice step cannot be zero");
    if (obj.t != JV_STR && obj.t != JV_LIST)
        return jr_fail(r, "'%s' object is not subscriptable", jv_type_name(obj));
    int64_t len = obj.t == JV_STR ? (int64_t)utf8_count(obj.u.s.p, obj.u.s.n) : (int64_t)obj.u.l->n;
    int64_t start, stop;
    slice_bounds(len, given, has, &start, &stop, step);
    if (obj.t == JV_STR && step == 1) {
        if (stop < start) stop = start;
        size_t b0 = utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)start);
        size_t b1 = utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)stop);
        *out = jv_str(obj.u.s.p + b0, b1 - b0);
        return 0;
    }
    struct jlist *items = NULL;
    if ((rc = jv_iterate(r, obj, &items))) return rc;
    struct jvalue res;
    if ((rc = jv_new_list(r, &res))) return rc;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        if ((rc = jl_push(r, res.u.l, items->v[i]))) return rc;
    if (obj.t == JV_LIST) {
        *out = res;
        return 0;
    }
    struct sbuf b = {0};
    for (size_t i = 0; i < res.u.l->n && !rc; i++)
        if (sbuf_append(&b, res.u.l->v[i].u.s.p, res.u.l->v[i].u.s.n)) rc = jr_nomem(r);
    if (!rc) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc;
}

static int subscript(struct jrender *r, struct jvalue obj, struct jvalue key, struct jvalue *out)
{
    *out = jv_undef();
    if (obj.t == JV_DICT) {
        struct jvalue *v = jd_getv(obj.u.d, key);
        if (v) *out = *v;
        else if (key.t == JV_STR) return jb_attr(r, obj, key.u.s.p, key.u.s.n, out);
        return 0;
    }
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        int64_t len =
            obj.t == JV_LIST ? (int64_t)obj.u.l->n : (int64_t)utf8_count(obj.u.s.p, obj.u.s.n);
        if (i < 0) i += len;
        if (i < 0 || i >= len) return 0;
        if (obj.t == JV_LIST) {
            *out = obj.u.l->v[i];
        } else {
            size_t b0 = utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
            size_t b1 = utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
            *out = jv_str(obj.u.s.p + b0, b1 - b0);
        }
        return 0;
    }
    if (obj.t == JV_UNDEF) return jr_fail(r, "cannot subscript an undefined value");
    if (key.t == JV_STR) return jb_attr(r, obj, key.u.s.p, key.u.s.n, out);
    return 0;
}

/* evaluate positional and keyword arguments of a call or filter node */
static int eval_args(struct jrender *r, struct jscope *sc, const struct jnode *n,
                     struct jvalue **args, struct jvalue **kw)
{
    *args = ja_alloc(&r->arena, (n->n_args + 1) * sizeof **args);
    *kw = ja_alloc(&r->arena, (n->n_kw + 1) * sizeof **kw);
    if (!*args || !*kw) return jr_nomem(r);
    int rc = 0;
    for (size_t i = 0; i < n->n_args && !rc; i++) rc = eval(r, sc, n->args[i], &(*args)[i]);
    for (size_t i = 0; i < n->n_kw && !rc; i++) rc = eval(r, sc, n->kw[i], &(*kw)[i]);
    return rc;
}

static int call(struct jrender *r, struct jscope *sc, const struct jnode *n, struct jvalue *out)
{
    struct jvalue fn, *args, *kw;
    int rc = eval(r, sc, n->a, &fn);
    if (rc || (rc = eval_args(r, sc, n, &args, &kw))) return rc;
    r->line = n->line;
    if (fn.t == JV_MACRO)
        return je_call_macro(r, fn.u.macro, args, n->n_args, n->kw_names, kw, n->n_kw, out);
    if (fn.t == JV_FUNC || fn.t == JV_METHOD)
        return jb_call(r, fn, args, n->n_args, n->kw_names, kw, n->n_kw, out);
    if (fn.t == JV_UNDEF) {
        const char *what = n->a->kind == JN_NAME || n->a->kind == JN_ATTR ? n->a->s : "value";
        return jr_fail(r, "'%s' is undefined (called as a function)", what);
    }
    return jr_fail(r, "'%s' object is not callable", jv_type_name(fn));
}

static int eval(struct jrender *r, struct jscope *sc, const struct jnode *n, struct jvalue *out)
{
    struct jvalue a, b, *args, *kw;
    int rc;
    r->line = n->line;
    switch (n->kind) {
    case JN_LIT: *out = *n->v; return 0;
    case JN_NAME: *out = lookup(sc, n->s); return 0;
    case JN_ATTR:
        if ((rc = eval(r, sc, n->a, &a))) return rc;
        r->line = n->line;
        if (a.t == JV_UNDEF) return jr_fail(r, "'%s' of an undefined value is undefined", n->s);
        return jb_attr(r, a, n->s, strlen(n->s), out);
    case JN_INDEX:
        if ((rc = eval(r, sc, n->a, &a)) || (rc = eval(r, sc, n->b, &b))) return rc;
        r->line = n->line;
        return subscript(r, a, b, out);
    case JN_SLICE: return slice(r, sc, n, out);
    case JN_CALL: return call(r, sc, n, out);
    case JN_FILTER:
        if ((rc = eval(r, sc, n->a, &a)) || (rc = eval_args(r, sc, n, &args, &kw))) return rc;
        r->line = n->line;
        return jb_filter(r, n->s, a, args, n->n_args, n->kw_names, kw, n->n_kw, out);
    case JN_TEST: {
        int t = 0;
        if ((rc = eval(r, sc, n->a, &a)) || (rc = eval_args(r, sc, n, &args, &kw))) return rc;
        r->line = n->line;
        if ((rc = jb_test(r, n->s, a, args, n->n_args, &t))) return rc;
        *out = jv_bool(n->neg ? !t : t);
        return 0;
    }
    case JN_UNARY:
        if ((rc = eval(r, sc, n->a, &a))) return rc;
        if (n->op == 'n') {
            *out = jv_bool(!jv_truthy(a));
            return 0;
        }
        if (!jv_is_num(a))
            return jr_fail(r, "bad operand type for unary %c: '%s'", n->op, jv_type_name(a));
        if (n->op == '+') *out = a.t == JV_BOOL ? jv_int(a.u.b) : a;
        else if (a.t == JV_FLOAT) *out = jv_float(-a.u.f);
        else if (a.t == JV_INT && a.u.i == INT64_MIN) return jr_fail(r, "integer overflow in '-'");
        else *out = jv_int(a.t == JV_INT ? -a.u.i : -a.u.b);
        return 0;
    case JN_BINARY: return binary(r, sc, n, out);
    case JN_COND:
        if ((rc = eval(r, sc, n->a, &a))) return rc;
        if (jv_truthy(a)) return eval(r, sc, n->b, out);
        if (n->c) return eval(r, sc, n->c, out);
        *out = jv_undef();
        return 0;
    case JN_LIST:
        if ((rc = jv_new_list(r, out))) return rc;
        for (size_t i = 0; i < n->n_args; i++)
            if ((rc = eval(r, sc, n->args[i], &a)) || (rc = jl_push(r, out->u.l, a))) return rc;
        return 0;
    case JN_DICT:
        if ((rc = jv_new_dict(r, JV_DICT, out))) return rc;
        for (size_t i = 0; i < n->n_args; i++)
            if ((rc = eval(r, sc, n->args[i], &a)) || (rc = eval(r, sc, n->kw[i], &b)) ||
                (rc = jd_set(r, out->u.d, a, b)))
                return rc;
        return 0;
    default: return jr_fail(r, "internal error: statement used as an expression");
    }
}

/* ---- statements */

/* render body into a string (set blocks, macro calls) */
static int capture(struct jrender *r, struct jscope *sc, struct jnode *const *body, size_t n,
                   struct jvalue *out)
{
    struct sbuf b = {0}, *saved = r->out;
    size_t saved_start = r->out_start;
    r->out = &b;
    r->out_start = 0;
    int rc = exec_body(r, sc, body, n);
    r->out = saved;
    r->out_start = saved_start;
    if (rc == 0) rc = jv_str_copy(r, b.s ? b.s : "", b.n, out);
    sbuf_fini(&b);
    return rc > 0 ? jr_fail(r, "break or continue outside a loop") : rc;
}

static int assign_targets(struct jrender *r, struct jscope *sc, const char *const *names, size_t n,
                          struct jvalue v)
{
    if (n == 1) return scope_set(r, sc, names[0], v);
    struct jlist *items;
    int rc = jv_iterate(r, v, &items);
    if (rc) return rc;
    if (items->n != n) return jr_fail(r, "cannot unpack %zu values into %zu names", items->n, n);
    for (size_t i = 0; i < n && !rc; i++) rc = scope_set(r, sc, names[i], items->v[i]);
    return rc;
}

static int exec_for(struct jrender *r, struct jscope *sc, const struct jnode *n)
{
    struct jvalue it;
    struct jlist *items;
    int rc = eval(r, sc, n->a, &it);
    if (rc) return rc;
    r->line = n->line;
    if (it.t == JV_NONE) return jr_fail(r, "'NoneType' object is not iterable");
    if ((rc = jv_iterate(r, it, &items))) return rc;
    if (n->b) { /* the `if` filter runs before the loop, so loop.length counts what passes */
        struct jvalue kept;
        if ((rc = jv_new_list(r, &kept))) return rc;
        for (size_t i = 0; i < items->n; i++) {
            struct jscope *fs = NULL;
            struct jvalue ok;
            if ((rc = jr_step(r)) || (rc = scope_new(r, sc, &fs)) ||
                (rc = assign_targets(r, fs, n->names, n->n_names, items->v[i])) ||
                (rc = eval(r, fs, n->b, &ok)))
                return rc;
            if (jv_truthy(ok) && (rc = jl_push(r, kept.u.l, items->v[i]))) return rc;
        }
        items = kept.u.l;
    }
    size_t len = items->n;
    struct jloop *lp = ja_alloc(&r->arena, sizeof *lp);
    if (!lp) return jr_nomem(r);
    lp->length = len;
    lp->items = items;
    for (size_t i = 0; i < len; i++) {
        struct jscope *fs = NULL;
        lp->index0 = i;
        /* a fresh scope per iteration, recycled: its variables are dropped, not its storage */
        if ((rc = jr_step(r)) || (rc = scope_new(r, sc, &fs)) ||
            (rc = assign_targets(r, fs, n->names, n->n_names, items->v[i])) ||
            (rc = scope_set(r, fs, "loop", (struct jvalue){.t = JV_LOOP, .u.loop = lp})))
            return rc;
        rc = exec_body(r, fs, n->body, n->n_body);
        if (rc == FLOW_BREAK) break;
        if (rc == FLOW_CONTINUE) continue;
        if (rc) return rc;
    }
    if (len == 0) return exec_body(r, sc, n->else_body, n->n_else);
    return 0;
}

static int exec_set(struct jrender *r, struct jscope *sc, const struct jnode *n)
{
    struct jvalue v;
    int rc;
    if (n->kind == JN_SET_BLOCK) rc = capture(r, sc, n->body, n->n_body, &v);
    else rc = eval(r, sc, n->a, &v);
    if (rc) return rc;
    r->line = n->line;
    if (n->s) { /* ns.attr = v */
        struct jvalue ns = lookup(sc, n->names[0]);
        if (ns.t != JV_NS) return jr_fail(r, "cannot assign attribute on non-namespace object");
        return jd_set(r, ns.u.d, jv_str(n->s, strlen(n->s)), v);
    }
    return assign_targets(r, sc, n->names, n->n_names, v);
}

static int exec_node(struct jrender *r, struct jscope *sc, const struct jnode *n)
{
    struct jvalue v;
    int rc;
    r->line = n->line;
    switch (n->kind) {
    case JN_TEXT: return emit(r, n->s, n->sn);
    case JN_OUTPUT:
        if ((rc = eval(r, sc, n->a, &v))) return rc;
        return emit_value(r, v);
    case JN_IF:
        if ((rc = eval(r, sc, n->a, &v))) return rc;
        if (jv_truthy(v)) return exec_body(r, sc, n->body, n->n_body);
        return exec_body(r, sc, n->else_body, n->n_else);
    case JN_FOR: return exec_for(r, sc, n);
    case JN_SET:
    case JN_SET_BLOCK: return exec_set(r, sc, n);
    case JN_MACRO: return scope_set(r, sc, n->s, (struct jvalue){.t = JV_MACRO, .u.macro = n});
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    case JN_BLOCK: return exec_body(r, sc, n->body, n->n_body);
    default: return jr_fail(r, "internal error: expression used as a statement");
    }
}

static int exec_body(struct jrender *r, struct jscope *sc, struct jnode *const *body, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = exec_node(r, sc, body[i]);
        if (rc) return rc;
    }
    return 0;
}

int je_call_macro(struct jrender *r, const struct jnode *m, struct jvalue *args, size_t n_args,
                  const char **kw_names, struct jvalue *kw, size_t n_kw, struct jvalue *out)
{
    if (r->depth >= r->max_depth)
        return jr_fail(r, "macro calls nested deeper than %d (the limit)", r->max_depth);
    if (n_args > m->n_names)
        return jr_fail(r, "macro '%s' takes %zu arguments, %zu given", m->s, m->n_names, n_args);
    struct jscope *sc = NULL;
    int rc = jr_step(r);
    if (rc || (rc = scope_new(r, r->root, &sc))) return rc;
    for (size_t k = 0; k < n_kw; k++) {
        size_t i = 0;
        while (i < m->n_names && strcmp(m->names[i], kw_names[k]) != 0) i++;
        if (i == m->n_names)
            return jr_fail(r, "macro '%s' has no argument '%s'", m->s, kw_names[k]);
    }
    for (size_t i = 0; i < m->n_names; i++) {
        struct jvalue v = jv_undef();
        int set = 0;
        if (i < n_args) {
            v = args[i];
            set = 1;
        }
        for (size_t k = 0; k < n_kw; k++)
            if (strcmp(m->names[i], kw_names[k]) == 0) {
                v = kw[k];
                set = 1;
            }
        if (!set && m->args[i] && (rc = eval(r, sc, m->args[i], &v))) return rc;
        if ((rc = scope_set(r, sc, m->names[i], v))) return rc;
    }
    r->depth++;
    rc = capture(r, sc, m->body, m->n_body, out);
    r->depth--;
    return rc;
}

int jinja_render(const struct jinja *t, const json_t *vars, const struct jinja_limits *lim,
                 struct sbuf *out, char *err)
{
    struct jinja_limits def;
    if (!lim) {
        jinja_default_limits(&def);
        lim = &def;
    }
    struct jrender r = {.out = out, .out_start = out->n, .err = err};
    r.arena.limit = lim->max_memory;
    r.max_output = lim->max_output;
    r.max_steps = lim->max_steps;
    r.max_depth = lim->max_depth;
    struct jscope root = {0};
    r.root = &root;
    int rc = 0;
    const char *k;
    json_t *x;
    if (vars && json_is_object(vars)) {
        json_object_foreach((json_t *)vars, k, x)
        {
            struct jvalue v;
            if ((rc = jv_from_json(&r, x, &v)) || (rc = scope_set(&r, &root, k, v))) break;
        }
    }
    if (rc == 0) rc = exec_body(&r, &root, t->body, t->n_body);
    if (rc > 0) rc = jr_fail(&r, "break or continue outside a loop");
    if (rc) {
        out->n = r.out_start;
        if (out->s) out->s[out->n] = 0;
    }
    ja_free(&r.arena);
    return rc;
}
