/* route_stats.h - routing statistics accumulated from route events
 * (moe_route_event, one per token and MoE layer): expert load, imbalance,
 * router entropy, top-k mass, co-activation, how well one layer's choice
 * predicts the next, and the tokens each expert sees most. Pure bookkeeping:
 * no model, no I/O; `moe route` prints and plots the results, and
 * tests/unit/test_route_stats.c checks them against hand-computed values.
 * Definitions: docs/ROUTING.md "Statistics". */
#ifndef MOE_ROUTE_STATS_H
#define MOE_ROUTE_STATS_H

#include <stdint.h>

#include "moe.h"

#define RS_ENTROPY_BINS 20 /* histogram of per-token entropy over [0, log2 E] bits */
#define RS_TOP_TOKENS 8    /* tokens kept per expert */

typedef struct {
    int active;            /* 1 if any event came from this layer */
    int64_t n_tokens;      /* events seen (token positions) */
    int64_t *count;        /* (E) times each expert was among the k chosen */
    int64_t *top1;         /* (E) times each expert was ranked first */
    int64_t *coact;        /* (E, E) tokens for which both experts were chosen; diagonal = count */
    int64_t *trans;        /* (E, E) top-1 here (row) -> top-1 at the next MoE layer (column) */
    int64_t n_trans;       /* tokens counted in trans */
    double entropy_sum;    /* sum over tokens of H(p) in bits, p = router distribution */
    double mass_sum;       /* sum over tokens of the chosen experts' share of p */
    int64_t entropy_hist[RS_ENTROPY_BINS];
    /* derived by route_stats_finish */
    double cv;             /* coefficient of variation of count over experts (population sd / mean) */
    double max_mean;       /* max(count) / mean(count) */
    double entropy_mean;   /* bits */
    double mass_mean;      /* in 0..1 */
    double pred_acc;       /* next layer's top-1 guessed as the most frequent successor; -1: no next layer */
    double pred_base;      /* the same guess ignoring this layer: the most frequent top-1 there */
    double mutual_info;    /* I(top-1 here; top-1 next), bits */
    int next_layer;        /* the next MoE layer, or -1 */
    int32_t *top_tokens;   /* (E, RS_TOP_TOKENS) ids, -1 = none, most frequent first */
    int64_t *top_counts;   /* (E, RS_TOP_TOKENS) */
} route_layer_stats;

typedef struct {
    int n_layers, n_experts, max_pos;
    route_layer_stats *layers;     /* [n_layers]; dense layers stay inactive */
    int32_t *last_top1;            /* (n_layers, max_pos) top-1 of the latest event at (layer, pos) */
    /* (layer, expert, token) -> count, open addressing */
    uint64_t *keys;                /* packed key + 1, 0 = empty */
    int64_t *vals;
    size_t cap, used;
    int64_t n_events;
} route_stats;

/* max_pos: positions per sequence (the context length); events with pos >=
 * max_pos are counted but not paired across layers. Returns 0 or -1. */
int route_stats_init(route_stats *s, int n_layers, int n_experts, int max_pos, moe_err *err);
/* Add one event; -1 only when out of memory. */
int route_stats_add(route_stats *s, const moe_route_event *ev);
/* Compute the derived fields (call once, after the last event). */
int route_stats_finish(route_stats *s, moe_err *err);
void route_stats_free(route_stats *s);

#endif /* MOE_ROUTE_STATS_H */
