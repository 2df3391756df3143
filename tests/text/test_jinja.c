/* test_jinja.c - the Jinja interpreter: Python-Jinja2 semantics that the JavaScript reference
 * (jinja_diff.mjs) does not share, whitespace control, error messages (syntax errors with line
 * and column, raise_exception, type errors) and the limits on hostile templates. */
#include "common/err.h"
#include "engine/text/jinja.h"
#include "engine/text/tmpl.h"
#include "tests/check.h"

#include <jansson.h>
#include <pthread.h>

static char out_buf[1 << 16];
static char err[ERR_LEN];

/* render src with vars (a JSON text, or NULL for none); returns the code; output in out_buf */
static int render_lim(const char *src, const char *vars, const struct jinja_limits *lim)
{
    struct jinja *t = NULL;
    err[0] = 0;
    out_buf[0] = 0;
    int rc = jinja_parse(src, &t, err);
    if (rc) return rc;
    json_t *v = vars ? json_loads(vars, 0, NULL) : NULL;
    CHECK(!vars || v);
    struct sbuf out = {0};
    CHECK(sbuf_append(&out, "keep", 4) == 0);
    rc = jinja_render(t, v, lim, &out, err);
    if (rc) CHECK_EQ(out.n, 4); /* nothing appended on error */
    snprintf(out_buf, sizeof out_buf, "%.*s", (int)(out.n - 4), out.s + 4);
    sbuf_fini(&out);
    json_decref(v);
    jinja_free(t);
    return rc;
}

static int render(const char *src, const char *vars) { return render_lim(src, vars, NULL); }

static void ok(const char *src, const char *vars, const char *want)
{
    int rc = render(src, vars);
    if (rc) fprintf(stderr, "template %s: %s\n", src, err);
    CHECK_EQ(rc, 0);
    if (strcmp(out_buf, want) != 0) fprintf(stderr, "template: %s\n", src);
    CHECK_STR(out_buf, want);
}

static void fails(const char *src, const char *vars, int code, const char *msg)
{
    int rc = render(src, vars);
    if (rc != code) fprintf(stderr, "template %s: rc %d (%s)\n", src, rc, err);
    CHECK_EQ(rc, code);
    CHECK_CONTAINS(err, msg);
}

static void python_semantics(void)
{
    ok("{{ none }} {{ true }} {{ False }} {{ x }}|", NULL, "None True False |");
    ok("{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 3 / 2 }} {{ 4 / 2 }}", NULL,
       "1.0 0.30000000000000004 1e+20 1e-05 1.5 2.0");
    ok("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 3 * [0] }}", NULL,
       "-4 2 -2 1024 ababab [0, 0, 0]");
    ok("{{ [1, 'a', none, true] }} {{ {'k': 'v', 'n': [1]} }} {{ \"it's\" }}", NULL,
       "[1, 'a', None, True] {'k': 'v', 'n': [1]} it's");
    ok("{{ ['it\\'s'] }}", NULL, "[\"it's\"]");
    ok("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }}", NULL,
       "True False True True");
    ok("{{ 'x' in 'xyz' }} {{ 2 not in [1] }} {{ 'k' in {'k': 1} }}", NULL, "True True True");
    ok("{{ 'a' ~ 1 ~ none ~ x }}", NULL, "a1None");
    ok("{{ 'h\\u00e9\\n'|length }} {{ 'héllo'[1] }} {{ 'héllo'[1:3] }} {{ 'abc'[::-1] }}", NULL,
       "3 é él cba");
    ok("{{ [1,2,3,4][1:-1] }} {{ [1,2,3][-1] }} {{ [1][5] }}|", NULL, "[2, 3] 3 |");
    ok("{{ '\\u3000 x\\u00a0'.strip() }}|{{ ' a  b '.split() }}|{{ 'a,b,,c'.split(',') }}", NULL,
       "x|['a', 'b']|['a', 'b', '', 'c']");
    ok("{{ 'xxaxx'.strip('x') }}|{{ '\\n\\fa'.lstrip('\\n') }}", NULL, "a|\fa");
    ok("{{ 'Hello'.startswith(('x', 'He')) }} {{ 'abc'.replace('', '-') }} {{ 'aXbX'.count('X') }}",
       NULL, "True -a-b-c- 2");
    ok("{{ '{} and {name}'.format(1, name='n') }} {{ ', '.join(['a', 'b']) }}", NULL,
       "1 and n a, b");
    ok("{{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'x'|upper }}", NULL,
       "Hello World Hello X");
    /* Unicode letters map one to one; sharp s has no one-letter capital and stays */
    ok("{{ 'ÄÖÜ Ǆ Σ'|lower }} {{ 'straße ǳ ǆ ɐ'.upper() }} {{ '\u0130'|lower }}", NULL,
       "äöü ǆ σ STRAßE Ǳ Ǆ Ɐ i");
    ok("{{ x|default('d') }} {{ ''|default('d', true) }} {{ none|default('d') }}", NULL,
       "d d None");
    ok("{{ [3,1,2]|sort }} {{ ['b','A','a']|sort }} {{ ['b','A','a']|unique|list }}", NULL,
       "[1, 2, 3] ['A', 'a', 'b'] ['b', 'A']");
    ok("{{ {'b': 1, 'a': 2}|dictsort }} {{ {'a': 1}|items|list }}", NULL,
       "[['a', 2], ['b', 1]] [['a', 1]]");
    ok("{{ 2.5|round }} {{ 3.14159|round(2) }} {{ '42'|int + 1 }} {{ 'x'|int }} {{ -3|abs }}", NULL,
       "2.0 3.14 43 0 3");
    ok("{{ [1,2,3]|sum }} {{ [1,5,2]|max }} {{ [1,5,2]|min }} {{ [1,2]|reverse|list }}", NULL,
       "6 5 1 [2, 1]");
    ok("{{ 'a\\nb'|indent(2) }}|{{ 'a'|indent(2, true) }}", NULL, "a\n  b|  a");
    ok("{{ x is defined }} {{ none is none }} {{ 3 is odd }} {{ 4 is divisibleby 2 }} "
       "{{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 1.5 is number }} "
       "{{ true is boolean }} {{ 1 is integer }} {{ 1 is eq 1 }} {{ 'a' is in 'abc' }}",
       NULL, "False True True True True True True True True True True True");
    /* undefined: printed '', iterated as empty, false; attributes of it are an error (Jinja2) */
    ok("[{{ nope }}]{% for x in nope %}x{% else %}empty{% endfor %}{{ nope|length }}", NULL,
       "[]empty0");
    fails("{{ nope.attr }}", NULL, ERR_INVAL, "undefined");
    fails("{{ nope + 1 }}", NULL, ERR_INVAL, "unsupported operand");
    fails("{{ m.content + 'x' }}", "{\"m\": {\"content\": null}}", ERR_INVAL,
          "'NoneType' and 'str'");
    fails("{% for x in none %}{% endfor %}", NULL, ERR_INVAL, "not iterable");
    /* tojson as transformers defines it: ensure_ascii=False, separators, indent, sort_keys */
    ok("{{ {'a': 'é\"\\n', 'b': [1, 2.5, none, true]}|tojson }}", NULL,
       "{\"a\": \"é\\\"\\n\", \"b\": [1, 2.5, null, true]}");
    ok("{{ {'a': [1], 'b': {}}|tojson(indent=2) }}", NULL,
       "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
    ok("{{ {'b': 1, 'a': 2}|tojson(separators=(',', ':'), sort_keys=true) }}", NULL,
       "{\"a\":2,\"b\":1}");
    fails("{{ x|tojson }}", NULL, ERR_INVAL, "not JSON serializable");
}

static void statements(void)
{
    ok("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{{ ',' if not loop.last }}{% endfor %}", NULL,
       "3,7");
    ok("{% for x in [1,2,3,4] if x is even %}{{ loop.index }}/{{ loop.length }}:{{ x }} "
       "{% endfor %}",
       NULL, "1/2:2 2/2:4 ");
    ok("{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.cycle('o', "
       "'e') }}{% endfor %}",
       NULL, "02Trueo11Falsee");
    ok("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break "
       "%}{% endif %}{{ x }}{% endfor %}",
       NULL, "013");
    ok("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", NULL, "1");
    ok("{% set ns = namespace(x=1) %}{% for i in [1] %}{% set ns.x = 2 %}{% endfor %}{{ ns.x }}",
       NULL, "2");
    ok("{% set a, b = [1, 2] %}{{ b }}{% set s %}<{{ a }}>{% endset %}{{ s }}", NULL, "2<1>");
    ok("{% macro m(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}", NULL,
       "1B12");
    ok("{% if 0 %}a{% elif [] %}b{% elif 'x' %}c{% else %}d{% endif %}", NULL, "c");
    ok("{% set l = [] %}{% for i in range(3) %}{% set _ = l.append(i) %}{% endfor %}{{ l }}", NULL,
       "[0, 1, 2]");
    ok("{% generation %}kept{% endgeneration %}{# comment #}", NULL, "kept");
    /* whitespace control, trim_blocks and lstrip_blocks (Hugging Face's settings) */
    ok("a\n  {% if true %}\n  b\n  {% endif %}\nc", NULL, "a\n  b\nc");
    ok("a  {{- ' b ' -}}  c", NULL, "a b c");
    ok("x {%- if true -%} y {%- endif %}\n", NULL, "xy");
    ok("a\n  {#- c -#}\n  b", NULL, "ab");
    ok("  {{ 'v' }}\n", NULL, "  v");
    ok("{{ '%}' }}{{ {'a': {'b': 1}}['a'] }}", NULL, "%}{'b': 1}");
}

static void errors(void)
{
    fails("a\n{% if x %}b", NULL, ERR_FORMAT, "line 2");
    fails("a\n{% if x %}b", NULL, ERR_FORMAT, "expected endif");
    fails("{{ 1 + }}", NULL, ERR_FORMAT, "line 1 column 8");
    fails("{% for %}", NULL, ERR_FORMAT, "expected a name");
    fails("{% foo %}", NULL, ERR_FORMAT, "unknown or unexpected statement: foo");
    fails("{{ 'abc }}", NULL, ERR_FORMAT, "unterminated string");
    fails("x\n\n   {{ a", NULL, ERR_FORMAT, "line 3 column 4: unclosed");
    fails("{% endif %}", NULL, ERR_FORMAT, "endif");
    fails("{{ raise_exception('Only user and assistant roles are supported!') }}", NULL, ERR_INVAL,
          "chat template error: Only user and assistant roles are supported!");
    fails("{{ x|nofilter }}", NULL, ERR_INVAL, "unknown filter 'nofilter'");
    fails("{{ x is notatest }}", NULL, ERR_INVAL, "unknown test 'notatest'");
    fails("{{ 1 / 0 }}", NULL, ERR_INVAL, "division by zero");
    fails("{{ 9223372036854775807 + 1 }}", NULL, ERR_INVAL, "overflow");
    fails("{% set x = 1 %}{% set x.a = 2 %}", NULL, ERR_INVAL, "non-namespace");
    fails("{{ 'a' < 1 }}", NULL, ERR_INVAL, "cannot order");
    fails("{{ [{}]|selectattr(1.5)|list }}", NULL, ERR_INVAL, "attribute expects a string");
    fails("{{ [9223372036854775807, 1]|sum }}", NULL, ERR_INVAL, "overflow");
    ok("{{ (-9223372036854775807 - 1) is divisibleby(-1) }}", NULL, "True");
}

static void limits(void)
{
    struct jinja_limits lim;
    jinja_default_limits(&lim);
    lim.max_steps = 10000;
    CHECK_EQ(render_lim("{% for i in range(100000) %}{% endfor %}", NULL, &lim), ERR_INVAL);
    CHECK_CONTAINS(err, "loop iterations");
    CHECK_EQ(render_lim("{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) "
                        "%}{% endfor %}{% endfor %}{% endfor %}",
                        NULL, &lim),
             ERR_INVAL);
    jinja_default_limits(&lim);
    CHECK_EQ(render_lim("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, &lim),
             ERR_INVAL);
    CHECK_CONTAINS(err, "nested deeper than 64");
    lim.max_output = 1000;
    CHECK_EQ(render_lim("{% for i in range(1000) %}xx{% endfor %}", NULL, &lim), ERR_INVAL);
    CHECK_CONTAINS(err, "output larger than 1000 bytes");
    jinja_default_limits(&lim);
    lim.max_memory = 1 << 20;
    CHECK_EQ(render_lim("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = "
                        "ns.s + ns.s %}{% endfor %}",
                        NULL, &lim),
             ERR_NOMEM);
    CHECK_CONTAINS(err, "limit is 1048576 bytes");
    CHECK_EQ(render_lim("{{ 'x' * 100000000000 }}", NULL, &lim), ERR_NOMEM);
    /* self-reference, empty repetition, long operator chains: errors or quick answers */
    ok("{% set l = [] %}{% set _ = l.append(l) %}{{ l == l }}", NULL, "False");
    CHECK_EQ(render("{% set l = [] %}{% set _ = l.append(l) %}{{ l }}", NULL), ERR_INVAL);
    ok("{{ '' * 1000000000000000000 }}{{ ([] * 1000000000000000000)|length }}", NULL, "0");
    char chain[8000] = "{{ 1";
    for (int i = 0; i < 1000; i++) strcat(chain, " + 1");
    strcat(chain, " }}");
    CHECK_EQ(render(chain, NULL), ERR_FORMAT);
    CHECK_CONTAINS(err, "expression nested too deeply");
    /* deep nesting is a syntax error, not a stack overflow */
    char deep[2100];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 1000; i++) deep[n++] = ')';
    deep[n] = 0;
    char src[2200];
    snprintf(src, sizeof src, "{{ %s }}", deep);
    CHECK_EQ(render(src, NULL), ERR_FORMAT);
    CHECK_CONTAINS(err, "nested too deeply");
}

/* the chat-template glue: context variables, normalizations, kwargs */
static void chat_glue(void)
{
    struct jinja *t = NULL;
    CHECK_EQ(jinja_parse("{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}"
                         "{% for c in m.tool_calls or [] %}[{{ c.function.arguments.city }}]"
                         "{% endfor %};{% endfor %}{{ add_generation_prompt }}{{ lang }}",
                         &t, err),
             0);
    json_t *msgs = json_loads("[{\"role\": \"developer\", \"content\": [{\"type\": \"text\", "
                              "\"text\": \"a\"}, {\"type\": \"text\", \"text\": \"b\"}]},"
                              "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": "
                              "[{\"type\": \"function\", \"function\": {\"name\": \"w\", "
                              "\"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]}]",
                              0, NULL);
    json_t *kw = json_loads("{\"lang\": \"fr\"}", 0, NULL);
    CHECK(msgs && kw);
    struct tmpl_jinja_ctx c = {
        .messages = msgs, .kwargs = kw, .add_generation_prompt = 1, .bos_token = "<s>"};
    struct sbuf out = {0};
    CHECK_EQ(tmpl_jinja_render(t, &c, &out, err), 0);
    CHECK_STR(out.s, "<s>system:ab;assistant:None[Paris];Truefr");
    json_decref(kw);
    kw = json_loads("{\"messages\": []}", 0, NULL);
    c.kwargs = kw;
    out.n = 0;
    CHECK_EQ(tmpl_jinja_render(t, &c, &out, err), ERR_INVAL);
    json_decref(kw);
    json_decref(msgs);
    sbuf_fini(&out);
    jinja_free(t);

    /* selection: recognized templates keep their built-in renderer, others are interpreted */
    enum tmpl_kind k;
    CHECK_EQ(tmpl_select("auto", tmpl_builtin_jinja("deepseek-r1"), &k, err), 0);
    CHECK_EQ(k, TMPL_DEEPSEEK_R1);
    CHECK_EQ(tmpl_select("auto", "{{ messages }}", &k, err), 0);
    CHECK_EQ(k, TMPL_JINJA);
    CHECK_EQ(tmpl_select("jinja", tmpl_builtin_jinja("deepseek-r1"), &k, err), 0);
    CHECK_EQ(k, TMPL_JINJA);
    CHECK_EQ(tmpl_select("jinja", NULL, &k, err), ERR_CONFIG);
    struct tmpl_modes m;
    tmpl_modes_of(tmpl_builtin_jinja("deepseek-r1"), &m);
    CHECK(m.deepseek_tools && m.think);
    tmpl_modes_of("<|im_start|>{{ x }}", &m);
    CHECK(!m.deepseek_tools && !m.think);
}

/* one parsed template rendered by several threads at once gives each the same text */
struct job {
    const struct jinja *t;
    const json_t *vars;
    char out[256];
    int rc;
};

static void *render_many(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < 200 && j->rc == 0; i++) {
        struct sbuf out = {0};
        char e[ERR_LEN];
        j->rc = jinja_render(j->t, j->vars, NULL, &out, e);
        if (j->rc == 0) snprintf(j->out, sizeof j->out, "%s", out.s ? out.s : "");
        sbuf_fini(&out);
    }
    return NULL;
}

static void concurrent(void)
{
    struct jinja *t = NULL;
    CHECK_EQ(jinja_parse("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + "
                         "1 %}{{ m.role|upper }}{{ ' ' if not loop.last }}{% endfor %}={{ ns.n }}",
                         &t, err),
             0);
    json_t *vars = json_loads("{\"messages\": [{\"role\": \"a\"}, {\"role\": \"b\"}]}", 0, NULL);
    CHECK(vars);
    struct job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){.t = t, .vars = vars};
        CHECK_EQ(pthread_create(&th[i], NULL, render_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(jobs[i].rc, 0);
        CHECK_STR(jobs[i].out, "A B=2");
    }
    json_decref(vars);
    jinja_free(t);
}

int main(void)
{
    python_semantics();
    statements();
    errors();
    limits();
    chat_glue();
    concurrent();
    printf("jinja: ok\n");
    return 0;
}
