/* tok_gguf.c - struct tok from GGUF metadata: reads the tokenizer.ggml.* keys into a
 * struct tok_vocab and hands it to tok_create_vocab(); and tok_load(), which picks
 * tokenizer.json or a GGUF file for a model path.
 *
 * Kept apart from tokenizer.c so the tokenizer core does not depend on the GGUF reader. Token
 * and merge strings point into the GGUF mapping (gguf_arr_str gives pointer + length), so only
 * the pointer arrays are allocated here, and freed before returning.
 * Threads: whatever thread calls it; the GGUF context is only read.
 */
#include "tok.h"

#include "common/err.h"
#include "engine/weights/gguf.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int get_str_arr(const struct gguf_ctx *g, const char *key, int required, const char ***s,
                       size_t **lens, size_t *n, char *err)
{
    *s = NULL;
    *lens = NULL;
    *n = 0;
    int64_t k = gguf_find_key(g, key);
    if (k < 0) return required ? err_set(err, ERR_FORMAT, "GGUF: %s is missing", key) : 0;
    int et;
    uint64_t cnt;
    int rc = gguf_get_arr(g, k, &et, &cnt, err);
    if (rc) return rc;
    if (et != GGUF_TYPE_STRING)
        return err_set(err, ERR_FORMAT, "GGUF: %s is not a string array", key);
    if (cnt > (1u << 24))
        return err_set(err, ERR_FORMAT, "GGUF: %s has %llu entries", key, (unsigned long long)cnt);
    *s = malloc((cnt ? cnt : 1) * sizeof **s);
    *lens = malloc((cnt ? cnt : 1) * sizeof **lens);
    if (!*s || !*lens) return err_set(err, ERR_NOMEM, "GGUF: %s: out of memory", key);
    for (uint64_t j = 0; j < cnt; j++)
        if ((rc = gguf_arr_str(g, k, j, &(*s)[j], &(*lens)[j], err))) return rc;
    *n = cnt;
    return 0;
}

int tok_create_gguf(struct tok **out, const struct gguf_ctx *g, char *err)
{
    *out = NULL;
    struct tok_vocab v = {.bos_id = -1, .eos_id = -1};
    const char **tokens = NULL, **merges = NULL;
    size_t *tlens = NULL, *mlens = NULL, nt = 0, nm = 0;
    int32_t *types = NULL;
    int64_t x;
    int rc = gguf_find_str(g, "tokenizer.ggml.model", &v.model, err);
    if (rc == ERR_NOT_FOUND) rc = err_set(err, ERR_FORMAT, "GGUF: tokenizer.ggml.model is missing");
    if (!rc && gguf_find_str(g, "tokenizer.ggml.pre", &v.pre, err) == ERR_FORMAT) rc = ERR_FORMAT;
    if (!rc) rc = get_str_arr(g, "tokenizer.ggml.tokens", 1, &tokens, &tlens, &nt, err);
    if (!rc) rc = get_str_arr(g, "tokenizer.ggml.merges", 0, &merges, &mlens, &nm, err);
    if (!rc) {
        int64_t k = gguf_find_key(g, "tokenizer.ggml.token_type");
        if (k >= 0) {
            int et;
            uint64_t cnt;
            rc = gguf_get_arr(g, k, &et, &cnt, err);
            if (!rc && cnt != nt)
                rc = err_set(err, ERR_FORMAT,
                             "GGUF: tokenizer.ggml.token_type has %llu entries, tokens %zu",
                             (unsigned long long)cnt, nt);
            if (!rc && !(types = malloc((nt ? nt : 1) * sizeof *types)))
                rc = err_set(err, ERR_NOMEM, "GGUF: token types: out of memory");
            for (uint64_t j = 0; !rc && j < cnt; j++) {
                int64_t t = 0;
                rc = gguf_arr_i64(g, k, j, &t, err);
                types[j] = (int32_t)t;
            }
        }
    }
    if (!rc) {
        rc = gguf_find_i64(g, "tokenizer.ggml.bos_token_id", &x, err);
        if (!rc) v.bos_id = x >= 0 && (uint64_t)x < nt ? (int32_t)x : -1;
        if (rc == ERR_NOT_FOUND) rc = 0;
    }
    if (!rc) {
        rc = gguf_find_i64(g, "tokenizer.ggml.eos_token_id", &x, err);
        if (!rc) v.eos_id = x >= 0 && (uint64_t)x < nt ? (int32_t)x : -1;
        if (rc == ERR_NOT_FOUND) rc = 0;
    }
    if (!rc) {
        rc = gguf_find_i64(g, "tokenizer.ggml.add_bos_token", &x, err);
        if (!rc) v.add_bos = x != 0;
        if (rc == ERR_NOT_FOUND) rc = 0;
    }
    if (!rc && gguf_find_str(g, "tokenizer.chat_template", &v.chat_template, err) == ERR_FORMAT)
        rc = ERR_FORMAT;
    if (!rc) {
        v.n_tokens = nt;
        v.tokens = tokens;
        v.token_lens = tlens;
        v.token_types = types;
        v.n_merges = nm;
        v.merges = merges;
        v.merge_lens = mlens;
        rc = tok_create_vocab(out, &v, err);
    }
    free(tokens);
    free(tlens);
    free(merges);
    free(mlens);
    free(types);
    return rc;
}

/* ---------------------------------------------------------------- any model path */

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int load_gguf_file(struct tok **out, const char *path, char *err)
{
    struct gguf_ctx *g;
    int rc = gguf_open(path, &g, err);
    if (rc) return rc;
    rc = tok_create_gguf(out, g, err);
    gguf_close(g);
    return rc;
}

int tok_load(struct tok **out, const char *path, char *err)
{
    *out = NULL;
    if (!path || !*path)
        return err_set(err, ERR_CONFIG, "no model given (model.path / --model DIR)");
    struct stat st;
    if (stat(path, &st) != 0) return err_set(err, ERR_IO, "cannot open model path %s", path);
    if (!S_ISDIR(st.st_mode)) return load_gguf_file(out, path, err);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", path);
    if (access(p, R_OK) == 0) return tok_create_dir(out, path, err);
    snprintf(p, sizeof p, "%s/tiktoken.model", path);
    if (access(p, R_OK) == 0) return tok_create_tiktoken(out, path, err);
    /* a GGUF directory: the single file or the first split part, in name order */
    DIR *d = opendir(path);
    if (!d) return err_set(err, ERR_IO, "cannot read directory %s", path);
    char best[1024] = "";
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!ends_with(de->d_name, ".gguf")) continue;
        if (strstr(de->d_name, "-of-") && !strstr(de->d_name, "-00001-of-")) continue;
        if (!best[0] || strcmp(de->d_name, best) < 0) snprintf(best, sizeof best, "%s", de->d_name);
    }
    closedir(d);
    if (!best[0])
        return err_set(err, ERR_IO, "%s has neither tokenizer.json nor a .gguf file", path);
    snprintf(p, sizeof p, "%s/%s", path, best);
    return load_gguf_file(out, p, err);
}
