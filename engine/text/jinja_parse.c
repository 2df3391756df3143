/* jinja_parse.c - tokens -> syntax tree; jinja_parse and jinja_free.
 *
 * Recursive descent with Jinja2's precedence, lowest first: `a if c else b`, or, and, not,
 * comparisons (== != < <= > >= in, not in), + -, ~, * / // %, **, unary - +, then a primary
 * with its postfixes (.attr, [index], [a:b:c], (call)) followed by filters (| f(args)) and tests
 * (is [not] t args). Statements: if/elif/else, for (tuple targets, `if` filter, else), set (name,
 * tuple, ns.attr, block), macro, break/continue, generation (a no-op block).
 * Nesting is bounded (MAX_NEST) so a hostile template cannot exhaust the stack.
 * Threads: pure; the tree is immutable once jinja_parse returns.
 */
#include "jinja_internal.h"

#include "common/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NEST 200
#define MAX_EXPR_DEPTH 400 /* height of an expression tree: evaluation recurses over it */

struct parser {
    struct jarena *a;
    struct jtok *t;
    size_t n, i;
    int nest;
    char *err;
};

struct nvec {
    struct jnode **v;
    size_t n, cap;
};

static int fail(struct parser *P, const struct jtok *t, const char *msg, const char *what)
{
    return err_set(P->err, ERR_FORMAT, "chat template line %d column %d: %s%s", t->line, t->col,
                   msg, what ? what : "");
}

static int nomem(struct parser *P) { return err_set(P->err, ERR_NOMEM, "chat template too large"); }

static struct jtok *cur(struct parser *P) { return &P->t[P->i]; }

static int is_op(const struct jtok *t, const char *op)
{
    return t->kind == JT_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

static int is_name(const struct jtok *t, const char *name)
{
    return t->kind == JT_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static int accept_op(struct parser *P, const char *op)
{
    if (!is_op(cur(P), op)) return 0;
    P->i++;
    return 1;
}

static int accept_name(struct parser *P, const char *name)
{
    if (!is_name(cur(P), name)) return 0;
    P->i++;
    return 1;
}

static int expect_op(struct parser *P, const char *op)
{
    if (accept_op(P, op)) return 0;
    return fail(P, cur(P), "expected ", op);
}

static const char *dup_name(struct parser *P, const struct jtok *t)
{
    char *s = ja_alloc(P->a, t->n + 1);
    if (s) memcpy(s, t->s, t->n);
    return s;
}

static int expect_name(struct parser *P, const char **out)
{
    if (cur(P)->kind != JT_NAME) return fail(P, cur(P), "expected a name", NULL);
    if (!(*out = dup_name(P, cur(P)))) return nomem(P);
    P->i++;
    return 0;
}

static struct jnode *node(struct parser *P, enum jnode_kind k, const struct jtok *at)
{
    struct jnode *n = ja_alloc(P->a, sizeof *n);
    if (n) {
        n->kind = k;
        n->line = at->line;
        n->col = at->col;
    }
    return n;
}

static int nvec_push(struct parser *P, struct nvec *v, struct jnode *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        struct jnode **nv = ja_alloc(P->a, cap * sizeof *nv);
        if (!nv) return nomem(P);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

static int push_name(struct parser *P, const char ***names, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 4;
        const char **nv = ja_alloc(P->a, c * sizeof *nv);
        if (!nv) return nomem(P);
        if (*n) memcpy(nv, *names, *n * sizeof *nv);
        *names = nv;
        *cap = c;
    }
    (*names)[(*n)++] = s;
    return 0;
}

/* n's height from its operand children; an error past MAX_EXPR_DEPTH (`a + a + ... + a` or
 * `x.a.a...a` chains are iterative to parse, but recursive to evaluate) */
static int deepen(struct parser *P, struct jnode *n)
{
    int d = 0;
    const struct jnode *kids[3] = {n->a, n->b, n->c};
    for (int k = 0; k < 3; k++)
        if (kids[k] && kids[k]->depth > d) d = kids[k]->depth;
    n->depth = d + 1;
    if (n->depth > MAX_EXPR_DEPTH)
        return fail(P, &P->t[P->i], "expression nested too deeply", NULL);
    return 0;
}

static int parse_expr(struct parser *P, struct jnode **out);
static int parse_or(struct parser *P, struct jnode **out);
static int parse_unary(struct parser *P, int with_filter, struct jnode **out);

/* (args, key=value, ...) after the '(' was read; into n's args and kw */
static int parse_args(struct parser *P, struct jnode *n)
{
    struct nvec args = {0}, kw = {0};
    size_t n_names = 0, cap = 0;
    const char **names = NULL;
    while (!accept_op(P, ")")) {
        if ((args.n || kw.n) && expect_op(P, ","))
            return fail(P, cur(P), "expected ',' or ')'", NULL);
        if (accept_op(P, ")")) break;
        struct jnode *e;
        if (cur(P)->kind == JT_NAME && is_op(&P->t[P->i + 1], "=")) {
            const char *k;
            int rc = expect_name(P, &k);
            if (rc) return rc;
            P->i++;
            if ((rc = parse_expr(P, &e)) || (rc = push_name(P, &names, &n_names, &cap, k)) ||
                (rc = nvec_push(P, &kw, e)))
                return rc;
        } else {
            if (kw.n) return fail(P, cur(P), "positional argument after a keyword argument", NULL);
            int rc = parse_expr(P, &e);
            if (rc || (rc = nvec_push(P, &args, e))) return rc;
        }
    }
    n->args = args.v;
    n->n_args = args.n;
    n->kw = kw.v;
    n->kw_names = names;
    n->n_kw = kw.n;
    return 0;
}

static int parse_primary(struct parser *P, struct jnode **out)
{
    struct jtok *t = cur(P);
    struct jnode *n;
    if (t->kind == JT_NAME) {
        static const char *const lits[] = {"true", "True", "false", "False", "none", "None"};
        for (int k = 0; k < 6; k++)
            if (is_name(t, lits[k])) {
                if (!(n = node(P, JN_LIT, t)) || !(n->v = ja_alloc(P->a, sizeof *n->v)))
                    return nomem(P);
                *n->v = k < 4 ? jv_bool(k < 2) : jv_none();
                P->i++;
                *out = n;
                return 0;
            }
        if (!(n = node(P, JN_NAME, t))) return nomem(P);
        int rc = expect_name(P, &n->s);
        if (rc) return rc;
        *out = n;
        return 0;
    }
    if (t->kind == JT_STRING || t->kind == JT_INT || t->kind == JT_FLOAT) {
        if (!(n = node(P, JN_LIT, t)) || !(n->v = ja_alloc(P->a, sizeof *n->v))) return nomem(P);
        if (t->kind == JT_INT) *n->v = jv_int(t->i);
        if (t->kind == JT_FLOAT) *n->v = jv_float(t->f);
        P->i++;
        if (t->kind == JT_STRING) { /* adjacent literals concatenate */
            size_t len = t->n, k = P->i;
            while (P->t[k].kind == JT_STRING) len += P->t[k++].n;
            char *s = ja_alloc(P->a, len + 1);
            if (!s) return nomem(P);
            memcpy(s, t->s, t->n);
            len = t->n;
            for (; cur(P)->kind == JT_STRING; P->i++) {
                memcpy(s + len, cur(P)->s, cur(P)->n);
                len += cur(P)->n;
            }
            *n->v = jv_str(s, len);
        }
        *out = n;
        return 0;
    }
    if (accept_op(P, "(")) {
        int rc = parse_expr(P, out);
        if (rc) return rc;
        if (is_op(cur(P), ",")) { /* a tuple: a list here */
            struct nvec items = {0};
            if ((rc = nvec_push(P, &items, *out))) return rc;
            while (accept_op(P, ",") && !is_op(cur(P), ")")) {
                struct jnode *e;
                if ((rc = parse_expr(P, &e)) || (rc = nvec_push(P, &items, e))) return rc;
            }
            if (!(n = node(P, JN_LIST, t))) return nomem(P);
            n->args = items.v;
            n->n_args = items.n;
            *out = n;
        }
        return expect_op(P, ")");
    }
    if (accept_op(P, "[")) {
        struct nvec items = {0};
        while (!accept_op(P, "]")) {
            if (items.n && expect_op(P, ",")) return fail(P, cur(P), "expected ',' or ']'", NULL);
            if (accept_op(P, "]")) break;
            struct jnode *e;
            int rc = parse_expr(P, &e);
            if (rc || (rc = nvec_push(P, &items, e))) return rc;
        }
        if (!(n = node(P, JN_LIST, t))) return nomem(P);
        n->args = items.v;
        n->n_args = items.n;
        *out = n;
        return 0;
    }
    if (accept_op(P, "{")) {
        struct nvec keys = {0}, vals = {0};
        while (!accept_op(P, "}")) {
            if (keys.n && expect_op(P, ",")) return fail(P, cur(P), "expected ',' or '}'", NULL);
            if (accept_op(P, "}")) break;
            struct jnode *k, *v;
            int rc = parse_expr(P, &k);
            if (rc || (rc = expect_op(P, ":")) || (rc = parse_expr(P, &v)) ||
                (rc = nvec_push(P, &keys, k)) || (rc = nvec_push(P, &vals, v)))
                return rc;
        }
        if (!(n = node(P, JN_DICT, t))) return nomem(P);
        n->args = keys.v;
        n->kw = vals.v;
        n->n_args = keys.n;
        *out = n;
        return 0;
    }
    if (t->kind == JT_EOF) return fail(P, t, "unexpected end of template", NULL);
    return fail(P, t, "unexpected token in expression", NULL);
}

static int parse_postfix(struct parser *P, struct jnode **e)
{
    for (;;) {
        struct jtok *t = cur(P);
        struct jnode *n;
        int rc;
        if (accept_op(P, ".")) {
            if (!(n = node(P, JN_ATTR, t))) return nomem(P);
            if (cur(P)->kind == JT_INT) { /* foo.0 is foo[0] */
                n->kind = JN_INDEX;
                if (!(n->b = node(P, JN_LIT, cur(P))) ||
                    !(n->b->v = ja_alloc(P->a, sizeof(struct jvalue))))
                    return nomem(P);
                *n->b->v = jv_int(cur(P)->i);
                P->i++;
            } else if ((rc = expect_name(P, &n->s))) {
                return rc;
            }
            n->a = *e;
        } else if (accept_op(P, "[")) {
            struct jnode *part[3] = {0};
            int colons = 0;
            for (;;) {
                if (is_op(cur(P), ":")) {
                    if (++colons > 2) return fail(P, cur(P), "bad slice", NULL);
                    P->i++;
                    continue;
                }
                if (is_op(cur(P), "]")) break;
                if (part[colons]) return fail(P, cur(P), "expected ']'", NULL);
                if ((rc = parse_expr(P, &part[colons]))) return rc;
            }
            P->i++;
            if (!(n = node(P, colons ? JN_SLICE : JN_INDEX, t))) return nomem(P);
            n->a = *e;
            if (colons) {
                if (!(n->args = ja_alloc(P->a, 3 * sizeof *n->args))) return nomem(P);
                memcpy(n->args, part, sizeof part);
                n->n_args = 3;
            } else {
                if (!part[0]) return fail(P, t, "empty subscript", NULL);
                n->b = part[0];
            }
        } else if (accept_op(P, "(")) {
            if (!(n = node(P, JN_CALL, t))) return nomem(P);
            n->a = *e;
            if ((rc = parse_args(P, n))) return rc;
        } else {
            return 0;
        }
        if ((rc = deepen(P, n))) return rc;
        *e = n;
    }
}

/* filters and tests after a unary expression */
static int parse_filters(struct parser *P, struct jnode **e)
{
    for (;;) {
        struct jtok *t = cur(P);
        struct jnode *n;
        int rc;
        if (accept_op(P, "|")) {
            if (!(n = node(P, JN_FILTER, t))) return nomem(P);
            if ((rc = expect_name(P, &n->s))) return rc;
            if (accept_op(P, "(") && (rc = parse_args(P, n))) return rc;
            n->a = *e;
        } else if (accept_name(P, "is")) {
            if (!(n = node(P, JN_TEST, t))) return nomem(P);
            n->neg = accept_name(P, "not");
            if (accept_name(P, "none")) n->s = "none"; /* a literal name, taken as the test */
            else if (accept_name(P, "true")) n->s = "true";
            else if (accept_name(P, "false")) n->s = "false";
            else if ((rc = expect_name(P, &n->s))) return rc;
            n->a = *e;
            struct jtok *u = cur(P);
            if (accept_op(P, "(")) {
                if ((rc = parse_args(P, n))) return rc;
            } else if ((u->kind == JT_STRING || u->kind == JT_INT || u->kind == JT_FLOAT ||
                        (u->kind == JT_NAME && !is_name(u, "else") && !is_name(u, "and") &&
                         !is_name(u, "or") && !is_name(u, "if") && !is_name(u, "in") &&
                         !is_name(u, "is") && !is_name(u, "not"))) ||
                       is_op(u, "[") || is_op(u, "{")) {
                struct jnode *arg;
                if ((rc = parse_primary(P, &arg)) || (rc = parse_postfix(P, &arg))) return rc;
                if (!(n->args = ja_alloc(P->a, sizeof *n->args))) return nomem(P);
                n->args[0] = arg;
                n->n_args = 1;
            }
        } else {
            return 0;
        }
        if ((rc = deepen(P, n))) return rc;
        *e = n;
    }
}

static int nest_in(struct parser *P)
{
    if (++P->nest > MAX_NEST) return fail(P, cur(P), "nested too deeply", NULL);
    return 0;
}

static int parse_unary(struct parser *P, int with_filter, struct jnode **out)
{
    struct jtok *t = cur(P);
    int rc = nest_in(P);
    if (rc) return rc;
    if (is_op(t, "-") || is_op(t, "+")) {
        P->i++;
        struct jnode *n = node(P, JN_UNARY, t);
        if (!n) return nomem(P);
        n->op = *t->s;
        if ((rc = parse_unary(P, 0, &n->a)) || (rc = deepen(P, n))) return rc;
        *out = n;
    } else {
        if ((rc = parse_primary(P, out)) || (rc = parse_postfix(P, out))) return rc;
    }
    if (with_filter && (rc = parse_filters(P, out))) return rc;
    P->nest--;
    return 0;
}

static int binary(struct parser *P, const struct jtok *t, int op, struct jnode *a, struct jnode *b,
                  struct jnode **out)
{
    struct jnode *n = node(P, JN_BINARY, t);
    if (!n) return nomem(P);
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return deepen(P, n);
}

/* one level of left-associative binary operators */
struct level {
    const char *ops[4];
    int codes[4];
};
static const struct level levels[] = {
    {{"+", "-"}, {JOP_ADD, JOP_SUB}},
    {{"~"}, {JOP_CONCAT}},
    {{"*", "/", "//", "%"}, {JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD}},
    {{"**"}, {JOP_POW}},
};

static int parse_level(struct parser *P, int lv, struct jnode **out)
{
    if (lv == 4) return parse_unary(P, 1, out);
    int rc = parse_level(P, lv + 1, out);
    while (rc == 0) {
        struct jtok *t = cur(P);
        int op = 0;
        for (int k = 0; k < 4 && levels[lv].ops[k]; k++)
            if (is_op(t, levels[lv].ops[k])) op = levels[lv].codes[k];
        if (!op) break;
        P->i++;
        struct jnode *b;
        if ((rc = parse_level(P, lv + 1, &b))) break;
        rc = binary(P, t, op, *out, b, out);
    }
    return rc;
}

static int parse_compare(struct parser *P, struct jnode **out)
{
    static const char *const ops[] = {"==", "!=", "<=", ">=", "<", ">"};
    static const int codes[] = {JOP_EQ, JOP_NE, JOP_LE, JOP_GE, JOP_LT, JOP_GT};
    struct jnode *last = NULL; /* the previous comparison of a chain */
    int rc = parse_level(P, 0, out);
    while (rc == 0) {
        struct jtok *t = cur(P);
        int op = 0;
        for (int k = 0; k < 6; k++)
            if (is_op(t, ops[k])) op = codes[k];
        if (op) {
            P->i++;
        } else if (is_name(t, "in")) {
            op = JOP_IN;
            P->i++;
        } else if (is_name(t, "not") && is_name(&P->t[P->i + 1], "in")) {
            op = JOP_NOTIN;
            P->i += 2;
        } else {
            break;
        }
        struct jnode *b, *cmp = NULL;
        if ((rc = parse_level(P, 0, &b))) break;
        if (last) { /* a < b < c is (a < b) and (b < c), as in Python */
            if ((rc = binary(P, t, op, last->b, b, &cmp))) break;
            rc = binary(P, t, JOP_AND, *out, cmp, out);
            last = cmp;
        } else {
            rc = binary(P, t, op, *out, b, out);
            last = *out;
        }
    }
    return rc;
}

static int parse_not(struct parser *P, struct jnode **out)
{
    struct jtok *t = cur(P);
    if (accept_name(P, "not")) {
        struct jnode *n = node(P, JN_UNARY, t);
        if (!n) return nomem(P);
        n->op = 'n';
        int rc = nest_in(P);
        if (rc || (rc = parse_not(P, &n->a)) || (rc = deepen(P, n))) return rc;
        P->nest--;
        *out = n;
        return 0;
    }
    return parse_compare(P, out);
}

static int parse_and(struct parser *P, struct jnode **out)
{
    int rc = parse_not(P, out);
    while (rc == 0 && is_name(cur(P), "and")) {
        struct jtok *t = cur(P);
        P->i++;
        struct jnode *b;
        if ((rc = parse_not(P, &b))) break;
        rc = binary(P, t, JOP_AND, *out, b, out);
    }
    return rc;
}

static int parse_or(struct parser *P, struct jnode **out)
{
    int rc = parse_and(P, out);
    while (rc == 0 && is_name(cur(P), "or")) {
        struct jtok *t = cur(P);
        P->i++;
        struct jnode *b;
        if ((rc = parse_and(P, &b))) break;
        rc = binary(P, t, JOP_OR, *out, b, out);
    }
    return rc;
}

static int parse_expr(struct parser *P, struct jnode **out)
{
    int rc = nest_in(P);
    if (rc || (rc = parse_or(P, out))) return rc;
    while (is_name(cur(P), "if")) {
        struct jtok *t = cur(P);
        P->i++;
        struct jnode *n = node(P, JN_COND, t);
        if (!n) return nomem(P);
        n->b = *out;
        if ((rc = parse_or(P, &n->a))) return rc;
        if (accept_name(P, "else") && (rc = parse_expr(P, &n->c))) return rc;
        if ((rc = deepen(P, n))) return rc;
        *out = n;
    }
    P->nest--;
    return 0;
}

/* ---- statements */

static int parse_body(struct parser *P, const char *const *ends, struct nvec *body, int *which);

static int end_tag(struct parser *P)
{
    if (cur(P)->kind != JT_BLOCK_END) return fail(P, cur(P), "expected '%}'", NULL);
    P->i++;
    return 0;
}

/* {% if %} after the name: condition, bodies, elif chain */
static int parse_if(struct parser *P, struct jnode *n)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct nvec body = {0}, els = {0};
    int which, rc;
    if ((rc = parse_expr(P, &n->a)) || (rc = end_tag(P)) ||
        (rc = parse_body(P, ends, &body, &which)))
        return rc;
    n->body = body.v;
    n->n_body = body.n;
    if (which == 0) { /* elif: a nested if as the else body */
        struct jnode *e = node(P, JN_IF, cur(P));
        if (!e || nvec_push(P, &els, e)) return nomem(P);
        if ((rc = nest_in(P)) || (rc = parse_if(P, e))) return rc;
        P->nest--;
    } else if (which == 1) {
        static const char *const end[] = {"endif", NULL};
        if ((rc = end_tag(P)) || (rc = parse_body(P, end, &els, &which))) return rc;
        if ((rc = end_tag(P))) return rc;
    } else if ((rc = end_tag(P))) {
        return rc;
    }
    n->else_body = els.v;
    n->n_else = els.n;
    return 0;
}

static int parse_targets(struct parser *P, struct jnode *n)
{
    size_t cap = 0;
    int paren = accept_op(P, "(");
    do {
        const char *s;
        int rc = expect_name(P, &s);
        if (rc || (rc = push_name(P, &n->names, &n->n_names, &cap, s))) return rc;
    } while (accept_op(P, ","));
    return paren ? expect_op(P, ")") : 0;
}

static int parse_for(struct parser *P, struct jnode *n)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const end[] = {"endfor", NULL};
    struct nvec body = {0}, els = {0};
    int which, rc;
    if ((rc = parse_targets(P, n))) return rc;
    if (!accept_name(P, "in")) return fail(P, cur(P), "expected 'in'", NULL);
    if ((rc = parse_or(P, &n->a))) return rc;
    if (accept_name(P, "if") && (rc = parse_expr(P, &n->b))) return rc;
    if (accept_name(P, "recursive"))
        return fail(P, cur(P), "recursive loops are not supported", NULL);
    if ((rc = end_tag(P)) || (rc = parse_body(P, ends, &body, &which))) return rc;
    if (which == 0 && ((rc = end_tag(P)) || (rc = parse_body(P, end, &els, &which)))) return rc;
    n->body = body.v;
    n->n_body = body.n;
    n->else_body = els.v;
    n->n_else = els.n;
    return end_tag(P);
}

static int parse_set(struct parser *P, struct jnode *n)
{
    size_t cap = 0;
    const char *s;
    int rc = expect_name(P, &s);
    if (rc || (rc = push_name(P, &n->names, &n->n_names, &cap, s))) return rc;
    if (accept_op(P, ".")) { /* ns.attr: names[0] the namespace, s the attribute */
        if ((rc = expect_name(P, &n->s))) return rc;
    } else {
        while (accept_op(P, ",")) {
            if ((rc = expect_name(P, &s)) || (rc = push_name(P, &n->names, &n->n_names, &cap, s)))
                return rc;
        }
    }
    if (accept_op(P, "=")) {
        if ((rc = parse_expr(P, &n->a))) return rc;
        return end_tag(P);
    }
    if (n->n_names != 1 || n->s) return fail(P, cur(P), "expected '='", NULL);
    static const char *const end[] = {"endset", NULL};
    struct nvec body = {0};
    int which;
    n->kind = JN_SET_BLOCK;
    if ((rc = end_tag(P)) || (rc = parse_body(P, end, &body, &which))) return rc;
    n->body = body.v;
    n->n_body = body.n;
    return end_tag(P);
}

static int parse_macro(struct parser *P, struct jnode *n)
{
    static const char *const end[] = {"endmacro", NULL};
    struct nvec defs = {0}, body = {0};
    size_t cap = 0;
    int rc = expect_name(P, &n->s), which;
    if (rc || (rc = expect_op(P, "("))) return rc;
    while (!accept_op(P, ")")) {
        if (n->n_names && (rc = expect_op(P, ","))) return rc;
        if (accept_op(P, ")")) break;
        const char *s;
        struct jnode *d = NULL;
        if ((rc = expect_name(P, &s))) return rc;
        if (accept_op(P, "=") && (rc = parse_expr(P, &d))) return rc;
        if ((rc = push_name(P, &n->names, &n->n_names, &cap, s)) || (rc = nvec_push(P, &defs, d)))
            return rc;
    }
    n->args = defs.v;
    n->n_args = defs.n;
    if ((rc = end_tag(P)) || (rc = parse_body(P, end, &body, &which))) return rc;
    n->body = body.v;
    n->n_body = body.n;
    if (cur(P)->kind == JT_NAME) P->i++; /* {% endmacro name %} */
    return end_tag(P);
}

/* one {% ... %} statement after {% (the name is current) */
static int parse_statement(struct parser *P, struct jnode **out)
{
    struct jtok *t = cur(P);
    struct jnode *n = node(P, JN_IF, t);
    int rc;
    if (!n) return nomem(P);
    *out = n;
    if (accept_name(P, "if")) return parse_if(P, n);
    if (accept_name(P, "for")) {
        n->kind = JN_FOR;
        return parse_for(P, n);
    }
    if (accept_name(P, "set")) {
        n->kind = JN_SET;
        return parse_set(P, n);
    }
    if (accept_name(P, "macro")) {
        n->kind = JN_MACRO;
        return parse_macro(P, n);
    }
    if (accept_name(P, "break") || accept_name(P, "continue")) {
        n->kind = is_name(t, "break") ? JN_BREAK : JN_CONTINUE;
        return end_tag(P);
    }
    if (accept_name(P, "generation")) {
        static const char *const end[] = {"endgeneration", NULL};
        struct nvec body = {0};
        int which;
        n->kind = JN_BLOCK;
        if ((rc = end_tag(P)) || (rc = parse_body(P, end, &body, &which))) return rc;
        n->body = body.v;
        n->n_body = body.n;
        return end_tag(P);
    }
    if (t->kind != JT_NAME) return fail(P, t, "expected a statement name", NULL);
    char name[48];
    snprintf(name, sizeof name, "%.*s", (int)(t->n < 40 ? t->n : 40), t->s);
    return fail(P, t, "unknown or unexpected statement: ", name);
}

/* statements until one of the end names (NULL-terminated; ends NULL: until EOF). On return the
 * current token follows the end name (its %} not yet read); *which its index. */
static int parse_body(struct parser *P, const char *const *ends, struct nvec *body, int *which)
{
    int rc = nest_in(P);
    if (rc) return rc;
    for (;;) {
        struct jtok *t = cur(P);
        struct jnode *n = NULL;
        if (t->kind == JT_EOF) {
            if (!ends) break;
            int last = 0;
            while (ends[last + 1]) last++;
            return fail(P, t, "unexpected end of template, expected ", ends[last]);
        }
        P->i++;
        if (t->kind == JT_TEXT) {
            if (!(n = node(P, JN_TEXT, t))) return nomem(P);
            n->s = t->s;
            n->sn = t->n;
        } else if (t->kind == JT_VAR_BEGIN) {
            if (!(n = node(P, JN_OUTPUT, t))) return nomem(P);
            if ((rc = parse_expr(P, &n->a))) return rc;
            if (cur(P)->kind != JT_VAR_END) return fail(P, cur(P), "expected '}}'", NULL);
            P->i++;
        } else if (t->kind == JT_BLOCK_BEGIN) {
            for (int k = 0; ends && ends[k]; k++)
                if (is_name(cur(P), ends[k])) {
                    P->i++;
                    *which = k;
                    P->nest--;
                    return 0;
                }
            if ((rc = parse_statement(P, &n))) return rc;
        } else {
            return fail(P, t, "unexpected token", NULL);
        }
        if ((rc = nvec_push(P, body, n))) return rc;
    }
    P->nest--;
    return 0;
}

int jinja_parse(const char *text, struct jinja **out, char *err)
{
    *out = NULL;
    struct jinja *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, ERR_NOMEM, "out of memory");
    struct parser P = {.a = &t->arena, .err = err};
    /* text nodes point into the source: keep a copy, so the caller's text may go */
    size_t len = strlen(text);
    char *src = ja_alloc(&t->arena, len + 1);
    if (!src) {
        jinja_free(t);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    memcpy(src, text, len);
    int rc = jinja_lex(&t->arena, src, &P.t, &P.n, err);
    struct nvec body = {0};
    int which;
    if (rc == 0) rc = parse_body(&P, NULL, &body, &which);
    if (rc) {
        jinja_free(t);
        return rc;
    }
    t->body = body.v;
    t->n_body = body.n;
    *out = t;
    return 0;
}

void jinja_free(struct jinja *t)
{
    if (!t) return;
    ja_free(&t->arena);
    free(t);
}
