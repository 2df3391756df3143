/* safetensors.h - safetensors reader over a private read-only mapping, and a streaming writer.
 *
 * File layout: u64 little-endian header length N; N bytes of UTF-8 JSON (an object mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
 * "__metadata__" object of string -> string); then the data section, offsets relative to it.
 *
 * sft_open() validates: N against the file and a 100 MiB cap, the JSON (jansson: malformed JSON,
 * invalid UTF-8 and duplicate keys are rejected), every entry's dtype, shape (rank <= 4,
 * non-negative, no overflow), offsets (begin <= end <= data size, end - begin == elements x
 * dtype size) and that no two tensors overlap. Errors are ERR_FORMAT/ERR_UNSUPPORTED/ERR_IO
 * naming the file and the tensor.
 *
 * dtypes: F8_E4M3, BF16, F16, F32, F64, U8, I8, I16, I32, I64 and BOOL (mapped to enum qtype;
 * BOOL is held as U8). F8_E5M2 and the unsigned 16/32/64-bit types are ERR_UNSUPPORTED.
 *
 * Threads: open/close on one thread; an opened file is read-only afterwards and may be read from
 * any thread. Ownership: the file owns the mapping and every string and pointer it hands out.
 */
#ifndef TANDEM_SAFETENSORS_H
#define TANDEM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SFT_MAX_DIMS 4
#define SFT_MAX_HEADER (100u << 20)

struct sft_tensor {
    const char *name;
    int type; /* enum qtype */
    int ndim;
    int64_t shape[SFT_MAX_DIMS]; /* row-major, outermost first */
    uint64_t offset;             /* relative to the data section */
    size_t nbytes;
    const void *data; /* inside the mapping */
};

struct sft_file;

int sft_open(const char *path, struct sft_file **out, char *err);
void sft_close(struct sft_file *f); /* NULL ok */

const char *sft_path(const struct sft_file *f);
int sft_n_tensors(const struct sft_file *f);
const struct sft_tensor *sft_at(const struct sft_file *f, int i);              /* file order */
const struct sft_tensor *sft_find(const struct sft_file *f, const char *name); /* NULL if absent */
/* __metadata__ entries; NULL if absent. */
int sft_n_meta(const struct sft_file *f);
const char *sft_meta_key(const struct sft_file *f, int i);
const char *sft_meta(const struct sft_file *f, const char *key);

/* The safetensors dtype name of a qtype ("BF16", "F8_E4M3"...), NULL if none. */
const char *sft_dtype_name(int type);
int sft_dtype_from_name(const char *dtype); /* enum qtype, -1 unknown, -2 known but unsupported */

/* ---- writer ---------------------------------------------------------------------------------- */
/* Declare metadata and tensors, begin() writes the header, then write() streams each tensor's
 * bytes in declaration order (any chunk size), finish() checks and renames PATH.tmp -> PATH.
 * Single-threaded; only the header is held in memory. */
struct sft_writer;

int sft_writer_create(const char *path, struct sft_writer **out, char *err);
void sft_writer_destroy(struct sft_writer *w); /* abandons an unfinished file; NULL ok */
int sft_writer_meta(struct sft_writer *w, const char *key, const char *value, char *err);
/* type must have a safetensors dtype (sft_dtype_name != NULL). */
int sft_writer_add(struct sft_writer *w, const char *name, int type, int ndim, const int64_t *shape,
                   char *err);
int sft_writer_begin(struct sft_writer *w, char *err);
int sft_writer_write(struct sft_writer *w, const void *data, size_t n, char *err);
/* Like write, but leaves a hole of n bytes (zeros; sparse file). */
int sft_writer_skip(struct sft_writer *w, size_t n, char *err);
int sft_writer_finish(struct sft_writer *w, char *err);

#endif
