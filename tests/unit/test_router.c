/* test_router.c - route() on hand-built inputs whose answers are derived
 * here from the definitions (docs/FORMAT.md "Routing"), one case per family
 * rule, including inputs where the group limit or the bias changes the
 * winners, and the HF quirk that masked groups score 0, not -inf. */
#include "router.h"
#include "test_util.h"

#define MAXE 512

typedef struct {
    float scores[MAXE], choice[MAXE], weights[16];
    int ids[16];
    unsigned char groups[64];
    unsigned char mask[MAXE + 64];
    float group_scores[64];
} result;

static void run_off(const route_config *rc, const float *logits, const float *bias, const unsigned char *off,
                    result *r) {
    memset(r, 0, sizeof *r);
    route_io io = {.logits = logits, .bias = bias, .off = off, .scores = r->scores, .choice = r->choice,
                   .group_kept = r->groups, .ids = r->ids, .weights = r->weights, .mask = r->mask,
                   .group_scores = r->group_scores};
    route(rc, &io);
}

static void run(const route_config *rc, const float *logits, const float *bias, result *r) {
    run_off(rc, logits, bias, NULL, r);
}

static route_config cfg(int E, int k, score_func s, int norm, float scale) {
    route_config rc = {E, k, s, norm, scale, 1, 1, GROUP_MAX, 0};
    return rc;
}

static float sig(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Mixtral: softmax over all, top-2, renormalised = softmax over the two logits. */
static void test_mixtral(void) {
    float logits[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    route_config rc = cfg(4, 2, SCORE_SOFTMAX, 1, 1.0f);
    result r;
    run(&rc, logits, NULL, &r);
    CHECK(r.ids[0] == 2 && r.ids[1] == 1, "ids %d %d", r.ids[0], r.ids[1]);
    double w0 = 1.0 / (1.0 + exp(2.0 - 3.0)); /* e^3 / (e^3 + e^2) */
    CHECK_NEAR(r.weights[0], w0, 1e-6, "w0");
    CHECK_NEAR(r.weights[1], 1.0 - w0, 1e-6, "w1");
    double z = exp(1.0) + exp(2.0) + exp(3.0) + exp(0.5);
    CHECK_NEAR(r.scores[3], exp(0.5) / z, 1e-6, "softmax score");
}

/* Qwen2-MoE / OLMoE with norm_topk_prob false: weights are the raw softmax values. */
static void test_no_renorm(void) {
    float logits[5] = {0.0f, 1.0f, -1.0f, 2.0f, 1.5f};
    route_config rc = cfg(5, 3, SCORE_SOFTMAX, 0, 1.0f);
    result r;
    run(&rc, logits, NULL, &r);
    double z = exp(0.0) + exp(1.0) + exp(-1.0) + exp(2.0) + exp(1.5);
    CHECK(r.ids[0] == 3 && r.ids[1] == 4 && r.ids[2] == 1, "ids %d %d %d", r.ids[0], r.ids[1], r.ids[2]);
    CHECK_NEAR(r.weights[0], exp(2.0) / z, 1e-6, "w0");
    CHECK_NEAR(r.weights[1], exp(1.5) / z, 1e-6, "w1");
    CHECK_NEAR(r.weights[2], exp(1.0) / z, 1e-6, "w2");
}

/* Equal logits: the lower expert index wins, every time. */
static void test_ties(void) {
    float logits[6] = {0.3f, 0.7f, 0.7f, 0.1f, 0.7f, 0.7f};
    route_config rc = cfg(6, 3, SCORE_SOFTMAX, 1, 1.0f);
    result r;
    run(&rc, logits, NULL, &r);
    CHECK(r.ids[0] == 1 && r.ids[1] == 2 && r.ids[2] == 4, "tie order %d %d %d", r.ids[0], r.ids[1], r.ids[2]);
    CHECK_NEAR(r.weights[0], 1.0 / 3.0, 1e-6, "equal weights");
}

/* DeepSeek-V2 greedy without renormalisation: weights x routed_scaling_factor. */
static void test_v2_scale(void) {
    float logits[4] = {0.0f, 0.0f, log(3.0f), 0.0f};
    route_config rc = cfg(4, 1, SCORE_SOFTMAX, 0, 16.0f);
    result r;
    run(&rc, logits, NULL, &r);
    CHECK(r.ids[0] == 2, "id %d", r.ids[0]);
    CHECK_NEAR(r.weights[0], 16.0 * 3.0 / 6.0, 1e-5, "16 * softmax");
}

/* DeepSeek-V2 group_limited_greedy: 8 experts in 4 groups of 2, keep 2 groups
 * by their max. Unlimited top-2 would be experts 0 and 2 (groups 0 and 1),
 * but group 3's max... construct so the limit binds:
 *   group 0: {0: 5.0, 1: 4.9}   max 5.0
 *   group 1: {2: 4.95, 3: 0}    max 4.95
 *   group 2: {4: 0, 5: 0}
 *   group 3: {6: 4.8, 7: 4.7}   max 4.8
 * keep groups 0 and 1 -> top-3 = 0, 2, 1 (6 would beat nothing: its group is out).
 * With k = 3 and no limit the answer would be 0, 2, 1 too, so use k = 4:
 * limited -> 0, 2, 1, 3; unlimited -> 0, 2, 1, 6. */
static void test_v2_groups(void) {
    float logits[8] = {5.0f, 4.9f, 4.95f, 0.0f, 0.0f, 0.0f, 4.8f, 4.7f};
    route_config rc = cfg(8, 4, SCORE_SOFTMAX, 0, 1.0f);
    result free_r, lim;
    run(&rc, logits, NULL, &free_r);
    CHECK(free_r.ids[3] == 6, "unlimited 4th choice %d", free_r.ids[3]);
    rc.n_groups = 4;
    rc.groups_active = 2;
    rc.group_score = GROUP_MAX;
    run(&rc, logits, NULL, &lim);
    CHECK(lim.ids[0] == 0 && lim.ids[1] == 2 && lim.ids[2] == 1 && lim.ids[3] == 3, "limited ids %d %d %d %d",
          lim.ids[0], lim.ids[1], lim.ids[2], lim.ids[3]);
    CHECK(lim.groups[0] && lim.groups[1] && !lim.groups[2] && !lim.groups[3], "kept groups");
    /* the weight of expert 3 is its unmasked softmax score */
    CHECK_NEAR(lim.weights[3], lim.scores[3], 0, "weight = score");
}

/* DeepSeek-V3 noaux_tc: sigmoid scores; bias only chooses; group score = sum
 * of the two best biased scores. 8 experts, 4 groups of 2, keep 2, k = 2.
 *   logits            0: 2.0  1: -3.0 | 2: 1.0  3: 1.0 | 4: 0.0  5: 0.0 | 6: 1.5  7: -2.0
 * without bias: group sums: g0 = s(2)+s(-3), g1 = 2 s(1), g2 = 2 s(0), g3 = s(1.5)+s(-2)
 *   s(2)=.8808 s(-3)=.0474 -> .928;  g1 = 1.462;  g2 = 1.0;  g3 = .8176+.1192 = .937
 *   keep g1, g2 -> top-2 of {2,3,4,5} = 2, 3 (tie -> lower id first)
 * with bias +0.6 on expert 1: g0 = .8808+.6474 = 1.528 -> keep g0, g1 -> top-2
 *   of choice {0: .8808, 1: .6474, 2: .7311, 3: .7311} = 0, 2;
 * weights come from the unbiased sigmoid: renormalised s(2)/(s(2)+s(1)), x 2.5 */
static void test_v3_noaux(void) {
    float logits[8] = {2.0f, -3.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.5f, -2.0f};
    float zero[8] = {0}, bias[8] = {0, 0.6f, 0, 0, 0, 0, 0, 0};
    route_config rc = {8, 2, SCORE_SIGMOID, 1, 2.5f, 4, 2, GROUP_TOP2SUM, 1};
    result a, b;
    run(&rc, logits, zero, &a);
    CHECK(a.groups[1] && a.groups[2] && !a.groups[0] && !a.groups[3], "groups without bias");
    CHECK(a.ids[0] == 2 && a.ids[1] == 3, "ids without bias %d %d", a.ids[0], a.ids[1]);
    CHECK_NEAR(a.weights[0], 2.5 * 0.5, 1e-6, "equal scores share the mass");
    run(&rc, logits, bias, &b);
    CHECK(b.groups[0] && b.groups[1], "bias moves group 0 in");
    CHECK(b.ids[0] == 0 && b.ids[1] == 2, "ids with bias %d %d", b.ids[0], b.ids[1]);
    double w0 = sig(2.0f) / (sig(2.0f) + sig(1.0f));
    CHECK_NEAR(b.weights[0], 2.5 * w0, 1e-6, "weights from unbiased scores");
    CHECK_NEAR(b.weights[1], 2.5 * (1 - w0), 1e-6, "weights from unbiased scores");
    CHECK_NEAR(b.scores[1], sig(-3.0f), 1e-7, "scores stay unbiased");
    CHECK_NEAR(b.choice[1], sig(-3.0f) + 0.6f, 1e-6, "choice is biased");
}

/* The bias never changes a weight: whatever bias, the weights of the chosen
 * experts equal their renormalised unbiased scores. */
static void test_bias_never_weights(void) {
    float logits[16], bias[16];
    uint64_t s = 99;
    route_config rc = {16, 4, SCORE_SIGMOID, 1, 1.0f, 4, 2, GROUP_TOP2SUM, 1};
    for (int it = 0; it < 200; it++) {
        for (int e = 0; e < 16; e++) {
            s = s * 6364136223846793005ull + 1;
            logits[e] = (float)((s >> 40) % 2000) / 500.0f - 2.0f;
            bias[e] = (float)((s >> 20) % 1000) / 1000.0f - 0.5f;
        }
        result r;
        run(&rc, logits, bias, &r);
        double sum = 0;
        for (int i = 0; i < 4; i++) sum += sig(logits[r.ids[i]]);
        for (int i = 0; i < 4; i++) CHECK_NEAR(r.weights[i], sig(logits[r.ids[i]]) / sum, 1e-6, "unbiased weight");
    }
}

/* HF masks dropped groups with 0.0, not -inf: when the kept groups' biased
 * scores are negative, an expert from a dropped group (choice 0) wins.
 * 4 experts, 2 groups of 2, keep 1, k = 2, group score max:
 *   choice = sigmoid(l) + bias: {0: -0.2, 1: -0.3 | 2: -0.25, 3: -0.9}
 *   group 0 max -0.2 > group 1 max -0.25 -> keep group 0; group 1 -> 0.0, 0.0
 *   top-2 of {-0.2, -0.3, 0, 0} = 2, 3 (the masked ones, lower id first). */
static void test_masked_zero_quirk(void) {
    float logits[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float bias[4] = {-0.7f, -0.8f, -0.75f, -1.4f};
    route_config rc = {4, 2, SCORE_SIGMOID, 0, 1.0f, 2, 1, GROUP_MAX, 1};
    result r;
    run(&rc, logits, bias, &r);
    CHECK(r.groups[0] && !r.groups[1], "group 0 kept");
    CHECK(r.ids[0] == 2 && r.ids[1] == 3, "masked zeros win: %d %d", r.ids[0], r.ids[1]);
}

/* No cap on the number of experts: 384 experts, top-8; the answer is the 8
 * largest logits, placed at known positions. */
static void test_many_experts(void) {
    float logits[384];
    for (int e = 0; e < 384; e++) logits[e] = (float)((e * 37) % 101) / 101.0f; /* all < 1 */
    int hot[8] = {383, 7, 200, 129, 64, 300, 1, 255};
    for (int i = 0; i < 8; i++) logits[hot[i]] = 10.0f - i;
    route_config rc = cfg(384, 8, SCORE_SOFTMAX, 1, 1.0f);
    result r;
    run(&rc, logits, NULL, &r);
    for (int i = 0; i < 8; i++) CHECK(r.ids[i] == hot[i], "rank %d: %d vs %d", i, r.ids[i], hot[i]);
    double sum = 0;
    for (int i = 0; i < 8; i++) sum += r.weights[i];
    CHECK_NEAR(sum, 1.0, 1e-5, "renormalised");
}

/* Disabled experts (routing experiments): never chosen, -inf in the choice,
 * weights still from the unmasked scores (renormalised only if the family does). */
static void test_disabled(void) {
    float logits[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    unsigned char off[4] = {0, 0, 1, 0};
    route_config rc = cfg(4, 2, SCORE_SOFTMAX, 1, 1.0f);
    result r;
    run_off(&rc, logits, NULL, off, &r);
    CHECK(r.ids[0] == 1 && r.ids[1] == 0, "mixtral without expert 2: %d %d", r.ids[0], r.ids[1]);
    CHECK(isinf(r.choice[2]) && r.choice[2] < 0, "choice of a disabled expert is -inf");
    CHECK_NEAR(r.weights[0], 1.0 / (1.0 + exp(-1.0)), 1e-6, "softmax over the two chosen logits");
    rc.norm_topk = 0; /* no renormalisation: the disabled expert's mass is simply dropped */
    run_off(&rc, logits, NULL, off, &r);
    double z = exp(1.0) + exp(2.0) + exp(3.0) + exp(0.5);
    CHECK_NEAR(r.weights[0], exp(2.0) / z, 1e-6, "unrenormalised weight");

    /* V3 grouping: disabling expert 0 makes group 0's top-2 sum -inf, so with
     * bias on expert 1 (which kept group 0 in test_v3_noaux) group 0 drops out */
    float l3[8] = {2.0f, -3.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.5f, -2.0f};
    float bias[8] = {0, 0.6f, 0, 0, 0, 0, 0, 0};
    unsigned char off3[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    route_config r3 = {8, 2, SCORE_SIGMOID, 1, 2.5f, 4, 2, GROUP_TOP2SUM, 1};
    run_off(&r3, l3, bias, off3, &r);
    CHECK(!r.groups[0] && r.groups[1] && r.groups[2], "group with a disabled expert scores -inf");
    CHECK(r.ids[0] == 2 && r.ids[1] == 3, "ids %d %d", r.ids[0], r.ids[1]);
    CHECK(isinf(r.choice[0]) && r.choice[1] == 0.0f, "dropped group: 0, disabled stays -inf");

    /* randomised: a disabled expert never appears, whatever the scores */
    uint64_t s = 5;
    route_config rr = {16, 4, SCORE_SIGMOID, 1, 1.0f, 4, 2, GROUP_TOP2SUM, 1};
    unsigned char offr[16] = {0};
    offr[3] = offr[9] = offr[10] = 1;
    float lr[16], br[16];
    int bad = 0;
    for (int it = 0; it < 500; it++) {
        for (int e = 0; e < 16; e++) {
            s = s * 6364136223846793005ull + 1;
            lr[e] = (float)((s >> 40) % 2000) / 500.0f - 2.0f;
            br[e] = (float)((s >> 20) % 1000) / 1000.0f - 0.5f;
        }
        lr[3] = lr[9] = 50.0f; /* would win by far */
        run_off(&rr, lr, br, offr, &r);
        for (int i = 0; i < 4; i++) bad += offr[r.ids[i]];
    }
    CHECK(bad == 0, "%d disabled choices", bad);
}

int main(void) {
    test_disabled();
    test_mixtral();
    test_no_renorm();
    test_ties();
    test_v2_scale();
    test_v2_groups();
    test_v3_noaux();
    test_bias_never_weights();
    test_masked_zero_quirk();
    test_many_experts();
    return test_summary("test_router");
}
