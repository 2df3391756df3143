/* tiny16.h - the config.json of `tiny16`, the small synth model of the GPU forward tests:
 * DeepSeek-V3's shape at toy scale but with 16 heads and kv_lora 512, so attention runs on the GPU
 * kernels; 16 routed experts, top-4, 1 dense + 2 MoE layers (header-only, used by
 * test_engine_gpu.c, test_engine_ggml.c and engine_cmp.h).
 */
#ifndef TANDEM_TEST_TINY16_H
#define TANDEM_TEST_TINY16_H

#include <stdio.h>

/* Writes the config with the given hidden size to path; 0 or -1. */
static inline int tiny16_write_config_hidden(const char *path, int hidden)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", "
            "\"vocab_size\": 768,"
            " \"hidden_size\": %d, \"intermediate_size\": 1024, \"moe_intermediate_size\": 256,"
            " \"num_hidden_layers\": 3, \"num_attention_heads\": 16, \"num_key_value_heads\": 16,"
            " \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,"
            " \"v_head_dim\": 128, \"q_lora_rank\": 256, \"n_routed_experts\": 16,"
            " \"n_shared_experts\": 1, \"num_experts_per_tok\": 4, \"n_group\": 4,"
            " \"topk_group\": 2, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,"
            " \"routed_scaling_factor\": 2.5, \"norm_topk_prob\": true,"
            " \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\","
            " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
            " \"max_position_embeddings\": 4096, \"bos_token_id\": 0, \"eos_token_id\": 1,"
            " \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
            " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
            " \"original_max_position_embeddings\": 1024, \"beta_fast\": 32.0,"
            " \"beta_slow\": 1.0, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}}\n",
            hidden);
    return fclose(f) ? -1 : 0;
}

/* Writes the config (hidden 512) to path; 0 or -1. */
static inline int tiny16_write_config(const char *path)
{
    return tiny16_write_config_hidden(path, 512);
}

#endif
