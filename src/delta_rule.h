/* delta_rule.h - the gated delta rule of one value head (Gated DeltaNet,
 * deltanet.c), token by token and chunk by chunk.
 *
 * Over tokens t with query q_t, key k_t (dk), value v_t (dv), beta_t and
 * log decay g_t, the state S (dk, dv) evolves as
 *     S_t = e^g_t S_{t-1} + k_t u_t^T,   u_t = beta_t (v_t - e^g_t S_{t-1}^T k_t),
 *     o_t = S_t^T q_t
 * (HF torch_recurrent_gated_delta_rule). delta_rule_recurrent runs that
 * literally, one pass over S a token, which is what decode does.
 * delta_rule_chunked computes the same function for a run of tokens 64 at a
 * time (HF torch_chunk_gated_delta_rule's chunk size): with G_t the running
 * sum of g inside a chunk that starts from S0,
 *     S_t = e^G_t S0 + sum_{s<=t} e^(G_t-G_s) k_s u_s^T,
 * so the chunk's u solve one unit lower-triangular system
 *     u_t + beta_t sum_{s<t} e^(G_t-G_s) (k_t.k_s) u_s = beta_t (v_t - e^G_t S0^T k_t)
 * (the WY / UT form), and
 *     o_t = e^G_t S0^T q_t + sum_{s<=t} e^(G_t-G_s) (q_t.k_s) u_s,
 *     S_end = e^G_last S0 + sum_s e^(G_last-G_s) k_s u_s^T.
 * S is read twice and written once per chunk instead of per token, and the
 * work is small matrix products (the kernel set's float tile). Every
 * exponent is <= 0, so nothing overflows however long the decay.
 * Both store S transposed, (dv, dk) row-major: row j is column j of HF's
 * (dk, dv) state, so S^T k is dot products of rows. The two order their
 * float sums differently, so they agree to rounding (test_delta_rule), not
 * bit for bit. */
#ifndef MOE_DELTA_RULE_H
#define MOE_DELTA_RULE_H

#include <stddef.h>

#include "kernels.h"

#define DELTA_CHUNK 64   /* tokens per chunk */
#define DELTA_CHUNK_MIN 8 /* runs shorter than this go token by token: as fast or faster there
                             (one 128 x 128 head, AVX-512 set, us a token recurrent vs chunked:
                             6 tokens 3.9 vs 4.2, 8 tokens 3.9 vs 3.4, 64 tokens 4.3 vs 2.3) */

/* One value head's n tokens: row t of each input at base + t * stride. */
typedef struct {
    const float *q, *k;  /* (n, dk) rows; q already L2-normalised and scaled */
    const float *v;      /* (n, dv) rows */
    size_t qkv_stride;
    const float *beta;   /* (n) at beta[t * gate_stride] */
    const float *g;      /* (n) log decay, <= 0, at g[t * gate_stride] */
    size_t gate_stride;
    float *o;            /* (n, dv) output rows */
    size_t o_stride;
} delta_head;

/* Floats of scratch either function needs (one thread's share). */
size_t delta_rule_scratch_floats(int dk, int dv);

/* Advance S^T (dv, dk) through the n tokens of h, writing o. ks supplies
 * the float tile, dot and axpy; scratch holds delta_rule_scratch_floats. */
void delta_rule_recurrent(const kernel_set *ks, float *S, int dk, int dv, int n, const delta_head *h,
                          float *scratch);
void delta_rule_chunked(const kernel_set *ks, float *S, int dk, int dv, int n, const delta_head *h, float *scratch);

#endif /* MOE_DELTA_RULE_H */
