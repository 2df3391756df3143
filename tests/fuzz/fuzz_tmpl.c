/* fuzz_tmpl.c - libFuzzer target: chat-template rendering of messages built from the input.
 *
 * Byte 0: template family (bits 0-1), add_generation_prompt (bit 2). The rest is split at '\x01'
 * into messages; in each, the first byte picks the role (system, user, assistant, tool, or an
 * unknown one), whether content is NULL and whether there are tool calls; the remaining bytes,
 * split at '\x02', are the content, then tool-call names and arguments. Strings are
 * NUL-terminated copies (they may hold invalid UTF-8: the renderer must still not misbehave).
 * Properties: 0 or ERR_INVAL with a message; on error nothing is appended.
 */
#include "fuzz_common.h"
#include "engine/text/tmpl.h"

#include <stdint.h>
#include <string.h>

#define MAX_MSGS 64
#define MAX_CALLS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const enum tmpl_kind kinds[4] = {TMPL_DEEPSEEK_V3, TMPL_DEEPSEEK_R1,
                                            TMPL_DEEPSEEK_R1_0528, TMPL_DEEPSEEK_V3};
    static const char *roles[8] = {"system",    "user", "assistant", "tool",
                                   "developer", "",     "assistant", "user"};
    enum tmpl_kind kind = kinds[data[0] & 3];
    struct tmpl_opts o = {.add_generation_prompt = (data[0] >> 2) & 1,
                          .bos_token = (data[0] >> 3) & 1 ? "<｜begin▁of▁sentence｜>" : NULL};
    /* one copy of the input with the separators turned into NULs: the strings point into it */
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    struct tmpl_msg msgs[MAX_MSGS];
    struct tmpl_tool_call calls[MAX_MSGS][MAX_CALLS];
    memset(msgs, 0, sizeof msgs);
    memset(calls, 0, sizeof calls);
    size_t n_msgs = 0;
    char *p = buf + 1, *end = buf + size;
    while (p < end && n_msgs < MAX_MSGS) {
        char *m_end = memchr(p, 1, (size_t)(end - p));
        if (!m_end) m_end = end;
        *m_end = 0;
        unsigned sel = (unsigned char)*p;
        struct tmpl_msg *m = &msgs[n_msgs];
        m->role = roles[sel & 7];
        char *f = *p ? p + 1 : p; /* fields of this message, split at '\x02' */
        char *fields[1 + 2 * MAX_CALLS];
        size_t nf = 0;
        while (nf < 1 + 2 * MAX_CALLS) {
            fields[nf++] = f;
            char *sep = strchr(f, 2);
            if (!sep) break;
            *sep = 0;
            f = sep + 1;
        }
        m->content = (sel >> 3) & 1 ? NULL : fields[0];
        if ((sel >> 4) & 1) {
            size_t nc = (nf - 1) / 2;
            for (size_t c = 0; c < nc; c++) {
                calls[n_msgs][c].name = fields[1 + 2 * c];
                calls[n_msgs][c].arguments = fields[2 + 2 * c];
                calls[n_msgs][c].type = (sel >> 5) & 1 ? "function" : NULL;
            }
            m->tool_calls = calls[n_msgs];
            m->n_tool_calls = nc;
        }
        if ((sel >> 6) & 1) m->tool_call_id = "call_0";
        n_msgs++;
        p = m_end + 1;
    }
    struct sbuf out = {0};
    char err[ERR_LEN] = "";
    if (sbuf_append(&out, "pre", 3) != 0) abort();
    int rc = tmpl_render(kind, msgs, n_msgs, &o, &out, err);
    if (rc != 0 && (rc != ERR_INVAL || out.n != 3 || !err[0])) {
        fprintf(stderr, "tmpl_render: rc %d (%s), output %zu bytes\n", rc, err, out.n);
        abort();
    }
    sbuf_fini(&out);
    free(buf);
    return 0;
}
