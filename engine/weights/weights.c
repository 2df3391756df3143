/* weights.c - the model on disk: open every weight file of a directory, one tensor index over
 * them, hyperparameters, validation, routed-expert views.
 *
 * Open: list the directory (*.safetensors, then *.gguf, each sorted by name; gguf-split sets
 * `X-0000N-of-0000M.gguf` must be complete and are opened in shard order; a path naming one shard
 * opens its whole set), open each file with its validating reader, read hyperparameters
 * (config.json; else GGUF deepseek2 metadata; else a tandem hybrid file's `tandem.config`; else
 * config.json in the directory above), then index every tensor under its canonical name
 * (names.c). MTP tensors (layer >= n_layers, blk.N.nextn.*) are skipped and summarized once. Two
 * kinds of 1-D U8 blobs are decoded into typed tensors: KTransformers' `X.weight` + `X.ggml_type`
 * (shape from the hyperparameters) and tandem's hybrid files (`tandem.ggml_type.X` /
 * `tandem.shape.X` in __metadata__); their byte size must match exactly.
 *
 * Duplicates (the same canonical name from two files): the first wins, except stacked routed
 * experts where the last wins; per-expert tensors of a (layer, projection) that has a stacked
 * tensor are dropped at finalize. Finalize also sorts the index (natural order: blk.2 < blk.10)
 * for bsearch lookups and links each `X.weight_scale_inv` to `X.weight` as its `scale`.
 *
 * Memory: each index entry is its own allocation, so wt_tensor pointers stay valid across
 * wt_add_dir() (only their `scale` links are recomputed). Data stays in the private read-only
 * mappings; nothing is copied.
 *
 * Threads: open/add/validate/close on one thread; everything else is read-only afterwards.
 */
#include "weights_internal.h"
#include "gguf.h"
#include "safetensors.h"

#include "common/err.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { FILE_SFT = 1, FILE_GGUF = 2 };

struct wt_file {
    char *path;
    int kind;
    struct sft_file *st;
    struct gguf_ctx *gg;
};

struct ent {
    struct wt_tensor t; /* first member: a struct wt_tensor * is a struct ent * */
    int layer, proj, expert;
    int stacked; /* a whole ffn_X_exps tensor */
    int dead;
};

struct wt_model {
    char *dir;
    struct wt_hparams hp;
    struct wt_file *files;
    int n_files, cap_files;
    struct ent **ents;
    int n_ents, cap_ents;
    int *hash; /* open addressing: ent index + 1, 0 = empty */
    size_t hash_cap;
    struct ent **sorted; /* live entries, natural name order */
    int n_sorted;
    int n_skipped_mtp;
    int mtp_layers[8]; /* distinct patterns skipped (the first 8): layer * 2 + nextn */
    int n_mtp_layers;
    int mtp_more;      /* more distinct layers than listed */
    char skipped[256]; /* wt_skipped() */
};

/* ---- small helpers --------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int hash_rebuild(struct wt_model *m, size_t min_cap)
{
    size_t cap = 1024;
    while (cap < min_cap * 2) cap *= 2;
    int *h = calloc(cap, sizeof *h);
    if (!h) return ERR_NOMEM;
    free(m->hash);
    m->hash = h;
    m->hash_cap = cap;
    for (int i = 0; i < m->n_ents; i++) {
        if (m->ents[i]->dead) continue;
        size_t k = fnv(m->ents[i]->t.name) & (cap - 1);
        while (h[k]) k = (k + 1) & (cap - 1);
        h[k] = i + 1;
    }
    return 0;
}

/* slot of name (live entry) or of the empty slot where it would go */
static size_t hash_slot(const struct wt_model *m, const char *name)
{
    size_t k = fnv(name) & (m->hash_cap - 1);
    while (m->hash[k] && strcmp(m->ents[m->hash[k] - 1]->t.name, name) != 0)
        k = (k + 1) & (m->hash_cap - 1);
    return k;
}

/* ---- accessors ------------------------------------------------------------------------------- */

const struct wt_hparams *wt_hparams(const struct wt_model *m) { return &m->hp; }
const char *wt_dir(const struct wt_model *m) { return m->dir; }
int wt_count(const struct wt_model *m) { return m->n_sorted; }
int wt_n_files(const struct wt_model *m) { return m->n_files; }

const struct wt_tensor *wt_at(const struct wt_model *m, int i)
{
    return (i >= 0 && i < m->n_sorted) ? &m->sorted[i]->t : NULL;
}

const char *wt_file_name(const struct wt_model *m, int file)
{
    return (file >= 0 && file < m->n_files) ? m->files[file].path : "?";
}

const struct wt_tensor *wt_get(const struct wt_model *m, const char *name)
{
    int lo = 0, hi = m->n_sorted - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = wt__natural_cmp(m->sorted[mid]->t.name, name);
        if (c == 0) return &m->sorted[mid]->t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const struct wt_tensor *wt_getf(const struct wt_model *m, const char *fmt, ...)
{
    char name[WT_NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof name) return NULL;
    return wt_get(m, name);
}

void wt_close(struct wt_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_files; i++) {
        sft_close(m->files[i].st);
        gguf_close(m->files[i].gg);
        free(m->files[i].path);
    }
    for (int i = 0; i < m->n_ents; i++) free(m->ents[i]);
    free(m->ents);
    free(m->files);
    free(m->hash);
    free(m->sorted);
    free(m->dir);
    free(m);
}

/* ---- index building -------------------------------------------------------------------------- */

static int add_ent(struct wt_model *m, const char *canon, const struct wt__name_info *ni, int type,
                   int ndim, const int64_t *shape, const void *data, size_t nbytes, int file,
                   char *err)
{
    if (strlen(canon) >= WT_NAME_LEN)
        return err_set(err, ERR_FORMAT, "%s: tensor name '%.60s...' too long", m->files[file].path,
                       canon);
    if ((size_t)(m->n_ents + 1) * 2 > m->hash_cap) {
        int rc = hash_rebuild(m, (size_t)m->n_ents + 1);
        if (rc) return err_set(err, rc, "out of memory");
    }
    int stacked = ni->proj >= 0 && ni->expert < 0 && ends_with(canon, "_exps.weight");
    size_t slot = hash_slot(m, canon);
    if (m->hash[slot]) {
        struct ent *old = m->ents[m->hash[slot] - 1];
        if (old->t.file == file)
            return err_set(err, ERR_FORMAT, "%s: tensor '%s' appears twice", m->files[file].path,
                           canon);
        if (!(stacked && old->stacked)) {
            LOG_DEBUG("weights", "%s: '%s' already from %s; ignored", m->files[file].path, canon,
                      m->files[old->t.file].path);
            return 0;
        }
        old->dead = 1; /* later stacked experts win (experts_from) */
    }
    if (m->n_ents == m->cap_ents) {
        int cap = m->cap_ents ? m->cap_ents * 2 : 1024;
        struct ent **e = realloc(m->ents, sizeof *e * (size_t)cap);
        if (!e) return err_set(err, ERR_NOMEM, "out of memory");
        m->ents = e;
        m->cap_ents = cap;
    }
    struct ent *e = calloc(1, sizeof *e);
    if (!e) return err_set(err, ERR_NOMEM, "out of memory");
    snprintf(e->t.name, sizeof e->t.name, "%s", canon);
    e->t.type = type;
    e->t.ndim = ndim;
    for (int d = 0; d < WT_MAX_DIMS; d++) e->t.shape[d] = d < ndim ? shape[d] : 1;
    e->t.data = data;
    e->t.nbytes = nbytes;
    e->t.file = file;
    e->layer = ni->layer;
    e->proj = ni->proj;
    e->expert = ni->expert;
    e->stacked = stacked;
    m->ents[m->n_ents++] = e;
    m->hash[slot] = m->n_ents;
    return 0;
}

/* skip MTP layers; 1 = skip (counted and their layers noted for wt_skipped) */
static int is_mtp(struct wt_model *m, const struct wt__name_info *ni)
{
    if (!ni->nextn && !(ni->layer >= 0 && ni->layer >= m->hp.n_layers)) return 0;
    m->n_skipped_mtp++;
    int key = ni->layer * 2 + (ni->nextn != 0); /* blk.N.* or blk.N.nextn.* */
    int seen = ni->layer < 0;
    for (int i = 0; i < m->n_mtp_layers && !seen; i++) seen = m->mtp_layers[i] == key;
    if (!seen && m->n_mtp_layers < 8) m->mtp_layers[m->n_mtp_layers++] = key;
    else if (!seen) m->mtp_more = 1;
    return 1;
}

/* "N MTP tensors: blk.61.*, ..." (or "") */
static void skipped_summary(struct wt_model *m)
{
    char *s = m->skipped;
    size_t n = sizeof m->skipped;
    s[0] = 0;
    if (!m->n_skipped_mtp) return;
    int k = snprintf(s, n, "%d MTP tensor%s (multi-token prediction, unused):", m->n_skipped_mtp,
                     m->n_skipped_mtp == 1 ? "" : "s");
    for (int i = 0; i < m->n_mtp_layers && k > 0 && (size_t)k < n; i++)
        k += snprintf(s + k, n - (size_t)k, "%s blk.%d.%s*", i ? "," : "", m->mtp_layers[i] / 2,
                      m->mtp_layers[i] % 2 ? "nextn." : "");
    if (m->mtp_more && k > 0 && (size_t)k < n) snprintf(s + k, n - (size_t)k, ", ...");
}

const char *wt_skipped(const struct wt_model *m) { return m->skipped; }

/* bytes of a tensor of `type` with this shape; 0 on mismatch (*ok = 0) */
static size_t shape_bytes(int type, int ndim, const int64_t *shape, int *ok)
{
    if (ndim < 1) {
        *ok = 1;
        return (size_t)qtype_traits(type)->type_size;
    }
    size_t nb = qtype_row_bytes(type, shape[ndim - 1], ok);
    for (int d = 0; *ok && d < ndim - 1; d++) {
        if (shape[d] < 0 || (shape[d] && nb > SIZE_MAX / 4 / (size_t)shape[d])) *ok = 0;
        else nb *= (size_t)shape[d];
    }
    return *ok ? nb : 0;
}

static int parse_shape_list(const char *s, int64_t *shape, int *ndim)
{
    *ndim = 0;
    while (*s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 0 || *ndim >= WT_MAX_DIMS) return -1;
        shape[(*ndim)++] = v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *ndim ? 0 : -1;
}

static int index_sft(struct wt_model *m, int fi, char *err)
{
    const struct sft_file *f = m->files[fi].st;
    const char *path = m->files[fi].path;
    const char *ver = sft_meta(f, "tandem.format_version");
    if (ver && strcmp(ver, "1") != 0)
        return err_set(err, ERR_UNSUPPORTED, "%s: tandem format version %s (this build reads 1)",
                       path, ver);
    for (int i = 0; i < sft_n_tensors(f); i++) {
        const struct sft_tensor *t = sft_at(f, i);
        if (ends_with(t->name, ".ggml_type")) continue; /* consumed with its blob */
        char canon[256];
        struct wt__name_info ni;
        if (wt__canon_name(t->name, canon, sizeof canon, &ni))
            return err_set(err, ERR_FORMAT, "%s: tensor name '%.60s...' too long", path, t->name);
        if (is_mtp(m, &ni)) continue;
        int type = t->type, ndim = t->ndim;
        int64_t shape[WT_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (t->type == QTYPE_U8) {
            /* GGML blob? KTransformers: sibling X.ggml_type; tandem: __metadata__ */
            char key[300];
            const char *tt, *ts;
            int gtype = -1, have_shape = 0;
            snprintf(key, sizeof key, "tandem.ggml_type.%s", t->name);
            if ((tt = sft_meta(f, key))) {
                gtype = qtype_from_name(tt);
                snprintf(key, sizeof key, "tandem.shape.%s", t->name);
                ts = sft_meta(f, key);
                if (!ts || parse_shape_list(ts, shape, &ndim))
                    return err_set(err, ERR_FORMAT, "%s: tensor '%s': missing or bad %s", path,
                                   t->name, key);
                have_shape = 1;
                if (gtype < 0 || gtype >= 100)
                    return err_set(err, ERR_UNSUPPORTED, "%s: tensor '%s': unknown ggml type '%s'",
                                   path, t->name, tt);
            } else if (ends_with(t->name, ".weight")) {
                snprintf(key, sizeof key, "%.*s.ggml_type", (int)(strlen(t->name) - 7), t->name);
                const struct sft_tensor *gt = sft_find(f, key);
                if (gt) {
                    int64_t v;
                    if (gt->type != QTYPE_I64 || gt->nbytes != 8)
                        return err_set(err, ERR_FORMAT, "%s: '%s' must be one int64", path, key);
                    memcpy(&v, gt->data, 8);
                    if (v < 0 || v >= 100 || !qtype_traits((int)v))
                        return err_set(err, ERR_UNSUPPORTED,
                                       "%s: tensor '%s': unsupported ggml "
                                       "type %lld",
                                       path, t->name, (long long)v);
                    gtype = (int)v;
                }
            }
            if (gtype >= 0) {
                if (!have_shape) {
                    ndim = wt_expected_shape(&m->hp, canon, shape);
                    if (!ndim)
                        return err_set(err, ERR_FORMAT, "%s: blob '%s' is no known model tensor",
                                       path, t->name);
                }
                int ok;
                size_t want = shape_bytes(gtype, ndim, shape, &ok);
                if (!ok || want != t->nbytes)
                    return err_set(err, ERR_FORMAT,
                                   "%s: tensor '%s': %zu bytes, but %s of this "
                                   "shape needs %zu",
                                   path, t->name, t->nbytes, qtype_name(gtype), want);
                type = gtype;
            }
        }
        int rc = add_ent(m, canon, &ni, type, ndim, shape, t->data, t->nbytes, fi, err);
        if (rc) return rc;
    }
    return 0;
}

static int index_gguf(struct wt_model *m, int fi, char *err)
{
    const struct gguf_ctx *g = m->files[fi].gg;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        struct gguf_tensor_info ti;
        gguf_tensor_info(g, i, &ti);
        char canon[256];
        struct wt__name_info ni;
        if (wt__canon_name(ti.name, canon, sizeof canon, &ni))
            return err_set(err, ERR_FORMAT, "%s: tensor name too long", m->files[fi].path);
        if (is_mtp(m, &ni)) continue;
        int64_t shape[WT_MAX_DIMS];
        for (int d = 0; d < ti.n_dims; d++) shape[d] = ti.ne[ti.n_dims - 1 - d];
        int rc = add_ent(m, canon, &ni, ti.type, ti.n_dims, shape, ti.data, ti.nbytes, fi, err);
        if (rc) return rc;
    }
    return 0;
}

static int cmp_ent(const void *a, const void *b)
{
    return wt__natural_cmp((*(struct ent *const *)a)->t.name, (*(struct ent *const *)b)->t.name);
}

static int finalize(struct wt_model *m, char *err)
{
    /* per-expert tensors lose to a stacked tensor of the same (layer, projection) */
    int nl = m->hp.n_layers;
    unsigned char *stk = calloc((size_t)nl * 3 + 1, 1);
    if (!stk) return err_set(err, ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->n_ents; i++) {
        struct ent *e = m->ents[i];
        if (!e->dead && e->stacked && e->layer >= 0 && e->layer < nl)
            stk[e->layer * 3 + e->proj] = 1;
    }
    for (int i = 0; i < m->n_ents; i++) {
        struct ent *e = m->ents[i];
        if (!e->dead && e->expert >= 0 && e->proj >= 0 && e->layer < nl &&
            stk[e->layer * 3 + e->proj])
            e->dead = 1;
    }
    free(stk);
    struct ent **s = realloc(m->sorted, sizeof *s * (size_t)(m->n_ents + 1));
    if (!s) return err_set(err, ERR_NOMEM, "out of memory");
    m->sorted = s;
    m->n_sorted = 0;
    for (int i = 0; i < m->n_ents; i++)
        if (!m->ents[i]->dead) {
            m->ents[i]->t.scale = NULL;
            s[m->n_sorted++] = m->ents[i];
        }
    qsort(s, (size_t)m->n_sorted, sizeof *s, cmp_ent);
    for (int i = 0; i < m->n_sorted; i++) {
        const char *n = s[i]->t.name;
        if (!ends_with(n, "_scale_inv")) continue;
        char base[WT_NAME_LEN];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(n) - 10), n);
        struct wt_tensor *w = (struct wt_tensor *)wt_get(m, base);
        if (w) w->scale = &s[i]->t;
    }
    if (hash_rebuild(m, (size_t)m->n_ents + 1)) return err_set(err, ERR_NOMEM, "out of memory");
    if (m->hp.vocab_size == 0) {
        const struct wt_tensor *t = wt_get(m, "token_embd.weight");
        if (!t || t->ndim != 2 || t->shape[0] > (1 << 24))
            return err_set(err, ERR_FORMAT,
                           "%s: vocabulary size unknown (no config.json, no "
                           "vocab in GGUF metadata, no token_embd)",
                           m->dir);
        m->hp.vocab_size = (int)t->shape[0];
    }
    return 0;
}

/* ---- files ----------------------------------------------------------------------------------- */

static int add_file(struct wt_model *m, const char *path, char *err)
{
    if (m->n_files == m->cap_files) {
        int cap = m->cap_files ? m->cap_files * 2 : 16;
        struct wt_file *f = realloc(m->files, sizeof *f * (size_t)cap);
        if (!f) return err_set(err, ERR_NOMEM, "out of memory");
        m->files = f;
        m->cap_files = cap;
    }
    struct wt_file *f = &m->files[m->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return err_set(err, ERR_NOMEM, "out of memory");
    int rc;
    if (ends_with(path, ".gguf")) {
        f->kind = FILE_GGUF;
        rc = gguf_open(path, &f->gg, err);
    } else if (ends_with(path, ".safetensors")) {
        f->kind = FILE_SFT;
        rc = sft_open(path, &f->st, err);
    } else {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: not a .safetensors or .gguf file", path);
    }
    if (rc) {
        free(f->path);
        return rc;
    }
    m->n_files++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* llama.cpp's gguf-split name "X-0000N-of-0000M.gguf": *plen = strlen("X"), *no = N, *count =
 * M; 0 if name is not one */
static int split_name(const char *name, size_t *plen, unsigned *no, unsigned *count)
{
    size_t l = strlen(name);
    char tail[8];
    /* "-00001-of-00003.gguf" is 20 characters */
    if (l < 21 || sscanf(name + l - 20, "-%5u-of-%5u%7s", no, count, tail) != 3 ||
        strcmp(tail, ".gguf"))
        return 0;
    *plen = l - 20;
    return 1;
}

/* Open the whole gguf-split set that `name` (any shard) belongs to, in shard order: a missing
 * shard is an error naming it; gguf-split's keys split.no / split.count / split.tensors.count
 * must agree with the names and the files where present. */
static int add_split_set(struct wt_model *m, const char *dir, const char *name, char *err)
{
    size_t plen;
    unsigned no, count;
    if (!split_name(name, &plen, &no, &count) || no == 0 || count == 0 || no > count)
        return err_set(err, ERR_FORMAT, "%s/%s: bad split numbering", dir, name);
    char p[4096];
    struct stat st;
    for (unsigned k = 1; k <= count; k++) { /* all present before opening any */
        snprintf(p, sizeof p, "%s/%.*s-%05u-of-%05u.gguf", dir, (int)plen, name, k, count);
        if (stat(p, &st) != 0)
            return err_set(err, ERR_NOT_FOUND, "split GGUF set incomplete: %s is missing", p);
    }
    int64_t total = 0, declared = -1, v;
    for (unsigned k = 1; k <= count; k++) {
        snprintf(p, sizeof p, "%s/%.*s-%05u-of-%05u.gguf", dir, (int)plen, name, k, count);
        int rc = add_file(m, p, err);
        if (rc) return rc;
        const struct gguf_ctx *g = m->files[m->n_files - 1].gg;
        total += gguf_n_tensors(g);
        if (gguf_find_i64(g, "split.no", &v, NULL) == 0 && v != (int64_t)k - 1)
            return err_set(err, ERR_FORMAT, "%s: split.no is %lld, the name says shard %u of %u", p,
                           (long long)v, k, count);
        if (gguf_find_i64(g, "split.count", &v, NULL) == 0 && v != (int64_t)count)
            return err_set(err, ERR_FORMAT, "%s: split.count is %lld, the name says %u files", p,
                           (long long)v, count);
        if (k == 1 && gguf_find_i64(g, "split.tensors.count", &v, NULL) == 0) declared = v;
    }
    if (declared >= 0 && declared != total)
        return err_set(err, ERR_FORMAT,
                       "%s/%.*s-*-of-%05u.gguf: split.tensors.count is %lld, the files hold %lld",
                       dir, (int)plen, name, count, (long long)declared, (long long)total);
    return 0;
}

/* X-0000N-of-0000M.gguf: check the whole set is present */
static int check_splits(char **names, int n, const char *dir, char *err)
{
    for (int i = 0; i < n; i++) {
        const char *s = names[i];
        size_t plen;
        unsigned a, b;
        if (!split_name(s, &plen, &a, &b)) continue;
        if (b == 0 || a == 0 || a > b)
            return err_set(err, ERR_FORMAT, "%s/%s: bad split numbering", dir, s);
        for (unsigned k = 1; k <= b; k++) {
            char want[1024];
            snprintf(want, sizeof want, "%.*s-%05u-of-%05u.gguf", (int)plen, s, k, b);
            int found = 0;
            for (int j = 0; j < n && !found; j++) found = strcmp(names[j], want) == 0;
            if (!found)
                return err_set(err, ERR_FORMAT, "%s: split GGUF incomplete: %s is missing", dir,
                               want);
        }
    }
    return 0;
}

/* open every weight file of dir (safetensors first); *first = index of the first new file */
static int open_dir_files(struct wt_model *m, const char *dir, char *err)
{
    DIR *d = opendir(dir);
    if (!d) return err_set(err, ERR_IO, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (!ends_with(de->d_name, ".safetensors") && !ends_with(de->d_name, ".gguf")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (!rc && n == 0) rc = err_set(err, ERR_NOT_FOUND, "%s: no .safetensors or .gguf files", dir);
    if (!rc) {
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        rc = check_splits(names, n, dir, err);
    }
    for (int pass = 0; !rc && pass < 2; pass++)
        for (int i = 0; !rc && i < n; i++) {
            if (!ends_with(names[i], pass ? ".gguf" : ".safetensors")) continue;
            size_t plen;
            unsigned no, count;
            if (pass && split_name(names[i], &plen, &no, &count)) {
                if (no == 1) rc = add_split_set(m, dir, names[i], err); /* the set, once */
                continue;
            }
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            rc = add_file(m, p, err);
        }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int index_files(struct wt_model *m, int from, char *err)
{
    for (int i = from; i < m->n_files; i++) {
        int rc = m->files[i].kind == FILE_GGUF ? index_gguf(m, i, err) : index_sft(m, i, err);
        if (rc) return rc;
    }
    return finalize(m, err);
}

static int load_hparams(struct wt_model *m, char *err)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/config.json", m->dir);
    if (stat(p, &st) == 0) return wt_hparams_from_json_file(p, &m->hp, err);
    for (int i = 0; i < m->n_files; i++)
        if (m->files[i].gg && gguf_find_key(m->files[i].gg, "general.architecture") >= 0)
            return wt__hparams_gguf(m->files[i].gg, &m->hp, err);
    for (int i = 0; i < m->n_files; i++) {
        const char *c = m->files[i].st ? sft_meta(m->files[i].st, "tandem.config") : NULL;
        if (c) return wt__hparams_json(c, strlen(c), m->files[i].path, &m->hp, err);
    }
    /* a merged directory made next to (inside) the original model: its config.json above */
    char up[4096];
    snprintf(up, sizeof up, "%s/..", m->dir);
    char *real = realpath(up, NULL);
    if (real) {
        snprintf(p, sizeof p, "%s/config.json", real);
        free(real);
        if (stat(p, &st) == 0) {
            LOG_INFO("weights", "%s has no config.json; using %s", m->dir, p);
            return wt_hparams_from_json_file(p, &m->hp, err);
        }
    }
    int kt = 0; /* KTransformers' merged safetensors: X.weight blobs + X.ggml_type */
    for (int i = 0; i < m->n_files && !kt; i++)
        for (int j = 0; m->files[i].st && j < sft_n_tensors(m->files[i].st) && !kt; j++)
            kt = ends_with(sft_at(m->files[i].st, j)->name, ".ggml_type");
    if (kt)
        return err_set(err, ERR_NOT_FOUND,
                       "%s is a KTransformers merged directory without config.json: copy "
                       "config.json from the original model directory (the safetensors "
                       "directory given to KTransformers' merge script) to %s/config.json",
                       m->dir, m->dir);
    return err_set(err, ERR_NOT_FOUND,
                   "%s: no config.json and no GGUF metadata to read the hyperparameters from: "
                   "copy the model's config.json to %s/config.json",
                   m->dir, m->dir);
}

int wt_open(const char *path, struct wt_model **out, char *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    struct wt_model *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, ERR_NOMEM, "out of memory");
    int rc;
    if (S_ISDIR(st.st_mode)) {
        m->dir = strdup(path);
        rc = m->dir ? open_dir_files(m, path, err) : err_set(err, ERR_NOMEM, "out of memory");
    } else {
        char *tmp = strdup(path);
        m->dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t plen;
        unsigned no, count;
        if (!m->dir) rc = err_set(err, ERR_NOMEM, "out of memory");
        else if (split_name(base, &plen, &no, &count)) /* one shard names the whole set */
            rc = add_split_set(m, m->dir, base, err);
        else rc = add_file(m, path, err);
    }
    if (!rc) rc = load_hparams(m, err);
    if (!rc) rc = hash_rebuild(m, 1024) ? err_set(err, ERR_NOMEM, "out of memory") : 0;
    if (!rc) rc = index_files(m, 0, err);
    if (rc) {
        wt_close(m);
        return rc;
    }
    skipped_summary(m);
    if (m->skipped[0]) LOG_INFO("weights", "%s: skipped %s", path, m->skipped);
    *out = m;
    return 0;
}

int wt_add_dir(struct wt_model *m, const char *dir, char *err)
{
    int from = m->n_files, before = m->n_skipped_mtp;
    int rc = open_dir_files(m, dir, err);
    if (!rc) rc = index_files(m, from, err);
    skipped_summary(m);
    if (!rc && m->n_skipped_mtp > before) LOG_INFO("weights", "%s: skipped %s", dir, m->skipped);
    return rc;
}

/* ---- validation ------------------------------------------------------------------------------ */

enum kind { K_VEC, K_MAT, K_EXPERTS, K_HEADS };

static int type_ok(int type, enum kind k)
{
    if (type == QTYPE_F32 || type == QTYPE_F16 || type == QTYPE_BF16) return 1;
    if (k == K_VEC) return 0;
    const struct qtype_traits *t = qtype_traits(type);
    if (type == QTYPE_F8_E4M3) return 1;
    return t && t->is_quant && type != QTYPE_Q8_K && type != QTYPE_Q8_1; /* activation-only types */
}

static int check_scale(const struct wt_model *m, const struct wt_tensor *t, char *err)
{
    if (t->type != QTYPE_F8_E4M3) return 0;
    const struct wt_tensor *s = t->scale;
    if (!s)
        return err_set(err, ERR_FORMAT, "%s: FP8 tensor '%s' has no weight_scale_inv",
                       wt_file_name(m, t->file), t->name);
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    int64_t er = (r + 127) / 128, ec = (c + 127) / 128;
    if (s->type != QTYPE_F32 || s->ndim != 2 || s->shape[0] != er || s->shape[1] != ec)
        return err_set(err, ERR_FORMAT, "%s: '%s' is %s [%lld, %lld], expected f32 [%lld, %lld]",
                       wt_file_name(m, s->file), s->name, qtype_name(s->type),
                       (long long)s->shape[0], (long long)(s->ndim > 1 ? s->shape[1] : 0),
                       (long long)er, (long long)ec);
    return 0;
}

static int check_tensor(const struct wt_model *m, const char *name, enum kind k, char *err)
{
    const struct wt_tensor *t = wt_get(m, name);
    if (!t)
        return err_set(err, ERR_FORMAT, "%s: missing tensor '%s'%s", m->dir, name,
                       ends_with(name, ".attn_kv_b.weight")
                           ? " (or llama.cpp's split attn_k_b.weight + attn_v_b.weight)"
                           : "");
    int64_t want[WT_MAX_DIMS] = {0};
    int nd = wt_expected_shape(&m->hp, name, want);
    int same = nd == t->ndim;
    for (int d = 0; same && d < nd; d++) same = want[d] == t->shape[d];
    if (k == K_HEADS && nd == 3 && t->ndim == 2) /* [H, a, b] stored flat as [H * a, b] */
        same = t->shape[0] == want[0] * want[1] && t->shape[1] == want[2];
    if (!same) {
        char a[80] = "", b[80] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", d ? "," : "",
                     (long long)t->shape[d]);
        for (int d = 0; d < nd; d++)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? "," : "",
                     (long long)want[d]);
        return err_set(err, ERR_FORMAT, "%s: tensor '%s' has shape [%s], config says [%s]",
                       wt_file_name(m, t->file), name, a, b);
    }
    if (!type_ok(t->type, k) ||
        (t->type == QTYPE_F8_E4M3 && ((k == K_EXPERTS && t->ndim == 3) || k == K_HEADS)))
        return err_set(err, ERR_UNSUPPORTED, "%s: tensor '%s' has unsupported type %s",
                       wt_file_name(m, t->file), name, qtype_name(t->type));
    return check_scale(m, t, err);
}

int wt_validate(const struct wt_model *m, char *err)
{
    const struct wt_hparams *hp = &m->hp;
    char n[WT_NAME_LEN];
    int rc;
    if ((rc = check_tensor(m, "token_embd.weight", K_MAT, err)) ||
        (rc = check_tensor(m, "output_norm.weight", K_VEC, err)) ||
        (rc = check_tensor(m, "output.weight", K_MAT, err)))
        return rc;
#define CHK(kind, ...)                                                                             \
    do {                                                                                           \
        snprintf(n, sizeof n, __VA_ARGS__);                                                        \
        if ((rc = check_tensor(m, n, kind, err))) return rc;                                       \
    } while (0)
    for (int l = 0; l < hp->n_layers; l++) {
        CHK(K_VEC, "blk.%d.attn_norm.weight", l);
        if (hp->q_lora_rank) {
            CHK(K_MAT, "blk.%d.attn_q_a.weight", l);
            CHK(K_VEC, "blk.%d.attn_q_a_norm.weight", l);
            CHK(K_MAT, "blk.%d.attn_q_b.weight", l);
        } else {
            CHK(K_MAT, "blk.%d.attn_q.weight", l);
        }
        CHK(K_MAT, "blk.%d.attn_kv_a_mqa.weight", l);
        CHK(K_VEC, "blk.%d.attn_kv_a_norm.weight", l);
        if (wt_getf(m, "blk.%d.attn_kv_b.weight", l) || !wt_getf(m, "blk.%d.attn_k_b.weight", l)) {
            CHK(K_MAT, "blk.%d.attn_kv_b.weight", l);
        } else { /* llama.cpp's split form; FP8 would need per-head scales */
            CHK(K_HEADS, "blk.%d.attn_k_b.weight", l);
            CHK(K_HEADS, "blk.%d.attn_v_b.weight", l);
        }
        CHK(K_MAT, "blk.%d.attn_output.weight", l);
        CHK(K_VEC, "blk.%d.ffn_norm.weight", l);
        if (!wt_layer_is_moe(hp, l)) {
            CHK(K_MAT, "blk.%d.ffn_gate.weight", l);
            CHK(K_MAT, "blk.%d.ffn_up.weight", l);
            CHK(K_MAT, "blk.%d.ffn_down.weight", l);
            continue;
        }
        CHK(K_MAT, "blk.%d.ffn_gate_inp.weight", l);
        if (hp->scoring == WT_SCORE_SIGMOID) CHK(K_VEC, "blk.%d.exp_probs_b.bias", l);
        if (hp->n_shared) {
            CHK(K_MAT, "blk.%d.ffn_gate_shexp.weight", l);
            CHK(K_MAT, "blk.%d.ffn_up_shexp.weight", l);
            CHK(K_MAT, "blk.%d.ffn_down_shexp.weight", l);
        }
        for (int p = 0; p < 3; p++) {
            if (wt_getf(m, "blk.%d.ffn_%s_exps.weight", l, wt_proj_name(p))) {
                CHK(K_EXPERTS, "blk.%d.ffn_%s_exps.weight", l, wt_proj_name(p));
                continue;
            }
            for (int e = 0; e < hp->n_routed; e++)
                CHK(K_EXPERTS, "blk.%d.ffn_%s_exps.%d.weight", l, wt_proj_name(p), e);
        }
    }
#undef CHK
    return 0;
}

int wt_expert(const struct wt_model *m, int layer, enum wt_proj p, int e, struct wt_view *out,
              char *err)
{
    const struct wt_hparams *hp = &m->hp;
    if (layer < 0 || layer >= hp->n_layers || e < 0 || e >= hp->n_routed || p < 0 || p > 2)
        return err_set(err, ERR_INVAL, "expert %d of layer %d out of range", e, layer);
    const struct wt_tensor *t = wt_getf(m, "blk.%d.ffn_%s_exps.weight", layer, wt_proj_name(p));
    memset(out, 0, sizeof *out);
    if (t) {
        if (t->ndim != 3 || e >= t->shape[0])
            return err_set(err, ERR_FORMAT, "%s: '%s' is not [experts, rows, cols]",
                           wt_file_name(m, t->file), t->name);
        int ok;
        out->type = t->type;
        out->rows = t->shape[1];
        out->cols = t->shape[2];
        out->row_bytes = qtype_row_bytes(t->type, out->cols, &ok);
        out->data = (const char *)t->data + (size_t)e * (size_t)out->rows * out->row_bytes;
        return 0;
    }
    t = wt_getf(m, "blk.%d.ffn_%s_exps.%d.weight", layer, wt_proj_name(p), e);
    if (!t || t->ndim != 2)
        return err_set(err, ERR_FORMAT, "%s: routed expert %d (%s) of layer %d missing", m->dir, e,
                       wt_proj_name(p), layer);
    int ok;
    out->type = t->type;
    out->rows = t->shape[0];
    out->cols = t->shape[1];
    out->row_bytes = qtype_row_bytes(t->type, out->cols, &ok);
    out->data = t->data;
    out->scale = t->scale ? (const float *)t->scale->data : NULL;
    return 0;
}
