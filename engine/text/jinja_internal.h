/* jinja_internal.h - what the files of the Jinja interpreter share (not a public API).
 *
 *   jinja_lex.c     template text -> tokens (whitespace control, trim/lstrip blocks)
 *   jinja_parse.c   tokens -> syntax tree (struct jnode), jinja_parse / jinja_free
 *   jinja_value.c   the arena, values, conversions (printing, JSON, equality, order)
 *   jinja_eval.c    statements and expressions, jinja_render
 *   jinja_builtin.c filters, tests, methods and global functions
 * The tree lives in the template's arena and is never written after parsing; every value built
 * while rendering lives in the render's arena (struct jrender), freed at once at the end.
 */
#ifndef TANDEM_JINJA_INTERNAL_H
#define TANDEM_JINJA_INTERNAL_H

#include "jinja.h"

#include <stdint.h>

/* ---- arena: a chain of blocks, freed at once; a byte budget makes it bounded */
struct jarena {
    struct jblock *head;
    size_t used, limit; /* bytes handed out so far, and the most allowed (0 = unbounded) */
};
void *ja_alloc(struct jarena *a, size_t n); /* zeroed; NULL when out of memory or budget */
void ja_free(struct jarena *a);

/* ---- tokens */
enum jtok_kind {
    JT_TEXT,        /* template data between tags (s, n) */
    JT_VAR_BEGIN,   /* {{ */
    JT_VAR_END,     /* }} */
    JT_BLOCK_BEGIN, /* {% */
    JT_BLOCK_END,   /* %} */
    JT_NAME,
    JT_STRING, /* s, n: the decoded literal */
    JT_INT,
    JT_FLOAT,
    JT_OP, /* s, n: the operator text */
    JT_EOF,
};

struct jtok {
    enum jtok_kind kind;
    const char *s;
    size_t n;
    int64_t i;
    double f;
    int line, col;
};

/* Tokenize text into an array in the arena. 0, ERR_FORMAT or ERR_NOMEM. */
int jinja_lex(struct jarena *a, const char *text, struct jtok **toks, size_t *n, char *err);

/* ---- syntax tree */
enum jnode_kind {
    /* statements */
    JN_TEXT,      /* s */
    JN_OUTPUT,    /* a */
    JN_IF,        /* a: condition, body, else_body */
    JN_FOR,       /* names (n_names), a: iterable, b: filter or NULL, body, else_body */
    JN_SET,       /* names[0] (names[1]: attribute for ns.attr; n_names > 1 with tuple), a */
    JN_SET_BLOCK, /* names[0], body */
    JN_MACRO,     /* s: name, names: params, args: defaults (NULL each when none), body */
    JN_BREAK,
    JN_CONTINUE,
    JN_BLOCK, /* body only ({% generation %}, {% filter %} without a filter) */
    /* expressions */
    JN_LIT,    /* v */
    JN_NAME,   /* s */
    JN_ATTR,   /* a.s */
    JN_INDEX,  /* a[b] */
    JN_SLICE,  /* a[args[0]:args[1]:args[2]] (NULL parts absent) */
    JN_CALL,   /* a(args, kwargs) */
    JN_FILTER, /* s: filter name, a: operand, args/kwargs */
    JN_TEST,   /* s: test name, a: operand, args; neg: `is not` */
    JN_UNARY,  /* op: 'n' not, '-' , '+'; a */
    JN_BINARY, /* op, a, b */
    JN_COND,   /* b if a else c: a = condition, b = then, c = else (NULL: undefined) */
    JN_LIST,   /* args */
    JN_DICT,   /* args: keys, kw: values (n_args each) */
};

/* binary operators (JN_BINARY op) */
enum {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_CONCAT,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN,
    JOP_AND,
    JOP_OR,
};

struct jvalue;

struct jnode {
    enum jnode_kind kind;
    int line, col;
    int depth; /* expressions: height of the subtree (bounded at parse time) */
    int op, neg;
    const char *s;
    size_t sn;
    struct jnode *a, *b, *c;
    struct jnode **args; /* positional arguments / list items / dict keys */
    size_t n_args;
    const char **kw_names; /* keyword arguments (calls, filters) */
    struct jnode **kw;     /* keyword values; dict values */
    size_t n_kw;
    const char **names; /* targets (for, set, macro parameters) */
    size_t n_names;
    struct jnode **body, **else_body;
    size_t n_body, n_else;
    struct jvalue *v; /* JN_LIT */
};

struct jinja {
    struct jarena arena;
    struct jnode **body;
    size_t n_body;
};

/* ---- values */
enum jv_type {
    JV_UNDEF = 0,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_DICT,
    JV_NS,     /* namespace(): a dict with attribute assignment */
    JV_LOOP,   /* the `loop` variable of a for */
    JV_MACRO,  /* a macro defined by the template */
    JV_FUNC,   /* a global function (range, namespace, raise_exception, strftime_now) */
    JV_METHOD, /* a method bound to its object (str.split, dict.items, list.append, ...) */
};

struct jlist {
    struct jvalue *v;
    size_t n, cap;
};

struct jdict { /* insertion-ordered; keys are strings (or other scalars) */
    struct jvalue *k, *v;
    size_t n, cap;
};

struct jloop {
    size_t index0, length;
    const struct jlist *items;
};

struct jvalue {
    enum jv_type t;
    union {
        int b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jlist *l;
        struct jdict *d;
        struct jloop *loop;
        const struct jnode *macro;
        int fn;
        struct jmethod *m;
    } u;
};

struct jmethod {
    struct jvalue self;
    const char *name;
};

/* one scope: a for iteration, a macro call, or the template's top level */
struct jscope {
    struct jscope *parent;
    struct jdict vars;
};

struct jrender {
    struct jarena arena;
    struct sbuf *out;
    size_t out_start, max_output;
    long steps, max_steps;
    int depth, max_depth;
    struct jscope *root;
    char *err;
    int line, col; /* of the node being evaluated, for messages */
};

/* errors while rendering: ERR_INVAL with "line L: msg"; ERR_NOMEM names the memory limit */
int jr_fail(struct jrender *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int jr_nomem(struct jrender *r);
int jr_step(struct jrender *r); /* count a step against the limit */

/* value helpers (jinja_value.c) */
struct jvalue jv_undef(void);
struct jvalue jv_none(void);
struct jvalue jv_bool(int b);
struct jvalue jv_int(int64_t i);
struct jvalue jv_float(double f);
struct jvalue jv_str(const char *p, size_t n); /* borrows p (arena or template storage) */
int jv_str_copy(struct jrender *r, const char *p, size_t n, struct jvalue *out);
int jv_new_list(struct jrender *r, struct jvalue *out);
int jv_new_dict(struct jrender *r, enum jv_type t, struct jvalue *out);
int jl_push(struct jrender *r, struct jlist *l, struct jvalue v);
int jd_set(struct jrender *r, struct jdict *d, struct jvalue k, struct jvalue v);
struct jvalue *jd_get(const struct jdict *d, const char *key, size_t n); /* NULL: absent */
struct jvalue *jd_getv(const struct jdict *d, struct jvalue k);
int jv_truthy(struct jvalue v);
int jv_equal(struct jvalue a, struct jvalue b);
int jv_compare(struct jrender *r, struct jvalue a, struct jvalue b, int *cmp); /* 0 or error */
const char *jv_type_name(struct jvalue v);
int jv_is_num(struct jvalue v); /* int, float or bool */
double jv_num(struct jvalue v);
/* str(v) as Python prints it (undefined '', None, True, 1.5, ['a'], {'k': 1}) */
int jv_to_str(struct jrender *r, struct jvalue v, struct jvalue *out);
int jv_append_str(struct jrender *r, struct sbuf *b, struct jvalue v);
/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) */
int jv_to_json(struct jrender *r, struct jvalue v, int indent, const char *item_sep,
               const char *key_sep, int sort_keys, struct jvalue *out);
int jv_from_json(struct jrender *r, const json_t *j, struct jvalue *out);
/* a list of the items of an iterable (list, dict keys, string characters); undefined -> [] */
int jv_iterate(struct jrender *r, struct jvalue v, struct jlist **out);
size_t utf8_count(const char *p, size_t n);              /* code points */
size_t utf8_offset(const char *p, size_t n, size_t cps); /* byte offset of code point cps */

/* builtins (jinja_builtin.c) */
int jb_filter(struct jrender *r, const char *name, struct jvalue v, struct jvalue *args,
              size_t n_args, const char **kw_names, struct jvalue *kw, size_t n_kw,
              struct jvalue *out);
int jb_test(struct jrender *r, const char *name, struct jvalue v, struct jvalue *args,
            size_t n_args, int *out);
int jb_global(const char *name, struct jvalue *out); /* 1: a global function */
int jb_attr(struct jrender *r, struct jvalue obj, const char *name, size_t n, struct jvalue *out);
int jb_call(struct jrender *r, struct jvalue fn, struct jvalue *args, size_t n_args,
            const char **kw_names, struct jvalue *kw, size_t n_kw, struct jvalue *out);

/* macro calls (jinja_eval.c) */
int je_call_macro(struct jrender *r, const struct jnode *m, struct jvalue *args, size_t n_args,
                  const char **kw_names, struct jvalue *kw, size_t n_kw, struct jvalue *out);

#endif
