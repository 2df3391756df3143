/* gguf.h - GGUF (v2, v3) reader over a read-only private mapping, and a streaming writer.
 *
 * File layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value
 * pairs (string key, u32 value type, value); n_tensors tensor infos (string name, u32 n_dims,
 * u64 ne[n_dims], u32 ggml type, u64 offset); padding to `general.alignment` (default 32); the
 * data section. Strings are u64 length + bytes (no NUL). Arrays are u32 element type + u64 count
 * + elements, and may nest. Tensor offsets are relative to the data section and aligned.
 *
 * gguf_open() checks everything up front: magic, version, counts against the bytes that remain,
 * string lengths, value types, nested arrays, n_dims <= 4, element counts (overflow), the tensor
 * type (a GGML type tandem knows, ne[0] a multiple of its block), offsets aligned and inside the
 * file, no two tensors overlapping, no duplicate names or keys. Every failure is ERR_FORMAT (or
 * ERR_IO) with a message naming the file and, where there is one, the tensor or key. After a
 * successful open every getter is a bounds-checked read of already validated data.
 *
 * ne[] is kept in GGUF order (ne[0] = innermost, the row length); callers that want PyTorch
 * order reverse it (weights.c does).
 *
 * Threads: open/close on one thread; a successfully opened context is read-only and may be read
 * from any thread. Ownership: the context owns the mapping; every pointer it hands out (names,
 * strings, tensor data) lives until gguf_close(). Numbers inside the mapping may be unaligned:
 * the getters copy them out.
 */
#ifndef TANDEM_GGUF_H
#define TANDEM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

enum gguf_vtype {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT_
};

const char *gguf_vtype_name(int t); /* "u32", "string", ...; "?" if unknown */

struct gguf_ctx;

struct gguf_tensor_info {
    const char *name; /* NUL-terminated, owned by the context */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* GGUF order: ne[0] is the row length; unused dims = 1 */
    int type;                  /* enum qtype (a GGML type) */
    uint64_t offset;           /* relative to the data section */
    size_t nbytes;
    const void *data; /* inside the mapping */
};

/* ---- reader ---------------------------------------------------------------------------------- */

/* Map and validate `path`. On error *out is NULL and err names the file (and tensor/key). */
int gguf_open(const char *path, struct gguf_ctx **out, char *err);
void gguf_close(struct gguf_ctx *ctx); /* NULL ok */

const char *gguf_path(const struct gguf_ctx *ctx);
int gguf_version(const struct gguf_ctx *ctx);
size_t gguf_alignment(const struct gguf_ctx *ctx);
size_t gguf_file_size(const struct gguf_ctx *ctx);
size_t gguf_data_offset(const struct gguf_ctx *ctx); /* file offset of the data section */

/* Key/value pairs: index 0..n_kv-1. */
int64_t gguf_n_kv(const struct gguf_ctx *ctx);
const char *gguf_key(const struct gguf_ctx *ctx, int64_t i);        /* NUL-terminated */
int64_t gguf_find_key(const struct gguf_ctx *ctx, const char *key); /* -1 if absent */
int gguf_kv_type(const struct gguf_ctx *ctx, int64_t i);            /* enum gguf_vtype, -1 bad i */

/* Scalar getters. Integer getters accept any integer (or bool) value type whose value fits the
 * destination; float getters accept floats and integers. Return 0, or ERR_FORMAT (type mismatch,
 * out of range) / ERR_INVAL (bad index) with a message naming the key. */
int gguf_get_u32(const struct gguf_ctx *ctx, int64_t i, uint32_t *v, char *err);
int gguf_get_i32(const struct gguf_ctx *ctx, int64_t i, int32_t *v, char *err);
int gguf_get_u64(const struct gguf_ctx *ctx, int64_t i, uint64_t *v, char *err);
int gguf_get_i64(const struct gguf_ctx *ctx, int64_t i, int64_t *v, char *err);
int gguf_get_f32(const struct gguf_ctx *ctx, int64_t i, float *v, char *err);
int gguf_get_f64(const struct gguf_ctx *ctx, int64_t i, double *v, char *err);
int gguf_get_bool(const struct gguf_ctx *ctx, int64_t i, int *v, char *err);
/* String value: NUL-terminated copy owned by the context (may contain no NUL inside: a string
 * with an embedded NUL is reported as ERR_FORMAT). */
int gguf_get_str(const struct gguf_ctx *ctx, int64_t i, const char **v, char *err);

/* Arrays. gguf_get_arr gives the element type and count (ERR_FORMAT if the value is no array).
 * Element getters: numbers convert like the scalar getters; strings are returned as a pointer
 * into the mapping plus a length (NOT NUL-terminated). Nested arrays are validated at open but
 * only their type and count are exposed (gguf_get_arr on the element is not provided). */
int gguf_get_arr(const struct gguf_ctx *ctx, int64_t i, int *elem_type, uint64_t *n, char *err);
int gguf_arr_i64(const struct gguf_ctx *ctx, int64_t i, uint64_t j, int64_t *v, char *err);
int gguf_arr_f64(const struct gguf_ctx *ctx, int64_t i, uint64_t j, double *v, char *err);
int gguf_arr_str(const struct gguf_ctx *ctx, int64_t i, uint64_t j, const char **s, size_t *len,
                 char *err);
/* Raw bytes of a numeric array's elements (count * element size bytes, possibly unaligned). */
const void *gguf_arr_data(const struct gguf_ctx *ctx, int64_t i);

/* Convenience by key name: 0 if found and converted, ERR_NOT_FOUND if absent (err untouched),
 * ERR_FORMAT if present with an unusable type. */
int gguf_find_i64(const struct gguf_ctx *ctx, const char *key, int64_t *v, char *err);
int gguf_find_f64(const struct gguf_ctx *ctx, const char *key, double *v, char *err);
int gguf_find_str(const struct gguf_ctx *ctx, const char *key, const char **v, char *err);

/* Tensors: index 0..n_tensors-1 in file order. */
int64_t gguf_n_tensors(const struct gguf_ctx *ctx);
int gguf_tensor_info(const struct gguf_ctx *ctx, int64_t i, struct gguf_tensor_info *info);
int64_t gguf_find_tensor(const struct gguf_ctx *ctx, const char *name); /* -1 if absent */

/* ---- writer ---------------------------------------------------------------------------------- */
/* Streaming: set metadata and declare every tensor (name, type, ne), then gguf_writer_begin()
 * writes header, metadata and tensor infos, then the tensor data is appended in declaration order
 * with gguf_writer_write() (any chunk size; alignment padding between tensors is inserted
 * automatically), then gguf_writer_finish() checks every byte was written and closes the file.
 * Only metadata is buffered in memory. The file is written as PATH.tmp and renamed on finish, so
 * a crash never leaves a half-written file under the final name. Single-threaded. */
struct gguf_writer;

int gguf_writer_create(const char *path, struct gguf_writer **out, char *err);
/* Abandon (removes the temporary file) or free after finish. NULL ok. */
void gguf_writer_destroy(struct gguf_writer *w);

int gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
/* Numeric array: n elements of elem_type, host (little-endian) layout. */
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, int elem_type, const void *data,
                        uint64_t n);
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *v,
                            uint64_t n);
/* `general.alignment` (power of two); set before begin. Default 32. */
int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment);

/* Declare a tensor: ne in GGUF order (ne[0] innermost). */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, int n_dims,
                           const int64_t *ne, char *err);
int gguf_writer_begin(struct gguf_writer *w, char *err);
int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n, char *err);
/* Like write, but leaves n bytes as a hole (reads as zeros; a sparse file): all-zero weights for
 * shape-only test models without writing gigabytes. */
int gguf_writer_skip(struct gguf_writer *w, size_t n, char *err);
int gguf_writer_finish(struct gguf_writer *w, char *err);

#endif
