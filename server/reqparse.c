/* reqparse.c - request JSON -> validated struct api_params.
 *
 * What: one small getter per JSON type (number in a range, integer in a range, bool, string)
 * that treats null/absent as "use the default" and reports the field name on a type or range
 * error, then the field list of the chat and completions APIs (docs/api.md) in order.
 * Why: every 400 names its parameter (OpenAI's "param"), and no request can reach the engine
 * with a value it would have to re-check.
 * Invariants: on any error, everything allocated so far is released by api_params_fini.
 */
#include "reqparse.h"

#include "cache_scope.h"
#include "common/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bad(char *err, const char **param, const char *name, const char *fmt, const char *what)
{
    *param = name;
    return err_set(err, ERR_INVAL, fmt, name, what);
}

/* Number (integer or real) in [lo, hi]; absent/null leaves *out unchanged. */
static int get_num(const json_t *o, const char *name, double lo, double hi, double *out,
                   const char **param, char *err)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return bad(err, param, name, "'%s' must be a number%s", "");
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        *param = name;
        return err_set(err, ERR_INVAL, "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    }
    *out = x;
    return 0;
}

static int get_float(const json_t *o, const char *name, double lo, double hi, float *out,
                     const char **param, char *err)
{
    double d = *out;
    int rc = get_num(o, name, lo, hi, &d, param, err);
    if (rc == 0) *out = (float)d;
    return rc;
}

/* Integer in [lo, hi]; a real with an integral value (e.g. 5.0) is accepted. */
static int get_int64(const json_t *o, const char *name, int64_t lo, int64_t hi, int64_t *out,
                     int *present, const char **param, char *err)
{
    json_t *v = json_object_get(o, name);
    if (present) *present = 0;
    if (!v || json_is_null(v)) return 0;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v);
    } else {
        return bad(err, param, name, "'%s' must be an integer%s", "");
    }
    if (x < lo || x > hi) {
        *param = name;
        return err_set(err, ERR_INVAL, "'%s' must be between %lld and %lld, got %lld", name,
                       (long long)lo, (long long)hi, (long long)x);
    }
    *out = x;
    if (present) *present = 1;
    return 0;
}

static int get_int(const json_t *o, const char *name, int lo, int hi, int *out, const char **param,
                   char *err)
{
    int64_t x = *out;
    int rc = get_int64(o, name, lo, hi, &x, NULL, param, err);
    if (rc == 0) *out = (int)x;
    return rc;
}

static int get_bool(const json_t *o, const char *name, int *out, const char **param, char *err)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return bad(err, param, name, "'%s' must be a boolean%s", "");
    *out = json_is_true(v);
    return 0;
}

static int check_string_or_null(const json_t *o, const char *name, const char **param, char *err)
{
    json_t *v = json_object_get(o, name);
    if (v && !json_is_null(v) && !json_is_string(v))
        return bad(err, param, name, "'%s' must be a string%s", "");
    return 0;
}

static int parse_stop(const json_t *o, struct api_params *p, const char **param, char *err)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return 0;
    const json_t *items[API_MAX_STOP];
    int n = 0;
    if (json_is_string(v)) {
        items[n++] = v;
    } else if (json_is_array(v)) {
        if (json_array_size(v) > API_MAX_STOP) {
            *param = "stop";
            return err_set(err, ERR_INVAL, "'stop' may hold at most %d strings", API_MAX_STOP);
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            items[n] = json_array_get(v, i);
            if (!json_is_string(items[n]))
                return bad(err, param, "stop", "'%s' must be a string or an array of strings%s",
                           "");
            n++;
        }
    } else {
        return bad(err, param, "stop", "'%s' must be a string or an array of strings%s", "");
    }
    for (int i = 0; i < n; i++) {
        size_t len = json_string_length(items[i]);
        if (len == 0) /* it would match everywhere or nowhere: ambiguous, so refused */
            return bad(err, param, "stop", "'%s' strings must not be empty%s", "");
        if (len > API_MAX_STOP_LEN) {
            *param = "stop";
            return err_set(err, ERR_INVAL, "'stop' strings may be at most %d bytes",
                           API_MAX_STOP_LEN);
        }
        if (memchr(json_string_value(items[i]), 0, len))
            return bad(err, param, "stop", "'%s' must not contain NUL characters%s", "");
        p->stop[p->n_stop] = strdup(json_string_value(items[i]));
        if (!p->stop[p->n_stop]) return err_set(err, ERR_NOMEM, "out of memory");
        p->n_stop++;
    }
    return 0;
}

/* A canonical non-negative decimal token id: digits only, no sign, blank or leading zero, at
 * most INT32_MAX ("0" itself is canonical). */
static int canonical_id(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 10 || (n > 1 && key[0] == '0')) return 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] < '0' || key[i] > '9') return 0;
    return strtoll(key, NULL, 10) <= INT32_MAX;
}

/* "cache_salt": a non-empty string of at most CACHE_SCOPE_MAX_SALT bytes (vLLM's field). */
static int parse_cache_salt(const json_t *o, struct api_params *p, const char **param, char *err)
{
    json_t *v = json_object_get(o, "cache_salt");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > CACHE_SCOPE_MAX_SALT)
        return bad(err, param, "cache_salt",
                   "'%s' must be a non-empty string of at most 256 "
                   "bytes%s",
                   "");
    p->cache_salt = json_string_value(v);
    p->cache_salt_len = json_string_length(v);
    return 0;
}

static int parse_logit_bias(const json_t *o, struct api_params *p, const char **param, char *err)
{
    json_t *v = json_object_get(o, "logit_bias");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v))
        return bad(err, param, "logit_bias", "'%s' must be an object of token id -> bias%s", "");
    size_t n = json_object_size(v);
    if (n == 0) return 0;
    if (n > API_MAX_LOGIT_BIAS) {
        *param = "logit_bias";
        return err_set(err, ERR_INVAL, "'logit_bias' may hold at most %d entries",
                       API_MAX_LOGIT_BIAS);
    }
    p->samp.logit_bias_ids = malloc(n * sizeof(int32_t));
    p->samp.logit_bias_vals = malloc(n * sizeof(float));
    if (!p->samp.logit_bias_ids || !p->samp.logit_bias_vals)
        return err_set(err, ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!canonical_id(key)) {
            *param = "logit_bias";
            return err_set(err, ERR_INVAL, "'logit_bias' keys must be token ids, got \"%.40s\"",
                           key);
        }
        if (!json_is_number(val) ||
            !(json_number_value(val) >= -100 && json_number_value(val) <= 100)) {
            *param = "logit_bias";
            return err_set(err, ERR_INVAL, "'logit_bias' values must be numbers in -100..100");
        }
        p->samp.logit_bias_ids[p->samp.n_logit_bias] = (int32_t)strtol(key, NULL, 10);
        p->samp.logit_bias_vals[p->samp.n_logit_bias] = (float)json_number_value(val);
        p->samp.n_logit_bias++;
    }
    return 0;
}

static int parse_messages(const json_t *o, struct api_params *p, const char **param, char *err)
{
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    json_t *m = json_object_get(o, "messages");
    *param = "messages";
    if (!m || json_is_null(m)) return err_set(err, ERR_INVAL, "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return err_set(err, ERR_INVAL, "'messages' must be a non-empty array");
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *msg = json_array_get(m, i);
        if (!json_is_object(msg))
            return err_set(err, ERR_INVAL, "'messages[%zu]' must be an object", i);
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role))
            return err_set(err, ERR_INVAL, "'messages[%zu].role' must be a string", i);
        int known = 0;
        for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
            known |= strcmp(json_string_value(role), roles[r]) == 0;
        if (!known)
            return err_set(err, ERR_INVAL,
                           "'messages[%zu].role' must be one of system, "
                           "developer, user, assistant, tool; got \"%.40s\"",
                           i, json_string_value(role));
        json_t *c = json_object_get(msg, "content");
        int is_assistant = strcmp(json_string_value(role), "assistant") == 0;
        if (!c || json_is_null(c)) {
            if (!is_assistant)
                return err_set(err, ERR_INVAL, "'messages[%zu].content' is required", i);
        } else if (json_is_array(c)) {
            for (size_t j = 0; j < json_array_size(c); j++) {
                json_t *part = json_array_get(c, j);
                json_t *type = json_object_get(part, "type");
                if (!json_is_object(part) || !json_is_string(type))
                    return err_set(err, ERR_INVAL,
                                   "'messages[%zu].content[%zu]' must be an "
                                   "object with a 'type'",
                                   i, j);
                if (strcmp(json_string_value(type), "text") != 0)
                    return err_set(err, ERR_INVAL,
                                   "'messages[%zu].content[%zu].type' \"%.40s\" "
                                   "is not supported (only \"text\")",
                                   i, j, json_string_value(type));
                if (!json_is_string(json_object_get(part, "text")))
                    return err_set(err, ERR_INVAL,
                                   "'messages[%zu].content[%zu].text' must be "
                                   "a string",
                                   i, j);
            }
        } else if (!json_is_string(c)) {
            return err_set(err, ERR_INVAL,
                           "'messages[%zu].content' must be a string or an "
                           "array of text parts",
                           i);
        }
        json_t *name = json_object_get(msg, "name");
        if (name && !json_is_null(name) && !json_is_string(name))
            return err_set(err, ERR_INVAL, "'messages[%zu].name' must be a string", i);
        json_t *tcs = json_object_get(msg, "tool_calls");
        if (tcs && !json_is_null(tcs)) {
            if (!is_assistant)
                return err_set(err, ERR_INVAL,
                               "'messages[%zu].tool_calls' is only allowed in "
                               "assistant messages",
                               i);
            struct tmpl_tool_call *calls = NULL;
            size_t n_calls = 0;
            char terr[ERR_LEN];
            int rc = toolparse_history_calls(msg, &calls, &n_calls, terr);
            free(calls);
            if (rc == ERR_NOMEM) return err_set(err, rc, "out of memory");
            if (rc) return err_set(err, rc, "'messages[%zu]': %s", i, terr);
        }
        json_t *tcid = json_object_get(msg, "tool_call_id");
        if (tcid && !json_is_null(tcid) && !json_is_string(tcid))
            return err_set(err, ERR_INVAL, "'messages[%zu].tool_call_id' must be a string", i);
        if (strcmp(json_string_value(role), "tool") == 0 &&
            !json_is_string(tcid)) /* OpenAI requires it */
            return err_set(err, ERR_INVAL,
                           "'messages[%zu].tool_call_id' is required for a tool "
                           "message",
                           i);
    }
    p->messages = m;
    *param = "";
    return 0;
}

static int parse_prompt(const json_t *o, struct api_params *p, const char **param, char *err)
{
    json_t *v = json_object_get(o, "prompt");
    *param = "prompt";
    if (!v || json_is_null(v)) return err_set(err, ERR_INVAL, "'prompt' is required");
    if (json_is_string(v)) {
        p->prompt = v;
        *param = "";
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return err_set(err, ERR_INVAL,
                       "'prompt' must be a string, an array of strings or an "
                       "array of token ids");
    json_t *first = json_array_get(v, 0);
    if (json_is_integer(first)) { /* [int, ...]: one tokenized prompt */
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_integer(json_array_get(v, i)))
                return err_set(err, ERR_INVAL, "'prompt' token arrays must hold only integers");
    } else { /* [string, ...] or [[int, ...], ...] */
        if (json_array_size(v) > API_MAX_PROMPTS)
            return err_set(err, ERR_INVAL, "'prompt' may hold at most %d prompts", API_MAX_PROMPTS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *e = json_array_get(v, i);
            if (json_is_string(e)) continue;
            if (!json_is_array(e) || json_array_size(e) == 0)
                return err_set(err, ERR_INVAL,
                               "'prompt[%zu]' must be a string or a non-empty "
                               "array of token ids",
                               i);
            for (size_t j = 0; j < json_array_size(e); j++)
                if (!json_is_integer(json_array_get(e, j)))
                    return err_set(err, ERR_INVAL,
                                   "'prompt[%zu]' token arrays must hold only "
                                   "integers",
                                   i);
        }
    }
    p->prompt = v;
    *param = "";
    return 0;
}

/* chat_template_kwargs: an object of JSON values, bounded in keys and size */
static int parse_template_kwargs(const json_t *root, struct api_params *p, const char **param,
                                 char *err)
{
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    if (!kw || json_is_null(kw)) return 0;
    *param = "chat_template_kwargs";
    if (!json_is_object(kw))
        return err_set(err, ERR_INVAL, "'chat_template_kwargs' must be an object");
    if (json_object_size(kw) > API_MAX_KWARGS)
        return err_set(err, ERR_INVAL, "'chat_template_kwargs' has more than %d keys",
                       API_MAX_KWARGS);
    size_t n = json_dumpb(kw, NULL, 0, JSON_COMPACT);
    if (n == 0 || n > API_MAX_KWARGS_BYTES)
        return err_set(err, ERR_INVAL, "'chat_template_kwargs' is larger than %d bytes of JSON",
                       API_MAX_KWARGS_BYTES);
    if (json_object_get(kw, "messages") || json_object_get(kw, "tools"))
        return err_set(err, ERR_INVAL,
                       "'chat_template_kwargs' may not set 'messages' or 'tools' (give them as "
                       "request fields)");
    *param = "";
    p->chat_template_kwargs = kw;
    return 0;
}

int api_params_parse(const json_t *root, int chat, struct api_params *p, const char **param,
                     char *err)
{
    int rc;
    memset(p, 0, sizeof *p);
    *param = "";
    p->chat = chat;
    p->n = 1;
    p->samp.temperature = 1.0f;
    p->samp.top_p = 1.0f;
    p->samp.repetition_penalty = 1.0f;
    if (!json_is_object(root))
        return err_set(err, ERR_INVAL, "the request body must be a JSON object");

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) != 0) goto fail;                                                            \
    } while (0)
    TRY(check_string_or_null(root, "model", param, err));
    json_t *model = json_object_get(root, "model");
    p->model = json_is_string(model) ? json_string_value(model) : NULL;
    if (chat) TRY(parse_messages(root, p, param, err));
    else TRY(parse_prompt(root, p, param, err));

    TRY(get_bool(root, "stream", &p->stream, param, err));
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            rc = bad(err, param, "stream_options", "'%s' must be an object%s", "");
            goto fail;
        }
        TRY(get_bool(so, "include_usage", &p->include_usage, param, err));
    }

    int64_t mt = 0;
    int present = 0;
    TRY(get_int64(root, "max_tokens", 1, 1 << 30, &mt, &present, param, err));
    if (present) p->max_tokens = (int)mt;
    TRY(get_int64(root, "max_completion_tokens", 1, 1 << 30, &mt, &present, param, err));
    if (present) p->max_tokens = (int)mt;
    TRY(get_int(root, "min_tokens", 0, 1 << 30, &p->min_tokens, param, err));
    if (p->max_tokens && p->min_tokens > p->max_tokens) {
        *param = "min_tokens";
        rc = err_set(err, ERR_INVAL, "'min_tokens' (%d) must not exceed 'max_tokens' (%d)",
                     p->min_tokens, p->max_tokens);
        goto fail;
    }

    TRY(get_float(root, "temperature", 0, 2, &p->samp.temperature, param, err));
    TRY(get_float(root, "top_p", 0, 1, &p->samp.top_p, param, err));
    if (p->samp.top_p <= 0) {
        *param = "top_p";
        rc = err_set(err, ERR_INVAL, "'top_p' must be greater than 0");
        goto fail;
    }
    TRY(get_int(root, "top_k", -1, 1 << 30, &p->samp.top_k, param, err));
    if (p->samp.top_k < 0) p->samp.top_k = 0; /* vLLM: -1 = off */
    TRY(get_float(root, "min_p", 0, 1, &p->samp.min_p, param, err));
    TRY(get_float(root, "presence_penalty", -2, 2, &p->samp.presence_penalty, param, err));
    TRY(get_float(root, "frequency_penalty", -2, 2, &p->samp.frequency_penalty, param, err));
    TRY(get_float(root, "repetition_penalty", 0, 10, &p->samp.repetition_penalty, param, err));
    if (p->samp.repetition_penalty <= 0) {
        *param = "repetition_penalty";
        rc = err_set(err, ERR_INVAL, "'repetition_penalty' must be greater than 0");
        goto fail;
    }
    int64_t seed = 0;
    TRY(get_int64(root, "seed", INT64_MIN, INT64_MAX, &seed, &p->seed_set, param, err));
    p->samp.seed = (uint64_t)seed;
    TRY(parse_stop(root, p, param, err));
    TRY(get_int(root, "n", 1, API_MAX_N, &p->n, param, err));

    if (chat) {
        TRY(get_bool(root, "logprobs", &p->logprobs, param, err));
        TRY(get_int(root, "top_logprobs", 0, ENG_MAX_TOP_LOGPROBS, &p->top_logprobs, param, err));
        if (p->top_logprobs > 0 && !p->logprobs) {
            *param = "top_logprobs";
            rc = err_set(err, ERR_INVAL, "'top_logprobs' requires 'logprobs': true");
            goto fail;
        }
    } else {
        /* legacy completions: logprobs is the number of alternatives (null = none) */
        json_t *lp = json_object_get(root, "logprobs");
        if (lp && !json_is_null(lp)) {
            TRY(get_int(root, "logprobs", 0, ENG_MAX_TOP_LOGPROBS, &p->top_logprobs, param, err));
            p->logprobs = 1;
        }
        TRY(get_bool(root, "echo", &p->echo, param, err));
        json_t *sfx = json_object_get(root, "suffix");
        if (sfx && !json_is_null(sfx) && !(json_is_string(sfx) && json_string_length(sfx) == 0)) {
            rc = bad(err, param, "suffix", "'%s' is not supported%s", "");
            goto fail;
        }
        json_t *bo = json_object_get(root, "best_of");
        if (bo && !json_is_null(bo) && !(json_is_integer(bo) && json_integer_value(bo) == p->n)) {
            rc = bad(err, param, "best_of", "'%s' other than n is not supported%s", "");
            goto fail;
        }
    }
    TRY(parse_logit_bias(root, p, param, err));
    TRY(get_bool(root, "ignore_eos", &p->ignore_eos, param, err));
    TRY(get_int(root, "priority", -1000000, 1000000, &p->priority, param, err));
    TRY(check_string_or_null(root, "user", param, err));
    TRY(parse_cache_salt(root, p, param, err));
    json_t *md = json_object_get(root, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md)) {
        rc = bad(err, param, "metadata", "'%s' must be an object%s", "");
        goto fail;
    }

    if (chat) {
        /* tools, then the grammar: a forced tool call takes precedence over response_format */
        TRY(toolparse_req_parse(root, &p->tools, param, err));
        if (p->tools.choice == TOOLPARSE_CHOICE_REQUIRED ||
            p->tools.choice == TOOLPARSE_CHOICE_NAMED) {
            rc = jsonschema_compile_tool_call(
                p->tools.tools,
                p->tools.choice == TOOLPARSE_CHOICE_NAMED ? p->tools.choice_name : NULL,
                TOOLPARSE_FMT_V3, &p->grammar, err);
            if (rc) {
                *param = "tools";
                goto fail;
            }
        } else {
            TRY(jsonschema_response_format(root, &p->grammar, param, err));
        }
        TRY(parse_template_kwargs(root, p, param, err));
        json_t *rfmt = json_object_get(root, "reasoning_format");
        if (rfmt && !json_is_null(rfmt)) {
            const char *v = json_string_value(rfmt);
            if (!v || (strcmp(v, "none") && strcmp(v, "deepseek") && strcmp(v, "auto"))) {
                rc = bad(err, param, "reasoning_format",
                         "'%s' must be \"deepseek\" (split into "
                         "reasoning_content, the default), \"auto\" (the same) or \"none\" (keep "
                         "it inline in content)%s",
                         "");
                goto fail;
            }
            p->reasoning_inline = strcmp(v, "none") == 0;
        }
    } else {
        /* legacy completions: response_format constrains the text too; no tools */
        TRY(jsonschema_response_format(root, &p->grammar, param, err));
        json_t *tools = json_object_get(root, "tools");
        if (tools && !json_is_null(tools) && !(json_is_array(tools) && !json_array_size(tools))) {
            rc = bad(err, param, "tools", "'%s' is only supported by /v1/chat/completions%s", "");
            goto fail;
        }
    }
#undef TRY
    p->samp.logprobs = p->logprobs;
    p->samp.top_logprobs = p->top_logprobs;
    return 0;
fail:
    api_params_fini(p);
    return rc;
}

void api_params_fini(struct api_params *p)
{
    for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    p->n_stop = 0;
    free(p->samp.logit_bias_ids);
    free(p->samp.logit_bias_vals);
    p->samp.logit_bias_ids = NULL;
    p->samp.logit_bias_vals = NULL;
    p->samp.n_logit_bias = 0;
    jsonschema_unref(p->grammar);
    p->grammar = NULL;
}

int api_content_text(const json_t *content, char **out)
{
    size_t len = 0;
    if (json_is_string(content)) {
        len = json_string_length(content);
    } else if (json_is_array(content)) {
        for (size_t j = 0; j < json_array_size(content); j++)
            len += json_string_length(json_object_get(json_array_get(content, j), "text"));
    }
    char *s = malloc(len + 1);
    if (!s) return ERR_NOMEM;
    size_t at = 0;
    if (json_is_string(content)) {
        memcpy(s, json_string_value(content), len);
        at = len;
    } else if (json_is_array(content)) {
        for (size_t j = 0; j < json_array_size(content); j++) {
            json_t *t = json_object_get(json_array_get(content, j), "text");
            memcpy(s + at, json_string_value(t), json_string_length(t));
            at += json_string_length(t);
        }
    }
    s[at] = 0;
    *out = s;
    return 0;
}
