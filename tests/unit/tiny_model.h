/* tiny_model.h - a complete, valid, tiny MoE model built in memory with the
 * test writer: 2 layers (dense + MoE), 4 experts top-2 with a shared expert,
 * Qwen2-style biases, and a byte-level BPE tokenizer (256 byte tokens + 3
 * merges + 1 control token). Seeds the fuzzers and the damage tests. */
#ifndef MOE_TINY_MODEL_H
#define MOE_TINY_MODEL_H

#include "test_util.h"

#define TM_DIM 16
#define TM_FF 8
#define TM_VOCAB 260
#define TM_E 4

static inline uint8_t *tiny_model(size_t *size) {
    static tfile f;
    static float w[64 * 1024];
    static uint8_t text[512];
    static int32_t offsets[TM_VOCAB + 1], merges[9];
    static uint8_t types[TM_VOCAB];
    free(f.kv.p); /* static builder state: release the previous call's buffer */
    memset(&f, 0, sizeof f);
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.4f;
    }
    tf_str(&f, "general.arch", "qwen2_moe");
    tf_int(&f, "model.vocab_size", TM_VOCAB);
    tf_int(&f, "model.dim", TM_DIM);
    tf_int(&f, "model.n_layers", 2);
    tf_int(&f, "model.n_heads", 2);
    tf_int(&f, "model.n_kv_heads", 1);
    tf_int(&f, "model.head_dim", 8);
    tf_int(&f, "model.ff_dim", TM_FF);
    tf_int(&f, "model.max_ctx", 64);
    tf_float(&f, "model.norm_eps", 1e-6);
    tf_float(&f, "attn.scale", 0.35355339059327373);
    tf_int(&f, "attn.qkv_bias", 1);
    tf_float(&f, "rope.theta", 10000.0);
    tf_int(&f, "moe.n_experts", TM_E);
    tf_int(&f, "moe.n_active", 2);
    tf_int(&f, "moe.ff_dim", TM_FF);
    int64_t layers[2] = {0, 1};
    tf_ints(&f, "moe.layers", layers, 2);
    tf_int(&f, "moe.shared_ff", TM_FF);
    tf_int(&f, "moe.shared_gate", 1);
    tf_str(&f, "tok.model", "bpe");
    tf_str(&f, "tok.pre", "gpt2");
    tf_int(&f, "tok.bos", 259);
    tf_int(&f, "tok.eos", 259);

    /* tokens: 256 bytes, "th" (256), "the" (257), " t" (258), <|end|> (259) */
    int k = 0;
    for (int i = 0; i < 256; i++) { offsets[i] = k; text[k++] = (uint8_t)i; types[i] = 1; }
    const char *extra[4] = {"th", "the", " t", "<|end|>"};
    for (int i = 0; i < 4; i++) {
        offsets[256 + i] = k;
        memcpy(text + k, extra[i], strlen(extra[i]));
        k += (int)strlen(extra[i]);
        types[256 + i] = i == 3 ? 3 : 1;
    }
    offsets[TM_VOCAB] = k;
    int32_t m[9] = {'t', 'h', 256, 256, 'e', 257, ' ', 't', 258};
    memcpy(merges, m, sizeof m);

    const float *p = w;
#define TM_T(name, nd, ...) \
    do { \
        uint64_t d_[] = {__VA_ARGS__}; \
        uint64_t n_ = 1; \
        for (int i_ = 0; i_ < nd; i_++) n_ *= d_[i_]; \
        tf_tensor(&f, name, 0, nd, d_, p, n_ * 4); \
        p += n_; \
    } while (0)
    static const float ones[64] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                   1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    TM_T("tok_embd", 2, TM_VOCAB, TM_DIM);
    tf_tensor(&f, "output_norm", 0, 1, (uint64_t[]){TM_DIM}, ones, TM_DIM * 4);
    TM_T("output", 2, TM_VOCAB, TM_DIM);
    for (int l = 0; l < 2; l++) {
        static char names[2][20][32];
        const char *parts[] = {"attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_o", "attn_q_bias",
                               "attn_k_bias", "attn_v_bias", "ffn_gate", "ffn_up", "ffn_down", "ffn_router",
                               "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_up_shexp",
                               "ffn_down_shexp", "ffn_shexp_gate"};
        for (int i = 0; i < 20; i++) snprintf(names[l][i], 32, "blk.%d.%s", l, parts[i]);
        tf_tensor(&f, names[l][0], 0, 1, (uint64_t[]){TM_DIM}, ones, TM_DIM * 4);
        tf_tensor(&f, names[l][1], 0, 1, (uint64_t[]){TM_DIM}, ones, TM_DIM * 4);
        TM_T(names[l][2], 2, 16, TM_DIM);
        TM_T(names[l][3], 2, 8, TM_DIM);
        TM_T(names[l][4], 2, 8, TM_DIM);
        TM_T(names[l][5], 2, TM_DIM, 16);
        TM_T(names[l][6], 1, 16);
        TM_T(names[l][7], 1, 8);
        TM_T(names[l][8], 1, 8);
        if (l == 0) {
            TM_T(names[l][9], 2, TM_FF, TM_DIM);
            TM_T(names[l][10], 2, TM_FF, TM_DIM);
            TM_T(names[l][11], 2, TM_DIM, TM_FF);
        } else {
            TM_T(names[l][12], 2, TM_E, TM_DIM);
            TM_T(names[l][13], 3, TM_E, TM_FF, TM_DIM);
            TM_T(names[l][14], 3, TM_E, TM_FF, TM_DIM);
            TM_T(names[l][15], 3, TM_E, TM_DIM, TM_FF);
            TM_T(names[l][16], 2, TM_FF, TM_DIM);
            TM_T(names[l][17], 2, TM_FF, TM_DIM);
            TM_T(names[l][18], 2, TM_DIM, TM_FF);
            TM_T(names[l][19], 2, 1, TM_DIM);
        }
    }
#undef TM_T
    tf_tensor(&f, "tok.text", 4, 1, (uint64_t[]){(uint64_t)k}, text, (uint64_t)k);
    tf_tensor(&f, "tok.offsets", 3, 1, (uint64_t[]){TM_VOCAB + 1}, offsets, sizeof offsets);
    tf_tensor(&f, "tok.types", 4, 1, (uint64_t[]){TM_VOCAB}, types, TM_VOCAB);
    tf_tensor(&f, "tok.merges", 3, 2, (uint64_t[]){3, 3}, merges, sizeof merges);
    return tf_build(&f, size);
}

#endif /* MOE_TINY_MODEL_H */
