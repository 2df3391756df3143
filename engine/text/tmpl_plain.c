/* tmpl_plain.c - caller-supplied JSON marked as plain text before a template renders it
 * (tmpl_plain_json of tmpl.h; the marking itself is tok_mark_plain of tok.h).
 * Threads: pure; the tokenizer is only read.
 */
#include "tmpl.h"

#include <string.h>

/* What mark() is looking at. */
#define PARSE_ARGS 1u  /* parse tool-call arguments (tmpl_plain_json's parse_args) */
#define IN_FUNCTION 2u /* inside a tool call's "function" object */
#define KEEP_THINK 4u  /* inside an assistant message's "content" */

/* The marked copy of one string (NULL on ERR_NOMEM). */
static json_t *mark_string(const struct tok *t, const char *s, size_t n, unsigned fl)
{
    struct sbuf b = {0};
    json_t *r = NULL;
    if (tok_mark_plain(t, s, n, (fl & KEEP_THINK) != 0, &b) == 0)
        r = json_stringn(b.s ? b.s : "", b.n);
    sbuf_fini(&b);
    return r;
}

static json_t *mark(const struct tok *t, const json_t *v, unsigned fl);

/* function.arguments of a tool call: the object its JSON text holds, marked, when it holds one
 * (what tmpl_jinja.c would parse it into); else the marked string. */
static json_t *mark_arguments(const struct tok *t, const json_t *args)
{
    json_t *obj = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return mark_string(t, json_string_value(args), json_string_length(args), 0);
    }
    json_t *r = mark(t, obj, 0);
    json_decref(obj);
    return r;
}

static json_t *mark(const struct tok *t, const json_t *v, unsigned fl)
{
    if (json_is_string(v)) return mark_string(t, json_string_value(v), json_string_length(v), fl);
    if (json_is_array(v)) {
        json_t *r = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (!r || json_array_append_new(r, mark(t, x, fl & ~IN_FUNCTION))) {
                json_decref(r);
                return NULL;
            }
        }
        return r;
    }
    if (json_is_object(v)) {
        json_t *r = json_object();
        const char *role = json_string_value(json_object_get(v, "role"));
        int assistant = role && strcmp(role, "assistant") == 0;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            unsigned sub = fl & PARSE_ARGS;
            if (strcmp(k, "function") == 0) sub |= IN_FUNCTION;
            if (assistant && strcmp(k, "content") == 0) sub |= KEEP_THINK;
            if (!assistant) sub |= fl & KEEP_THINK; /* the text parts of assistant content */
            json_t *key = r ? mark_string(t, k, strlen(k), 0) : NULL;
            json_t *val = NULL;
            if (key && (fl & PARSE_ARGS) && (fl & IN_FUNCTION) && strcmp(k, "arguments") == 0 &&
                json_is_string(x))
                val = mark_arguments(t, x);
            else if (key) val = mark(t, x, sub);
            if (!key || !val || json_object_set_new(r, json_string_value(key), val)) {
                json_decref(key);
                json_decref(r);
                return NULL;
            }
            json_decref(key);
        }
        return r;
    }
    return json_incref((json_t *)v); /* numbers, booleans, null: shared, never changed */
}

json_t *tmpl_plain_json(const struct tok *t, const json_t *v, int parse_args)
{
    return v ? mark(t, v, parse_args ? PARSE_ARGS : 0) : NULL;
}
