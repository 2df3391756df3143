/* gen_anthropic.c - the answer of /v1/messages in Anthropic's shape: SSE events or one body.
 *
 * What: a Messages request is a chat request with one choice (anthropic.h); its text goes
 * through the choice's pipe like any chat (gen_text.c). Here the pipe's output becomes
 * content blocks: reasoning -> "thinking", content -> "text", each tool call -> "tool_use"
 * with its arguments as the `input` object. Streaming sends message_start, then per block
 * content_block_start, content_block_delta (thinking_delta / text_delta / input_json_delta),
 * content_block_stop, and at the end message_delta (stop_reason, usage) and message_stop;
 * an error is an `event: error` with Anthropic's error body. Usage: input_tokens are the
 * prompt tokens not read from the prefix cache, cache_read_input_tokens those that were.
 * Threads: the request's HTTP thread only. Errors: an allocation failure while framing sets
 * g->err_code (ERR_NOMEM), which ends the stream with an error event.
 */
#include "gen.h"

#include "anthropic.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cached_tokens(const struct gen *g)
{
    int c = g->ch[0].n_cached;
    return c < g->prompt_len[0] ? c : g->prompt_len[0];
}

static json_t *usage_json(const struct gen *g)
{
    int cached = cached_tokens(g);
    return json_pack("{s:i, s:i, s:i, s:i}", "input_tokens", g->prompt_len[0] - cached,
                     "cache_creation_input_tokens", 0, "cache_read_input_tokens", cached,
                     "output_tokens", g->ch[0].n_gen);
}

/* stop_reason and stop_sequence (a new reference, or null) of the finished choice */
static const char *stop_reason(const struct gen *g, json_t **seq)
{
    const struct choice *c = &g->ch[0];
    int si = detok_stop_index(c->dt);
    *seq = json_null();
    if (si >= 0 && si < g->p.n_stop) {
        *seq = json_string(g->p.stop[si]);
        return "stop_sequence";
    }
    const char *f = c->pipe_on
                        ? toolparse_pipe_finish_reason(&c->pipe, c->finish ? c->finish : "stop")
                        : (c->finish ? c->finish : "stop");
    if (strcmp(f, "tool_calls") == 0) return "tool_use";
    return strcmp(f, "length") == 0 ? "max_tokens" : "end_turn";
}

/* A tool call's arguments text as the `input` object ({} if it does not parse as one). */
static json_t *tool_input(const char *args)
{
    json_t *in = args ? json_loads(args, 0, NULL) : NULL;
    if (json_is_object(in)) return in;
    json_decref(in);
    return json_object();
}

/* ---- streaming */

void gen_anth_sse_start(struct gen *g)
{
    json_t *msg = json_pack("{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:{s:i, s:i}}", "id", g->id,
                            "type", "message", "role", "assistant", "model", g->srv->model_name,
                            "content", "stop_reason", "stop_sequence", "usage", "input_tokens",
                            g->prompt_len[0], "output_tokens", 0);
    gen_sse_event(g, "message_start",
                  json_pack("{s:s, s:o}", "type", "message_start", "message", msg));
}

static void block_stop(struct gen *g)
{
    if (!g->anth_open) return;
    gen_sse_event(
        g, "content_block_stop",
        json_pack("{s:s, s:i}", "type", "content_block_stop", "index", g->anth_blocks - 1));
    g->anth_open = 0;
}

/* Open a block of kind ('k', 't', 'u'; block: its content_block JSON, taken) */
static void block_start(struct gen *g, int kind, json_t *block)
{
    block_stop(g);
    gen_sse_event(g, "content_block_start",
                  json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index",
                            g->anth_blocks, "content_block", block));
    g->anth_blocks++;
    g->anth_open = kind;
}

/* A delta of the open block: {"type": type, key: text} */
static void block_delta(struct gen *g, const char *type, const char *key, const char *text)
{
    gen_sse_event(g, "content_block_delta",
                  json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_delta", "index",
                            g->anth_blocks - 1, "delta", "type", type, key, text));
}

/* One delta of the pipe (toolparse_pipe_deltas) as block events. */
static void pipe_delta(struct gen *g, const json_t *d)
{
    const char *r = json_string_value(json_object_get(d, "reasoning_content"));
    const char *t = json_string_value(json_object_get(d, "content"));
    json_t *call = json_array_get(json_object_get(d, "tool_calls"), 0);
    if (r && *r) {
        if (g->anth_open != 'k')
            block_start(
                g, 'k',
                json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", ""));
        block_delta(g, "thinking_delta", "thinking", r);
    }
    if (t && *t) {
        if (g->anth_open != 't')
            block_start(g, 't', json_pack("{s:s, s:s}", "type", "text", "text", ""));
        block_delta(g, "text_delta", "text", t);
    }
    if (!call) return;
    json_t *fn = json_object_get(call, "function");
    const char *id = json_string_value(json_object_get(call, "id"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    if (id)
        block_start(g, 'u',
                    json_pack("{s:s, s:s, s:O, s:{}}", "type", "tool_use", "id", id, "name",
                              json_object_get(fn, "name"), "input"));
    if (args && *args && g->anth_open == 'u')
        block_delta(g, "input_json_delta", "partial_json", args);
}

void gen_anth_sse_pending(struct gen *g)
{
    struct choice *c = &g->ch[0];
    if (c->finish_sent || !c->pipe_on) return;
    json_t *deltas = gen_pipe_deltas(g, c);
    if (!deltas) return;
    size_t i;
    json_t *d;
    json_array_foreach(deltas, i, d) pipe_delta(g, d);
    json_decref(deltas);
    if (!c->finished) return;
    block_stop(g);
    json_t *seq;
    const char *reason = stop_reason(g, &seq);
    json_t *usage = usage_json(g);
    gen_sse_event(g, "message_delta",
                  json_pack("{s:s, s:{s:s, s:o}, s:o}", "type", "message_delta", "delta",
                            "stop_reason", reason, "stop_sequence", seq, "usage", usage));
    c->finish_sent = 1;
}

void gen_anth_sse_end(struct gen *g)
{
    if (g->err_code) {
        metrics_error(g->srv->metrics, g->err_code);
        gen_sse_event(g, "error", anthropic_error_body(g->err_code, g->err_msg));
    } else {
        gen_sse_event(g, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    }
    g->stream_done = 1;
}

/* ---- non-streaming */

/* The message's content blocks from the pipe's chat message fields. */
static json_t *content_blocks(json_t *msg)
{
    json_t *blocks = json_array();
    const char *r = json_string_value(json_object_get(msg, "reasoning_content"));
    const char *t = json_string_value(json_object_get(msg, "content"));
    if (blocks && r && *r)
        json_array_append_new(blocks, json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking",
                                                r, "signature", ""));
    if (blocks && t && *t)
        json_array_append_new(blocks, json_pack("{s:s, s:s}", "type", "text", "text", t));
    size_t i;
    json_t *call;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        json_t *fn = json_object_get(call, "function");
        json_array_append_new(
            blocks,
            json_pack("{s:s, s:O, s:O, s:o}", "type", "tool_use", "id", json_object_get(call, "id"),
                      "name", json_object_get(fn, "name"), "input",
                      tool_input(json_string_value(json_object_get(fn, "arguments")))));
    }
    return blocks;
}

enum MHD_Result gen_anth_reply_full(struct http_conn *hc, struct gen *g)
{
    if (g->err_code) return http_reply_error(hc, g->err_code, g->err_msg, NULL);
    struct choice *c = &g->ch[0];
    json_t *msg = json_object();
    if (!msg || !c->pipe_on || toolparse_pipe_message(&c->pipe, msg) != 0) {
        json_decref(msg);
        return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    }
    json_t *seq;
    const char *reason = stop_reason(g, &seq);
    json_t *r =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "id", g->id, "type", "message",
                  "role", "assistant", "model", g->srv->model_name, "content", content_blocks(msg),
                  "stop_reason", reason, "stop_sequence", seq, "usage", usage_json(g));
    json_decref(msg);
    if (!r) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    return http_reply_json(hc, 200, r);
}
