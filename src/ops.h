/* ops.h - the small vector operations of the forward pass (norms, softmax,
 * activations). Plain loops: they cost little next to the matmuls. */
#ifndef MOE_OPS_H
#define MOE_OPS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* out = w * x / sqrt(mean(x^2) + eps)   (HF LlamaRMSNorm, computed in float) */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* in-place softmax over n values (libm's expf: routers use it, so a
 * routing decision never rests on an approximation) */
void softmax(float *x, int n);
/* exp(x) = 2^k e^r with k = round(x / ln 2) and |r| <= ln 2 / 2 (ln 2 in two
 * parts, so r is exact to float precision), e^r by its Taylor series to r^7
 * (truncation < 1e-8 relative): within 2 float ulps of expf (test_ops).
 * Branch-free and without calls, so the compiler vectorizes loops over it.
 * k comes from the round-to-nearest of adding 1.5 * 2^23; 2^k is built in
 * the exponent bits. Below -87.3 (2^k subnormal) the result is 0; above
 * 88.3 (2^k would overflow), inf; NaN stays NaN. */
static inline float exp_fast(float x) {
    const float big = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x > -87.3f ? x : -87.3f; /* NaN too: no float-to-int of a NaN below */
    xc = xc < 88.3f ? xc : 88.3f;
    float k = (xc * 1.44269504f + big) - big;
    float r = (xc - k * 0.693145752f) - k * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
              r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    float e = p * two_k;
    return x < -87.3f ? 0.0f : x > 88.3f ? INFINITY : x == x ? e : x;
}

/* in-place softmax with exp_fast: attention's, over up to n_ctx keys a row */
void softmax_fast(float *x, int n);
float sigmoidf(float x);
/* gate[i] = silu(gate[i]) * up[i]   (SwiGLU: act_fn(gate_proj(x)) * up_proj(x)), exp_fast */
void swiglu(float *gate, const float *up, int n);
/* x[i] = silu(x[i]) = x[i] * sigmoid(x[i]), exp_fast */
void silu(float *x, int n);
/* x[i] *= silu(g[i])   (a gated RMSNorm's output gate), exp_fast */
void mul_silu(float *x, const float *g, int n);
/* gpt-oss's clamped SwiGLU on biased projections (HF GptOssExperts):
 * g = min(gate + bg, limit), u = clamp(up + bu, -limit, limit),
 * gate[i] = g * sigmoid(alpha * g) * (u + 1). */
void swiglu_oai(float *gate, const float *up, const float *bg, const float *bu, int n, float limit, float alpha);
/* in-place softmax over n values plus one extra logit (an attention sink):
 * the sink takes its share of the denominator and is dropped (exp_fast) */
void softmax_sink(float *x, int n, float sink);
/* y += a * x */
void axpy(float *y, float a, const float *x, int n);
/* clamp to [-c, c] */
void clamp_abs(float *x, int n, float c);

#endif /* MOE_OPS_H */
