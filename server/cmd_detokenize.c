/* cmd_detokenize.c - `tandem detokenize --model DIR [--skip-special]`: a JSON array of token ids
 * on stdin -> the decoded bytes on stdout (exactly, no newline added).
 *
 * Ids out of range or input that is not a JSON array of integers are errors (exit 1).
 * Runs on the main thread.
 */
#include "cmd.h"

#include "common/err.h"
#include "config/cfg.h"
#include "engine/text/tok.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_detokenize(int argc, char **argv)
{
    struct cfg c;
    char err[ERR_LEN] = "";
    if (cfg_load(&c, &argc, argv, err)) {
        fprintf(stderr, "tandem detokenize: %s\n", err);
        return 2;
    }
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--skip-special") == 0) flags |= TOK_DEC_SKIP_SPECIAL;
        else {
            fprintf(stderr, "tandem detokenize: unknown argument '%s' (see --help)\n", argv[i]);
            cfg_fini(&c);
            return 2;
        }
    }
    struct tok *t = NULL;
    int rc = tok_load(&t, c.model_path, err);
    cfg_fini(&c);
    if (rc) {
        fprintf(stderr, "tandem detokenize: %s\n", err);
        return 1;
    }
    json_error_t je;
    json_t *arr = json_loadf(stdin, JSON_DISABLE_EOF_CHECK, &je);
    struct tok_ids ids = {0};
    struct sbuf out = {0};
    if (!json_is_array(arr)) {
        fprintf(stderr, "tandem detokenize: stdin is not a JSON array of token ids%s%s\n",
                arr ? "" : ": ", arr ? "" : je.text);
        rc = ERR_JSON;
    }
    size_t i;
    json_t *v;
    if (!rc) json_array_foreach(arr, i, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX) {
                fprintf(stderr, "tandem detokenize: element %zu is not a token id\n", i);
                rc = ERR_INVAL;
                break;
            }
            if ((rc = tok_ids_push(&ids, (int32_t)json_integer_value(v)))) break;
        }
    if (!rc && (rc = tok_decode(t, ids.v, ids.n, flags, &out, err)) != 0)
        fprintf(stderr, "tandem detokenize: %s\n", err);
    if (!rc) fwrite(out.s, 1, out.n, stdout);
    json_decref(arr);
    tok_ids_fini(&ids);
    sbuf_fini(&out);
    tok_destroy(t);
    return rc ? 1 : 0;
}
