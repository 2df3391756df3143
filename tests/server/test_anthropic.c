/* test_anthropic.c - the Messages request -> chat request translation (anthropic_req.c): the
 * mapping of system, blocks, tool_use / tool_result, tools, tool_choice, stop_sequences and
 * thinking; the result passes the chat path's own checks (api_params_parse); hostile shapes
 * give ERR_INVAL naming the field; the error body and type table. */
#include "../../common/err.h"
#include "../../server/anthropic.h"
#include "../../server/reqparse.h"
#include "../check.h"

#include <string.h>

/* Translate JSON text; returns the code, *out the chat request (or NULL). */
static int tr(const char *text, int count_tokens, json_t **out, const char **param, char *err)
{
    json_error_t je;
    json_t *in = json_loads(text, 0, &je);
    CHECK(in != NULL);
    int rc = anthropic_to_chat(in, count_tokens, out, param, err);
    json_decref(in);
    if (rc) CHECK(*out == NULL);
    return rc;
}

/* The translation fails with ERR_INVAL naming `field`, and err containing `what`. */
static void bad(const char *text, const char *field, const char *what)
{
    json_t *out = NULL;
    const char *param = NULL;
    char err[ERR_LEN] = "";
    int rc = tr(text, 0, &out, &param, err);
    if (rc != ERR_INVAL) fprintf(stderr, "accepted: %s\n", text);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_STR(param, field);
    CHECK_CONTAINS(err, what);
}

static const char *role_of(json_t *msgs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(msgs, i), "role"));
}

static const char *content_of(json_t *msgs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(msgs, i), "content"));
}

static void test_round_trip(void)
{
    const char *req =
        "{\"model\":\"m\",\"max_tokens\":50,\"temperature\":0.5,\"top_k\":3,\"stream\":true,"
        "\"metadata\":{\"user_id\":\"u\"},"
        "\"system\":[{\"type\":\"text\",\"text\":\"Be \"},{\"type\":\"text\",\"text\":\"brief\"}],"
        "\"stop_sequences\":[\"END\"],"
        "\"tools\":[{\"name\":\"get_weather\",\"description\":\"d\",\"input_schema\":"
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}],"
        "\"tool_choice\":{\"type\":\"tool\",\"name\":\"get_weather\","
        "\"disable_parallel_tool_use\":true},"
        "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024},"
        "\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\","
        "\"signature\":\"\"},{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"get_weather\","
        "\"input\":{\"city\":\"Paris\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\","
        "\"content\":[{\"type\":\"text\",\"text\":\"sunny\"}]},{\"type\":\"tool_result\","
        "\"tool_use_id\":\"t1\",\"is_error\":true,\"content\":\"boom\"},"
        "{\"type\":\"text\",\"text\":\"thanks\"}]}]}";
    json_t *out = NULL;
    const char *param = NULL;
    char err[ERR_LEN] = "";
    CHECK_EQ(tr(req, 0, &out, &param, err), 0);
    json_t *msgs = json_object_get(out, "messages");
    CHECK_EQ(json_array_size(msgs), 6);
    CHECK_STR(role_of(msgs, 0), "system");
    CHECK_STR(content_of(msgs, 0), "Be brief");
    CHECK_STR(role_of(msgs, 1), "user");
    CHECK_STR(role_of(msgs, 2), "assistant");
    CHECK(json_is_null(json_object_get(json_array_get(msgs, 2), "content")));
    json_t *call = json_array_get(json_object_get(json_array_get(msgs, 2), "tool_calls"), 0);
    CHECK_STR(json_string_value(json_object_get(call, "id")), "t1");
    CHECK_STR(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")),
              "{\"city\":\"Paris\"}");
    CHECK_STR(role_of(msgs, 3), "tool");
    CHECK_STR(content_of(msgs, 3), "sunny");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 3), "tool_call_id")), "t1");
    CHECK_STR(content_of(msgs, 4), "Error: boom");
    CHECK_STR(role_of(msgs, 5), "user");
    CHECK_STR(content_of(msgs, 5), "thanks");
    CHECK(json_object_get(out, "metadata") == NULL);
    CHECK(json_is_false(json_object_get(out, "parallel_tool_calls")));
    CHECK(json_is_true(json_object_get(json_object_get(out, "chat_template_kwargs"), "thinking")));
    /* the chat path accepts it, with everything mapped */
    struct api_params p;
    CHECK_EQ(api_params_parse(out, 1, &p, &param, err), 0);
    CHECK_EQ(p.max_tokens, 50);
    CHECK_EQ(p.stream, 1);
    CHECK_EQ(p.samp.top_k, 3);
    CHECK_EQ(p.n_stop, 1);
    CHECK_STR(p.stop[0], "END");
    CHECK_EQ(p.tools.n_tools, 1);
    CHECK_EQ(p.tools.choice, TOOLPARSE_CHOICE_NAMED);
    CHECK_STR(p.tools.choice_name, "get_weather");
    api_params_fini(&p);
    json_decref(out);

    /* a user message of tool results only adds no user message; tool_choice any -> required */
    CHECK_EQ(
        tr("{\"max_tokens\":5,\"tools\":[{\"name\":\"f\",\"input_schema\":{}}],"
           "\"tool_choice\":{\"type\":\"any\"},\"messages\":["
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"x\"},"
           "{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}]},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\"}]}]}",
           0, &out, &param, err),
        0);
    msgs = json_object_get(out, "messages");
    CHECK_EQ(json_array_size(msgs), 2);
    CHECK_STR(content_of(msgs, 0), "x");
    CHECK_STR(role_of(msgs, 1), "tool");
    CHECK_STR(content_of(msgs, 1), "");
    CHECK_STR(json_string_value(json_object_get(out, "tool_choice")), "required");
    json_decref(out);

    /* count_tokens needs no max_tokens; thinking disabled turns the template's switch off */
    CHECK_EQ(tr("{\"thinking\":{\"type\":\"disabled\"},\"messages\":[{\"role\":\"user\","
                "\"content\":[]}]}",
                1, &out, &param, err),
             0);
    CHECK(json_object_get(out, "max_tokens") == NULL);
    CHECK(json_is_false(json_object_get(json_object_get(out, "chat_template_kwargs"), "thinking")));
    json_decref(out);
}

static void test_hostile(void)
{
    bad("[]", "", "JSON object");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens", "max_tokens");
    bad("{\"max_tokens\":1}", "messages", "non-empty array");
    bad("{\"max_tokens\":1,\"messages\":[]}", "messages", "non-empty array");
    bad("{\"max_tokens\":1,\"messages\":{}}", "messages", "non-empty array");
    bad("{\"max_tokens\":1,\"messages\":[1]}", "messages", "object");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages",
        "role");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":7,\"content\":\"x\"}]}", "messages", "role");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\"}]}", "messages", "content");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages",
        "content");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[5]}]}", "messages",
        "type");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":1}]}]}",
        "messages", "type");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
        "messages", "text");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
        "\"source\":{}}]}]}",
        "messages", "image content blocks are not supported");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_use\","
        "\"id\":\"a\",\"name\":\"f\",\"input\":{}}]}]}",
        "messages", "not supported in user");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"a\"}]}]}",
        "messages", "not supported in assistant");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":[]}]}]}",
        "messages", "'input' object");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"tool_result\"}]}]}",
        "messages", "tool_use_id");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"a\",\"is_error\":1}]}]}",
        "messages", "is_error");
    bad("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"a\",\"content\":[{\"type\":\"image\"}]}]}]}",
        "messages", "tool_result's content must hold only text blocks");
    bad("{\"max_tokens\":1,\"system\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "system", "string or an array");
    bad("{\"max_tokens\":1,\"system\":[{\"type\":\"image\"}],\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}",
        "system", "text");
    bad("{\"max_tokens\":1,\"stop_sequences\":\"x\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}",
        "stop_sequences", "array");
    bad("{\"max_tokens\":1,\"stop_sequences\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"messages\":"
        "[{\"role\":\"user\",\"content\":\"x\"}]}",
        "stop_sequences", "at most");
    bad("{\"max_tokens\":1,\"tools\":{},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "tools", "array");
    bad("{\"max_tokens\":1,\"tools\":[{\"type\":\"bash_20250124\",\"name\":\"bash\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "tools", "client tools");
    bad("{\"max_tokens\":1,\"tools\":[{\"name\":\"f\"}],\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}",
        "tools", "input_schema");
    bad("{\"max_tokens\":1,\"tools\":[5],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "tools", "client tools");
    bad("{\"max_tokens\":1,\"tool_choice\":\"auto\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}",
        "tool_choice", "object");
    bad("{\"max_tokens\":1,\"tool_choice\":{\"type\":\"maybe\"},\"messages\":[{\"role\":"
        "\"user\",\"content\":\"x\"}]}",
        "tool_choice", "must be");
    bad("{\"max_tokens\":1,\"tool_choice\":{\"type\":\"tool\"},\"messages\":[{\"role\":"
        "\"user\",\"content\":\"x\"}]}",
        "tool_choice", "name");
    bad("{\"max_tokens\":1,\"thinking\":true,\"messages\":[{\"role\":\"user\",\"content\":"
        "\"x\"}]}",
        "thinking", "type");

    /* too many blocks: refused before anything large is built */
    struct sbuf s = {0};
    const char *head = "{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[";
    CHECK_EQ(sbuf_append(&s, head, strlen(head)), 0);
    const char *block = ",{\"type\":\"text\",\"text\":\"a\"}";
    for (int i = 0; i <= ANTHROPIC_MAX_BLOCKS; i++)
        CHECK_EQ(sbuf_append(&s, block + (i == 0), strlen(block + (i == 0))), 0);
    CHECK_EQ(sbuf_append(&s, "]}]}", 4), 0);
    bad(s.s, "messages", "content blocks");
    sbuf_fini(&s);
}

static void test_errors(void)
{
    CHECK_STR(anthropic_error_type(ERR_INVAL), "invalid_request_error");
    CHECK_STR(anthropic_error_type(ERR_CTX_OVERFLOW), "invalid_request_error");
    CHECK_STR(anthropic_error_type(ERR_AUTH), "authentication_error");
    CHECK_STR(anthropic_error_type(ERR_MODEL_NOT_FOUND), "not_found_error");
    CHECK_STR(anthropic_error_type(ERR_QUEUE_FULL), "rate_limit_error");
    CHECK_STR(anthropic_error_type(ERR_UNAVAILABLE), "overloaded_error");
    CHECK_STR(anthropic_error_type(ERR_NOMEM), "api_error");
    CHECK_STR(anthropic_error_type(ERR_NOT_IMPLEMENTED), "api_error");
    json_t *e = anthropic_error_body(ERR_AUTH, NULL);
    CHECK_STR(json_string_value(json_object_get(e, "type")), "error");
    json_t *inner = json_object_get(e, "error");
    CHECK_STR(json_string_value(json_object_get(inner, "type")), "authentication_error");
    CHECK_STR(json_string_value(json_object_get(inner, "message")), err_message(ERR_AUTH));
    json_decref(e);
}

int main(void)
{
    test_round_trip();
    test_hostile();
    test_errors();
    return 0;
}
