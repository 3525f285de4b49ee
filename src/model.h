/* model.h - a loaded model: the mapped file, its configuration, the weight
 * views bound by name, and the tokenizer. Nothing here owns weight memory:
 * every pointer points into the read-only mapping. */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include <stddef.h>

#include "config.h"
#include "file.h"
#include "moe.h"
#include "tokenizer.h"
#include "wmat.h"

typedef struct {
    const float *attn_norm;          /* (dim) input_layernorm */
    const float *ffn_norm;           /* (dim) post_attention_layernorm */
    /* GQA attention */
    wmat q, k, v;                    /* (n_heads*head_dim | n_kv*head_dim, dim); with attn.out_gate q is
                                        (n_heads*2*head_dim, dim): per head head_dim query rows, then head_dim gate rows */
    wmat o;                          /* (dim, n_heads*v_head_dim) */
    const float *q_bias, *k_bias, *v_bias;
    const float *q_norm, *k_norm;    /* (head_dim) or (n_heads*head_dim), (n_kv*head_dim) */
    const float *o_bias;             /* (dim) or NULL */
    const float *sinks;              /* (n_heads) sink logit per query head, or NULL */
    /* MLA attention (attn.type = mla) */
    wmat q_a, q_b;                   /* (q_lora, dim), (n_heads*(nope+rope), q_lora) */
    const float *q_a_norm;           /* (q_lora) */
    wmat kv_a;                       /* (kv_lora+rope, dim) */
    const float *kv_a_norm;          /* (kv_lora) */
    wmat k_b;                        /* n_heads x (kv_lora, nope): key half of kv_b, transposed */
    wmat v_b;                        /* n_heads x (v_dim, kv_lora) */
    /* Gated DeltaNet mixer (cfg.ssm_layer[l]), instead of attention */
    wmat ssm_qkv;                    /* (2*key_width + value_width, dim) rows: all q heads | all k heads | all v heads */
    wmat ssm_z;                      /* (value_width, dim) output gate */
    wmat ssm_qkvz;                   /* ssm.qkvz, instead of the two: (2*key_width + 2*value_width, dim) rows per key
                                        head: its q, its k, its value heads' v, their z (HF in_proj_qkvz) */
    wmat ssm_beta, ssm_alpha;        /* (n_v_heads, dim) b and a projections */
    const float *ssm_conv;           /* (channels, conv_kernel) depthwise conv taps, last tap = current token */
    const float *ssm_a;              /* (n_v_heads) -exp(A_log) */
    const float *ssm_dt;             /* (n_v_heads) dt_bias */
    const float *ssm_norm;           /* (v_dim) gated RMSNorm weight */
    wmat ssm_out;                    /* (dim, value_width) out_proj */
    /* FFN: dense ... */
    int is_moe;
    wmat ffn_gate, ffn_up;           /* (ff, dim) */
    wmat ffn_down;                   /* (dim, ff) */
    /* ... or mixture of experts */
    wmat router;                     /* (n_experts, dim) */
    const float *router_bias;        /* (n_experts) selection-only bias, or NULL */
    const float *router_logit_bias;  /* (n_experts) added to the router logits, or NULL */
    const float *gate_exps_bias, *up_exps_bias; /* n_experts x (moe_ff), exps_bias_stride apart, or NULL */
    int exps_bias_stride;            /* moe_ff, or 2*moe_ff: halves of a fused gate|up bias */
    const float *down_exps_bias;     /* (n_experts, dim) or NULL */
    wmat gate_exps, up_exps;         /* n_experts x (moe_ff, dim) */
    wmat down_exps;                  /* n_experts x (dim, moe_ff) */
    wmat gate_sh, up_sh, down_sh;    /* shared expert (shared_ff, dim), (dim, shared_ff); rows 0 if none */
    wmat shexp_gate;                 /* (1, dim) or rows 0 */
} layer_weights;

struct moe_model {
    moe_file file;                   /* the mapping; owns nothing else */
    moe_config cfg;
    wmat tok_embd;                   /* (vocab, dim) */
    const float *output_norm;        /* (dim) */
    wmat output;                     /* (vocab, dim); = tok_embd when tied */
    layer_weights *layers;           /* [n_layers], allocated */
    moe_tokenizer *tok;
};

/* The tokenizer of a model (never NULL after a successful moe_model_open). */
const moe_tokenizer *model_tokenizer(const moe_model *m);

/* Open from an in-memory buffer (tests, fuzzing): the buffer must outlive the model. */
moe_model *model_open_buffer(const void *buf, size_t size, moe_err *err);

#endif /* MOE_MODEL_H */
