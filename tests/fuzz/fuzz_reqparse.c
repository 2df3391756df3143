/* fuzz_reqparse.c - libFuzzer target: request body -> validated request -> prompt tokens.
 *
 * Follows the daemon's path for /v1/chat/completions and /v1/completions (server/gen_request.c):
 * UTF-8 check, json_loadb, api_params_parse, then for chat requests the template rendering of
 * the validated messages (as api_render_chat does) and tokenization, for completions the string
 * prompt's tokenization. Byte 0 of the input picks chat (bit 0) and the template family (bits 1-2);
 * the rest is the body. Properties checked besides "no crash/leak/UB": a rejected request names a
 * message; the JSON accepted for chat has a messages array.
 */
#include "fuzz_common.h"
#include "common/utf8.h"
#include "engine/text/tmpl.h"
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
    }
    struct tmpl_opts o = {.add_generation_prompt = 1, .bos_token = tok_bos_text(tk)};
    rc = tmpl_render(kind, msgs, n, &o, out, err);
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(msgs);
    return rc;
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
        struct sbuf text = {0};
        struct tok_ids ids = {0};
        if (render_chat(kind, p.messages, &text, err) == 0)
            tok_encode(tk, text.s ? text.s : "", text.n, TOK_ENC_SPECIAL, &ids, err);
        sbuf_fini(&text);
        tok_ids_fini(&ids);
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
