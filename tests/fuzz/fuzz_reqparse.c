/* fuzz_reqparse.c - libFuzzer target: request body -> validated request -> prompt tokens.
 *
 * Follows the daemon's path for /v1/chat/completions and /v1/completions (server/gen_request.c):
 * UTF-8 check, json_loadb, api_params_parse, then for chat requests the template rendering of
 * the validated messages (as api_render_chat does, content marked plain by tmpl_plain_json as
 * server/chat_plain.c does) and tokenization, for completions the string prompt's tokenization.
 * Byte 0 of the input picks chat (bit 0) and the template family (bits 1-2); the rest is the
 * body. Properties checked besides "no crash/leak/UB": a rejected request names a message; the
 * JSON accepted for chat has a messages array; the marked prompt decodes back to the unmarked
 * rendering, byte for byte; and it holds as many added tokens as the rendering of the same
 * messages with every '<' of their strings made '(' (the template's markers only: no caller
 * text became a control token).
 */
#include "fuzz_common.h"
#include "common/utf8.h"
#include "engine/text/tmpl.h"
#include "engine/text/toolparse.h"
#include "server/reqparse.h"

#include <stdint.h>
#include <string.h>

static struct tok *tk;

/* What api_render_chat (server/gen_request.c) does with validated messages; repeated here so the
 * target needs only reqparse.c and engine/text, not the whole daemon. */
static int render_chat(enum tmpl_kind kind, const json_t *messages, struct sbuf *out, char *err)
{
    size_t n = json_array_size(messages);
    struct tmpl_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    char **texts = calloc(n ? n : 1, sizeof *texts);
    int rc = 0;
    if (!msgs || !texts) abort();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        if (!role) abort(); /* api_params_parse guarantees a string role */
        msgs[i].role = strcmp(role, "developer") == 0 ? "system" : role;
        if (content && !json_is_null(content)) {
            if (api_content_text(content, &texts[i]) != 0) abort();
            msgs[i].content = texts[i];
        }
        json_t *tcid = json_object_get(m, "tool_call_id");
        if (json_is_string(tcid)) msgs[i].tool_call_id = json_string_value(tcid);
        struct tmpl_tool_call *calls = NULL;
        size_t n_calls = 0;
        if (toolparse_history_calls(m, &calls, &n_calls, err) != 0) rc = ERR_INVAL;
        msgs[i].tool_calls = calls;
        msgs[i].n_tool_calls = n_calls;
    }
    struct tmpl_opts o = {.add_generation_prompt = 1, .bos_token = tok_bos_text(tk)};
    if (rc == 0) rc = tmpl_render(kind, msgs, n, &o, out, err);
    for (size_t i = 0; i < n; i++) {
        free(texts[i]);
        free((void *)msgs[i].tool_calls);
    }
    free(texts);
    free(msgs);
    return rc;
}

/* A deep copy of v with every '<' of its strings made '(' (no added-token text left). */
static json_t *neutral(const json_t *v)
{
    if (json_is_string(v)) {
        char *s = strndup(json_string_value(v), json_string_length(v));
        if (!s) abort();
        for (char *q = s; *q; q++)
            if (*q == '<') *q = '(';
        json_t *r = json_stringn(s, strlen(s));
        free(s);
        return r;
    }
    json_t *r = json_is_array(v) ? json_array() : json_is_object(v) ? json_object() : NULL;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(r, neutral(x));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) json_object_set_new(r, k, neutral(x));
    }
    return r ? r : json_incref((json_t *)v);
}

/* Added-token ids in ids, "<think>" and "</think>" left out (they stay added tokens in assistant
 * content, tok.h). */
static size_t n_added(const struct tok_ids *ids)
{
    size_t n = 0;
    for (size_t i = 0; i < ids->n; i++) {
        size_t len;
        const char *p = tok_piece(tk, ids->v[i], &len);
        int think = (len == 7 && memcmp(p, "<think>", 7) == 0) ||
                    (len == 8 && memcmp(p, "</think>", 8) == 0);
        n += (size_t)(tok_is_added(tk, ids->v[i]) && !think);
    }
    return n;
}

/* The chat properties of the header comment. */
static void check_chat(enum tmpl_kind kind, const json_t *messages)
{
    char err[ERR_LEN] = "";
    struct sbuf text = {0}, marked = {0}, neut = {0}, back = {0};
    struct tok_ids ids = {0}, nids = {0};
    json_t *m = tmpl_plain_json(tk, messages, 0), *nm = neutral(messages);
    if (!m || !nm) abort();
    int rc = render_chat(kind, messages, &text, err);
    if (render_chat(kind, m, &marked, err) != rc || render_chat(kind, nm, &neut, err) != rc)
        abort(); /* marking and '<' never change whether a template accepts the messages */
    if (rc == 0 && tok_encode(tk, marked.s ? marked.s : "", marked.n,
                              TOK_ENC_SPECIAL | TOK_ENC_MARKED, &ids, err) == 0) {
        if (tok_decode(tk, ids.v, ids.n, 0, &back, err) != 0) abort();
        if (back.n != text.n || (text.n && memcmp(back.s, text.s, text.n) != 0)) abort();
        if (tok_encode(tk, neut.s ? neut.s : "", neut.n, TOK_ENC_SPECIAL, &nids, err) != 0) abort();
        if (n_added(&ids) != n_added(&nids)) abort();
    }
    sbuf_fini(&text);
    sbuf_fini(&marked);
    sbuf_fini(&neut);
    sbuf_fini(&back);
    tok_ids_fini(&ids);
    tok_ids_fini(&nids);
    json_decref(m);
    json_decref(nm);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_ERR);
    tk = fuzz_load_tokenizer();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int chat = data[0] & 1;
    static const enum tmpl_kind kinds[4] = {TMPL_DEEPSEEK_V3, TMPL_DEEPSEEK_R1,
                                            TMPL_DEEPSEEK_R1_0528, TMPL_DEEPSEEK_V3};
    enum tmpl_kind kind = kinds[(data[0] >> 1) & 3];
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    if (utf8_check(body, n, NULL) != 0) return 0;
    json_error_t je;
    json_t *root = json_loadb(body, n, 0, &je);
    if (!root) return 0;
    struct api_params p;
    memset(&p, 0, sizeof p);
    const char *param = NULL;
    char err[ERR_LEN] = "";
    int rc = api_params_parse(root, chat, &p, &param, err);
    if (rc != 0) {
        if (rc != ERR_INVAL || !err[0] || !param) abort();
    } else if (chat) {
        if (!json_is_array(p.messages)) abort();
        check_chat(kind, p.messages);
    } else if (json_is_string(p.prompt)) {
        struct tok_ids ids = {0};
        tok_encode(tk, json_string_value(p.prompt), json_string_length(p.prompt),
                   TOK_ENC_SPECIAL | TOK_ENC_BOS, &ids, err);
        tok_ids_fini(&ids);
    }
    api_params_fini(&p);
    json_decref(root);
    return 0;
}
