/* toolparse.c - DeepSeek tool-call blocks -> OpenAI tool_calls (see toolparse.h).
 *
 * Design: three states. CONTENT scans for "<｜tool▁calls▁begin｜>" (holding back a tail that may
 * be its prefix), BLOCK appends everything to `block` until "<｜tool▁calls▁end｜>" shows up in
 * it, then the block body is parsed in one go by parse_block() with plain string searches; a
 * block is all-or-nothing, so nothing streamed ever has to be taken back. After a block the
 * parser is back in CONTENT (a second block is parsed the same way).
 * A block that does not parse (malformed, or cut by the end of generation) is dropped: the
 * model's markers never reach the content.
 * Invariants: in CONTENT, hold[0..n_hold) is a proper prefix of the begin marker; in BLOCK,
 * `block` holds the text after the begin marker.
 */
#include "toolparse.h"

#include "common/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the markers of a format: block begin / end, call begin, separator, call end */
struct marks {
    const char *begin, *end, *call_begin, *sep, *call_end;
};
static const struct marks mk_deepseek = {TOOLPARSE_CALLS_BEGIN, TOOLPARSE_CALLS_END,
                                         TOOLPARSE_CALL_BEGIN, TOOLPARSE_SEP, TOOLPARSE_CALL_END};
static const struct marks mk_kimi = {TOOLPARSE_KIMI_CALLS_BEGIN, TOOLPARSE_KIMI_CALLS_END,
                                     TOOLPARSE_KIMI_CALL_BEGIN, TOOLPARSE_KIMI_ARGS,
                                     TOOLPARSE_KIMI_CALL_END};

struct toolparse {
    int in_block;
    char hold[64];
    size_t n_hold;
    struct sbuf block;
    size_t scan_from; /* where to resume looking for the end marker in block */
    struct toolparse_call *calls;
    size_t n_calls, cap_calls;
    char **names;
    size_t n_names;
    uint64_t rng;
    enum toolparse_format format;
    const struct marks *mk;
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int toolparse_create(struct toolparse **out, uint64_t id_seed, const char *const *names,
                     size_t n_names, char *err)
{
    struct toolparse *tp = calloc(1, sizeof *tp);
    if (!tp) return err_set(err, ERR_NOMEM, "out of memory");
    tp->rng = id_seed;
    tp->mk = &mk_deepseek;
    if (n_names) {
        tp->names = calloc(n_names, sizeof *tp->names);
        if (!tp->names) goto nomem;
        tp->n_names = n_names;
        for (size_t i = 0; i < n_names; i++)
            if (!(tp->names[i] = strdup(names[i]))) goto nomem;
    }
    *out = tp;
    return 0;
nomem:
    toolparse_destroy(tp);
    return err_set(err, ERR_NOMEM, "out of memory");
}

void toolparse_set_format(struct toolparse *tp, enum toolparse_format f)
{
    tp->format = f;
    tp->mk = f == TOOLPARSE_FMT_KIMI ? &mk_kimi : &mk_deepseek;
}

static void calls_clear(struct toolparse_call *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].arguments);
    }
}

void toolparse_destroy(struct toolparse *tp)
{
    if (!tp) return;
    calls_clear(tp->calls, tp->n_calls);
    free(tp->calls);
    for (size_t i = 0; i < tp->n_names; i++) free(tp->names[i]);
    free(tp->names);
    sbuf_fini(&tp->block);
    free(tp);
}

size_t toolparse_n_calls(const struct toolparse *tp) { return tp->n_calls; }

const struct toolparse_call *toolparse_get(const struct toolparse *tp, size_t i)
{
    return i < tp->n_calls ? &tp->calls[i] : NULL;
}

int toolparse_busy(const struct toolparse *tp) { return tp->in_block || tp->n_hold > 0; }

/* ---- parsing a block ---- */

static int is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_space(*p)) p++;
    return p;
}

static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    if ((size_t)(end - p) < n) return NULL;
    return memmem(p, (size_t)(end - p), needle, n);
}

static void trim(const char **a, const char **b)
{
    while (*a < *b && is_space(**a)) (*a)++;
    while (*b > *a && is_space((*b)[-1])) (*b)--;
}

static int name_known(const struct toolparse *tp, const char *s, size_t n)
{
    if (!tp->n_names) return 1;
    for (size_t i = 0; i < tp->n_names; i++)
        if (strlen(tp->names[i]) == n && memcmp(tp->names[i], s, n) == 0) return 1;
    return 0;
}

/* Parse one call starting at p (at "<｜tool▁call▁begin｜>"). On success fill c and return the
 * position after "<｜tool▁call▁end｜>"; NULL when malformed. *nomem set on allocation failure. */
static const char *parse_call(struct toolparse *tp, const char *p, const char *end,
                              struct toolparse_call *c, int *nomem)
{
    const struct marks *mk = tp->mk;
    size_t lb = strlen(mk->call_begin);
    if ((size_t)(end - p) < lb || memcmp(p, mk->call_begin, lb) != 0) return NULL;
    p += lb;
    const char *sep = find(p, end, mk->sep);
    const char *cend = find(p, end, mk->call_end);
    if (!sep || !cend || sep > cend) return NULL;
    const char *ta = p, *tb = sep, *na, *nb, *aa;
    trim(&ta, &tb);
    if (tp->format != TOOLPARSE_FMT_V3) { /* NAME<sep>ARGS; Kimi: functions.NAME:IDX<sep>ARGS */
        na = ta;
        nb = tb;
        for (const char *x = na; x < nb; x++)
            if (is_space(*x)) return NULL;
        if (tp->format == TOOLPARSE_FMT_KIMI) {
            int prefixed = nb - na > 10 && memcmp(na, "functions.", 10) == 0;
            if (prefixed) na += 10;
            const char *colon = nb;
            while (colon > na && colon[-1] >= '0' && colon[-1] <= '9') colon--;
            int indexed = colon > na && colon < nb && colon[-1] == ':';
            if (indexed) nb = colon - 1;
            /* the model's functions.NAME:IDX is the call's id, as Kimi's own API returns it */
            if (prefixed && indexed && (size_t)(tb - ta) < sizeof c->id)
                memcpy(c->id, ta, (size_t)(tb - ta));
        }
        aa = sep + strlen(mk->sep);
    } else { /* function<sep>NAME ARGS */
        if (tb > ta && !(tb - ta == 8 && memcmp(ta, "function", 8) == 0)) return NULL;
        /* name: up to the first whitespace or '{' */
        na = nb = skip_ws(sep + strlen(mk->sep), cend);
        while (nb < cend && !is_space(*nb) && *nb != '{' && *nb != '`') nb++;
        aa = nb;
    }
    if (nb == na || !name_known(tp, na, (size_t)(nb - na))) return NULL;
    /* arguments: fenced ```json ... ``` or bare */
    const char *ab = cend;
    aa = skip_ws(aa, cend);
    trim(&aa, &ab);
    if (ab - aa >= 3 && memcmp(aa, "```", 3) == 0) {
        aa += 3;
        if (ab - aa >= 4 && memcmp(aa, "json", 4) == 0) aa += 4;
        if (ab - aa < 3 || memcmp(ab - 3, "```", 3) != 0) return NULL;
        ab -= 3;
        trim(&aa, &ab);
    }
    json_error_t je;
    json_t *args = json_loadb(aa, (size_t)(ab - aa), 0, &je);
    int ok = args && json_is_object(args);
    json_decref(args);
    if (!ok) return NULL;
    c->name = strndup(na, (size_t)(nb - na));
    c->arguments = strndup(aa, (size_t)(ab - aa));
    if (!c->name || !c->arguments) {
        *nomem = 1;
        return NULL;
    }
    return cend + strlen(mk->call_end);
}

/* Parse block body [p, end) (without the outer markers). Returns 0 (calls appended), 1
 * (malformed: nothing appended) or ERR_NOMEM. */
static int parse_block(struct toolparse *tp, const char *p, const char *end)
{
    struct toolparse_call tmp[TOOLPARSE_MAX_TOOLS];
    size_t n = 0;
    int nomem = 0, rc = 1;
    for (;;) {
        p = skip_ws(p, end);
        if (p == end) break;
        if (n == TOOLPARSE_MAX_TOOLS) goto out;
        memset(&tmp[n], 0, sizeof tmp[n]);
        const char *next = parse_call(tp, p, end, &tmp[n], &nomem);
        if (!next) {
            free(tmp[n].name);
            free(tmp[n].arguments);
            goto out;
        }
        n++;
        p = next;
    }
    if (n == 0) goto out;
    if (tp->n_calls + n > tp->cap_calls) {
        size_t cap = tp->cap_calls ? tp->cap_calls * 2 : 4;
        while (cap < tp->n_calls + n) cap *= 2;
        struct toolparse_call *c = realloc(tp->calls, cap * sizeof *c);
        if (!c) {
            nomem = 1;
            goto out;
        }
        tp->calls = c;
        tp->cap_calls = cap;
    }
    for (size_t i = 0; i < n; i++) {
        static const char alnum[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        if (!tmp[i].id[0]) {
            memcpy(tmp[i].id, "call_", 5);
            for (int k = 0; k < 24; k++) tmp[i].id[5 + k] = alnum[splitmix(&tp->rng) % 62];
            tmp[i].id[29] = 0;
        }
        tp->calls[tp->n_calls++] = tmp[i];
    }
    return 0;
out:
    calls_clear(tmp, n);
    return nomem ? ERR_NOMEM : rc;
}

/* In BLOCK: look for the end marker in what was buffered. Returns 0 and sets *rest and *n_rest to
 * the text after the marker (to be fed again) when the block ended; 0 with *rest NULL when it
 * is still open. */
static int block_check(struct toolparse *tp, char **rest, size_t *n_rest)
{
    *rest = NULL;
    const char *mark_end = tp->mk->end;
    size_t le = strlen(mark_end);
    if (tp->block.n < le) return 0;
    const char *s = tp->block.s;
    const char *e = memmem(s + tp->scan_from, tp->block.n - tp->scan_from, mark_end, le);
    if (!e) {
        tp->scan_from = tp->block.n - (le - 1);
        return 0;
    }
    size_t body = (size_t)(e - s), after = body + le;
    int rc = parse_block(tp, s, e);
    if (rc < 0) return rc;
    /* rc == 1, malformed: the block is dropped (its markers never reach the content) */
    *n_rest = tp->block.n - after;
    if (*n_rest) {
        *rest = malloc(*n_rest);
        if (!*rest) return ERR_NOMEM;
        memcpy(*rest, s + after, *n_rest);
    } else {
        *rest = malloc(1);
        if (!*rest) return ERR_NOMEM;
    }
    tp->in_block = 0;
    tp->block.n = 0;
    tp->scan_from = 0;
    return 0;
}

int toolparse_feed(struct toolparse *tp, const char *text, size_t n, struct sbuf *content)
{
    const char *mark_begin = tp->mk->begin;
    const size_t lb = strlen(mark_begin);
    char *own = NULL; /* text after an end marker, re-fed in CONTENT state */
    int rc = 0;
    while (n) {
        if (tp->in_block) {
            if ((rc = sbuf_append(&tp->block, text, n))) break;
            char *rest;
            size_t n_rest = 0;
            if ((rc = block_check(tp, &rest, &n_rest))) break;
            free(own);
            own = rest;
            text = rest;
            n = rest ? n_rest : 0;
            continue;
        }
        /* CONTENT: match the begin marker byte by byte from the held prefix */
        size_t i = 0;
        int opened = 0;
        while (i < n) {
            if (tp->n_hold == 0) {
                const char *lt = memchr(text + i, mark_begin[0], n - i);
                size_t run = lt ? (size_t)(lt - (text + i)) : n - i;
                if (run && (rc = sbuf_append(content, text + i, run))) goto done;
                i += run;
                if (i == n) break;
                tp->hold[tp->n_hold++] = text[i++];
                continue;
            }
            if (text[i] == mark_begin[tp->n_hold]) {
                tp->hold[tp->n_hold++] = text[i++];
                if (tp->n_hold == lb) {
                    tp->n_hold = 0;
                    tp->in_block = 1;
                    tp->block.n = 0;
                    tp->scan_from = 0;
                    opened = 1;
                    break;
                }
                continue;
            }
            /* mismatch: '<' occurs only first in the marker, so the held bytes are text */
            if ((rc = sbuf_append(content, tp->hold, tp->n_hold))) goto done;
            tp->n_hold = 0;
        }
        text += i;
        n -= i;
        if (!opened) break;
    }
done:
    free(own);
    return rc;
}

int toolparse_finish(struct toolparse *tp, struct sbuf *content)
{
    int rc = 0;
    if (tp->in_block) {
        /* end marker missing: accept complete calls only */
        rc = parse_block(tp, tp->block.s ? tp->block.s : "",
                         (tp->block.s ? tp->block.s : "") + tp->block.n);
        if (rc == 1) rc = 0; /* cut or malformed: dropped, like a malformed closed block */
        tp->in_block = 0;
        tp->block.n = 0;
    }
    if (!rc && tp->n_hold) rc = sbuf_append(content, tp->hold, tp->n_hold);
    tp->n_hold = 0;
    return rc;
}

/* ---- OpenAI JSON ---- */

json_t *toolparse_message_json(const struct toolparse *tp)
{
    if (!tp->n_calls) return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < tp->n_calls; i++) {
        const struct toolparse_call *c = &tp->calls[i];
        json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c->id, "type", "function",
                              "function", "name", c->name, "arguments", c->arguments);
        if (!o || json_array_append_new(a, o)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int toolparse_stream_deltas(const struct toolparse *tp, size_t *n_sent, json_t *deltas)
{
    for (size_t i = *n_sent; i < tp->n_calls; i++) {
        const struct toolparse_call *c = &tp->calls[i];
        json_t *a =
            json_pack("[{s:I, s:s, s:s, s:{s:s, s:s}}]", "index", (json_int_t)i, "id", c->id,
                      "type", "function", "function", "name", c->name, "arguments", "");
        json_t *b = json_pack("[{s:I, s:{s:s}}]", "index", (json_int_t)i, "function", "arguments",
                              c->arguments);
        if (!a || !b || json_array_append_new(deltas, a)) {
            json_decref(b);
            return ERR_NOMEM;
        }
        if (json_array_append_new(deltas, b)) return ERR_NOMEM;
        *n_sent = i + 1;
    }
    return 0;
}

/* ---- request side ---- */

static int bad(char *err, const char **param, const char *name, const char *fmt, const char *a)
{
    *param = name;
    return err_set(err, ERR_INVAL, fmt, a);
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.') return 0;
    return 1;
}

int toolparse_req_parse(const json_t *root, struct toolparse_req *r, const char **param, char *err)
{
    memset(r, 0, sizeof *r);
    r->parallel = 1;
    *param = "";
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return bad(err, param, "tools", "'tools' must be an array%s", "");
        if (json_array_size(tools) > TOOLPARSE_MAX_TOOLS)
            return bad(err, param, "tools", "'tools' has more than 64 entries%s", "");
        for (size_t i = 0; i < json_array_size(tools); i++) {
            json_t *t = json_array_get(tools, i);
            json_t *type = json_object_get(t, "type");
            json_t *fn = json_object_get(t, "function");
            if (!json_is_object(t) || !json_is_string(type) ||
                strcmp(json_string_value(type), "function") != 0 || !json_is_object(fn)) {
                *param = "tools";
                return err_set(err, ERR_INVAL,
                               "'tools[%zu]' must be {\"type\": \"function\", "
                               "\"function\": {...}}",
                               i);
            }
            json_t *name = json_object_get(fn, "name");
            json_t *desc = json_object_get(fn, "description");
            json_t *params = json_object_get(fn, "parameters");
            json_t *strict = json_object_get(fn, "strict");
            if (!json_is_string(name) || !valid_name(json_string_value(name))) {
                *param = "tools";
                return err_set(err, ERR_INVAL,
                               "'tools[%zu].function.name' must be 1-64 "
                               "characters of a-z, A-Z, 0-9, '_', '-' or '.'",
                               i);
            }
            if ((desc && !json_is_null(desc) && !json_is_string(desc)) ||
                (params && !json_is_null(params) && !json_is_object(params)) ||
                (strict && !json_is_null(strict) && !json_is_boolean(strict))) {
                *param = "tools";
                return err_set(err, ERR_INVAL,
                               "'tools[%zu].function': description must be a "
                               "string, parameters an object, strict a boolean",
                               i);
            }
            const char *nm = json_string_value(name);
            for (size_t k = 0; k < r->n_tools; k++)
                if (strcmp(r->names[k], nm) == 0)
                    return bad(err, param, "tools", "duplicate function name \"%s\" in 'tools'",
                               nm);
            r->names[r->n_tools++] = nm;
        }
        if (r->n_tools) r->tools = tools;
    }
    r->choice = r->n_tools ? TOOLPARSE_CHOICE_AUTO : TOOLPARSE_CHOICE_NONE;
    json_t *tc = json_object_get(root, "tool_choice");
    if (tc && !json_is_null(tc)) {
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            if (strcmp(s, "auto") == 0)
                r->choice = r->n_tools ? TOOLPARSE_CHOICE_AUTO : TOOLPARSE_CHOICE_NONE;
            else if (strcmp(s, "none") == 0) r->choice = TOOLPARSE_CHOICE_NONE;
            else if (strcmp(s, "required") == 0) r->choice = TOOLPARSE_CHOICE_REQUIRED;
            else
                return bad(err, param, "tool_choice",
                           "'tool_choice' must be \"auto\", "
                           "\"none\", \"required\" or a function object; got \"%.40s\"",
                           s);
        } else if (json_is_object(tc)) {
            json_t *fn = json_object_get(tc, "function");
            json_t *name = json_object_get(fn, "name");
            json_t *type = json_object_get(tc, "type");
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0 ||
                !json_is_string(name))
                return bad(err, param, "tool_choice",
                           "'tool_choice' object must be {\"type\": "
                           "\"function\", \"function\": {\"name\": ...}}%s",
                           "");
            r->choice = TOOLPARSE_CHOICE_NAMED;
            r->choice_name = json_string_value(name);
            size_t k = 0;
            while (k < r->n_tools && strcmp(r->names[k], r->choice_name) != 0) k++;
            if (k == r->n_tools)
                return bad(err, param, "tool_choice",
                           "'tool_choice' names function \"%.64s\", "
                           "which is not in 'tools'",
                           r->choice_name);
        } else {
            return bad(err, param, "tool_choice",
                       "'tool_choice' must be a string or an "
                       "object%s",
                       "");
        }
        if (r->choice == TOOLPARSE_CHOICE_REQUIRED && !r->n_tools)
            return bad(err, param, "tool_choice", "'tool_choice' \"required\" needs 'tools'%s", "");
    }
    json_t *par = json_object_get(root, "parallel_tool_calls");
    if (par && !json_is_null(par)) {
        if (!json_is_boolean(par))
            return bad(err, param, "parallel_tool_calls",
                       "'parallel_tool_calls' must be a "
                       "boolean%s",
                       "");
        r->parallel = json_is_true(par);
    }
    return 0;
}

static int put(struct sbuf *o, const char *s) { return sbuf_append(o, s, strlen(s)); }

int toolparse_tools_prompt(const struct toolparse_req *r, struct sbuf *out)
{
    if (r->choice == TOOLPARSE_CHOICE_NONE || !r->n_tools) return 0;
    int rc = put(out, "## Tools\n\nYou can call the following functions.\n");
    for (size_t i = 0; !rc && i < json_array_size(r->tools); i++) {
        json_t *fn = json_object_get(json_array_get(r->tools, i), "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        if (r->choice == TOOLPARSE_CHOICE_NAMED && strcmp(name, r->choice_name) != 0) continue;
        rc = put(out, "\n### ");
        if (!rc) rc = put(out, name);
        if (!rc && json_is_string(desc)) {
            rc = put(out, "\nDescription: ");
            if (!rc) rc = sbuf_append(out, json_string_value(desc), json_string_length(desc));
        }
        if (!rc) rc = put(out, "\nParameters: ");
        if (!rc) {
            char *s = json_is_object(params) ? json_dumps(params, JSON_COMPACT)
                                             : strdup("{\"type\":\"object\",\"properties\":{}}");
            rc = s ? put(out, s) : ERR_NOMEM;
            free(s);
        }
        if (!rc) rc = put(out, "\n");
    }
    int v31 = r->format == TOOLPARSE_FMT_V31;
    if (!rc)
        rc = put(out, "\nTo call a function, reply with exactly this, the arguments being "
                      "a JSON object that matches its parameters:\n" TOOLPARSE_CALLS_BEGIN
                          TOOLPARSE_CALL_BEGIN);
    if (!rc && v31)
        rc = put(out, "FUNCTION_NAME" TOOLPARSE_SEP
                      "{\"argument\": \"value\"}" TOOLPARSE_CALL_END TOOLPARSE_CALLS_END "\n");
    else if (!rc)
        rc = put(out, "function" TOOLPARSE_SEP
                      "FUNCTION_NAME\n```json\n{\"argument\": \"value\"}\n```" TOOLPARSE_CALL_END
                          TOOLPARSE_CALLS_END "\n");
    if (!rc && r->parallel)
        rc = put(out,
                 v31 ? "Several calls go one after another inside the same " TOOLPARSE_CALLS_BEGIN
                       "..." TOOLPARSE_CALLS_END ", with nothing between them.\n"
                     : "Several calls go one after another inside the same " TOOLPARSE_CALLS_BEGIN
                       "..." TOOLPARSE_CALLS_END ", separated by \"\\n\".\n");
    if (!rc && r->choice == TOOLPARSE_CHOICE_AUTO)
        rc = put(out, "Call a function only when it helps to answer; otherwise answer directly.\n");
    if (!rc && r->choice == TOOLPARSE_CHOICE_REQUIRED)
        rc = put(out, "You must call at least one of these functions now.\n");
    if (!rc && r->choice == TOOLPARSE_CHOICE_NAMED) {
        rc = put(out, "You must call the function ");
        if (!rc) rc = put(out, r->choice_name);
        if (!rc) rc = put(out, " now.\n");
    }
    return rc;
}

int toolparse_history_calls(const json_t *msg, struct tmpl_tool_call **calls, size_t *n, char *err)
{
    *calls = NULL;
    *n = 0;
    json_t *tc = json_object_get(msg, "tool_calls");
    if (!tc || json_is_null(tc)) return 0;
    if (!json_is_array(tc)) return err_set(err, ERR_INVAL, "'tool_calls' must be an array");
    size_t k = json_array_size(tc);
    struct tmpl_tool_call *c = calloc(k ? k : 1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < k; i++) {
        json_t *e = json_array_get(tc, i);
        json_t *fn = json_object_get(e, "function");
        json_t *id = json_object_get(e, "id");
        json_t *type = json_object_get(e, "type");
        json_t *name = json_object_get(fn, "name");
        json_t *args = json_object_get(fn, "arguments");
        if (!json_is_object(e) || !json_is_object(fn) || !json_is_string(name) ||
            !(json_is_string(args) || json_is_object(args)) ||
            (type && !json_is_null(type) && !json_is_string(type)) ||
            (id && !json_is_null(id) && !json_is_string(id))) {
            free(c);
            return err_set(err, ERR_INVAL,
                           "'tool_calls[%zu]' must be {\"id\": string, \"type\": "
                           "\"function\", \"function\": {\"name\": string, \"arguments\": "
                           "string}}",
                           i);
        }
        if (json_is_object(args)) {
            /* some clients send the arguments as an object; the template needs text. The
             * caller's JSON is borrowed, so keep a serialized copy on the message. */
            char *s = json_dumps(args, JSON_COMPACT);
            if (!s) {
                free(c);
                return err_set(err, ERR_NOMEM, "out of memory");
            }
            json_object_set_new((json_t *)fn, "arguments", json_string(s));
            free(s);
            args = json_object_get(fn, "arguments");
        }
        c[i].id = json_string_value(id);
        c[i].type = json_string_value(type);
        c[i].name = json_string_value(name);
        c[i].arguments = json_string_value(args);
    }
    *calls = c;
    *n = k;
    return 0;
}

/* ---- per-choice pipeline ---- */

int toolparse_pipe_init(struct toolparse_pipe *p, int reasoning_flags,
                        const struct toolparse_req *req, uint64_t seed, char *err)
{
    memset(p, 0, sizeof *p);
    p->split_reasoning = reasoning_flags >= 0;
    if (p->split_reasoning) reasoning_init(&p->rs, (unsigned)reasoning_flags);
    p->think_tok = p->split_reasoning && (reasoning_flags & REASONING_START_THINKING);
    if (req && req->choice != TOOLPARSE_CHOICE_NONE && req->n_tools) {
        int rc = toolparse_create(&p->tp, seed, req->names, req->n_tools, err);
        if (rc == 0) toolparse_set_format(p->tp, req->format);
        return rc;
    }
    return 0;
}

void toolparse_pipe_fini(struct toolparse_pipe *p)
{
    if (!p) return;
    toolparse_destroy(p->tp);
    sbuf_fini(&p->content);
    sbuf_fini(&p->reasoning);
    sbuf_fini(&p->scratch);
    p->tp = NULL;
}

static int piece_is(const char *piece, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(piece, s, len) == 0;
}

int toolparse_pipe_wants(struct toolparse_pipe *p, const char *piece, size_t len)
{
    int open = piece_is(piece, len, "<think>"), close = piece_is(piece, len, "</think>");
    if (p->split_reasoning && (open || close)) {
        if (open == p->think_tok) return 0; /* a stray tag: no text */
        p->think_tok = open;
        return 1;
    }
    /* tool markers: parsed in the content only (not inside a think block); outside a block only
     * the begin marker, inside it every marker (a stray one leaves the block malformed) */
    if (!p->tp || p->think_tok) return 0;
    const struct marks *mk = p->tp->mk;
    if (piece_is(piece, len, mk->begin)) {
        p->tool_tok = 1;
        return 1;
    }
    if (!p->tool_tok) return 0;
    if (piece_is(piece, len, mk->end)) {
        p->tool_tok = 0;
        return 1;
    }
    return piece_is(piece, len, mk->call_begin) || piece_is(piece, len, mk->call_end) ||
           piece_is(piece, len, mk->sep);
}

/* content text after the reasoning split -> the tool parser (or straight to content) */
static int pipe_content(struct toolparse_pipe *p, const char *s, size_t n)
{
    if (!p->tp) return n ? sbuf_append(&p->content, s, n) : 0;
    return toolparse_feed(p->tp, s, n, &p->content);
}

int toolparse_pipe_feed(struct toolparse_pipe *p, const char *text, size_t n)
{
    if (!p->split_reasoning) return pipe_content(p, text, n);
    p->scratch.n = 0;
    int rc = reasoning_feed(&p->rs, text, n, &p->scratch, &p->reasoning);
    if (!rc) rc = pipe_content(p, p->scratch.s, p->scratch.n);
    return rc;
}

int toolparse_pipe_finish(struct toolparse_pipe *p)
{
    int rc = 0;
    if (p->split_reasoning) {
        p->scratch.n = 0;
        rc = reasoning_finish(&p->rs, &p->scratch, &p->reasoning);
        if (!rc) rc = pipe_content(p, p->scratch.s, p->scratch.n);
    }
    if (!rc && p->tp) rc = toolparse_finish(p->tp, &p->content);
    return rc;
}

static json_t *text_json(const struct sbuf *t) { return json_stringn(t->s ? t->s : "", t->n); }

int toolparse_pipe_deltas(struct toolparse_pipe *p, json_t *deltas)
{
    if (p->reasoning.n || p->content.n) {
        json_t *d = json_object();
        if (!d) return ERR_NOMEM;
        if (p->reasoning.n) json_object_set_new(d, "reasoning_content", text_json(&p->reasoning));
        if (p->content.n) json_object_set_new(d, "content", text_json(&p->content));
        if (json_array_append_new(deltas, d)) return ERR_NOMEM;
        p->reasoning.n = p->content.n = 0;
    }
    if (!p->tp) return 0;
    json_t *arrs = json_array();
    if (!arrs) return ERR_NOMEM;
    int rc = toolparse_stream_deltas(p->tp, &p->calls_sent, arrs);
    for (size_t i = 0; !rc && i < json_array_size(arrs); i++) {
        json_t *d = json_pack("{s:O}", "tool_calls", json_array_get(arrs, i));
        if (!d || json_array_append_new(deltas, d)) rc = ERR_NOMEM;
    }
    json_decref(arrs);
    return rc;
}

int toolparse_pipe_message(struct toolparse_pipe *p, json_t *message)
{
    json_t *calls = p->tp ? toolparse_message_json(p->tp) : NULL;
    int rc = 0;
    if (calls && !p->content.n) rc |= json_object_set_new(message, "content", json_null());
    else rc |= json_object_set_new(message, "content", text_json(&p->content));
    if (p->split_reasoning)
        rc |= json_object_set_new(message, "reasoning_content", text_json(&p->reasoning));
    if (calls) rc |= json_object_set_new(message, "tool_calls", calls);
    return rc ? ERR_NOMEM : 0;
}

const char *toolparse_pipe_finish_reason(const struct toolparse_pipe *p, const char *engine_reason)
{
    if (p->tp && toolparse_n_calls(p->tp) && engine_reason && strcmp(engine_reason, "stop") == 0)
        return "tool_calls";
    return engine_reason;
}
