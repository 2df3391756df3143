/* cmd_tokenize.c - `tandem tokenize --model DIR [--special] [--bos]`: text on stdin -> JSON array
 * of token ids on stdout.
 *
 * Without --special the text is plain text (added tokens such as "<｜User｜>" are not matched),
 * which is what /tokenize does for user text by default; --special matches them as a chat
 * template's output needs. --bos prepends the BOS id. Invalid UTF-8 on stdin is an error
 * (exit 1, offset named). Runs on the main thread.
 */
#include "cmd.h"

#include "common/err.h"
#include "config/cfg.h"
#include "engine/text/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read all of f; returns a malloc'd buffer (NUL-terminated) or NULL. */
static char *read_all(FILE *f, size_t *len)
{
    size_t n = 0, cap = 1 << 16;
    char *b = malloc(cap);
    if (!b) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    if (ferror(f)) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

int cmd_tokenize(int argc, char **argv)
{
    struct cfg c;
    char err[ERR_LEN] = "";
    if (cfg_load(&c, &argc, argv, err)) {
        fprintf(stderr, "tandem tokenize: %s\n", err);
        return 2;
    }
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0) flags |= TOK_ENC_SPECIAL;
        else if (strcmp(argv[i], "--bos") == 0) flags |= TOK_ENC_BOS;
        else {
            fprintf(stderr, "tandem tokenize: unknown argument '%s' (see --help)\n", argv[i]);
            cfg_fini(&c);
            return 2;
        }
    }
    struct tok *t = NULL;
    int rc = tok_load(&t, c.model_path, err);
    cfg_fini(&c);
    if (rc) {
        fprintf(stderr, "tandem tokenize: %s\n", err);
        return 1;
    }
    size_t len = 0;
    char *text = read_all(stdin, &len);
    struct tok_ids ids = {0};
    if (!text) {
        fprintf(stderr, "tandem tokenize: cannot read stdin\n");
        rc = ERR_IO;
    } else if ((rc = tok_encode(t, text, len, flags, &ids, err)) != 0) {
        fprintf(stderr, "tandem tokenize: %s\n", err);
    } else {
        putchar('[');
        for (size_t i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", ids.v[i]);
        printf("]\n");
    }
    free(text);
    tok_ids_fini(&ids);
    tok_destroy(t);
    return rc ? 1 : 0;
}
