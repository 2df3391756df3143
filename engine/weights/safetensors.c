/* safetensors.c - safetensors reader (jansson header, validated, private mapping) and writer.
 *
 * Reader: the header length is checked against the file and SFT_MAX_HEADER before the JSON is
 * parsed; jansson (JSON_REJECT_DUPLICATES) rejects bad JSON and invalid UTF-8. Each entry is
 * checked for dtype, shape and offsets; then entries are sorted by offset to reject overlaps, and
 * by name for lookups. Tensor names are copied; data pointers point into the mapping.
 *
 * Writer: tensor declarations and metadata are collected into a jansson object; begin() dumps it
 * (compact, sorted keys, padded with spaces to a multiple of 8 so the data section is aligned),
 * then write() streams data in declaration order.
 *
 * Threads: see safetensors.h. No global state.
 */
#include "safetensors.h"
#include "weights_internal.h"

#include "common/err.h"
#include "kernels/cpu/qtype.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct sft_file {
    char *path;
    const uint8_t *map;
    size_t size;
    int n;
    struct sft_tensor *t;
    int *sorted; /* tensor indices sorted by name */
    int n_meta;
    char **meta_k, **meta_v;
};

static const struct {
    const char *name;
    int type; /* -2: known, unsupported */
} dtypes[] = {
    {"F8_E4M3", QTYPE_F8_E4M3},
    {"BF16", QTYPE_BF16},
    {"F16", QTYPE_F16},
    {"F32", QTYPE_F32},
    {"F64", QTYPE_F64},
    {"U8", QTYPE_U8},
    {"I8", QTYPE_I8},
    {"I16", QTYPE_I16},
    {"I32", QTYPE_I32},
    {"I64", QTYPE_I64},
    {"BOOL", QTYPE_U8},
    {"F8_E5M2", -2},
    {"U16", -2},
    {"U32", -2},
    {"U64", -2},
    {"F8_E8M0", -2},
};

int sft_dtype_from_name(const char *dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, dtype) == 0) return dtypes[i].type;
    return -1;
}

const char *sft_dtype_name(int type)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].type == type) return dtypes[i].name; /* U8 before BOOL */
    return NULL;
}

const char *sft_path(const struct sft_file *f) { return f->path; }
int sft_n_tensors(const struct sft_file *f) { return f->n; }
int sft_n_meta(const struct sft_file *f) { return f->n_meta; }

const struct sft_tensor *sft_at(const struct sft_file *f, int i)
{
    return (i >= 0 && i < f->n) ? &f->t[i] : NULL;
}

const char *sft_meta_key(const struct sft_file *f, int i)
{
    return (i >= 0 && i < f->n_meta) ? f->meta_k[i] : NULL;
}

const char *sft_meta(const struct sft_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

const struct sft_tensor *sft_find(const struct sft_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[f->sorted[mid]].name, name);
        if (c == 0) return &f->t[f->sorted[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

void sft_close(struct sft_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    free(f->t);
    free(f->sorted);
    if (f->map) munmap((void *)f->map, f->size);
    free(f->path);
    free(f);
}

/* one header entry -> t (name already set) */
static int parse_entry(struct sft_file *f, json_t *v, struct sft_tensor *t, uint64_t data_size,
                       char *err)
{
    const char *nm = t->name;
    if (!json_is_object(v))
        return err_set(err, ERR_FORMAT, "%s: tensor '%s': header entry is not an object", f->path,
                       nm);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return err_set(err, ERR_FORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets[2]",
                       f->path, nm);
    int type = sft_dtype_from_name(json_string_value(jd));
    if (type == -1)
        return err_set(err, ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", f->path, nm,
                       json_string_value(jd));
    if (type == -2)
        return err_set(err, ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s not supported", f->path, nm,
                       json_string_value(jd));
    t->type = type;
    size_t nd = json_array_size(js);
    if (nd > SFT_MAX_DIMS)
        return err_set(err, ERR_UNSUPPORTED, "%s: tensor '%s': rank %zu > %d", f->path, nm, nd,
                       SFT_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nel = 1;
    for (int d = 0; d < SFT_MAX_DIMS; d++) t->shape[d] = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return err_set(err, ERR_FORMAT, "%s: tensor '%s': bad shape", f->path, nm);
        uint64_t x = (uint64_t)json_integer_value(e);
        if (x && nel > (UINT64_MAX / 16) / x)
            return err_set(err, ERR_FORMAT, "%s: tensor '%s': shape overflows", f->path, nm);
        nel *= x;
        t->shape[d] = (int64_t)x;
    }
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return err_set(err, ERR_FORMAT, "%s: tensor '%s': bad data_offsets", f->path, nm);
    uint64_t ob = (uint64_t)json_integer_value(b), oe = (uint64_t)json_integer_value(e);
    if (oe > data_size)
        return err_set(err, ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu) beyond the data section (%llu "
                       "bytes; truncated file?)",
                       f->path, nm, (unsigned long long)ob, (unsigned long long)oe,
                       (unsigned long long)data_size);
    uint64_t want = nel * (uint64_t)qtype_traits(type)->type_size;
    if (oe - ob != want)
        return err_set(
            err, ERR_FORMAT, "%s: tensor '%s': %llu bytes of data for %llu elements of %s", f->path,
            nm, (unsigned long long)(oe - ob), (unsigned long long)nel, json_string_value(jd));
    t->offset = ob;
    t->nbytes = (size_t)want;
    return 0;
}

struct off_idx {
    uint64_t off;
    int idx;
};

static int cmp_off(const void *a, const void *b)
{
    const struct off_idx *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

struct name_idx {
    const char *name;
    int idx;
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct name_idx *)a)->name, ((const struct name_idx *)b)->name);
}

int sft_open(const char *path, struct sft_file **out, char *err)
{
    *out = NULL;
    struct sft_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    int rc = 0;
    json_t *root = NULL;
    struct off_idx *o = NULL;
    if ((rc = wt__map_file(path, 10, "safetensors", &f->map, &f->size, err))) goto fail;
    uint64_t hl;
    memcpy(&hl, f->map, 8);
    if (hl > SFT_MAX_HEADER || hl > f->size - 8 || hl < 2) {
        rc = err_set(err, ERR_FORMAT,
                     "%s: header length %llu is invalid for a %zu-byte file "
                     "(not safetensors, or truncated)",
                     path, (unsigned long long)hl, f->size);
        goto fail;
    }
    json_error_t je;
    root = json_loadb((const char *)f->map + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = err_set(err, ERR_FORMAT, "%s: bad JSON header at byte %d: %s", path, je.position,
                     je.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = err_set(err, ERR_FORMAT, "%s: JSON header is not an object", path);
        goto fail;
    }
    uint64_t data_off = 8 + hl, data_size = f->size - data_off;
    size_t cap = json_object_size(root);
    f->t = calloc(cap + 1, sizeof *f->t);
    f->sorted = calloc(cap + 1, sizeof *f->sorted);
    o = calloc(cap + 1, sizeof *o);
    if (!f->t || !f->sorted || !o) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = err_set(err, ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            size_t nm = json_object_size(v);
            f->meta_k = calloc(nm + 1, sizeof(char *));
            f->meta_v = calloc(nm + 1, sizeof(char *));
            if (!f->meta_k || !f->meta_v) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    rc =
                        err_set(err, ERR_FORMAT, "%s: __metadata__ '%s' is not a string", path, mk);
                    goto fail;
                }
                f->meta_k[f->n_meta] = strdup(mk);
                f->meta_v[f->n_meta] = strdup(json_string_value(mv));
                f->n_meta++;
                if (!f->meta_k[f->n_meta - 1] || !f->meta_v[f->n_meta - 1]) {
                    rc = err_set(err, ERR_NOMEM, "out of memory");
                    goto fail;
                }
            }
            continue;
        }
        struct sft_tensor *t = &f->t[f->n];
        if (!*key || !(t->name = strdup(key))) {
            rc = err_set(err, *key ? ERR_NOMEM : ERR_FORMAT, "%s: empty tensor name", path);
            goto fail;
        }
        f->n++;
        if ((rc = parse_entry(f, v, t, data_size, err))) goto fail;
        t->data = f->map + data_off + t->offset;
        o[f->n - 1] = (struct off_idx){t->offset, f->n - 1};
    }
    qsort(o, (size_t)f->n, sizeof *o, cmp_off);
    for (int i = 1; i < f->n; i++) {
        const struct sft_tensor *a = &f->t[o[i - 1].idx], *b = &f->t[o[i].idx];
        if (a->nbytes && b->nbytes && a->offset + a->nbytes > b->offset) {
            rc = err_set(err, ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", path, a->name,
                         b->name);
            goto fail;
        }
    }
    free(o);
    o = NULL;
    struct name_idx *ni = malloc(sizeof *ni * (size_t)(f->n + 1));
    if (!ni) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < f->n; i++) ni[i] = (struct name_idx){f->t[i].name, i};
    qsort(ni, (size_t)f->n, sizeof *ni, cmp_name);
    for (int i = 0; i < f->n; i++) f->sorted[i] = ni[i].idx;
    free(ni);
    json_decref(root);
    *out = f;
    return 0;
fail:
    free(o);
    json_decref(root);
    sft_close(f);
    return rc;
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct sft_writer {
    char *path, *tmp;
    FILE *f;
    json_t *hdr, *meta;
    size_t *sizes; /* per declared tensor, in order */
    int n, cap;
    uint64_t next_off;
    int began, failed, cur;
    size_t cur_done;
};

int sft_writer_create(const char *path, struct sft_writer **out, char *err)
{
    *out = NULL;
    struct sft_writer *w = calloc(1, sizeof *w);
    if (!w) return err_set(err, ERR_NOMEM, "out of memory");
    w->path = strdup(path);
    w->hdr = json_object();
    int rc = w->path && w->hdr ? wt__tmp_create(path, &w->tmp, &w->f, err)
                               : err_set(err, ERR_NOMEM, "out of memory");
    if (rc) {
        sft_writer_destroy(w);
        return rc;
    }
    *out = w;
    return 0;
}

void sft_writer_destroy(struct sft_writer *w)
{
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp);
    }
    json_decref(w->hdr);
    json_decref(w->meta);
    free(w->sizes);
    free(w->path);
    free(w->tmp);
    free(w);
}

int sft_writer_meta(struct sft_writer *w, const char *key, const char *value, char *err)
{
    if (w->began) return err_set(err, ERR_INVAL, "%s: metadata after begin", w->path);
    if (!w->meta && !(w->meta = json_object())) return err_set(err, ERR_NOMEM, "out of memory");
    if (json_object_set_new(w->meta, key, json_string(value)))
        return err_set(err, ERR_INVAL, "%s: bad metadata '%s'", w->path, key);
    return 0;
}

int sft_writer_add(struct sft_writer *w, const char *name, int type, int ndim, const int64_t *shape,
                   char *err)
{
    const char *dt = sft_dtype_name(type);
    if (w->began || !dt || ndim < 0 || ndim > SFT_MAX_DIMS || !*name ||
        strcmp(name, "__metadata__") == 0 || json_object_get(w->hdr, name))
        return err_set(err, ERR_INVAL, "%s: cannot add tensor '%s' (%s, rank %d)", w->path, name,
                       qtype_name(type), ndim);
    size_t nb = (size_t)qtype_traits(type)->type_size;
    json_t *js = json_array();
    for (int d = 0; d < ndim; d++) {
        nb *= (size_t)shape[d];
        json_array_append_new(js, json_integer(shape[d]));
    }
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        size_t *s = realloc(w->sizes, sizeof *s * (size_t)cap);
        if (!s) {
            json_decref(js);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        w->sizes = s;
        w->cap = cap;
    }
    json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dt, "shape", js, "data_offsets",
                          (json_int_t)w->next_off, (json_int_t)(w->next_off + nb));
    if (!e || json_object_set_new(w->hdr, name, e)) return err_set(err, ERR_NOMEM, "out of memory");
    w->sizes[w->n++] = nb;
    w->next_off += nb;
    return 0;
}

/* p == NULL: skip n bytes (a hole) */
static int wr(struct sft_writer *w, const void *p, size_t n, char *err)
{
    return wt__tmp_write(w->f, w->tmp, &w->failed, p, n, err);
}

int sft_writer_begin(struct sft_writer *w, char *err)
{
    if (w->began) return err_set(err, ERR_INVAL, "%s: begin twice", w->path);
    if (w->meta) {
        json_object_set(w->hdr, "__metadata__", w->meta);
    }
    char *s = json_dumps(w->hdr, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) return err_set(err, ERR_NOMEM, "out of memory");
    size_t len = strlen(s);
    uint64_t hl = (len + 7) / 8 * 8;
    int rc = wr(w, &hl, 8, err);
    if (!rc) rc = wr(w, s, len, err);
    for (size_t i = len; !rc && i < hl; i++) rc = wr(w, " ", 1, err);
    free(s);
    w->began = 1;
    return rc;
}

int sft_writer_skip(struct sft_writer *w, size_t n, char *err)
{
    return sft_writer_write(w, NULL, n, err);
}

int sft_writer_write(struct sft_writer *w, const void *data, size_t n, char *err)
{
    if (!w->began || w->failed)
        return err_set(err, ERR_INVAL, "%s: write before begin or after error", w->path);
    const uint8_t *p = data;
    while (n) {
        while (w->cur < w->n && w->cur_done == w->sizes[w->cur]) {
            w->cur++;
            w->cur_done = 0;
        }
        if (w->cur >= w->n) return err_set(err, ERR_INVAL, "%s: more data than declared", w->path);
        size_t k = w->sizes[w->cur] - w->cur_done;
        if (k > n) k = n;
        int rc = wr(w, p, k, err);
        if (rc) return rc;
        if (p) p += k;
        n -= k;
        w->cur_done += k;
    }
    return 0;
}

int sft_writer_finish(struct sft_writer *w, char *err)
{
    int rc;
    if (!w->began && (rc = sft_writer_begin(w, err))) return rc;
    while (w->cur < w->n && w->cur_done == w->sizes[w->cur]) {
        w->cur++;
        w->cur_done = 0;
    }
    if (w->cur < w->n)
        return err_set(err, ERR_INVAL, "%s: tensor %d not fully written", w->path, w->cur);
    FILE *f = w->f;
    w->f = NULL;
    return wt__tmp_commit(f, w->tmp, w->path, err);
}
