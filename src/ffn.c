/* ffn.c - the feed-forward block of a layer: a dense SwiGLU MLP, or a
 * mixture of experts.
 *
 * MoE for a batch of n tokens:
 *   1. router logits for every token (one matmul), then route() per token;
 *   2. the (token, slot) pairs are grouped by expert, so each chosen expert's
 *      weights are read once per batch, not once per token;
 *   3. each expert runs SwiGLU on its tokens' rows, read in place through an
 *      index list from the batch input (quantized once for all experts), in
 *      chunks that bound the scratch; its outputs are added into their tokens
 *      with the routing weights;
 *   4. shared experts (DeepSeek, Qwen2-MoE) run on every token, Qwen2-MoE's
 *      scaled by sigmoid(shared_expert_gate . x). */
#include <string.h>

#include "forward.h"
#include "kernels.h"
#include "ops.h"
#include "router.h"

/* SwiGLU over rows of ax: down(silu(gate x) * up x). Rows are idx[0..m) of
 * ax (or 0..m-1 when idx is NULL). Without row_weight, out row i = result;
 * with it, out row idx[i] += row_weight[i] * result. Chunked so the hidden
 * activations stay within the scratch. */
static void swiglu_rows(moe_ctx *c, const wmat *gate, const wmat *up, const wmat *down, act_rows *ax,
                        const int *idx, int m, float *out, const float *row_weight) {
    int dim = c->model->cfg.dim, ff = gate->rows;
    for (int i0 = 0; i0 < m; i0 += c->ffn_chunk) {
        int cm = m - i0 < c->ffn_chunk ? m - i0 : c->ffn_chunk;
        const int *ci = (idx ? idx : c->seq_idx) + i0; /* no idx: rows i0.. in order */
        matmul_idx(c->ffn_h1, gate, ax, ci, cm);
        matmul_idx(c->ffn_h2, up, ax, ci, cm);
        for (int i = 0; i < cm; i++) swiglu(c->ffn_h1 + (size_t)i * ff, c->ffn_h2 + (size_t)i * ff, ff);
        act_rows ah;
        act_init(&ah, c->ffn_h1, cm, ff, c->act_hidden);
        if (!row_weight) {
            matmul(out + (size_t)i0 * dim, down, &ah);
            continue;
        }
        matmul(c->ffn_y, down, &ah);
        for (int i = 0; i < cm; i++) axpy(out + (size_t)ci[i] * dim, row_weight[i0 + i], c->ffn_y + (size_t)i * dim, dim);
    }
}

/* Route every token; fills sel_ids/sel_w (n, k) and reports to the hook. */
static void route_batch(moe_ctx *c, int layer, act_rows *ax, int n, int pos0, const int32_t *tokens) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    const route_config *rc = &c->route; /* the model's, with the context's k */
    int E = rc->n_experts, k = rc->k;
    const unsigned char *off = c->expert_off ? c->expert_off + (size_t)layer * E : NULL;
    matmul(c->router_logits, &L->router, ax); /* HF mlp.gate(x) */
    for (int t = 0; t < n; t++) {
        route_io io = {c->router_logits + (size_t)t * E, L->router_bias, off, c->route_scores, c->route_choice,
                       rc->n_groups > 1 ? c->route_groups : NULL, c->sel_ids + (size_t)t * k, c->sel_w + (size_t)t * k};
        route(rc, &io);
        if (c->on_route) {
            float shared = cfg->shared_ff <= 0 ? 0.0f : cfg->shared_gate ? sigmoidf(c->ffn_gate_logit[t]) : 1.0f;
            route_event ev = {pos0 + t, layer, tokens ? tokens[t] : -1, k, E, rc->n_groups, io.ids, io.weights,
                              io.logits, io.scores, io.choice, io.group_kept, shared};
            c->on_route(c->on_route_user, &ev);
        }
    }
}

static void moe_forward(moe_ctx *c, int layer, act_rows *ax, int n, int pos0, const int32_t *tokens, float *out) {
    const moe_config *cfg = &c->model->cfg;
    const layer_weights *L = &c->model->layers[layer];
    int E = c->route.n_experts, k = c->route.k, dim = cfg->dim;
    if (cfg->shared_gate) /* Qwen2-MoE: sigmoid(shared_expert_gate(x)), one logit per token */
        matmul(c->ffn_gate_logit, &L->shexp_gate, ax);
    route_batch(c, layer, ax, n, pos0, tokens);

    /* group (token, slot) pairs by expert: a counting sort keeps token order */
    memset(c->exp_count, 0, sizeof(int) * (size_t)(E + 1));
    for (int i = 0; i < n * k; i++) c->exp_count[c->sel_ids[i]]++;
    c->exp_start[0] = 0;
    for (int e = 0; e < E; e++) c->exp_start[e + 1] = c->exp_start[e] + c->exp_count[e];
    for (int e = 0; e < E; e++) c->exp_count[e] = c->exp_start[e];
    for (int i = 0; i < n * k; i++) c->exp_rows[c->exp_count[c->sel_ids[i]]++] = i;

    memset(out, 0, sizeof(float) * (size_t)n * dim);
    for (int e = 0; e < E; e++) {
        int first = c->exp_start[e], count = c->exp_start[e + 1] - first;
        if (!count) continue;
        /* this expert's rows: pair index -> token index and routing weight */
        int *tok = c->exp_rows + first;
        for (int i = 0; i < count; i++) {
            c->ffn_pair_w[i] = c->sel_w[tok[i]];
            tok[i] /= k;
        }
        wmat gate = wmat_at(L->gate_exps, e), up = wmat_at(L->up_exps, e), down = wmat_at(L->down_exps, e);
        swiglu_rows(c, &gate, &up, &down, ax, tok, count, out, c->ffn_pair_w);
    }

    if (cfg->shared_ff > 0) {
        /* shared expert over all tokens, into its own buffer, then added */
        float *sh = c->ffn_shared;
        swiglu_rows(c, &L->gate_sh, &L->up_sh, &L->down_sh, ax, NULL, n, sh, NULL);
        for (int t = 0; t < n; t++) {
            float g = cfg->shared_gate ? sigmoidf(c->ffn_gate_logit[t]) : 1.0f;
            axpy(out + (size_t)t * dim, g, sh + (size_t)t * dim, dim);
        }
    }
}

void ffn_forward(moe_ctx *c, int layer, const float *xn, int n, int pos0, const int32_t *tokens, float *out) {
    const layer_weights *L = &c->model->layers[layer];
    act_rows ax; /* the block input, quantized at most once per type for every matmul below */
    act_init(&ax, xn, n, c->model->cfg.dim, c->act_scratch);
    if (L->is_moe)
        moe_forward(c, layer, &ax, n, pos0, tokens, out);
    else /* HF MLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) */
        swiglu_rows(c, &L->ffn_gate, &L->ffn_up, &L->ffn_down, &ax, NULL, n, out, NULL);
}
