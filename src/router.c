/* router.c - which experts a token goes to, and with what weights.
 *
 * One function covers every family (docs/ROUTING.md has the table):
 *   Mixtral, GraniteMoE   softmax, top-k, renormalise   (= softmax of the top-k logits)
 *   gpt-oss               the same, on logits that include the router's bias
 *   Qwen2-MoE, Qwen3-MoE  softmax, top-k, renormalise iff norm_topk_prob
 *   OLMoE                 softmax, top-k, renormalise iff norm_topk_prob
 *   DeepSeek-V2           softmax, optional group limit (group score = max),
 *                         x routed_scaling_factor when not renormalising
 *   Qwen3.5-MoE, Qwen3-Next  softmax, top-k, renormalise
 *   DeepSeek-V3, GLM-4.5  sigmoid, bias for selection only, group limit
 *                         (group score = sum of top-2), renormalise, x scale
 * Ties go to the lower expert (or group) index, so results are deterministic. */
#include "router.h"

#include <math.h>
#include <string.h>

#include "ops.h"

/* Index of the largest v[i] among i < n with avail[i]; ties -> lower i. */
static int argmax_avail(const float *v, const unsigned char *avail, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (avail[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

/* Score of one group of choice scores: its max, or the sum of its two largest. */
static float group_value(const float *c, int size, group_score how) {
    float a = c[0], b = -INFINITY; /* a >= b: the two largest so far */
    for (int i = 1; i < size; i++) {
        if (c[i] > a) { b = a; a = c[i]; }
        else if (c[i] > b) b = c[i];
    }
    return how == GROUP_MAX ? a : a + b;
}

void route(const route_config *rc, route_io *io) {
    int E = rc->n_experts, k = rc->k;
    unsigned char *avail = io->mask; /* (E), or (G) while groups are chosen */

    /* 1. scores from logits */
    for (int e = 0; e < E; e++) io->scores[e] = rc->score == SCORE_SIGMOID ? sigmoidf(io->logits[e]) : io->logits[e];
    if (rc->score == SCORE_SOFTMAX) softmax(io->scores, E);

    /* 2. what selection looks at: scores, plus the bias when there is one;
     *    a disabled expert (routing experiment) competes with -inf everywhere */
    for (int e = 0; e < E; e++) io->choice[e] = io->scores[e] + (rc->use_bias && io->bias ? io->bias[e] : 0.0f);
    if (io->off)
        for (int e = 0; e < E; e++)
            if (io->off[e]) io->choice[e] = -INFINITY;

    /* 3. group limit: keep the best groups, zero the rest (0, not -inf, as HF does) */
    if (rc->n_groups > 1) {
        int G = rc->n_groups, size = E / G;
        float *gval = io->group_scores;
        for (int g = 0; g < G; g++) gval[g] = group_value(io->choice + g * size, size, rc->group_score);
        memset(avail, 1, (size_t)G);
        unsigned char *kept = io->mask + E;
        memset(kept, 0, (size_t)G);
        for (int i = 0; i < rc->groups_active; i++) {
            int g = argmax_avail(gval, avail, G);
            kept[g] = 1;
            avail[g] = 0;
        }
        for (int g = 0; g < G; g++) {
            if (!kept[g])
                for (int e = g * size; e < (g + 1) * size; e++)
                    if (!io->off || !io->off[e]) io->choice[e] = 0.0f;
            if (io->group_kept) io->group_kept[g] = kept[g];
        }
    }

    /* 4. top-k of the choice scores, best first; disabled experts are not candidates */
    for (int e = 0; e < E; e++) avail[e] = !io->off || !io->off[e];
    for (int i = 0; i < k; i++) {
        io->ids[i] = argmax_avail(io->choice, avail, E);
        avail[io->ids[i]] = 0;
    }

    /* 5. weights from the unbiased scores: renormalise, then scale */
    float sum = 0.0f;
    for (int i = 0; i < k; i++) sum += io->weights[i] = io->scores[io->ids[i]];
    for (int i = 0; i < k; i++) {
        if (rc->norm_topk && sum > 0.0f) io->weights[i] /= sum;
        io->weights[i] *= rc->scale;
    }
}
