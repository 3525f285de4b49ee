/* sampler.c - logits -> next token.
 *
 * The order is llama.cpp's default chain: penalties (repetition, then
 * OpenAI's presence and frequency), top-k, top-p,
 * min-p, temperature, then a draw from the remaining distribution. A
 * temperature of 0 is greedy argmax (ties -> lower id). The RNG is a seeded
 * xorshift64*, so a seed always gives the same text. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"
#include "util.h"

typedef struct {
    int32_t id;
    float logit;
} candidate;

struct moe_sampler {
    moe_sampler_params p;
    int vocab;
    uint64_t rng;
    candidate *cand;  /* (vocab) working set, allocated once */
    float *prob;      /* (vocab) */
};

moe_sampler_params moe_sampler_default_params(void) {
    moe_sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .repeat_penalty = 1.0f,
                           .repeat_last_n = 64, .seed = 42};
    return p;
}

moe_sampler *moe_sampler_new(const moe_sampler_params *p, int vocab_size, moe_err *err) {
    moe_sampler_params dp = moe_sampler_default_params();
    if (!p) p = &dp;
    if (vocab_size <= 0) {
        moe_fail(err, "sampler: vocabulary size %d", vocab_size);
        return NULL;
    }
    if (!(p->temperature >= 0) || p->top_k < 0 || !(p->top_p > 0 && p->top_p <= 1) || !(p->min_p >= 0 && p->min_p <= 1) ||
        !(p->repeat_penalty > 0) || p->repeat_last_n < 0 || !(fabsf(p->presence_penalty) <= 100) ||
        !(fabsf(p->frequency_penalty) <= 100)) {
        moe_fail(err, "sampler: temperature >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p <= 1, repeat-penalty > 0, "
                      "|presence|, |frequency penalty| <= 100");
        return NULL;
    }
    moe_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->cand = malloc(sizeof *s->cand * (size_t)vocab_size);
        s->prob = malloc(sizeof *s->prob * (size_t)vocab_size);
    }
    if (!s || !s->cand || !s->prob) {
        moe_sampler_free(s);
        moe_fail(err, "out of memory");
        return NULL;
    }
    s->p = *p;
    s->vocab = vocab_size;
    s->rng = p->seed ^ 0x9e3779b97f4a7c15ull;
    if (!s->rng) s->rng = 1;
    return s;
}

void moe_sampler_free(moe_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s);
}

/* uniform in [0, 1) from the top 24 bits of xorshift64* */
static float rng_uniform(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (float)((x * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* Move the k best candidates (by_logit_desc order) to the front, in O(n log k)
 * with a min-heap on c[0..k); returns k. */
static int worse(const candidate *a, const candidate *b) { return by_logit_desc(a, b) > 0; }
static void sift_down(candidate *h, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && worse(&h[l], &h[m])) m = l;
        if (r < k && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        candidate t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}
static int keep_top_k(candidate *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);
    for (int i = k; i < n; i++)
        if (worse(&c[0], &c[i])) {
            c[0] = c[i];
            sift_down(c, k, 0);
        }
    return k;
}

/* HF/llama.cpp repetition penalty (positive logits shrink, negative grow),
 * then OpenAI's: logit -= presence + count * frequency, for each id among the
 * last last_n of the history (count = its occurrences there). */
static void apply_penalties(candidate *c, int n, const int32_t *hist, int n_hist, const moe_sampler_params *p) {
    if (!hist || (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f)) return;
    int from = n_hist > p->repeat_last_n ? n_hist - p->repeat_last_n : 0;
    for (int i = from; i < n_hist; i++) {
        int32_t id = hist[i];
        if (id < 0 || id >= n) continue;
        int seen = 0; /* penalise each id once however often it appeared */
        for (int j = from; j < i && !seen; j++) seen = hist[j] == id;
        if (seen) continue;
        int count = 1;
        for (int j = i + 1; j < n_hist; j++) count += hist[j] == id;
        if (p->repeat_penalty != 1.0f)
            c[id].logit = c[id].logit > 0 ? c[id].logit / p->repeat_penalty : c[id].logit * p->repeat_penalty;
        c[id].logit -= p->presence_penalty + (float)count * p->frequency_penalty;
    }
}

int32_t moe_sample(moe_sampler *s, const float *logits, const int32_t *history, int n_history) {
    if (!s || !logits) return -1;
    int n = s->vocab;
    candidate *c = s->cand;
    /* a NaN logit is never chosen: as -inf it keeps the sort's order total */
    for (int i = 0; i < n; i++) c[i] = (candidate){i, isnan(logits[i]) ? -INFINITY : logits[i]};
    apply_penalties(c, n, history, n_history, &s->p);

    if (s->p.temperature == 0.0f) { /* greedy */
        int best = 0;
        for (int i = 1; i < n; i++)
            if (c[i].logit > c[best].logit) best = i;
        return c[best].id;
    }

    /* top-k, then sort the survivors best first */
    if (s->p.top_k > 0 && s->p.top_k < n) n = keep_top_k(c, n, s->p.top_k);
    qsort(c, (size_t)n, sizeof *c, by_logit_desc);
    /* all -inf: nothing has a probability; +inf: it has all of it */
    if (isinf(c[0].logit)) return c[0].id;

    /* probabilities of what is left (temperature 1, as llama.cpp's filters see them) */
    float max = c[0].logit, sum = 0.0f;
    float *prob = s->prob;
    for (int i = 0; i < n; i++) sum += prob[i] = expf(c[i].logit - max);
    /* top-p: the smallest prefix whose mass reaches p */
    if (s->p.top_p < 1.0f) {
        float cum = 0.0f;
        for (int i = 0; i < n; i++) {
            cum += prob[i] / sum;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    /* min-p: drop tokens below min_p times the best probability */
    if (s->p.min_p > 0.0f)
        for (int i = 1; i < n; i++)
            if (prob[i] < s->p.min_p * prob[0]) {
                n = i;
                break;
            }
    /* temperature, then draw */
    sum = 0.0f;
    for (int i = 0; i < n; i++) sum += prob[i] = expf((c[i].logit - max) / s->p.temperature);
    float r = rng_uniform(&s->rng) * sum, cum = 0.0f;
    int32_t pick = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        cum += prob[i];
        if (r < cum) {
            pick = c[i].id;
            break;
        }
    }
    return pick;
}
