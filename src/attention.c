/* attention.c - causal self-attention over the KV cache, for a batch of n
 * tokens at positions pos0 .. pos0+n-1.
 *
 *   gqa  grouped-query attention (Llama, Mixtral, Qwen, OLMoE, Granite):
 *        q/k/v projections (+ Qwen2 biases), QK-norm (per head, or over the
 *        whole projection for OLMoE), clip, RoPE, cache K and V, softmax(q.k
 *        * scale) . V, output projection.
 *   mla  DeepSeek multi-head latent attention in absorbed form: the cache
 *        holds the normalised latent and the shared rope key per position;
 *        kv_b's key half is folded into the query and its value half applied
 *        after the weighted sum, so nothing of size n_heads is cached. */
#include <math.h>
#include <string.h>

#include "forward.h"
#include "kernels.h"
#include "ops.h"
#include "threads.h"
#include "util.h"

/* The KV cache holds f32 or, with --kv f16, f16 values (c->kv_f16). */
static size_t kv_esize(const moe_ctx *c) { return c->kv_f16 ? sizeof(uint16_t) : sizeof(float); }

/* Value i of a layer's cache: K (or the MLA latent) or V. */
static void *kv_at(const moe_ctx *c, void *cache, int layer, size_t i) {
    return (char *)cache + ((size_t)layer * c->cache_layer_floats + i) * kv_esize(c);
}

static void kv_put(const moe_ctx *c, void *dst, const float *src, int n) {
    if (!c->kv_f16) {
        memcpy(dst, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *h = dst;
    for (int i = 0; i < n; i++) h[i] = f32_to_f16(src[i]);
}

/* Softmax-weighted attention of one query row over cached positions
 * [start, p] (rows of stride values from kc and vc); scores has room for
 * n_ctx floats. */
static void attend_head(const kernel_set *ks, int f16, const float *q, const void *kc, const void *vc, size_t stride,
                        int dim, int vdim, int start, int p, float scale, float *scores, float *out) {
    int n = p - start + 1;
    if (f16) { /* q . k_j for every j at once: the f16 weight tile with the keys as rows */
        const uint16_t *k0 = (const uint16_t *)kc + (size_t)start * stride;
        ks->tile[DT_F16](dim, k0, stride * sizeof(uint16_t), n, q, 0, NULL, 1, scores + start, 1);
        for (int j = start; j <= p; j++) scores[j] *= scale;
    } else {
        for (int j = start; j <= p; j++) scores[j] = ks->dot_f32(q, (const float *)kc + (size_t)j * stride, dim) * scale;
    }
    softmax(scores + start, n);
    memset(out, 0, sizeof(float) * (size_t)vdim);
    for (int j = start; j <= p; j++) {
        if (f16)
            ks->axpy_f16(out, scores[j], (const uint16_t *)vc + (size_t)j * stride, vdim);
        else
            ks->axpy_f32(out, scores[j], (const float *)vc + (size_t)j * stride, vdim);
    }
}

/* One matrix-vector product inside a parallel region (no nested threads).
 * The MLA per-head matrices are float (binder rule), so no scratch is needed. */
static void matvec(const kernel_set *ks, float *y, const wmat *w, const float *x) {
    act_rows a;
    act_init(&a, x, 1, w->cols, NULL);
    matmul_serial(ks, y, w, &a, NULL, 1);
}

static int window_start(const moe_config *c, int p) {
    /* sliding window W: position p sees keys p-W+1 .. p (HF sliding_window) */
    return c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
}

static void add_bias(float *x, const float *b, int n, int width) {
    if (!b) return;
    for (int t = 0; t < n; t++) axpy(x + (size_t)t * width, 1.0f, b, width);
}

static void attention_gqa(moe_ctx *c, int layer, const float *xn, int n, int pos0, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nh = cfg->n_heads, nkv = cfg->n_kv_heads, hd = cfg->head_dim;
    int qw = nh * hd, kvw = nkv * hd;

    /* q/k/v = x W^T (+ b)    HF q_proj, k_proj, v_proj; x quantized once for all three */
    act_rows ax;
    act_init(&ax, xn, n, cfg->dim, c->act_scratch);
    matmul(c->q, &L->q, &ax);
    matmul(c->k, &L->k, &ax);
    matmul(c->v, &L->v, &ax);
    add_bias(c->q, L->q_bias, n, qw);
    add_bias(c->k, L->k_bias, n, kvw);
    add_bias(c->v, L->v_bias, n, kvw);

    for (int t = 0; t < n; t++) {
        float *q = c->q + (size_t)t * qw, *k = c->k + (size_t)t * kvw, *v = c->v + (size_t)t * kvw;
        if (cfg->qk_norm == QK_NORM_FULL) { /* OLMoE: RMSNorm over the whole projection */
            rmsnorm(q, q, L->q_norm, qw, cfg->norm_eps);
            rmsnorm(k, k, L->k_norm, kvw, cfg->norm_eps);
        } else if (cfg->qk_norm == QK_NORM_HEAD) { /* Qwen3: RMSNorm per head over head_dim */
            for (int h = 0; h < nh; h++) rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, cfg->norm_eps);
            for (int h = 0; h < nkv; h++) rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, cfg->norm_eps);
        }
        if (cfg->clip_qkv > 0) { /* OLMoE clip_qkv, after the norms */
            clamp_abs(q, qw, cfg->clip_qkv);
            clamp_abs(k, kvw, cfg->clip_qkv);
            clamp_abs(v, kvw, cfg->clip_qkv);
        }
        int p = pos0 + t;
        for (int h = 0; h < nh; h++) rope_apply(&c->rope, q + h * hd, p);
        for (int h = 0; h < nkv; h++) rope_apply(&c->rope, k + h * hd, p);
        /* append to the cache */
        kv_put(c, kv_at(c, c->k_cache, layer, (size_t)p * kvw), k, kvw);
        kv_put(c, kv_at(c, c->v_cache, layer, (size_t)p * kvw), v, kvw);
    }

    /* softmax(q k^T * scale) v, causally, per (token, head); query head h
     * reads kv head h / (n_heads / n_kv_heads) (HF repeat_kv) */
    const void *kc = kv_at(c, c->k_cache, layer, 0), *vc = kv_at(c, c->v_cache, layer, 0);
    int group = nh / nkv;
    const kernel_set *ks = kernels_get();
#pragma omp parallel for schedule(dynamic, 1)
    for (int th = 0; th < n * nh; th++) {
        int t = th / nh, h = th % nh, p = pos0 + t, g = h / group;
        float *scores = c->att_scores + (size_t)thread_id() * c->n_ctx;
        attend_head(ks, c->kv_f16, c->q + (size_t)t * qw + h * hd, (const char *)kc + g * hd * kv_esize(c),
                    (const char *)vc + g * hd * kv_esize(c), (size_t)kvw, hd, hd,
                    window_start(cfg, p), p, cfg->attn_scale, scores, c->att + (size_t)t * qw + h * hd);
    }

    act_rows aa;
    act_init(&aa, c->att, n, qw, c->act_scratch);
    matmul(out, &L->o, &aa); /* HF o_proj */
}

/* DeepSeek builds q_a_layernorm and kv_a_layernorm with the RMSNorm default
 * eps of 1e-6, not config.rms_norm_eps (modeling_deepseek.py). */
#define MLA_NORM_EPS 1e-6f

static void attention_mla(moe_ctx *c, int layer, const float *xn, int n, int pos0, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nh = cfg->n_heads, nope = cfg->nope_dim, rd = cfg->mla_rope_dim, lora = cfg->kv_lora, vd = cfg->v_dim;
    int qk = nope + rd, qw = nh * qk, cw = lora + rd; /* cw: cached floats per position */

    /* queries: q_b(RMSNorm(q_a x)) with q-LoRA, else q_proj x */
    act_rows ax;
    act_init(&ax, xn, n, cfg->dim, c->act_scratch);
    /* latent and shared rope key: kv_a_proj_with_mqa x = [c_kv | k_pe] */
    matmul(c->v, &L->kv_a, &ax); /* c->v as (n, kv_lora + rope) scratch */
    if (cfg->q_lora > 0) {
        matmul(c->k, &L->q_a, &ax); /* c->k as (n, q_lora) scratch */
        for (int t = 0; t < n; t++) {
            float *r = c->k + (size_t)t * cfg->q_lora;
            rmsnorm(r, r, L->q_a_norm, cfg->q_lora, MLA_NORM_EPS);
        }
        act_rows aq;
        act_init(&aq, c->k, n, cfg->q_lora, c->act_scratch);
        matmul(c->q, &L->q_b, &aq);
    } else {
        matmul(c->q, &L->q, &ax);
    }
    const void *cache = kv_at(c, c->k_cache, layer, 0);
    for (int t = 0; t < n; t++) {
        int p = pos0 + t;
        float *ckv = c->v + (size_t)t * cw, *slot = c->mla_tmp; /* built in f32, then stored */
        rmsnorm(slot, ckv, L->kv_a_norm, lora, MLA_NORM_EPS); /* kv_a_layernorm(c_kv) */
        memcpy(slot + lora, ckv + lora, sizeof(float) * (size_t)rd);
        rope_apply(&c->rope, slot + lora, p);
        kv_put(c, kv_at(c, c->k_cache, layer, (size_t)p * cw), slot, cw);
        for (int h = 0; h < nh; h++) rope_apply(&c->rope, c->q + (size_t)t * qw + h * qk + nope, p);
    }

    /* per (token, head): the absorbed query [k_b[h] q_nope | q_pe], whose dot
     * product with a cached [latent | k_pe] equals HF's q . k; the softmax-
     * weighted sum of latents; then v_b[h] expands it to the head's value */
    const kernel_set *ks = kernels_get();
#pragma omp parallel for schedule(dynamic, 1)
    for (int th = 0; th < n * nh; th++) {
        int t = th / nh, h = th % nh, p = pos0 + t;
        const float *qh = c->q + (size_t)t * qw + h * qk;
        float *scores = c->att_scores + (size_t)thread_id() * c->n_ctx;
        float *mq = c->mla_tmp + (size_t)thread_id() * (cw + lora), *lat = mq + cw;
        wmat kb = wmat_at(L->k_b, h), vb = wmat_at(L->v_b, h);
        matvec(ks, mq, &kb, qh);
        memcpy(mq + lora, qh + nope, sizeof(float) * (size_t)rd);
        attend_head(ks, c->kv_f16, mq, cache, cache, (size_t)cw, cw, lora, window_start(cfg, p), p, cfg->attn_scale, scores, lat);
        matvec(ks, c->att + (size_t)t * nh * vd + h * vd, &vb, lat);
    }

    act_rows aa;
    act_init(&aa, c->att, n, nh * vd, c->act_scratch);
    matmul(out, &L->o, &aa);
}

void attention_forward(moe_ctx *c, int layer, const float *xn, int n, int pos0, float *out) {
    if (c->model->cfg.attn_type == ATTN_MLA)
        attention_mla(c, layer, xn, n, pos0, out);
    else
        attention_gqa(c, layer, xn, n, pos0, out);
}
