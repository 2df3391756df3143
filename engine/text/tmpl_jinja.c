/* tmpl_jinja.c - conversations rendered by the Jinja interpreter (TMPL_JINJA of tmpl.h), and
 * the output modes an interpreted template implies.
 *
 * The context is built as Hugging Face's apply_chat_template builds it: messages, tools,
 * add_generation_prompt, bos_token, eos_token, then the chat_template_kwargs keys. Messages are
 * shallow copies of the request's with content parts joined into one string and tool-call
 * arguments parsed from their JSON text (what templates that write `arguments | tojson` expect;
 * kept as text for templates that never do, which concatenate them: DeepSeek-V3.1's).
 * Threads: pure; the parsed template is only read.
 */
#include "jinja.h"
#include "tmpl.h"

#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATE_FILE (1u << 20)

/* content: a string stays; an array of parts becomes the concatenation of their "text" */
static json_t *content_text(json_t *content)
{
    if (!json_is_array(content)) return json_incref(content);
    struct sbuf b = {0};
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *t = json_object_get(part, "text");
        if (json_is_string(t) && sbuf_append(&b, json_string_value(t), json_string_length(t))) {
            sbuf_fini(&b);
            return NULL;
        }
    }
    json_t *s = json_stringn(b.s ? b.s : "", b.n);
    sbuf_fini(&b);
    return s;
}

/* tool_calls with each function.arguments that is a JSON object text parsed into the object */
static json_t *parsed_calls(json_t *calls)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;
    if (!out) return NULL;
    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");
        json_t *args = json_object_get(fn, "arguments");
        json_t *obj = json_is_string(args)
                          ? json_loadb(json_string_value(args), json_string_length(args), 0, NULL)
                          : NULL;
        if (!json_is_object(obj)) {
            json_decref(obj);
            if (json_array_append(out, c)) goto fail;
            continue;
        }
        json_t *c2 = json_copy(c), *fn2 = json_copy(fn);
        if (!c2 || !fn2 || json_object_set_new(fn2, "arguments", obj) ||
            json_object_set_new(c2, "function", fn2) || json_array_append_new(out, c2)) {
            json_decref(c2);
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static json_t *messages_for_template(const json_t *messages, int args_text)
{
    json_t *out = json_array();
    size_t i;
    json_t *m;
    if (!out) return NULL;
    json_array_foreach(messages, i, m)
    {
        json_t *m2 = json_is_object(m) ? json_copy(m) : json_incref(m);
        if (!m2 || json_array_append_new(out, m2)) goto fail;
        if (!json_is_object(m2)) continue;
        const char *role = json_string_value(json_object_get(m2, "role"));
        if (role && strcmp(role, "developer") == 0 &&
            json_object_set_new(m2, "role", json_string("system")))
            goto fail;
        json_t *content = json_object_get(m2, "content");
        if (json_is_array(content) && json_object_set_new(m2, "content", content_text(content)))
            goto fail;
        json_t *calls = json_object_get(m2, "tool_calls");
        if (!args_text && json_is_array(calls) &&
            json_object_set_new(m2, "tool_calls", parsed_calls(calls)))
            goto fail;
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

int tmpl_jinja_render(const struct jinja *t, const struct tmpl_jinja_ctx *c, struct sbuf *out,
                      char *err)
{
    if (!t) return err_set(err, ERR_INVAL, "no chat template selected");
    json_t *vars = json_object();
    json_t *msgs = messages_for_template(c->messages, c->args_text);
    int rc = 0;
    if (!vars || !msgs || json_object_set_new(vars, "messages", msgs) ||
        (c->tools && json_object_set(vars, "tools", (json_t *)c->tools)) ||
        json_object_set_new(vars, "add_generation_prompt",
                            json_boolean(c->add_generation_prompt)) ||
        json_object_set_new(vars, "bos_token", json_string(c->bos_token ? c->bos_token : "")) ||
        json_object_set_new(vars, "eos_token", json_string(c->eos_token ? c->eos_token : ""))) {
        json_decref(vars);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)c->kwargs, k, v)
    {
        if (strcmp(k, "messages") == 0 || strcmp(k, "tools") == 0) {
            rc = err_set(err, ERR_INVAL, "chat_template_kwargs may not set '%s'", k);
            break;
        }
        if (json_object_set(vars, k, v)) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            break;
        }
    }
    if (rc == 0) rc = jinja_render(t, vars, NULL, out, err);
    json_decref(vars);
    return rc;
}

void tmpl_modes_of(const char *chat_template, struct tmpl_modes *m)
{
    const char *t = chat_template ? chat_template : "";
    m->deepseek_tools = strstr(t, "<｜tool▁calls▁begin｜>") != NULL;
    m->v31_tools = m->deepseek_tools && !strstr(t, "```json");
    m->kimi_tools = !m->deepseek_tools && strstr(t, "<|tool_calls_section_begin|>") != NULL;
    m->think = strstr(t, "<think>") != NULL;
    /* does "arguments" ever reach a tojson filter ("arguments'] | tojson", "arguments|tojson")? */
    m->args_text = 1;
    for (const char *p = strstr(t, "arguments"); p && m->args_text;
         p = strstr(p + 1, "arguments")) {
        const char *q = p + 9;
        while (*q == '\'' || *q == '"' || *q == ']' || *q == ' ') q++;
        if (*q != '|') continue;
        q++;
        while (*q == ' ') q++;
        if (strncmp(q, "tojson", 6) == 0) m->args_text = 0;
    }
}

int tmpl_read_file(const char *path, char **out, char *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, ERR_CONFIG, "model.chat_template_file %s: %s", path, strerror(errno));
    char *buf = malloc(MAX_TEMPLATE_FILE + 1);
    if (!buf) {
        fclose(f);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, MAX_TEMPLATE_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > MAX_TEMPLATE_FILE || memchr(buf, 0, n)) {
        free(buf);
        return err_set(err, ERR_CONFIG, "model.chat_template_file %s: %s", path,
                       bad                     ? "read error"
                       : n > MAX_TEMPLATE_FILE ? "larger than 1 MiB"
                                               : "holds a NUL byte");
    }
    buf[n] = 0;
    *out = buf;
    return 0;
}
