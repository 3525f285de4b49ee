/* quant_mix.h - llama.cpp's quantization mixes (Q2_K, Q3_K_M, Q4_K_M,
 * Q5_K_M, Q6_K): which type each tensor gets, by llama-quantize's per-tensor
 * rules (src/llama-quantize.cpp llama_tensor_get_type of ik_llama.cpp
 * 8337e4cd, the quantizer that wrote ../shared/gguf). The rules read
 * llama.cpp's tensor names ("blk.2.ffn_down_exps.weight"); quant_mix_gguf_name
 * gives a .moe tensor's. One table of rules in quant_mix.c, each line citing
 * the llama.cpp rule it mirrors. */
#ifndef MOE_QUANT_MIX_H
#define MOE_QUANT_MIX_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef enum { MIX_Q2_K = 0, MIX_Q3_K_M, MIX_Q4_K_M, MIX_Q5_K_M, MIX_Q6_K, MIX_COUNT } quant_mix;

/* What the rules ask of the model (llama.cpp's hparams). */
typedef struct {
    int n_layers;             /* hparams.n_layer: the block_count, multi-token-prediction blocks included */
    int n_experts;            /* routed experts; 0 for a dense model (hparams.n_expert) */
    int n_heads, n_kv_heads;  /* n_gqa() = n_heads / n_kv_heads */
    int has_output;           /* an output matrix apart from the token embedding (qs.has_output) */
    const int *attn_v_index;  /* [n_layers]: attn_v tensors in the layers before each (llama.cpp's
                               * counter i_attention_wv; hybrid models have fewer than layers);
                               * NULL: the layer number */
} mix_model;

/* The mix named s ("q4_k_m", any case), or -1. */
int quant_mix_from_name(const char *s);
const char *quant_mix_name(quant_mix m);
/* llama.cpp's llama_ftype of the mix (general.file_type of its files: Q4_K_M 15). */
int quant_mix_ftype(quant_mix m);

/* The type llama-quantize gives the tensor `name` (llama.cpp's name, NUL-
 * terminated) of n_dims dimensions whose rows hold ne0 values under mix m;
 * -1 when llama-quantize leaves it as it is (norms, routers, 1-D tensors,
 * anything not named *weight). */
int quant_mix_type(quant_mix m, const mix_model *mm, const char *name, int n_dims, uint64_t ne0);

/* llama.cpp's name of a .moe tensor ("blk.2.attn_o" -> "blk.2.attn_output.weight")
 * into out (cap bytes); -1 for a .moe name llama.cpp has no tensor for. */
int quant_mix_gguf_name(const char *moe_name, int len, char *out, size_t cap);

#endif /* MOE_QUANT_MIX_H */
