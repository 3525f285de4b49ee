/* attention.c - causal self-attention over the KV cache, for the n rows of
 * a pass: runs of tokens of one or more sequences (forward.h), each row at
 * its position, attending to its own sequence's cache. The projections
 * cover all rows at once.
 *
 *   gqa  grouped-query attention (Llama, Mixtral, Qwen, OLMoE, Granite,
 *        GLM-4.5, gpt-oss, the hybrids' attention layers): q/k/v projections
 *        (+ biases), QK-norm (per head, or over the whole projection for
 *        OLMoE), clip, RoPE (on part of each head for GLM and the hybrids),
 *        cache K and V, softmax(q.k * scale) . V, the hybrids' sigmoid output
 *        gate, output projection (+ bias). gpt-oss adds a learned sink logit
 *        per head to the softmax (it takes a share of the weight and gives no
 *        value) and alternates sliding-window and full layers; a sliding
 *        layer's cache is a ring (forward.h).
 *   mla  multi-head latent attention (DeepSeek, GLM-4.7-Flash) in absorbed
 *        form: the cache holds the normalised latent and the shared rope key
 *        per position; kv_b's key half is folded into the query and its value
 *        half applied after the weighted sum, so nothing of size n_heads is
 *        cached. */
#include <math.h>
#include <string.h>

#include "forward.h"
#include "matmul.h"
#include "ops.h"
#include "quant.h"
#include "threads.h"
#include "util.h"

/* The KV cache holds f32 or, with --kv f16, f16 values (c->kv_f16). */
static size_t kv_esize(const moe_ctx *c) { return c->kv_f16 ? sizeof(uint16_t) : sizeof(float); }

/* Value i of a layer's cache: K (or the MLA latent) or V. */
static void *kv_at(const moe_ctx *c, void *cache, int layer, size_t i) {
    return (char *)cache + (c->layer_off[layer] + i) * kv_esize(c);
}

/* n values into the cache, value i at dst + i * stride (1: a row; the
 * layer's slots: a column of the transposed V). */
static void kv_put(const moe_ctx *c, void *dst, const float *src, int n, size_t stride) {
    if (!c->kv_f16 && stride == 1) {
        memcpy(dst, src, sizeof(float) * (size_t)n);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (c->kv_f16) ((uint16_t *)dst)[(size_t)i * stride] = f32_to_f16(src[i]);
        else ((float *)dst)[(size_t)i * stride] = src[i];
    }
}

/* scores[h][j] = q_h . k_j for the n keys in slots s0 .. s0+n-1, for the g
 * query heads that share one KV head (a GQA group; MLA: g = 1). Queries
 * are q + h*q_stride floats, key rows stride values apart in the cache;
 * scores: g rows of ld floats. The tile reads every key row once for the
 * whole group (keys as weight rows, heads as tokens). */
static void key_dots(const kernel_set *ks, int f16, const float *q, size_t q_stride, int g, const void *kc,
                     size_t stride, int dim, int s0, int n, float *scores, size_t ld) {
    size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    kernel_tile(ks, f16 ? DT_F16 : DT_F32, dim, (const char *)kc + (size_t)s0 * stride * es, stride * es, n, q,
                q_stride * sizeof(float), NULL, g, scores, ld);
}

/* softmax(scale * scores) over n keys for each of g rows; with sinks, head
 * h's sink logit joins each row's softmax (HF eager_attention_forward). */
static void normalize_scores(float *scores, size_t ld, int g, int n, float scale, const float *sinks) {
    for (int h = 0; h < g; h++) {
        float *s = scores + (size_t)h * ld;
        for (int j = 0; j < n; j++) s[j] *= scale;
        if (sinks) softmax_sink(s, n, sinks[h]);
        else softmax_fast(s, n);
    }
}

/* The keys position p attends to, as cache slots: the positions start .. p
 * (start: window_start) are slots start % slots onward, wrapping around a
 * ring at most once. First stretch [*s0, *s0 + *n0), then [0, *n1). */
static void key_span(int start, int p, int slots, int *s0, int *n0, int *n1) {
    int n = p - start + 1;
    *s0 = start % slots;
    *n0 = n < slots - *s0 ? n : slots - *s0;
    *n1 = n - *n0;
}

/* out_h = sum_j scores[h][j] v_j over the n keys from slot s0 (no wrap:
 * MLA's latents, which are also its keys), the value rows in the cache
 * stride values apart. */
static void weighted_rows(const kernel_set *ks, int f16, const float *scores, size_t ld, int g, const void *vc,
                          size_t stride, int vdim, int s0, int n, float *out, size_t out_stride) {
    size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    for (int h = 0; h < g; h++) memset(out + (size_t)h * out_stride, 0, sizeof(float) * (size_t)vdim);
    for (int j = 0; j < n; j++) {
        const char *v = (const char *)vc + (size_t)(s0 + j) * stride * es;
        for (int h = 0; h < g; h++) {
            float w = scores[(size_t)h * ld + j];
            if (f16)
                ks->axpy_f16(out + (size_t)h * out_stride, w, (const uint16_t *)v, vdim);
            else
                ks->axpy_f32(out + (size_t)h * out_stride, w, (const float *)v, vdim);
        }
    }
}

/* One matrix-vector product inside a parallel region (no nested threads).
 * The MLA per-head matrices are float (binder rule), so no scratch is needed. */
static void matvec(const kernel_set *ks, float *y, const wmat *w, const float *x) {
    act_rows a;
    act_init(&a, x, 1, w->cols, NULL);
    matmul_serial(ks, y, w, &a, NULL, 1);
}

static int window_start(const moe_config *c, int layer, int p) {
    /* sliding window W: position p sees keys p-W+1 .. p (HF sliding_window) */
    return c->window_layer[layer] && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
}

static void add_bias(float *x, const float *b, int n, int width) {
    if (!b) return;
    for (int t = 0; t < n; t++) axpy(x + (size_t)t * width, 1.0f, b, width);
}

/* attn.out_gate (Qwen3-Next, Qwen3.5): q_proj gave per head [query | gate],
 * (n, n_heads, 2*head_dim). Split it: the queries packed to (n, n_heads*head_dim)
 * in place, the gates to gate. In token and head order every destination lies
 * at or before its source, so the in-place move never overwrites unread rows. */
static void split_query_gate(float *q, float *gate, int n, int nh, int hd) {
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nh; h++) {
            const float *src = q + ((size_t)t * nh + h) * 2 * hd;
            memcpy(gate + ((size_t)t * nh + h) * hd, src + hd, sizeof(float) * (size_t)hd);
            memmove(q + ((size_t)t * nh + h) * hd, src, sizeof(float) * (size_t)hd);
        }
}

/* Below this many multiply-adds (keys read x query heads x head width, for
 * the scores and again for the values) a chunk's attention runs on one
 * thread: waking a team costs tens of microseconds, more than the work of
 * short contexts or small heads, and on a loaded machine each region waits
 * for every team thread to be scheduled (docs/BENCHMARKS.md, 2026-12-06,
 * moe serve under load). */
#define ATTN_PAR_MIN_WORK (1 << 18)

/* A cache line written where the last token's line was, a memory latency
 * away, counts as this many multiply-adds. */
#define ATTN_LINE_WORK 512

static int64_t attend_work(const moe_ctx *c, int t0, int m) {
    const moe_config *cfg = &c->model->cfg;
    int64_t keys = 0;
    for (int t = t0; t < t0 + m; t++) keys += c->row_pos[t] + 1;
    int64_t work = keys * cfg->n_heads * cfg->head_dim * 2;
    if (m == 1) work += (int64_t)cfg->n_kv_heads * cfg->head_dim * ATTN_LINE_WORK; /* its V column (cache_row) */
    return work;
}

/* Row t's query and key heads before they meet, for kv heads [g0, g1) and
 * their query heads: QK-norm (per head for Qwen3; OLMoE's over the whole
 * projection, so only with every head), clip (OLMoE, after the norms;
 * also the values), RoPE. Per group, one row's run inside the parallel
 * attention loop instead of before it on one thread. */
static void prepare_heads(moe_ctx *c, const layer_weights *L, int t, int g0, int g1) {
    const moe_config *cfg = &c->model->cfg;
    int nh = cfg->n_heads, nkv = cfg->n_kv_heads, hd = cfg->head_dim, group = nh / nkv, p = c->row_pos[t];
    float *q = c->q + (size_t)t * nh * hd, *k = c->k + (size_t)t * nkv * hd, *v = c->v + (size_t)t * nkv * hd;
    if (cfg->qk_norm == QK_NORM_FULL) { /* OLMoE: RMSNorm over the whole projection (g0 = 0, g1 = nkv) */
        rmsnorm(q, q, L->q_norm, nh * hd, cfg->norm_eps);
        rmsnorm(k, k, L->k_norm, nkv * hd, cfg->norm_eps);
    }
    for (int h = g0 * group; h < g1 * group; h++) {
        float *qh = q + (size_t)h * hd;
        if (cfg->qk_norm == QK_NORM_HEAD) rmsnorm(qh, qh, L->q_norm, hd, cfg->norm_eps); /* Qwen3: per head */
        if (cfg->clip_qkv > 0) clamp_abs(qh, hd, cfg->clip_qkv);
        rope_apply(&c->rope, qh, p);
    }
    for (int h = g0; h < g1; h++) {
        float *kh = k + (size_t)h * hd;
        if (cfg->qk_norm == QK_NORM_HEAD) rmsnorm(kh, kh, L->k_norm, hd, cfg->norm_eps);
        if (cfg->clip_qkv > 0) {
            clamp_abs(kh, hd, cfg->clip_qkv);
            clamp_abs(v + (size_t)h * hd, hd, cfg->clip_qkv);
        }
        rope_apply(&c->rope, kh, p);
    }
}

/* Row t's keys and values of kv heads [g0, g1) into its sequence's caches
 * at its slot: a row of K, a column of the transposed V (a line per value
 * dimension, each a memory latency away in decode: 16 us a token for
 * Qwen3's 512, done head by head inside the parallel loop for one row). */
static void cache_row(moe_ctx *c, int layer, int t, int g0, int g1) {
    const moe_config *cfg = &c->model->cfg;
    int hd = cfg->head_dim, kvw = cfg->n_kv_heads * hd, slots = c->layer_slots[layer];
    const seq_state *s = &c->seqs[c->row_seq[t]];
    size_t slot = (size_t)(c->row_pos[t] % slots), d0 = (size_t)g0 * hd, n = (size_t)(g1 - g0) * hd;
    kv_put(c, kv_at(c, s->k_cache, layer, slot * kvw + d0), c->k + (size_t)t * kvw + d0, (int)n, 1);
    kv_put(c, kv_at(c, s->v_cache, layer, d0 * slots + slot), c->v + (size_t)t * kvw + d0, (int)n, (size_t)slots);
}

/* Cache rows t0 .. t0+m-1 of the pass (q, k, v in c->q, c->k, c->v) in
 * their sequences' caches, at their positions, then softmax(q k^T * scale) v
 * for each of them,
 * causally, per (token, kv head): query heads g*group .. g*group+group-1
 * read kv head g (HF repeat_kv). V is cached transposed (a row per value
 * dimension, one value per slot), so the weighted sum of values is one
 * more tile: V^T rows as weights, the group's score rows as tokens; a key
 * span that wraps around a ring is two tiles. */
static void attend_chunk(moe_ctx *c, int layer, int t0, int m, int per_head) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nh = cfg->n_heads, nkv = cfg->n_kv_heads, hd = cfg->head_dim;
    int qw = nh * hd, kvw = nkv * hd, slots = c->layer_slots[layer];
    if (m > 1) /* every row before any attends: they read each other's keys */
        for (int t = t0; t < t0 + m; t++) cache_row(c, layer, t, 0, nkv);
    int group = nh / nkv;
    size_t es = kv_esize(c), ld = (size_t)c->n_ctx;
    const kernel_set *ks = kernels_get();
    moe_dtype cache_type = c->kv_f16 ? DT_F16 : DT_F32;
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads) \
    if (c->n_threads > 1 && attend_work(c, t0, m) >= ATTN_PAR_MIN_WORK)
    for (int tg = t0 * nkv; tg < (t0 + m) * nkv; tg++) {
        int t = tg / nkv, g = tg % nkv, p = c->row_pos[t], s0, n0, n1;
        if (per_head) prepare_heads(c, L, t, g, g + 1);
        if (m == 1) cache_row(c, layer, t, g, g + 1); /* only this head reads its own */
        const seq_state *s = &c->seqs[c->row_seq[t]];
        const void *kc = kv_at(c, s->k_cache, layer, 0), *vc = kv_at(c, s->v_cache, layer, 0);
        float *scores = c->att_scores + (size_t)thread_id() * (size_t)group * ld;
        float *part = c->att_part + (size_t)thread_id() * (size_t)group * hd;
        size_t h0 = (size_t)t * qw + (size_t)g * group * hd;
        const char *kg = (const char *)kc + (size_t)g * hd * es, *vt = (const char *)vc + (size_t)g * hd * slots * es;
        key_span(window_start(cfg, layer, p), p, slots, &s0, &n0, &n1);
        key_dots(ks, c->kv_f16, c->q + h0, (size_t)hd, group, kg, (size_t)kvw, hd, s0, n0, scores, ld);
        if (n1) key_dots(ks, c->kv_f16, c->q + h0, (size_t)hd, group, kg, (size_t)kvw, hd, 0, n1, scores + n0, ld);
        normalize_scores(scores, ld, group, n0 + n1, cfg->attn_scale, L->sinks ? L->sinks + g * group : NULL);
        kernel_tile(ks, cache_type, n0, vt + (size_t)s0 * es, (size_t)slots * es, hd, scores, ld * sizeof(float), NULL,
                    group, c->att + h0, (size_t)hd);
        if (n1) {
            kernel_tile(ks, cache_type, n1, vt, (size_t)slots * es, hd, scores + n0, ld * sizeof(float), NULL, group, part,
                        (size_t)hd);
            axpy(c->att + h0, 1.0f, part, group * hd);
        }
    }
}

/* Consecutive rows that attend together: all of them, except that a ring
 * (sliding-window layer) takes at most limit = slots - window + 1 new
 * tokens of one sequence before they attend, so none overwrites a key a
 * row of the chunk still needs. A sequence's rows are one run (forward.h). */
static int chunk_end(const moe_ctx *c, int t0, int n, int limit) {
    int t1 = t0, run_rows = 0;
    while (t1 < n && !(run_rows == limit && c->row_seq[t1] == c->row_seq[t1 - 1])) {
        run_rows = t1 > t0 && c->row_seq[t1] != c->row_seq[t1 - 1] ? 1 : run_rows + 1;
        t1++;
    }
    return t1;
}

static void attention_gqa(moe_ctx *c, int layer, const float *xn, int n, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nh = cfg->n_heads, nkv = cfg->n_kv_heads, hd = cfg->head_dim;
    int qw = nh * hd, kvw = nkv * hd;

    /* q/k/v = x W^T (+ b)    HF q_proj, k_proj, v_proj; x quantized once for all three */
    act_rows ax;
    act_init(&ax, xn, n, cfg->dim, c->act_scratch);
    mm_job qkv[3] = {{.y = c->q, .w = &L->q, .a = &ax, .m = n},
                     {.y = c->k, .w = &L->k, .a = &ax, .m = n},
                     {.y = c->v, .w = &L->v, .a = &ax, .m = n}};
    matmul_jobs(qkv, 3, c->n_threads); /* one parallel region for the three */
    if (cfg->out_gate) split_query_gate(c->q, c->gate, n, nh, hd);
    add_bias(c->q, L->q_bias, n, qw);
    add_bias(c->k, L->k_bias, n, kvw);
    add_bias(c->v, L->v_bias, n, kvw);

    /* one row (decode): each kv head group's norms and RoPE run in the
     * attention loop, on both threads (6 us a layer for Qwen3 on one) */
    int per_head = n == 1 && cfg->qk_norm != QK_NORM_FULL;
    if (!per_head) {
#pragma omp parallel for schedule(static) num_threads(c->n_threads) if (n >= PAR_MIN_ROWS && c->n_threads > 1) /* tokens are independent */
        for (int t = 0; t < n; t++) prepare_heads(c, L, t, 0, nkv);
    }

    int slots = c->layer_slots[layer];
    int limit = slots < c->n_ctx ? slots - cfg->window + 1 : n;
    for (int t0 = 0, t1; t0 < n; t0 = t1) {
        t1 = chunk_end(c, t0, n, limit);
        attend_chunk(c, layer, t0, t1 - t0, per_head);
    }

    if (cfg->out_gate) /* HF: attn_output * sigmoid(gate), before o_proj */
        for (size_t i = 0; i < (size_t)n * qw; i++) c->att[i] *= sigmoidf(c->gate[i]);
    act_rows aa;
    act_init(&aa, c->att, n, qw, c->act_scratch);
    observe_input(c, layer, MOE_INPUT_ATTN_OUT, -1, c->att, n, qw);
    matmul(out, &L->o, &aa, c->n_threads); /* HF o_proj */
    add_bias(out, L->o_bias, n, cfg->dim);
}

/* DeepSeek builds q_a_layernorm and kv_a_layernorm with the RMSNorm default
 * eps of 1e-6, not config.rms_norm_eps (modeling_deepseek.py). */
#define MLA_NORM_EPS 1e-6f

static void attention_mla(moe_ctx *c, int layer, const float *xn, int n, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int nh = cfg->n_heads, nope = cfg->nope_dim, rd = cfg->mla_rope_dim, lora = cfg->kv_lora, vd = cfg->v_dim;
    int qk = nope + rd, qw = nh * qk, cw = lora + rd; /* cw: cached floats per position */

    /* queries: q_b(RMSNorm(q_a x)) with q-LoRA, else q_proj x */
    act_rows ax;
    act_init(&ax, xn, n, cfg->dim, c->act_scratch);
    /* latent and shared rope key: kv_a_proj_with_mqa x = [c_kv | k_pe]; with
     * it, in one parallel region, q_a x (q-LoRA) or q_proj x */
    mm_job in[2] = {{.y = c->mla_kv_a, .w = &L->kv_a, .a = &ax, .m = n},
                    cfg->q_lora > 0 ? (mm_job){.y = c->mla_q_a, .w = &L->q_a, .a = &ax, .m = n}
                                    : (mm_job){.y = c->q, .w = &L->q, .a = &ax, .m = n}};
    matmul_jobs(in, 2, c->n_threads);
    if (cfg->q_lora > 0) {
        for (int t = 0; t < n; t++) {
            float *r = c->mla_q_a + (size_t)t * cfg->q_lora;
            rmsnorm(r, r, L->q_a_norm, cfg->q_lora, MLA_NORM_EPS);
        }
        act_rows aq;
        act_init(&aq, c->mla_q_a, n, cfg->q_lora, c->act_scratch);
        matmul(c->q, &L->q_b, &aq, c->n_threads);
    }
    for (int t = 0; t < n; t++) {
        int p = c->row_pos[t];
        void *cache = c->seqs[c->row_seq[t]].k_cache;
        float *ckv = c->mla_kv_a + (size_t)t * cw, *slot = c->mla_tmp; /* built in f32, then stored */
        rmsnorm(slot, ckv, L->kv_a_norm, lora, MLA_NORM_EPS); /* kv_a_layernorm(c_kv) */
        act_round_row((act_type)cfg->mla_latent_act, slot, lora); /* as a quantized kv_b's matmul sees it */
        memcpy(slot + lora, ckv + lora, sizeof(float) * (size_t)rd);
        rope_apply(&c->rope, slot + lora, p);
        kv_put(c, kv_at(c, cache, layer, (size_t)p * cw), slot, cw, 1);
        for (int h = 0; h < nh; h++) rope_apply(&c->rope, c->q + (size_t)t * qw + h * qk + nope, p);
    }

    /* per (token, head): the absorbed query [k_b[h] q_nope | q_pe], whose dot
     * product with a cached [latent | k_pe] equals HF's q . k; the softmax-
     * weighted sum of latents; then v_b[h] expands it to the head's value */
    const kernel_set *ks = kernels_get();
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
    for (int th = 0; th < n * nh; th++) {
        int t = th / nh, h = th % nh, p = c->row_pos[t];
        const void *cache = kv_at(c, c->seqs[c->row_seq[t]].k_cache, layer, 0);
        const float *qh = c->q + (size_t)t * qw + h * qk;
        float *scores = c->att_scores + (size_t)thread_id() * c->n_ctx;
        float *mq = c->mla_tmp + (size_t)thread_id() * (cw + lora), *lat = mq + cw;
        wmat kb = wmat_at(L->k_b, h), vb = wmat_at(L->v_b, h);
        matvec(ks, mq, &kb, qh);
        memcpy(mq + lora, qh + nope, sizeof(float) * (size_t)rd);
        int start = window_start(cfg, layer, p), nk = p - start + 1; /* no ring: slot = position */
        key_dots(ks, c->kv_f16, mq, 0, 1, cache, (size_t)cw, cw, start, nk, scores, (size_t)c->n_ctx);
        normalize_scores(scores, (size_t)c->n_ctx, 1, nk, cfg->attn_scale, NULL);
        weighted_rows(ks, c->kv_f16, scores, (size_t)c->n_ctx, 1, cache, (size_t)cw, lora, start, nk, lat, 0);
        matvec(ks, c->att + (size_t)t * nh * vd + h * vd, &vb, lat);
    }

    act_rows aa;
    act_init(&aa, c->att, n, nh * vd, c->act_scratch);
    observe_input(c, layer, MOE_INPUT_ATTN_OUT, -1, c->att, n, nh * vd);
    matmul(out, &L->o, &aa, c->n_threads);
}

void attention_forward(moe_ctx *c, int layer, const float *xn, int n, float *out) {
    observe_input(c, layer, MOE_INPUT_ATTN, -1, xn, n, c->model->cfg.dim);
    if (c->model->cfg.attn_type == ATTN_MLA)
        attention_mla(c, layer, xn, n, out);
    else
        attention_gqa(c, layer, xn, n, out);
}
