/* tok_batch.c - test helper: tokenize many strings at once for the differential tests.
 *
 * usage: tok_batch MODEL_DIR [--special] [--via-vocab PRE] < strings.json > ids.json
 *        --via-vocab PRE: build the tokenizer the way the GGUF path does (tok_create_vocab with
 *                         tokenizer.ggml.pre = PRE) from the tokenizer.json in MODEL_DIR, to
 *                         test the built-in pre-tokenizer regex sets against tokenizer.json's
 *        tok_batch --cn-ranges    (the code point ranges PCRE2 treats as unassigned, \p{Cn},
 *                                  as a JSON array of [lo, hi]: the tests use it to leave out
 *                                  characters newer than PCRE2's Unicode tables)
 * stdin is a JSON array of strings; stdout a JSON array with, per string, the array of ids
 * (or the string "ERR_UTF8" etc. when encoding fails). Also, per string, the decoded ids are
 * checked to give the input back (exit 1 otherwise).
 */
#include "../../common/err.h"
#include "../../engine/text/tok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tokenizer.json -> struct tok_vocab as a GGUF converter would write it. */
static int load_via_vocab(struct tok **out, const char *dir, const char *pre, char *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return err_set(err, ERR_FORMAT, "%s: %s", path, je.text);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) if ((size_t)json_integer_value(v) + 1 > n) n =
        (size_t)json_integer_value(v) + 1;
    size_t i;
    json_array_foreach(added, i, v)
    {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));
        if (id + 1 > n) n = id + 1;
    }
    const char **tokens = calloc(n, sizeof *tokens);
    int32_t *types = calloc(n, sizeof *types);
    for (size_t k = 0; k < n; k++) {
        tokens[k] = "";
        types[k] = TOK_TYPE_UNUSED;
    }
    json_object_foreach(vocab, key, v)
    {
        tokens[json_integer_value(v)] = key;
        types[json_integer_value(v)] = TOK_TYPE_NORMAL;
    }
    json_array_foreach(added, i, v)
    {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));
        tokens[id] = json_string_value(json_object_get(v, "content"));
        types[id] =
            json_is_true(json_object_get(v, "special")) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    size_t nm = json_array_size(merges);
    char **ms = calloc(nm + 1, sizeof *ms);
    for (size_t k = 0; k < nm; k++) {
        json_t *m = json_array_get(merges, k);
        if (json_is_string(m)) {
            ms[k] = strdup(json_string_value(m));
        } else {
            const char *a = json_string_value(json_array_get(m, 0)),
                       *b = json_string_value(json_array_get(m, 1));
            ms[k] = malloc(strlen(a) + strlen(b) + 2);
            sprintf(ms[k], "%s %s", a, b);
        }
    }
    struct tok_vocab tv = {.model = "gpt2",
                           .pre = pre,
                           .n_tokens = n,
                           .tokens = tokens,
                           .token_types = types,
                           .n_merges = nm,
                           .merges = (const char *const *)ms,
                           .bos_id = 0,
                           .eos_id = 1};
    int rc = tok_create_vocab(out, &tv, err);
    for (size_t k = 0; k < nm; k++) free(ms[k]);
    free(ms);
    free(tokens);
    free(types);
    json_decref(root);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tok_batch MODEL_DIR [--special] < strings.json\n");
        return 2;
    }
    if (strcmp(argv[1], "--cn-ranges") == 0) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR) "^\\p{Cn}$", PCRE2_ZERO_TERMINATED, PCRE2_UTF,
                                       &ec, &eo, NULL);
        pcre2_match_data *md = pcre2_match_data_create(1, NULL);
        long lo = -1;
        int first = 1;
        printf("[");
        for (long cp = 0; cp <= 0x110000; cp++) {
            int cn = 0;
            if (cp < 0x110000 && !(cp >= 0xD800 && cp <= 0xDFFF)) {
                char b[4];
                int n = cp < 0x80 ? (b[0] = (char)cp, 1)
                        : cp < 0x800
                            ? (b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 63)), 2)
                        : cp < 0x10000 ? (b[0] = (char)(0xE0 | (cp >> 12)),
                                          b[1] = (char)(0x80 | ((cp >> 6) & 63)),
                                          b[2] = (char)(0x80 | (cp & 63)), 3)
                                       : (b[0] = (char)(0xF0 | (cp >> 18)),
                                          b[1] = (char)(0x80 | ((cp >> 12) & 63)),
                                          b[2] = (char)(0x80 | ((cp >> 6) & 63)),
                                          b[3] = (char)(0x80 | (cp & 63)), 4);
                cn = pcre2_match(re, (PCRE2_SPTR)b, (size_t)n, 0, 0, md, NULL) > 0;
            }
            if (cn && lo < 0) lo = cp;
            if (!cn && lo >= 0) {
                printf("%s[%ld,%ld]", first ? "" : ",", lo, cp - 1);
                first = 0;
                lo = -1;
            }
        }
        printf("]\n");
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        return 0;
    }
    unsigned flags = 0;
    const char *via = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0) flags |= TOK_ENC_SPECIAL;
        else if (strcmp(argv[i], "--via-vocab") == 0 && i + 1 < argc) via = argv[++i];
    }
    char err[ERR_LEN] = "";
    struct tok *t;
    if (via ? load_via_vocab(&t, argv[1], via, err) : tok_load(&t, argv[1], err)) {
        fprintf(stderr, "tok_batch: %s\n", err);
        return 1;
    }
    json_error_t je;
    json_t *in = json_loadf(stdin, JSON_ALLOW_NUL, &je);
    if (!json_is_array(in)) {
        fprintf(stderr, "tok_batch: bad input: %s\n", je.text);
        return 1;
    }
    json_t *out = json_array();
    struct tok_ids ids = {0};
    struct sbuf s = {0};
    size_t i;
    json_t *v;
    int bad = 0;
    json_array_foreach(in, i, v)
    {
        ids.n = 0;
        int rc = tok_encode(t, json_string_value(v), json_string_length(v), flags, &ids, err);
        if (rc) {
            json_array_append_new(out, json_string(err_name(rc)));
            continue;
        }
        json_t *a = json_array();
        for (size_t k = 0; k < ids.n; k++) json_array_append_new(a, json_integer(ids.v[k]));
        json_array_append_new(out, a);
        s.n = 0;
        if (tok_decode(t, ids.v, ids.n, 0, &s, err) || s.n != json_string_length(v) ||
            memcmp(s.s, json_string_value(v), s.n) != 0) {
            fprintf(stderr, "tok_batch: string %zu does not round-trip\n", i);
            bad = 1;
        }
    }
    json_dumpf(out, stdout, JSON_COMPACT);
    json_decref(in);
    json_decref(out);
    tok_ids_fini(&ids);
    sbuf_fini(&s);
    tok_destroy(t);
    return bad;
}
