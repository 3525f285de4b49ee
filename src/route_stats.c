/* route_stats.c - routing statistics from route events (route_stats.h).
 * Memory: per MoE layer two (E, E) count matrices and a few E vectors, one
 * (n_layers, max_pos) table of top-1 choices, and a hash table with one
 * entry per distinct (layer, expert, token) seen. */
#include "route_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int route_stats_init(route_stats *s, int n_layers, int n_experts, int max_pos, moe_err *err) {
    memset(s, 0, sizeof *s);
    if (n_layers <= 0 || n_experts <= 0 || n_experts > 65536 || max_pos <= 0)
        return moe_fail(err, "route statistics: bad sizes (%d layers, %d experts, %d positions)", n_layers, n_experts,
                        max_pos);
    s->n_layers = n_layers;
    s->n_experts = n_experts;
    s->max_pos = max_pos;
    s->layers = calloc((size_t)n_layers, sizeof *s->layers);
    s->last_top1 = malloc(sizeof(int32_t) * (size_t)n_layers * (size_t)max_pos);
    if (!s->layers || !s->last_top1) goto oom;
    for (size_t i = 0; i < (size_t)n_layers * (size_t)max_pos; i++) s->last_top1[i] = -1;
    s->cap = 1024;
    s->keys = calloc(s->cap, sizeof *s->keys);
    s->vals = calloc(s->cap, sizeof *s->vals);
    if (!s->keys || !s->vals) goto oom;
    return 0;
oom:
    route_stats_free(s);
    return moe_fail(err, "route statistics: out of memory");
}

void route_stats_free(route_stats *s) {
    if (s->layers)
        for (int l = 0; l < s->n_layers; l++) {
            route_layer_stats *L = &s->layers[l];
            free(L->count);
            free(L->top1);
            free(L->coact);
            free(L->trans);
            free(L->top_tokens);
            free(L->top_counts);
        }
    free(s->layers);
    free(s->last_top1);
    free(s->keys);
    free(s->vals);
    memset(s, 0, sizeof *s);
}

static int layer_alloc(route_stats *s, route_layer_stats *L) {
    size_t E = (size_t)s->n_experts;
    L->count = calloc(E, sizeof(int64_t));
    L->top1 = calloc(E, sizeof(int64_t));
    L->coact = calloc(E * E, sizeof(int64_t));
    L->trans = calloc(E * E, sizeof(int64_t));
    if (!L->count || !L->top1 || !L->coact || !L->trans) return -1;
    L->active = 1;
    L->next_layer = -1;
    L->pred_acc = L->pred_base = -1;
    return 0;
}

/* ------------------------------------------------------------ (layer, expert, token) counts */

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t pack(int layer, int expert, int token) {
    return ((uint64_t)layer << 48 | (uint64_t)expert << 31 | (uint64_t)(uint32_t)token) + 1;
}

static int table_add(route_stats *s, uint64_t key) {
    if (2 * (s->used + 1) > s->cap) { /* grow at half full */
        size_t ncap = s->cap * 2;
        uint64_t *nk = calloc(ncap, sizeof *nk);
        int64_t *nv = calloc(ncap, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return -1;
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) {
                size_t j = mix64(s->keys[i]) & (ncap - 1);
                while (nk[j]) j = (j + 1) & (ncap - 1);
                nk[j] = s->keys[i];
                nv[j] = s->vals[i];
            }
        free(s->keys);
        free(s->vals);
        s->keys = nk;
        s->vals = nv;
        s->cap = ncap;
    }
    size_t j = mix64(key) & (s->cap - 1);
    while (s->keys[j] && s->keys[j] != key) j = (j + 1) & (s->cap - 1);
    if (!s->keys[j]) {
        s->keys[j] = key;
        s->used++;
    }
    s->vals[j]++;
    return 0;
}

/* ------------------------------------------------------------ events */

int route_stats_add(route_stats *s, const moe_route_event *ev) {
    int l = ev->layer, E = s->n_experts, k = ev->k;
    if (l < 0 || l >= s->n_layers || ev->n_experts != E || k < 1) return 0; /* not ours: ignore */
    route_layer_stats *L = &s->layers[l];
    if (!L->active && layer_alloc(s, L)) return -1;
    s->n_events++;
    L->n_tokens++;

    /* the router distribution: softmax scores as they are, sigmoid scores normalised */
    double total = 0, h = 0, mass = 0;
    for (int e = 0; e < E; e++) total += ev->scores[e];
    if (total > 0)
        for (int e = 0; e < E; e++) {
            double p = ev->scores[e] / total;
            if (p > 0) h -= p * log2(p);
        }
    for (int i = 0; i < k; i++) mass += total > 0 ? ev->scores[ev->ids[i]] / total : 0;
    L->entropy_sum += h;
    L->mass_sum += mass;
    double hmax = log2((double)E);
    /* clamped before converting: a float outside int's range (or NaN) converts undefined */
    double f = hmax > 0 ? h / hmax * RS_ENTROPY_BINS : 0;
    L->entropy_hist[f > 0 ? (f < RS_ENTROPY_BINS ? (int)f : RS_ENTROPY_BINS - 1) : 0]++;

    for (int i = 0; i < k; i++) {
        int a = ev->ids[i];
        L->count[a]++;
        for (int j = 0; j < k; j++)
            if (j != i) L->coact[(size_t)a * E + ev->ids[j]]++;
        L->coact[(size_t)a * E + a]++;
        if (ev->token >= 0 && table_add(s, pack(l, a, ev->token))) return -1;
    }
    int t1 = ev->ids[0];
    L->top1[t1]++;

    /* pair with the previous MoE layer's top-1 at the same position */
    if (ev->pos >= 0 && ev->pos < s->max_pos) {
        s->last_top1[(size_t)l * s->max_pos + ev->pos] = t1;
        int lp = l - 1;
        while (lp >= 0 && !s->layers[lp].active) lp--;
        if (lp >= 0) {
            int a = s->last_top1[(size_t)lp * s->max_pos + ev->pos];
            if (a >= 0) {
                route_layer_stats *P = &s->layers[lp];
                P->trans[(size_t)a * E + t1]++;
                P->n_trans++;
                P->next_layer = l;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ derived values */

int route_stats_finish(route_stats *s, moe_err *err) {
    int E = s->n_experts;
    for (int l = 0; l < s->n_layers; l++) {
        route_layer_stats *L = &s->layers[l];
        if (!L->active) continue;
        double mean = 0, var = 0, mx = 0;
        for (int e = 0; e < E; e++) {
            mean += (double)L->count[e];
            if ((double)L->count[e] > mx) mx = (double)L->count[e];
        }
        mean /= E;
        for (int e = 0; e < E; e++) var += ((double)L->count[e] - mean) * ((double)L->count[e] - mean);
        var /= E;
        L->cv = mean > 0 ? sqrt(var) / mean : 0;
        L->max_mean = mean > 0 ? mx / mean : 0;
        L->entropy_mean = L->n_tokens ? L->entropy_sum / (double)L->n_tokens : 0;
        L->mass_mean = L->n_tokens ? L->mass_sum / (double)L->n_tokens : 0;
        if (L->n_trans > 0) {
            double n = (double)L->n_trans, hit = 0, base = 0, mi = 0;
            for (int b = 0; b < E; b++) { /* column sums: the next layer's top-1 */
                double col = 0;
                for (int a = 0; a < E; a++) col += (double)L->trans[(size_t)a * E + b];
                if (col > base) base = col;
            }
            for (int a = 0; a < E; a++) {
                double row = 0, best = 0;
                for (int b = 0; b < E; b++) {
                    double v = (double)L->trans[(size_t)a * E + b];
                    row += v;
                    if (v > best) best = v;
                }
                hit += best;
                for (int b = 0; b < E && row > 0; b++) {
                    double v = (double)L->trans[(size_t)a * E + b];
                    if (v <= 0) continue;
                    double col = 0;
                    for (int a2 = 0; a2 < E; a2++) col += (double)L->trans[(size_t)a2 * E + b];
                    mi += v / n * log2(v * n / (row * col));
                }
            }
            L->pred_acc = hit / n;
            L->pred_base = base / n;
            L->mutual_info = mi;
        }
        L->top_tokens = malloc(sizeof(int32_t) * (size_t)E * RS_TOP_TOKENS);
        L->top_counts = calloc((size_t)E * RS_TOP_TOKENS, sizeof(int64_t));
        if (!L->top_tokens || !L->top_counts) return moe_fail(err, "route statistics: out of memory");
        for (size_t i = 0; i < (size_t)E * RS_TOP_TOKENS; i++) L->top_tokens[i] = -1;
    }
    /* the most frequent tokens per (layer, expert): ties -> lower token id */
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->keys[i]) continue;
        uint64_t key = s->keys[i] - 1;
        int l = (int)(key >> 48), e = (int)((key >> 31) & 0x1ffff);
        int32_t tok = (int32_t)(key & 0x7fffffff);
        int64_t v = s->vals[i];
        int32_t *tt = s->layers[l].top_tokens + (size_t)e * RS_TOP_TOKENS;
        int64_t *tc = s->layers[l].top_counts + (size_t)e * RS_TOP_TOKENS;
        int at = RS_TOP_TOKENS;
        while (at > 0 && (tt[at - 1] < 0 || v > tc[at - 1] || (v == tc[at - 1] && tok < tt[at - 1]))) at--;
        if (at >= RS_TOP_TOKENS) continue;
        memmove(tt + at + 1, tt + at, sizeof *tt * (size_t)(RS_TOP_TOKENS - 1 - at));
        memmove(tc + at + 1, tc + at, sizeof *tc * (size_t)(RS_TOP_TOKENS - 1 - at));
        tt[at] = tok;
        tc[at] = v;
    }
    return 0;
}
