/* quant_mix.c - llama.cpp's per-tensor rules for the K-quant mixes
 * (quant_mix.h). Mirrors llama_tensor_get_type and the tensor filter of
 * llama_model_quantize_internal in ik_llama.cpp 8337e4cd
 * src/llama-quantize.cpp (the quantizer of ../shared/gguf), restricted to
 * the five mixes below and no importance matrix. Like llama.cpp the rules
 * match substrings of the tensor name, in llama.cpp's order: "attn_k" also
 * catches MLA's attn_kv_a_mqa, attn_kv_b and attn_k_b; "attn_q" also
 * attn_q_a, attn_q_b and attn_qkv; "ffn_down" the experts' and the shared
 * experts' downs. Mainline llama.cpp (src/llama-quant.cpp) matches tensor
 * categories by exact name and bumps only for exactly 8 experts; other
 * differences are said in the line's comment (docs/QUANTIZATION.md lists them). */
#include "quant_mix.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const char *const MIX_NAMES[MIX_COUNT] = {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"};
/* the mix's default type (llama_model_quantize_internal's switch on ftype) */
static const moe_dtype MIX_DEFAULT[MIX_COUNT] = {DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};

int quant_mix_from_name(const char *s) {
    for (int m = 0; m < MIX_COUNT; m++) {
        const char *n = MIX_NAMES[m];
        size_t i = 0;
        while (n[i] && s[i] && toupper((unsigned char)s[i]) == n[i]) i++;
        if (!n[i] && !s[i]) return m;
    }
    return -1;
}

const char *quant_mix_name(quant_mix m) { return m >= 0 && m < MIX_COUNT ? MIX_NAMES[m] : "?"; }

int quant_mix_ftype(quant_mix m) {
    static const int FTYPE[MIX_COUNT] = {10, 12, 15, 17, 18}; /* LLAMA_FTYPE_MOSTLY_Q2_K ... _Q6_K (llama.h) */
    return m >= 0 && m < MIX_COUNT ? FTYPE[m] : -1;
}

static int has(const char *name, const char *part) { return strstr(name, part) != NULL; }
static int ends(const char *name, const char *suffix) {
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && !strcmp(name + n - k, suffix);
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third one between get more bits. */
static int use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* The layer of "blk.N.*" (llama.cpp's layer_info parses it so for MoE models;
 * for dense ones its counters of attn_v / ffn_down tensors are the same
 * number, one such tensor per layer); 0 when the name has none. */
static int layer_of(const char *name) {
    int il = 0;
    return sscanf(name, "blk.%d.", &il) == 1 ? il : 0;
}

/* change_type_if_necessary: a K-quant needs rows of whole 256-blocks;
 * else the same bits in a 32-block type. */
static int fallback(int t, uint64_t ne0) {
    if (t == DT_Q2_K || t == DT_Q3_K || t == DT_Q4_K || t == DT_Q5_K || t == DT_Q6_K) {
        if (ne0 % 256 == 0) return t;
        if (t == DT_Q2_K || t == DT_Q3_K) t = DT_IQ4_NL; /* case Q2_K, Q3_K: IQ4_NL (mainline: Q4_0) */
        else if (t == DT_Q4_K) t = DT_Q5_0;             /* case Q4_K: Q5_0 */
        else if (t == DT_Q5_K) t = DT_Q5_1;             /* case Q5_K: ik_llama.cpp Q6_0 (we lack it), mainline Q5_1 */
        else t = DT_Q8_0;                               /* case Q6_K: Q8_0 */
    }
    return ne0 % (uint64_t)dtype_info(t)->block == 0 ? t : -1; /* llama.cpp throws; we keep the tensor as it is */
}

/* llama_model_quantize_internal's filter: what is quantized at all. */
static int is_quantized(const char *name, int n_dims) {
    return ends(name, "weight") && n_dims >= 2 &&                 /* "ends with 'weight'", "only 2D and 3D" */
           !has(name, "_norm.weight") &&                          /* "do not quantize norm tensors" */
           !has(name, "ffn_gate_inp.weight") &&                   /* "do not quantize expert gating tensors" */
           strcmp(name, "position_embd.weight") && strcmp(name, "token_types.weight") &&
           !has(name, "ssm_conv1d") && !has(name, "ssm_x.weight") && !has(name, "ssm_dt.weight") &&
           !has(name, "attn_rel_b.weight");
}

int quant_mix_type(quant_mix m, const mix_model *mm, const char *name, int n_dims, uint64_t ne0) {
    if (m < 0 || m >= MIX_COUNT || !is_quantized(name, n_dims)) return -1;
    int t = MIX_DEFAULT[m];
    int moe4 = mm->n_experts >= 4; /* "n_expert >= 4" (mainline: n_expert == 8) */
    int gqa = mm->n_kv_heads > 0 ? mm->n_heads / mm->n_kv_heads : 1;
    int il = layer_of(name), nl = mm->n_layers;
    int iv = mm->attn_v_index && il >= 0 && il < nl ? mm->attn_v_index[il] : il; /* attn_v's rules count attn_v tensors */

    if (!strcmp(name, "output.weight") || (!mm->has_output && !strcmp(name, "token_embd.weight"))) {
        t = ne0 % 256 ? DT_Q8_0 : DT_Q6_K; /* output: "nx % QK_K != 0" -> Q8_0, else Q6_K */
    } else if (!strcmp(name, "token_embd.weight")) {
        /* token_embd: the mix's type for every K mix */
    } else if (has(name, "attn_v.weight")) {
        if (moe4) t = DT_Q8_0;                                         /* "bumping this to Q8_0" */
        else if (m == MIX_Q2_K) t = gqa >= 4 ? DT_Q4_K : DT_Q3_K;      /* Q2_K */
        else if (m == MIX_Q3_K_M) t = iv < 2 ? DT_Q5_K : DT_Q4_K;      /* Q3_K_M: i_attention_wv < 2 */
        else if ((m == MIX_Q4_K_M || m == MIX_Q5_K_M) && use_more_bits(iv, nl)) t = DT_Q6_K; /* (i_attention_wv, n_attention_wv) */
        else if (gqa >= 4) t = t == DT_Q4_K ? DT_Q5_K : t == DT_Q5_K ? DT_Q6_K : t; /* n_gqa() >= 4: one step up (ik only) */
        /* not mirrored: MODEL_70B (dense 80-layer llama) Q3_K/Q4_K -> Q5_K */
    } else if (has(name, "attn_k")) {
        if (moe4) t = DT_Q8_0; /* attn_k (and MLA's kv_a_mqa, kv_b, k_b): "bumping this to Q8_0" */
    } else if (has(name, "attn_q")) {
        /* attn_q, attn_q_a, attn_q_b, attn_qkv: no rule for these mixes (attn_qkv's
         * own rule below it is never reached in ik_llama.cpp; mainline tests it first) */
    } else if (has(name, "ffn_down")) {
        if (m == MIX_Q2_K) t = DT_Q3_K;                                /* Q2_K: Q3_K */
        else if (m == MIX_Q3_K_M) t = il < nl / 16 ? DT_Q5_K : DT_Q4_K; /* Q3_K_M (not Falcon) */
        else if ((m == MIX_Q4_K_M || m == MIX_Q5_K_M) && use_more_bits(il, nl)) t = DT_Q6_K;
    } else if (has(name, "attn_output.weight")) {
        if (moe4) { if (m == MIX_Q2_K || m == MIX_Q3_K_M || m == MIX_Q4_K_M) t = DT_Q5_K; } /* n_expert >= 4 */
        else if (m == MIX_Q2_K) t = DT_Q3_K;
        else if (m == MIX_Q3_K_M) t = DT_Q4_K;
    }
    /* ffn_gate, ffn_up: no rule for these mixes */
    return fallback(t, ne0);
}

/* .moe name (after "blk.N.") -> llama.cpp's (docs/FORMAT.md, gguf_view.c) */
static const struct {
    const char *moe, *gguf;
} NAMES[] = {
    {"tok_embd", "token_embd.weight"}, {"output", "output.weight"}, {"output_norm", "output_norm.weight"},
    {"attn_norm", "attn_norm.weight"}, {"ffn_norm", "ffn_norm.weight"}, {"attn_q", "attn_q.weight"},
    {"attn_k", "attn_k.weight"}, {"attn_v", "attn_v.weight"}, {"attn_o", "attn_output.weight"},
    {"attn_q_norm", "attn_q_norm.weight"}, {"attn_k_norm", "attn_k_norm.weight"}, {"attn_q_a", "attn_q_a.weight"},
    {"attn_q_a_norm", "attn_q_a_norm.weight"}, {"attn_q_b", "attn_q_b.weight"}, {"attn_kv_a", "attn_kv_a_mqa.weight"},
    {"attn_kv_a_norm", "attn_kv_a_norm.weight"}, {"attn_k_b", "attn_k_b.weight"}, {"attn_v_b", "attn_v_b.weight"},
    {"ffn_gate", "ffn_gate.weight"}, {"ffn_up", "ffn_up.weight"}, {"ffn_down", "ffn_down.weight"},
    {"ffn_router", "ffn_gate_inp.weight"}, {"ffn_gate_exps", "ffn_gate_exps.weight"},
    {"ffn_up_exps", "ffn_up_exps.weight"}, {"ffn_down_exps", "ffn_down_exps.weight"},
    {"ffn_gate_up_exps", "ffn_gate_up_exps.weight"},
    {"ffn_gate_shexp", "ffn_gate_shexp.weight"}, {"ffn_up_shexp", "ffn_up_shexp.weight"},
    {"ffn_down_shexp", "ffn_down_shexp.weight"}, {"ffn_shexp_gate", "ffn_gate_inp_shexp.weight"},
    {"attn_sinks", "attn_sinks.weight"}, {"ssm_qkv", "attn_qkv.weight"}, {"ssm_qkvz", "ssm_in.weight"}, {"ssm_z", "attn_gate.weight"},
    {"ssm_beta", "ssm_beta.weight"}, {"ssm_alpha", "ssm_alpha.weight"}, {"ssm_out", "ssm_out.weight"},
    {"ssm_conv", "ssm_conv1d.weight"}, {"ssm_norm", "ssm_norm.weight"},
};

int quant_mix_gguf_name(const char *moe_name, int len, char *out, size_t cap) {
    char name[256]; /* the .moe name is not NUL-terminated */
    if (len <= 0 || (size_t)len >= sizeof name) return -1;
    memcpy(name, moe_name, (size_t)len);
    name[len] = 0;
    int prefix = 0, il;
    if (sscanf(name, "blk.%d.%n", &il, &prefix) < 1 || prefix <= 0) prefix = 0;
    moe_name = name;
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        size_t k = strlen(NAMES[i].moe);
        if ((size_t)(len - prefix) != k || memcmp(moe_name + prefix, NAMES[i].moe, k)) continue;
        int w = snprintf(out, cap, "%.*s%s", prefix, moe_name, NAMES[i].gguf);
        return w > 0 && (size_t)w < cap ? 0 : -1;
    }
    return -1;
}
