/* api_misc.c - GET /v1/models (every served name, served.h), /health, /metrics; POST /tokenize,
 * /detokenize.
 *
 * Small synchronous handlers: each answers on its first call from the HTTP thread. /tokenize
 * and /detokenize follow vLLM's shapes ({"prompt"|"messages"} -> {"tokens","count",
 * "max_model_len"}; {"tokens"} -> {"prompt"}); their bodies are bounded by
 * server.tokenize_max_bytes (413), since every prompt byte costs many bytes of parse trees, token
 * ids and reply. /health is 200 only when the model is loaded, the engine has not failed and the
 * server is not draining; its body is replica.h's detail.
 */
#include "chat_plain.h"
#include "common/err.h"
#include "common/utf8.h"
#include "http.h"
#include "metrics.h"
#include "replica.h"
#include "reqparse.h"
#include "served.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum MHD_Result api_models(struct http_conn *hc)
{
    struct srv *s = hc->srv;
    json_t *data = json_array();
    char name[SERVED_MAX_NAME_LEN + 1];
    for (int i = 0; data && served_name(s->cfg->model_served_names, s->model_name, i, name); i++) {
        json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", name, "object", "model", "created",
                              (json_int_t)s->created, "owned_by", "tandem", "max_model_len",
                              s->info.context);
        if (!m || json_array_append_new(data, m)) {
            json_decref(data);
            data = NULL;
        }
    }
    json_t *r = data ? json_pack("{s:s, s:o}", "object", "list", "data", data) : NULL;
    return r ? http_reply_json(hc, 200, r) : http_reply_error(hc, ERR_NOMEM, NULL, NULL);
}

enum MHD_Result api_health(struct http_conn *hc)
{
    int code = 0;
    const char *why = NULL;
    json_t *r = replica_health(hc->srv, &code, &why);
    if (!r) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    json_t *e = code ? http_error_body(code, why, NULL) : NULL; /* the error shape too */
    if (e) json_object_update(r, e);
    json_decref(e);
    return http_reply_json(hc, code ? 503 : 200, r);
}

enum MHD_Result api_metrics(struct http_conn *hc)
{
    struct srv *s = hc->srv;
    struct eng_stats st;
    int have = atomic_load_explicit(&s->ready, memory_order_acquire);
    if (have) eng_stats(s->eng, &st);
    size_t len = 0;
    char *text = metrics_render(s->metrics, have ? &st : NULL, &len);
    if (!text) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    enum MHD_Result r =
        http_reply_buf(hc, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return r;
}

/* Parse the body as a JSON object; on failure the error reply is already queued. */
static json_t *body_json(struct http_conn *hc, enum MHD_Result *ret)
{
    char err[ERR_LEN];
    size_t bad_at = 0;
    if (utf8_check(hc->body, hc->body_len, &bad_at) != 0) {
        snprintf(err, sizeof err, "the request body is not valid UTF-8 (byte %zu)", bad_at);
        *ret = http_reply_error(hc, ERR_UTF8, err, NULL);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(hc->body, hc->body_len, 0, &je);
    if (!root) {
        snprintf(err, sizeof err, "malformed JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        *ret = http_reply_error(hc, ERR_JSON, err, NULL);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *ret = http_reply_error(hc, ERR_INVAL, "the request body must be a JSON object", NULL);
        return NULL;
    }
    return root;
}

/* /tokenize and /detokenize: a body over server.tokenize_max_bytes gets a 413 (1 = replied). */
static int body_too_large(struct http_conn *hc, enum MHD_Result *ret)
{
    long long max = hc->srv->cfg->server_tokenize_max_bytes;
    if (hc->body_len <= (size_t)max) return 0;
    char err[ERR_LEN];
    snprintf(err, sizeof err,
             "a %s body of %zu bytes exceeds the limit of %lld (server.tokenize_max_bytes)",
             hc->route->path, hc->body_len, max);
    *ret = http_reply_error(hc, ERR_TOO_LARGE, err, NULL);
    return 1;
}

/* {"tokens":[...],"count":N,"max_model_len":C} written straight into one buffer: a JSON array
 * of integer objects costs tens of bytes per token, hundreds of MiB for a maximal body. */
static int tokenize_reply(const struct tok_ids *ids, int context, struct sbuf *out)
{
    if (sbuf_reserve(out, ids->n * 7 + 64) != 0) return ERR_NOMEM;
    char num[32];
    int rc = sbuf_append(out, "{\"tokens\":[", 11);
    for (size_t i = 0; rc == 0 && i < ids->n; i++) {
        int len = snprintf(num, sizeof num, i ? ",%d" : "%d", (int)ids->v[i]);
        rc = sbuf_append(out, num, (size_t)len);
    }
    if (rc == 0) {
        int len = snprintf(num, sizeof num, "],\"count\":%zu,", ids->n);
        rc = sbuf_append(out, num, (size_t)len);
    }
    if (rc == 0) {
        int len = snprintf(num, sizeof num, "\"max_model_len\":%d}", context);
        rc = sbuf_append(out, num, (size_t)len);
    }
    return rc;
}

enum MHD_Result api_tokenize(struct http_conn *hc)
{
    struct srv *s = hc->srv;
    enum MHD_Result ret = MHD_NO;
    if (body_too_large(hc, &ret)) return ret;
    json_t *root = body_json(hc, &ret);
    if (!root) return ret;
    char err[ERR_LEN] = "";
    struct tok_ids ids = {0};
    int rc = 0;
    const char *param = NULL;
    json_t *prompt = json_object_get(root, "prompt");
    json_t *messages = json_object_get(root, "messages");
    json_t *special = json_object_get(root, "add_special_tokens");
    if (special && !json_is_boolean(special) && !json_is_null(special)) {
        rc = err_set(err, ERR_INVAL, "'add_special_tokens' must be a boolean");
        param = "add_special_tokens";
    } else if (json_is_string(prompt)) {
        unsigned flags = TOK_ENC_SPECIAL | (json_is_false(special) ? 0 : TOK_ENC_BOS);
        rc = tok_encode(s->tok, json_string_value(prompt), json_string_length(prompt), flags, &ids,
                        err);
        param = "prompt";
    } else if (messages) {
        /* validate as a chat request would, then render the template */
        json_t *probe = json_pack("{s:O}", "messages", messages);
        /* tools are part of the rendered prompt (the system text lists them) */
        static const char *const tool_keys[] = {"tools", "tool_choice", "parallel_tool_calls",
                                                "chat_template_kwargs"};
        for (size_t k = 0; probe && k < 4; k++) {
            json_t *v = json_object_get(root, tool_keys[k]);
            if (v) json_object_set(probe, tool_keys[k], v);
        }
        struct api_params p;
        rc = probe ? api_params_parse(probe, 1, &p, &param, err) : ERR_NOMEM;
        if (rc == 0) {
            rc = chat_prompt_tokens(s, messages, &p.tools, p.chat_template_kwargs, &ids, NULL, err);
            api_params_fini(&p);
            param = "messages";
        }
        json_decref(probe);
    } else {
        rc = err_set(err, ERR_INVAL, "'prompt' (a string) or 'messages' is required");
        param = "prompt";
    }
    json_decref(root); /* the prompt's copy goes before the reply is built */
    size_t big = hc->body_len;
    if (rc) {
        ret = http_reply_error(hc, rc, err, rc == ERR_NOMEM ? NULL : param);
    } else {
        struct sbuf out = {0};
        rc = tokenize_reply(&ids, s->info.context, &out);
        tok_ids_fini(&ids);
        ret = rc == 0 ? http_reply_take(hc, 200, "application/json", out.s, out.n)
                      : http_reply_error(hc, ERR_NOMEM, NULL, NULL);
        if (rc != 0) sbuf_fini(&out);
        big += out.n;
    }
    tok_ids_fini(&ids);
    /* a large prompt leaves megabytes free in this thread's malloc arena: give them back */
    if (big > ((size_t)1 << 20)) malloc_trim(0);
    return ret;
}

enum MHD_Result api_detokenize(struct http_conn *hc)
{
    struct srv *s = hc->srv;
    enum MHD_Result ret = MHD_NO;
    if (body_too_large(hc, &ret)) return ret;
    json_t *root = body_json(hc, &ret);
    if (!root) return ret;
    char err[ERR_LEN] = "";
    json_t *tokens = json_object_get(root, "tokens");
    if (!json_is_array(tokens)) {
        json_decref(root);
        return http_reply_error(hc, ERR_INVAL, "'tokens' must be an array of token ids", "tokens");
    }
    size_t n = json_array_size(tokens);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        json_decref(root);
        return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *v = json_array_get(tokens, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= s->info.vocab_size)
            rc = err_set(err, ERR_INVAL, "'tokens[%zu]' must be a token id in 0..%d", i,
                         s->info.vocab_size - 1);
        else ids[i] = (int32_t)json_integer_value(v);
    }
    struct sbuf out = {0};
    if (rc == 0) rc = tok_decode(s->tok, ids, n, 0, &out, err);
    if (rc) {
        ret = http_reply_error(hc, rc, err, "tokens");
    } else {
        /* ids may end inside a UTF-8 character: show such bytes as U+FFFD */
        json_t *str = json_stringn(out.s ? out.s : "", out.n);
        if (!str) {
            struct sbuf fixed = {0};
            if (utf8_append_lossy(&fixed, out.s, out.n) == 0)
                str = json_stringn(fixed.s ? fixed.s : "", fixed.n);
            sbuf_fini(&fixed);
        }
        json_t *r = str ? json_pack("{s:o}", "prompt", str) : NULL;
        ret = r ? http_reply_json(hc, 200, r) : http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    }
    sbuf_fini(&out);
    free(ids);
    json_decref(root);
    return ret;
}
