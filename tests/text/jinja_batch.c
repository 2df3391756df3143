/* jinja_batch.c - test helper: render a Jinja template with many contexts.
 *
 *   jinja_batch TEMPLATE_FILE < contexts.json   contexts: a JSON array of objects (the template
 *                                               variables) -> a JSON array with, per context,
 *                                               the rendered string or {"error": "NAME: message"}
 * A syntax error prints {"parse_error": "NAME: message"} instead of the array.
 */
#include "common/err.h"
#include "engine/text/jinja.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = 0, cap = 1 << 16;
    char *b = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + n, 1, cap - n - 1, f);
        if (!r) break;
        n += r;
    }
    b[n] = 0;
    fclose(f);
    return b;
}

int main(int argc, char **argv)
{
    char err[ERR_LEN] = "", msg[ERR_LEN + 32];
    if (argc < 2) {
        fprintf(stderr, "usage: jinja_batch TEMPLATE_FILE < contexts.json\n");
        return 2;
    }
    char *text = read_file(argv[1]);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    struct jinja *t = NULL;
    int rc = jinja_parse(text, &t, err);
    if (rc) {
        snprintf(msg, sizeof msg, "%s: %s", err_name(rc), err);
        json_t *o = json_pack("{s:s}", "parse_error", msg);
        json_dumpf(o, stdout, JSON_COMPACT);
        json_decref(o);
        free(text);
        return 0;
    }
    json_error_t je;
    json_t *ctxs = json_loadf(stdin, 0, &je);
    if (!json_is_array(ctxs)) {
        fprintf(stderr, "bad input: %s\n", je.text);
        return 1;
    }
    json_t *res = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(ctxs, i, c)
    {
        struct sbuf out = {0};
        rc = jinja_render(t, c, NULL, &out, err);
        if (rc) {
            snprintf(msg, sizeof msg, "%s: %s", err_name(rc), err);
            json_array_append_new(res, json_pack("{s:s}", "error", msg));
        } else {
            json_array_append_new(res, json_stringn(out.s ? out.s : "", out.n));
        }
        sbuf_fini(&out);
    }
    json_dumpf(res, stdout, JSON_COMPACT);
    json_decref(res);
    json_decref(ctxs);
    jinja_free(t);
    free(text);
    return 0;
}
