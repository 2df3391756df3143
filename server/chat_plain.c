/* chat_plain.c - chat prompt ids with the caller's text kept plain text (see chat_plain.h). */
#include "chat_plain.h"

#include "common/err.h"
#include "engine/text/reasoning.h"
#include "engine/text/tmpl.h"
#include "engine/text/toolparse.h"

#include <string.h>

/* err without markers: a template's error message may quote the caller's marked text. */
static void strip_marks(char *err)
{
    size_t m = strlen(TOK_PLAIN_MARK);
    char *w = err;
    for (const char *r = err; *r;) {
        if (strncmp(r, TOK_PLAIN_MARK, m) == 0) {
            r += m;
            continue;
        }
        *w++ = *r++;
    }
    *w = 0;
}

int chat_prompt_tokens(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                       const json_t *kwargs, struct tok_ids *out, int *think_open, char *err)
{
    int plain = !s->cfg->model_parse_special_in_content;
    json_t *m = NULL, *k = NULL, *tl = NULL;
    struct toolparse_req t2;
    if (tools) t2 = *tools;
    if (plain) {
        /* an interpreted template parses arguments itself (unless it keeps them as JSON text):
         * mark the object it will see */
        m = tmpl_plain_json(s->tok, messages, s->tmpl == TMPL_JINJA && !s->tmpl_modes.args_text);
        k = tmpl_plain_json(s->tok, kwargs, 0);
        tl = tools ? tmpl_plain_json(s->tok, tools->tools, 0) : NULL;
        if (!m || (kwargs && !k) || (tools && tools->tools && !tl)) {
            json_decref(m);
            json_decref(k);
            json_decref(tl);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        if (tools) t2.tools = tl;
    }
    struct sbuf text = {0};
    int rc = api_render_chat(s, plain ? m : messages, tools ? &t2 : NULL, plain ? k : kwargs, &text,
                             err);
    if (rc && plain) strip_marks(err);
    if (rc == 0 && think_open) *think_open = reasoning_prompt_open(text.s ? text.s : "", text.n);
    if (rc == 0)
        rc = tok_encode(s->tok, text.s ? text.s : "", text.n,
                        TOK_ENC_SPECIAL | (plain ? TOK_ENC_MARKED : 0), out, err);
    sbuf_fini(&text);
    json_decref(m);
    json_decref(k);
    json_decref(tl);
    return rc;
}
