/* test_resp_request.c - the Responses request -> chat body translation (server/resp_request.c):
 * the mapping of every field, refusals naming their field, and hostile shapes giving ERR_INVAL
 * (never a crash): wrong types everywhere, huge or empty arrays, reasoning-only input. The
 * translated bodies also pass the chat validation (reqparse.c). */
#include "../../common/err.h"
#include "../../server/reqparse.h"
#include "../../server/resp.h"
#include "../check.h"

#include <stdlib.h>
#include <string.h>

/* Translate json; returns rc, *chat the body (or NULL). */
static int tr(const char *json, json_t **chat, const char **param)
{
    json_error_t je;
    json_t *req = json_loads(json, JSON_DECODE_ANY, &je);
    if (!req) fprintf(stderr, "bad test JSON: %s\n", json);
    CHECK(req);
    char err[ERR_LEN] = "";
    int rc = resp_translate(req, chat, param, err);
    if (rc) CHECK(err[0]);
    json_decref(req);
    return rc;
}

static void expect_bad(const char *json, const char *param_want)
{
    json_t *chat = NULL;
    const char *param = NULL;
    int rc = tr(json, &chat, &param);
    if (rc != ERR_INVAL) fprintf(stderr, "expected ERR_INVAL for %s\n", json);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK(chat == NULL);
    CHECK_STR(param, param_want);
}

/* Translate, check the chat body equals want (JSON) and passes the chat validation. */
static void expect_chat(const char *json, const char *want)
{
    json_t *chat = NULL;
    const char *param = NULL;
    int rc = tr(json, &chat, &param);
    if (rc) fprintf(stderr, "unexpected error for %s (param %s)\n", json, param);
    CHECK_EQ(rc, 0);
    json_t *w = json_loads(want, 0, NULL);
    CHECK(w);
    if (!json_equal(chat, w)) {
        char *got = json_dumps(chat, JSON_SORT_KEYS);
        fprintf(stderr, "for %s\n got  %s\n want %s\n", json, got, want);
        free(got);
    }
    CHECK(json_equal(chat, w));
    struct api_params p;
    char err[ERR_LEN] = "";
    rc = api_params_parse(chat, 1, &p, &param, err);
    if (rc) fprintf(stderr, "chat validation: %s (%s)\n", err, param);
    CHECK_EQ(rc, 0);
    api_params_fini(&p);
    json_decref(w);
    json_decref(chat);
}

int main(void)
{
    /* plain string input, instructions, copied and renamed fields */
    expect_chat("{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be brief\","
                "\"max_output_tokens\":5,\"temperature\":0.5,\"top_p\":0.9,\"stream\":true,"
                "\"seed\":3,\"store\":false,\"metadata\":{\"a\":\"b\"},\"user\":\"u\","
                "\"reasoning\":{\"effort\":\"low\"},\"truncation\":\"disabled\"}",
                "{\"model\":\"m\",\"temperature\":0.5,\"top_p\":0.9,\"stream\":true,\"seed\":3,"
                "\"max_tokens\":5,\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                "{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* null means absent */
    expect_chat("{\"input\":\"hi\",\"instructions\":null,\"previous_response_id\":null,"
                "\"tools\":null,\"text\":null,\"max_output_tokens\":null}",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* items: parts, roles, a call joined to the assistant message, its output, reasoning dropped */
    expect_chat(
        "{\"input\":[{\"role\":\"developer\",\"content\":\"d\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
        "\"q\"}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs\",\"summary\":[]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"a\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"g\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"r1\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":"
        "\"input_text\",\"text\":\"r2\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c3\",\"name\":\"f\",\"arguments\":\"{}\"}]}",
        "{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}],\"tool_calls\":["
        "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
        "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}"
        ","
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"r2\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c3\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}");
    /* tools, tool_choice, parallel_tool_calls, text.format */
    expect_chat(
        "{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"description\":"
        "\"d\",\"parameters\":{\"type\":\"object\"},\"strict\":true}],\"tool_choice\":{"
        "\"type\":\"function\",\"name\":\"f\"},\"parallel_tool_calls\":false}",
        "{\"parallel_tool_calls\":false,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":"
        "\"d\",\"parameters\":{\"type\":\"object\"},\"strict\":true}}],\"tool_choice\":{"
        "\"type\":\"function\",\"function\":{\"name\":\"f\"}}}");
    expect_chat("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],"
                "\"tool_choice\":\"required\"}",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
                "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\"}");
    expect_chat("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"low\"}}",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    expect_chat("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{"
                "\"type\":\"json_object\"}}");
    expect_chat("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\","
                "\"schema\":{\"type\":\"object\"},\"strict\":true}}}",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{"
                "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":{\"type\":"
                "\"object\"},\"strict\":true}}}");

    /* refused by name */
    expect_bad("{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}", "previous_response_id");
    expect_bad("{\"input\":\"x\",\"conversation\":\"conv_1\"}", "conversation");
    expect_bad("{\"input\":\"x\",\"background\":true}", "background");
    expect_bad("{\"input\":\"x\",\"prompt\":{\"id\":\"p\"}}", "prompt");
    expect_bad("{\"input\":\"x\",\"store\":\"yes\"}", "store");
    expect_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools");
    expect_bad("{\"input\":\"x\",\"tools\":[{\"name\":\"f\"}]}", "tools");
    expect_bad("{\"input\":\"x\",\"tools\":{}}", "tools");
    expect_bad("{\"input\":\"x\",\"tools\":[5]}", "tools");
    expect_bad("{\"input\":\"x\",\"tool_choice\":{\"type\":\"web_search\"}}", "tool_choice");
    expect_bad("{\"input\":\"x\",\"tool_choice\":{\"type\":\"function\"}}", "tool_choice");
    expect_bad("{\"input\":\"x\",\"tool_choice\":[]}", "tool_choice");
    expect_bad("{\"input\":\"x\",\"text\":5}", "text");
    expect_bad("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "text.format");
    expect_bad("{\"input\":\"x\",\"text\":{\"format\":\"json\"}}", "text.format");
    expect_bad("{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens");
    expect_bad("{\"input\":\"x\",\"max_output_tokens\":\"5\"}", "max_output_tokens");
    expect_bad("{\"input\":\"x\",\"instructions\":[\"a\"]}", "instructions");

    /* hostile input shapes */
    expect_bad("[]", "");
    expect_bad("\"hi\"", "");
    expect_bad("null", "");
    expect_bad("{}", "input");
    expect_bad("{\"input\":null}", "input");
    expect_bad("{\"input\":5}", "input");
    expect_bad("{\"input\":{}}", "input");
    expect_bad("{\"input\":[]}", "input");
    expect_bad("{\"input\":[5]}", "input");
    expect_bad("{\"input\":[[]]}", "input");
    expect_bad("{\"input\":[{}]}", "input");
    expect_bad("{\"input\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "input");
    expect_bad("{\"input\":[{\"role\":5,\"content\":\"x\"}]}", "input");
    expect_bad("{\"input\":[{\"role\":\"user\"}]}", "input");
    expect_bad("{\"input\":[{\"role\":\"user\",\"content\":5}]}", "input");
    expect_bad("{\"input\":[{\"role\":\"user\",\"content\":[5]}]}", "input");
    expect_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\"}]}]}",
               "input");
    expect_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\","
               "\"image_url\":\"x\"}]}]}",
               "input");
    expect_bad("{\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\"}]}",
               "input");
    expect_bad("{\"input\":[{\"type\":\"function_call\",\"call_id\":1,\"name\":\"f\","
               "\"arguments\":\"{}\"}]}",
               "input");
    expect_bad("{\"input\":[{\"type\":\"function_call_output\",\"output\":\"x\"}]}", "input");
    expect_bad("{\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\"}]}", "input");
    expect_bad("{\"input\":[{\"type\":\"item_reference\",\"id\":\"x\"}]}", "input");
    expect_bad("{\"input\":[{\"type\":5}]}", "input");
    expect_bad("{\"input\":[{\"type\":\"reasoning\",\"summary\":[]}]}", "input");

    /* too many items or parts */
    {
        json_t *items = json_array(), *parts = json_array();
        for (int i = 0; i <= RESP_MAX_ITEMS; i++)
            json_array_append_new(items, json_pack("{s:s,s:s}", "role", "user", "content", "x"));
        for (int i = 0; i <= RESP_MAX_PARTS; i++)
            json_array_append_new(parts, json_pack("{s:s,s:s}", "type", "input_text", "text", "x"));
        json_t *req = json_pack("{s:o}", "input", items);
        json_t *chat = NULL;
        const char *param = NULL;
        char err[ERR_LEN];
        CHECK_EQ(resp_translate(req, &chat, &param, err), ERR_INVAL);
        CHECK_STR(param, "input");
        json_decref(req);
        req = json_pack("{s:[{s:s,s:o}]}", "input", "role", "user", "content", parts);
        CHECK_EQ(resp_translate(req, &chat, &param, err), ERR_INVAL);
        CHECK_STR(param, "input");
        json_decref(req);
    }

    /* the chat validation's param names, in Responses terms */
    CHECK_STR(resp_param_name("max_tokens"), "max_output_tokens");
    CHECK_STR(resp_param_name("messages"), "input");
    CHECK_STR(resp_param_name("response_format"), "text.format");
    CHECK_STR(resp_param_name("temperature"), "temperature");
    CHECK(resp_param_name(NULL) == NULL);

    /* resp_create keeps the request and the translation; resp_free releases both */
    {
        json_t *req = json_pack("{s:s}", "input", "hi");
        struct resp *r = NULL;
        const char *param = NULL;
        char err[ERR_LEN];
        CHECK_EQ(resp_create(req, &r, &param, err), 0);
        CHECK(r && r->req == req && json_is_array(json_object_get(r->chat, "messages")));
        resp_free(r);
        json_decref(req);
        req = json_object();
        CHECK_EQ(resp_create(req, &r, &param, err), ERR_INVAL);
        CHECK(r == NULL);
        json_decref(req);
    }
    return 0;
}
