/* weights_internal.h - shared between the files of engine/weights only. */
#ifndef TANDEM_WEIGHTS_INTERNAL_H
#define TANDEM_WEIGHTS_INTERNAL_H

#include "weights.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct wt__name_info {
    int layer;  /* -1: not a per-layer tensor */
    int expert; /* per-expert HF tensor: expert index, else -1 */
    int proj;   /* routed expert projection (enum wt_proj), else -1 */
    int nextn;  /* GGUF blk.N.nextn.* (MTP) */
};

/* HF/GGUF/KT name -> canonical name (out, n bytes). -1 if it does not fit. */
int wt__canon_name(const char *src, char *out, size_t n, struct wt__name_info *ni);
/* strcmp with digit runs compared as numbers (blk.2 < blk.10) */
int wt__natural_cmp(const char *a, const char *b);

/* Map a regular file read-only and privately (no write can reach it, and it is never written
 * through). Files shorter than min_size are ERR_FORMAT "too small for a <what> file". */
int wt__map_file(const char *path, size_t min_size, const char *what, const uint8_t **map,
                 size_t *size, char *err);

/* Writers write PATH.tmp and rename it over PATH only when complete. wt__tmp_create opens
 * *f (1 MiB buffer) on a new malloc'd *tmp = "PATH.tmp"; on failure *f is NULL and *tmp, if set,
 * is the caller's to free. wt__tmp_commit truncates the file at the current position (no trailing
 * hole), closes f (always) and renames tmp to path; on failure it removes tmp. */
int wt__tmp_create(const char *path, char **tmp, FILE **f, char *err);
int wt__tmp_commit(FILE *f, const char *tmp, const char *path, char *err);
/* Append n bytes of p to a writer's file, or (p == NULL) leave an n-byte hole. On failure sets
 * *failed and returns ERR_IO naming tmp. */
int wt__tmp_write(FILE *f, const char *tmp, int *failed, const void *p, size_t n, char *err);

struct cpuq_ops;
/* Row r of a matrix (type, cols, row_bytes, data; FP8: its scale grid) -> out[cols] as f32.
 * ERR_UNSUPPORTED for a type ops cannot dequantize; name is for messages. (rows.c) */
int wt__row_f32(const struct cpuq_ops *ops, int type, int64_t cols, size_t row_bytes,
                const void *data, const float *scale, int64_t r, float *out, const char *name,
                char *err);

struct gguf_ctx;
/* config.json text -> hp; src names the source in messages */
int wt__hparams_json(const char *text, size_t len, const char *src, struct wt_hparams *hp,
                     char *err);
/* GGUF deepseek2.* metadata -> hp (vocab_size 0 if the file does not say) */
int wt__hparams_gguf(const struct gguf_ctx *g, struct wt_hparams *hp, char *err);

#endif
