/* forward.c - the transformer forward pass.
 *
 * Per layer (HF DecoderLayer):
 *   x = x + s * attention(RMSNorm(x))      s = residual_scale (Granite), else 1
 *   x = x + s * ffn(RMSNorm(x))            ffn: dense SwiGLU or mixture of experts
 * then logits = output(RMSNorm(x)) * logit_scale. Tokens go through in
 * passes of up to n_batch rows, from one or several sequences (forward.h);
 * the KV cache makes later passes see earlier ones. The context these passes
 * run in (its KV caches and scratch) is made in ctx.c. */
#include "forward.h"

#include <stdio.h>
#include <string.h>

#include "matmul.h"
#include "ops.h"
#include "threads.h"
#include "util.h"

/* rows are independent: a prompt batch spreads them over nt threads */
static void norm_rows(float *out, const float *x, const float *w, int n, int dim, float eps, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= PAR_MIN_ROWS && nt > 1)
    for (int t = 0; t < n; t++) rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, w, dim, eps);
}

static void add_rows(float *x, float s, const float *y, int n, int dim, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= PAR_MIN_ROWS && nt > 1)
    for (int t = 0; t < n; t++) axpy(x + (size_t)t * dim, s, y + (size_t)t * dim, dim);
}

static void scale_rows(float *x, float s, size_t count) {
    if (s != 1.0f)
        for (size_t i = 0; i < count; i++) x[i] *= s;
}

/* final norm and lm_head (HF norm, lm_head): every row of a run that asks
 * for them, into its buffer; the last row of every other run gathered into
 * one product, so a decode step reads the output matrix once. Each run's
 * last row is kept as its sequence's logits. */
static void output_logits(moe_ctx *c) {
    const moe_model *m = c->model;
    const moe_config *cfg = &m->cfg;
    int dim = cfg->dim, V = cfg->vocab_size, gathered = 0;
    act_rows ah;
    for (int i = 0; i < c->n_runs; i++) { /* first: their rows of xn are still free to use */
        const seq_run *r = &c->runs[i];
        if (!r->logits) continue;
        float *xn = c->xn + (size_t)r->row0 * dim;
        norm_rows(xn, c->x + (size_t)r->row0 * dim, m->output_norm, r->n, dim, cfg->norm_eps, c->n_threads);
        act_init(&ah, xn, r->n, dim, c->act_scratch);
        matmul(r->logits, &m->output, &ah, c->n_threads);
        scale_rows(r->logits, cfg->logit_scale, (size_t)r->n * V);
        memcpy(c->seqs[r->seq].logits, r->logits + (size_t)(r->n - 1) * V, sizeof(float) * (size_t)V);
    }
    for (int i = 0; i < c->n_runs; i++) {
        const seq_run *r = &c->runs[i];
        if (r->logits) continue;
        /* row gathered <= r->row0 + r->n - 1: rows move down only, each read before it is overwritten */
        rmsnorm(c->xn + (size_t)gathered * dim, c->x + (size_t)(r->row0 + r->n - 1) * dim, m->output_norm, dim,
                cfg->norm_eps);
        c->logit_rows[gathered++] = i;
    }
    if (!gathered) return;
    act_init(&ah, c->xn, gathered, dim, c->act_scratch);
    /* one row (a decode step of one sequence) straight into its logits: the
     * copy of a 150k vocabulary cost 90-120 us a token, 0.7 % of decode */
    float *y = gathered == 1 ? c->seqs[c->runs[c->logit_rows[0]].seq].logits : c->logits_rows;
    matmul(y, &m->output, &ah, c->n_threads);
    scale_rows(y, cfg->logit_scale, (size_t)gathered * V);
    for (int j = 0; y == c->logits_rows && j < gathered; j++) /* several rows: each to its sequence */
        memcpy(c->seqs[c->runs[c->logit_rows[j]].seq].logits, c->logits_rows + (size_t)j * V, sizeof(float) * (size_t)V);
}

/* A NaN or Inf in the residual stream stays there (later layers only add to
 * it), so checking each layer's output finds the layer it came from; the
 * check reads n*dim floats, nothing beside the layer's matrices. */
#define SCAN_PAR_MIN ((uint64_t)1 << 16) /* values below which the scan stays on one thread */
static int nonfinite_row(const float *x, int n, int width, int nt) {
    uint64_t total = (uint64_t)n * (uint64_t)width;
    int64_t first = -1;
    if (total < SCAN_PAR_MIN || nt < 2) { /* a layer's rows: no team to wake */
        first = dtype_find_nonfinite(DT_F32, x, total);
    } else { /* the logits, 600 KB a row for 150k tokens: each thread scans about what it wrote */
#pragma omp parallel num_threads(nt)
        {
            uint64_t lo = total * (uint64_t)thread_id() / (uint64_t)threads_in_team();
            uint64_t hi = total * (uint64_t)(thread_id() + 1) / (uint64_t)threads_in_team();
            int64_t at = dtype_find_nonfinite(DT_F32, x + lo, hi - lo);
            if (at >= 0)
#pragma omp critical
                if (first < 0 || (int64_t)lo + at < first) first = (int64_t)lo + at;
        }
    }
    return first < 0 ? -1 : (int)(first / width);
}

static int fail_nonfinite(const moe_ctx *c, const char *what, int seq, int pos, moe_err *err) {
    char who[32] = "";
    if (c->n_seq > 1) snprintf(who, sizeof who, " of sequence %d", seq);
    return moe_fail(err, "%s is not finite (NaN or Inf) at position %d%s: a NaN or Inf weight, or an overflow", what,
                    pos, who);
}

/* One pass over the n rows of c->runs (row tokens, positions, sequences in c->row_*).
 * Fails, with the runs' positions not advanced, when values stop being finite. */
static int forward_pass(moe_ctx *c, int n, moe_err *err) {
    const moe_model *m = c->model;
    const moe_config *cfg = &m->cfg;
    int dim = cfg->dim;
    double t_pass = phase_start(c), timed0 = 0.0; /* other = the pass minus its timed phases */
    for (int p = 0; p < MOE_PHASE_OTHER; p++) timed0 += c->stats.phase_seconds[p];

    for (int t = 0; t < n; t++) wmat_row_to_f32(&m->tok_embd, c->row_tok[t], c->x + (size_t)t * dim); /* embed_tokens */
    scale_rows(c->x, cfg->embd_scale, (size_t)n * dim);

    for (int l = 0; l < cfg->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        norm_rows(c->xn, c->x, L->attn_norm, n, dim, cfg->norm_eps, c->n_threads); /* input_layernorm */
        if (cfg->ssm_layer[l]) { /* HF linear_attn: Gated DeltaNet (times its own phases) */
            deltanet_forward(c, l, c->xn, n, c->branch);
        } else {
            double t0 = phase_start(c);
            attention_forward(c, l, c->xn, n, c->branch);
            phase_end(c, MOE_PHASE_ATTENTION, t0);
        }
        add_rows(c->x, cfg->residual_scale, c->branch, n, dim, c->n_threads);
        norm_rows(c->xn, c->x, L->ffn_norm, n, dim, cfg->norm_eps, c->n_threads); /* post_attention_layernorm */
        ffn_forward(c, l, c->xn, n, c->branch);
        add_rows(c->x, cfg->residual_scale, c->branch, n, dim, c->n_threads);
        int bad = nonfinite_row(c->x, n, dim, c->n_threads);
        if (bad >= 0) {
            char what[48];
            snprintf(what, sizeof what, "blk.%d: the layer's output", l);
            return fail_nonfinite(c, what, c->row_seq[bad], c->row_pos[bad], err);
        }
    }
    double t0 = phase_start(c);
    output_logits(c);
    phase_end(c, MOE_PHASE_OUTPUT, t0);
    for (int i = 0; i < c->n_runs; i++) { /* the rows a run asked for, else its kept last row */
        const seq_run *r = &c->runs[i];
        const float *rows = r->logits ? r->logits : c->seqs[r->seq].logits;
        int n_rows = r->logits ? r->n : 1, first = r->logits ? r->pos0 : r->pos0 + r->n - 1;
        int bad = nonfinite_row(rows, n_rows, cfg->vocab_size, c->n_threads);
        if (bad >= 0) return fail_nonfinite(c, "output: the logits", r->seq, first + bad, err);
    }
    for (int i = 0; i < c->n_runs; i++) c->seqs[c->runs[i].seq].pos += c->runs[i].n;
    if (c->time_phases) {
        double timed = 0.0;
        for (int p = 0; p < MOE_PHASE_OTHER; p++) timed += c->stats.phase_seconds[p];
        c->stats.phase_seconds[MOE_PHASE_OTHER] += phase_start(c) - t_pass - (timed - timed0);
    }
    c->stats.passes++;
    c->stats.rows += (uint64_t)n;
    return 0;
}

/* Every item checked before anything runs, so a refused call changes nothing. */
static int check_items(const moe_ctx *c, const moe_batch_item *items, int n_items, moe_err *err) {
    const moe_config *cfg = &c->model->cfg;
    if (n_items <= 0 || !items) return moe_fail(err, "no tokens to evaluate");
    for (int i = 0; i < n_items; i++) {
        const moe_batch_item *it = &items[i];
        if (it->seq < 0 || it->seq >= c->n_seq)
            return moe_fail(err, "sequence %d: the context holds sequences 0..%d", it->seq, c->n_seq - 1);
        for (int j = 0; j < i; j++)
            if (items[j].seq == it->seq)
                return moe_fail(err, "sequence %d appears twice in one batch (items %d and %d)", it->seq, j, i);
        char who[32] = "";
        if (c->n_seq > 1) snprintf(who, sizeof who, "sequence %d: ", it->seq);
        if (it->n <= 0 || !it->tokens) return moe_fail(err, "%sno tokens to evaluate", who);
        int pos = c->seqs[it->seq].pos;
        if (it->n > c->n_ctx - pos)
            return moe_fail(err, "%scontext full: %d positions used + %d new tokens exceed the context of %d", who,
                            pos, it->n, c->n_ctx);
        for (int t = 0; t < it->n; t++)
            if (it->tokens[t] < 0 || it->tokens[t] >= cfg->vocab_size)
                return moe_fail(err, "%stoken id %d at index %d is outside the vocabulary (0..%d)", who,
                                it->tokens[t], t, cfg->vocab_size - 1);
    }
    return 0;
}

/* The items' tokens go through in passes of up to n_batch rows, in item
 * order; an item longer than what is left of a pass continues in the next. */
int moe_eval_batch(moe_ctx *c, const moe_batch_item *items, int n_items, moe_err *err) {
    if (!c) return moe_fail(err, "no context");
    if (check_items(c, items, n_items, err)) return -1;
    int V = c->model->cfg.vocab_size, item = 0, done = 0; /* tokens of items[item] already evaluated */
    while (item < n_items) {
        int rows = 0;
        c->n_runs = 0;
        while (item < n_items && rows < c->n_batch) {
            const moe_batch_item *it = &items[item];
            int take = it->n - done < c->n_batch - rows ? it->n - done : c->n_batch - rows;
            seq_run *r = &c->runs[c->n_runs++];
            *r = (seq_run){.seq = it->seq, .row0 = rows, .n = take, .pos0 = c->seqs[it->seq].pos,
                           .logits = it->logits ? it->logits + (size_t)done * V : NULL};
            for (int j = 0; j < take; j++) {
                c->row_seq[rows + j] = it->seq;
                c->row_pos[rows + j] = r->pos0 + j;
                c->row_tok[rows + j] = it->tokens[done + j];
            }
            rows += take;
            done += take;
            if (done == it->n) item++, done = 0;
        }
        if (forward_pass(c, rows, err)) {
            /* their recurrent state may hold NaN now; the KV cache past pos is never read */
            for (int i = 0; i < c->n_runs; i++) moe_seq_reset(c, c->runs[i].seq);
            return -1;
        }
    }
    return 0;
}

int moe_eval(moe_ctx *c, const int32_t *tokens, int n, float *logits, moe_err *err) {
    moe_batch_item one = {.seq = 0, .tokens = tokens, .n = n, .logits = logits};
    return moe_eval_batch(c, &one, 1, err);
}
