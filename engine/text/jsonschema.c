/* jsonschema.c - JSON schema -> grammar nodes (see jsonschema.h).
 *
 * Design: one recursive pass over the schema. Each schema object becomes one node (ANYOF for
 * type lists, enums and anyOf); $ref is expanded inline, so the grammar is a tree (DAG for the
 * shared ANY node) with no cycles, and the depth limit also stops recursive references. The
 * error path ("#/properties/a/items") is kept in a small buffer while descending, so every
 * error names where it happened. Node storage is one growable array addressed by index (nodes
 * are appended while a parent still refers to its own index, so no pointers are kept across
 * add_node calls).
 * Invariant: every node describes a non-empty language without dead ends (constrain.c relies
 * on it: every prefix it accepts can be completed).
 */
#include "jsonschema.h"

#include "common/err.h"
#include "toolparse.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cctx {
    struct jsonschema_grammar *g;
    const json_t *root;
    unsigned flags;
    char *err;
    char path[256];
    int depth; /* object/array nesting */
    int ref_depth;
};

static int64_t add_node(struct jsonschema_grammar *g, enum jsonschema_kind k)
{
    if (g->n_nodes == JSONSCHEMA_MAX_NODES) return -2;
    if (g->n_nodes == g->cap_nodes) {
        uint32_t cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        struct jsonschema_node *n = realloc(g->nodes, cap * sizeof *n);
        if (!n) return -1;
        g->nodes = n;
        g->cap_nodes = cap;
    }
    struct jsonschema_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->additional = -1;
    n->max_items = UINT32_MAX;
    return g->n_nodes++;
}

/* add_node with the error reported; returns the index or a negative ERR_*. */
static int64_t new_node(struct cctx *c, enum jsonschema_kind k)
{
    int64_t i = add_node(c->g, k);
    if (i == -1) return err_set(c->err, ERR_NOMEM, "out of memory");
    if (i == -2)
        return err_set(c->err, ERR_INVAL, "JSON schema too large (more than %d grammar nodes)",
                       JSONSCHEMA_MAX_NODES);
    return i;
}

static int set_alts(struct cctx *c, uint32_t node, const uint32_t *alts, uint32_t n)
{
    uint32_t *a = malloc((n ? n : 1) * sizeof *a);
    if (!a) return err_set(c->err, ERR_NOMEM, "out of memory");
    memcpy(a, alts, n * sizeof *a);
    c->g->nodes[node].alts = a;
    c->g->nodes[node].n_alts = n;
    return 0;
}

/* An ANYOF node over alts[0..n) (n >= 2), or the one alternative itself when n == 1. */
static int64_t anyof_node(struct cctx *c, const uint32_t *alts, uint32_t n)
{
    if (n == 1) return alts[0];
    int64_t me = new_node(c, JSK_ANYOF);
    if (me < 0) return me;
    int rc = set_alts(c, (uint32_t)me, alts, n);
    return rc ? rc : me;
}

static int64_t text_node(struct cctx *c, enum jsonschema_kind k, const char *s, size_t n)
{
    int64_t i = new_node(c, k);
    if (i < 0) return i;
    char *t = malloc(n + 1);
    if (!t) return err_set(c->err, ERR_NOMEM, "out of memory");
    memcpy(t, s, n);
    t[n] = 0;
    c->g->nodes[i].text = t;
    c->g->nodes[i].text_len = n;
    if (k == JSK_LITERAL) c->g->has_literals = 1;
    return i;
}

/* The shared "any JSON value" node and its parts. */
static int64_t any_node(struct cctx *c)
{
    struct jsonschema_grammar *g = c->g;
    if (g->any >= 0) return g->any;
    int64_t any = new_node(c, JSK_ANY);
    if (any < 0) return any;
    g->any = any;
    int64_t obj = new_node(c, JSK_OBJECT), arr = new_node(c, JSK_ARRAY);
    int64_t str = new_node(c, JSK_STRING), num = new_node(c, JSK_NUMBER);
    int64_t t = text_node(c, JSK_CONST, "true", 4), f = text_node(c, JSK_CONST, "false", 5);
    int64_t nul = text_node(c, JSK_CONST, "null", 4);
    if (obj < 0 || arr < 0 || str < 0 || num < 0 || t < 0 || f < 0 || nul < 0) {
        g->any = -1;
        return obj < 0   ? obj
               : arr < 0 ? arr
               : str < 0 ? str
               : num < 0 ? num
               : t < 0   ? t
               : f < 0   ? f
                         : nul;
    }
    g->nodes[obj].additional = any;
    g->nodes[arr].items = (uint32_t)any;
    uint32_t alts[7] = {(uint32_t)obj, (uint32_t)arr, (uint32_t)str, (uint32_t)num,
                        (uint32_t)t,   (uint32_t)f,   (uint32_t)nul};
    int rc = set_alts(c, (uint32_t)any, alts, 7);
    return rc ? rc : any;
}

static int push_path(struct cctx *c, const char *a, const char *b, size_t *saved)
{
    *saved = strlen(c->path);
    snprintf(c->path + *saved, sizeof c->path - *saved, "/%s%s%s", a, b ? "/" : "", b ? b : "");
    return 0;
}

static void pop_path(struct cctx *c, size_t saved) { c->path[saved] = 0; }

static int64_t compile(struct cctx *c, const json_t *s);

static const char *const annotations[] = {
    "title",      "description", "default",   "examples", "$schema",     "$id", "$comment",
    "deprecated", "readOnly",    "writeOnly", "$defs",    "definitions", NULL,
};
static const char *const supported[] = {
    "type",      "properties", "required", "additionalProperties",
    "items",     "minItems",   "maxItems", "minLength",
    "maxLength", "enum",       "const",    "anyOf",
    "allOf",     "$ref",       NULL,
};
/* validation keywords that JSONSCHEMA_LENIENT ignores */
static const char *const lenient_ok[] = {
    "minimum",    "maximum",     "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength",   "maxLength",        "pattern",
    "format",     "uniqueItems", "minProperties",    "maxProperties",
    "oneOf",      "strict",      "contentEncoding",  "contentMediaType",
    NULL,
};

static int in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0) return 1;
    return 0;
}

/* The largest integer the grammar can write: constrain.c allows at most MAX_INT_DIGITS = 15
 * integer digits, and `integer` no fraction or exponent. */
#define GRAMMAR_INT_MAX 999999999999999.0

/* A numeric bound that every value the grammar allows for s already meets: s has a `type` without
 * "number" (so a number in it is an integer of at most 15 digits; the bound does not apply to
 * other types) and the bound lies beyond +-GRAMMAR_INT_MAX. zod's .int() writes
 * minimum/maximum +-(2^53-1), which is such a bound; any other bound stays refused. */
static int implied_bound(const json_t *s, const char *k, const json_t *v)
{
    int lo = strcmp(k, "minimum") == 0, xlo = strcmp(k, "exclusiveMinimum") == 0;
    int hi = strcmp(k, "maximum") == 0, xhi = strcmp(k, "exclusiveMaximum") == 0;
    if (!(lo || xlo || hi || xhi) || !json_is_number(v)) return 0;
    const json_t *t = json_object_get(s, "type");
    if (json_is_string(t)) {
        if (strcmp(json_string_value(t), "number") == 0) return 0;
    } else if (json_is_array(t) && json_array_size(t) > 0) {
        for (size_t i = 0; i < json_array_size(t); i++) {
            const char *e = json_string_value(json_array_get(t, i));
            if (!e || strcmp(e, "number") == 0) return 0;
        }
    } else {
        return 0;
    }
    double x = json_number_value(v);
    if (lo) return x <= -GRAMMAR_INT_MAX;
    if (xlo) return x < -GRAMMAR_INT_MAX;
    if (hi) return x >= GRAMMAR_INT_MAX;
    return x > GRAMMAR_INT_MAX;
}

static int check_keywords(struct cctx *c, const json_t *s)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v)
    {
        if (in_list(annotations, k) || in_list(supported, k)) continue;
        if (implied_bound(s, k, v)) continue;
        if ((c->flags & JSONSCHEMA_LENIENT) && in_list(lenient_ok, k)) continue;
        return err_set(c->err, ERR_INVAL, "unsupported JSON schema keyword '%.64s' at #%s", k,
                       c->path);
    }
    return 0;
}

static int64_t compile_ref(struct cctx *c, const char *ref)
{
    const char *name = NULL;
    json_t *defs = NULL;
    if (strncmp(ref, "#/$defs/", 8) == 0) {
        name = ref + 8;
        defs = json_object_get(c->root, "$defs");
    } else if (strncmp(ref, "#/definitions/", 14) == 0) {
        name = ref + 14;
        defs = json_object_get(c->root, "definitions");
    } else if (strcmp(ref, "#") == 0) {
        return err_set(c->err, ERR_INVAL,
                       "recursive JSON schema ($ref \"#\") at #%s is not "
                       "supported",
                       c->path);
    }
    json_t *target = name ? json_object_get(defs, name) : NULL;
    if (!target)
        return err_set(c->err, ERR_INVAL,
                       "unsupported or unresolvable $ref \"%.80s\" at #%s "
                       "(only #/$defs/NAME and #/definitions/NAME)",
                       ref, c->path);
    if (c->ref_depth >= JSONSCHEMA_MAX_DEPTH)
        return err_set(c->err, ERR_INVAL, "JSON schema too deep at #%s (recursive $ref?)", c->path);
    c->ref_depth++;
    int64_t r = compile(c, target);
    c->ref_depth--;
    return r;
}

static int64_t compile_object(struct cctx *c, const json_t *s)
{
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props))
        return err_set(c->err, ERR_INVAL, "'properties' must be an object at #%s", c->path);
    if (req && !json_is_array(req))
        return err_set(c->err, ERR_INVAL, "'required' must be an array at #%s", c->path);
    if (addl && !json_is_boolean(addl) && !json_is_object(addl))
        return err_set(c->err, ERR_INVAL,
                       "'additionalProperties' must be a boolean or a schema "
                       "at #%s",
                       c->path);
    size_t n_props = json_object_size(props), n_req = json_array_size(req);
    if (n_props + n_req > JSONSCHEMA_MAX_PROPS)
        return err_set(c->err, ERR_INVAL, "more than %d properties at #%s", JSONSCHEMA_MAX_PROPS,
                       c->path);
    int64_t me = new_node(c, JSK_OBJECT);
    if (me < 0) return me;
    /* additional properties */
    int64_t add = -1;
    if (addl && json_is_object(addl)) {
        size_t sv;
        push_path(c, "additionalProperties", NULL, &sv);
        add = compile(c, addl);
        pop_path(c, sv);
        if (add < 0) return add;
    } else if ((addl && json_is_true(addl)) || (!addl && !props)) {
        add = any_node(c);
        if (add < 0) return add;
    }
    struct jsonschema_prop *p = calloc(n_props + n_req + 1, sizeof *p);
    if (!p) return err_set(c->err, ERR_NOMEM, "out of memory");
    c->g->nodes[me].props = p;
    uint32_t n = 0;
    const char *key;
    json_t *sub;
    json_object_foreach(props, key, sub)
    {
        for (const char *q = key; *q; q++)
            if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
                return err_set(c->err, ERR_INVAL,
                               "property name \"%.64s\" at #%s contains a "
                               "quote, backslash or control character (not supported)",
                               key, c->path);
        if (!key[0])
            return err_set(c->err, ERR_INVAL, "empty property name at #%s is not supported",
                           c->path);
        size_t sv;
        push_path(c, "properties", key, &sv);
        int64_t child = compile(c, sub);
        pop_path(c, sv);
        if (child < 0) return child;
        p = c->g->nodes[me].props;
        p[n].name = strdup(key);
        if (!p[n].name) return err_set(c->err, ERR_NOMEM, "out of memory");
        p[n].name_len = strlen(key);
        p[n].node = (uint32_t)child;
        c->g->nodes[me].n_props = ++n;
    }
    uint64_t required = 0;
    for (size_t i = 0; i < n_req; i++) {
        json_t *r = json_array_get(req, i);
        if (!json_is_string(r))
            return err_set(c->err, ERR_INVAL, "'required' must hold strings at #%s", c->path);
        const char *rn = json_string_value(r);
        uint32_t k = 0;
        while (k < n && strcmp(c->g->nodes[me].props[k].name, rn) != 0) k++;
        if (k == n) {
            /* required but not declared: a declared property with the additional schema */
            if (add < 0 && addl)
                return err_set(c->err, ERR_INVAL,
                               "required property \"%.64s\" at #%s is not in "
                               "'properties' and additionalProperties is false",
                               rn, c->path);
            for (const char *q = rn; *q; q++)
                if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
                    return err_set(c->err, ERR_INVAL,
                                   "property name \"%.64s\" at #%s contains a "
                                   "quote, backslash or control character",
                                   rn, c->path);
            if (!rn[0]) return err_set(c->err, ERR_INVAL, "empty property name at #%s", c->path);
            p = c->g->nodes[me].props;
            p[n].name = strdup(rn);
            if (!p[n].name) return err_set(c->err, ERR_NOMEM, "out of memory");
            p[n].name_len = strlen(rn);
            int64_t an = add >= 0 ? add : any_node(c); /* absent additionalProperties */
            if (an < 0) return an;
            p = c->g->nodes[me].props;
            p[n].node = (uint32_t)an;
            c->g->nodes[me].n_props = ++n;
        }
        required |= 1ull << k;
    }
    c->g->nodes[me].required = required;
    c->g->nodes[me].additional = add;
    return me;
}

static int get_count(struct cctx *c, const json_t *s, const char *k, uint32_t *out)
{
    json_t *v = json_object_get(s, k);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
        return err_set(c->err, ERR_INVAL, "'%s' must be an integer 0..1000000 at #%s", k, c->path);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int64_t compile_array(struct cctx *c, const json_t *s)
{
    uint32_t mn = 0, mx = UINT32_MAX;
    int rc = get_count(c, s, "minItems", &mn);
    if (!rc) rc = get_count(c, s, "maxItems", &mx);
    if (rc) return rc;
    if (mn > mx) return err_set(c->err, ERR_INVAL, "minItems > maxItems at #%s", c->path);
    json_t *items = json_object_get(s, "items");
    if (items && !json_is_object(items) && !json_is_boolean(items))
        return err_set(c->err, ERR_INVAL,
                       "'items' must be one schema at #%s (tuple form is not "
                       "supported)",
                       c->path);
    int64_t me = new_node(c, JSK_ARRAY);
    if (me < 0) return me;
    int64_t it;
    if (items && json_is_false(items)) {
        if (mn > 0)
            return err_set(c->err, ERR_INVAL, "items false with minItems > 0 at #%s", c->path);
        mx = 0;
        it = any_node(c);
    } else if (items) {
        size_t sv;
        push_path(c, "items", NULL, &sv);
        it = compile(c, items);
        pop_path(c, sv);
    } else {
        it = any_node(c);
    }
    if (it < 0) return it;
    c->g->nodes[me].items = (uint32_t)it;
    c->g->nodes[me].min_items = mn;
    c->g->nodes[me].max_items = mx;
    return me;
}

/* A string node; minLength/maxLength count characters (an escape is one). */
static int64_t compile_string(struct cctx *c, const json_t *s)
{
    uint32_t mn = 0, mx = UINT32_MAX;
    int rc = get_count(c, s, "minLength", &mn);
    if (!rc) rc = get_count(c, s, "maxLength", &mx);
    if (rc) return rc;
    if (mn > mx) return err_set(c->err, ERR_INVAL, "minLength > maxLength at #%s", c->path);
    int64_t me = new_node(c, JSK_STRING);
    if (me < 0) return me;
    c->g->nodes[me].min_items = mn;
    c->g->nodes[me].max_items = mx;
    return me;
}

static int type_matches(const char *type, const json_t *v)
{
    if (strcmp(type, "object") == 0) return json_is_object(v);
    if (strcmp(type, "array") == 0) return json_is_array(v);
    if (strcmp(type, "string") == 0) return json_is_string(v);
    if (strcmp(type, "number") == 0) return json_is_number(v);
    if (strcmp(type, "integer") == 0) return json_is_integer(v);
    if (strcmp(type, "boolean") == 0) return json_is_boolean(v);
    if (strcmp(type, "null") == 0) return json_is_null(v);
    return 0;
}

static int cmp_text(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t n = strlen(x), m = strlen(y);
    int c = memcmp(x, y, n < m ? n : m);
    return c ? c : n < m ? -1 : n > m;
}

/* enum/const, filtered by `type` (NULL = any type): one ENUM node whose frame narrows a sorted
 * range of texts byte by byte (no fork per value, so large enums cost nothing extra). */
static int64_t compile_enum(struct cctx *c, const json_t *s, const json_t *type)
{
    json_t *cn = json_object_get(s, "const");
    json_t *en = json_object_get(s, "enum");
    if (en && !json_is_array(en))
        return err_set(c->err, ERR_INVAL, "'enum' must be an array at #%s", c->path);
    if (json_array_size(en) > 4096)
        return err_set(c->err, ERR_INVAL, "'enum' has more than 4096 values at #%s", c->path);
    size_t total = cn ? 1 : json_array_size(en);
    char **texts = calloc(total + 1, sizeof *texts);
    if (!texts) return err_set(c->err, ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    int64_t rc = 0;
    for (size_t i = 0; i < total; i++) {
        const json_t *v = cn ? cn : json_array_get(en, i);
        if (cn && en) {
            size_t k = 0;
            while (k < json_array_size(en) && !json_equal(json_array_get(en, k), cn)) k++;
            if (k == json_array_size(en)) continue;
        }
        int ok = !type;
        if (json_is_string(type)) ok = type_matches(json_string_value(type), v);
        for (size_t k = 0; json_is_array(type) && k < json_array_size(type); k++)
            ok |= type_matches(json_string_value(json_array_get(type, k)), v);
        if (!ok) continue;
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!t) {
            rc = err_set(c->err, ERR_NOMEM, "out of memory");
            goto out;
        }
        texts[n++] = t;
    }
    if (n == 0) {
        rc = err_set(c->err, ERR_INVAL,
                     "no value of 'enum'/'const' at #%s is possible (empty "
                     "or contradicting 'type')",
                     c->path);
        goto out;
    }
    qsort(texts, n, sizeof *texts, cmp_text);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) { /* drop duplicates */
        if (k && strcmp(texts[k - 1], texts[i]) == 0) free(texts[i]);
        else texts[k++] = texts[i];
    }
    n = k;
    rc = new_node(c, JSK_ENUM);
    if (rc < 0) goto out;
    uint32_t *lens = malloc(n * sizeof *lens);
    if (!lens) {
        rc = err_set(c->err, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) lens[i] = (uint32_t)strlen(texts[i]);
    c->g->nodes[rc].texts = texts;
    c->g->nodes[rc].text_lens = lens;
    c->g->nodes[rc].n_texts = n;
    return rc;
out:
    for (uint32_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    return rc;
}

static int64_t compile_type(struct cctx *c, const json_t *s, const char *type)
{
    int object = strcmp(type, "object") == 0;
    if (object || strcmp(type, "array") == 0) {
        if (c->depth >= JSONSCHEMA_MAX_DEPTH)
            return err_set(c->err, ERR_INVAL, "JSON schema nested deeper than %d at #%s",
                           JSONSCHEMA_MAX_DEPTH, c->path);
        c->depth++;
        int64_t r = object ? compile_object(c, s) : compile_array(c, s);
        c->depth--;
        return r;
    }
    if (strcmp(type, "string") == 0) return compile_string(c, s);
    if (strcmp(type, "number") == 0) return new_node(c, JSK_NUMBER);
    if (strcmp(type, "integer") == 0) return new_node(c, JSK_INTEGER);
    if (strcmp(type, "boolean") == 0) {
        int64_t a = text_node(c, JSK_CONST, "true", 4), b = text_node(c, JSK_CONST, "false", 5);
        if (a < 0 || b < 0) return a < 0 ? a : b;
        uint32_t alts[2] = {(uint32_t)a, (uint32_t)b};
        return anyof_node(c, alts, 2);
    }
    if (strcmp(type, "null") == 0) return text_node(c, JSK_CONST, "null", 4);
    return err_set(c->err, ERR_INVAL, "unknown JSON schema type \"%.40s\" at #%s", type, c->path);
}

static int64_t compile(struct cctx *c, const json_t *s)
{
    if (json_is_true(s)) return any_node(c);
    if (json_is_false(s))
        return err_set(c->err, ERR_INVAL, "schema false at #%s allows no value", c->path);
    if (!json_is_object(s))
        return err_set(c->err, ERR_INVAL, "a JSON schema must be an object or a boolean at #%s",
                       c->path);
    int rc = check_keywords(c, s);
    if (rc) return rc;
    json_t *ref = json_object_get(s, "$ref");
    json_t *anyof = json_object_get(s, "anyOf");
    json_t *allof = json_object_get(s, "allOf");
    json_t *oneof = json_object_get(s, "oneOf"); /* lenient only: treated as anyOf */
    json_t *type = json_object_get(s, "type");
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    int n_comb = !!ref + !!anyof + !!allof + !!oneof;
    if (n_comb) {
        /* a combinator may only sit beside annotations */
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)s, k, v)
        {
            if (in_list(annotations, k) || strcmp(k, "$ref") == 0 || strcmp(k, "anyOf") == 0 ||
                strcmp(k, "allOf") == 0 || strcmp(k, "oneOf") == 0)
                continue;
            if ((c->flags & JSONSCHEMA_LENIENT) && in_list(lenient_ok, k)) continue;
            return err_set(c->err, ERR_INVAL,
                           "'%.40s' beside $ref/anyOf/allOf at #%s is not "
                           "supported",
                           k, c->path);
        }
        if (n_comb > 1)
            return err_set(c->err, ERR_INVAL,
                           "more than one of $ref/anyOf/allOf at #%s is not "
                           "supported",
                           c->path);
    }
    if (ref) {
        if (!json_is_string(ref))
            return err_set(c->err, ERR_INVAL, "'$ref' must be a string at #%s", c->path);
        return compile_ref(c, json_string_value(ref));
    }
    if (allof) {
        if (!json_is_array(allof) || json_array_size(allof) != 1)
            return err_set(c->err, ERR_INVAL,
                           "'allOf' at #%s is only supported with exactly one "
                           "schema",
                           c->path);
        size_t sv;
        push_path(c, "allOf", "0", &sv);
        int64_t r = compile(c, json_array_get(allof, 0));
        pop_path(c, sv);
        return r;
    }
    if (anyof || oneof) {
        json_t *arr = anyof ? anyof : oneof;
        const char *kw = anyof ? "anyOf" : "oneOf";
        size_t n = json_array_size(arr);
        if (!json_is_array(arr) || n == 0 || n > 64)
            return err_set(c->err, ERR_INVAL, "'%s' must be an array of 1..64 schemas at #%s", kw,
                           c->path);
        uint32_t alts[64];
        for (size_t i = 0; i < n; i++) {
            char idx[16];
            snprintf(idx, sizeof idx, "%zu", i);
            size_t sv;
            push_path(c, kw, idx, &sv);
            int64_t a = compile(c, json_array_get(arr, i));
            pop_path(c, sv);
            if (a < 0) return a;
            alts[i] = (uint32_t)a;
        }
        return anyof_node(c, alts, (uint32_t)n);
    }
    if (type && !json_is_string(type) && !json_is_array(type))
        return err_set(c->err, ERR_INVAL, "'type' must be a string or an array at #%s", c->path);
    for (size_t k = 0; json_is_array(type) && k < json_array_size(type); k++)
        if (!json_is_string(json_array_get(type, k)))
            return err_set(c->err, ERR_INVAL, "'type' must list strings at #%s", c->path);
    if (en || cn) return compile_enum(c, s, type);
    if (json_is_string(type)) return compile_type(c, s, json_string_value(type));
    if (json_is_array(type)) {
        size_t n = json_array_size(type);
        if (n == 0 || n > 7)
            return err_set(c->err, ERR_INVAL, "'type' must list 1..7 types at #%s", c->path);
        uint32_t alts[7];
        for (size_t i = 0; i < n; i++) {
            int64_t a = compile_type(c, s, json_string_value(json_array_get(type, i)));
            if (a < 0) return a;
            alts[i] = (uint32_t)a;
        }
        return anyof_node(c, alts, (uint32_t)n);
    }
    /* no type: infer from the keywords, else any value */
    if (json_object_get(s, "properties") || json_object_get(s, "required") ||
        json_object_get(s, "additionalProperties"))
        return compile_type(c, s, "object");
    if (json_object_get(s, "items") || json_object_get(s, "minItems") ||
        json_object_get(s, "maxItems"))
        return compile_type(c, s, "array");
    if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
        return compile_type(c, s, "string");
    return any_node(c);
}

static int grammar_new(struct jsonschema_grammar **out, char *err)
{
    struct jsonschema_grammar *g = calloc(1, sizeof *g);
    if (!g) return err_set(err, ERR_NOMEM, "out of memory");
    g->refs = 1;
    g->any = -1;
    *out = g;
    return 0;
}

static void grammar_free(struct jsonschema_grammar *g)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        struct jsonschema_node *n = &g->nodes[i];
        for (uint32_t k = 0; n->props && k < n->n_props; k++) free(n->props[k].name);
        free(n->props);
        free(n->text);
        free(n->alts);
        for (uint32_t k = 0; n->texts && k < n->n_texts; k++) free(n->texts[k]);
        free(n->texts);
        free(n->text_lens);
    }
    free(g->nodes);
    free(g);
}

void jsonschema_set_whitespace(struct jsonschema_grammar *g, uint16_t max_ws)
{
    g->max_ws = max_ws;
}

struct jsonschema_grammar *jsonschema_ref(struct jsonschema_grammar *g)
{
    atomic_fetch_add_explicit((_Atomic int *)&g->refs, 1, memory_order_relaxed);
    return g;
}

void jsonschema_unref(struct jsonschema_grammar *g)
{
    if (!g) return;
    if (atomic_fetch_sub_explicit((_Atomic int *)&g->refs, 1, memory_order_acq_rel) == 1)
        grammar_free(g);
}

int jsonschema_compile(const json_t *schema, unsigned flags, struct jsonschema_grammar **out,
                       char *err)
{
    struct jsonschema_grammar *g = NULL;
    int rc = grammar_new(&g, err);
    if (rc) return rc;
    struct cctx c = {.g = g, .root = schema, .flags = flags, .err = err};
    int64_t r = compile(&c, schema);
    if (r < 0) {
        grammar_free(g);
        return (int)r;
    }
    g->root = (uint32_t)r;
    *out = g;
    return 0;
}

int jsonschema_compile_json_object(struct jsonschema_grammar **out, char *err)
{
    json_t *s = json_pack("{s:s}", "type", "object");
    if (!s) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = jsonschema_compile(s, 0, out, err);
    json_decref(s);
    return rc;
}

int jsonschema_response_format(const json_t *root, struct jsonschema_grammar **out,
                               const char **param, char *err)
{
    *out = NULL;
    json_t *rf = json_object_get(root, "response_format");
    if (!rf || json_is_null(rf)) return 0;
    *param = "response_format";
    json_t *type = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(type))
        return err_set(err, ERR_INVAL, "'response_format' must be an object with a 'type'");
    const char *t = json_string_value(type);
    if (strcmp(t, "text") == 0) return 0;
    if (strcmp(t, "json_object") == 0) return jsonschema_compile_json_object(out, err);
    if (strcmp(t, "json_schema") != 0)
        return err_set(err, ERR_INVAL,
                       "'response_format' type must be \"text\", \"json_object\" "
                       "or \"json_schema\"; got \"%.40s\"",
                       t);
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js))
        return err_set(err, ERR_INVAL, "'response_format.json_schema' must be an object");
    json_t *name = json_object_get(js, "name"), *strict = json_object_get(js, "strict");
    if ((name && !json_is_null(name) && !json_is_string(name)) ||
        (strict && !json_is_null(strict) && !json_is_boolean(strict)))
        return err_set(err, ERR_INVAL,
                       "'response_format.json_schema': name must be a string, "
                       "strict a boolean");
    json_t *schema = json_object_get(js, "schema");
    if (!schema || json_is_null(schema)) return jsonschema_compile_json_object(out, err);
    char e2[ERR_LEN] = "";
    int rc = jsonschema_compile(schema, 0, out, e2);
    if (rc) err_set(err, rc, "response_format.json_schema.schema: %s", e2);
    return rc;
}

int jsonschema_compile_tool_call(const json_t *tools, const char *only_name, int format,
                                 struct jsonschema_grammar **out, char *err)
{
    const int v31 = format == TOOLPARSE_FMT_V31, kimi = format == TOOLPARSE_FMT_KIMI;
    struct jsonschema_grammar *g = NULL;
    int rc = grammar_new(&g, err);
    if (rc) return rc;
    char e2[ERR_LEN] = "";
    struct cctx c = {.g = g, .flags = JSONSCHEMA_LENIENT, .err = e2};
    uint32_t alts[TOOLPARSE_MAX_TOOLS];
    uint32_t n = 0;
    int64_t r = 0;
    for (size_t i = 0; i < json_array_size(tools) && n < TOOLPARSE_MAX_TOOLS; i++) {
        json_t *fn = json_object_get(json_array_get(tools, i), "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || (only_name && strcmp(name, only_name) != 0)) continue;
        json_t *params = json_object_get(fn, "parameters");
        char head[128];
        snprintf(head, sizeof head,
                 kimi  ? "%s:0" TOOLPARSE_KIMI_ARGS
                 : v31 ? "%s" TOOLPARSE_SEP
                       : "%s\n```json\n",
                 name);
        int64_t lit = text_node(&c, JSK_LITERAL, head, strlen(head));
        if (lit < 0) {
            r = lit;
            goto fail;
        }
        c.root = params;
        snprintf(c.path, sizeof c.path, "/tools/%zu/function/parameters", i);
        int64_t body = json_is_object(params) ? compile(&c, params) : -1;
        if (!json_is_object(params) ||
            (body >= 0 && g->nodes[body].kind != JSK_OBJECT && g->nodes[body].kind != JSK_ANYOF)) {
            /* absent parameters (or a non-object schema): any object */
            json_t *o = json_pack("{s:s}", "type", "object");
            body = o ? compile(&c, o) : err_set(e2, ERR_NOMEM, "out of memory");
            json_decref(o);
        }
        if (body < 0) {
            r = body;
            goto fail;
        }
        int64_t seq = new_node(&c, JSK_SEQ);
        if (seq < 0) {
            r = seq;
            goto fail;
        }
        uint32_t parts[2] = {(uint32_t)lit, (uint32_t)body};
        if ((rc = set_alts(&c, (uint32_t)seq, parts, 2))) {
            r = rc;
            goto fail;
        }
        alts[n++] = (uint32_t)seq;
    }
    if (n == 0) {
        r = err_set(e2, ERR_INVAL, "no tool to call");
        goto fail;
    }
    const char *pre = kimi  ? TOOLPARSE_KIMI_CALLS_BEGIN TOOLPARSE_KIMI_CALL_BEGIN "functions."
                      : v31 ? TOOLPARSE_CALLS_BEGIN TOOLPARSE_CALL_BEGIN
                            : TOOLPARSE_CALLS_BEGIN TOOLPARSE_CALL_BEGIN "function" TOOLPARSE_SEP;
    const char *post = kimi  ? TOOLPARSE_KIMI_CALL_END TOOLPARSE_KIMI_CALLS_END
                       : v31 ? TOOLPARSE_CALL_END TOOLPARSE_CALLS_END
                             : "\n```" TOOLPARSE_CALL_END TOOLPARSE_CALLS_END;
    int64_t a = text_node(&c, JSK_LITERAL, pre, strlen(pre));
    int64_t b = text_node(&c, JSK_LITERAL, post, strlen(post));
    int64_t choice = n == 1 ? (int64_t)alts[0] : new_node(&c, JSK_ANYOF);
    int64_t seq = new_node(&c, JSK_SEQ);
    if (a < 0 || b < 0 || choice < 0 || seq < 0) {
        r = a < 0 ? a : b < 0 ? b : choice < 0 ? choice : seq;
        goto fail;
    }
    if (n > 1 && (rc = set_alts(&c, (uint32_t)choice, alts, n))) {
        r = rc;
        goto fail;
    }
    uint32_t parts[3] = {(uint32_t)a, (uint32_t)choice, (uint32_t)b};
    if ((rc = set_alts(&c, (uint32_t)seq, parts, 3))) {
        r = rc;
        goto fail;
    }
    g->root = (uint32_t)seq;
    *out = g;
    return 0;
fail:
    grammar_free(g);
    err_set(err, (int)r, "tools: %s", e2);
    return (int)r;
}

int jsonschema_add_prefix(struct jsonschema_grammar *g, const char *prefix)
{
    struct cctx c = {.g = g};
    int64_t lit = text_node(&c, JSK_LITERAL, prefix, strlen(prefix));
    if (lit < 0) return ERR_NOMEM;
    int64_t seq = new_node(&c, JSK_SEQ);
    if (seq < 0) return ERR_NOMEM;
    uint32_t parts[2] = {(uint32_t)lit, g->root};
    if (set_alts(&c, (uint32_t)seq, parts, 2)) return ERR_NOMEM;
    g->root = (uint32_t)seq;
    return 0;
}
