/* resp_request.c - a Responses API request -> a chat completions body (resp.h).
 *
 * What: checks the shape of every Responses field tandem reads and builds the equivalent chat
 * body; the chat validation (reqparse.c) then checks ranges and tool schemas as for
 * /v1/chat/completions. Input items: messages (roles user/system/developer/assistant, content a
 * string or input_text/output_text parts), function_call items (joined as tool_calls of one
 * assistant message), function_call_output items (tool messages); reasoning items are dropped.
 * Anything stateful or not implemented (previous_response_id, conversation, background, hosted
 * tools, images, files) is refused with ERR_INVAL naming the field.
 * Threads: pure functions. Ownership: *chat is a new reference for the caller.
 */
#include "resp.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

/* "key" of the request when present and not null, else NULL */
static json_t *field(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static int bad(char *err, const char **param, const char *name, const char *msg)
{
    *param = name;
    return err_set(err, ERR_INVAL, "%s", msg);
}

/* Content parts [{type: input_text|output_text|text, text}] -> chat text parts; a string stays
 * a string. */
static int content_parts(const json_t *c, size_t i, json_t **out, const char **param, char *err)
{
    *param = "input";
    if (json_is_string(c)) {
        *out = json_incref((json_t *)c);
        return 0;
    }
    if (!json_is_array(c) || json_array_size(c) > RESP_MAX_PARTS)
        return err_set(err, ERR_INVAL,
                       "'input[%zu].content' must be a string or an array of at most %d parts", i,
                       RESP_MAX_PARTS);
    json_t *parts = json_array();
    if (!parts) return ERR_NOMEM;
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *text = json_object_get(part, "text");
        int known = type && (strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0 ||
                             strcmp(type, "text") == 0);
        if (!known || !json_is_string(text)) {
            json_decref(parts);
            if (known)
                return err_set(err, ERR_INVAL, "'input[%zu].content[%zu].text' must be a string", i,
                               k);
            return err_set(err, ERR_INVAL,
                           "'input[%zu].content[%zu].type' \"%.40s\" is not supported (only "
                           "input_text and output_text)",
                           i, k, type ? type : "(missing)");
        }
        if (json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", text))) {
            json_decref(parts);
            return ERR_NOMEM;
        }
    }
    *out = parts;
    return 0;
}

/* A message item -> a chat message appended to msgs. */
static int message_item(const json_t *it, size_t i, json_t *msgs, const char **param, char *err)
{
    *param = "input";
    const char *role = json_string_value(json_object_get(it, "role"));
    if (!role || (strcmp(role, "user") && strcmp(role, "system") && strcmp(role, "developer") &&
                  strcmp(role, "assistant")))
        return err_set(err, ERR_INVAL,
                       "'input[%zu].role' must be one of user, system, developer, assistant", i);
    json_t *content = NULL;
    int rc = content_parts(json_object_get(it, "content"), i, &content, param, err);
    if (rc) return rc;
    json_t *m = json_pack("{s:s,s:o}", "role", role, "content", content);
    return m && json_array_append_new(msgs, m) == 0 ? 0 : ERR_NOMEM;
}

/* A function_call item: a tool call of the assistant message at the end of msgs (one is added
 * when the last message is not an assistant message that may take calls). */
static int call_item(const json_t *it, size_t i, json_t *msgs, const char **param, char *err)
{
    *param = "input";
    json_t *call_id = json_object_get(it, "call_id"), *name = json_object_get(it, "name");
    json_t *args = json_object_get(it, "arguments");
    if (!json_is_string(call_id) || !json_is_string(name) || !json_is_string(args))
        return err_set(err, ERR_INVAL,
                       "'input[%zu]': a function_call item needs string 'call_id', 'name' and "
                       "'arguments'",
                       i);
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *lrole = json_string_value(json_object_get(last, "role"));
    json_t *calls = json_object_get(last, "tool_calls");
    if (!lrole || strcmp(lrole, "assistant") != 0) {
        last = json_pack("{s:s,s:n,s:[]}", "role", "assistant", "content", "tool_calls");
        if (!last || json_array_append_new(msgs, last)) return ERR_NOMEM;
        calls = json_object_get(last, "tool_calls");
    } else if (!calls) {
        calls = json_array();
        if (!calls || json_object_set_new(last, "tool_calls", calls)) return ERR_NOMEM;
    }
    json_t *c = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", call_id, "type", "function", "function",
                          "name", name, "arguments", args);
    return c && json_array_append_new(calls, c) == 0 ? 0 : ERR_NOMEM;
}

/* A function_call_output item -> a tool message. output: a string or input_text parts. */
static int output_item(const json_t *it, size_t i, json_t *msgs, const char **param, char *err)
{
    *param = "input";
    json_t *call_id = json_object_get(it, "call_id");
    if (!json_is_string(call_id))
        return err_set(err, ERR_INVAL, "'input[%zu].call_id' must be a string", i);
    json_t *content = NULL;
    int rc = content_parts(json_object_get(it, "output"), i, &content, param, err);
    if (rc) return rc;
    json_t *m =
        json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", call_id, "content", content);
    return m && json_array_append_new(msgs, m) == 0 ? 0 : ERR_NOMEM;
}

/* instructions + input -> "messages" of the chat body */
static int messages(const json_t *req, json_t *chat, const char **param, char *err)
{
    json_t *msgs = json_array();
    if (!msgs || json_object_set_new(chat, "messages", msgs)) return ERR_NOMEM;
    json_t *ins = field(req, "instructions");
    if (ins && !json_is_string(ins))
        return bad(err, param, "instructions", "'instructions' must be a string");
    if (ins &&
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins)))
        return ERR_NOMEM;
    json_t *in = field(req, "input");
    if (!in) return bad(err, param, "input", "'input' is required");
    if (json_is_string(in))
        return json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", in))
                   ? ERR_NOMEM
                   : 0;
    if (!json_is_array(in) || json_array_size(in) == 0 || json_array_size(in) > RESP_MAX_ITEMS)
        return bad(err, param, "input", "'input' must be a string or a non-empty array of items");
    size_t i;
    json_t *it;
    json_array_foreach(in, i, it)
    {
        *param = "input";
        if (!json_is_object(it))
            return err_set(err, ERR_INVAL, "'input[%zu]' must be an object", i);
        const char *type = json_string_value(json_object_get(it, "type"));
        int rc;
        if (!type || strcmp(type, "message") == 0) rc = message_item(it, i, msgs, param, err);
        else if (strcmp(type, "function_call") == 0) rc = call_item(it, i, msgs, param, err);
        else if (strcmp(type, "function_call_output") == 0)
            rc = output_item(it, i, msgs, param, err);
        else if (strcmp(type, "reasoning") == 0) rc = 0; /* not shown to the model again */
        else
            rc = err_set(err, ERR_INVAL,
                         "'input[%zu].type' \"%.40s\" is not supported (message, function_call, "
                         "function_call_output, reasoning)",
                         i, type);
        if (rc) return rc;
    }
    if (json_array_size(msgs) == 0)
        return bad(err, param, "input", "'input' has no message (reasoning items only)");
    return 0;
}

/* tools: [{type:"function", name, description?, parameters?, strict?}] -> chat tools */
static int tools(const json_t *req, json_t *chat, const char **param, char *err)
{
    json_t *in = field(req, "tools");
    if (!in) return 0;
    *param = "tools";
    if (!json_is_array(in)) return err_set(err, ERR_INVAL, "'tools' must be an array");
    json_t *out = json_array();
    if (!out || json_object_set_new(chat, "tools", out)) return ERR_NOMEM;
    size_t i;
    json_t *t;
    json_array_foreach(in, i, t)
    {
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!type || strcmp(type, "function") != 0)
            return err_set(err, ERR_INVAL,
                           "'tools[%zu].type' \"%.40s\" is not supported: only \"function\" tools",
                           i, type ? type : "(missing)");
        json_t *fn = json_object();
        if (!fn ||
            json_array_append_new(out, json_pack("{s:s,s:o}", "type", "function", "function", fn)))
            return ERR_NOMEM;
        static const char *keys[] = {"name", "description", "parameters", "strict"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            json_t *v = field(t, keys[k]);
            if (v && json_object_set(fn, keys[k], v)) return ERR_NOMEM;
        }
    }
    return 0;
}

/* tool_choice: the strings as they are, {type:"function", name} -> the chat object */
static int tool_choice(const json_t *req, json_t *chat, const char **param, char *err)
{
    json_t *tc = field(req, "tool_choice");
    if (!tc) return 0;
    if (json_is_string(tc)) return json_object_set(chat, "tool_choice", tc) ? ERR_NOMEM : 0;
    const char *type = json_string_value(json_object_get(tc, "type"));
    json_t *name = json_object_get(tc, "name");
    if (!type || strcmp(type, "function") != 0 || !json_is_string(name))
        return bad(err, param, "tool_choice",
                   "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": "
                   "\"function\", \"name\": ...}");
    json_t *o = json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name", name);
    return o && json_object_set_new(chat, "tool_choice", o) == 0 ? 0 : ERR_NOMEM;
}

/* text.format -> response_format */
static int text_format(const json_t *req, json_t *chat, const char **param, char *err)
{
    json_t *text = field(req, "text");
    if (!text) return 0;
    *param = "text.format";
    if (!json_is_object(text)) return bad(err, param, "text", "'text' must be an object");
    json_t *f = field(text, "format");
    if (!f) return 0;
    const char *type = json_string_value(json_object_get(f, "type"));
    if (!type)
        return err_set(err, ERR_INVAL, "'text.format' must be an object with a string 'type'");
    json_t *rf = NULL;
    if (strcmp(type, "text") == 0) return 0;
    if (strcmp(type, "json_object") == 0) {
        rf = json_pack("{s:s}", "type", "json_object");
    } else if (strcmp(type, "json_schema") == 0) {
        json_t *js = json_object();
        static const char *keys[] = {"name", "description", "schema", "strict"};
        for (size_t k = 0; js && k < sizeof keys / sizeof keys[0]; k++) {
            json_t *v = field(f, keys[k]);
            if (v && json_object_set(js, keys[k], v)) {
                json_decref(js);
                return ERR_NOMEM;
            }
        }
        rf = js ? json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js) : NULL;
    } else {
        return err_set(err, ERR_INVAL,
                       "'text.format.type' must be \"text\", \"json_object\" or \"json_schema\"");
    }
    return rf && json_object_set_new(chat, "response_format", rf) == 0 ? 0 : ERR_NOMEM;
}

/* Fields that need state or features tandem does not have: refused by name. */
static int refused(const json_t *req, const char **param, char *err)
{
    if (field(req, "previous_response_id"))
        return bad(err, param, "previous_response_id",
                   "'previous_response_id' is not supported: tandem stores no responses; send the "
                   "full conversation in 'input'");
    if (field(req, "conversation"))
        return bad(err, param, "conversation",
                   "'conversation' is not supported: tandem stores no conversations; send the "
                   "full conversation in 'input'");
    if (json_is_true(json_object_get(req, "background")))
        return bad(err, param, "background", "'background' responses are not supported");
    if (field(req, "prompt"))
        return bad(err, param, "prompt", "'prompt' (stored prompt templates) is not supported");
    json_t *st = json_object_get(req, "store");
    if (st && !json_is_boolean(st) && !json_is_null(st))
        return bad(err, param, "store", "'store' must be a boolean");
    return 0;
}

/* Fields copied as they are; reqparse.c checks their types and ranges. */
static int copy_fields(const json_t *req, json_t *chat, const char **param, char *err)
{
    static const char *same[] = {"model",  "temperature",         "top_p",
                                 "stream", "parallel_tool_calls", "seed"};
    for (size_t k = 0; k < sizeof same / sizeof same[0]; k++) {
        json_t *v = field(req, same[k]);
        if (v && json_object_set(chat, same[k], v)) return ERR_NOMEM;
    }
    json_t *mot = field(req, "max_output_tokens");
    if (mot && (!json_is_integer(mot) || json_integer_value(mot) < 1))
        return bad(err, param, "max_output_tokens",
                   "'max_output_tokens' must be a positive integer");
    if (mot && json_object_set(chat, "max_tokens", mot)) return ERR_NOMEM;
    return 0;
}

int resp_translate(const json_t *req, json_t **chat, const char **param, char *err)
{
    *chat = NULL;
    *param = NULL;
    if (!json_is_object(req)) return bad(err, param, "", "the request body must be a JSON object");
    json_t *c = json_object();
    if (!c) return ERR_NOMEM;
    int rc = refused(req, param, err);
    if (rc == 0) rc = copy_fields(req, c, param, err);
    if (rc == 0) rc = messages(req, c, param, err);
    if (rc == 0) rc = tools(req, c, param, err);
    if (rc == 0) rc = tool_choice(req, c, param, err);
    if (rc == 0) rc = text_format(req, c, param, err);
    if (rc) {
        json_decref(c);
        if (rc == ERR_NOMEM) {
            *param = NULL;
            err_set(err, ERR_NOMEM, "out of memory");
        }
        return rc;
    }
    *chat = c;
    return 0;
}

const char *resp_param_name(const char *chat_param)
{
    static const char *map[][2] = {{"messages", "input"},
                                   {"max_tokens", "max_output_tokens"},
                                   {"response_format", "text.format"}};
    for (size_t i = 0; chat_param && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(chat_param, map[i][0]) == 0) return map[i][1];
    return chat_param;
}

int resp_create(const json_t *req, struct resp **out, const char **param, char *err)
{
    *out = NULL;
    struct resp *r = calloc(1, sizeof *r);
    if (!r) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = resp_translate(req, &r->chat, param, err);
    r->req = json_incref((json_t *)req);
    r->output = json_array();
    if (rc == 0 && !r->output) rc = err_set(err, ERR_NOMEM, "out of memory");
    if (rc) {
        resp_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void resp_free(struct resp *r)
{
    if (!r) return;
    json_decref(r->req);
    json_decref(r->chat);
    json_decref(r->output);
    json_decref(r->call);
    sbuf_fini(&r->open_text);
    sbuf_fini(&r->reasoning);
    free(r);
}
