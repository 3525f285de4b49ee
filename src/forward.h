/* forward.h - a context (struct moe_ctx): its sequences' states, the
 * scratch of the forward pass, and the pass's pieces.
 *
 * All memory is allocated once in moe_ctx_new (ctx.c): one KV cache (sized from
 * n_ctx) and recurrent state per sequence, the RoPE table and one scratch
 * arena sized for n_batch token rows. Nothing is allocated while evaluating
 * tokens. A pass evaluates n_batch rows at most: runs of consecutive tokens,
 * each run from one sequence (moe_eval_batch); every matrix product covers
 * all the rows, attention and the recurrent mixer each run's own state. */
#ifndef MOE_FORWARD_H
#define MOE_FORWARD_H

#include <time.h>

#include "model.h"
#include "rope.h"

/* Called once per (token, MoE layer) after routing, when set: the routing
 * trace and statistics hang off this (moe.h, moe_route_event). */
typedef moe_route_event route_event;
typedef moe_route_hook route_hook;

/* One sequence: what it remembers and where it is. */
typedef struct {
    int pos;                    /* positions already in the cache */
    void *k_cache, *v_cache;    /* KV cache (layout: struct moe_ctx), f32 or f16 */
    float *ssm_state;           /* Gated DeltaNet state (layout: struct moe_ctx), or NULL */
    float *logits;              /* (vocab) after its last evaluated token */
} seq_state;

/* Rows row0 .. row0+n-1 of a pass: tokens of sequence seq at positions pos0 .. */
typedef struct {
    int seq, row0, n, pos0;
    float *logits;              /* NULL, or (n, vocab): the caller's rows for every token */
} seq_run;

struct moe_ctx {
    const moe_model *model;
    int n_ctx, n_batch, n_threads;
    int n_seq;                  /* sequences (moe_ctx_params.n_seq) */
    seq_state *seqs;            /* (n_seq); moe_eval and friends use seqs[0] */
    int ffn_chunk;              /* rows per FFN group (ffn.c) */
    route_config route;         /* the model's routing, k possibly overridden (n_active) */
    unsigned char *expert_off;  /* (n_layers, E) 1 = disabled expert, or NULL: none */

    /* KV cache of each sequence, per layer: GQA K as (slots, n_kv*head_dim) and V transposed,
     * (n_kv*head_dim, slots), so the weighted sum of values is a tile
     * (attention.c); MLA (slots, kv_lora + rope_dim) latent + rope key, no V.
     * Position p lives in slot p % slots: slots = n_ctx, or for a layer
     * with a sliding window a ring of 2*window - 1 (the window, plus room
     * to write window new tokens before they attend). */
    int kv_f16;                 /* the caches hold f16, else f32 */
    size_t *layer_off;          /* (n_layers) first value of each layer in k_cache (and v_cache) */
    int *layer_slots;           /* (n_layers) positions each layer's cache holds */

    /* Gated DeltaNet recurrent state of each sequence, one block of
     * ssm_state_floats(cfg) per linear-attention layer, in layer order: the
     * conv state (K-1, channels), the last K-1 pre-conv inputs, oldest first,
     * then S (n_v_heads, v_dim, k_dim) (delta_rule.h: transposed). Zero at position 0 (moe_seq_reset). */
    size_t state_bytes;         /* per sequence */
    size_t cache_bytes;         /* per sequence */

    /* the pass being evaluated */
    seq_run *runs;              /* (n_seq) */
    int n_runs;
    int *row_seq, *row_pos;     /* (B) each row's sequence and position */
    int32_t *row_tok;           /* (B) each row's token */
    rope_table rope;

    /* scratch, B = n_batch rows unless noted, grouped by the file that owns it
     * (laid out once by layout() in ctx.c) */
    /* the layer loop (forward.c) */
    float *x;                   /* (B, dim) residual stream */
    float *xn;                  /* (B, dim) normalised input of a block */
    float *branch;              /* (B, dim) attention or FFN output */
    /* attention (attention.c) */
    float *q, *k, *v;           /* (B, n_heads*head_dim), (B, kv width) x2; MLA: q (B, n_heads*(nope+rope)) only */
    float *att;                 /* (B, n_heads*v_head_dim) */
    float *att_scores;          /* (n_threads, GQA group, n_ctx) */
    float *att_part;            /* (n_threads, GQA group, head_dim) a ring's second stretch of values */
    float *mla_kv_a;            /* MLA: (B, kv_lora + rope) kv_a x = [latent | shared rope key] */
    float *mla_q_a;             /* MLA with q-LoRA: (B, q_lora) q_a x, normed in place; else NULL */
    float *mla_tmp;             /* MLA: (n_threads, 2*kv_lora + rope) absorbed query + latent sum */
    float *gate;                /* attn.out_gate: (B, n_heads*head_dim) output gate logits */
    /* Gated DeltaNet (deltanet.c, delta_rule.c) */
    float *ssm_x;               /* (B, channels) q|k|v before the conv */
    float *ssm_qkv;             /* (B, channels) after conv + SiLU; q, k then L2-normalised */
    float *ssm_z;               /* (B, value_width) output gate */
    float *ssm_qkvz;            /* ssm.qkvz: (B, channels + value_width) the fused projection, then split; else NULL */
    float *ssm_b, *ssm_a;       /* (B, n_v_heads) beta and alpha logits, then beta and log decay g */
    float *ssm_o;               /* (B, value_width) per value head output, then gated-normed */
    float *ssm_tmp;             /* (n_threads, delta_rule_scratch_floats) one head's delta-rule scratch */
    /* routing and experts (ffn.c, router.c) */
    float *router_logits;       /* (B, E) */
    int *sel_ids;               /* (B, k) */
    float *sel_w;               /* (B, k) */
    float *route_scores, *route_choice; /* (E) */
    unsigned char *route_groups;        /* (n_groups) */
    unsigned char *route_mask;          /* (E + n_groups) route()'s scratch */
    float *route_group_scores;          /* (n_groups) route()'s scratch */
    int *exp_count, *exp_start; /* (E+1) */
    int *exp_rows;              /* (B*k) token*k+slot, grouped by expert */
    float *ffn_h1, *ffn_h2;     /* (chunk, max ff) stacked hidden rows of an FFN group */
    float *ffn_y;               /* (chunk, dim) */
    float *ffn_pair_w;          /* (B*k) routing weight of each gathered row */
    float *ffn_gate_logit;      /* (B) Qwen2-MoE shared-expert gate logits */
    /* matrix inputs (act_rows.c) and the output (forward.c) */
    int *seq_idx;               /* (B) 0, 1, 2, ...: the identity row list */
    void *act_scratch;          /* quantized copies of a block input, (B, widest input) */
    void *act_hidden;           /* quantized copies of FFN hidden rows, (chunk, max ff) */
    float *logits_rows;         /* (n_seq, vocab) the last rows of a pass's runs */
    int *logit_rows;            /* (n_seq) which rows those are */

    void *arena;
    size_t arena_bytes;
    moe_ctx_stats stats;        /* work counters (moe_ctx_get_stats) */
    int time_phases;            /* add each phase's wall-clock time to stats.phase_seconds */

    route_hook on_route;        /* optional, see route_event */
    void *on_route_user;
    moe_input_hook on_input;    /* optional: matrix inputs (moe_ctx_set_input_hook) */
    void *on_input_user;
};

/* Monotonic wall-clock seconds when phases are timed, else 0 without
 * reading a clock; phase_end adds the time since t0 to phase p. */
static inline double phase_start(const moe_ctx *c) {
    if (!c->time_phases) return 0.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static inline void phase_end(moe_ctx *c, moe_phase p, double t0) {
    if (c->time_phases) c->stats.phase_seconds[p] += phase_start(c) - t0;
}

/* Hand x (n rows of cols) to the input hook, if one is set. */
static inline void observe_input(moe_ctx *c, int layer, moe_input_kind kind, int expert, const float *x, int n,
                                 int cols) {
    if (c->on_input) c->on_input(c->on_input_user, layer, kind, expert, x, n, cols);
}

/* The layer pieces, called for the n rows of the pass (c->runs, c->row_*). */
void attention_forward(moe_ctx *c, int layer, const float *xn, int n, float *out);
void ffn_forward(moe_ctx *c, int layer, const float *xn, int n, float *out);
/* Gated DeltaNet mixer (deltanet.c): each run's recurrent state advances by its tokens. */
void deltanet_forward(moe_ctx *c, int layer, const float *xn, int n, float *out);

#endif /* MOE_FORWARD_H */
