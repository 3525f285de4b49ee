/* config.h - the model configuration, read from the file's metadata by one
 * table (config.c) and validated once. The forward pass reads only this
 * struct: the family name is informational. Keys: docs/FORMAT.md. */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include "file.h"
#include "moe.h"

/* The widest DeltaNet conv kernel accepted (published models use 4): the
 * conv keeps a channel's window of inputs on the stack (deltanet.c). */
#define MAX_CONV_KERNEL 64

typedef enum { ROPE_HALF = 0, ROPE_PAIR = 1 } rope_layout;
typedef enum { ROPE_SCALE_NONE = 0, ROPE_SCALE_LINEAR, ROPE_SCALE_YARN, ROPE_SCALE_LLAMA3 } rope_scaling;
typedef enum { QK_NORM_NONE = 0, QK_NORM_HEAD, QK_NORM_FULL } qk_norm_kind;
typedef enum { ATTN_GQA = 0, ATTN_MLA = 1 } attn_kind;
typedef enum { SCORE_SOFTMAX = 0, SCORE_SIGMOID = 1 } score_func;
typedef enum { GROUP_MAX = 0, GROUP_TOP2SUM = 1 } group_score;
typedef enum { ACT_SWIGLU = 0, ACT_SWIGLU_OAI = 1 } ffn_act;

/* Everything the router needs, and nothing else: one pure function
 * (router.c) is driven by this. */
typedef struct {
    int n_experts;          /* E */
    int k;                  /* experts chosen per token */
    score_func score;       /* softmax over E, or sigmoid of each logit */
    int norm_topk;          /* divide the k weights by their sum */
    float scale;            /* then multiply by this (routed_scaling_factor) */
    int n_groups;           /* experts split into equal groups (1 = no groups) */
    int groups_active;      /* keep only the best this-many groups */
    group_score group_score;
    int use_bias;           /* add the selection-only bias to choose experts */
} route_config;

typedef struct {
    char arch[32];
    char name[128];
    int has_weights;        /* 0: tokenizer-only file */

    /* model.* */
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, head_dim, ff_dim, max_ctx;
    float norm_eps;
    int tied_embd;
    float embd_scale, residual_scale, logit_scale;
    int n_mtp_layers;       /* multi-token-prediction layers left out by the converter (never run) */

    /* attn.* */
    attn_kind attn_type;
    float attn_scale;
    int qkv_bias;
    qk_norm_kind qk_norm;
    float clip_qkv;
    int window;
    unsigned char *window_layer; /* [n_layers] 1 = the layer attends within window; allocated */
    int o_bias;             /* attn_o_bias exists */
    int sinks;              /* attn_sinks: one learned logit per head joins the softmax */
    int out_gate;           /* attn.out_gate: q rows doubled per head, sigmoid gate on the output */

    /* rope.* */
    float rope_theta;
    int rope_dim;
    rope_layout rope_layout;
    rope_scaling rope_scaling;
    float rope_factor;
    int rope_orig_ctx;
    float rope_beta_fast, rope_beta_slow, rope_attn_factor;
    int rope_yarn_truncate; /* floor/ceil YaRN's ramp bounds (HF truncate) */
    float rope_low_freq_factor, rope_high_freq_factor;

    /* moe.* */
    route_config route;     /* route.n_experts == 0: dense model */
    int moe_ff_dim;
    unsigned char *moe_layer; /* [n_layers] 1 = MoE FFN; allocated */
    int shared_ff;
    int shared_gate;
    int router_bias;        /* ffn_router_logit_bias is added to the router logits (gpt-oss) */
    int expert_bias;        /* ffn_{gate,up,down}_exps_bias exist */
    ffn_act act;            /* expert activation */
    float act_limit, act_alpha; /* swiglu_oai: clamp and sigmoid slope */

    /* mla.* */
    int q_lora, kv_lora, nope_dim, mla_rope_dim, v_dim;
    int mla_latent_act;     /* the latent is rounded to this activation type (dtype.h act_type) before use, as
                               the matmul with a quantized kv_b rounds it (GGUF files, gguf_view.c); 0: float */

    /* ssm.*: Gated DeltaNet (linear attention) layers, deltanet.c */
    unsigned char *ssm_layer; /* [n_layers] 1 = Gated DeltaNet mixer, 0 = attention; allocated */
    int n_ssm_layers;
    int ssm_conv_kernel;    /* causal depthwise conv width K (linear_conv_kernel_dim), <= MAX_CONV_KERNEL */
    int ssm_n_k_heads, ssm_n_v_heads; /* linear_num_key_heads, linear_num_value_heads */
    int ssm_k_dim, ssm_v_dim; /* per head: linear_key_head_dim, linear_value_head_dim */
    int ssm_v_tiled;          /* value heads in tiled order: head h reads key head h % n_k_heads (llama.cpp's qwen35moe) */
    int ssm_qkvz;             /* 1: one ssm_qkvz in HF's in_proj_qkvz row order instead of ssm_qkv + ssm_z (GGUF ssm_in) */
} moe_config;

/* Read and validate every metadata key; unknown keys are errors. */
int config_load(moe_config *c, const moe_file *f, moe_err *err);
void config_free(moe_config *c);

/* Gated DeltaNet widths: q and k (n_k_heads*k_dim each), v (n_v_heads*v_dim),
 * and the conv channels q|k|v. */
static inline int ssm_key_width(const moe_config *c) { return c->ssm_n_k_heads * c->ssm_k_dim; }
static inline int ssm_value_width(const moe_config *c) { return c->ssm_n_v_heads * c->ssm_v_dim; }
static inline int ssm_channels(const moe_config *c) { return 2 * ssm_key_width(c) + ssm_value_width(c); }
/* Floats of one layer's recurrent state: conv state (K-1, channels) + S (n_v, v_dim, k_dim). */
static inline size_t ssm_state_floats(const moe_config *c) {
    return (size_t)(c->ssm_conv_kernel - 1) * (size_t)ssm_channels(c) +
           (size_t)c->ssm_n_v_heads * (size_t)c->ssm_k_dim * (size_t)c->ssm_v_dim;
}

/* Width of one head's value vector and of the attention output. */
static inline int config_v_head_dim(const moe_config *c) { return c->attn_type == ATTN_MLA ? c->v_dim : c->head_dim; }

/* Positions the KV cache of a layer holds: all n_ctx, or a ring for a GQA
 * layer with a sliding window (attention.c writes at most window tokens
 * before they attend, so 2*window - 1 slots never overwrite a live key). */
static inline int config_cache_slots(const moe_config *c, int n_ctx, int layer) {
    if (c->ssm_layer && c->ssm_layer[layer]) return 0; /* Gated DeltaNet: no KV cache */
    if (c->attn_type != ATTN_GQA || !c->window_layer[layer]) return n_ctx;
    long long ring = 2 * (long long)c->window - 1;
    return ring < n_ctx ? (int)ring : n_ctx;
}

#endif /* MOE_CONFIG_H */
