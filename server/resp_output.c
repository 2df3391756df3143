/* resp_output.c - what a client of POST /v1/responses receives: the response object, or its
 * SSE events.
 *
 * What: the output of the chat pipe (toolparse.h) as Responses output items: reasoning text
 * becomes a "reasoning" item (content [{type:"reasoning_text"}]), content a "message" item
 * (content [{type:"output_text"}]), each tool call a "function_call" item. Non-streaming,
 * resp_reply_full builds them from the pipe's message. Streaming, each pipe delta becomes the
 * documented events (every one with "event:" and a sequence_number):
 *   response.created, response.in_progress,
 *   per item: response.output_item.added, [response.content_part.added,
 *   response.output_text.delta | response.reasoning_text.delta ..., *.done,
 *   response.content_part.done] | [response.function_call_arguments.delta / .done],
 *   response.output_item.done,
 *   then response.completed (or response.incomplete when max_output_tokens cut it), or an
 *   "error" event.
 * One item is open at a time: a switch between reasoning and content closes the open one.
 * Threads: the request's HTTP thread only. Errors: an allocation failure while framing sets
 * g->err_code (ERR_NOMEM), which ends the stream with an error event.
 */
#include "gen.h"
#include "resp.h"

#include "common/utf8.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared pieces */

/* s[0..n) as a JSON string: invalid UTF-8 bytes become U+FFFD. */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", n);
    if (j) return j;
    struct sbuf fixed = {0};
    if (utf8_append_lossy(&fixed, s, n) == 0) j = json_stringn(fixed.s ? fixed.s : "", fixed.n);
    sbuf_fini(&fixed);
    return j;
}

/* req[key] when given (a new reference), else dflt (taken) */
static json_t *echo(const struct gen *g, const char *key, json_t *dflt)
{
    json_t *v = json_object_get(g->resp->req, key);
    if (!v || json_is_null(v)) return dflt;
    json_decref(dflt);
    return json_incref(v);
}

static void item_id(const struct gen *g, const char *prefix, size_t index, char *out, size_t cap)
{
    snprintf(out, cap, "%s_%s%02zu", prefix, g->id + 5, index); /* after "resp_" */
}

static int incomplete(const struct gen *g)
{
    return g->ch[0].finish && strcmp(g->ch[0].finish, "length") == 0;
}

static json_t *message_item(const char *id, const char *status, const char *text, size_t n)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:o, s:[]}]}", "id", id, "type", "message",
                     "status", status, "role", "assistant", "content", "type", "output_text",
                     "text", text_json(text, n), "annotations");
}

static json_t *reasoning_item(const char *id, const char *text, size_t n)
{
    return json_pack("{s:s, s:s, s:[], s:[{s:s, s:o}]}", "id", id, "type", "reasoning", "summary",
                     "content", "type", "reasoning_text", "text", text_json(text, n));
}

static json_t *call_item(const char *id, const char *call_id, const char *name, const char *args,
                         const char *status)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", id, "type", "function_call", "call_id",
                     call_id, "name", name, "arguments", args, "status", status);
}

/* Tokens of the reasoning text (usage.output_tokens_details.reasoning_tokens). */
static long long reasoning_tokens(const struct gen *g, const char *text, size_t n)
{
    if (!n) return 0;
    struct tok_ids ids = {0};
    long long k = tok_encode(g->srv->tok, text, n, 0, &ids, NULL) == 0 ? (long long)ids.n : 0;
    tok_ids_fini(&ids);
    return k;
}

static json_t *usage_json(const struct gen *g, long long reasoning)
{
    long long in = g->prompt_len[0], out = g->ch[0].n_gen;
    return json_pack("{s:I, s:{s:I}, s:I, s:{s:I}, s:I}", "input_tokens", (json_int_t)in,
                     "input_tokens_details", "cached_tokens", (json_int_t)g->ch[0].n_cached,
                     "output_tokens", (json_int_t)out, "output_tokens_details", "reasoning_tokens",
                     (json_int_t)reasoning, "total_tokens", (json_int_t)(in + out));
}

/* The response object; output and usage are taken (usage may be json_null()). */
static json_t *response_json(const struct gen *g, const char *status, json_t *output, json_t *usage)
{
    json_t *details = strcmp(status, "incomplete") == 0
                          ? json_pack("{s:s}", "reason", "max_output_tokens")
                          : json_null();
    json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:n, s:o, s:s, s:o, s:o}", "id", g->id, "object",
                          "response", "created_at", (json_int_t)g->created, "status", status,
                          "error", "incomplete_details", details, "model", g->srv->model_name,
                          "output", output, "usage", usage);
    if (!r) return NULL;
    json_t *p = g->resp->req;
    int parallel = !json_is_false(json_object_get(p, "parallel_tool_calls"));
    json_object_set_new(r, "instructions", echo(g, "instructions", json_null()));
    json_object_set_new(r, "max_output_tokens", echo(g, "max_output_tokens", json_null()));
    json_object_set_new(r, "metadata", echo(g, "metadata", json_object()));
    json_object_set_new(r, "parallel_tool_calls", json_boolean(parallel));
    json_object_set_new(r, "previous_response_id", json_null());
    json_object_set_new(r, "reasoning", json_pack("{s:n, s:n}", "effort", "summary"));
    json_object_set_new(r, "store", json_false()); /* nothing is stored */
    json_object_set_new(r, "temperature", echo(g, "temperature", json_real(1.0)));
    json_object_set_new(r, "text",
                        echo(g, "text", json_pack("{s:{s:s}}", "format", "type", "text")));
    json_object_set_new(r, "tool_choice", echo(g, "tool_choice", json_string("auto")));
    json_object_set_new(r, "tools", echo(g, "tools", json_array()));
    json_object_set_new(r, "top_p", echo(g, "top_p", json_real(1.0)));
    json_object_set_new(r, "truncation", json_string("disabled"));
    json_object_set_new(r, "user", echo(g, "user", json_null()));
    return r;
}

/* ---- non-streaming */

/* The pipe's message fields -> output items. 0 or ERR_NOMEM. */
static int items_from_message(const struct gen *g, const json_t *msg, json_t *out, long long *rt)
{
    char id[96];
    json_t *rs = json_object_get(msg, "reasoning_content");
    json_t *content = json_object_get(msg, "content");
    json_t *calls = json_object_get(msg, "tool_calls");
    *rt = 0;
    if (json_string_length(rs)) {
        item_id(g, "rs", json_array_size(out), id, sizeof id);
        *rt = reasoning_tokens(g, json_string_value(rs), json_string_length(rs));
        if (json_array_append_new(
                out, reasoning_item(id, json_string_value(rs), json_string_length(rs))))
            return ERR_NOMEM;
    }
    if (json_string_length(content) || json_array_size(calls) == 0) {
        item_id(g, "msg", json_array_size(out), id, sizeof id);
        const char *text = json_is_string(content) ? json_string_value(content) : "";
        size_t n = json_is_string(content) ? json_string_length(content) : 0;
        if (json_array_append_new(
                out, message_item(id, incomplete(g) ? "incomplete" : "completed", text, n)))
            return ERR_NOMEM;
    }
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");
        item_id(g, "fc", json_array_size(out), id, sizeof id);
        json_t *it = call_item(id, json_string_value(json_object_get(c, "id")),
                               json_string_value(json_object_get(fn, "name")),
                               json_string_value(json_object_get(fn, "arguments")), "completed");
        if (json_array_append_new(out, it)) return ERR_NOMEM;
    }
    return 0;
}

enum MHD_Result resp_reply_full(struct http_conn *hc, struct gen *g)
{
    if (g->err_code) return http_reply_error(hc, g->err_code, g->err_msg, NULL);
    struct choice *c = &g->ch[0];
    json_t *msg = json_object(), *output = json_array();
    long long rt = 0;
    int rc = !msg || !output || !c->pipe_on || toolparse_pipe_message(&c->pipe, msg) != 0 ||
             items_from_message(g, msg, output, &rt) != 0;
    json_decref(msg);
    json_t *r = rc ? NULL
                   : response_json(g, incomplete(g) ? "incomplete" : "completed", output,
                                   usage_json(g, rt));
    if (rc) json_decref(output);
    if (!r) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    return http_reply_json(hc, 200, r);
}

/* ---- streaming */

/* One SSE event: "event: TYPE" and the object with its type and sequence_number (taken). */
static void emit(struct gen *g, const char *type, json_t *o)
{
    struct resp *r = g->resp;
    if (o && (json_object_set_new(o, "type", json_string(type)) != 0 ||
              json_object_set_new(o, "sequence_number", json_integer(r->seq++)) != 0)) {
        json_decref(o);
        o = NULL;
    }
    gen_sse_event(g, type, o);
}

/* An event about the open item: {item_id, output_index, content_index, ...} */
static json_t *part_event(struct resp *r)
{
    return json_pack("{s:s, s:I, s:i}", "item_id", r->open_id, "output_index",
                     (json_int_t)json_array_size(r->output), "content_index", 0);
}

static void open_item(struct gen *g, enum resp_item kind)
{
    struct resp *r = g->resp;
    size_t idx = json_array_size(r->output);
    int msg = kind == RESP_ITEM_MESSAGE;
    item_id(g, msg ? "msg" : "rs", idx, r->open_id, sizeof r->open_id);
    r->open = kind;
    r->open_text.n = 0;
    json_t *item =
        msg ? json_pack("{s:s, s:s, s:s, s:s, s:[]}", "id", r->open_id, "type", "message", "status",
                        "in_progress", "role", "assistant", "content")
            : json_pack("{s:s, s:s, s:[]}", "id", r->open_id, "type", "reasoning", "summary");
    emit(g, "response.output_item.added",
         json_pack("{s:I, s:o}", "output_index", (json_int_t)idx, "item", item));
    json_t *part =
        msg ? json_pack("{s:s, s:s, s:[]}", "type", "output_text", "text", "", "annotations")
            : json_pack("{s:s, s:s}", "type", "reasoning_text", "text", "");
    json_t *e = part_event(r);
    if (e) json_object_set_new(e, "part", part);
    else json_decref(part);
    emit(g, "response.content_part.added", e);
}

static void close_item(struct gen *g)
{
    struct resp *r = g->resp;
    if (r->open == RESP_ITEM_NONE) return;
    int msg = r->open == RESP_ITEM_MESSAGE;
    const char *text = r->open_text.s ? r->open_text.s : "";
    size_t n = r->open_text.n;
    json_t *e = part_event(r);
    if (e) json_object_set_new(e, "text", text_json(text, n));
    if (e && msg) json_object_set_new(e, "logprobs", json_array());
    emit(g, msg ? "response.output_text.done" : "response.reasoning_text.done", e);
    json_t *item =
        msg ? message_item(r->open_id, incomplete(g) ? "incomplete" : "completed", text, n)
            : reasoning_item(r->open_id, text, n);
    e = part_event(r);
    if (e && item) json_object_set(e, "part", json_array_get(json_object_get(item, "content"), 0));
    emit(g, "response.content_part.done", e);
    emit(g, "response.output_item.done",
         json_pack("{s:I, s:O}", "output_index", (json_int_t)json_array_size(r->output), "item",
                   item));
    if (!item || json_array_append_new(r->output, item)) gen_oom(g);
    r->open = RESP_ITEM_NONE;
}

/* Text of the open item's kind (opening it first). */
static void add_text(struct gen *g, enum resp_item kind, const json_t *s)
{
    struct resp *r = g->resp;
    if (!json_string_length(s)) return;
    if (r->open != kind) {
        close_item(g);
        open_item(g, kind);
    }
    if (sbuf_append(&r->open_text, json_string_value(s), json_string_length(s)) ||
        (kind == RESP_ITEM_REASONING &&
         sbuf_append(&r->reasoning, json_string_value(s), json_string_length(s))))
        gen_oom(g);
    json_t *e = part_event(r);
    if (e) json_object_set(e, "delta", (json_t *)s);
    if (e && kind == RESP_ITEM_MESSAGE) json_object_set_new(e, "logprobs", json_array());
    emit(g,
         kind == RESP_ITEM_MESSAGE ? "response.output_text.delta" : "response.reasoning_text.delta",
         e);
}

/* One "tool_calls" delta of the pipe: the first of a call opens its item, the second carries the
 * whole arguments and closes it (toolparse_stream_deltas). */
static void add_call(struct gen *g, const json_t *tc)
{
    struct resp *r = g->resp;
    json_t *fn = json_object_get(tc, "function");
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    json_int_t idx = (json_int_t)json_array_size(r->output);
    if (json_is_string(json_object_get(tc, "id"))) {
        close_item(g);
        char id[96];
        item_id(g, "fc", (size_t)idx, id, sizeof id);
        json_decref(r->call);
        r->call = call_item(id, json_string_value(json_object_get(tc, "id")),
                            json_string_value(json_object_get(fn, "name")), "", "in_progress");
        emit(g, "response.output_item.added",
             json_pack("{s:I, s:O}", "output_index", idx, "item", r->call));
        return;
    }
    if (!r->call || !args) return;
    const char *id = json_string_value(json_object_get(r->call, "id"));
    emit(g, "response.function_call_arguments.delta",
         json_pack("{s:s, s:I, s:s}", "item_id", id, "output_index", idx, "delta", args));
    emit(g, "response.function_call_arguments.done",
         json_pack("{s:s, s:I, s:O, s:s}", "item_id", id, "output_index", idx, "name",
                   json_object_get(r->call, "name"), "arguments", args));
    json_object_set_new(r->call, "arguments", json_string(args));
    json_object_set_new(r->call, "status", json_string("completed"));
    emit(g, "response.output_item.done",
         json_pack("{s:I, s:O}", "output_index", idx, "item", r->call));
    if (json_array_append_new(r->output, r->call)) gen_oom(g);
    r->call = NULL;
}

void resp_sse_start(struct gen *g)
{
    emit(
        g, "response.created",
        json_pack("{s:o}", "response", response_json(g, "in_progress", json_array(), json_null())));
    emit(
        g, "response.in_progress",
        json_pack("{s:o}", "response", response_json(g, "in_progress", json_array(), json_null())));
}

void resp_sse_pending(struct gen *g)
{
    struct choice *c = &g->ch[0];
    if (c->finish_sent || !c->pipe_on) return;
    json_t *deltas = gen_pipe_deltas(g, c);
    if (!deltas) return;
    size_t i, k;
    json_t *d, *tc;
    json_array_foreach(deltas, i, d)
    {
        add_text(g, RESP_ITEM_REASONING, json_object_get(d, "reasoning_content"));
        add_text(g, RESP_ITEM_MESSAGE, json_object_get(d, "content"));
        json_array_foreach(json_object_get(d, "tool_calls"), k, tc) add_call(g, tc);
    }
    json_decref(deltas);
    if (!c->finished) return;
    close_item(g);
    /* as resp_reply_full: a message (if an empty one) unless a function was called */
    size_t answers = 0;
    json_t *it;
    json_array_foreach(g->resp->output, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        if (!type || strcmp(type, "reasoning") != 0) answers++;
    }
    if (answers == 0) {
        open_item(g, RESP_ITEM_MESSAGE);
        close_item(g);
    }
    c->finish_sent = 1;
}

void resp_sse_end(struct gen *g)
{
    struct resp *r = g->resp;
    if (g->err_code) {
        metrics_error(g->srv->metrics, g->err_code);
        emit(g, "error",
             json_pack("{s:s, s:s, s:n}", "code", err_openai_code(g->err_code), "message",
                       g->err_msg[0] ? g->err_msg : err_message(g->err_code), "param"));
    } else {
        const char *status = incomplete(g) ? "incomplete" : "completed";
        long long rt = reasoning_tokens(g, r->reasoning.s, r->reasoning.n);
        char type[32];
        snprintf(type, sizeof type, "response.%s", status);
        emit(g, type,
             json_pack("{s:o}", "response",
                       response_json(g, status, json_copy(r->output), usage_json(g, rt))));
    }
    g->stream_done = 1;
}
