/* ops.c - vector operations of the forward pass. */
#include "ops.h"

#include <math.h>

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0; /* double: the mean of squares is the one long reduction here */
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
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

void softmax_fast(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    exp_normalize(x, n, max, 0.0f);
}

void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
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
    float max = sink;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    exp_normalize(x, n, max, exp_fast(sink - max));
}

void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void clamp_abs(float *x, int n, float c) {
    for (int i = 0; i < n; i++) x[i] = x[i] > c ? c : x[i] < -c ? -c : x[i];
}
