/* test_sampler.c - greedy is argmax, the same seed gives the same tokens, the
 * filters keep what their definitions say, and sampling at temperature 1
 * follows the softmax distribution. */
#include "moe.h"
#include "test_util.h"

static moe_sampler *make(float temp, int top_k, float top_p, float min_p, float pen, uint64_t seed, int V) {
    moe_sampler_params p = {temp, top_k, top_p, min_p, pen, 64, seed, 0, 0};
    moe_err err = {{0}};
    moe_sampler *s = moe_sampler_new(&p, V, &err);
    if (!s) { fprintf(stderr, "sampler: %s\n", err.msg); exit(1); }
    return s;
}

int main(void) {
    float logits[6] = {0.5f, 2.0f, 1.0f, 2.0f, -1.0f, 0.0f};
    /* greedy: the first of the two maxima */
    moe_sampler *g = make(0, 0, 1, 0, 1, 1, 6);
    CHECK(moe_sample(g, logits, NULL, 0) == 1, "greedy argmax, tie to lower id");
    /* repetition penalty: token 1 seen, 2.0/2 = 1.0 < 2.0 -> token 3 wins */
    moe_sampler *gp = make(0, 0, 1, 0, 2.0f, 1, 6);
    int32_t hist[2] = {1, 1};
    CHECK(moe_sample(gp, logits, hist, 2) == 3, "penalty moves the argmax");
    /* negative logits are multiplied: -1 * 2 = -2 */
    float neg[6] = {-1.0f, -1.5f, -3.0f, -4.0f, -5.0f, -6.0f};
    int32_t h0[1] = {0};
    CHECK(moe_sample(gp, neg, h0, 1) == 1, "penalty on a negative logit pushes it down");

    /* top-k 1 and a tiny top-p both reduce to greedy */
    moe_sampler *k1 = make(1.0f, 1, 1, 0, 1, 7, 6), *p0 = make(1.0f, 0, 1e-6f, 0, 1, 7, 6);
    int ok_k = 1, ok_p = 1;
    for (int i = 0; i < 200; i++) {
        ok_k &= moe_sample(k1, logits, NULL, 0) == 1;
        ok_p &= moe_sample(p0, logits, NULL, 0) == 1;
    }
    CHECK(ok_k, "top-k 1 is greedy");
    CHECK(ok_p, "top-p -> 0 is greedy");

    /* min-p 0.5: keeps tokens with p >= 0.5 p_max: ids 1 and 3 (e^2), not 2 (e^1 < 0.5 e^2) */
    moe_sampler *mp = make(1.0f, 0, 1, 0.5f, 1, 3, 6);
    int seen[6] = {0};
    for (int i = 0; i < 2000; i++) seen[moe_sample(mp, logits, NULL, 0)]++;
    CHECK(seen[0] == 0 && seen[2] == 0 && seen[4] == 0 && seen[5] == 0, "min-p removes the tail");
    CHECK(seen[1] > 800 && seen[3] > 800, "min-p keeps both maxima (%d, %d)", seen[1], seen[3]);

    /* same seed, same sequence; another seed, another sequence */
    moe_sampler *a = make(0.9f, 0, 1, 0, 1, 12345, 6), *b = make(0.9f, 0, 1, 0, 1, 12345, 6), *c = make(0.9f, 0, 1, 0, 1, 999, 6);
    int same = 1, diff = 0;
    for (int i = 0; i < 500; i++) {
        int32_t x = moe_sample(a, logits, NULL, 0), y = moe_sample(b, logits, NULL, 0), z = moe_sample(c, logits, NULL, 0);
        same &= x == y;
        diff += x != z;
    }
    CHECK(same, "same seed gives the same tokens");
    CHECK(diff > 0, "another seed gives other tokens");

    /* temperature 1, no filters: frequencies follow softmax(logits) */
    moe_sampler *t1 = make(1.0f, 0, 1, 0, 1, 2024, 6);
    int counts[6] = {0}, N = 60000;
    for (int i = 0; i < N; i++) counts[moe_sample(t1, logits, NULL, 0)]++;
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    for (int i = 0; i < 6; i++) {
        double p = exp(logits[i]) / z, sd = sqrt(N * p * (1 - p));
        CHECK(fabs(counts[i] - N * p) < 5 * sd + 1, "token %d: %d draws, expected %.0f +- %.0f", i, counts[i], N * p, sd);
    }
    /* top-k 2 at temperature 1: only ids 1 and 3, equally often */
    moe_sampler *k2 = make(1.0f, 2, 1, 0, 1, 5, 6);
    int c1 = 0, c3 = 0;
    for (int i = 0; i < 4000; i++) {
        int32_t x = moe_sample(k2, logits, NULL, 0);
        c1 += x == 1;
        c3 += x == 3;
    }
    CHECK(c1 + c3 == 4000 && abs(c1 - c3) < 300, "top-k 2: %d / %d", c1, c3);

    /* presence and frequency penalties (greedy): logits {0.5, 2, 1, 2, -1, 0}, history 1, 1, 2.
     * presence 0.6: id 1 -> 1.4, id 2 -> 0.4, id 3 stays 2.0 and wins */
    moe_sampler_params pp = {0, 0, 1, 0, 1, 64, 1, 0.6f, 0};
    moe_sampler *pres = moe_sampler_new(&pp, 6, NULL);
    int32_t h112[3] = {1, 1, 2};
    CHECK(pres && moe_sample(pres, logits, h112, 3) == 3, "presence penalty moves the argmax off id 1");
    /* frequency 0.3 (counts 2, 1): id 1 -> 1.4, id 3 stays 2.0; with id 3 seen three times: 2 - 0.9 = 1.1
     * and id 1 seen once: 1.7 -> id 1 wins */
    moe_sampler_params fp = {0, 0, 1, 0, 1, 64, 1, 0, 0.3f};
    moe_sampler *freq = moe_sampler_new(&fp, 6, NULL);
    int32_t h3331[4] = {3, 3, 3, 1};
    CHECK(freq && moe_sample(freq, logits, h112, 3) == 3, "frequency penalty: id 1 twice");
    CHECK(freq && moe_sample(freq, logits, h3331, 4) == 1, "frequency penalty counts occurrences");
    /* the window: with repeat_last_n 1 only the last id (1) counts */
    moe_sampler_params wp = {0, 0, 1, 0, 1, 1, 1, 0, 0.3f};
    moe_sampler *win = moe_sampler_new(&wp, 6, NULL);
    CHECK(win && moe_sample(win, logits, h3331, 4) == 3, "penalties see the last repeat_last_n ids only");
    moe_sampler_free(pres);
    moe_sampler_free(freq);
    moe_sampler_free(win);

    /* NaN logits are never picked, by greedy or by sampling with or without top-k (an
     * inconsistent sort order would be undefined for qsort); all NaN or -inf gives id 0 */
    float nan6[6] = {NAN, 1.0f, NAN, 0.5f, NAN, NAN};
    float none[6] = {NAN, -INFINITY, NAN, -INFINITY, NAN, NAN};
    int nan_ok = moe_sample(g, nan6, NULL, 0) == 1;
    moe_sampler *t1n = make(1.0f, 0, 1, 0, 1, 11, 6), *k3n = make(1.0f, 3, 0.9f, 0.01f, 1.1f, 12, 6);
    for (int i = 0; i < 300; i++) {
        int32_t x = moe_sample(t1n, nan6, NULL, 0), y = moe_sample(k3n, nan6, h0, 1);
        nan_ok &= (x == 1 || x == 3) && (y == 1 || y == 3);
    }
    CHECK(nan_ok, "a NaN logit is never picked");
    CHECK(moe_sample(g, none, NULL, 0) == 0 && moe_sample(t1n, none, NULL, 0) == 0,
          "no finite logit: id 0");
    moe_sampler_free(t1n);
    moe_sampler_free(k3n);

    /* invalid parameters are refused */
    moe_sampler_params bad = {-1.0f, 0, 1, 0, 1, 64, 0, 0, 0};
    moe_err err = {{0}};
    CHECK(moe_sampler_new(&bad, 6, &err) == NULL && err.msg[0], "negative temperature refused");

    moe_sampler *all[] = {g, gp, k1, p0, mp, a, b, c, t1, k2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) moe_sampler_free(all[i]);
    return test_summary("test_sampler");
}
