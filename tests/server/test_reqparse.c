/* test_reqparse.c - request validation: defaults, every type/range error names its param. */
#include "../../common/err.h"
#include "../../server/reqparse.h"
#include "../check.h"

static int parse(const char *json, int chat, struct api_params *p, const char **param)
{
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    CHECK(root);
    char err[ERR_LEN] = "";
    int rc = api_params_parse(root, chat, p, param, err);
    if (rc) CHECK(err[0]);
    /* borrowed pointers into root are not used after this in the tests below */
    p->messages = NULL;
    p->prompt = NULL;
    p->model = NULL;
    json_decref(root);
    return rc;
}

static void expect_bad(const char *json, int chat, const char *param_want)
{
    struct api_params p;
    const char *param = NULL;
    int rc = parse(json, chat, &p, &param);
    if (rc != ERR_INVAL) fprintf(stderr, "expected ERR_INVAL for %s\n", json);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_STR(param, param_want);
}

static void expect_ok(const char *json, int chat, struct api_params *p)
{
    const char *param = NULL;
    int rc = parse(json, chat, p, &param);
    if (rc) fprintf(stderr, "unexpected error for %s (param %s)\n", json, param);
    CHECK_EQ(rc, 0);
}

int main(void)
{
    struct api_params p;
    const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char buf[1024];

    snprintf(buf, sizeof buf, "{%s}", msgs);
    expect_ok(buf, 1, &p);
    CHECK_EQ(p.n, 1);
    CHECK_NEAR(p.samp.temperature, 1.0, 0);
    CHECK_NEAR(p.samp.top_p, 1.0, 0);
    CHECK_EQ(p.max_tokens, 0);
    CHECK_EQ(p.stream, 0);
    api_params_fini(&p);

    snprintf(buf, sizeof buf,
             "{%s, \"stream\":true, \"stream_options\":{\"include_usage\":true},"
             "\"max_tokens\":5, \"max_completion_tokens\":7, \"temperature\":0, \"top_k\":-1,"
             "\"stop\":[\"a\",\"bb\"], \"n\":3, \"seed\":-5, \"logprobs\":true, \"top_logprobs\":2,"
             "\"logit_bias\":{\"12\":-100, \"7\":3.5}, \"user\":\"u\", \"unknown_field\":[1,2],"
             "\"ignore_eos\":true, \"min_tokens\":2, \"priority\":-3, \"metadata\":{\"a\":\"b\"},"
             "\"response_format\":{\"type\":\"text\"}, \"tools\":[]}",
             msgs);
    expect_ok(buf, 1, &p);
    CHECK_EQ(p.stream, 1);
    CHECK_EQ(p.include_usage, 1);
    CHECK_EQ(p.max_tokens, 7);
    CHECK_EQ(p.samp.top_k, 0);
    CHECK_EQ(p.n_stop, 2);
    CHECK_STR(p.stop[1], "bb");
    CHECK_EQ(p.n, 3);
    CHECK_EQ(p.seed_set, 1);
    CHECK_EQ((int64_t)p.samp.seed, -5);
    CHECK_EQ(p.samp.logprobs, 1);
    CHECK_EQ(p.samp.top_logprobs, 2);
    CHECK_EQ(p.samp.n_logit_bias, 2);
    CHECK_EQ(p.ignore_eos, 1);
    CHECK_EQ(p.min_tokens, 2);
    CHECK_EQ(p.priority, -3);
    api_params_fini(&p);

    /* content as text parts, null assistant content, null fields */
    expect_ok("{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
              "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null},"
              "{\"role\":\"user\",\"content\":\"x\"}], \"temperature\":null, \"stop\":null}",
              1, &p);
    api_params_fini(&p);

    expect_bad("[]", 1, "");
    expect_bad("{}", 1, "messages");
    expect_bad("{\"messages\":[]}", 1, "messages");
    expect_bad("{\"messages\":\"hi\"}", 1, "messages");
    expect_bad("{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 1, "messages");
    expect_bad("{\"messages\":[{\"role\":\"user\"}]}", 1, "messages");
    expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 1, "messages");
    expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 1,
               "messages");
    struct {
        const char *field, *param;
    } bad[] = {
        {"\"model\":5", "model"},
        {"\"stream\":\"yes\"", "stream"},
        {"\"stream_options\":{\"include_usage\":1}", "include_usage"},
        {"\"max_tokens\":0", "max_tokens"},
        {"\"max_tokens\":1.5", "max_tokens"},
        {"\"max_tokens\":\"10\"", "max_tokens"},
        {"\"max_completion_tokens\":-1", "max_completion_tokens"},
        {"\"temperature\":2.5", "temperature"},
        {"\"temperature\":\"hot\"", "temperature"},
        {"\"top_p\":0", "top_p"},
        {"\"top_p\":1.1", "top_p"},
        {"\"top_k\":-2", "top_k"},
        {"\"min_p\":2", "min_p"},
        {"\"presence_penalty\":3", "presence_penalty"},
        {"\"frequency_penalty\":-2.5", "frequency_penalty"},
        {"\"repetition_penalty\":0", "repetition_penalty"},
        {"\"seed\":\"x\"", "seed"},
        {"\"stop\":5", "stop"},
        {"\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop"},
        {"\"stop\":[1]", "stop"},
        {"\"n\":0", "n"},
        {"\"n\":100", "n"},
        {"\"logprobs\":1", "logprobs"},
        {"\"top_logprobs\":21, \"logprobs\":true", "top_logprobs"},
        {"\"top_logprobs\":3", "top_logprobs"},
        {"\"logit_bias\":[1]", "logit_bias"},
        {"\"logit_bias\":{\"abc\":1}", "logit_bias"},
        {"\"logit_bias\":{\"5\":101}", "logit_bias"},
        {"\"logit_bias\":{\" 1\":1}", "logit_bias"},
        {"\"logit_bias\":{\"+1\":1}", "logit_bias"},
        {"\"logit_bias\":{\"01\":1}", "logit_bias"},
        {"\"logit_bias\":{\"1 \":1}", "logit_bias"},
        {"\"logit_bias\":{\"-0\":1}", "logit_bias"},
        {"\"logit_bias\":{\"2147483648\":1}", "logit_bias"},
        {"\"logit_bias\":{\"\":1}", "logit_bias"},
        {"\"stop\":[\"\"]", "stop"},
        {"\"stop\":\"\"", "stop"},
        {"\"stop\":[\"a\",\"\"]", "stop"},
        {"\"ignore_eos\":1", "ignore_eos"},
        {"\"min_tokens\":-1", "min_tokens"},
        {"\"max_tokens\":2, \"min_tokens\":3", "min_tokens"},
        {"\"user\":1", "user"},
        {"\"metadata\":[]", "metadata"},
        {"\"response_format\":{\"type\":\"json_schema\"}", "response_format"},
        {"\"tools\":[{\"type\":\"function\"}]", "tools"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{%s, %s}", msgs, bad[i].field);
        expect_bad(buf, 1, bad[i].param);
    }

    /* canonical ids are accepted, "0" and INT32_MAX included */
    snprintf(buf, sizeof buf, "{%s, \"logit_bias\":{\"0\":1, \"2147483647\":-1}}", msgs);
    expect_ok(buf, 1, &p);
    CHECK_EQ(p.samp.n_logit_bias, 2);
    CHECK_EQ(p.samp.logit_bias_ids[1], 2147483647);
    api_params_fini(&p);

    /* a tool message must name the call it answers */
    expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
               "{\"role\":\"tool\",\"content\":\"r\"}]}",
               1, "messages");
    expect_bad("{\"messages\":[{\"role\":\"tool\",\"content\":\"r\",\"tool_call_id\":null}]}", 1,
               "messages");
    expect_ok("{\"messages\":[{\"role\":\"tool\",\"content\":\"r\",\"tool_call_id\":\"c\"}]}", 1,
              &p);
    api_params_fini(&p);

    /* legacy completions */
    expect_ok("{\"prompt\":\"hello\", \"logprobs\":3, \"echo\":true}", 0, &p);
    CHECK_EQ(p.logprobs, 1);
    CHECK_EQ(p.top_logprobs, 3);
    CHECK_EQ(p.echo, 1);
    api_params_fini(&p);
    expect_ok("{\"prompt\":[1,2,3]}", 0, &p);
    api_params_fini(&p);
    expect_ok("{\"prompt\":[\"a\",[1,2]]}", 0, &p);
    api_params_fini(&p);
    expect_bad("{}", 0, "prompt");
    expect_bad("{\"prompt\":5}", 0, "prompt");
    expect_bad("{\"prompt\":[]}", 0, "prompt");
    expect_bad("{\"prompt\":[1,\"a\"]}", 0, "prompt");
    expect_bad("{\"prompt\":[[]]}", 0, "prompt");
    expect_bad("{\"prompt\":\"x\", \"logprobs\":true}", 0, "logprobs");
    expect_bad("{\"prompt\":\"x\", \"suffix\":\"s\"}", 0, "suffix");

    /* content text joining */
    json_t *c = json_loads(
        "[{\"type\":\"text\",\"text\":\"ab\"},{\"type\":\"text\",\"text\":\"c\"}]", 0, NULL);
    char *s = NULL;
    CHECK_EQ(api_content_text(c, &s), 0);
    CHECK_STR(s, "abc");
    free(s);
    json_decref(c);
    return 0;
}
