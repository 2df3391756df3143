/* fuzz_jinja.c - libFuzzer target: the Jinja interpreter (parser and renderer).
 *
 * The input up to its first NUL byte is the template; what follows, when it parses as a JSON
 * object, is the context (else a fixed conversation with a tool call is). Rendering runs under
 * small limits so that each input stays fast.
 * Properties: parsing returns 0 or ERR_FORMAT/ERR_NOMEM with a message; rendering returns 0,
 * ERR_INVAL or ERR_NOMEM with a message and appends nothing on error, within the output limit.
 */
#include "common/err.h"
#include "engine/text/jinja.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char default_ctx[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
    "\"content\": \"h\\u00e9\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": "
    "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, "
    "2.5]}}}]},"
    "{\"role\": \"tool\", \"content\": \"out\"}], \"tools\": [{\"type\": \"function\", "
    "\"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}], "
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    size_t tlen = strlen(text);
    char err[ERR_LEN] = "";
    struct jinja *t = NULL;
    int rc = jinja_parse(text, &t, err);
    if (rc) {
        if ((rc != ERR_FORMAT && rc != ERR_NOMEM) || !err[0]) abort();
        free(text);
        return 0;
    }
    json_t *ctx = NULL;
    if (tlen + 1 < size) ctx = json_loadb(text + tlen + 1, size - tlen - 1, 0, NULL);
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        ctx = json_loads(default_ctx, 0, NULL);
    }
    struct jinja_limits lim = {
        .max_memory = 4 << 20, .max_output = 1 << 16, .max_steps = 20000, .max_depth = 16};
    struct sbuf out = {0};
    if (sbuf_append(&out, "x", 1)) abort();
    err[0] = 0;
    rc = jinja_render(t, ctx, &lim, &out, err);
    if (rc && ((rc != ERR_INVAL && rc != ERR_NOMEM) || !err[0] || out.n != 1)) abort();
    if (!rc && out.n - 1 > lim.max_output) abort();
    sbuf_fini(&out);
    json_decref(ctx);
    jinja_free(t);
    free(text);
    return 0;
}
