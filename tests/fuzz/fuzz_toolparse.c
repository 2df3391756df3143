/* fuzz_toolparse.c - libFuzzer target: the output pipeline (reasoning split + DeepSeek tool-call
 * parsing, toolparse_pipe) on arbitrary model output, streamed vs not.
 *
 * Byte 0: reasoning (bits 0-1: off, 0, START_THINKING, INLINE) and tools (bit 2: two named
 * tools, else any name; bit 3: tool parsing off; bit 4: DeepSeek-V3.1's call syntax; else bit 5:
 * Kimi-K2's, whose markers the bytes below then expand to). Byte 1 seeds the chunking. The rest is
 * the generated text, with a few bytes expanded to the markers so calls are likely: 0x01..0x05 ->
 * calls-begin, call-begin, sep, call-end, calls-end; 0x06 -> "<think>", 0x07 -> "</think>".
 * The text is fed once whole (non-streaming: toolparse_pipe_message) and once in chunks of 1..16
 * bytes, cut at character boundaries as the detokenizer does, with toolparse_pipe_deltas after
 * each (streaming). Property (toolparse.h: "the streamed
 * and the non-streamed results are always the same"): the streamed content, reasoning_content
 * and tool calls (name, arguments, id per index) add up to the non-streamed message.
 */
#include "fuzz_common.h"
#include "common/utf8.h"
#include "engine/text/toolparse.h"

#include <stdint.h>
#include <string.h>

static json_t *tools_root;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_error_t je;
    tools_root =
        json_loads("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
                   "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
                   0, &je);
    if (!tools_root) abort();
    return 0;
}

/* Accumulate a streamed delta array into content/reasoning strings and a calls array. */
static void accumulate(json_t *deltas, struct sbuf *content, struct sbuf *reasoning, json_t *calls)
{
    size_t i;
    json_t *d;
    json_array_foreach(deltas, i, d)
    {
        json_t *c = json_object_get(d, "content"), *r = json_object_get(d, "reasoning_content");
        if (json_is_string(c)) sbuf_append(content, json_string_value(c), json_string_length(c));
        if (json_is_string(r)) sbuf_append(reasoning, json_string_value(r), json_string_length(r));
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(d, "tool_calls"), k, tc)
        {
            json_int_t idx = json_integer_value(json_object_get(tc, "index"));
            if (idx < 0 || idx > 1000) abort();
            while (json_array_size(calls) <= (size_t)idx)
                json_array_append_new(
                    calls, json_pack("{s:s, s:s, s:s}", "id", "", "name", "", "arguments", ""));
            json_t *acc = json_array_get(calls, (size_t)idx);
            json_t *fn = json_object_get(tc, "function");
            const char *id = json_string_value(json_object_get(tc, "id"));
            const char *name = json_string_value(json_object_get(fn, "name"));
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            if (id) json_object_set_new(acc, "id", json_string(id));
            if (name) json_object_set_new(acc, "name", json_string(name));
            if (args) {
                char *joined = NULL;
                if (asprintf(&joined, "%s%s", json_string_value(json_object_get(acc, "arguments")),
                             args) < 0)
                    abort();
                json_object_set_new(acc, "arguments", json_string(joined));
                free(joined);
            }
        }
    }
}

static int same_str(const json_t *v, const struct sbuf *s)
{
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    return n == s->n && (n == 0 || memcmp(json_string_value(v), s->s, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static const int rflags[4] = {-1, 0, REASONING_START_THINKING, REASONING_INLINE};
    int flags = rflags[data[0] & 3];
    struct toolparse_req req;
    memset(&req, 0, sizeof req);
    const char *param;
    char err[ERR_LEN];
    if (!(data[0] & 8)) {
        if (data[0] & 4) {
            if (toolparse_req_parse(tools_root, &req, &param, err) != 0) abort();
        } else {
            req.choice = TOOLPARSE_CHOICE_AUTO; /* no names: any name is accepted */
        }
    } else {
        req.choice = TOOLPARSE_CHOICE_NONE;
    }
    req.format = data[0] & 16   ? TOOLPARSE_FMT_V31
                 : data[0] & 32 ? TOOLPARSE_FMT_KIMI
                                : TOOLPARSE_FMT_V3;
    static const char *ds_marks[8] = {NULL,
                                      TOOLPARSE_CALLS_BEGIN,
                                      TOOLPARSE_CALL_BEGIN,
                                      TOOLPARSE_SEP,
                                      TOOLPARSE_CALL_END,
                                      TOOLPARSE_CALLS_END,
                                      "<think>",
                                      "</think>"};
    static const char *kimi_marks[8] = {NULL,
                                        TOOLPARSE_KIMI_CALLS_BEGIN,
                                        TOOLPARSE_KIMI_CALL_BEGIN,
                                        TOOLPARSE_KIMI_ARGS,
                                        TOOLPARSE_KIMI_CALL_END,
                                        TOOLPARSE_KIMI_CALLS_END,
                                        "<think>",
                                        "</think>"};
    const char *const *marks = req.format == TOOLPARSE_FMT_KIMI ? kimi_marks : ds_marks;
    struct sbuf text = {0};
    for (size_t i = 2; i < size; i++) {
        if (data[i] >= 1 && data[i] <= 7)
            sbuf_append(&text, marks[data[i]], strlen(marks[data[i]]));
        else sbuf_append(&text, (const char *)data + i, 1);
    }
    if (utf8_check(text.s, text.n, NULL) != 0) { /* the detokenizer only emits UTF-8 */
        sbuf_fini(&text);
        return 0;
    }
    /* non-streaming */
    struct toolparse_pipe a, b;
    if (toolparse_pipe_init(&a, flags, &req, 42, err) != 0) abort();
    if ((text.n && toolparse_pipe_feed(&a, text.s, text.n) != 0) || toolparse_pipe_finish(&a) != 0)
        abort();
    json_t *msg = json_object();
    if (toolparse_pipe_message(&a, msg) != 0) abort();
    /* streaming, in chunks */
    if (toolparse_pipe_init(&b, flags, &req, 42, err) != 0) abort();
    json_t *deltas = json_array(), *calls = json_array();
    struct sbuf content = {0}, reasoning = {0};
    uint32_t rng = data[1] * 2654435761u + 1;
    for (size_t pos = 0; pos < text.n;) {
        rng = rng * 1103515245u + 12345u;
        size_t len = 1 + (rng >> 16) % 16;
        if (len > text.n - pos) len = text.n - pos;
        /* the detokenizer hands over whole characters only */
        while (pos + len < text.n && ((unsigned char)text.s[pos + len] & 0xC0) == 0x80) len++;
        if (toolparse_pipe_feed(&b, text.s + pos, len) != 0) abort();
        pos += len;
        if (toolparse_pipe_deltas(&b, deltas) != 0) abort();
    }
    if (toolparse_pipe_finish(&b) != 0 || toolparse_pipe_deltas(&b, deltas) != 0) abort();
    accumulate(deltas, &content, &reasoning, calls);
    /* compare */
    int ok = same_str(json_object_get(msg, "content"), &content) &&
             same_str(json_object_get(msg, "reasoning_content"), &reasoning);
    json_t *mcalls = json_object_get(msg, "tool_calls");
    ok = ok && json_array_size(mcalls) == json_array_size(calls);
    for (size_t i = 0; ok && i < json_array_size(calls); i++) {
        json_t *m = json_array_get(mcalls, i), *s = json_array_get(calls, i);
        json_t *fn = json_object_get(m, "function");
        ok = json_equal(json_object_get(m, "id"), json_object_get(s, "id")) &&
             json_equal(json_object_get(fn, "name"), json_object_get(s, "name")) &&
             json_equal(json_object_get(fn, "arguments"), json_object_get(s, "arguments"));
    }
    if (!ok) {
        char *m = json_dumps(msg, JSON_COMPACT), *d = json_dumps(deltas, JSON_COMPACT);
        fprintf(stderr, "streamed != non-streamed\nmessage: %s\ndeltas: %s\n", m, d);
        abort();
    }
    json_decref(msg);
    json_decref(deltas);
    json_decref(calls);
    sbuf_fini(&content);
    sbuf_fini(&reasoning);
    sbuf_fini(&text);
    toolparse_pipe_fini(&a);
    toolparse_pipe_fini(&b);
    return 0;
}
