/* test_jsonschema.c - schema compilation: supported shapes compile, unsupported keywords and bad
 * schemas fail with ERR_INVAL naming the keyword and where; response_format parsing; $ref; the
 * forced tool-call grammar; limits (depth, size). */
#include "../../common/err.h"
#include "../../engine/text/jsonschema.h"
#include "../check.h"

#include <stdint.h>

/* random junk schemas: keywords with random values of random types */
static uint64_t rs;
static int rnd(int n)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((rs >> 33) % (uint64_t)n);
}

static json_t *junk(int depth)
{
    static const char *const kw[] = {"type",  "properties", "required", "additionalProperties",
                                     "items", "minItems",   "maxItems", "enum",
                                     "const", "anyOf",      "allOf",    "$ref",
                                     "$defs", "title",      "pattern",  "oneOf"};
    static const char *const strs[] = {"object", "array",  "string",  "integer",
                                       "null",   "number", "boolean", "#/$defs/a",
                                       "#",      "a",      ""};
    switch (depth > 3 ? rnd(5) : rnd(9)) {
    case 0: return json_integer(rnd(7) - 2);
    case 1: return json_string(strs[rnd(11)]);
    case 2: return json_boolean(rnd(2));
    case 3: return json_null();
    case 4: return json_real(0.5);
    case 5:
    case 6: {
        json_t *a = json_array();
        for (int i = rnd(4); i > 0; i--) json_array_append_new(a, junk(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = rnd(5); i > 0; i--)
            json_object_set_new(o, rnd(4) ? kw[rnd(16)] : strs[rnd(11)], junk(depth + 1));
        return o;
    }
    }
}

static int compile_js(const char *js, unsigned flags, char *err)
{
    json_error_t je;
    json_t *s = json_loads(js, JSON_DECODE_ANY, &je);
    if (!s) {
        fprintf(stderr, "bad test JSON %s: %s\n", js, je.text);
        exit(1);
    }
    struct jsonschema_grammar *g = NULL;
    err[0] = 0;
    int rc = jsonschema_compile(s, flags, &g, err);
    CHECK(rc == 0 ? g != NULL : 1);
    jsonschema_unref(g);
    json_decref(s);
    return rc;
}

static void ok(const char *js)
{
    char err[ERR_LEN];
    int rc = compile_js(js, 0, err);
    if (rc) fprintf(stderr, "%s: %s\n", js, err);
    CHECK_EQ(rc, 0);
}

static void bad(const char *js, const char *needle)
{
    char err[ERR_LEN];
    CHECK_EQ(compile_js(js, 0, err), ERR_INVAL);
    CHECK_CONTAINS(err, needle);
}

static int response_format(const char *body, struct jsonschema_grammar **g, const char **param,
                           char *err)
{
    json_t *root = json_loads(body, 0, NULL);
    CHECK(root != NULL);
    *param = "";
    int rc = jsonschema_response_format(root, g, param, err);
    json_decref(root);
    return rc;
}

int main(void)
{
    ok("true");
    ok("{}");
    ok("{\"type\":\"object\"}");
    ok("{\"type\":[\"string\",\"null\"],\"description\":\"x\",\"title\":\"t\"}");
    ok("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":"
       "\"integer\"},\"minItems\":1,\"maxItems\":3}},\"required\":[\"a\"],"
       "\"additionalProperties\":false}");
    ok("{\"enum\":[\"a\",1,null,{\"x\":[1]}]}");
    ok("{\"const\":\"fixed\"}");
    ok("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"number\"}],\"default\":1}");
    ok("{\"allOf\":[{\"type\":\"string\"}]}");
    ok("{\"$defs\":{\"P\":{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"string\"}}}},"
       "\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/P\"}}");
    ok("{\"definitions\":{\"P\":{\"type\":\"integer\"}},\"properties\":{\"p\":{\"$ref\":"
       "\"#/definitions/P\"}}}");
    ok("{\"type\":\"object\",\"required\":[\"x\"]}"); /* required, undeclared: any value */
    ok("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"number\"}}");

    bad("{\"type\":\"string\",\"pattern\":\"^a\"}", "'pattern'");
    bad("{\"type\":\"string\",\"format\":\"email\"}", "'format'");
    bad("{\"type\":\"number\",\"minimum\":0}", "'minimum'");
    bad("{\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":4,\"maxLength\":3}}}",
        "minLength > maxLength at #/properties/a");
    bad("{\"type\":\"string\",\"maxLength\":-1}", "'maxLength' must be an integer");
    ok("{\"type\":\"string\",\"minLength\":1,\"maxLength\":3}");
    ok("{\"maxLength\":3}");
    bad("{\"not\":{}}", "'not'");
    bad("{\"oneOf\":[{\"type\":\"string\"}]}", "'oneOf'");
    bad("{\"type\":\"strang\"}", "unknown JSON schema type");
    bad("false", "allows no value");
    bad("{\"enum\":[]}", "no value");
    bad("{\"type\":\"string\",\"enum\":[1,2]}", "no value");
    bad("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "minItems > maxItems");
    bad("{\"type\":\"array\",\"items\":[{}]}", "tuple");
    bad("{\"properties\":{\"a\\\"b\":{}}}", "quote");
    bad("{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false,"
        "\"required\":[\"x\"]}",
        "additionalProperties is false");
    bad("{\"$ref\":\"#/$defs/missing\"}", "$ref");
    bad("{\"$ref\":\"https://example.com/s.json\"}", "$ref");
    bad("{\"$defs\":{\"L\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":"
        "\"#/$defs/L\"}}}},\"$ref\":\"#/$defs/L\"}",
        "deep");
    bad("{\"anyOf\":[{\"type\":\"string\"}],\"type\":\"string\"}", "beside");
    bad("{\"allOf\":[{},{}]}", "allOf");
    bad("3", "must be an object or a boolean");
    bad("{\"type\":\"array\",\"minItems\":-1}", "minItems");

    /* depth limit */
    char deep[4096] = "";
    for (int i = 0; i < JSONSCHEMA_MAX_DEPTH + 1; i++)
        strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < JSONSCHEMA_MAX_DEPTH + 1; i++) strcat(deep, "}");
    bad(deep, "deeper");
    /* size limit: $ref expansion that would blow up (8 x 64 x 61 nodes) */
    json_t *d = json_pack("{s:s, s:{}}", "type", "object", "properties");
    for (int k = 0; k < 60; k++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", k);
        json_object_set_new(json_object_get(d, "properties"), name,
                            json_pack("{s:s}", "type", "string"));
    }
    json_t *a64 = json_array(), *a8 = json_array();
    for (int k = 0; k < 64; k++)
        json_array_append_new(a64, json_pack("{s:s}", "$ref", "#/$defs/D"));
    for (int k = 0; k < 8; k++) json_array_append_new(a8, json_pack("{s:s}", "$ref", "#/$defs/A"));
    json_t *big =
        json_pack("{s:{s:o, s:{s:o}}, s:o}", "$defs", "D", d, "A", "anyOf", a64, "anyOf", a8);
    struct jsonschema_grammar *g = NULL;
    char err[ERR_LEN];
    CHECK_EQ(jsonschema_compile(big, 0, &g, err), ERR_INVAL);
    CHECK_CONTAINS(err, "too large");
    json_decref(big);

    /* lenient mode (tool parameters) ignores what the grammar cannot enforce */
    CHECK_EQ(compile_js("{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\","
                        "\"minimum\":1,\"maximum\":9},\"s\":{\"type\":\"string\",\"format\":"
                        "\"date\"}}}",
                        JSONSCHEMA_LENIENT, err),
             0);
    CHECK_EQ(compile_js("{\"not\":{}}", JSONSCHEMA_LENIENT, err), ERR_INVAL);

    /* junk never crashes: 0 or ERR_INVAL with a message */
    rs = check_seed();
    int n_ok = 0;
    for (int i = 0; i < 20000; i++) {
        json_t *j = junk(0);
        struct jsonschema_grammar *jg = NULL;
        err[0] = 0;
        int rc = jsonschema_compile(j, i % 2 ? JSONSCHEMA_LENIENT : 0, &jg, err);
        CHECK(rc == 0 || rc == ERR_INVAL);
        CHECK(rc == 0 ? jg != NULL : err[0] != 0);
        n_ok += rc == 0;
        jsonschema_unref(jg);
        json_decref(j);
    }
    fprintf(stderr, "junk schemas: %d of 20000 compiled\n", n_ok);

    /* response_format */
    const char *param;
    CHECK_EQ(response_format("{}", &g, &param, err), 0);
    CHECK(g == NULL);
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"text\"}}", &g, &param, err), 0);
    CHECK(g == NULL);
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"json_object\"}}", &g, &param, err),
             0);
    CHECK(g != NULL);
    jsonschema_unref(g);
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                             "{\"name\":\"x\",\"strict\":true,\"schema\":{\"type\":\"object\","
                             "\"properties\":{\"a\":{\"type\":\"string\"}}}}}}",
                             &g, &param, err),
             0);
    CHECK(g != NULL);
    jsonschema_unref(g);
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                             "{\"schema\":{\"type\":\"string\",\"pattern\":\"x\"}}}}",
                             &g, &param, err),
             ERR_INVAL);
    CHECK_STR(param, "response_format");
    CHECK_CONTAINS(err, "'pattern'");
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"yaml\"}}", &g, &param, err),
             ERR_INVAL);
    CHECK_EQ(response_format("{\"response_format\":{\"type\":\"json_schema\"}}", &g, &param, err),
             ERR_INVAL);
    CHECK_EQ(response_format("{\"response_format\":\"json\"}", &g, &param, err), ERR_INVAL);

    /* tool-call grammar */
    json_t *tools =
        json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
                   "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\","
                   "\"minimum\":0}}}}},{\"type\":\"function\",\"function\":{\"name\":"
                   "\"g\"}}]",
                   0, NULL);
    CHECK_EQ(jsonschema_compile_tool_call(tools, NULL, &g, err), 0);
    CHECK(g->has_literals);
    CHECK_EQ(jsonschema_add_prefix(g, "</think>\n\n"), 0);
    jsonschema_unref(g);
    CHECK_EQ(jsonschema_compile_tool_call(tools, "g", &g, err), 0);
    jsonschema_unref(g);
    CHECK_EQ(jsonschema_compile_tool_call(tools, "nope", &g, err), ERR_INVAL);
    json_decref(tools);
    tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
                       "{\"not\":{}}}}]",
                       0, NULL);
    CHECK_EQ(jsonschema_compile_tool_call(tools, NULL, &g, err), ERR_INVAL);
    CHECK_CONTAINS(err, "'not' at #/tools/0/function/parameters");
    json_decref(tools);
    return 0;
}
