/* anthropic_req.c - a Messages request -> the equivalent chat completion request; errors.
 *
 * What: anthropic_to_chat checks the shape of every field it translates and builds a new chat
 * body; what the chat path validates anyway (sampling ranges, the tool schema, stop string
 * lengths, the model name) is copied and left to reqparse.c. Message mapping:
 *   system (string or text blocks)      -> {"role":"system"} first
 *   user text / string                  -> {"role":"user","content":text}
 *   user tool_result blocks             -> {"role":"tool","tool_call_id","content"}, in order,
 *                                          before the user's text of the same message
 *   assistant text / tool_use blocks    -> {"role":"assistant","content","tool_calls"}
 *   thinking / redacted_thinking blocks -> dropped (the templates drop past reasoning too)
 *   image / document / other blocks     -> ERR_INVAL
 * Threads: pure, any thread. Errors: ERR_INVAL with *param naming the Anthropic field.
 */
#include "anthropic.h"

#include "common/err.h"
#include "common/sbuf.h"
#include "reqparse.h"

#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) != 0) goto out;                                                             \
    } while (0)

static int nomem(char *err) { return err_set(err, ERR_NOMEM, "out of memory"); }

/* Set key on o to v (taking it); ERR_NOMEM when v is NULL or the set fails. */
static int put(json_t *o, const char *key, json_t *v, char *err)
{
    if (!v || json_object_set_new(o, key, v) != 0) return nomem(err);
    return 0;
}

static int push(json_t *a, json_t *v, char *err)
{
    if (!v || json_array_append_new(a, v) != 0) return nomem(err);
    return 0;
}

static const char *block_type(const json_t *b)
{
    return json_string_value(json_object_get(b, "type"));
}

/* Text of content that is a string or an array of text blocks, appended to out. field and
 * what name it for errors. */
static int text_of(const json_t *content, const char *field, const char *what, struct sbuf *out,
                   const char **param, char *err)
{
    *param = field;
    if (json_is_string(content))
        return sbuf_append(out, json_string_value(content), json_string_length(content))
                   ? nomem(err)
                   : 0;
    if (!json_is_array(content))
        return err_set(err, ERR_INVAL, "%s must be a string or an array of text blocks", what);
    if (json_array_size(content) > ANTHROPIC_MAX_BLOCKS)
        return err_set(err, ERR_INVAL, "%s has more than %d blocks", what, ANTHROPIC_MAX_BLOCKS);
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *t = block_type(b);
        json_t *text = json_object_get(b, "text");
        if (!t || strcmp(t, "text") != 0 || !json_is_string(text))
            return err_set(err, ERR_INVAL,
                           "%s must hold only text blocks {\"type\":\"text\",\"text\":...}", what);
        if (sbuf_append(out, json_string_value(text), json_string_length(text))) return nomem(err);
    }
    return 0;
}

/* {"role":role,"content":text[0..n)} */
static json_t *chat_msg(const char *role, const char *text, size_t n)
{
    return json_pack("{s:s, s:s%}", "role", role, "content", text ? text : "", text ? n : 0);
}

/* A tool_result block -> a tool message. is_error marks the text, as the chat path has no
 * such field. */
static int tool_result(const json_t *b, json_t *msgs, const char **param, char *err)
{
    json_t *id = json_object_get(b, "tool_use_id");
    *param = "messages";
    if (!json_is_string(id) || json_string_length(id) == 0)
        return err_set(err, ERR_INVAL, "a tool_result block needs a 'tool_use_id' string");
    json_t *is_err = json_object_get(b, "is_error");
    if (is_err && !json_is_null(is_err) && !json_is_boolean(is_err))
        return err_set(err, ERR_INVAL, "'is_error' of a tool_result block must be a boolean");
    struct sbuf text = {0};
    int rc = 0;
    if (json_is_true(is_err) && sbuf_append(&text, "Error: ", 7)) rc = nomem(err);
    json_t *content = json_object_get(b, "content");
    if (rc == 0 && content && !json_is_null(content))
        rc = text_of(content, "messages", "a tool_result's content", &text, param, err);
    if (rc == 0) {
        json_t *m = chat_msg("tool", text.s, text.n);
        if (m && json_object_set(m, "tool_call_id", id) != 0) {
            json_decref(m);
            m = NULL;
        }
        rc = push(msgs, m, err);
    }
    sbuf_fini(&text);
    return rc;
}

/* A tool_use block -> an OpenAI tool call {"id","type","function":{"name","arguments"}}. */
static int tool_use(const json_t *b, json_t *calls, const char **param, char *err)
{
    json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name");
    json_t *input = json_object_get(b, "input");
    *param = "messages";
    if (!json_is_string(id) || !json_is_string(name) || !json_is_object(input))
        return err_set(err, ERR_INVAL,
                       "a tool_use block needs 'id' and 'name' strings and an 'input' object");
    char *args = json_dumps(input, JSON_COMPACT);
    if (!args) return nomem(err);
    json_t *c = json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function",
                          "name", name, "arguments", args);
    free(args);
    return push(calls, c, err);
}

/* One Anthropic message -> one or more chat messages appended to msgs. */
static int message(const json_t *m, json_t *msgs, const char **param, char *err)
{
    *param = "messages";
    if (!json_is_object(m)) return err_set(err, ERR_INVAL, "each message must be an object");
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
        return err_set(err, ERR_INVAL, "a message's 'role' must be \"user\" or \"assistant\"");
    int user = role[0] == 'u';
    json_t *content = json_object_get(m, "content");
    if (json_is_string(content))
        return push(msgs, chat_msg(role, json_string_value(content), json_string_length(content)),
                    err);
    if (!json_is_array(content))
        return err_set(err, ERR_INVAL, "a message's 'content' must be a string or an array");
    if (json_array_size(content) > ANTHROPIC_MAX_BLOCKS)
        return err_set(err, ERR_INVAL, "a message has more than %d content blocks",
                       ANTHROPIC_MAX_BLOCKS);
    struct sbuf text = {0};
    json_t *calls = json_array();
    int rc = calls ? 0 : nomem(err), n_results = 0;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (rc) break;
        const char *t = json_is_object(b) ? block_type(b) : NULL;
        *param = "messages";
        if (!t) {
            rc = err_set(err, ERR_INVAL, "each content block must be an object with a 'type'");
        } else if (strcmp(t, "text") == 0) {
            json_t *s = json_object_get(b, "text");
            if (!json_is_string(s))
                rc = err_set(err, ERR_INVAL, "a text block needs a 'text' string");
            else if (sbuf_append(&text, json_string_value(s), json_string_length(s)))
                rc = nomem(err);
        } else if (user && strcmp(t, "tool_result") == 0) {
            rc = tool_result(b, msgs, param, err);
            n_results++;
        } else if (!user && strcmp(t, "tool_use") == 0) {
            rc = tool_use(b, calls, param, err);
        } else if (!user && (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0)) {
            continue;
        } else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
            rc = err_set(err, ERR_INVAL, "%s content blocks are not supported (text only)", t);
        } else {
            rc = err_set(err, ERR_INVAL,
                         "content blocks of type \"%.40s\" are not supported in %s "
                         "messages",
                         t, role);
        }
    }
    /* a user message of only tool results adds nothing more */
    if (rc == 0 && (!user || text.n || n_results == 0)) {
        json_t *cm = chat_msg(role, text.s, text.n);
        if (cm && json_array_size(calls) &&
            ((text.n == 0 && json_object_set_new(cm, "content", json_null()) != 0) ||
             json_object_set(cm, "tool_calls", calls) != 0)) {
            json_decref(cm);
            cm = NULL;
        }
        rc = push(msgs, cm, err);
    }
    json_decref(calls);
    sbuf_fini(&text);
    return rc;
}

/* tools: [{name, description?, input_schema}] -> [{"type":"function","function":{...}}] */
static int tools(const json_t *in, json_t *out, const char **param, char *err)
{
    json_t *t = json_object_get(in, "tools");
    if (!t || json_is_null(t)) return 0;
    *param = "tools";
    if (!json_is_array(t)) return err_set(err, ERR_INVAL, "'tools' must be an array");
    if (json_array_size(t) > TOOLPARSE_MAX_TOOLS)
        return err_set(err, ERR_INVAL, "at most %d tools are supported", TOOLPARSE_MAX_TOOLS);
    json_t *arr = json_array();
    if (!arr || json_object_set_new(out, "tools", arr) != 0) return nomem(err);
    size_t i;
    json_t *tool;
    json_array_foreach(t, i, tool)
    {
        const char *type = json_string_value(json_object_get(tool, "type"));
        json_t *name = json_object_get(tool, "name");
        json_t *desc = json_object_get(tool, "description");
        json_t *schema = json_object_get(tool, "input_schema");
        if (!json_is_object(tool) || (type && strcmp(type, "custom") != 0))
            return err_set(err, ERR_INVAL,
                           "only client tools {name, description, input_schema} are supported "
                           "(got type \"%.40s\")",
                           type ? type : "?");
        if (!json_is_string(name) || !json_is_object(schema) ||
            (desc && !json_is_null(desc) && !json_is_string(desc)))
            return err_set(err, ERR_INVAL,
                           "each tool needs a 'name' string and an 'input_schema' "
                           "object ('description' is a string)");
        json_t *fn = json_pack("{s:O, s:O}", "name", name, "parameters", schema);
        if (fn && json_is_string(desc)) json_object_set(fn, "description", desc);
        if (push(arr, json_pack("{s:s, s:o}", "type", "function", "function", fn), err))
            return ERR_NOMEM;
    }
    return 0;
}

/* tool_choice {type: auto|any|tool|none, name?, disable_parallel_tool_use?} */
static int tool_choice(const json_t *in, json_t *out, const char **param, char *err)
{
    json_t *tc = json_object_get(in, "tool_choice");
    if (!tc || json_is_null(tc)) return 0;
    *param = "tool_choice";
    const char *type = json_string_value(json_object_get(tc, "type"));
    if (!json_is_object(tc) || !type)
        return err_set(err, ERR_INVAL, "'tool_choice' must be an object with a 'type'");
    json_t *dp = json_object_get(tc, "disable_parallel_tool_use");
    if (dp && !json_is_null(dp) && !json_is_boolean(dp))
        return err_set(err, ERR_INVAL, "'disable_parallel_tool_use' must be a boolean");
    if (json_is_true(dp) && put(out, "parallel_tool_calls", json_false(), err)) return ERR_NOMEM;
    json_t *v = NULL;
    if (strcmp(type, "auto") == 0) v = json_string("auto");
    else if (strcmp(type, "any") == 0) v = json_string("required");
    else if (strcmp(type, "none") == 0) v = json_string("none");
    else if (strcmp(type, "tool") == 0) {
        json_t *name = json_object_get(tc, "name");
        if (!json_is_string(name))
            return err_set(err, ERR_INVAL, "'tool_choice' of type \"tool\" needs a 'name'");
        v = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", name);
    } else {
        return err_set(err, ERR_INVAL,
                       "'tool_choice.type' must be \"auto\", \"any\", \"tool\" or \"none\"");
    }
    return put(out, "tool_choice", v, err);
}

/* thinking {type: enabled|disabled|adaptive, budget_tokens?} -> the template's switch */
static int thinking(const json_t *in, json_t *out, const char **param, char *err)
{
    json_t *th = json_object_get(in, "thinking");
    if (!th || json_is_null(th)) return 0;
    *param = "thinking";
    const char *type = json_string_value(json_object_get(th, "type"));
    if (!json_is_object(th) || !type ||
        (strcmp(type, "enabled") && strcmp(type, "disabled") && strcmp(type, "adaptive")))
        return err_set(err, ERR_INVAL,
                       "'thinking' must be {\"type\": \"enabled\"|\"disabled\"|\"adaptive\"}");
    int on = strcmp(type, "disabled") != 0;
    return put(out, "chat_template_kwargs",
               json_pack("{s:b, s:b}", "thinking", on, "enable_thinking", on), err);
}

/* Fields copied as they are (their checks are the chat path's). */
static const char *const copied[] = {"model", "temperature", "top_p", "top_k", "stream"};

int anthropic_to_chat(const json_t *in, int count_tokens, json_t **out, const char **param,
                      char *err)
{
    *out = NULL;
    *param = "";
    if (!json_is_object(in))
        return err_set(err, ERR_INVAL, "the request body must be a JSON object");
    json_t *mt = json_object_get(in, "max_tokens");
    if (!count_tokens && (!mt || json_is_null(mt))) {
        *param = "max_tokens";
        return err_set(err, ERR_INVAL, "max_tokens: Field required");
    }
    json_t *msgs_in = json_object_get(in, "messages");
    if (!json_is_array(msgs_in) || json_array_size(msgs_in) == 0) {
        *param = "messages";
        return err_set(err, ERR_INVAL, "'messages' must be a non-empty array");
    }
    if (json_array_size(msgs_in) > ANTHROPIC_MAX_MESSAGES) {
        *param = "messages";
        return err_set(err, ERR_INVAL, "more than %d messages", ANTHROPIC_MAX_MESSAGES);
    }
    json_t *o = json_object(), *msgs = json_array();
    int rc = 0;
    if (!o || !msgs || json_object_set_new(o, "messages", msgs) != 0) {
        json_decref(o);
        return nomem(err);
    }
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        json_t *v = json_object_get(in, copied[i]);
        if (v && json_object_set(o, copied[i], v) != 0) TRY(nomem(err));
    }
    if (!count_tokens) TRY(json_object_set(o, "max_tokens", mt) ? nomem(err) : 0);
    json_t *sys = json_object_get(in, "system");
    if (sys && !json_is_null(sys)) {
        struct sbuf text = {0};
        rc = text_of(sys, "system", "'system'", &text, param, err);
        if (rc == 0) rc = push(msgs, chat_msg("system", text.s, text.n), err);
        sbuf_fini(&text);
        if (rc) goto out;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs_in, i, m) TRY(message(m, msgs, param, err));
    json_t *stops = json_object_get(in, "stop_sequences");
    if (stops && !json_is_null(stops)) {
        *param = "stop_sequences";
        if (!json_is_array(stops))
            TRY(err_set(err, ERR_INVAL, "'stop_sequences' must be an array"));
        if (json_array_size(stops) > API_MAX_STOP)
            TRY(err_set(err, ERR_INVAL, "at most %d stop_sequences are supported", API_MAX_STOP));
        if (json_array_size(stops)) TRY(json_object_set(o, "stop", stops) ? nomem(err) : 0);
    }
    TRY(tools(in, o, param, err));
    TRY(tool_choice(in, o, param, err));
    TRY(thinking(in, o, param, err));
    *param = "";
out:
    if (rc) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

const char *anthropic_error_type(int code)
{
    switch (err_http_status(code)) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return err_http_status(code) < 500 ? "invalid_request_error" : "api_error";
    }
}

json_t *anthropic_error_body(int code, const char *msg)
{
    if (code >= 0) code = ERR_INTERNAL;
    return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                     anthropic_error_type(code), "message", msg && *msg ? msg : err_message(code));
}
