/* gguf_view.c - a GGUF file as the engine's own view (gguf_view.h).
 *
 * One table row per architecture says what llama.cpp's converter and graph
 * builder do that the metadata does not (RoPE style, QK-norm kind, whether
 * the top-k weights are renormalised); the hyperparameters come from the
 * {arch}.* keys, each read once. A key under {arch}. that this file does not
 * read, an unknown architecture or a missing required key is refused with one
 * line, never guessed. Tensor names map by one table; unknown names are
 * refused too, and model.c then binds the view exactly as it binds a .moe. */
#include "gguf_view.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

typedef struct {
    const char *gguf;         /* general.architecture */
    const char *arch;         /* the view's general.arch (config.c) */
    const char *arch_moe;     /* ... when the file has experts */
    /* "pair": the converter permuted Q/K rows into interleaved pairs (llama,
     * granite: rope.layout pair reproduces HF without copying the weights)
     * or the model rotates pairs itself (DeepSeek); "half": NEOX style */
    const char *rope_layout;
    const char *qk_norm;      /* none, head, full; "tensor": head when attn_q_norm is present (GLM's use_qk_norm) */
    int norm_topk;            /* llama.cpp's graph renormalises the top-k weights (unless expert_weights_norm) */
    int mla;                  /* DeepSeek's multi-head latent attention */
    int granite;              /* embedding/residual/attention/logit scales */
    /* Gated DeltaNet + gated attention (hybrid_keys): 1 value heads in HF's
     * grouped order, 2 tiled (the converter reorders Qwen3.5's, ssm.v_tiled) */
    int hybrid;
} arch_spec;

static const arch_spec ARCH_SPECS[] = {
    {"llama", "llama", "mixtral", "pair", "none", 1, 0, 0, 0},
    {"qwen2", "qwen2", NULL, "half", "none", 0, 0, 0, 0},
    {"qwen3", "qwen3", NULL, "half", "head", 0, 0, 0, 0},
    {"qwen2moe", "qwen2_moe", "qwen2_moe", "half", "none", 0, 0, 0, 0},
    {"qwen3moe", "qwen3_moe", "qwen3_moe", "half", "head", 1, 0, 0, 0},
    {"olmoe", "olmoe", "olmoe", "half", "full", 0, 0, 0, 0},
    {"granitemoe", "granitemoe", "granitemoe", "pair", "none", 1, 0, 1, 0},
    {"deepseek2", "deepseek_v2", "deepseek_v2", "pair", "none", 0, 1, 0, 0},
    {"glm4moe", "glm4_moe", "glm4_moe", "half", "tensor", 0, 0, 0, 0},
    {"qwen3next", "qwen3_next", "qwen3_next", "half", "head", 1, 0, 0, 1},
    {"qwen35moe", "qwen3_5_moe", "qwen3_5_moe", "half", "head", 1, 0, 0, 2},
    /* gpt-oss: llama.cpp's softmax over the top-k logits is softmax then renormalise */
    {"gpt-oss", "gpt_oss", "gpt_oss", "half", "none", 1, 0, 0, 0},
};

/* gpt-oss's sinks, window, biases and activation (gpt_oss_keys, TN_GPT_OSS) */
static int is_gpt_oss(const arch_spec *a) { return !strcmp(a->gguf, "gpt-oss"); }
#define N_ARCH_SPECS ((int)(sizeof ARCH_SPECS / sizeof ARCH_SPECS[0]))

/* {arch}.* keys that change nothing the engine computes */
static const char *const IGNORED_ARCH_KEYS[] = {"rope.scaling.finetuned", "tensor_data_layout", NULL};

/* GGUF tensor name (after "blk.N." for layer tensors) -> the view's name. */
/* TN_GPT_OSS: a plain tensor only gpt-oss has (refused under other architectures);
 * TN_SSM*: Gated DeltaNet tensors (hybrid architectures only); TN_SSM_F32
 * are read by plain loops as F32 (dequantized once if stored otherwise);
 * TN_SSM_BA is Qwen3-Next's fused b|a projection, split by split_ssm_ba. */
typedef enum { TN_PLAIN = 0, TN_KV_B, TN_K_B, TN_V_B, TN_SHEXP_GATE, TN_GPT_OSS, TN_SSM, TN_SSM_F32, TN_SSM_BA } tn_kind;
typedef struct {
    const char *gguf, *moe;
    tn_kind kind;
} tensor_name;

static const tensor_name GLOBAL_NAMES[] = {
    {"token_embd.weight", "tok_embd", TN_PLAIN},
    {"output_norm.weight", "output_norm", TN_PLAIN},
    {"output.weight", "output", TN_PLAIN},
};
static const tensor_name LAYER_NAMES[] = {
    {"attn_norm.weight", "attn_norm", TN_PLAIN},
    {"ffn_norm.weight", "ffn_norm", TN_PLAIN},
    {"attn_q.weight", "attn_q", TN_PLAIN},
    {"attn_k.weight", "attn_k", TN_PLAIN},
    {"attn_v.weight", "attn_v", TN_PLAIN},
    {"attn_output.weight", "attn_o", TN_PLAIN},
    {"attn_q.bias", "attn_q_bias", TN_PLAIN},
    {"attn_k.bias", "attn_k_bias", TN_PLAIN},
    {"attn_v.bias", "attn_v_bias", TN_PLAIN},
    {"attn_q_norm.weight", "attn_q_norm", TN_PLAIN},
    {"attn_k_norm.weight", "attn_k_norm", TN_PLAIN},
    {"attn_q_a.weight", "attn_q_a", TN_PLAIN},
    {"attn_q_a_norm.weight", "attn_q_a_norm", TN_PLAIN},
    {"attn_q_b.weight", "attn_q_b", TN_PLAIN},
    {"attn_kv_a_mqa.weight", "attn_kv_a", TN_PLAIN},
    {"attn_kv_a_norm.weight", "attn_kv_a_norm", TN_PLAIN},
    {"attn_kv_b.weight", NULL, TN_KV_B},
    {"attn_k_b.weight", "attn_k_b", TN_K_B},
    {"attn_v_b.weight", "attn_v_b", TN_V_B},
    {"ffn_gate.weight", "ffn_gate", TN_PLAIN},
    {"ffn_up.weight", "ffn_up", TN_PLAIN},
    {"ffn_down.weight", "ffn_down", TN_PLAIN},
    {"ffn_gate_inp.weight", "ffn_router", TN_PLAIN},
    {"exp_probs_b.bias", "ffn_router_bias", TN_PLAIN},
    {"ffn_gate_exps.weight", "ffn_gate_exps", TN_PLAIN},
    {"ffn_up_exps.weight", "ffn_up_exps", TN_PLAIN},
    {"ffn_down_exps.weight", "ffn_down_exps", TN_PLAIN},
    /* llama.cpp's fused experts (its converter's --fuse-gate-up-exps): per expert
     * its gate rows, then its up rows; model.c binds both halves in place */
    {"ffn_gate_up_exps.weight", "ffn_gate_up_exps", TN_PLAIN},
    {"ffn_gate_shexp.weight", "ffn_gate_shexp", TN_PLAIN},
    {"ffn_up_shexp.weight", "ffn_up_shexp", TN_PLAIN},
    {"ffn_down_shexp.weight", "ffn_down_shexp", TN_PLAIN},
    {"ffn_gate_inp_shexp.weight", "ffn_shexp_gate", TN_SHEXP_GATE},
    /* gpt-oss, GLM-4.5, Qwen3-Next, Qwen3.5: the norm before the FFN (post_attention_layernorm) */
    {"post_attention_norm.weight", "ffn_norm", TN_PLAIN},
    /* gpt-oss (llama.cpp's LLM_ARCH_OPENAI_MOE names): experts, router and output projection have biases */
    {"attn_sinks.weight", "attn_sinks", TN_GPT_OSS},
    {"attn_output.bias", "attn_o_bias", TN_GPT_OSS},
    {"ffn_gate_inp.bias", "ffn_router_logit_bias", TN_GPT_OSS},
    {"ffn_gate_exps.bias", "ffn_gate_exps_bias", TN_GPT_OSS},
    {"ffn_up_exps.bias", "ffn_up_exps_bias", TN_GPT_OSS},
    {"ffn_gate_up_exps.bias", "ffn_gate_up_exps_bias", TN_GPT_OSS},
    {"ffn_down_exps.bias", "ffn_down_exps_bias", TN_GPT_OSS},
    /* Gated DeltaNet (qwen3next, qwen35moe): the converter writes q|k|v rows
     * all q heads, all k heads, all v heads, as the engine reads them */
    {"attn_qkv.weight", "ssm_qkv", TN_SSM},
    {"attn_gate.weight", "ssm_z", TN_SSM},
    /* ... or, in older mainline qwen3next files, HF's in_proj_qkvz rows as they are (per key head
     * q, k, v, z), split after the product (ssm.qkvz), as llama.cpp's graph still reads them */
    {"ssm_in.weight", "ssm_qkvz", TN_SSM},
    {"ssm_beta.weight", "ssm_beta", TN_SSM},
    {"ssm_alpha.weight", "ssm_alpha", TN_SSM},
    {"ssm_ba.weight", NULL, TN_SSM_BA},
    {"ssm_conv1d.weight", "ssm_conv", TN_SSM_F32},
    {"ssm_a", "ssm_a", TN_SSM_F32},
    {"ssm_dt.bias", "ssm_dt", TN_SSM_F32},
    {"ssm_norm.weight", "ssm_norm", TN_SSM_F32},
    {"ssm_out.weight", "ssm_out", TN_SSM},
};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ------------------------------------------------------------ building the view */

static char *own_str(gguf_view *v, const char *s) {
    size_t n = strlen(s);
    char *p = moef_alloc(v->f, n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static moe_kv *new_kv(gguf_view *v, const char *key) {
    moe_file *f = v->f;
    if (f->n_kv == v->kv_cap) {
        int cap = v->kv_cap ? 2 * v->kv_cap : 64;
        moe_kv *grown = realloc(f->kv, sizeof *grown * (size_t)cap);
        if (!grown) {
            moe_fail(v->err, "out of memory");
            return NULL;
        }
        f->kv = grown;
        v->kv_cap = cap;
    }
    moe_kv *kv = &f->kv[f->n_kv++];
    memset(kv, 0, sizeof *kv);
    kv->key = key;
    kv->key_len = (int)strlen(key);
    return kv;
}

int view_int(gguf_view *v, const char *key, int64_t value) {
    moe_kv *kv = new_kv(v, key);
    if (!kv) return -1;
    kv->type = KV_INT;
    kv->i = value;
    return 0;
}

int view_float(gguf_view *v, const char *key, double value) {
    moe_kv *kv = new_kv(v, key);
    if (!kv) return -1;
    kv->type = KV_FLOAT;
    kv->f = value;
    return 0;
}

int view_str(gguf_view *v, const char *key, const char *s, size_t len) {
    moe_kv *kv = new_kv(v, key);
    if (!kv) return -1;
    if (len > UINT32_MAX) return moe_fail(v->err, "metadata %s: string too long", key);
    kv->type = KV_STR;
    kv->str = s;
    kv->len = (uint32_t)len;
    return 0;
}

int view_ints(gguf_view *v, const char *key, const int64_t *values, uint32_t n) {
    uint8_t *bytes = moef_alloc(v->f, (size_t)n * 8);
    moe_kv *kv = bytes ? new_kv(v, key) : NULL;
    if (!kv) return bytes ? -1 : moe_fail(v->err, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) bytes[(size_t)i * 8 + (size_t)b] = (uint8_t)((uint64_t)values[i] >> (8 * b));
    kv->type = KV_INTS;
    kv->len = n;
    kv->ints = bytes;
    return 0;
}

moe_tensor *view_tensor(gguf_view *v, const char *name, moe_dtype dtype, int n_dims, const uint64_t *dims,
                        const void *data) {
    moe_file *f = v->f;
    if (f->n_tensors == v->tensor_cap) {
        int cap = v->tensor_cap ? 2 * v->tensor_cap : 64;
        moe_tensor *grown = realloc(f->tensors, sizeof *grown * (size_t)cap);
        if (!grown) {
            moe_fail(v->err, "out of memory");
            return NULL;
        }
        f->tensors = grown;
        v->tensor_cap = cap;
    }
    char *own = own_str(v, name);
    if (!own) {
        moe_fail(v->err, "out of memory");
        return NULL;
    }
    moe_tensor *t = &f->tensors[f->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = own;
    t->name_len = (int)strlen(own);
    t->dtype = dtype;
    t->n_dims = n_dims;
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        t->dims[d] = dims[d];
        n *= dims[d];
    }
    t->nbytes = n / (uint64_t)dtype_info(dtype)->block * (uint64_t)dtype_info(dtype)->block_bytes;
    t->data = data;
    return t;
}

const gguf_kv *view_key(gguf_view *v, const char *key) {
    const gguf_kv *kv = gguf_find(v->g, key);
    if (kv) v->consumed[kv - v->g->kv] = 1;
    return kv;
}

/* ------------------------------------------------------------ {arch}.* keys */

typedef struct {
    gguf_view *v;
    const char *arch;
} keys;

static const gguf_kv *arch_key(keys *k, const char *suffix) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", k->arch, suffix);
    return view_key(k->v, name);
}

/* An integer key in 0..2^30; `def` < 0 means required. */
static int get_int(keys *k, const char *suffix, int64_t def, int *out) {
    const gguf_kv *kv = arch_key(k, suffix);
    if (!kv) {
        if (def < 0) return moe_fail(k->v->err, "GGUF metadata %s.%s is required and missing", k->arch, suffix);
        *out = (int)def;
        return 0;
    }
    if (kv->type == GGUF_ARRAY)
        return moe_fail(k->v->err, "GGUF metadata %s.%s: per-layer values are not supported", k->arch, suffix);
    uint64_t u;
    if (gguf_kv_uint(kv, &u, k->v->err)) return -1;
    if (u > ((uint64_t)1 << 30)) return moe_fail(k->v->err, "GGUF metadata %s.%s = %llu is out of range", k->arch, suffix,
                                                 (unsigned long long)u);
    *out = (int)u;
    return 0;
}

static int get_float(keys *k, const char *suffix, double def, int required, double *out) {
    const gguf_kv *kv = arch_key(k, suffix);
    if (!kv) {
        if (required) return moe_fail(k->v->err, "GGUF metadata %s.%s is required and missing", k->arch, suffix);
        *out = def;
        return 0;
    }
    if (gguf_kv_float(kv, out, k->v->err)) return -1;
    if (!isfinite(*out)) return moe_fail(k->v->err, "GGUF metadata %s.%s is not finite", k->arch, suffix);
    return 0;
}

static int get_bool(keys *k, const char *suffix, int def, int *out) {
    const gguf_kv *kv = arch_key(k, suffix);
    if (!kv) {
        *out = def;
        return 0;
    }
    return gguf_kv_bool(kv, out, k->v->err);
}

/* ------------------------------------------------------------ tensors */

static const gguf_tensor *find_layer_tensor(const gguf_file *g, int layer, const char *suffix) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    return gguf_find_tensor(g, name);
}

/* The engine's dtype of a GGUF tensor; refuses the types it cannot compute with. */
static int tensor_dtype(gguf_view *v, const gguf_tensor *t, moe_dtype *out) {
    int d = ggml_type_to_dtype(t->type);
    if (d < 0)
        return moe_fail(v->err, "%.*s: ggml type %s (%d) is not supported", (int)t->name_len, t->name,
                        ggml_type_name(t->type), t->type);
    *out = (moe_dtype)d;
    return 0;
}

/* The whole tensor as float32 in owned memory (rows of ne[0], same order). */
static float *tensor_f32(gguf_view *v, const gguf_tensor *t) {
    moe_dtype d = DT_F32;
    if (tensor_dtype(v, t, &d)) return NULL;
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3], n = t->ne[0];
    if (n > INT32_MAX || rows * n > ((uint64_t)1 << 32)) {
        moe_fail(v->err, "%.*s: too large to convert at load", (int)t->name_len, t->name);
        return NULL;
    }
    float *out = moef_alloc(v->f, (size_t)(rows * n) * sizeof(float));
    if (!out) {
        moe_fail(v->err, "out of memory");
        return NULL;
    }
    size_t row_bytes = dtype_row_bytes(d, n);
    for (uint64_t r = 0; r < rows; r++)
        dequantize_row(d, (const char *)t->data + r * row_bytes, out + r * n, (int)n);
    return out;
}

/* Add a GGUF tensor under a view name, dims reversed. */
static int add_gguf_tensor(gguf_view *v, const char *name, const gguf_tensor *t) {
    moe_dtype d = DT_F32;
    if (tensor_dtype(v, t, &d)) return -1;
    uint64_t dims[GGUF_MAX_DIMS];
    for (int i = 0; i < t->n_dims; i++) dims[i] = t->ne[t->n_dims - 1 - i];
    return view_tensor(v, name, d, t->n_dims, dims, t->data) ? 0 : -1;
}

typedef struct {
    int n_heads, kv_lora, nope, v_dim;
} mla_shape;

/* MLA's per-head k_b [kv_lora, nope] (key rows of kv_b, transposed) and
 * v_b [v_dim, kv_lora]. From a quantized fused attn_kv_b
 * [n_heads*(nope+v), kv_lora] when the file has one, dequantized once into
 * owned F32 (the absorbed products run on float rows): it is what the
 * reference engine computes a prompt with (ik_llama.cpp without MLA, and its
 * MLA-3 prompt path), and llama-quantize keeps it at Q8_0 where the split
 * pair gets the mix's type (Q4_K in Q4_K_M); *latent_act is then the
 * activation type it pairs with, to which attention.c rounds the latent
 * (kv_b's input) before use. Else from the split attn_k_b/attn_v_b (newer
 * mainline files have only these; quantized along the other axis, so their
 * values differ), used in place when float, else dequantized once; float
 * fused and split tensors hold the same values. *latent_act = ACT_F32. */
static int add_mla_kv_b(gguf_view *v, int layer, const mla_shape *s, act_type *latent_act) {
    const gguf_file *g = v->g;
    const gguf_tensor *kvb = find_layer_tensor(g, layer, "attn_kv_b.weight");
    const gguf_tensor *kb = find_layer_tensor(g, layer, "attn_k_b.weight");
    const gguf_tensor *vb = find_layer_tensor(g, layer, "attn_v_b.weight");
    char kn[64], vn[64];
    snprintf(kn, sizeof kn, "blk.%d.attn_k_b", layer);
    snprintf(vn, sizeof vn, "blk.%d.attn_v_b", layer);
    uint64_t kdims[3] = {(uint64_t)s->n_heads, (uint64_t)s->kv_lora, (uint64_t)s->nope};
    uint64_t vdims[3] = {(uint64_t)s->n_heads, (uint64_t)s->v_dim, (uint64_t)s->kv_lora};
    *latent_act = ACT_F32;
    moe_dtype kd = DT_F32;
    if (kvb && tensor_dtype(v, kvb, &kd)) return -1;
    if (!kvb || (kb && vb && dtype_info(kd)->is_float)) { /* float: the same values, and the split pair maps in place */
        if (!kb || !vb) return moe_fail(v->err, "GGUF tensor blk.%d.attn_kv_b.weight (or attn_k_b + attn_v_b) is missing", layer);
        /* llama.cpp writes them 3-D [n_heads, kv_lora, nope] / [n_heads, v, kv_lora],
         * ik_llama.cpp 2-D with the heads folded into the rows: same bytes */
        const gguf_tensor *pair[2] = {kb, vb};
        const char *names[2] = {kn, vn};
        const uint64_t *dims[2] = {kdims, vdims};
        for (int i = 0; i < 2; i++) {
            const gguf_tensor *t = pair[i];
            if (t->ne[0] != dims[i][2] || t->ne[1] * t->ne[2] * t->ne[3] != dims[i][0] * dims[i][1])
                return moe_fail(v->err, "GGUF tensor %.*s: ne [%llu, %llu, %llu], expected [%llu, %llu, %llu]",
                                (int)t->name_len, t->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                                (unsigned long long)t->ne[2], (unsigned long long)dims[i][2],
                                (unsigned long long)dims[i][1], (unsigned long long)dims[i][0]);
            moe_dtype d = DT_F32;
            if (tensor_dtype(v, t, &d)) return -1;
            /* the absorbed per-head products run on float rows (attention.c) */
            const void *data = dtype_info(d)->is_float ? t->data : tensor_f32(v, t);
            if (!data || !view_tensor(v, names[i], dtype_info(d)->is_float ? d : DT_F32, 3, dims[i], data)) return -1;
        }
        return 0;
    }
    uint64_t head_rows = (uint64_t)s->nope + (uint64_t)s->v_dim; /* keys are <= 2^30: no overflow in 64 bits */
    if (kvb->n_dims != 2 || kvb->ne[0] != (uint64_t)s->kv_lora || kvb->ne[1] != (uint64_t)s->n_heads * head_rows)
        return moe_fail(v->err, "GGUF tensor blk.%d.attn_kv_b.weight: ne [%llu, %llu], expected [%d, %llu]", layer,
                        (unsigned long long)kvb->ne[0], (unsigned long long)kvb->ne[1], s->kv_lora,
                        (unsigned long long)((uint64_t)s->n_heads * head_rows));
    *latent_act = dtype_info(kd)->act;
    float *w = tensor_f32(v, kvb);
    size_t per_head = (size_t)s->kv_lora * (size_t)head_rows;
    float *k = w ? moef_alloc(v->f, (size_t)s->n_heads * (size_t)s->kv_lora * (size_t)s->nope * sizeof(float)) : NULL;
    float *vv = k ? moef_alloc(v->f, (size_t)s->n_heads * (size_t)s->v_dim * (size_t)s->kv_lora * sizeof(float)) : NULL;
    if (!vv) return w ? moe_fail(v->err, "out of memory") : -1;
    for (int h = 0; h < s->n_heads; h++) {
        const float *head = w + (size_t)h * per_head;
        float *kh = k + (size_t)h * (size_t)s->kv_lora * (size_t)s->nope;
        for (int r = 0; r < s->nope; r++)
            for (int c = 0; c < s->kv_lora; c++) kh[(size_t)c * (size_t)s->nope + (size_t)r] = head[(size_t)r * (size_t)s->kv_lora + (size_t)c];
        memcpy(vv + (size_t)h * (size_t)s->v_dim * (size_t)s->kv_lora, head + (size_t)s->nope * (size_t)s->kv_lora,
               (size_t)s->v_dim * (size_t)s->kv_lora * sizeof(float));
    }
    return view_tensor(v, kn, DT_F32, 3, kdims, k) && view_tensor(v, vn, DT_F32, 3, vdims, vv) ? 0 : -1;
}

typedef struct {
    int n_k, n_v; /* Gated DeltaNet key and value heads (0: not a hybrid architecture) */
} ssm_shape;

/* Qwen3-Next's in_proj_ba as llama.cpp keeps it, [2*n_v, dim] rows grouped
 * per key head (its n_v/n_k b rows, then its n_v/n_k a rows), into the
 * engine's ssm_beta and ssm_alpha [n_v, dim]: whole rows copied (any type;
 * the tensor is small) into owned memory. */
static int split_ssm_ba(gguf_view *v, int layer, const gguf_tensor *t, const ssm_shape *s) {
    moe_dtype d = DT_F32;
    if (tensor_dtype(v, t, &d)) return -1;
    int r = s->n_v / s->n_k;
    if (t->n_dims != 2 || t->ne[1] != 2 * (uint64_t)s->n_v)
        return moe_fail(v->err, "GGUF tensor blk.%d.ssm_ba.weight: expected %llu rows", layer,
                        (unsigned long long)(2 * (uint64_t)s->n_v));
    size_t row = dtype_row_bytes(d, t->ne[0]);
    char *beta = moef_alloc(v->f, row * (size_t)s->n_v), *alpha = beta ? moef_alloc(v->f, row * (size_t)s->n_v) : NULL;
    if (!alpha) return moe_fail(v->err, "out of memory");
    for (int j = 0; j < s->n_k; j++)
        for (int i = 0; i < r; i++) {
            size_t out = (size_t)j * (size_t)r + (size_t)i; /* value head j * r + i */
            const char *src = (const char *)t->data + (2 * (size_t)j * (size_t)r + (size_t)i) * row;
            memcpy(beta + out * row, src, row);
            memcpy(alpha + out * row, src + (size_t)r * row, row);
        }
    char bn[64], an[64];
    snprintf(bn, sizeof bn, "blk.%d.ssm_beta", layer);
    snprintf(an, sizeof an, "blk.%d.ssm_alpha", layer);
    uint64_t dims[2] = {(uint64_t)s->n_v, t->ne[0]};
    return view_tensor(v, bn, d, 2, dims, beta) && view_tensor(v, an, d, 2, dims, alpha) ? 0 : -1;
}

/* A bias or sink vector that the engine binds as F32: in place when the file
 * has F32, else widened once into owned memory (a converter may write them in
 * the output type). */
static int add_f32_tensor(gguf_view *v, const char *name, const gguf_tensor *t) {
    moe_dtype d = DT_F32;
    if (tensor_dtype(v, t, &d)) return -1;
    if (d == DT_F32) return add_gguf_tensor(v, name, t);
    const float *data = tensor_f32(v, t);
    uint64_t dims[GGUF_MAX_DIMS];
    for (int i = 0; i < t->n_dims; i++) dims[i] = t->ne[t->n_dims - 1 - i];
    return data && view_tensor(v, name, DT_F32, t->n_dims, dims, data) ? 0 : -1;
}

/* Every GGUF tensor by the name table; MLA's kv_b/k_b/v_b by add_mla_kv_b.
 * Blocks n_layers..n_blocks-1 are the multi-token-prediction layers
 * (nextn_predict_layers), which are never run: their tensors are skipped. */
static int add_tensors(gguf_view *v, int n_layers, int n_blocks, int dim, const mla_shape *mla, int gpt_oss,
                       const ssm_shape *ssm) {
    const gguf_file *g = v->g;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        int nl = (int)(t->name_len > 120 ? 120 : t->name_len);
        char name[128], out[160];
        snprintf(name, sizeof name, "%.*s", nl, t->name);
        const tensor_name *map = NULL;
        int layer = -1;
        for (int j = 0; j < N_OF(GLOBAL_NAMES) && !map; j++)
            if (!strcmp(name, GLOBAL_NAMES[j].gguf)) map = &GLOBAL_NAMES[j];
        if (!map && !strncmp(name, "blk.", 4)) {
            char *end;
            long l = strtol(name + 4, &end, 10);
            if (end != name + 4 && *end == '.' && l >= n_layers && l < n_blocks) continue; /* MTP */
            if (end != name + 4 && *end == '.' && l >= 0 && l < n_layers) {
                layer = (int)l;
                for (int j = 0; j < N_OF(LAYER_NAMES) && !map; j++)
                    if (!strcmp(end + 1, LAYER_NAMES[j].gguf)) map = &LAYER_NAMES[j];
            }
        }
        if (!map) {
            if (!strcmp(name, "rope_freqs.weight"))
                return moe_fail(v->err, "GGUF tensor rope_freqs.weight (per-dimension RoPE factors, Llama 3.1 style) "
                                "is not supported");
            return moe_fail(v->err, "GGUF tensor %s is not understood by moe (refused rather than guessed)", name);
        }
        if (map->kind == TN_GPT_OSS && !gpt_oss)
            return moe_fail(v->err, "GGUF tensor %s is not understood by moe for this architecture (refused rather than "
                            "guessed)", name);
        if (map->kind == TN_KV_B || map->kind == TN_K_B || map->kind == TN_V_B) {
            if (!mla) return moe_fail(v->err, "GGUF tensor %s belongs to MLA attention, not this architecture", name);
            continue; /* add_mla_kv_b, per layer */
        }
        if ((map->kind == TN_SSM || map->kind == TN_SSM_F32 || map->kind == TN_SSM_BA) && !ssm->n_k)
            return moe_fail(v->err, "GGUF tensor %s belongs to a Gated DeltaNet layer, not this architecture", name);
        if (map->kind == TN_SSM_BA) {
            if (split_ssm_ba(v, layer, t, ssm)) return -1;
            continue;
        }
        if (layer >= 0) snprintf(out, sizeof out, "blk.%d.%s", layer, map->moe);
        else snprintf(out, sizeof out, "%s", map->moe);
        if (map->kind == TN_SHEXP_GATE) {
            /* llama.cpp keeps the shared expert's gate as a vector [dim]; the engine binds [1, dim] */
            moe_dtype d = DT_F32;
            if (tensor_dtype(v, t, &d)) return -1;
            uint64_t dims[2] = {1, (uint64_t)dim};
            if (t->n_dims > 2 || t->ne[0] != (uint64_t)dim || t->ne[1] != 1)
                return moe_fail(v->err, "GGUF tensor %s: expected %d values", name, dim);
            if (!view_tensor(v, out, d, 2, dims, t->data)) return -1;
            continue;
        }
        if (map->kind == TN_GPT_OSS || map->kind == TN_SSM_F32 ? add_f32_tensor(v, out, t) : add_gguf_tensor(v, out, t))
            return -1;
    }
    if (!mla) return 0;
    act_type latent = ACT_F32;
    for (int l = 0; l < n_layers; l++) {
        act_type a;
        if (add_mla_kv_b(v, l, mla, &a)) return -1;
        latent = l == 0 || a == latent ? a : ACT_F32; /* layers that disagree keep float latents */
    }
    return latent == ACT_F32 ? 0 : view_int(v, "mla.latent_act", latent);
}

/* ------------------------------------------------------------ hyperparameters */

static int is_moe_layer(const gguf_file *g, int layer) {
    return find_layer_tensor(g, layer, "ffn_gate_inp.weight") != NULL;
}

/* RoPE: base, dims, scaling (none / linear / yarn) as llama.cpp reads them. */
static int rope_keys(gguf_view *v, keys *k, const arch_spec *a, int head_dim, int ctx, int *rope_dim_out,
                     double *kq_mscale) {
    double theta, factor = 1, attn_factor, beta_fast, beta_slow, log_mul;
    int rope_dim, orig;
    *kq_mscale = 1;
    if (get_float(k, "rope.freq_base", 10000, 0, &theta) || get_int(k, "rope.dimension_count", a->mla ? -1 : head_dim, &rope_dim) ||
        get_float(k, "rope.scaling.attn_factor", 1, 0, &attn_factor) ||
        get_float(k, "rope.scaling.yarn_beta_fast", 32, 0, &beta_fast) ||
        get_float(k, "rope.scaling.yarn_beta_slow", 1, 0, &beta_slow) ||
        get_float(k, "rope.scaling.yarn_log_multiplier", 0, 0, &log_mul) ||
        get_int(k, "rope.scaling.original_context_length", ctx, &orig))
        return -1;
    *rope_dim_out = rope_dim;
    const char *type = "none";
    const gguf_kv *kt = arch_key(k, "rope.scaling.type");
    const gguf_kv *kf = arch_key(k, "rope.scaling.factor");
    const gguf_kv *kl = arch_key(k, "rope.scale_linear"); /* older files */
    if (kt) {
        const char *s;
        uint64_t n;
        if (gguf_kv_str(kt, &s, &n, v->err)) return -1;
        if (n == 4 && !memcmp(s, "none", 4)) type = "none";
        else if (n == 6 && !memcmp(s, "linear", 6)) type = "linear";
        else if (n == 4 && !memcmp(s, "yarn", 4)) type = "yarn";
        else return moe_fail(v->err, "GGUF metadata %s.rope.scaling.type = \"%.*s\": moe knows none, linear and yarn",
                             k->arch, (int)(n > 32 ? 32 : n), s);
    } else if (kl) {
        type = "linear";
    }
    if (kf && gguf_kv_float(kf, &factor, v->err)) return -1;
    if (!kf && kl && gguf_kv_float(kl, &factor, v->err)) return -1;
    if (strcmp(type, "none") && !(factor > 0))
        return moe_fail(v->err, "GGUF metadata %s.rope.scaling.factor must be positive", k->arch);
    if (!strcmp(type, "none")) factor = 1;
    if (view_float(v, "rope.theta", theta) || view_int(v, "rope.dim", rope_dim) ||
        view_str(v, "rope.layout", a->rope_layout, strlen(a->rope_layout)) ||
        view_str(v, "rope.scaling", type, strlen(type)))
        return -1;
    if (!strcmp(type, "none")) return 0;
    if (view_float(v, "rope.factor", factor)) return -1;
    if (!strcmp(type, "linear")) return 0;
    /* ggml's YaRN multiplies cos/sin by attn_factor * (1 + 0.1 ln factor);
     * DeepSeek's graph divides that back out and scales the attention
     * logits by mscale^2, mscale = attn_factor * (1 + log_mul ln factor) */
    double ramp = 1 + 0.1 * log(factor);
    double cs = a->mla ? 1.0 : attn_factor * ramp;
    if (a->mla) {
        double m = attn_factor * (1 + log_mul * log(factor));
        *kq_mscale = m * m;
    }
    return view_int(v, "rope.orig_ctx", orig) || view_float(v, "rope.beta_fast", beta_fast) ||
           view_float(v, "rope.beta_slow", beta_slow) || view_float(v, "rope.attn_factor", cs);
}

/* expert_gating_func when the file has none, as llama.cpp's loaders decide:
 * glm4moe sigmoid (GLM-4.5's router); deepseek2 softmax (DeepSeek-V2/V2.5
 * files from before the key) except GLM-4.7-Flash, whose config names no
 * scoring_func, so mainline's converter writes no key and its loader infers
 * sigmoid from 47 or 48 layers and a 154880-token vocabulary (ik_llama.cpp's
 * from the layer count alone). A deepseek2 file whose layers carry
 * exp_probs_b is sigmoid too: only DeepSeek-V3's noaux_tc router has that
 * selection bias, and it scores with a sigmoid (HF). */
static int default_gating(const arch_spec *a, int n_layers, int vocab, int has_bias) {
    if (!strcmp(a->gguf, "glm4moe")) return 2;
    if (a->mla && (has_bias || ((n_layers == 47 || n_layers == 48) && vocab == 154880))) return 2;
    return 1;
}

/* Routing and expert shapes. */
static int moe_keys(gguf_view *v, keys *k, const arch_spec *a, int n_layers, int vocab, int ff, int *n_experts,
                    int *sigmoid_out) {
    const gguf_file *g = v->g;
    int E, K, moe_ff, shared_n, groups, groups_used, leading, gating, norm, shared_ff_key;
    double scale;
    if (get_int(k, "expert_count", 0, &E) || get_int(k, "expert_used_count", 0, &K) ||
        get_int(k, "expert_feed_forward_length", ff, &moe_ff) || get_int(k, "expert_shared_count", 0, &shared_n) ||
        get_int(k, "expert_shared_feed_forward_length", 0, &shared_ff_key) ||
        get_int(k, "expert_group_count", 1, &groups) || get_int(k, "expert_group_used_count", groups, &groups_used) ||
        get_int(k, "leading_dense_block_count", 0, &leading) || get_int(k, "expert_gating_func", 0, &gating) ||
        get_bool(k, "expert_weights_norm", a->norm_topk, &norm) ||
        get_float(k, "expert_weights_scale", 1, 0, &scale)) /* absent: no scaling (llama.cpp's loaders) */
        return -1;
    *n_experts = E;
    if (E == 0) return 0;
    if (gating != 0 && gating != 1 && gating != 2)
        return moe_fail(v->err, "GGUF metadata %s.expert_gating_func = %d: moe knows 1 (softmax) and 2 (sigmoid)", k->arch,
                        gating);
    int64_t *layers = calloc((size_t)n_layers, sizeof *layers);
    if (!layers) return moe_fail(v->err, "out of memory");
    int first = -1;
    for (int l = 0; l < n_layers; l++) {
        layers[l] = a->mla ? l >= leading : is_moe_layer(g, l);
        if (layers[l] && first < 0) first = l;
    }
    int rc = view_ints(v, "moe.layers", layers, (uint32_t)n_layers);
    free(layers);
    if (rc) return -1;
    if (first < 0) return moe_fail(v->err, "GGUF: %s.expert_count = %d but no layer has experts", k->arch, E);
    /* the shared expert's width from its tensor: the keys for it differ by architecture */
    const gguf_tensor *sh = find_layer_tensor(g, first, "ffn_gate_shexp.weight");
    uint64_t shared_ff = sh && sh->n_dims == 2 ? sh->ne[1] : 0;
    if (shared_ff > ((uint64_t)1 << 30))
        return moe_fail(v->err, "GGUF tensor blk.%d.ffn_gate_shexp.weight: %llu rows is out of range", first,
                        (unsigned long long)shared_ff);
    if (sh && shared_n && shared_ff != (uint64_t)shared_n * (uint64_t)moe_ff)
        return moe_fail(v->err, "GGUF: %s.expert_shared_count %d x expert_feed_forward_length %d != the shared "
                        "expert's %llu rows", k->arch, shared_n, moe_ff, (unsigned long long)shared_ff);
    if (sh && shared_ff_key && shared_ff != (uint64_t)shared_ff_key)
        return moe_fail(v->err, "GGUF: %s.expert_shared_feed_forward_length %d != the shared expert's %llu rows", k->arch,
                        shared_ff_key, (unsigned long long)shared_ff);
    int bias = find_layer_tensor(g, first, "exp_probs_b.bias") != NULL;
    if (gating == 0) gating = default_gating(a, n_layers, vocab, bias);
    int sigmoid = gating == 2;
    *sigmoid_out = sigmoid;
    const char *group_score = sigmoid ? "top2sum" : "max";
    return view_int(v, "moe.n_experts", E) || view_int(v, "moe.n_active", K) || view_int(v, "moe.ff_dim", moe_ff) ||
           view_str(v, "moe.score", sigmoid ? "sigmoid" : "softmax", 7) ||
           view_int(v, "moe.norm_topk", norm) || view_float(v, "moe.scale", scale) ||
           view_int(v, "moe.n_groups", groups) || view_int(v, "moe.groups_active", groups_used) ||
           view_str(v, "moe.group_score", group_score, strlen(group_score)) || view_int(v, "moe.bias", bias) ||
           view_int(v, "moe.shared_ff", shared_ff) ||
           view_int(v, "moe.shared_gate", find_layer_tensor(g, first, "ffn_gate_inp_shexp.weight") != NULL);
}

/* gpt-oss as llama.cpp's graph runs it (LLM_ARCH_OPENAI_MOE): a sink logit
 * per head, attention.sliding_window on the even layers (its SWA pattern 2,
 * as the published layer_types), o/router/expert biases, and the clamped
 * SwiGLU whose limit 7 and alpha 1.702 are constants of llama.cpp's graph
 * (the file carries neither). YaRN bounds stay fractional: every published
 * gpt-oss config says rope_scaling.truncate false, which GGUF does not carry
 * (ggml's YaRN floors/ceils them; on the golden case that moves the logits by
 * 0.0039, over the bound the HF-exact reference is held to). */
static int gpt_oss_keys(gguf_view *v, keys *k, int n_layers) {
    int window;
    if (get_int(k, "attention.sliding_window", -1, &window)) return -1;
    if (window < 1) return moe_fail(v->err, "GGUF metadata %s.attention.sliding_window must be positive", k->arch);
    int64_t *sliding = calloc((size_t)n_layers, sizeof *sliding);
    if (!sliding) return moe_fail(v->err, "out of memory");
    for (int l = 0; l < n_layers; l++) sliding[l] = l % 2 == 0;
    int rc = view_ints(v, "attn.window_layers", sliding, (uint32_t)n_layers);
    free(sliding);
    return rc || view_int(v, "attn.window", window) || view_int(v, "attn.sinks", 1) || view_int(v, "attn.o_bias", 1) ||
           view_int(v, "rope.yarn_truncate", 0) || view_int(v, "moe.router_bias", 1) ||
           view_int(v, "moe.expert_bias", 1) || view_str(v, "moe.act", "swiglu_oai", 10) ||
           view_float(v, "moe.act_limit", 7.0) || view_float(v, "moe.act_alpha", 1.702);
}

/* Qwen3-Next / Qwen3.5 (llama.cpp's Qwen3NextModel): the Gated DeltaNet
 * shapes from the ssm.* keys (state_size = key head dim, group_count = key
 * heads, time_step_rank = value heads, inner_size = value heads x value head
 * dim); which layers are Gated DeltaNet as llama.cpp's loader decides:
 * attention.recurrent_layers (one flag per block, or one for all) when
 * present, else all but every full_attention_interval-th. Qwen3.5's
 * multimodal RoPE sections change nothing for text (the three position rows
 * are equal), but they must cover the rotated dims. */
static int hybrid_keys(gguf_view *v, keys *k, const arch_spec *a, int n_layers, int n_blocks, int rope_dim,
                       ssm_shape *out) {
    int conv, dk, nk, nv, inner, interval;
    if (get_int(k, "ssm.conv_kernel", -1, &conv) || get_int(k, "ssm.state_size", -1, &dk) ||
        get_int(k, "ssm.group_count", -1, &nk) || get_int(k, "ssm.time_step_rank", -1, &nv) ||
        get_int(k, "ssm.inner_size", -1, &inner) || get_int(k, "full_attention_interval", 4, &interval))
        return -1;
    if (nk < 1 || nv < nk || nv % nk || inner % nv || interval < 1)
        return moe_fail(v->err, "GGUF metadata %s.ssm.*: %d value heads must be a multiple of %d key heads, inner_size "
                        "%d of the value heads, full_attention_interval %d >= 1", k->arch, nv, nk, inner, interval);
    const gguf_kv *sec = arch_key(k, "rope.dimension_sections");
    if (sec) {
        int64_t sum = 0;
        if (sec->type != GGUF_ARRAY || sec->elem_type == GGUF_STRING || sec->elem_type == GGUF_ARRAY ||
            sec->elem_type == GGUF_F32 || sec->elem_type == GGUF_F64 || sec->n > 8)
            return moe_fail(v->err, "GGUF metadata %s.rope.dimension_sections: expected up to 8 integers", k->arch);
        for (uint64_t i = 0; i < sec->n; i++) {
            int64_t x = gguf_arr_int(sec, i);
            if (x < 0 || x > (1 << 20)) return moe_fail(v->err, "GGUF metadata %s.rope.dimension_sections: bad entry", k->arch);
            sum += x;
        }
        if (2 * sum != rope_dim)
            return moe_fail(v->err, "GGUF metadata %s.rope.dimension_sections cover %lld dims, rope.dimension_count is %d",
                            k->arch, (long long)(2 * sum), rope_dim);
    }
    const gguf_kv *rec = arch_key(k, "attention.recurrent_layers");
    int rec_all = -1; /* a scalar flag for every layer */
    if (rec && rec->type != GGUF_ARRAY && gguf_kv_bool(rec, &rec_all, v->err)) return -1;
    if (rec && rec->type == GGUF_ARRAY &&
        (rec->n != (uint64_t)n_blocks || rec->elem_type == GGUF_STRING || rec->elem_type == GGUF_ARRAY ||
         rec->elem_type == GGUF_F32 || rec->elem_type == GGUF_F64))
        return moe_fail(v->err, "GGUF metadata %s.attention.recurrent_layers: expected %d flags", k->arch, n_blocks);
    int64_t *layers = calloc((size_t)n_layers, sizeof *layers);
    if (!layers) return moe_fail(v->err, "out of memory");
    for (int l = 0; l < n_layers; l++)
        layers[l] = !rec ? (l + 1) % interval != 0 : rec_all >= 0 ? rec_all != 0 : gguf_arr_int(rec, (uint64_t)l) != 0;
    int fused = 0; /* the first Gated DeltaNet layer's projection form decides (model.c binds all alike) */
    for (int l = 0; l < n_layers; l++)
        if (layers[l]) {
            fused = find_layer_tensor(v->g, l, "ssm_in.weight") != NULL;
            break;
        }
    int rc = view_ints(v, "ssm.layers", layers, (uint32_t)n_layers);
    free(layers);
    if (rc) return -1;
    if (fused && a->hybrid == 2)
        return moe_fail(v->err, "GGUF tensor ssm_in (a fused q|k|v|z projection) is not understood for %s", k->arch);
    *out = (ssm_shape){nk, nv};
    return view_int(v, "ssm.conv_kernel", conv) || view_int(v, "ssm.n_k_heads", nk) ||
           view_int(v, "ssm.n_v_heads", nv) || view_int(v, "ssm.k_dim", dk) || view_int(v, "ssm.v_dim", inner / nv) ||
           (a->hybrid == 2 && view_int(v, "ssm.v_tiled", 1)) || (fused && view_int(v, "ssm.qkvz", 1)) ||
           view_int(v, "attn.out_gate", 1);
}

static int model_keys(gguf_view *v, const arch_spec *a, const char *gguf_arch) {
    const gguf_file *g = v->g;
    keys k = {v, gguf_arch};
    int L, n_blocks, n_mtp, dim, n_heads, n_kv, head_dim, v_len, ctx, ff, vocab, E, rope_dim, sigmoid = 0;
    double eps;
    if (get_int(&k, "block_count", -1, &n_blocks) || get_int(&k, "nextn_predict_layers", 0, &n_mtp) || get_int(&k, "embedding_length", -1, &dim) ||
        get_int(&k, "attention.head_count", -1, &n_heads) || get_int(&k, "attention.head_count_kv", n_heads, &n_kv) ||
        get_int(&k, "context_length", -1, &ctx) || get_int(&k, "feed_forward_length", 0, &ff) ||
        get_float(&k, "attention.layer_norm_rms_epsilon", 0, 1, &eps))
        return -1;
    /* block_count includes the multi-token-prediction layers (GLM, DeepSeek-V3, Qwen3.5): never run */
    L = n_blocks - n_mtp;
    if (n_heads == 0 || L <= 0 || dim == 0)
        return moe_fail(v->err, "GGUF metadata %s: block_count (less nextn_predict_layers), embedding_length and "
                        "head_count must be positive", gguf_arch);
    /* every block has tensors of its own: a larger count is damage, and sizes per-layer tables */
    if ((uint64_t)n_blocks > g->n_tensors)
        return moe_fail(v->err, "GGUF metadata %s.block_count = %d but the file has %llu tensors", gguf_arch, n_blocks,
                        (unsigned long long)g->n_tensors);
    /* a block counted as MTP must be one (its nextn.eh_proj), or a real layer would be dropped silently */
    for (int l = L; l < n_blocks; l++)
        if (!find_layer_tensor(g, l, "nextn.eh_proj.weight"))
            return moe_fail(v->err, "GGUF: block %d is counted in %s.nextn_predict_layers but has no "
                            "blk.%d.nextn.eh_proj.weight", l, gguf_arch, l);
    if (get_int(&k, "attention.key_length", dim / n_heads, &head_dim) ||
        get_int(&k, "attention.value_length", head_dim, &v_len))
        return -1;
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (get_int(&k, "vocab_size", emb && emb->n_dims == 2 ? (int64_t)emb->ne[1] : -1, &vocab)) return -1;
    double kq_mscale;
    mla_shape mla = {0};
    if (a->mla) {
        int q_lora, kv_lora, key_mla, val_mla;
        if (get_int(&k, "attention.q_lora_rank", 0, &q_lora) || get_int(&k, "attention.kv_lora_rank", -1, &kv_lora) ||
            get_int(&k, "attention.key_length_mla", head_dim, &key_mla) ||
            get_int(&k, "attention.value_length_mla", v_len, &val_mla))
            return -1;
        head_dim = key_mla;
        v_len = val_mla;
        n_kv = n_heads; /* every head has its own decompressed K and V */
        if (rope_keys(v, &k, a, head_dim, ctx, &rope_dim, &kq_mscale)) return -1;
        if (rope_dim >= head_dim)
            return moe_fail(v->err, "GGUF metadata %s: rope.dimension_count %d leaves no non-rotary key dims of %d",
                            gguf_arch, rope_dim, head_dim);
        mla = (mla_shape){n_heads, kv_lora, head_dim - rope_dim, v_len};
        if (view_str(v, "attn.type", "mla", 3) || view_int(v, "mla.q_lora", q_lora) ||
            view_int(v, "mla.kv_lora", kv_lora) || view_int(v, "mla.nope_dim", mla.nope) ||
            view_int(v, "mla.rope_dim", rope_dim) || view_int(v, "mla.v_dim", v_len))
            return -1;
    } else {
        if (v_len != head_dim)
            return moe_fail(v->err, "GGUF metadata %s: attention.value_length %d != key_length %d is not supported",
                            gguf_arch, v_len, head_dim);
        if (rope_keys(v, &k, a, head_dim, ctx, &rope_dim, &kq_mscale)) return -1;
    }
    ssm_shape ssm = {0, 0};
    if (a->hybrid && hybrid_keys(v, &k, a, L, n_blocks, rope_dim, &ssm)) return -1;
    if (moe_keys(v, &k, a, L, vocab, ff, &E, &sigmoid)) return -1;
    int any_dense = 0;
    for (int l = 0; l < L; l++) any_dense |= !find_layer_tensor(g, l, "ffn_gate_inp.weight");
    const char *arch = E > 0 && a->arch_moe ? a->arch_moe : a->arch;
    if (a->mla && sigmoid) arch = "deepseek_v3"; /* informational: V3's sigmoid routing */
    double attn_scale = kq_mscale / sqrt((double)head_dim);
    if (a->granite) {
        double embd, resid, attn, logit;
        if (get_float(&k, "embedding_scale", 1, 0, &embd) || get_float(&k, "residual_scale", 1, 0, &resid) ||
            get_float(&k, "attention.scale", attn_scale, 0, &attn) || get_float(&k, "logit_scale", 1, 0, &logit))
            return -1;
        if (!(logit > 0)) return moe_fail(v->err, "GGUF metadata %s.logit_scale must be positive", gguf_arch);
        attn_scale = attn;
        if (view_float(v, "model.embd_scale", embd) || view_float(v, "model.residual_scale", resid) ||
            view_float(v, "model.logit_scale", 1.0 / logit))
            return -1;
    }
    double clamp;
    if (get_float(&k, "attention.clamp_kqv", 0, 0, &clamp)) return -1;
    const gguf_kv *name = view_key(v, "general.name");
    if (name && name->type == GGUF_STRING && view_str(v, "general.name", (const char *)name->data, name->n)) return -1;
    int qkv_bias = find_layer_tensor(g, 0, "attn_q.bias") != NULL;
    const char *qk_norm = a->qk_norm;
    if (!strcmp(qk_norm, "tensor")) qk_norm = find_layer_tensor(g, 0, "attn_q_norm.weight") ? "head" : "none";
    if (view_str(v, "general.arch", arch, strlen(arch)) || view_int(v, "model.vocab_size", vocab) ||
        view_int(v, "model.dim", dim) || view_int(v, "model.n_layers", L) || view_int(v, "model.n_heads", n_heads) ||
        view_int(v, "model.n_kv_heads", n_kv) || view_int(v, "model.head_dim", head_dim) ||
        view_int(v, "model.ff_dim", E > 0 && !any_dense ? 0 : ff) || view_int(v, "model.max_ctx", ctx) ||
        view_float(v, "model.norm_eps", eps) ||
        view_int(v, "model.tied_embd", gguf_find_tensor(g, "output.weight") == NULL) ||
        view_float(v, "attn.scale", attn_scale) || view_int(v, "attn.qkv_bias", qkv_bias) ||
        view_str(v, "attn.qk_norm", qk_norm, strlen(qk_norm)) || (clamp > 0 && view_float(v, "attn.clip_qkv", clamp)) ||
        (n_mtp > 0 && view_int(v, "model.n_mtp_layers", n_mtp)))
        return -1;
    if (is_gpt_oss(a) && gpt_oss_keys(v, &k, L)) return -1;
    return add_tensors(v, L, n_blocks, dim, a->mla ? &mla : NULL, is_gpt_oss(a), &ssm);
}

/* Every {arch}.* key must have been read or be known to change nothing. */
static int check_unread(gguf_view *v, const char *gguf_arch) {
    size_t al = strlen(gguf_arch);
    for (uint64_t i = 0; i < v->g->n_kv; i++) {
        const gguf_kv *kv = &v->g->kv[i];
        if (v->consumed[i] || kv->key_len <= al || memcmp(kv->key, gguf_arch, al) || kv->key[al] != '.') continue;
        int ignored = 0;
        for (int j = 0; IGNORED_ARCH_KEYS[j] && !ignored; j++)
            ignored = kv->key_len - al - 1 == strlen(IGNORED_ARCH_KEYS[j]) &&
                      !memcmp(kv->key + al + 1, IGNORED_ARCH_KEYS[j], kv->key_len - al - 1);
        if (!ignored)
            return moe_fail(v->err, "GGUF metadata %.*s is not understood by moe (refused rather than guessed)",
                            (int)(kv->key_len > 120 ? 120 : kv->key_len), kv->key);
    }
    return 0;
}

static int translate(gguf_view *v) {
    const gguf_file *g = v->g;
    const gguf_kv *split = view_key(v, "split.count");
    uint64_t n_split = 1;
    if (split && gguf_kv_uint(split, &n_split, v->err)) return -1;
    if (n_split > 1) return moe_fail(v->err, "GGUF split into %llu files: merge them first (llama-gguf-split --merge)",
                                     (unsigned long long)n_split);
    if (gguf_view_tokenizer(v)) return -1;
    const gguf_kv *ka = view_key(v, "general.architecture");
    if (g->n_tensors == 0) return 0; /* a vocabulary-only file: its tokenizer alone */
    if (!ka) return moe_fail(v->err, "GGUF metadata general.architecture is missing");
    const char *s;
    uint64_t n;
    if (gguf_kv_str(ka, &s, &n, v->err)) return -1;
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(n > 60 ? 60 : n), s);
    const arch_spec *a = NULL;
    for (int i = 0; i < N_ARCH_SPECS && !a; i++)
        if (strlen(ARCH_SPECS[i].gguf) == n && !memcmp(ARCH_SPECS[i].gguf, s, n)) a = &ARCH_SPECS[i];
    if (!a) return moe_fail(v->err, "GGUF architecture \"%s\" is not supported (moe reads llama, qwen2, qwen3, qwen2moe, "
                            "qwen3moe, olmoe, granitemoe, deepseek2, gpt-oss, glm4moe, qwen3next, qwen35moe)", arch);
    return model_keys(v, a, arch) || check_unread(v, arch) ? -1 : 0;
}

int gguf_view_parse(moe_file *f, const void *buf, size_t size, moe_err *err) {
    memset(f, 0, sizeof *f);
    f->base = buf;
    f->size = size;
    f->gguf = calloc(1, sizeof *f->gguf);
    if (!f->gguf) return moe_fail(err, "out of memory");
    if (gguf_parse(f->gguf, buf, size, err)) {
        moef_close(f);
        return -1;
    }
    f->version = f->gguf->version;
    f->alignment = (uint32_t)(f->gguf->alignment > UINT32_MAX ? 0 : f->gguf->alignment);
    gguf_view v = {.f = f, .g = f->gguf, .err = err};
    v.consumed = calloc(f->gguf->n_kv ? f->gguf->n_kv : 1, 1);
    int rc = v.consumed ? translate(&v) : moe_fail(err, "out of memory");
    free(v.consumed);
    if (rc || moef_index(f, err)) {
        moef_close(f);
        return -1;
    }
    return 0;
}
