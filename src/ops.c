/* ops.c - vector operations of the forward pass. */
#include "ops.h"

#include <math.h>

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    /* double: the mean of squares is the one long reduction here; four
     * partial sums, not one chain of dependent adds: a 2048-wide norm
     * 1.26 -> 0.63 us, Qwen3's 36 per-head q/k norms 2.8 -> 1.8 us (in
     * cache), serial work the other thread waits for */
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += (double)x[i + k] * x[i + k];
    for (; i < n; i++) s[0] += (double)x[i] * x[i];
    double ss = (s[0] + s[1]) + (s[2] + s[3]);
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

/* x[i] = exp(x[i] - max) / sum of them all plus `sum` (a sink's share, or 0). */
static void exp_normalize(float *x, int n, float max, float sum) {
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) {
        x[i] = exp_fast(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* The largest of n values (n >= 1) as a vector reduction, not one chain
 * of dependent compares: attention's softmax at 2048 keys 90.7 -> 66.3 us
 * a layer and thread (docs/BENCHMARKS.md, 2026-12-07, fourth session). */
static float max_of(const float *x, int n, float max) {
#pragma omp simd reduction(max : max)
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    return max;
}

void softmax_fast(float *x, int n) { exp_normalize(x, n, max_of(x, n, x[0]), 0.0f); }

void softmax(float *x, int n) {
    float max = max_of(x, n, x[0]);
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void swiglu(float *gate, const float *up, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + exp_fast(-gate[i])) * up[i];
}

void silu(float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) x[i] = x[i] / (1.0f + exp_fast(-x[i]));
}

void mul_silu(float *x, const float *g, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) x[i] *= g[i] / (1.0f + exp_fast(-g[i]));
}

void swiglu_oai(float *gate, const float *up, const float *bg, const float *bu, int n, float limit, float alpha) {
    for (int i = 0; i < n; i++) {
        float g = gate[i] + (bg ? bg[i] : 0.0f), u = up[i] + (bu ? bu[i] : 0.0f);
        g = g < limit ? g : limit; /* NaN-free inputs: fminf's semantics are not needed */
        u = u < -limit ? -limit : u > limit ? limit : u;
        gate[i] = g / (1.0f + exp_fast(-alpha * g)) * (u + 1.0f);
    }
}

void softmax_sink(float *x, int n, float sink) {
    float max = max_of(x, n, sink);
    exp_normalize(x, n, max, exp_fast(sink - max));
}

void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void clamp_abs(float *x, int n, float c) {
    for (int i = 0; i < n; i++) x[i] = x[i] > c ? c : x[i] < -c ? -c : x[i];
}
