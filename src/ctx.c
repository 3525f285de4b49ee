/* ctx.c - a context: its sequences' KV caches and recurrent states, the RoPE
 * table and one scratch arena for the forward pass (forward.h documents the
 * layout). Every size is computed and checked before anything is allocated,
 * so a context too large for size_t or for this machine is refused with one
 * line; nothing is allocated afterwards, while tokens are evaluated. Also the
 * context's small queries and settings of moe.h (positions, logits, hooks,
 * disabled experts). */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "act_rows.h"
#include "delta_rule.h"
#include "threads.h"
#include "util.h"

#define DEFAULT_CTX 4096
#define DEFAULT_BATCH 512
#define FFN_SCRATCH_BYTES (16u << 20) /* bounds the gathered-rows buffers of the FFN */
#define MAX_THREADS 1024               /* n_threads at most: per-thread scratch is sized by it */
#define MAX_SEQ 4096                   /* sequences per context: a bound that keeps sizes small */

moe_ctx_params moe_ctx_default_params(void) {
    moe_ctx_params p = {.n_ctx = 0, .n_batch = 0, .n_threads = 0, .n_active = 0, .kv_f16 = 0, .n_seq = 0};
    return p;
}

/* ------------------------------------------------------------ arena */

typedef struct {
    uint64_t offset;
    char *base;   /* NULL while measuring */
    int overflow; /* set when a size did not fit: the context is refused */
} arena;

/* Reserve count elements of size bytes, 64-byte aligned; returns NULL while
 * measuring. Every count is a product of a few configuration values the
 * loader bounds (dims <= 2^24, heads <= 4096) and of n_ctx, n_batch and
 * n_threads (ints, threads <= MAX_THREADS), so it fits in 64 bits; what can
 * overflow, the bytes and their sum, is checked. */
static void *take(arena *a, uint64_t count, size_t size) {
    uint64_t at = (a->offset + 63) & ~(uint64_t)63, bytes;
    if (a->offset > UINT64_MAX - 63 || !mul_u64(count, size, &bytes) || !add_u64(at, bytes, &a->offset) ||
        a->offset > SIZE_MAX - 128) {
        a->overflow = 1;
        a->offset = 0;
        return NULL;
    }
    return a->base ? a->base + at : NULL;
}

/* Lay out every scratch buffer; called twice, first to measure. */
static void layout(moe_ctx *c, arena *a) {
    const moe_config *cfg = &c->model->cfg;
    uint64_t B = (uint64_t)c->n_batch, T = (uint64_t)c->n_threads, dim = (uint64_t)cfg->dim;
    int mla = cfg->attn_type == ATTN_MLA;
    uint64_t nh = (uint64_t)cfg->n_heads, kvw = (uint64_t)cfg->n_kv_heads * cfg->head_dim;
    uint64_t lat = (uint64_t)cfg->kv_lora + cfg->mla_rope_dim;
    uint64_t qw = nh * cfg->head_dim;
    uint64_t E = (uint64_t)c->route.n_experts, k = (uint64_t)c->route.k, G = (uint64_t)c->route.n_groups;
    uint64_t ff = (uint64_t)cfg->ff_dim;
    if ((uint64_t)cfg->moe_ff_dim > ff) ff = (uint64_t)cfg->moe_ff_dim;
    if ((uint64_t)cfg->shared_ff > ff) ff = (uint64_t)cfg->shared_ff;
    uint64_t C = (uint64_t)c->ffn_chunk;

    c->x = take(a, B * dim, sizeof(float));
    c->xn = take(a, B * dim, sizeof(float));
    c->branch = take(a, B * dim, sizeof(float));
    c->q = take(a, B * qw * (cfg->out_gate ? 2 : 1), sizeof(float)); /* out_gate: query and gate rows */
    if (mla) { /* MLA's projections have their own rows; GQA's k and v are not used */
        c->mla_kv_a = take(a, B * lat, sizeof(float));
        c->mla_q_a = cfg->q_lora ? take(a, B * (uint64_t)cfg->q_lora, sizeof(float)) : NULL;
    } else {
        c->k = take(a, B * kvw, sizeof(float));
        c->v = take(a, B * kvw, sizeof(float));
    }
    c->att = take(a, B * nh * (uint64_t)config_v_head_dim(cfg), sizeof(float));
    /* one row of scores per query head of a GQA group (MLA: one) */
    int group = cfg->attn_type == ATTN_MLA ? 1 : cfg->n_heads / cfg->n_kv_heads;
    c->att_scores = take(a, T * (uint64_t)group * (uint64_t)c->n_ctx, sizeof(float));
    c->att_part = take(a, T * (uint64_t)group * (uint64_t)cfg->head_dim, sizeof(float));
    c->mla_tmp = mla ? take(a, T * (lat + (uint64_t)cfg->kv_lora), sizeof(float)) : NULL;
    c->gate = cfg->out_gate ? take(a, B * qw, sizeof(float)) : NULL;
    if (cfg->n_ssm_layers) {
        uint64_t ch = (uint64_t)ssm_channels(cfg), sv = (uint64_t)ssm_value_width(cfg), nv = (uint64_t)cfg->ssm_n_v_heads;
        c->ssm_x = take(a, B * ch, sizeof(float));
        c->ssm_qkv = take(a, B * ch, sizeof(float));
        c->ssm_z = take(a, B * sv, sizeof(float));
        c->ssm_qkvz = cfg->ssm_qkvz ? take(a, B * (ch + sv), sizeof(float)) : NULL;
        c->ssm_b = take(a, B * nv, sizeof(float));
        c->ssm_a = take(a, B * nv, sizeof(float));
        c->ssm_o = take(a, B * sv, sizeof(float));
        c->ssm_tmp = take(a, T * (uint64_t)delta_rule_scratch_floats(cfg->ssm_k_dim, cfg->ssm_v_dim), sizeof(float));
    }
    if (E) {
        c->router_logits = take(a, B * E, sizeof(float));
        c->sel_ids = take(a, B * k, sizeof(int));
        c->sel_w = take(a, B * k, sizeof(float));
        c->route_scores = take(a, E, sizeof(float));
        c->route_choice = take(a, E, sizeof(float));
        c->route_groups = take(a, G, 1);
        c->route_mask = take(a, E + G, 1);
        c->route_group_scores = take(a, G, sizeof(float));
        c->exp_count = take(a, E + 1, sizeof(int));
        c->exp_start = take(a, E + 1, sizeof(int));
        c->exp_rows = take(a, B * k, sizeof(int));
        c->ffn_pair_w = take(a, B * k, sizeof(float));
        c->ffn_gate_logit = take(a, B, sizeof(float));
    }
    c->seq_idx = take(a, B, sizeof(int));
    c->row_seq = take(a, B, sizeof(int));
    c->row_pos = take(a, B, sizeof(int));
    c->row_tok = take(a, B, sizeof(int32_t));
    c->runs = take(a, (size_t)c->n_seq, sizeof(seq_run));
    c->logit_rows = take(a, (size_t)c->n_seq, sizeof(int));
    uint64_t widest = dim > qw ? dim : qw; /* block inputs: x, attention output, MLA q-LoRA, DeltaNet output */
    if ((uint64_t)ssm_value_width(cfg) > widest) widest = (uint64_t)ssm_value_width(cfg);
    if ((uint64_t)cfg->q_lora > widest) widest = (uint64_t)cfg->q_lora;
    if (nh * (uint64_t)config_v_head_dim(cfg) > widest) widest = nh * (uint64_t)config_v_head_dim(cfg);
    c->act_scratch = take(a, act_scratch_bytes((int)B, (int)widest), 1);
    c->act_hidden = take(a, act_scratch_bytes((int)C, (int)ff), 1);
    c->ffn_h1 = take(a, C * ff, sizeof(float));
    c->ffn_h2 = take(a, C * ff, sizeof(float));
    c->ffn_y = take(a, C * dim, sizeof(float));
    c->logits_rows = take(a, (uint64_t)c->n_seq * (uint64_t)cfg->vocab_size, sizeof(float));
    for (int s = 0; s < c->n_seq; s++) {
        float *l = take(a, (uint64_t)cfg->vocab_size, sizeof(float));
        if (a->base) c->seqs[s].logits = l;
    }
}

/* ------------------------------------------------------------ context */

/* The KV cache, in 2 MB pages where the OS gives them (Linux transparent
 * huge pages on request). V is cached transposed, so one token's values go
 * to a different row of every layer's V, and attention reads each row: with
 * 4 KB pages that is a TLB miss on hundreds of pages per layer and token.
 * Elsewhere, or if the request is refused, plain malloc. */
static void *kv_alloc(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20, rounded = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (bytes >= huge && !posix_memalign(&p, huge, rounded)) {
        madvise(p, rounded, MADV_HUGEPAGE); /* a hint: failure leaves 4 KB pages */
        return p;
    }
#endif
    return malloc(bytes);
}

/* Bytes of memory this machine has (0: unknown, no cap). */
static uint64_t physical_memory(void) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return (uint64_t)pages * (uint64_t)page;
#endif
    return 0;
}

/* Each layer's offset and slots (a sliding-window ring has fewer than n_ctx,
 * a Gated DeltaNet layer none); *values = the values per cache (K or V).
 * Returns -1 when out of memory, 1 when the size overflows, else 0. */
static int kv_layout(moe_ctx *c, uint64_t *values) {
    const moe_config *cfg = &c->model->cfg;
    /* GQA keeps K and V (transposed) per kv head; MLA keeps [latent | rope key] */
    uint64_t width = cfg->attn_type == ATTN_MLA ? (uint64_t)cfg->kv_lora + (uint64_t)cfg->mla_rope_dim
                                                : (uint64_t)cfg->n_kv_heads * (uint64_t)cfg->head_dim;
    c->layer_off = malloc(sizeof(size_t) * (size_t)cfg->n_layers);
    c->layer_slots = malloc(sizeof(int) * (size_t)cfg->n_layers);
    if (!c->layer_off || !c->layer_slots) return -1;
    uint64_t total = 0, layer;
    for (int l = 0; l < cfg->n_layers; l++) {
        c->layer_off[l] = (size_t)total;
        c->layer_slots[l] = config_cache_slots(cfg, c->n_ctx, l);
        if (!mul_u64((uint64_t)c->layer_slots[l], width, &layer) || !add_u64(total, layer, &total) ||
            total > SIZE_MAX / sizeof(float))
            return 1;
    }
    *values = total;
    return 0;
}

moe_ctx *moe_ctx_new(const moe_model *m, const moe_ctx_params *p, moe_err *err) {
    if (!m) {
        moe_fail(err, "no model");
        return NULL;
    }
    const moe_config *cfg = &m->cfg;
    if (!cfg->has_weights) {
        moe_fail(err, "this is a tokenizer-only file: it has no weights to run");
        return NULL;
    }
    moe_ctx_params dp = moe_ctx_default_params();
    if (!p) p = &dp;
    if (p->n_ctx < 0 || p->n_batch < 0 || p->n_threads < 0 || p->n_active < 0 || p->n_seq < 0) {
        moe_fail(err, "context parameters must not be negative");
        return NULL;
    }
    const route_config *r = &cfg->route;
    if (p->n_active && (!r->n_experts || p->n_active > r->groups_active * (r->n_experts / r->n_groups))) {
        if (!r->n_experts) moe_fail(err, "experts per token: the model is dense, it has no experts");
        else moe_fail(err, "experts per token %d: must be in 1..%d (experts in the %d groups routing may keep)",
                      p->n_active, r->groups_active * (r->n_experts / r->n_groups), r->groups_active);
        return NULL;
    }
    if (p->n_ctx > cfg->max_ctx) {
        moe_fail(err, "context %d exceeds the model's maximum of %d positions", p->n_ctx, cfg->max_ctx);
        return NULL;
    }
    if (p->n_threads > MAX_THREADS) {
        moe_fail(err, "threads %d: at most %d", p->n_threads, MAX_THREADS);
        return NULL;
    }
    if (p->n_seq > MAX_SEQ) {
        moe_fail(err, "%d sequences: at most %d in one context", p->n_seq, MAX_SEQ);
        return NULL;
    }
    moe_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    c->model = m;
    c->n_seq = p->n_seq ? p->n_seq : 1;
    c->seqs = calloc((size_t)c->n_seq, sizeof *c->seqs);
    if (!c->seqs) {
        moe_fail(err, "out of memory");
        free(c);
        return NULL;
    }
    c->route = *r;
    if (p->n_active) c->route.k = p->n_active;
    c->n_ctx = p->n_ctx ? p->n_ctx : (cfg->max_ctx < DEFAULT_CTX ? cfg->max_ctx : DEFAULT_CTX);
    c->n_batch = p->n_batch ? p->n_batch : DEFAULT_BATCH;
    if (c->n_batch > c->n_ctx) c->n_batch = c->n_ctx;
    c->n_threads = p->n_threads ? p->n_threads : cores_available();
    if (c->n_threads > MAX_THREADS) c->n_threads = MAX_THREADS;

    int ff = cfg->ff_dim > cfg->moe_ff_dim ? cfg->ff_dim : cfg->moe_ff_dim;
    if (cfg->shared_ff > ff) ff = cfg->shared_ff;
    size_t per_row = sizeof(float) * (2 * (size_t)ff + (size_t)cfg->dim) + act_scratch_bytes(1, ff);
    size_t chunk = FFN_SCRATCH_BYTES / per_row;
    c->ffn_chunk = chunk < 1 ? 1 : chunk > (size_t)c->n_batch ? c->n_batch : (int)chunk;

    /* Every size first, checked, then the memory: a context too large for
     * this machine (or for size_t) is refused before anything big is allocated.
     * Each of the n_seq sequences has a KV cache and, with Gated DeltaNet
     * layers (no KV cache: config_cache_slots), a recurrent state. */
    uint64_t esize = p->kv_f16 ? sizeof(uint16_t) : sizeof(float), cache_values = 0, one_cache = 0, caches = 0;
    uint64_t state = 0, rope = 0, per_seq = 0, total = 0, phys = physical_memory();
    int n_caches = cfg->attn_type == ATTN_MLA ? 1 : 2, kv = kv_layout(c, &cache_values);
    arena a = {0};
    layout(c, &a);
    if (kv < 0) {
        moe_fail(err, "out of memory");
        moe_ctx_free(c);
        return NULL;
    }
    if (kv || a.overflow || !mul_u64(cache_values, esize, &one_cache) || !mul_u64(one_cache, n_caches, &caches) ||
        !mul_u64(ssm_state_floats(cfg), (uint64_t)cfg->n_ssm_layers * sizeof(float), &state) ||
        !mul_u64((uint64_t)c->n_ctx * (uint64_t)(cfg->rope_dim / 2), 2 * sizeof(float), &rope) ||
        !add_u64(caches, state, &per_seq) || !mul_u64(per_seq, (uint64_t)c->n_seq, &total) ||
        !add_u64(total, a.offset, &total) || !add_u64(total, rope, &total) || total > SIZE_MAX / 2) {
        moe_fail(err, "context of %d positions: its KV cache and scratch sizes overflow", c->n_ctx);
        moe_ctx_free(c);
        return NULL;
    }
    if (phys && total > phys) {
        char recurrent[64] = "", seqs[48] = "";
        if (state) snprintf(recurrent, sizeof recurrent, " + recurrent state %llu", (unsigned long long)(state >> 20));
        if (c->n_seq > 1) snprintf(seqs, sizeof seqs, " x %d sequences", c->n_seq);
        moe_fail(err, "context of %d positions%s needs %llu MB (KV cache %llu%s%s + scratch %llu + RoPE tables %llu "
                      "MB), more than this machine's %llu MB of memory",
                 c->n_ctx, seqs, (unsigned long long)(total >> 20), (unsigned long long)(caches >> 20), recurrent,
                 c->n_seq > 1 ? " per sequence" : "",
                 (unsigned long long)(a.offset >> 20), (unsigned long long)(rope >> 20),
                 (unsigned long long)(phys >> 20));
        moe_ctx_free(c);
        return NULL;
    }
    c->state_bytes = (size_t)state;
    c->cache_bytes = (size_t)caches;
    c->kv_f16 = p->kv_f16 != 0;
    int ok = 1, mla = cfg->attn_type == ATTN_MLA;
    for (int s = 0; s < c->n_seq; s++) {
        seq_state *q = &c->seqs[s];
        q->k_cache = kv_alloc((size_t)one_cache);
        q->v_cache = mla ? NULL : kv_alloc((size_t)one_cache);
        q->ssm_state = cfg->n_ssm_layers ? calloc(1, c->state_bytes) : NULL;
        ok = ok && q->k_cache && (mla || q->v_cache) && (!cfg->n_ssm_layers || q->ssm_state);
    }
    c->arena_bytes = (size_t)a.offset;
    c->arena = calloc(1, (size_t)a.offset + 64);
    if (!ok || !c->arena) {
        moe_fail(err, "out of memory: %d x (KV cache %zu MB + state %zu MB) + scratch %zu MB for a context of %d",
                 c->n_seq, c->cache_bytes >> 20, c->state_bytes >> 20, c->arena_bytes >> 20, c->n_ctx);
        moe_ctx_free(c);
        return NULL;
    }
    a.offset = 0;
    a.base = (char *)(((uintptr_t)c->arena + 63) & ~(uintptr_t)63);
    layout(c, &a);
    for (int i = 0; i < c->n_batch; i++) c->seq_idx[i] = i;
    if (rope_table_init(&c->rope, cfg, c->n_ctx, err)) {
        moe_ctx_free(c);
        return NULL;
    }
    return c;
}

void moe_ctx_free(moe_ctx *c) {
    if (!c) return;
    for (int s = 0; s < c->n_seq; s++) {
        free(c->seqs[s].k_cache);
        free(c->seqs[s].v_cache);
        free(c->seqs[s].ssm_state);
    }
    free(c->seqs);
    free(c->layer_off);
    free(c->layer_slots);
    free(c->arena);
    free(c->expert_off);
    rope_table_free(&c->rope);
    free(c);
}

void moe_seq_reset(moe_ctx *c, int seq) {
    if (!c || seq < 0 || seq >= c->n_seq) return;
    seq_state *s = &c->seqs[seq];
    s->pos = 0;
    /* the KV cache is overwritten before it is read; the recurrent state is read first */
    if (s->ssm_state) memset(s->ssm_state, 0, c->state_bytes);
}
void moe_ctx_reset(moe_ctx *c) { moe_seq_reset(c, 0); }
/* A full cache holds one row per position and nothing else depends on the
 * positions after pos, so forgetting them is moving the position back. A
 * sliding-window ring of S slots keeps position q in slot q % S: the keys the
 * next token at pos attends to (from pos - W + 1) survive unless a position
 * up to the old end overwrote them (q + S < old end). A recurrent state
 * (Gated DeltaNet) cannot go back at all. */
int moe_seq_truncate(moe_ctx *c, int seq, int pos, moe_err *err) {
    if (!c) return moe_fail(err, "no context");
    if (seq < 0 || seq >= c->n_seq)
        return moe_fail(err, "truncate sequence %d: the context holds sequences 0..%d", seq, c->n_seq - 1);
    seq_state *s = &c->seqs[seq];
    if (pos < 0 || pos > s->pos)
        return moe_fail(err, "truncate to position %d: the cache holds positions 0..%d", pos, s->pos);
    if (pos == s->pos) return 0;
    if (s->ssm_state) return moe_fail(err, "truncate to position %d: a recurrent state cannot go back", pos);
    const moe_config *cfg = &c->model->cfg;
    for (int l = 0; l < cfg->n_layers; l++) {
        int slots = c->layer_slots[l];
        if (slots >= c->n_ctx) continue;
        int first = pos - cfg->window + 1 > 0 ? pos - cfg->window + 1 : 0;
        if ((int64_t)first + slots < s->pos)
            return moe_fail(err, "truncate to position %d: layer %d's sliding-window ring no longer holds it", pos, l);
    }
    s->pos = pos;
    return 0;
}
int moe_ctx_truncate(moe_ctx *c, int pos, moe_err *err) { return moe_seq_truncate(c, 0, pos, err); }
int moe_seq_pos(const moe_ctx *c, int seq) { return c && seq >= 0 && seq < c->n_seq ? c->seqs[seq].pos : -1; }
int moe_ctx_pos(const moe_ctx *c) { return moe_seq_pos(c, 0); }
int moe_ctx_n_ctx(const moe_ctx *c) { return c ? c->n_ctx : 0; }
int moe_ctx_n_seq(const moe_ctx *c) { return c ? c->n_seq : 0; }
size_t moe_ctx_bytes(const moe_ctx *c) {
    if (!c) return 0;
    return (c->cache_bytes + c->state_bytes) * (size_t)c->n_seq + c->arena_bytes +
           2 * sizeof(float) * (size_t)c->rope.n_pos * (size_t)(c->rope.dim / 2);
}
const float *moe_seq_logits(const moe_ctx *c, int seq) {
    return c && seq >= 0 && seq < c->n_seq ? c->seqs[seq].logits : NULL;
}
const float *moe_ctx_logits(const moe_ctx *c) { return moe_seq_logits(c, 0); }
void moe_ctx_get_stats(const moe_ctx *c, moe_ctx_stats *s) {
    if (s) *s = c ? c->stats : (moe_ctx_stats){0};
}

void moe_ctx_time_phases(moe_ctx *c, int on) { c->time_phases = on != 0; }

const char *moe_phase_name(moe_phase p) {
    static const char *const names[MOE_PHASE_COUNT] = {
        [MOE_PHASE_ATTENTION] = "attention", [MOE_PHASE_DELTANET] = "deltanet (proj, conv, norm)",
        [MOE_PHASE_DELTA_RULE] = "delta rule", [MOE_PHASE_ROUTING] = "routing",
        [MOE_PHASE_EXPERTS] = "experts (ffn)", [MOE_PHASE_OUTPUT] = "output (lm_head)", [MOE_PHASE_OTHER] = "other"};
    return (unsigned)p < MOE_PHASE_COUNT ? names[p] : "?";
}

void moe_ctx_set_route_hook(moe_ctx *c, moe_route_hook hook, void *user) {
    if (!c) return;
    c->on_route = hook;
    c->on_route_user = user;
}

void moe_ctx_set_input_hook(moe_ctx *c, moe_input_hook hook, void *user) {
    if (!c) return;
    c->on_input = hook;
    c->on_input_user = user;
}

int moe_ctx_disable_expert(moe_ctx *c, int layer, int expert, moe_err *err) {
    if (!c) return moe_fail(err, "no context");
    const moe_config *cfg = &c->model->cfg;
    int E = c->route.n_experts;
    if (layer < 0 || layer >= cfg->n_layers)
        return moe_fail(err, "disable expert %d:%d: layer out of range 0..%d", layer, expert, cfg->n_layers - 1);
    if (!c->model->layers[layer].is_moe)
        return moe_fail(err, "disable expert %d:%d: layer %d is dense, it has no experts", layer, expert, layer);
    if (expert < 0 || expert >= E)
        return moe_fail(err, "disable expert %d:%d: expert out of range 0..%d", layer, expert, E - 1);
    if (!c->expert_off) {
        c->expert_off = calloc((size_t)cfg->n_layers * (size_t)E, 1);
        if (!c->expert_off) return moe_fail(err, "out of memory");
    }
    unsigned char *off = c->expert_off + (size_t)layer * E;
    int left = 0;
    for (int e = 0; e < E; e++) left += !off[e] && e != expert;
    if (left < c->route.k)
        return moe_fail(err, "disable expert %d:%d: only %d experts would remain in layer %d, fewer than k = %d",
                        layer, expert, left, layer, c->route.k);
    off[expert] = 1;
    return 0;
}
