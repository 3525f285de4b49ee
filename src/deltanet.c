/* deltanet.c - the Gated DeltaNet mixer of Qwen3-Next and Qwen3.5 (HF
 * Qwen3NextGatedDeltaNet / Qwen3_5MoeGatedDeltaNet), a linear-attention layer
 * that replaces self-attention in 3 of every 4 layers.
 *
 * For the n rows of a pass (runs of tokens, each of one sequence: forward.h):
 *   1. projections: q|k|v (channels = 2*n_k*dk + n_v*dv), z (n_v*dv), b and a (n_v);
 *   2. causal depthwise conv1d of width K over the q|k|v channels, then SiLU;
 *      the last K-1 pre-conv inputs carry over to the next pass (conv state);
 *   3. q, k L2-normalised per key head, q scaled by 1/sqrt(dk);
 *      beta = sigmoid(b), decay = exp(g), g = -exp(A_log) * softplus(a + dt_bias);
 *   4. per value head h (reading key head h / (n_v/n_k), or h % n_k when the
 *      value heads are stored tiled, ssm.v_tiled), the delta rule on its
 *      state S (dk, dv, kept transposed), token by token (HF's recurrent form, decode):
 *          S *= decay;  delta = beta * (v - S^T k);  S += k delta^T;  o = S^T q
 *      or, for a run of DELTA_CHUNK_MIN tokens or more (prefill), the same
 *      function 64 tokens at a time in HF's chunked form (delta_rule.h);
 *   5. o = RMSNorm(o) * w * silu(z) per value head (Qwen3NextRMSNormGated), then out_proj.
 * Steps 2 and 4 run each sequence's tokens through its own state; heads and
 * sequences are independent, so step 4 runs every (sequence, head) pair in
 * parallel, each through its tokens in order. The states live in the
 * context (forward.h); the projections (1, 5) cover all rows at once. */
#include <math.h>
#include <string.h>

#include "delta_rule.h"
#include "forward.h"
#include "kernels.h"
#include "matmul.h"
#include "ops.h"
#include "threads.h"

#define CONV_PAR_MIN (1u << 14) /* conv values below which the channels stay on one thread */
#define CONV_BLOCK 64           /* channels per work item of the conv: whole cache lines of a row */

/* This layer's conv state (K-1, channels) and delta-rule state (n_v, dv, dk)
 * in sequence seq's state: the blocks are in layer order, one per Gated
 * DeltaNet layer. */
static float *conv_state(moe_ctx *c, int seq, int layer) {
    const moe_config *cfg = &c->model->cfg;
    size_t slot = 0;
    for (int l = 0; l < layer; l++) slot += cfg->ssm_layer[l];
    return c->seqs[seq].ssm_state + slot * ssm_state_floats(cfg);
}
static float *delta_state(moe_ctx *c, int seq, int layer) {
    const moe_config *cfg = &c->model->cfg;
    return conv_state(c, seq, layer) + (size_t)(cfg->ssm_conv_kernel - 1) * (size_t)ssm_channels(cfg);
}

/* torch.nn.functional.softplus (beta 1, threshold 20: linear above it) */
static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* Step 2: out[t][ch] = silu(sum_j w[ch][j] * in[t - (K-1) + j][ch]), where
 * positions before the batch come from the conv state; then the state keeps
 * the last K-1 inputs of (state, batch). Channels are independent: blocks of
 * CONV_BLOCK run in parallel, each token's row of a block a contiguous run
 * (the channels are the vectorized inner loop; a row per channel would read
 * one value per cache line). */
static void conv_silu(const float *w, int K, float *state, const float *in, float *out, int n, int ch, int nt) {
    int blocks = (ch + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)n * (size_t)ch >= CONV_PAR_MIN && nt > 1)
    for (int b = 0; b < blocks; b++) {
        int c0 = b * CONV_BLOCK, m = ch - c0 < CONV_BLOCK ? ch - c0 : CONV_BLOCK;
        float taps[MAX_CONV_KERNEL][CONV_BLOCK]; /* (K, m): this block's weights, tap-major */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < K; j++) taps[j][i] = w[(size_t)(c0 + i) * K + j];
        for (int t = 0; t < n; t++) {
            float *o = out + (size_t)t * ch + c0;
            for (int i = 0; i < m; i++) o[i] = 0.0f;
            for (int j = 0; j < K; j++) { /* input position t-(K-1)+j; before the batch: state row K-1+that */
                int at = t - (K - 1) + j;
                const float *x = (at >= 0 ? in + (size_t)at * ch : state + (size_t)(K - 1 + at) * ch) + c0;
                const float *tj = taps[j];
#pragma omp simd
                for (int i = 0; i < m; i++) o[i] += tj[i] * x[i];
            }
            silu(o, m);
        }
        /* state row j <- input position n-(K-1)+j: rows in rising order read rows not yet overwritten */
        for (int j = 0; j < K - 1; j++) {
            int at = n - (K - 1) + j;
            const float *x = (at >= 0 ? in + (size_t)at * ch : state + (size_t)(K - 1 + at) * ch) + c0;
            memmove(state + (size_t)j * ch + c0, x, (size_t)m * sizeof(float));
        }
    }
}

/* x / sqrt(sum(x^2) + 1e-6) * scale   (HF l2norm, eps 1e-6) */
static void l2norm_scaled(float *x, int n, float scale) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = scale / sqrtf(ss + 1e-6f);
    for (int i = 0; i < n; i++) x[i] *= r;
}

/* HF's fix_query_key_value_ordering: the in_proj_qkvz product, per key head
 * j its q_j (dk), k_j (dk), v_j and z_j (nv/nk value heads of dv each), into
 * x = all q | all k | all v and z = all z (value heads in HF's grouped order). */
static void split_qkvz(const moe_config *cfg, const float *qkvz, int n, float *x, float *z) {
    int nk = cfg->ssm_n_k_heads, dk = cfg->ssm_k_dim, kw = ssm_key_width(cfg), vw = ssm_value_width(cfg);
    int vg = vw / nk, group = 2 * dk + 2 * vg, ch = ssm_channels(cfg); /* vg: one key head's v (or z) values */
    for (int t = 0; t < n; t++) {
        const float *src = qkvz + (size_t)t * (size_t)(ch + vw);
        float *xt = x + (size_t)t * (size_t)ch, *zt = z + (size_t)t * (size_t)vw;
        for (int j = 0; j < nk; j++, src += group) {
            memcpy(xt + (size_t)j * dk, src, (size_t)dk * sizeof(float));
            memcpy(xt + kw + (size_t)j * dk, src + dk, (size_t)dk * sizeof(float));
            memcpy(xt + 2 * (size_t)kw + (size_t)j * vg, src + 2 * dk, (size_t)vg * sizeof(float));
            memcpy(zt + (size_t)j * vg, src + 2 * dk + vg, (size_t)vg * sizeof(float));
        }
    }
}

void deltanet_forward(moe_ctx *c, int layer, const float *xn, int n, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nk = cfg->ssm_n_k_heads, nv = cfg->ssm_n_v_heads, dk = cfg->ssm_k_dim, dv = cfg->ssm_v_dim;
    int kw = ssm_key_width(cfg), vw = ssm_value_width(cfg), ch = ssm_channels(cfg);
    observe_input(c, layer, MOE_INPUT_ATTN, -1, xn, n, cfg->dim);
    double t0 = phase_start(c);

    /* 1. HF in_proj_qkv, in_proj_z, in_proj_b, in_proj_a (or in_proj_qkvz, split after); x quantized once for all */
    act_rows ax;
    act_init(&ax, xn, n, cfg->dim, c->act_scratch);
    mm_job in[4] = {{.y = c->ssm_b, .w = &L->ssm_beta, .a = &ax, .m = n},
                    {.y = c->ssm_a, .w = &L->ssm_alpha, .a = &ax, .m = n},
                    {.y = c->ssm_x, .w = &L->ssm_qkv, .a = &ax, .m = n},
                    {.y = c->ssm_z, .w = &L->ssm_z, .a = &ax, .m = n}};
    if (cfg->ssm_qkvz) in[2] = (mm_job){.y = c->ssm_qkvz, .w = &L->ssm_qkvz, .a = &ax, .m = n};
    matmul_jobs(in, cfg->ssm_qkvz ? 3 : 4, c->n_threads);
    if (cfg->ssm_qkvz) split_qkvz(cfg, c->ssm_qkvz, n, c->ssm_x, c->ssm_z);

    /* 2. causal conv1d + SiLU over q|k|v, each run after its sequence's last inputs */
    for (int i = 0; i < c->n_runs; i++) {
        const seq_run *r = &c->runs[i];
        size_t at = (size_t)r->row0 * ch;
        conv_silu(L->ssm_conv, cfg->ssm_conv_kernel, conv_state(c, r->seq, layer), c->ssm_x + at, c->ssm_qkv + at,
                  r->n, ch, c->n_threads);
    }

    /* 3. L2-normalised q and k per key head (q also times dk^-1/2); beta and log decay g per value head */
    float qscale = 1.0f / sqrtf((float)dk);
#pragma omp parallel for schedule(static) num_threads(c->n_threads) if (n >= PAR_MIN_ROWS && c->n_threads > 1)
    for (int t = 0; t < n; t++) {
        float *row = c->ssm_qkv + (size_t)t * ch;
        for (int h = 0; h < nk; h++) {
            l2norm_scaled(row + (size_t)h * dk, dk, qscale);
            l2norm_scaled(row + kw + (size_t)h * dk, dk, 1.0f);
        }
        float *b = c->ssm_b + (size_t)t * nv, *a = c->ssm_a + (size_t)t * nv;
        for (int h = 0; h < nv; h++) {
            b[h] = sigmoidf(b[h]);
            a[h] = L->ssm_a[h] * softplus(a[h] + L->ssm_dt[h]); /* g, ssm_a = -exp(A_log) */
        }
    }

    /* 4. the delta rule, (run, value head) pairs in parallel; value head h reads key head h / (nv/nk)
     * (HF's grouped order), or h % nk when every per-value-head tensor is stored tiled (ssm.v_tiled).
     * A run of several tokens (prefill) goes chunk by chunk, one token (decode) or a few by the recurrence. */
    phase_end(c, MOE_PHASE_DELTANET, t0);
    t0 = phase_start(c);
    int per_k = nv / nk;
    const kernel_set *ks = kernels_get();
    size_t scratch = delta_rule_scratch_floats(dk, dv);
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads) if (c->n_threads > 1)
    for (int rh = 0; rh < c->n_runs * nv; rh++) {
        const seq_run *r = &c->runs[rh / nv];
        int h = rh % nv, kh = cfg->ssm_v_tiled ? h % nk : h / per_k;
        const float *base = c->ssm_qkv + (size_t)r->row0 * ch;
        delta_head hd = {.q = base + (size_t)kh * dk,
                         .k = base + kw + (size_t)kh * dk,
                         .v = base + 2 * (size_t)kw + (size_t)h * dv,
                         .qkv_stride = (size_t)ch,
                         .beta = c->ssm_b + (size_t)r->row0 * nv + h,
                         .g = c->ssm_a + (size_t)r->row0 * nv + h,
                         .gate_stride = (size_t)nv,
                         .o = c->ssm_o + (size_t)r->row0 * vw + (size_t)h * dv,
                         .o_stride = (size_t)vw};
        float *S = delta_state(c, r->seq, layer) + (size_t)h * dk * dv;
        float *tmp = c->ssm_tmp + (size_t)thread_id() * scratch;
        if (r->n >= DELTA_CHUNK_MIN) delta_rule_chunked(ks, S, dk, dv, r->n, &hd, tmp);
        else delta_rule_recurrent(ks, S, dk, dv, r->n, &hd, tmp);
    }

    phase_end(c, MOE_PHASE_DELTA_RULE, t0);
    t0 = phase_start(c);

    /* 5. gated RMSNorm per value head: RMSNorm(o) * w * silu(z), w used as stored */
#pragma omp parallel for schedule(static) num_threads(c->n_threads) if (n >= PAR_MIN_ROWS && c->n_threads > 1)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nv; h++) {
            float *o = c->ssm_o + (size_t)t * vw + (size_t)h * dv;
            rmsnorm(o, o, L->ssm_norm, dv, cfg->norm_eps);
            mul_silu(o, c->ssm_z + (size_t)t * vw + (size_t)h * dv, dv);
        }

    act_rows ao;
    act_init(&ao, c->ssm_o, n, vw, c->act_scratch);
    observe_input(c, layer, MOE_INPUT_ATTN_OUT, -1, c->ssm_o, n, vw);
    matmul(out, &L->ssm_out, &ao, c->n_threads); /* HF out_proj */
    phase_end(c, MOE_PHASE_DELTANET, t0);
}
