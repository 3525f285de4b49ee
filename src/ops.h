/* ops.h - the small vector operations of the forward pass (norms, softmax,
 * activations). Plain loops: they cost little next to the matmuls. */
#ifndef MOE_OPS_H
#define MOE_OPS_H

/* out = w * x / sqrt(mean(x^2) + eps)   (HF LlamaRMSNorm, computed in float) */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* in-place softmax over n values */
void softmax(float *x, int n);
float sigmoidf(float x);
/* gate[i] = silu(gate[i]) * up[i]   (SwiGLU: act_fn(gate_proj(x)) * up_proj(x)) */
void swiglu(float *gate, const float *up, int n);
/* y += a * x */
void axpy(float *y, float a, const float *x, int n);
/* clamp to [-c, c] */
void clamp_abs(float *x, int n, float c);

#endif /* MOE_OPS_H */
