/* test_toolparse.c - DeepSeek tool-call markup -> calls/content under every chunking (whole, every
 * 2-chunk split, byte by byte, random chunks); malformed blocks are dropped; the
 * streaming deltas accumulate to the non-streaming message.tool_calls; request validation.
 * The same for DeepSeek-V3.1's syntax (NAME<sep>ARGS, TOOLPARSE_FMT_V31): fixed cases, each
 * format's blocks dropped by the other's parser, and random calls (seeded) rendered as V3.1's
 * template writes them parsed back exactly; the tools prompt shows each format's syntax. And
 * for Kimi-K2's markers and functions.NAME:IDX call names (TOOLPARSE_FMT_KIMI), that text
 * becoming the call's id (a bare NAME or NAME:IDX gets a call_ id). */
#include "../../common/err.h"
#include "../../engine/text/toolparse.h"
#include "../check.h"

#include <stdint.h>

#define B TOOLPARSE_CALLS_BEGIN
#define E TOOLPARSE_CALLS_END
#define CB TOOLPARSE_CALL_BEGIN
#define CE TOOLPARSE_CALL_END
#define S TOOLPARSE_SEP

struct tcase {
    const char *in;
    const char *content;
    int n_calls;
    const char *name[3], *args[3];
};

static const struct tcase cases[] = {
    {"just text", "just text", 0, {0}, {0}},
    {B CB "function" S "get_weather\n```json\n{\"city\": \"Paris\"}\n```" CE E,
     "",
     1,
     {"get_weather"},
     {"{\"city\": \"Paris\"}"}},
    {"Let me check." B CB "function" S "get_weather\n```json\n{\"city\":\"a\"}\n```" CE "\n" CB
     "function" S "get_time\n```json\n{}\n```" CE E,
     "Let me check.",
     2,
     {"get_weather", "get_time"},
     {"{\"city\":\"a\"}", "{}"}},
    /* missing calls_end at the end of generation: complete calls are accepted */
    {B CB "function" S "get_time\n```json\n{\"tz\": \"UTC\"}\n```" CE,
     "",
     1,
     {"get_time"},
     {"{\"tz\": \"UTC\"}"}},
    /* bare JSON arguments (no fence) */
    {B CB "function" S "get_time\n{\"tz\":1}" CE E, "", 1, {"get_time"}, {"{\"tz\":1}"}},
    /* invalid JSON -> the whole block is dropped */
    {B CB "function" S "get_time\n```json\n{\"tz\": }\n```" CE E "tail", "tail", 0, {0}, {0}},
    /* arguments not an object */
    {B CB "function" S "get_time\n```json\n[1]\n```" CE E, "", 0, {0}, {0}},
    /* unknown function name */
    {B CB "function" S "rm_rf\n```json\n{}\n```" CE E, "", 0, {0}, {0}},
    /* truncated in the middle of a call */
    {"x" B CB "function" S "get_time\n```json\n{\"tz\"", "x", 0, {0}, {0}},
    /* second call broken: all of the block is dropped */
    {B CB "function" S "get_time\n```json\n{}\n```" CE CB "function" S "get_time\n```json\n{" CE E,
     "",
     0,
     {0},
     {0}},
    /* a partial marker that is not one */
    {"a <｜tool▁calls not a marker <", "a <｜tool▁calls not a marker <", 0, {0}, {0}},
    /* content around, two blocks */
    {"a" B CB "function" S "get_time\n```json\n{}\n```" CE E "b" B CB "function" S
     "get_weather\n```json\n{\"c\":[1,2]}\n```" CE E "c",
     "abc",
     2,
     {"get_time", "get_weather"},
     {"{}", "{\"c\":[1,2]}"}},
    /* wrong type */
    {B CB "method" S "get_time\n```json\n{}\n```" CE E, "", 0, {0}, {0}},
    /* empty block */
    {B E, "", 0, {0}, {0}},
};

/* DeepSeek-V3.1: NAME<sep>ARGS, no type, no fence */
static const struct tcase cases31[] = {
    {B CB "get_weather" S "{\"city\": \"Paris\"}" CE E,
     "",
     1,
     {"get_weather"},
     {"{\"city\": \"Paris\"}"}},
    {"Sure." B CB "get_weather" S "{\"city\":\"a\"}" CE CB "get_time" S "{}" CE E " Done.",
     "Sure. Done.",
     2,
     {"get_weather", "get_time"},
     {"{\"city\":\"a\"}", "{}"}},
    /* cut before calls_end: complete calls are accepted */
    {B CB "get_time" S "{\"tz\": \"UTC\"}" CE, "", 1, {"get_time"}, {"{\"tz\": \"UTC\"}"}},
    /* V3's form is not V3.1's: dropped */
    {B CB "function" S "get_time\n```json\n{}\n```" CE E "x", "x", 0, {0}, {0}},
    /* a name with a space, an unknown name, arguments that are no object: dropped */
    {B CB "get time" S "{}" CE E, "", 0, {0}, {0}},
    {B CB "rm_rf" S "{}" CE E, "", 0, {0}, {0}},
    {B CB "get_time" S "[1]" CE E, "", 0, {0}, {0}},
    {B CB "get_time" S "{\"tz\":" CE E, "", 0, {0}, {0}},
    /* no name */
    {B CB S "{}" CE E, "", 0, {0}, {0}},
    /* arguments holding markup-like text and braces */
    {B CB "get_weather" S "{\"q\": \"} <｜tool not a marker {\"}" CE E "end",
     "end",
     1,
     {"get_weather"},
     {"{\"q\": \"} <｜tool not a marker {\"}"}},
};

/* Kimi-K2: its own markers, calls named functions.NAME:IDX */
#define KB TOOLPARSE_KIMI_CALLS_BEGIN
#define KE TOOLPARSE_KIMI_CALLS_END
#define KCB TOOLPARSE_KIMI_CALL_BEGIN
#define KCE TOOLPARSE_KIMI_CALL_END
#define KA TOOLPARSE_KIMI_ARGS
static const struct tcase cases_kimi[] = {
    {KB KCB "functions.get_weather:0" KA "{\"city\": \"Paris\"}" KCE KE,
     "",
     1,
     {"get_weather"},
     {"{\"city\": \"Paris\"}"}},
    {"Sure." KB KCB "functions.get_weather:0" KA "{\"city\":\"a\"}" KCE KCB
     "functions.get_time:1" KA "{}" KCE KE " Done.",
     "Sure. Done.",
     2,
     {"get_weather", "get_time"},
     {"{\"city\":\"a\"}", "{}"}},
    /* a bare name, no index, or no prefix: call_ ids */
    {KB KCB "get_time" KA "{}" KCE KE, "", 1, {"get_time"}, {"{}"}},
    {KB KCB "get_time:3" KA "{}" KCE KE, "", 1, {"get_time"}, {"{}"}},
    {KB KCB "functions.get_time" KA "{}" KCE KE, "", 1, {"get_time"}, {"{}"}},
    /* cut before the section end: complete calls are accepted */
    {KB KCB "functions.get_time:0" KA "{\"tz\": 1}" KCE, "", 1, {"get_time"}, {"{\"tz\": 1}"}},
    /* DeepSeek's markers are plain text for Kimi's parser */
    {B CB "get_time" S "{}" CE E, B CB "get_time" S "{}" CE E, 0, {0}, {0}},
    /* unknown name, bad arguments, a name with a space: dropped */
    {KB KCB "functions.rm_rf:0" KA "{}" KCE KE "x", "x", 0, {0}, {0}},
    {KB KCB "functions.get_time:0" KA "[1]" KCE KE, "", 0, {0}, {0}},
    {KB KCB "functions.get time:0" KA "{}" KCE KE, "", 0, {0}, {0}},
    {"a <|tool_calls not a marker <", "a <|tool_calls not a marker <", 0, {0}, {0}},
};

/* the ids of cases_kimi's calls: the model's functions.NAME:IDX, else (NULL) a call_ id */
static const char *const kimi_ids[][3] = {
    {"functions.get_weather:0"},
    {"functions.get_weather:0", "functions.get_time:1"},
    {NULL},
    {NULL},
    {NULL},
    {"functions.get_time:0"},
    {NULL},
    {NULL},
    {NULL},
    {NULL},
    {NULL},
};

static const char *names[] = {"get_weather", "get_time"};
static enum toolparse_format cur_format = TOOLPARSE_FMT_V3;
/* Kimi: the ids expected for the calls of the case being run, from the functions.NAME:IDX in
 * its input (NULL: a call_ id) */
static const char *cur_ids[3];

static void run(const struct tcase *tc, const size_t *cuts, size_t n_cuts)
{
    struct toolparse *tp;
    char err[ERR_LEN];
    CHECK_EQ(toolparse_create(&tp, 42, names, 2, err), 0);
    toolparse_set_format(tp, cur_format);
    struct sbuf c = {0};
    size_t len = strlen(tc->in), at = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        CHECK_EQ(toolparse_feed(tp, tc->in + at, end - at, &c), 0);
        at = end;
    }
    CHECK_EQ(toolparse_finish(tp, &c), 0);
    sbuf_append(&c, "", 0);
    if (strcmp(c.s, tc->content) || (int)toolparse_n_calls(tp) != tc->n_calls) {
        fprintf(stderr, "input \"%s\" cuts:", tc->in);
        for (size_t i = 0; i < n_cuts; i++) fprintf(stderr, " %zu", cuts[i]);
        fprintf(stderr, "\n");
    }
    CHECK_STR(c.s, tc->content);
    CHECK_EQ(toolparse_n_calls(tp), tc->n_calls);
    for (int i = 0; i < tc->n_calls; i++) {
        const struct toolparse_call *k = toolparse_get(tp, (size_t)i);
        CHECK_STR(k->name, tc->name[i]);
        CHECK_STR(k->arguments, tc->args[i]);
        if (cur_ids[i]) {
            CHECK_STR(k->id, cur_ids[i]);
        } else {
            CHECK_EQ(strlen(k->id), 29);
            CHECK(strncmp(k->id, "call_", 5) == 0);
        }
    }
    /* streaming deltas accumulate (as the openai SDK does) into message.tool_calls */
    json_t *msg = toolparse_message_json(tp);
    CHECK(tc->n_calls ? msg != NULL : msg == NULL);
    if (msg) {
        json_t *deltas = json_array();
        size_t sent = 0;
        CHECK_EQ(toolparse_stream_deltas(tp, &sent, deltas), 0);
        CHECK_EQ(sent, tc->n_calls);
        CHECK_EQ(json_array_size(deltas), 2 * tc->n_calls);
        json_t *acc = json_array();
        for (size_t i = 0; i < json_array_size(deltas); i++) {
            json_t *d = json_array_get(json_array_get(deltas, i), 0);
            size_t idx = (size_t)json_integer_value(json_object_get(d, "index"));
            json_t *fn = json_object_get(d, "function");
            if (idx == json_array_size(acc)) {
                CHECK(json_object_get(fn, "name") != NULL); /* name first, alone */
                CHECK_STR(json_string_value(json_object_get(fn, "arguments")), "");
                json_array_append_new(acc, json_pack("{s:O, s:O, s:{s:O, s:s}}", "id",
                                                     json_object_get(d, "id"), "type",
                                                     json_object_get(d, "type"), "function", "name",
                                                     json_object_get(fn, "name"), "arguments", ""));
            } else {
                CHECK(json_object_get(fn, "name") == NULL);
                json_t *af = json_object_get(json_array_get(acc, idx), "function");
                const char *prev = json_string_value(json_object_get(af, "arguments"));
                const char *add = json_string_value(json_object_get(fn, "arguments"));
                char *cat = malloc(strlen(prev) + strlen(add) + 1);
                strcpy(cat, prev);
                strcat(cat, add);
                json_object_set_new(af, "arguments", json_string(cat));
                free(cat);
            }
        }
        CHECK(json_equal(acc, msg));
        json_decref(acc);
        json_decref(deltas);
        json_decref(msg);
    }
    toolparse_destroy(tp);
    sbuf_fini(&c);
}

static void test_chunkings(const struct tcase *cs, size_t n_cases, const char *const (*ids)[3],
                           uint64_t seed)
{
    for (size_t k = 0; k < n_cases; k++) {
        const struct tcase *tc = &cs[k];
        for (int i = 0; i < 3; i++) cur_ids[i] = ids ? ids[k][i] : NULL;
        size_t len = strlen(tc->in);
        run(tc, NULL, 0);
        for (size_t a = 0; a <= len; a++) run(tc, &a, 1);
        size_t *all = malloc((len + 1) * sizeof *all);
        for (size_t i = 0; i < len; i++) all[i] = i + 1;
        run(tc, all, len ? len - 1 : 0);
        for (int rep = 0; rep < 30; rep++) {
            size_t n = 0, at = 0;
            while (at < len) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                at += 1 + (seed >> 33) % 9;
                if (at < len) all[n++] = at;
            }
            run(tc, all, n);
        }
        free(all);
    }
}

/* Random V3.1 blocks as its chat template writes them (content + calls_begin + calls + end),
 * with random arguments (nested objects, unicode, braces, escaped quotes), fed in random chunks:
 * the calls come back exactly, the content is what surrounded the block. */
static uint64_t rng31;
static unsigned rnd31(unsigned n)
{
    rng31 = rng31 * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)((rng31 >> 33) % n);
}

static json_t *rand_value(int depth)
{
    static const char *const words[] = {"Paris", "}", "{", "\"q\"", "ü€𝄞", "a b", "<｜", "", "\\"};
    switch (depth > 2 ? rnd31(3) : rnd31(5)) {
    case 0: return json_integer((json_int_t)rnd31(100000) - 500);
    case 1: return json_string(words[rnd31(9)]);
    case 2: return rnd31(2) ? json_true() : json_null();
    case 3: {
        json_t *a = json_array();
        for (unsigned i = rnd31(3); i > 0; i--) json_array_append_new(a, rand_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (unsigned i = rnd31(3); i > 0; i--) {
            char k[16];
            snprintf(k, sizeof k, "k%u", rnd31(50));
            json_object_set_new(o, k, rand_value(depth + 1));
        }
        return o;
    }
    }
}

static void test_random31(uint64_t seed, enum toolparse_format fmt)
{
    const int kimi = fmt == TOOLPARSE_FMT_KIMI;
    const char *begin = kimi ? KB : B, *end = kimi ? KE : E, *cb = kimi ? KCB : CB;
    const char *sep = kimi ? KA : S, *ce = kimi ? KCE : CE;
    rng31 = seed ^ (0x31 + (uint64_t)fmt);
    for (int it = 0; it < 300; it++) {
        struct sbuf in = {0}, want_content = {0};
        const char *pre = rnd31(2) ? "Checking. " : "", *post = rnd31(3) ? "" : " ok";
        sbuf_append(&in, pre, strlen(pre));
        sbuf_append(&want_content, pre, strlen(pre));
        int n = 1 + (int)rnd31(3);
        char *args[3], ids[3][96];
        const char *nm[3];
        sbuf_append(&in, begin, strlen(begin));
        for (int i = 0; i < n; i++) {
            json_t *o = json_object();
            for (unsigned k = rnd31(4); k > 0; k--) {
                char key[16];
                snprintf(key, sizeof key, "p%u", k);
                json_object_set_new(o, key, rand_value(0));
            }
            args[i] = json_dumps(o, rnd31(2) ? JSON_COMPACT : 0);
            json_decref(o);
            nm[i] = names[rnd31(2)];
            char *id = ids[i];
            snprintf(id, sizeof ids[i], kimi ? "functions.%s:%d" : "%s", nm[i], i);
            sbuf_append(&in, cb, strlen(cb));
            sbuf_append(&in, id, strlen(id));
            sbuf_append(&in, sep, strlen(sep));
            sbuf_append(&in, args[i], strlen(args[i]));
            sbuf_append(&in, ce, strlen(ce));
        }
        sbuf_append(&in, end, strlen(end));
        sbuf_append(&in, post, strlen(post));
        sbuf_append(&want_content, post, strlen(post));
        sbuf_append(&in, "", 0);
        sbuf_append(&want_content, "", 0);
        struct tcase tc = {
            in.s,
            want_content.s,
            n,
            {nm[0], nm[1], nm[2]},
            {args[0], n > 1 ? args[1] : NULL, n > 2 ? args[2] : NULL},
        };
        for (int i = 0; i < 3; i++) cur_ids[i] = kimi && i < n ? ids[i] : NULL;
        size_t cuts[64], nc = 0, at = 0;
        while (nc < 64) {
            at += 1 + rnd31(12);
            if (at >= in.n) break;
            cuts[nc++] = at;
        }
        run(&tc, cuts, nc);
        memset(cur_ids, 0, sizeof cur_ids);
        for (int i = 0; i < n; i++) free(args[i]);
        sbuf_fini(&in);
        sbuf_fini(&want_content);
    }
}

static int parse_req(const char *js, struct toolparse_req *r, const char **param, char *err)
{
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    CHECK(root != NULL);
    int rc = toolparse_req_parse(root, r, param, err);
    json_decref(root); /* the tests below only look at scalars */
    return rc;
}

static void test_request(void)
{
    struct toolparse_req r;
    const char *param;
    char err[ERR_LEN];
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_time\","
                        "\"description\":\"Time now\",\"parameters\":{\"type\":\"object\"}}}]";
    char buf[1024];
    snprintf(buf, sizeof buf, "{%s}", tools);
    CHECK_EQ(parse_req(buf, &r, &param, err), 0);
    CHECK_EQ(r.choice, TOOLPARSE_CHOICE_AUTO);
    CHECK_EQ(r.n_tools, 1);
    CHECK_EQ(r.parallel, 1);
    CHECK_EQ(parse_req("{}", &r, &param, err), 0);
    CHECK_EQ(r.choice, TOOLPARSE_CHOICE_NONE);
    snprintf(buf, sizeof buf,
             "{%s, \"tool_choice\":{\"type\":\"function\",\"function\":"
             "{\"name\":\"get_time\"}}, \"parallel_tool_calls\": false}",
             tools);
    CHECK_EQ(parse_req(buf, &r, &param, err), 0);
    CHECK_EQ(r.choice, TOOLPARSE_CHOICE_NAMED);
    CHECK_EQ(r.parallel, 0);
    snprintf(buf, sizeof buf,
             "{%s, \"tool_choice\":{\"type\":\"function\",\"function\":"
             "{\"name\":\"nope\"}}}",
             tools);
    CHECK_EQ(parse_req(buf, &r, &param, err), ERR_INVAL);
    CHECK_STR(param, "tool_choice");
    CHECK_CONTAINS(err, "nope");
    CHECK_EQ(parse_req("{\"tool_choice\":\"required\"}", &r, &param, err), ERR_INVAL);
    CHECK_EQ(parse_req("{\"tool_choice\":\"sometimes\"}", &r, &param, err), ERR_INVAL);
    CHECK_EQ(parse_req("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", &r,
                       &param, err),
             ERR_INVAL);
    CHECK_STR(param, "tools");
    CHECK_EQ(parse_req("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},"
                       "{\"type\":\"function\",\"function\":{\"name\":\"a\"}}]}",
                       &r, &param, err),
             ERR_INVAL);
    CHECK_CONTAINS(err, "duplicate");
    CHECK_EQ(parse_req("{\"tools\":{}}", &r, &param, err), ERR_INVAL);
    CHECK_EQ(parse_req("{\"parallel_tool_calls\":1}", &r, &param, err), ERR_INVAL);
    CHECK_STR(param, "parallel_tool_calls");

    /* the tools prompt names the function and shows the syntax */
    json_error_t je;
    snprintf(buf, sizeof buf, "{%s, \"tool_choice\":\"required\"}", tools);
    json_t *root = json_loads(buf, 0, &je);
    CHECK_EQ(toolparse_req_parse(root, &r, &param, err), 0);
    struct sbuf p = {0};
    CHECK_EQ(toolparse_tools_prompt(&r, &p), 0);
    sbuf_append(&p, "", 0);
    CHECK_CONTAINS(p.s, "### get_time");
    CHECK_CONTAINS(p.s, "Time now");
    CHECK_CONTAINS(p.s, B CB "function" S);
    CHECK_CONTAINS(p.s, "must call");
    sbuf_fini(&p);
    /* V3.1's syntax: NAME<sep>ARGS without the type or the fence */
    r.format = TOOLPARSE_FMT_V31;
    CHECK_EQ(toolparse_tools_prompt(&r, &p), 0);
    sbuf_append(&p, "", 0);
    CHECK_CONTAINS(p.s, B CB "FUNCTION_NAME" S "{");
    CHECK(strstr(p.s, "```") == NULL && strstr(p.s, "function" S) == NULL);
    sbuf_fini(&p);
    json_decref(root);

    /* history: assistant tool_calls -> template structs (object arguments get serialized) */
    root = json_loads("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
                      "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                      "\"{\\\"a\\\":1}\"}},{\"id\":\"call_2\",\"type\":\"function\",\"function\":"
                      "{\"name\":\"g\",\"arguments\":{\"b\":2}}}]}",
                      0, &je);
    CHECK(root);
    struct tmpl_tool_call *calls;
    size_t n;
    CHECK_EQ(toolparse_history_calls(root, &calls, &n, err), 0);
    CHECK_EQ(n, 2);
    CHECK_STR(calls[0].name, "f");
    CHECK_STR(calls[0].arguments, "{\"a\":1}");
    CHECK_STR(calls[1].arguments, "{\"b\":2}");
    CHECK_STR(calls[1].id, "call_2");
    free(calls);
    json_decref(root);
    root = json_loads("{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}", 0, &je);
    CHECK_EQ(toolparse_history_calls(root, &calls, &n, err), ERR_INVAL);
    json_decref(root);
}

/* The per-choice pipeline: streamed deltas accumulated as the openai SDK does equal the
 * non-streamed message, for every chunking. */
static void test_pipe(uint64_t seed)
{
    const char *text = "plan: call the tool\n</think>\n\nChecking." B CB "function" S
                       "get_time\n```json\n{\"tz\": \"UTC\"}\n```" CE E;
    struct toolparse_req req;
    const char *param;
    char err[ERR_LEN];
    json_t *root = json_loads("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
                              "\"get_time\"}}]}",
                              0, NULL);
    CHECK_EQ(toolparse_req_parse(root, &req, &param, err), 0);
    struct toolparse_pipe whole;
    CHECK_EQ(toolparse_pipe_init(&whole, REASONING_START_THINKING, &req, 7, err), 0);
    CHECK_EQ(toolparse_pipe_feed(&whole, text, strlen(text)), 0);
    CHECK_EQ(toolparse_pipe_finish(&whole), 0);
    json_t *msg = json_object();
    CHECK_EQ(toolparse_pipe_message(&whole, msg), 0);
    CHECK_STR(json_string_value(json_object_get(msg, "content")), "Checking.");
    CHECK_STR(json_string_value(json_object_get(msg, "reasoning_content")),
              "plan: call the tool\n");
    CHECK_EQ(json_array_size(json_object_get(msg, "tool_calls")), 1);
    CHECK_STR(toolparse_pipe_finish_reason(&whole, "stop"), "tool_calls");
    CHECK_STR(toolparse_pipe_finish_reason(&whole, "length"), "length");
    size_t len = strlen(text);
    for (int rep = 0; rep < 200; rep++) {
        struct toolparse_pipe p;
        CHECK_EQ(toolparse_pipe_init(&p, REASONING_START_THINKING, &req, 7, err), 0);
        json_t *deltas = json_array();
        for (size_t at = 0; at < len;) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t k = 1 + (seed >> 33) % 12;
            if (k > len - at) k = len - at;
            CHECK_EQ(toolparse_pipe_feed(&p, text + at, k), 0);
            CHECK_EQ(toolparse_pipe_deltas(&p, deltas), 0);
            at += k;
        }
        CHECK_EQ(toolparse_pipe_finish(&p), 0);
        CHECK_EQ(toolparse_pipe_deltas(&p, deltas), 0);
        /* accumulate */
        struct sbuf c = {0}, r = {0};
        json_t *calls = json_array();
        for (size_t i = 0; i < json_array_size(deltas); i++) {
            json_t *d = json_array_get(deltas, i);
            json_t *tc = json_object_get(d, "tool_calls");
            CHECK(!(tc &&
                    (json_object_get(d, "content") || json_object_get(d, "reasoning_content"))));
            json_t *x;
            if ((x = json_object_get(d, "content")))
                sbuf_append(&c, json_string_value(x), json_string_length(x));
            if ((x = json_object_get(d, "reasoning_content")))
                sbuf_append(&r, json_string_value(x), json_string_length(x));
            for (size_t k = 0; tc && k < json_array_size(tc); k++) {
                json_t *e = json_array_get(tc, k);
                size_t idx = (size_t)json_integer_value(json_object_get(e, "index"));
                json_t *fn = json_object_get(e, "function");
                if (idx == json_array_size(calls)) {
                    json_array_append_new(
                        calls, json_pack("{s:O, s:O, s:{s:O, s:O}}", "id", json_object_get(e, "id"),
                                         "type", json_object_get(e, "type"), "function", "name",
                                         json_object_get(fn, "name"), "arguments",
                                         json_object_get(fn, "arguments")));
                } else {
                    json_t *af = json_object_get(json_array_get(calls, idx), "function");
                    struct sbuf a = {0};
                    json_t *prev = json_object_get(af, "arguments");
                    json_t *add = json_object_get(fn, "arguments");
                    sbuf_append(&a, json_string_value(prev), json_string_length(prev));
                    sbuf_append(&a, json_string_value(add), json_string_length(add));
                    json_object_set_new(af, "arguments", json_stringn(a.s, a.n));
                    sbuf_fini(&a);
                }
            }
        }
        sbuf_append(&c, "", 0);
        sbuf_append(&r, "", 0);
        CHECK_STR(c.s, json_string_value(json_object_get(msg, "content")));
        CHECK_STR(r.s, json_string_value(json_object_get(msg, "reasoning_content")));
        CHECK(json_equal(calls, json_object_get(msg, "tool_calls")));
        json_decref(calls);
        json_decref(deltas);
        sbuf_fini(&c);
        sbuf_fini(&r);
        toolparse_pipe_fini(&p);
    }
    /* no tools, no splitting: a pass-through; content null only with tool calls */
    struct toolparse_pipe q;
    CHECK_EQ(toolparse_pipe_init(&q, -1, NULL, 1, err), 0);
    CHECK_EQ(toolparse_pipe_feed(&q, text, 5), 0);
    CHECK_EQ(toolparse_pipe_finish(&q), 0);
    json_t *m2 = json_object();
    CHECK_EQ(toolparse_pipe_message(&q, m2), 0);
    CHECK_STR(json_string_value(json_object_get(m2, "content")), "plan:");
    CHECK(json_object_get(m2, "reasoning_content") == NULL);
    CHECK(json_object_get(m2, "tool_calls") == NULL);
    CHECK_STR(toolparse_pipe_finish_reason(&q, "stop"), "stop");
    json_decref(m2);
    toolparse_pipe_fini(&q);
    json_decref(msg);
    toolparse_pipe_fini(&whole);
    json_decref(root);
}

/* Random soups of markup fragments: the result never depends on the chunking, without a block
 * the content is exactly the input, and a block's begin marker never reaches the content. */
static void test_soup(uint64_t seed)
{
    static const char *const frag[] = {B,
                                       E,
                                       CB,
                                       CE,
                                       S,
                                       "function",
                                       "get_time",
                                       "get_weather",
                                       "\n```json\n",
                                       "\n```",
                                       "{}",
                                       "{\"a\":1}",
                                       "{",
                                       "}",
                                       "\n",
                                       " ",
                                       "text",
                                       "<",
                                       "<｜",
                                       "<｜tool▁call"};
    for (int rep = 0; rep < 3000; rep++) {
        char in[1024];
        size_t len = 0;
        for (int k = (int)(seed % 12); k >= 0; k--) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const char *f = frag[(seed >> 33) % 20];
            if (len + strlen(f) >= sizeof in) break;
            memcpy(in + len, f, strlen(f));
            len += strlen(f);
        }
        in[len] = 0;
        char *res[2] = {0};
        size_t calls[2];
        for (int mode = 0; mode < 2; mode++) {
            struct toolparse *tp;
            CHECK_EQ(toolparse_create(&tp, 3, names, 2, NULL), 0);
            struct sbuf c = {0};
            for (size_t at = 0; at < len;) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                size_t k = mode == 0 ? len : 1 + (seed >> 33) % 7;
                if (k > len - at) k = len - at;
                CHECK_EQ(toolparse_feed(tp, in + at, k, &c), 0);
                at += k;
            }
            CHECK_EQ(toolparse_finish(tp, &c), 0);
            sbuf_append(&c, "", 0);
            calls[mode] = toolparse_n_calls(tp);
            res[mode] = strdup(c.s);
            if (!strstr(in, B)) CHECK_STR(c.s, in); /* no block: a pass-through */
            CHECK(strstr(c.s, B) == NULL);          /* a block never leaks its markers */
            sbuf_fini(&c);
            toolparse_destroy(tp);
        }
        CHECK_STR(res[0], res[1]);
        CHECK_EQ(calls[0], calls[1]);
        free(res[0]);
        free(res[1]);
    }
}

static int wants(struct toolparse_pipe *p, const char *s)
{
    return toolparse_pipe_wants(p, s, strlen(s));
}

/* Which added tokens' text the pipe takes: think tags that open/close, tool markers outside a
 * think block and, but for the begin marker, only inside a tool block; nothing else. */
static void test_wants(void)
{
    char err[ERR_LEN];
    struct toolparse_req req = {0};
    req.n_tools = 1;
    req.names[0] = "get_time";
    struct toolparse_pipe p;
    CHECK_EQ(toolparse_pipe_init(&p, REASONING_START_THINKING, &req, 1, err), 0);
    CHECK(!wants(&p, "<think>"));    /* already inside */
    CHECK(!wants(&p, B));            /* tool markup inside a think block */
    CHECK(!wants(&p, "<｜User｜>")); /* never */
    CHECK(wants(&p, "</think>"));
    CHECK(!wants(&p, "</think>")); /* stray */
    CHECK(!wants(&p, CE));         /* outside a tool block */
    CHECK(!wants(&p, E));
    CHECK(wants(&p, B));
    CHECK(wants(&p, CB));
    CHECK(wants(&p, S));
    CHECK(wants(&p, CE));
    CHECK(wants(&p, E));
    CHECK(!wants(&p, S));
    CHECK(wants(&p, "<think>"));
    toolparse_pipe_fini(&p);
    /* no tools, no reasoning split: nothing */
    CHECK_EQ(toolparse_pipe_init(&p, -1, NULL, 1, err), 0);
    CHECK(!wants(&p, B));
    CHECK(!wants(&p, "<think>"));
    CHECK(!wants(&p, "</think>"));
    toolparse_pipe_fini(&p);
}

int main(void)
{
    uint64_t seed = check_seed();
    test_soup(seed);
    test_chunkings(cases, sizeof cases / sizeof cases[0], NULL, seed);
    cur_format = TOOLPARSE_FMT_V31;
    test_chunkings(cases31, sizeof cases31 / sizeof cases31[0], NULL, seed);
    test_random31(seed, TOOLPARSE_FMT_V31);
    cur_format = TOOLPARSE_FMT_KIMI;
    CHECK_EQ(sizeof kimi_ids / sizeof kimi_ids[0], sizeof cases_kimi / sizeof cases_kimi[0]);
    test_chunkings(cases_kimi, sizeof cases_kimi / sizeof cases_kimi[0], kimi_ids, seed);
    test_random31(seed, TOOLPARSE_FMT_KIMI);
    cur_format = TOOLPARSE_FMT_V3;
    test_request();
    test_pipe(seed);
    test_wants();
    return 0;
}
