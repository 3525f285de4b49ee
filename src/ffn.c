/* ffn.c - the feed-forward block of a layer: a dense SwiGLU MLP, or a
 * mixture of experts.
 *
 * MoE for the n rows of a pass (the tokens of every sequence in it):
 *   1. router logits for every token (one matmul), then route() per token;
 *   2. the (token, slot) pairs are grouped by expert, so each chosen expert's
 *      weights are read once per pass, not once per token or per sequence;
 *   3. each expert runs SwiGLU on its tokens' rows, read in place through an
 *      index list from the batch input (quantized once for all experts);
 *      the experts (and shared experts) queue up as pieces of a group, and a
 *      group runs in two parallel regions, gate/up (fused with SiLU, or for
 *      a decode-sized piece as two jobs and SiLU after), then down,
 *      balanced over every row of every piece: the threads never wait at a
 *      barrier per expert;
 *   4. each result row is added into its token with its routing weight;
 *      shared experts (DeepSeek, GLM, Qwen2-MoE, the Qwen hybrids) cover
 *      every token, the Qwen ones scaled by sigmoid(shared_expert_gate . x).
 * gpt-oss's experts have biases and a clamped SwiGLU (moe.act swiglu_oai):
 * their gate and up run as separate products, then the activation; the
 * down bias joins the row before its routing weight (HF GptOssExperts). */
#include <string.h>

#include "forward.h"
#include "matmul.h"
#include "ops.h"
#include "router.h"
#include "threads.h"

/* Values below which adding results into the output, or the activation of
 * the hidden rows, stays on one thread. Decode's 8 experts (8 x 2048 and
 * 8 x 768 values) are above: their rows were written by both threads and
 * each thread reads half, 9 and 14 us a layer on one thread. */
#define SCATTER_PAR_MIN (1u << 13)
#define GLU_PAR_MIN (1u << 12)
/* A piece of at most this many rows is bound by reading its weights: its
 * gate and up then run as two jobs, each thread streaming whole matrices,
 * and SiLU(gate) * up follows over all rows at once. Fused (one job that
 * alternates gate and up row blocks) they read 4-8 % slower from memory
 * (docs/BENCHMARKS.md, 2026-12-07, third session); fused stays for many
 * rows, where the product is finished while both are in cache. */
#define GLU_APART_MAX_ROWS 8

/* One SwiGLU run: an expert, the shared expert or a dense MLP over some
 * token rows of the block input; its result row r is added, times
 * weight[r] (NULL: 1), into out row rows[r]. */
typedef struct {
    wmat gate, up, down;
    const int *rows;
    const float *weight;
    int n;
    int expert; /* the routed expert, -1 for a dense or shared FFN (the input hook's) */
    int oai;    /* swiglu_oai activation, with these biases (each NULL or one row) */
    const float *gate_bias, *up_bias, *down_bias;
} ffn_piece;

/* Pieces waiting to run together: up to ffn_chunk rows in all, one hidden
 * width, at most MM_MAX_JOBS of them. */
typedef struct {
    ffn_piece p[MM_MAX_JOBS];
    int n, rows, jobs; /* pieces, their rows, their gate/up jobs (at most MM_MAX_JOBS) */
    int layer;
} ffn_group;

/* Gate and up as two jobs: swiglu_oai's (its biases come first) and a
 * decode-sized piece's. */
static int glu_apart(const ffn_piece *p) { return p->oai || p->n <= GLU_APART_MAX_ROWS; }

/* The matmul jobs of a piece's gate and up. */
static int piece_jobs(const ffn_piece *p) { return glu_apart(p) ? 2 : 1; }

/* The activation of the stacked hidden rows of the pieces whose gate and
 * up ran apart (the fused ones have it already): SiLU(gate) * up, or the
 * clamped swiglu_oai with the piece's biases. */
static void glu_rows(moe_ctx *c, const ffn_group *g, int rows, int ff) {
    const moe_config *cfg = &c->model->cfg;
    int apart = 0;
    for (int i = 0; i < g->n; i++) apart |= glu_apart(&g->p[i]);
    if (!apart) return;
#pragma omp parallel for schedule(static) num_threads(c->n_threads) \
    if ((size_t)rows * (size_t)ff >= GLU_PAR_MIN && c->n_threads > 1)
    for (int r = 0; r < rows; r++) {
        int i = 0, o = 0;
        while (r >= o + g->p[i].n) o += g->p[i++].n;
        float *h1 = c->ffn_h1 + (size_t)r * ff, *h2 = c->ffn_h2 + (size_t)r * ff;
        if (g->p[i].oai)
            swiglu_oai(h1, h2, g->p[i].gate_bias, g->p[i].up_bias, ff, cfg->act_limit, cfg->act_alpha);
        else if (glu_apart(&g->p[i]))
            swiglu(h1, h2, ff);
    }
}

/* down(silu(gate x) * up x) for every piece of the group: two parallel
 * regions in all (gate/up, then down), the pieces' hidden rows stacked in
 * the scratch, then each result row added into its token's output. */
static void group_run(moe_ctx *c, ffn_group *g, act_rows *ax, float *out) {
    int dim = c->model->cfg.dim, ff = g->p[0].gate.rows, off = 0, nj = 0;
    mm_job job[MM_MAX_JOBS] = {{0}};
    for (int i = 0; i < g->n; off += g->p[i].n, i++) {
        const ffn_piece *p = &g->p[i];
        if (p->expert >= 0) { /* the work counters (moe_ctx_stats) */
            c->stats.expert_reads++;
            c->stats.expert_rows += (uint64_t)p->n;
        }
        float *h1 = c->ffn_h1 + (size_t)off * ff, *h2 = c->ffn_h2 + (size_t)off * ff;
        if (glu_apart(p)) {
            job[nj++] = (mm_job){.y = h1, .w = &p->gate, .a = ax, .idx = p->rows, .m = p->n};
            job[nj++] = (mm_job){.y = h2, .w = &p->up, .a = ax, .idx = p->rows, .m = p->n};
        } else {
            job[nj++] = (mm_job){.y = h1, .w = &p->gate, .a = ax, .idx = p->rows, .m = p->n, .up = &p->up, .y_up = h2};
        }
    }
    matmul_jobs(job, nj, c->n_threads);
    glu_rows(c, g, off, ff);
    act_rows ah; /* the stacked hidden rows, quantized once for all downs */
    act_init(&ah, c->ffn_h1, off, ff, c->act_hidden);
    off = 0;
    for (int i = 0; i < g->n; off += g->p[i].n, i++) {
        observe_input(c, g->layer, MOE_INPUT_FFN_DOWN, g->p[i].expert, c->ffn_h1 + (size_t)off * ff, g->p[i].n, ff);
        job[i] = (mm_job){.y = c->ffn_y + (size_t)off * dim, .w = &g->p[i].down, .a = &ah, .idx = c->seq_idx + off,
                          .m = g->p[i].n};
    }
    matmul_jobs(job, g->n, c->n_threads);
    /* rows of different pieces add into the same token: each thread takes
     * a slice of the columns of every row, so no two write the same value */
#pragma omp parallel num_threads(c->n_threads) if ((size_t)off * (size_t)dim >= SCATTER_PAR_MIN && c->n_threads > 1)
    {
        int d0 = (int)((int64_t)dim * thread_id() / threads_in_team());
        int d1 = (int)((int64_t)dim * (thread_id() + 1) / threads_in_team());
        int o = 0;
        for (int i = 0; i < g->n; o += g->p[i].n, i++)
            for (int r = 0; r < g->p[i].n; r++) {
                float *y = c->ffn_y + (size_t)(o + r) * dim + d0;
                if (g->p[i].down_bias) axpy(y, 1.0f, g->p[i].down_bias + d0, d1 - d0);
                axpy(out + (size_t)g->p[i].rows[r] * dim + d0, g->p[i].weight ? g->p[i].weight[r] : 1.0f, y, d1 - d0);
            }
    }
    g->n = g->rows = g->jobs = 0;
}

/* Queue a piece, running the group first when it is full; a piece of more
 * than ffn_chunk rows is split into chunks. */
static void group_add(moe_ctx *c, ffn_group *g, ffn_piece piece, act_rows *ax, float *out) {
    while (piece.n > 0) {
        int part = piece.n < c->ffn_chunk ? piece.n : c->ffn_chunk;
        ffn_piece first = piece;
        first.n = part;
        if (g->n && (g->jobs + piece_jobs(&first) > MM_MAX_JOBS || g->rows + part > c->ffn_chunk ||
                     piece.gate.rows != g->p[0].gate.rows || piece.oai != g->p[0].oai))
            group_run(c, g, ax, out);
        g->p[g->n++] = first;
        g->rows += part;
        g->jobs += piece_jobs(&first);
        piece.rows += part;
        if (piece.weight) piece.weight += part;
        piece.n -= part;
    }
}

/* Route every row; fills sel_ids/sel_w (n, k) and reports to the hook. */
static void route_batch(moe_ctx *c, int layer, act_rows *ax, int n) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    const route_config *rc = &c->route; /* the model's, with the context's k */
    int E = rc->n_experts, k = rc->k;
    const unsigned char *off = c->expert_off ? c->expert_off + (size_t)layer * E : NULL;
    matmul(c->router_logits, &L->router, ax, c->n_threads); /* HF mlp.gate(x) */
    if (L->router_logit_bias) /* gpt-oss: the router is a Linear with bias */
        for (int t = 0; t < n; t++) axpy(c->router_logits + (size_t)t * E, 1.0f, L->router_logit_bias, E);
    for (int t = 0; t < n; t++) {
        route_io io = {.logits = c->router_logits + (size_t)t * E,
                       .bias = L->router_bias,
                       .off = off,
                       .scores = c->route_scores,
                       .choice = c->route_choice,
                       .group_kept = rc->n_groups > 1 ? c->route_groups : NULL,
                       .ids = c->sel_ids + (size_t)t * k,
                       .weights = c->sel_w + (size_t)t * k,
                       .mask = c->route_mask,
                       .group_scores = c->route_group_scores};
        route(rc, &io);
        if (c->on_route) {
            float shared = cfg->shared_ff <= 0 ? 0.0f : cfg->shared_gate ? sigmoidf(c->ffn_gate_logit[t]) : 1.0f;
            route_event ev = {.pos = c->row_pos[t],
                              .layer = layer,
                              .token = c->row_tok[t],
                              .k = k,
                              .n_experts = E,
                              .n_groups = rc->n_groups,
                              .ids = io.ids,
                              .weights = io.weights,
                              .logits = io.logits,
                              .scores = io.scores,
                              .choice = io.choice,
                              .group_kept = io.group_kept,
                              .shared_weight = shared,
                              .seq = c->row_seq[t]};
            c->on_route(c->on_route_user, &ev);
        }
    }
}

static void moe_forward(moe_ctx *c, int layer, act_rows *ax, int n, float *out, ffn_group *g) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int E = c->route.n_experts, k = c->route.k;
    double t0 = phase_start(c);
    if (cfg->shared_gate) /* Qwen2-MoE, Qwen3.5, Qwen3-Next: sigmoid(shared_expert_gate(x)), one logit per token */
        matmul(c->ffn_gate_logit, &L->shexp_gate, ax, c->n_threads);
    route_batch(c, layer, ax, n);

    /* group (token, slot) pairs by expert: a counting sort keeps token order */
    memset(c->exp_count, 0, sizeof(int) * (size_t)(E + 1));
    for (int i = 0; i < n * k; i++) c->exp_count[c->sel_ids[i]]++;
    c->exp_start[0] = 0;
    for (int e = 0; e < E; e++) c->exp_start[e + 1] = c->exp_start[e] + c->exp_count[e];
    for (int e = 0; e < E; e++) c->exp_count[e] = c->exp_start[e];
    for (int i = 0; i < n * k; i++) c->exp_rows[c->exp_count[c->sel_ids[i]]++] = i;
    for (int i = 0; i < n * k; i++) { /* pair index -> its routing weight and token */
        c->ffn_pair_w[i] = c->sel_w[c->exp_rows[i]];
        c->exp_rows[i] /= k;
    }
    phase_end(c, MOE_PHASE_ROUTING, t0);

    for (int e = 0; e < E; e++) {
        int first = c->exp_start[e], count = c->exp_start[e + 1] - first;
        if (!count) continue;
        ffn_piece p = {.gate = wmat_at(L->gate_exps, e), .up = wmat_at(L->up_exps, e),
                       .down = wmat_at(L->down_exps, e), .rows = c->exp_rows + first,
                       .weight = c->ffn_pair_w + first, .n = count, .expert = e, .oai = cfg->act == ACT_SWIGLU_OAI,
                       .gate_bias = L->gate_exps_bias ? L->gate_exps_bias + (size_t)e * L->exps_bias_stride : NULL,
                       .up_bias = L->up_exps_bias ? L->up_exps_bias + (size_t)e * L->exps_bias_stride : NULL,
                       .down_bias = L->down_exps_bias ? L->down_exps_bias + (size_t)e * cfg->dim : NULL};
        group_add(c, g, p, ax, out);
    }
    if (cfg->shared_ff > 0) { /* shared expert on every token, times its gate where it has one */
        float *gate = NULL;
        if (cfg->shared_gate) {
            gate = c->ffn_gate_logit;
            for (int t = 0; t < n; t++) gate[t] = sigmoidf(gate[t]);
        }
        group_add(c, g, (ffn_piece){.gate = L->gate_sh, .up = L->up_sh, .down = L->down_sh, .rows = c->seq_idx,
                                    .weight = gate, .n = n, .expert = -1}, ax, out);
    }
}

void ffn_forward(moe_ctx *c, int layer, const float *xn, int n, float *out) {
    const layer_weights *L = &c->model->layers[layer];
    double t0 = phase_start(c), routed0 = c->stats.phase_seconds[MOE_PHASE_ROUTING]; /* experts: all but routing */
    act_rows ax; /* the block input, quantized at most once per type for every matmul below */
    act_init(&ax, xn, n, c->model->cfg.dim, c->act_scratch);
    observe_input(c, layer, MOE_INPUT_FFN, -1, xn, n, c->model->cfg.dim);
    ffn_group g = {.n = 0, .layer = layer};
    memset(out, 0, sizeof(float) * (size_t)n * c->model->cfg.dim);
    if (L->is_moe)
        moe_forward(c, layer, &ax, n, out, &g);
    else /* HF MLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) */
        group_add(c, &g, (ffn_piece){.gate = L->ffn_gate, .up = L->ffn_up, .down = L->ffn_down, .rows = c->seq_idx,
                                      .n = n, .expert = -1}, &ax, out);
    if (g.n) group_run(c, &g, &ax, out);
    phase_end(c, MOE_PHASE_EXPERTS, t0 + (c->stats.phase_seconds[MOE_PHASE_ROUTING] - routed0));
}
