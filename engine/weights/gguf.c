/* gguf.c - GGUF reader (validated up front over a private read-only mapping) and streaming writer.
 *
 * Reader: a cursor walks the header once. Every count read from the file is checked against the
 * bytes that remain before anything is allocated (a key/value pair needs at least 13 bytes, a
 * tensor info at least 24, an array element at least its fixed size), so a corrupt count can not
 * trigger a huge allocation. Arrays may nest up to GGUF_MAX_NEST levels. Scalar strings are
 * copied out NUL-terminated; string arrays get an offset table so element access is O(1).
 * Tensor data is checked for alignment, bounds and overlap (sorted by offset). Names and keys
 * must be valid UTF-8 without NUL bytes and unique (sorted index, also used for lookups).
 *
 * Writer: metadata is serialized into a growable buffer; tensor infos are kept as a list; begin()
 * computes aligned offsets and writes everything before the data; write() streams tensor bytes in
 * declaration order, padding between tensors. Output goes to PATH.tmp, renamed on finish.
 *
 * Threads: see gguf.h. No global state.
 */
#include "gguf.h"
#include "weights_internal.h"

#include "common/err.h"
#include "common/utf8.h"
#include "kernels/cpu/qtype.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_NEST 8
#define GGUF_MAX_NAME 1024 /* longest key or tensor name accepted */

struct gguf_kv {
    char *key;
    int type;
    const uint8_t *val; /* the value bytes (after the type field) */
    int elem_type;      /* arrays */
    uint64_t n;
    const uint8_t *elems; /* first element */
    uint64_t *str_off;    /* string arrays: offset of element j's length prefix from elems */
    char *str;            /* scalar strings: NUL-terminated copy */
};

struct gguf_tensor {
    struct gguf_tensor_info info;
    char *name;
};

struct gguf_ctx {
    char *path;
    int version;
    const uint8_t *map;
    size_t size;
    size_t alignment;
    size_t data_off;
    int64_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor *t;
    int64_t *kv_sorted; /* indices sorted by key */
    int64_t *t_sorted;  /* indices sorted by name */
};

static const char *vtype_names[GGUF_TYPE_COUNT_] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_vtype_name(int t)
{
    return (t >= 0 && t < GGUF_TYPE_COUNT_) ? vtype_names[t] : "?";
}

/* fixed element size of a value type; 0 for string/array/unknown */
static size_t vtype_size(int t)
{
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- cursor ---------------------------------------------------------------------------------- */

struct cur {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
    char *err;
};

static size_t cur_left(const struct cur *c) { return c->size - c->pos; }

static int cur_need(struct cur *c, size_t n, const char *what)
{
    if (n > cur_left(c))
        return err_set(c->err, ERR_FORMAT, "%s: truncated GGUF header (reading %s at offset %zu)",
                       c->path, what, c->pos);
    return 0;
}

static int rd_u32(struct cur *c, uint32_t *v, const char *what)
{
    int rc = cur_need(c, 4, what);
    if (rc) return rc;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int rd_u64(struct cur *c, uint64_t *v, const char *what)
{
    int rc = cur_need(c, 8, what);
    if (rc) return rc;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* A string: returns a pointer into the map and its length. */
static int rd_str(struct cur *c, const uint8_t **s, uint64_t *len, const char *what)
{
    int rc = rd_u64(c, len, what);
    if (rc) return rc;
    if (*len > cur_left(c))
        return err_set(c->err, ERR_FORMAT,
                       "%s: %s at offset %zu: string length %llu exceeds the file", c->path, what,
                       c->pos - 8, (unsigned long long)*len);
    *s = c->p + c->pos;
    c->pos += (size_t)*len;
    return 0;
}

/* Names and keys: valid UTF-8 without NUL bytes. */
static int name_valid(const uint8_t *s, size_t n)
{
    return !memchr(s, 0, n) && utf8_check((const char *)s, n, NULL) == 0;
}

static char *dup_name(const uint8_t *s, uint64_t n)
{
    char *d = malloc((size_t)n + 1);
    if (!d) return NULL;
    memcpy(d, s, (size_t)n);
    d[n] = 0;
    return d;
}

/* Validate and skip one value of type t (arrays recursively). */
static int skip_value(struct cur *c, int t, int depth, const char *key)
{
    size_t sz = vtype_size(t);
    if (sz) {
        if (sz > cur_left(c))
            return err_set(c->err, ERR_FORMAT, "%s: key '%s': truncated value", c->path, key);
        c->pos += sz;
        return 0;
    }
    if (t == GGUF_TYPE_STRING) {
        const uint8_t *s;
        uint64_t n;
        return rd_str(c, &s, &n, key);
    }
    if (t != GGUF_TYPE_ARRAY)
        return err_set(c->err, ERR_FORMAT, "%s: key '%s': unknown value type %d", c->path, key, t);
    if (depth >= GGUF_MAX_NEST)
        return err_set(c->err, ERR_FORMAT, "%s: key '%s': arrays nested deeper than %d", c->path,
                       key, GGUF_MAX_NEST);
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(c, &et, key);
    if (!rc) rc = rd_u64(c, &n, key);
    if (rc) return rc;
    if (et >= GGUF_TYPE_COUNT_)
        return err_set(c->err, ERR_FORMAT, "%s: key '%s': unknown array element type %u", c->path,
                       key, et);
    size_t esz = vtype_size((int)et);
    size_t min = esz ? esz : (et == GGUF_TYPE_STRING ? 8 : 12);
    if (n > cur_left(c) / min)
        return err_set(c->err, ERR_FORMAT, "%s: key '%s': array count %llu exceeds the file",
                       c->path, key, (unsigned long long)n);
    if (esz) {
        c->pos += (size_t)n * esz;
        return 0;
    }
    for (uint64_t j = 0; j < n; j++) {
        rc = skip_value(c, (int)et, depth + 1, key);
        if (rc) return rc;
    }
    return 0;
}

/* ---- open ------------------------------------------------------------------------------------ */

static int cmp_str(const char *a, const char *b) { return strcmp(a, b); }

/* sort (name, index) pairs; the sorted indices serve lookups and duplicate checks */
struct name_idx {
    const char *name;
    int64_t idx;
};

static int cmp_name_idx(const void *a, const void *b)
{
    return cmp_str(((const struct name_idx *)a)->name, ((const struct name_idx *)b)->name);
}

static int64_t *sorted_index(struct name_idx *v, int64_t n, const char **dup)
{
    qsort(v, (size_t)n, sizeof *v, cmp_name_idx);
    *dup = NULL;
    for (int64_t i = 1; i < n; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0) {
            *dup = v[i].name;
            break;
        }
    int64_t *idx = malloc(sizeof *idx * (size_t)(n ? n : 1));
    if (!idx) return NULL;
    for (int64_t i = 0; i < n; i++) idx[i] = v[i].idx;
    return idx;
}

struct off_idx {
    uint64_t off;
    size_t nbytes;
    int64_t idx;
};

static int cmp_off(const void *a, const void *b)
{
    const struct off_idx *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int parse_kv(struct gguf_ctx *g, struct cur *c)
{
    for (int64_t i = 0; i < g->n_kv; i++) {
        struct gguf_kv *kv = &g->kv[i];
        const uint8_t *ks;
        uint64_t kl;
        uint32_t t;
        int rc = rd_str(c, &ks, &kl, "metadata key");
        if (rc) return rc;
        if (kl == 0 || kl > GGUF_MAX_NAME || !name_valid(ks, (size_t)kl))
            return err_set(c->err, ERR_FORMAT,
                           "%s: metadata key %lld: empty, too long or not UTF-8", c->path,
                           (long long)i);
        kv->key = dup_name(ks, kl);
        if (!kv->key) return err_set(c->err, ERR_NOMEM, "out of memory");
        rc = rd_u32(c, &t, kv->key);
        if (rc) return rc;
        if (t >= GGUF_TYPE_COUNT_)
            return err_set(c->err, ERR_FORMAT, "%s: key '%s': unknown value type %u", c->path,
                           kv->key, t);
        kv->type = (int)t;
        kv->val = c->p + c->pos;
        rc = skip_value(c, kv->type, 0, kv->key);
        if (rc) return rc;
        if (kv->type == GGUF_TYPE_STRING) {
            uint64_t n;
            memcpy(&n, kv->val, 8);
            if (memchr(kv->val + 8, 0, (size_t)n))
                return err_set(c->err, ERR_FORMAT, "%s: key '%s': string contains a NUL byte",
                               c->path, kv->key);
            kv->str = dup_name(kv->val + 8, n);
            if (!kv->str) return err_set(c->err, ERR_NOMEM, "out of memory");
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            uint32_t et;
            memcpy(&et, kv->val, 4);
            memcpy(&kv->n, kv->val + 4, 8);
            kv->elem_type = (int)et;
            kv->elems = kv->val + 12;
            if (et == GGUF_TYPE_STRING) {
                kv->str_off = malloc(sizeof(uint64_t) * (size_t)(kv->n ? kv->n : 1));
                if (!kv->str_off) return err_set(c->err, ERR_NOMEM, "out of memory");
                uint64_t off = 0;
                for (uint64_t j = 0; j < kv->n; j++) {
                    uint64_t len;
                    kv->str_off[j] = off;
                    memcpy(&len, kv->elems + off, 8);
                    off += 8 + len; /* already validated by skip_value */
                }
            }
        }
    }
    return 0;
}

static int parse_tensors(struct gguf_ctx *g, struct cur *c)
{
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->t[i];
        const uint8_t *ns;
        uint64_t nl;
        uint32_t nd, type;
        int rc = rd_str(c, &ns, &nl, "tensor name");
        if (rc) return rc;
        if (nl == 0 || nl > GGUF_MAX_NAME || !name_valid(ns, (size_t)nl))
            return err_set(c->err, ERR_FORMAT, "%s: tensor %lld: name empty, too long or not UTF-8",
                           c->path, (long long)i);
        t->name = dup_name(ns, nl);
        if (!t->name) return err_set(c->err, ERR_NOMEM, "out of memory");
        t->info.name = t->name;
        rc = rd_u32(c, &nd, t->name);
        if (rc) return rc;
        if (nd > GGUF_MAX_DIMS)
            return err_set(c->err, ERR_FORMAT, "%s: tensor '%s': n_dims %u > %d", c->path, t->name,
                           nd, GGUF_MAX_DIMS);
        t->info.n_dims = (int)nd;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->info.ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne;
            rc = rd_u64(c, &ne, t->name);
            if (rc) return rc;
            if (ne > (uint64_t)INT64_MAX)
                return err_set(c->err, ERR_FORMAT, "%s: tensor '%s': dimension %u is %llu", c->path,
                               t->name, d, (unsigned long long)ne);
            t->info.ne[d] = (int64_t)ne;
        }
        rc = rd_u32(c, &type, t->name);
        if (!rc) rc = rd_u64(c, &t->info.offset, t->name);
        if (rc) return rc;
        const struct qtype_traits *tr = qtype_traits((int)type);
        if (!tr || type >= 100)
            return err_set(c->err, ERR_UNSUPPORTED, "%s: tensor '%s': unsupported ggml type %u",
                           c->path, t->name, type);
        t->info.type = (int)type;
        int ok = 1;
        size_t row = qtype_row_bytes(t->info.type, t->info.ne[0], &ok);
        if (!ok)
            return err_set(c->err, ERR_FORMAT,
                           "%s: tensor '%s': row length %lld is not a multiple of %s's block of %d",
                           c->path, t->name, (long long)t->info.ne[0], tr->name, tr->blck);
        size_t nb = row;
        for (int d = 1; d < GGUF_MAX_DIMS; d++) {
            uint64_t ne = (uint64_t)t->info.ne[d];
            if (ne && nb > SIZE_MAX / 2 / ne)
                return err_set(c->err, ERR_FORMAT, "%s: tensor '%s': size overflows", c->path,
                               t->name);
            nb *= (size_t)ne;
        }
        t->info.nbytes = nb;
    }
    return 0;
}

static int check_layout(struct gguf_ctx *g, char *err)
{
    if (g->n_tensors == 0) return 0;
    if (g->data_off > g->size)
        return err_set(err, ERR_FORMAT,
                       "%s: truncated: data section starts at %zu beyond the file "
                       "(%zu bytes)",
                       g->path, g->data_off, g->size);
    size_t avail = g->size - g->data_off;
    struct off_idx *o = malloc(sizeof *o * (size_t)g->n_tensors);
    if (!o) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor_info *ti = &g->t[i].info;
        if (ti->offset % g->alignment) {
            rc = err_set(err, ERR_FORMAT, "%s: tensor '%s': offset %llu not aligned to %zu",
                         g->path, ti->name, (unsigned long long)ti->offset, g->alignment);
            goto out;
        }
        if (ti->offset > avail || ti->nbytes > avail - ti->offset) {
            rc = err_set(
                err, ERR_FORMAT,
                "%s: tensor '%s': data [%llu, +%zu) beyond the end of the file (truncated?)",
                g->path, ti->name, (unsigned long long)ti->offset, ti->nbytes);
            goto out;
        }
        ti->data = g->map + g->data_off + ti->offset;
        o[i] = (struct off_idx){ti->offset, ti->nbytes, i};
    }
    qsort(o, (size_t)g->n_tensors, sizeof *o, cmp_off);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        if (o[i - 1].nbytes && o[i - 1].off + o[i - 1].nbytes > o[i].off && o[i].nbytes) {
            rc = err_set(err, ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", g->path,
                         g->t[o[i - 1].idx].name, g->t[o[i].idx].name);
            goto out;
        }
    }
out:
    free(o);
    return rc;
}

static int build_indexes(struct gguf_ctx *g, char *err)
{
    int64_t n = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    struct name_idx *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    if (!v) return err_set(err, ERR_NOMEM, "out of memory");
    const char *dup;
    for (int64_t i = 0; i < g->n_kv; i++) v[i] = (struct name_idx){g->kv[i].key, i};
    g->kv_sorted = sorted_index(v, g->n_kv, &dup);
    if (g->kv_sorted && dup) {
        int rc = err_set(err, ERR_FORMAT, "%s: duplicate metadata key '%s'", g->path, dup);
        free(v);
        return rc;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) v[i] = (struct name_idx){g->t[i].name, i};
    if (g->kv_sorted) g->t_sorted = sorted_index(v, g->n_tensors, &dup);
    free(v);
    if (!g->kv_sorted || !g->t_sorted) return err_set(err, ERR_NOMEM, "out of memory");
    if (dup) return err_set(err, ERR_FORMAT, "%s: duplicate tensor '%s'", g->path, dup);
    return 0;
}

int gguf_open(const char *path, struct gguf_ctx **out, char *err)
{
    *out = NULL;
    struct gguf_ctx *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    int rc = 0;
    if ((rc = wt__map_file(path, 24, "GGUF", &g->map, &g->size, err))) goto fail;

    struct cur c = {g->map, 0, g->size, path, err};
    if (memcmp(g->map, GGUF_MAGIC, 4) != 0) {
        rc = err_set(err, ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
        goto fail;
    }
    c.pos = 4;
    uint32_t ver;
    uint64_t nt, nkv;
    rd_u32(&c, &ver, "version");
    if (ver == 1 || ver > 3) {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: GGUF version %u not supported (2 and 3 are)%s",
                     path, ver, (ver & 0xffff) == 0 ? " (big-endian file?)" : "");
        goto fail;
    }
    if (ver == 0) {
        rc = err_set(err, ERR_FORMAT, "%s: GGUF version 0", path);
        goto fail;
    }
    g->version = (int)ver;
    rd_u64(&c, &nt, "tensor count");
    rd_u64(&c, &nkv, "metadata count");
    if (nkv > cur_left(&c) / 13) {
        rc = err_set(err, ERR_FORMAT, "%s: metadata count %llu exceeds what the file can hold",
                     path, (unsigned long long)nkv);
        goto fail;
    }
    if (nt > cur_left(&c) / 24) {
        rc = err_set(err, ERR_FORMAT, "%s: tensor count %llu exceeds what the file can hold", path,
                     (unsigned long long)nt);
        goto fail;
    }
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    g->kv = calloc((size_t)nkv + 1, sizeof *g->kv);
    g->t = calloc((size_t)nt + 1, sizeof *g->t);
    if (!g->kv || !g->t) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = parse_kv(g, &c))) goto fail;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = -1;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, "general.alignment") == 0) ai = i;
    if (ai >= 0) {
        uint32_t a;
        if ((rc = gguf_get_u32(g, ai, &a, err))) goto fail;
        if (a == 0 || (a & (a - 1)) || a > (1u << 20)) {
            rc =
                err_set(err, ERR_FORMAT, "%s: general.alignment %u is not a power of two", path, a);
            goto fail;
        }
        g->alignment = a;
    }
    if ((rc = parse_tensors(g, &c))) goto fail;
    g->data_off = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if ((rc = build_indexes(g, err))) goto fail;
    if ((rc = check_layout(g, err))) goto fail;
    *out = g;
    return 0;
fail:
    gguf_close(g);
    return rc;
}

void gguf_close(struct gguf_ctx *g)
{
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].str);
            free(g->kv[i].str_off);
        }
    if (g->t)
        for (int64_t i = 0; i < g->n_tensors; i++) free(g->t[i].name);
    free(g->kv);
    free(g->t);
    free(g->kv_sorted);
    free(g->t_sorted);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

const char *gguf_path(const struct gguf_ctx *g) { return g->path; }
int gguf_version(const struct gguf_ctx *g) { return g->version; }
size_t gguf_alignment(const struct gguf_ctx *g) { return g->alignment; }
size_t gguf_file_size(const struct gguf_ctx *g) { return g->size; }
size_t gguf_data_offset(const struct gguf_ctx *g) { return g->data_off; }
int64_t gguf_n_kv(const struct gguf_ctx *g) { return g->n_kv; }
int64_t gguf_n_tensors(const struct gguf_ctx *g) { return g->n_tensors; }

const char *gguf_key(const struct gguf_ctx *g, int64_t i)
{
    return (i >= 0 && i < g->n_kv) ? g->kv[i].key : NULL;
}

int gguf_kv_type(const struct gguf_ctx *g, int64_t i)
{
    return (i >= 0 && i < g->n_kv) ? g->kv[i].type : -1;
}

static int64_t bsearch_idx(const int64_t *idx, int64_t n, const char *name,
                           const char *(*name_of)(const struct gguf_ctx *, int64_t),
                           const struct gguf_ctx *g)
{
    int64_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name_of(g, idx[mid]), name);
        if (c == 0) return idx[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static const char *tname_of(const struct gguf_ctx *g, int64_t i) { return g->t[i].name; }

int64_t gguf_find_key(const struct gguf_ctx *g, const char *key)
{
    return bsearch_idx(g->kv_sorted, g->n_kv, key, gguf_key, g);
}

int64_t gguf_find_tensor(const struct gguf_ctx *g, const char *name)
{
    return bsearch_idx(g->t_sorted, g->n_tensors, name, tname_of, g);
}

int gguf_tensor_info(const struct gguf_ctx *g, int64_t i, struct gguf_tensor_info *info)
{
    if (i < 0 || i >= g->n_tensors) return ERR_INVAL;
    *info = g->t[i].info;
    return 0;
}

/* ---- value conversion ------------------------------------------------------------------------ */

enum num_kind { NUM_SIGNED, NUM_UNSIGNED, NUM_FLOAT };

struct num {
    enum num_kind kind;
    int64_t s;
    uint64_t u;
    double f;
};

static int num_read(int t, const uint8_t *p, struct num *n)
{
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } v;
    size_t sz = vtype_size(t);
    if (!sz) return -1;
    memcpy(&v, p, sz);
    switch (t) {
    case GGUF_TYPE_UINT8:
        n->kind = NUM_UNSIGNED;
        n->u = v.u8;
        break;
    case GGUF_TYPE_BOOL:
        n->kind = NUM_UNSIGNED;
        n->u = v.u8 != 0;
        break;
    case GGUF_TYPE_UINT16:
        n->kind = NUM_UNSIGNED;
        n->u = v.u16;
        break;
    case GGUF_TYPE_UINT32:
        n->kind = NUM_UNSIGNED;
        n->u = v.u32;
        break;
    case GGUF_TYPE_UINT64:
        n->kind = NUM_UNSIGNED;
        n->u = v.u64;
        break;
    case GGUF_TYPE_INT8:
        n->kind = NUM_SIGNED;
        n->s = v.i8;
        break;
    case GGUF_TYPE_INT16:
        n->kind = NUM_SIGNED;
        n->s = v.i16;
        break;
    case GGUF_TYPE_INT32:
        n->kind = NUM_SIGNED;
        n->s = v.i32;
        break;
    case GGUF_TYPE_INT64:
        n->kind = NUM_SIGNED;
        n->s = v.i64;
        break;
    case GGUF_TYPE_FLOAT32:
        n->kind = NUM_FLOAT;
        n->f = v.f32;
        break;
    case GGUF_TYPE_FLOAT64:
        n->kind = NUM_FLOAT;
        n->f = v.f64;
        break;
    default: return -1;
    }
    if (n->kind == NUM_UNSIGNED) {
        n->f = (double)n->u;
        n->s = (int64_t)n->u;
    }
    if (n->kind == NUM_SIGNED) {
        n->f = (double)n->s;
        n->u = (uint64_t)n->s;
    }
    return 0;
}

/* integer in [lo, hi] (signed view) or [0, uhi] */
static int num_to_int(const struct num *n, int64_t lo, int64_t hi, int64_t *out)
{
    if (n->kind == NUM_FLOAT) return -1;
    if (n->kind == NUM_UNSIGNED) {
        if (n->u > (uint64_t)hi) return -1;
        *out = (int64_t)n->u;
        return 0;
    }
    if (n->s < lo || n->s > hi) return -1;
    *out = n->s;
    return 0;
}

static int kv_num(const struct gguf_ctx *g, int64_t i, struct num *n, char *err)
{
    if (i < 0 || i >= g->n_kv) return err_set(err, ERR_INVAL, "%s: bad metadata index", g->path);
    if (num_read(g->kv[i].type, g->kv[i].val, n))
        return err_set(err, ERR_FORMAT, "%s: key '%s' is a %s, expected a number", g->path,
                       g->kv[i].key, gguf_vtype_name(g->kv[i].type));
    return 0;
}

static int range_err(const struct gguf_ctx *g, int64_t i, const char *want, char *err)
{
    return err_set(err, ERR_FORMAT, "%s: key '%s' (%s) does not fit a %s", g->path, g->kv[i].key,
                   gguf_vtype_name(g->kv[i].type), want);
}

int gguf_get_u32(const struct gguf_ctx *g, int64_t i, uint32_t *v, char *err)
{
    struct num n;
    int64_t x;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (num_to_int(&n, 0, UINT32_MAX, &x)) return range_err(g, i, "u32", err);
    *v = (uint32_t)x;
    return 0;
}

int gguf_get_i32(const struct gguf_ctx *g, int64_t i, int32_t *v, char *err)
{
    struct num n;
    int64_t x;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (num_to_int(&n, INT32_MIN, INT32_MAX, &x)) return range_err(g, i, "i32", err);
    *v = (int32_t)x;
    return 0;
}

int gguf_get_i64(const struct gguf_ctx *g, int64_t i, int64_t *v, char *err)
{
    struct num n;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (num_to_int(&n, INT64_MIN, INT64_MAX, v)) return range_err(g, i, "i64", err);
    return 0;
}

int gguf_get_u64(const struct gguf_ctx *g, int64_t i, uint64_t *v, char *err)
{
    struct num n;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (n.kind == NUM_FLOAT || (n.kind == NUM_SIGNED && n.s < 0))
        return range_err(g, i, "u64", err);
    *v = n.u;
    return 0;
}

int gguf_get_f64(const struct gguf_ctx *g, int64_t i, double *v, char *err)
{
    struct num n;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (g->kv[i].type == GGUF_TYPE_BOOL) return range_err(g, i, "float", err);
    *v = n.f;
    return 0;
}

int gguf_get_f32(const struct gguf_ctx *g, int64_t i, float *v, char *err)
{
    double d;
    int rc = gguf_get_f64(g, i, &d, err);
    if (!rc) *v = (float)d;
    return rc;
}

int gguf_get_bool(const struct gguf_ctx *g, int64_t i, int *v, char *err)
{
    struct num n;
    int rc = kv_num(g, i, &n, err);
    if (rc) return rc;
    if (n.kind == NUM_FLOAT) return range_err(g, i, "bool", err);
    *v = n.u != 0;
    return 0;
}

int gguf_get_str(const struct gguf_ctx *g, int64_t i, const char **v, char *err)
{
    if (i < 0 || i >= g->n_kv) return err_set(err, ERR_INVAL, "%s: bad metadata index", g->path);
    if (g->kv[i].type != GGUF_TYPE_STRING)
        return err_set(err, ERR_FORMAT, "%s: key '%s' is a %s, expected a string", g->path,
                       g->kv[i].key, gguf_vtype_name(g->kv[i].type));
    *v = g->kv[i].str;
    return 0;
}

int gguf_get_arr(const struct gguf_ctx *g, int64_t i, int *elem_type, uint64_t *n, char *err)
{
    if (i < 0 || i >= g->n_kv) return err_set(err, ERR_INVAL, "%s: bad metadata index", g->path);
    if (g->kv[i].type != GGUF_TYPE_ARRAY)
        return err_set(err, ERR_FORMAT, "%s: key '%s' is a %s, expected an array", g->path,
                       g->kv[i].key, gguf_vtype_name(g->kv[i].type));
    *elem_type = g->kv[i].elem_type;
    *n = g->kv[i].n;
    return 0;
}

static int arr_num(const struct gguf_ctx *g, int64_t i, uint64_t j, struct num *n, char *err)
{
    int et;
    uint64_t cnt;
    int rc = gguf_get_arr(g, i, &et, &cnt, err);
    if (rc) return rc;
    if (j >= cnt)
        return err_set(err, ERR_INVAL, "%s: key '%s': index %llu out of range", g->path,
                       g->kv[i].key, (unsigned long long)j);
    size_t sz = vtype_size(et);
    if (!sz || num_read(et, g->kv[i].elems + j * sz, n))
        return err_set(err, ERR_FORMAT, "%s: key '%s' is an array of %s, expected numbers", g->path,
                       g->kv[i].key, gguf_vtype_name(et));
    return 0;
}

int gguf_arr_i64(const struct gguf_ctx *g, int64_t i, uint64_t j, int64_t *v, char *err)
{
    struct num n;
    int rc = arr_num(g, i, j, &n, err);
    if (rc) return rc;
    if (num_to_int(&n, INT64_MIN, INT64_MAX, v))
        return err_set(err, ERR_FORMAT, "%s: key '%s'[%llu] is not an i64", g->path, g->kv[i].key,
                       (unsigned long long)j);
    return 0;
}

int gguf_arr_f64(const struct gguf_ctx *g, int64_t i, uint64_t j, double *v, char *err)
{
    struct num n;
    int rc = arr_num(g, i, j, &n, err);
    if (!rc) *v = n.f;
    return rc;
}

int gguf_arr_str(const struct gguf_ctx *g, int64_t i, uint64_t j, const char **s, size_t *len,
                 char *err)
{
    int et;
    uint64_t cnt;
    int rc = gguf_get_arr(g, i, &et, &cnt, err);
    if (rc) return rc;
    if (et != GGUF_TYPE_STRING)
        return err_set(err, ERR_FORMAT, "%s: key '%s' is an array of %s, expected strings", g->path,
                       g->kv[i].key, gguf_vtype_name(et));
    if (j >= cnt)
        return err_set(err, ERR_INVAL, "%s: key '%s': index %llu out of range", g->path,
                       g->kv[i].key, (unsigned long long)j);
    const uint8_t *p = g->kv[i].elems + g->kv[i].str_off[j];
    uint64_t l;
    memcpy(&l, p, 8);
    *s = (const char *)(p + 8);
    *len = (size_t)l;
    return 0;
}

const void *gguf_arr_data(const struct gguf_ctx *g, int64_t i)
{
    if (i < 0 || i >= g->n_kv || g->kv[i].type != GGUF_TYPE_ARRAY ||
        !vtype_size(g->kv[i].elem_type))
        return NULL;
    return g->kv[i].elems;
}

int gguf_find_i64(const struct gguf_ctx *g, const char *key, int64_t *v, char *err)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? ERR_NOT_FOUND : gguf_get_i64(g, i, v, err);
}

int gguf_find_f64(const struct gguf_ctx *g, const char *key, double *v, char *err)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? ERR_NOT_FOUND : gguf_get_f64(g, i, v, err);
}

int gguf_find_str(const struct gguf_ctx *g, const char *key, const char **v, char *err)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? ERR_NOT_FOUND : gguf_get_str(g, i, v, err);
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset;
};

struct gguf_writer {
    char *path, *tmp;
    FILE *f;
    uint8_t *kv; /* serialized key/value pairs */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys; /* for duplicate detection */
    struct wtensor *t;
    int64_t n_t, cap_t;
    uint32_t alignment;
    int began, failed;
    int64_t cur;     /* tensor being written */
    size_t cur_done; /* bytes of it written */
    uint64_t pos;    /* bytes written into the data section */
};

int gguf_writer_create(const char *path, struct gguf_writer **out, char *err)
{
    *out = NULL;
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return err_set(err, ERR_NOMEM, "out of memory");
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->path = strdup(path);
    int rc = w->path ? wt__tmp_create(path, &w->tmp, &w->f, err)
                     : err_set(err, ERR_NOMEM, "out of memory");
    if (rc) {
        gguf_writer_destroy(w);
        return rc;
    }
    *out = w;
    return 0;
}

void gguf_writer_destroy(struct gguf_writer *w)
{
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp);
    }
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->keys);
    free(w->t);
    free(w->kv);
    free(w->path);
    free(w->tmp);
    free(w);
}

static int kv_put(struct gguf_writer *w, const void *p, size_t n)
{
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *k = realloc(w->kv, cap);
        if (!k) return ERR_NOMEM;
        w->kv = k;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return 0;
}

static int kv_put_str(struct gguf_writer *w, const char *s)
{
    uint64_t n = strlen(s);
    int rc = kv_put(w, &n, 8);
    return rc ? rc : kv_put(w, s, (size_t)n);
}

static int kv_begin(struct gguf_writer *w, const char *key, uint32_t type)
{
    if (w->began || !key || !*key) return ERR_INVAL;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return ERR_INVAL;
    char **k = realloc(w->keys, sizeof *k * (size_t)(w->n_kv + 1));
    if (!k) return ERR_NOMEM;
    w->keys = k;
    if (!(k[w->n_kv] = strdup(key))) return ERR_NOMEM;
    w->n_kv++;
    int rc = kv_put_str(w, key);
    return rc ? rc : kv_put(w, &type, 4);
}

#define SETTER(fn, ctype, vt)                                                                      \
    int fn(struct gguf_writer *w, const char *key, ctype v)                                        \
    {                                                                                              \
        int rc = kv_begin(w, key, vt);                                                             \
        return rc ? rc : kv_put(w, &v, sizeof v);                                                  \
    }
SETTER(gguf_writer_set_u16, uint16_t, GGUF_TYPE_UINT16)
SETTER(gguf_writer_set_u32, uint32_t, GGUF_TYPE_UINT32)
SETTER(gguf_writer_set_i32, int32_t, GGUF_TYPE_INT32)
SETTER(gguf_writer_set_u64, uint64_t, GGUF_TYPE_UINT64)
SETTER(gguf_writer_set_f32, float, GGUF_TYPE_FLOAT32)
#undef SETTER

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v)
{
    uint8_t b = v != 0;
    int rc = kv_begin(w, key, GGUF_TYPE_BOOL);
    return rc ? rc : kv_put(w, &b, 1);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v)
{
    int rc = kv_begin(w, key, GGUF_TYPE_STRING);
    return rc ? rc : kv_put_str(w, v);
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, int elem_type, const void *data,
                        uint64_t n)
{
    size_t sz = vtype_size(elem_type);
    if (!sz) return ERR_INVAL;
    uint32_t et = (uint32_t)elem_type;
    int rc = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (!rc) rc = kv_put(w, &et, 4);
    if (!rc) rc = kv_put(w, &n, 8);
    if (!rc) rc = kv_put(w, data, (size_t)n * sz);
    return rc;
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *v,
                            uint64_t n)
{
    uint32_t et = GGUF_TYPE_STRING;
    int rc = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (!rc) rc = kv_put(w, &et, 4);
    if (!rc) rc = kv_put(w, &n, 8);
    for (uint64_t i = 0; !rc && i < n; i++) rc = kv_put_str(w, v[i]);
    return rc;
}

int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t a)
{
    if (a == 0 || (a & (a - 1))) return ERR_INVAL;
    int rc = gguf_writer_set_u32(w, "general.alignment", a);
    if (!rc) w->alignment = a;
    return rc;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, int n_dims,
                           const int64_t *ne, char *err)
{
    if (w->began)
        return err_set(err, ERR_INVAL, "%s: tensor '%s' declared after begin", w->path, name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || type >= 100 || !qtype_traits(type))
        return err_set(err, ERR_INVAL, "%s: tensor '%s': bad type or dims", w->path, name);
    int ok;
    size_t nb = qtype_row_bytes(type, ne[0], &ok);
    if (!ok)
        return err_set(err, ERR_INVAL, "%s: tensor '%s': row of %lld is not whole %s blocks",
                       w->path, name, (long long)ne[0], qtype_name(type));
    for (int d = 1; d < n_dims; d++) nb *= (size_t)ne[d];
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        struct wtensor *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return err_set(err, ERR_NOMEM, "out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return err_set(err, ERR_NOMEM, "out of memory");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = nb;
    w->n_t++;
    return 0;
}

/* p == NULL: skip n bytes (a hole in a sparse file) */
static int wr(struct gguf_writer *w, const void *p, size_t n, char *err)
{
    return wt__tmp_write(w->f, w->tmp, &w->failed, p, n, err);
}

static int wr_pad(struct gguf_writer *w, uint64_t pos, char *err)
{
    static const uint8_t zeros[64];
    size_t pad = (size_t)((w->alignment - pos % w->alignment) % w->alignment);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = wr(w, zeros, k, err);
        if (rc) return rc;
        pad -= k;
    }
    return 0;
}

int gguf_writer_begin(struct gguf_writer *w, char *err)
{
    if (w->began) return err_set(err, ERR_INVAL, "%s: begin called twice", w->path);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += w->t[i].nbytes;
        off = (off + w->alignment - 1) / w->alignment * w->alignment;
    }
    uint32_t ver = 3;
    uint64_t nt = (uint64_t)w->n_t;
    uint64_t hdr = 0;
    int rc = wr(w, GGUF_MAGIC, 4, err);
    if (!rc) rc = wr(w, &ver, 4, err);
    if (!rc) rc = wr(w, &nt, 8, err);
    if (!rc) rc = wr(w, &w->n_kv, 8, err);
    if (!rc) rc = wr(w, w->kv, w->kv_len, err);
    hdr = 24 + w->kv_len;
    for (int64_t i = 0; !rc && i < w->n_t; i++) {
        struct wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        rc = wr(w, &nl, 8, err);
        if (!rc) rc = wr(w, t->name, (size_t)nl, err);
        if (!rc) rc = wr(w, &nd, 4, err);
        for (int d = 0; !rc && d < t->n_dims; d++) rc = wr(w, &t->ne[d], 8, err);
        if (!rc) rc = wr(w, &ty, 4, err);
        if (!rc) rc = wr(w, &t->offset, 8, err);
        hdr += 8 + nl + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    if (!rc) rc = wr_pad(w, hdr, err);
    w->began = 1;
    w->cur = 0;
    w->cur_done = 0;
    w->pos = 0;
    return rc;
}

/* finish zero-sized tensors and pad after completed ones */
static int advance(struct gguf_writer *w, char *err)
{
    while (w->cur < w->n_t && w->cur_done == w->t[w->cur].nbytes) {
        int rc = wr_pad(w, w->pos, err);
        if (rc) return rc;
        w->pos = (w->pos + w->alignment - 1) / w->alignment * w->alignment;
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

int gguf_writer_skip(struct gguf_writer *w, size_t n, char *err)
{
    return gguf_writer_write(w, NULL, n, err);
}

int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n, char *err)
{
    if (!w->began || w->failed)
        return err_set(err, ERR_INVAL, "%s: write before begin or after error", w->path);
    const uint8_t *p = data;
    int rc = advance(w, err);
    while (!rc && n) {
        if (w->cur >= w->n_t)
            return err_set(err, ERR_INVAL, "%s: more tensor data than declared", w->path);
        size_t k = w->t[w->cur].nbytes - w->cur_done;
        if (k > n) k = n;
        rc = wr(w, p, k, err);
        if (rc) return rc;
        if (p) p += k;
        n -= k;
        w->cur_done += k;
        w->pos += k;
        rc = advance(w, err);
    }
    return rc;
}

int gguf_writer_finish(struct gguf_writer *w, char *err)
{
    if (!w->began) {
        int rc = gguf_writer_begin(w, err);
        if (rc) return rc;
    }
    int rc = advance(w, err);
    if (rc) return rc;
    if (w->cur < w->n_t)
        return err_set(err, ERR_INVAL, "%s: tensor '%s' not fully written", w->path,
                       w->t[w->cur].name);
    FILE *f = w->f;
    w->f = NULL;
    return wt__tmp_commit(f, w->tmp, w->path, err);
}
