/* test_quant_mix.c - quant_mix.c's rules on the cases ../shared/gguf does not
 * cover (its files are MoE models with 8 experts): dense models with and
 * without GQA, tied embeddings, a hybrid model's attn_v count, the filter of
 * what is quantized at all, the fallbacks, and the .moe -> llama.cpp names.
 * Each expected type is read off llama_tensor_get_type (ik_llama.cpp
 * 8337e4cd src/llama-quantize.cpp), not from quant_mix.c. */
#include "quant_mix.h"
#include "test_util.h"

static int type_of(quant_mix m, const mix_model *mm, const char *name, int n_dims, uint64_t ne0) {
    return quant_mix_type(m, mm, name, n_dims, ne0);
}

#define EXPECT(m, mm, name, ne0, want) \
    CHECK(type_of(m, mm, name, 2, ne0) == (want), "%s %s: %s, want %s", quant_mix_name(m), name, \
          dtype_name(type_of(m, mm, name, 2, ne0)), dtype_name(want))

static void dense_gqa(void) {
    /* a llama-3-8B-like shape: 32 layers, 32 heads over 8 KV heads (n_gqa 4) */
    mix_model mm = {.n_layers = 32, .n_experts = 0, .n_heads = 32, .n_kv_heads = 8, .has_output = 1};
    /* use_more_bits(i, 32): i < 4, i >= 28, (i - 4) % 3 == 2 */
    EXPECT(MIX_Q4_K_M, &mm, "blk.0.attn_v.weight", 4096, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.attn_v.weight", 4096, DT_Q5_K); /* n_gqa >= 4: Q4_K -> Q5_K */
    EXPECT(MIX_Q4_K_M, &mm, "blk.6.attn_v.weight", 4096, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.28.attn_v.weight", 4096, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.4.ffn_down.weight", 14336, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.9.ffn_down.weight", 14336, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.31.ffn_down.weight", 14336, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.attn_output.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.attn_k.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.ffn_gate.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "output.weight", 4096, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "token_embd.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q5_K_M, &mm, "blk.5.attn_v.weight", 4096, DT_Q6_K); /* n_gqa >= 4: Q5_K -> Q6_K */
    EXPECT(MIX_Q5_K_M, &mm, "blk.5.ffn_down.weight", 14336, DT_Q5_K);
    EXPECT(MIX_Q5_K_M, &mm, "blk.5.attn_output.weight", 4096, DT_Q5_K);
    EXPECT(MIX_Q3_K_M, &mm, "blk.1.attn_v.weight", 4096, DT_Q5_K);   /* i_attention_wv < 2 */
    EXPECT(MIX_Q3_K_M, &mm, "blk.2.attn_v.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q3_K_M, &mm, "blk.1.ffn_down.weight", 14336, DT_Q5_K); /* i_layer < n_layer / 16 */
    EXPECT(MIX_Q3_K_M, &mm, "blk.2.ffn_down.weight", 14336, DT_Q4_K);
    EXPECT(MIX_Q3_K_M, &mm, "blk.2.attn_output.weight", 4096, DT_Q4_K);
    EXPECT(MIX_Q3_K_M, &mm, "blk.2.attn_q.weight", 4096, DT_Q3_K);
    EXPECT(MIX_Q2_K, &mm, "blk.2.attn_v.weight", 4096, DT_Q4_K);     /* n_gqa >= 4 */
    EXPECT(MIX_Q2_K, &mm, "blk.2.ffn_down.weight", 14336, DT_Q3_K);
    EXPECT(MIX_Q2_K, &mm, "blk.2.attn_output.weight", 4096, DT_Q3_K);
    EXPECT(MIX_Q2_K, &mm, "blk.2.ffn_up.weight", 4096, DT_Q2_K);
    EXPECT(MIX_Q6_K, &mm, "blk.5.attn_v.weight", 4096, DT_Q6_K);
    EXPECT(MIX_Q6_K, &mm, "token_embd.weight", 4096, DT_Q6_K);
}

static void dense_mha_tied(void) {
    /* no GQA, the output tied to the token embedding */
    mix_model mm = {.n_layers = 16, .n_experts = 0, .n_heads = 16, .n_kv_heads = 16, .has_output = 0};
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.attn_v.weight", 2048, DT_Q4_K);  /* (5 - 2) % 3 = 0: no more bits */
    EXPECT(MIX_Q4_K_M, &mm, "blk.4.attn_v.weight", 2048, DT_Q6_K);  /* (4 - 2) % 3 = 2 */
    EXPECT(MIX_Q5_K_M, &mm, "blk.5.attn_v.weight", 2048, DT_Q5_K);
    EXPECT(MIX_Q2_K, &mm, "blk.5.attn_v.weight", 2048, DT_Q3_K);
    EXPECT(MIX_Q4_K_M, &mm, "token_embd.weight", 2048, DT_Q6_K);    /* quantized as the output */
    EXPECT(MIX_Q4_K_M, &mm, "token_embd.weight", 2000 - 16, DT_Q8_0); /* nx % QK_K: Q8_0 */
}

static void moe_and_mla(void) {
    mix_model mm = {.n_layers = 27, .n_experts = 64, .n_heads = 16, .n_kv_heads = 16, .has_output = 1};
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_v.weight", 2048, DT_Q8_0);
    EXPECT(MIX_Q6_K, &mm, "blk.3.attn_k.weight", 2048, DT_Q8_0);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_kv_a_mqa.weight", 2048, DT_Q8_0);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_kv_b.weight", 512, DT_Q8_0);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_k_b.weight", 128, DT_Q8_0);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_v_b.weight", 512, DT_Q4_K);  /* "attn_v.weight" does not match */
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_q.weight", 2048, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.attn_output.weight", 2048, DT_Q5_K);
    EXPECT(MIX_Q5_K_M, &mm, "blk.3.attn_output.weight", 2048, DT_Q5_K);
    EXPECT(MIX_Q2_K, &mm, "blk.3.attn_output.weight", 2048, DT_Q5_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.3.ffn_down_exps.weight", 1408, DT_Q5_0); /* 1408 % 256: Q4_K -> Q5_0 */
    EXPECT(MIX_Q4_K_M, &mm, "blk.4.ffn_down_shexp.weight", 1408, DT_Q5_0);
    EXPECT(MIX_Q4_K_M, &mm, "blk.2.ffn_down_shexp.weight", 2816, DT_Q6_K); /* 2816 = 11 x 256 */
    /* use_more_bits(i, 27): i < 3, i >= 23, (i - 3) % 3 == 2 */
    EXPECT(MIX_Q4_K_M, &mm, "blk.5.ffn_down_exps.weight", 2048, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.6.ffn_down_exps.weight", 2048, DT_Q4_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.23.ffn_down_exps.weight", 2048, DT_Q6_K);
}

static void filter_and_fallbacks(void) {
    mix_model mm = {.n_layers = 4, .n_experts = 8, .n_heads = 4, .n_kv_heads = 2, .has_output = 1};
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.attn_norm.weight", 1, 256) < 0, "1-D");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.attn_q_norm.weight", 2, 256) < 0, "_norm.weight");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.ffn_gate_inp.weight", 2, 256) < 0, "router");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.exp_probs_b.bias", 2, 256) < 0, "not a weight");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.ssm_conv1d.weight", 2, 256) < 0, "ssm_conv1d");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.ffn_up_exps.weight", 2, 48) < 0, "48-wide rows fit no type");
    CHECK(type_of(MIX_Q4_K_M, &mm, "blk.0.ffn_gate_inp_shexp.weight", 2, 256) == DT_Q4_K, "not the router");
    EXPECT(MIX_Q4_K_M, &mm, "blk.1.ffn_up_exps.weight", 128, DT_Q5_0);
    EXPECT(MIX_Q5_K_M, &mm, "blk.1.ffn_up_exps.weight", 128, DT_Q5_1);
    EXPECT(MIX_Q6_K, &mm, "blk.1.ffn_up_exps.weight", 128, DT_Q8_0);
    EXPECT(MIX_Q3_K_M, &mm, "blk.1.ffn_up_exps.weight", 128, DT_IQ4_NL);
    EXPECT(MIX_Q2_K, &mm, "blk.1.ffn_up_exps.weight", 128, DT_IQ4_NL);
    EXPECT(MIX_Q4_K_M, &mm, "output.weight", 128, DT_Q8_0);
}

static void hybrid_attn_v_count(void) {
    /* full attention every 4th layer (3, 7, 11, ...): llama.cpp's attn_v counter is the
     * attention layer's index, not the layer's */
    int idx[48];
    for (int l = 0, seen = 0; l < 48; l++) { /* attn_v tensors in the layers before l */
        idx[l] = seen;
        seen += l % 4 == 3;
    }
    mix_model mm = {.n_layers = 48, .n_experts = 0, .n_heads = 16, .n_kv_heads = 16, .has_output = 1,
                    .attn_v_index = idx};
    EXPECT(MIX_Q3_K_M, &mm, "blk.3.attn_v.weight", 2048, DT_Q5_K);  /* the 1st attn_v */
    EXPECT(MIX_Q3_K_M, &mm, "blk.7.attn_v.weight", 2048, DT_Q5_K);  /* the 2nd */
    EXPECT(MIX_Q3_K_M, &mm, "blk.11.attn_v.weight", 2048, DT_Q4_K);
    /* use_more_bits(i, 48): i < 6 -> the first six attention layers (3 .. 23) */
    EXPECT(MIX_Q4_K_M, &mm, "blk.23.attn_v.weight", 2048, DT_Q6_K);
    EXPECT(MIX_Q4_K_M, &mm, "blk.15.attn_v.weight", 2048, DT_Q6_K);  /* index 3 (by layer: (15 - 6) % 3 = 0) */
    EXPECT(MIX_Q4_K_M, &mm, "blk.27.attn_v.weight", 2048, DT_Q4_K);  /* index 6: (6 - 6) % 3 = 0 */
    EXPECT(MIX_Q4_K_M, &mm, "blk.35.attn_v.weight", 2048, DT_Q6_K);  /* index 8: (8 - 6) % 3 = 2 */
    /* attn_qkv (DeltaNet) is caught by "attn_q" first in ik_llama.cpp: the default */
    EXPECT(MIX_Q4_K_M, &mm, "blk.0.attn_qkv.weight", 2048, DT_Q4_K);
    /* a negative layer number (a file's name) is not read through the index: a sentinel
     * just before it would make the 1000th attn_v, Q4_K */
    int guarded[2] = {1000, 0};
    mm.n_layers = 1;
    mm.attn_v_index = guarded + 1;
    EXPECT(MIX_Q3_K_M, &mm, "blk.-1.attn_v.weight", 2048, DT_Q5_K);
}

static void names(void) {
    CHECK(quant_mix_from_name("q4_k_m") == MIX_Q4_K_M, "q4_k_m");
    CHECK(quant_mix_from_name("Q6_K") == MIX_Q6_K, "Q6_K");
    CHECK(quant_mix_from_name("q2_k") == MIX_Q2_K, "q2_k");
    CHECK(quant_mix_from_name("q4_k") < 0 && quant_mix_from_name("q4_k_mm") < 0 && quant_mix_from_name("") < 0,
          "not mixes");
    char out[64];
    const char *buf = "tok_embdXYZ"; /* a .moe name is not NUL-terminated */
    CHECK(!quant_mix_gguf_name(buf, 8, out, sizeof out) && !strcmp(out, "token_embd.weight"), "%s", out);
    CHECK(!quant_mix_gguf_name("blk.12.attn_o", 13, out, sizeof out) && !strcmp(out, "blk.12.attn_output.weight"),
          "%s", out);
    CHECK(!quant_mix_gguf_name("blk.1.attn_kv_a", 15, out, sizeof out) && !strcmp(out, "blk.1.attn_kv_a_mqa.weight"),
          "%s", out);
    CHECK(!quant_mix_gguf_name("output", 6, out, sizeof out) && !strcmp(out, "output.weight"), "%s", out);
    CHECK(quant_mix_gguf_name("blk.1.attn_o_extra", 18, out, sizeof out) < 0, "unknown name");
    CHECK(quant_mix_gguf_name("blk.1.attn_o", 12, out, 8) < 0, "too small a buffer");
}

int main(void) {
    dense_gqa();
    dense_mha_tied();
    moe_and_mla();
    filter_and_fallbacks();
    hybrid_attn_v_count();
    names();
    return test_summary("test_quant_mix");
}
