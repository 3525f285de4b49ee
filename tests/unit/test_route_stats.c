/* test_route_stats.c - routing statistics on a hand-built trace whose every
 * number is worked out by hand in the comments (docs/ROUTING.md "Statistics").
 *
 * 3 layers (layer 0 dense: no events), 4 experts, k = 2, 4 positions:
 *   layer 1  pos tok scores               chosen
 *            0   10  .4  .3  .2  .1        0 1
 *            1   11  .1  .2  .3  .4        3 2
 *            2   10  .25 .25 .25 .25       0 1
 *            3   12  .5  .1  .3  .1        0 2
 *   layer 2  0   10  .7  .1  .1  .1        0 1
 *            1   11  .1  .1  .7  .1        2 3
 *            2   10  .2  .6  .1  .1        1 0
 *            3   12  .6  .1  .1  .2        0 3
 * Layer 1: counts 3 2 2 1 (mean 2, population sd sqrt(.5)) -> cv .353553,
 * max/mean 1.5; top-k mass .7 .7 .5 .8 -> .675; co-activation (0,1) = 2,
 * (0,2) = 1, (2,3) = 1; top-1 transitions 0->0, 3->2, 0->1, 0->0: guessing
 * the most frequent successor is right 3 of 4 times (.75), the most frequent
 * next top-1 alone 2 of 4 (.5); mutual information
 *   .5 log2(.5/(.75*.5)) + .25 log2(.25/(.75*.25)) + .25 log2(.25/(.25*.25))
 *   = .2075187 + .1037594 + .5 = .8112781 bits.
 * Expert 0 of layer 1 saw token 10 twice and 12 once. */
#include "route_stats.h"
#include "test_util.h"

static double H(const double *p, int n) {
    double h = 0;
    for (int i = 0; i < n; i++)
        if (p[i] > 0) h -= p[i] * log2(p[i]);
    return h;
}

static void feed(route_stats *s, int layer, int pos, int tok, const float *scores, int a, int b) {
    int ids[2] = {a, b};
    float w[2] = {0.5f, 0.5f};
    moe_route_event ev = {pos, layer, tok, 2, 4, 1, ids, w, scores, scores, scores, NULL, 0.0f, 0};
    CHECK(route_stats_add(s, &ev) == 0, "add");
}

static void test_hand_trace(void) {
    route_stats s;
    moe_err err;
    CHECK(route_stats_init(&s, 3, 4, 8, &err) == 0, "init");
    const float l1[4][4] = {{.4f, .3f, .2f, .1f}, {.1f, .2f, .3f, .4f}, {.25f, .25f, .25f, .25f}, {.5f, .1f, .3f, .1f}};
    const float l2[4][4] = {{.7f, .1f, .1f, .1f}, {.1f, .1f, .7f, .1f}, {.2f, .6f, .1f, .1f}, {.6f, .1f, .1f, .2f}};
    const int tok[4] = {10, 11, 10, 12};
    const int c1[4][2] = {{0, 1}, {3, 2}, {0, 1}, {0, 2}}, c2[4][2] = {{0, 1}, {2, 3}, {1, 0}, {0, 3}};
    for (int p = 0; p < 4; p++) feed(&s, 1, p, tok[p], l1[p], c1[p][0], c1[p][1]);
    for (int p = 0; p < 4; p++) feed(&s, 2, p, tok[p], l2[p], c2[p][0], c2[p][1]);
    CHECK(route_stats_finish(&s, &err) == 0, "finish");

    CHECK(!s.layers[0].active && s.layers[1].active && s.layers[2].active, "active layers");
    const route_layer_stats *L = &s.layers[1];
    CHECK(L->n_tokens == 4, "tokens %lld", (long long)L->n_tokens);
    CHECK(L->count[0] == 3 && L->count[1] == 2 && L->count[2] == 2 && L->count[3] == 1, "counts");
    CHECK_NEAR(L->cv, sqrt(0.5) / 2.0, 1e-12, "cv");
    CHECK_NEAR(L->max_mean, 1.5, 1e-12, "max/mean");
    double p0[4] = {.4, .3, .2, .1}, p2[4] = {.25, .25, .25, .25}, p3[4] = {.5, .1, .3, .1};
    double hmean = (2 * H(p0, 4) + H(p2, 4) + H(p3, 4)) / 4; /* pos 1 is pos 0 reversed */
    CHECK_NEAR(L->entropy_mean, hmean, 1e-6, "entropy");
    CHECK_NEAR(H(p2, 4), 2.0, 1e-12, "uniform = log2 E");
    /* bins of width log2(4)/20 = 0.1 bit: 1.846 -> 18 (twice), 2.0 -> last, 1.685 -> 16 */
    CHECK(L->entropy_hist[18] == 2 && L->entropy_hist[19] == 1 && L->entropy_hist[16] == 1, "entropy histogram");
    CHECK_NEAR(L->mass_mean, 0.675, 1e-6, "top-k mass");
    CHECK(L->coact[0 * 4 + 1] == 2 && L->coact[1 * 4 + 0] == 2 && L->coact[0 * 4 + 2] == 1 &&
              L->coact[2 * 4 + 3] == 1 && L->coact[3 * 4 + 2] == 1 && L->coact[1 * 4 + 2] == 0,
          "co-activation");
    CHECK(L->coact[0] == 3 && L->coact[3 * 4 + 3] == 1, "diagonal = count");
    CHECK(L->next_layer == 2 && L->n_trans == 4, "paired with layer %d, %lld", L->next_layer, (long long)L->n_trans);
    CHECK_NEAR(L->pred_acc, 0.75, 1e-12, "prediction accuracy");
    CHECK_NEAR(L->pred_base, 0.5, 1e-12, "baseline");
    CHECK_NEAR(L->mutual_info, 0.8112781, 1e-6, "mutual information");
    CHECK(L->top_tokens[0] == 10 && L->top_counts[0] == 2 && L->top_tokens[1] == 12 && L->top_counts[1] == 1 &&
              L->top_tokens[2] == -1,
          "expert 0 tokens %d %d", L->top_tokens[0], L->top_tokens[1]);
    CHECK(L->top_tokens[3 * RS_TOP_TOKENS] == 11, "expert 3 saw token 11");
    CHECK(s.layers[2].next_layer == -1 && s.layers[2].pred_acc == -1, "last layer predicts nothing");
    CHECK(s.layers[2].count[0] == 3 && s.layers[2].count[3] == 2, "layer 2 counts");
    route_stats_free(&s);
}

/* Sigmoid scores are normalised to a distribution first: {0.9, 0.3} -> {.75, .25}. */
static void test_sigmoid_normalised(void) {
    route_stats s;
    moe_err err;
    CHECK(route_stats_init(&s, 1, 2, 4, &err) == 0, "init");
    float sc[2] = {0.9f, 0.3f};
    int ids[1] = {0};
    float w[1] = {1};
    moe_route_event ev = {0, 0, 5, 1, 2, 1, ids, w, sc, sc, sc, NULL, 1.0f, 0};
    route_stats_add(&s, &ev);
    route_stats_finish(&s, &err);
    double p[2] = {.75, .25};
    CHECK_NEAR(s.layers[0].entropy_mean, H(p, 2), 1e-6, "entropy of normalised sigmoid scores");
    CHECK_NEAR(s.layers[0].mass_mean, 0.75, 1e-6, "mass");
    CHECK_NEAR(s.layers[0].cv, 1.0, 1e-12, "one of two experts always: cv 1");
    route_stats_free(&s);
}

int main(void) {
    test_hand_trace();
    test_sigmoid_normalised();
    return test_summary("test_route_stats");
}
