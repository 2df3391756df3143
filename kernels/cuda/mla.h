/* mla.h - Multi-head Latent Attention over the paged bf16 latent cache (absorbed form: scores
 * against the cached latent instead of per-head keys; docs/gpu.md).
 *
 * Cache: rows of CUK_MLA_DIM = 576 bf16 values (512 normalized latent c_kv, then 64 rotated k_pe);
 * the row of position p of a sequence is block_table[p / block_tokens] * block_tokens +
 * p % block_tokens (one layer of the caller's paged cache, given as its base pointer).
 *
 * cuk_mla_kv_store: for each of m new tokens, from the kv_a output row kv [m][kv_ld] (fp32):
 *   cache[slot] = bf16( RMSNorm(kv[0:512]; w, eps) ++ RoPE_pos(kv[512:576]) )
 * w = NULL skips the norm and freqs = NULL the rotation (a row that is already normalized and
 * rotated, as the hybrid backend passes it). slots[r] < 0 skips the token. Budget: reads 2304*m
 * bytes, writes 1152*m.
 *
 * cuk_mla_decode: for each query row b (a decode token, or one prefill token: causal attention is
 * expressed by seq_len[b] = pos[b] + 1), each head h:
 *   score[t] = scale * (q[b][h] . cache[row(t)])    t < seq_len[b]   (576-dim dot, fp32)
 *   o[b][h]  = sum_t softmax(score)[t] * cache[row(t)][0:512]         (fp32)
 * q [n_q][q_ld] fp32 with head h at h*576 (q~ = W_UK^T q_nope, then the rotated q_pe);
 * out [n_q][out_ld] fp32 with head h at h*512 (o~; the caller applies W_UV and o_proj).
 * block_table [n_q][bt_ld] int32, seq_len [n_q] int32 (device); max_seq_len is a host upper bound
 * used to split long contexts across CTAs (flash-decoding); those need `workspace` of
 * cuk_mla_decode_workspace_size() bytes. n_heads % 8 == 0.
 * Budget: 1152 bytes per position per query from HBM (re-read per head group from L2),
 * 2*H*(576+512) FLOP per position per query.
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_MLA_H
#define TANDEM_CUK_MLA_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

#define CUK_MLA_LORA 512
#define CUK_MLA_ROPE 64
#define CUK_MLA_DIM 576

struct cuk_mla_kv_store_args {
    int m;
    const float *kv;
    int kv_ld;
    const float *w; /* kv_a_layernorm weight [512], fp32; NULL: no norm */
    float eps;
    const int32_t *pos;   /* [m]; may be NULL without freqs */
    const float *freqs;   /* [32] from cuk_rope_freqs(64, ...); NULL: no rotation */
    const int32_t *slots; /* [m] cache row of each token */
    uint16_t *cache;
};
int cuk_mla_kv_store(const struct cuk_mla_kv_store_args *a, cudaStream_t s);

struct cuk_mla_decode_args {
    int n_q, n_heads;
    const float *q;
    int q_ld;
    const uint16_t *cache;
    int block_tokens;
    const int32_t *block_table;
    int bt_ld;
    const int32_t *seq_len;
    int max_seq_len;
    float scale;
    float *out;
    int out_ld;
    int exact; /* 0: tensor cores, q and P each split into two bf16 parts (hi + lo),
                  so scores and P V are fp32-accurate (~1e-6 relative) at twice the
                  mma count; 1: fp32 CUDA-core path (slower, kept as a check) */
    void *workspace;
    size_t workspace_size;
};
size_t cuk_mla_decode_workspace_size(int n_q, int n_heads, int max_seq_len);
int cuk_mla_decode(const struct cuk_mla_decode_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
