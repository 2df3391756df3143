/* tmpl_batch.c - test helper for the chat-template tests.
 *
 *   tmpl_batch render KIND BOS < convs.json   convs: [{"messages": [...], "add_generation_prompt":
 *                                            bool}, ...] -> JSON array of rendered strings (or
 *                                            {"error": "INVAL"} per failed conversation)
 *   tmpl_batch builtin KIND                  print tmpl_builtin_jinja(KIND)
 *   tmpl_batch detect < template.txt         print the recognized kind, or "unrecognized: ..."
 *   tmpl_batch fingerprint < template.txt    print the template fingerprint (hex)
 * Messages use OpenAI's shape: role, content (string or null), tool_calls [{id, type,
 * function: {name, arguments}}], tool_call_id.
 */
#include "../../common/err.h"
#include "../../engine/text/text_internal.h"
#include "../../engine/text/tmpl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_stdin(void)
{
    size_t n = 0, cap = 1 << 16;
    char *b = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + n, 1, cap - n - 1, stdin);
        if (!r) break;
        n += r;
    }
    b[n] = 0;
    return b;
}

int main(int argc, char **argv)
{
    char err[ERR_LEN] = "";
    if (argc >= 3 && strcmp(argv[1], "builtin") == 0) {
        const char *j = tmpl_builtin_jinja(argv[2]);
        if (!j) return 1;
        fputs(j, stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "detect") == 0) {
        char *t = read_stdin();
        enum tmpl_kind k;
        if (tmpl_detect(t, &k, err)) printf("unrecognized: %s\n", err);
        else printf("%s\n", tmpl_kind_name(k));
        free(t);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "fingerprint") == 0) {
        char *t = read_stdin();
        printf("0x%016llxull\n", (unsigned long long)tmpl__fingerprint(t));
        free(t);
        return 0;
    }
    if (argc < 4 || strcmp(argv[1], "render") != 0) {
        fprintf(stderr, "usage: see the header of tmpl_batch.c\n");
        return 2;
    }
    enum tmpl_kind kind;
    if (tmpl_kind_parse(argv[2], &kind, err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    json_error_t je;
    json_t *convs = json_loadf(stdin, 0, &je);
    if (!json_is_array(convs)) {
        fprintf(stderr, "bad input: %s\n", je.text);
        return 1;
    }
    json_t *res = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(convs, i, c)
    {
        json_t *msgs = json_object_get(c, "messages");
        size_t n = json_array_size(msgs);
        struct tmpl_msg *m = calloc(n + 1, sizeof *m);
        struct tmpl_tool_call **calls = calloc(n + 1, sizeof *calls);
        for (size_t k = 0; k < n; k++) {
            json_t *x = json_array_get(msgs, k);
            m[k].role = json_string_value(json_object_get(x, "role"));
            m[k].content = json_string_value(json_object_get(x, "content"));
            m[k].tool_call_id = json_string_value(json_object_get(x, "tool_call_id"));
            json_t *tc = json_object_get(x, "tool_calls");
            if (json_is_array(tc)) {
                size_t nc = json_array_size(tc);
                calls[k] = calloc(nc + 1, sizeof **calls);
                for (size_t q = 0; q < nc; q++) {
                    json_t *y = json_array_get(tc, q), *f = json_object_get(y, "function");
                    calls[k][q].id = json_string_value(json_object_get(y, "id"));
                    calls[k][q].type = json_string_value(json_object_get(y, "type"));
                    calls[k][q].name = json_string_value(json_object_get(f, "name"));
                    calls[k][q].arguments = json_string_value(json_object_get(f, "arguments"));
                }
                m[k].tool_calls = calls[k];
                m[k].n_tool_calls = nc;
            }
        }
        struct tmpl_opts o = {.add_generation_prompt =
                                  json_is_true(json_object_get(c, "add_generation_prompt")),
                              .bos_token = argv[3]};
        struct sbuf out = {0};
        int rc = tmpl_render(kind, m, n, &o, &out, err);
        if (rc) {
            json_t *e = json_object();
            json_object_set_new(e, "error", json_string(err_name(rc)));
            json_array_append_new(res, e);
        } else {
            json_array_append_new(res, json_stringn(out.s ? out.s : "", out.n));
        }
        sbuf_fini(&out);
        for (size_t k = 0; k < n; k++) free(calls[k]);
        free(calls);
        free(m);
    }
    json_dumpf(res, stdout, JSON_COMPACT);
    json_decref(res);
    json_decref(convs);
    return 0;
}
