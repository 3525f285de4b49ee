/* delta_rule.c - the gated delta rule of one value head, recurrent and
 * chunked (the algebra: delta_rule.h). */
#include "delta_rule.h"

#include <math.h>
#include <string.h>

/* e^x, or 0 below e^-40 (4e-18): a factor that small changes no float sum
 * it joins (the current token's term enters at full weight), and keeping
 * it would turn its products into subnormals, which are slow on x86
 * (docs/BENCHMARKS.md, 2026-12-06, chunked Gated DeltaNet prefill) */
static float decay(float x) { return x < -40.0f ? 0.0f : expf(x); }

#define PAD 16 /* chunk products run over a multiple of this many tokens (DELTA_CHUNK is one) */

/* Scratch of a chunk, carved from the caller's floats (C = DELTA_CHUNK). */
typedef struct {
    float *G, *w;    /* (C) running log decay, e^(G_last - G_s) */
    float *u;        /* (C, dv) the chunk's u rows */
    float *ut;       /* (dv, C) u transposed */
    float *kwt;      /* (dk, C) keys transposed, column s times w[s] */
    float *kk, *qk;  /* (C, C) k_t.k_s, then q_t.k_s masked and decayed */
    float *part;     /* (C, dv) this chunk's share of the outputs */
    float *snew;     /* (dv, dk) this chunk's addition to the state */
    float *q, *k;    /* (C, dk) the chunk's queries and keys, packed */
    float *o;        /* (C, dv) the chunk's outputs, packed */
} chunk_scratch;

static chunk_scratch carve(float *p, int dk, int dv) {
    size_t C = DELTA_CHUNK;
    chunk_scratch s = {.G = p, .w = p + C};
    s.u = s.w + C;
    s.ut = s.u + C * (size_t)dv;
    s.kwt = s.ut + C * (size_t)dv;
    s.kk = s.kwt + C * (size_t)dk;
    s.qk = s.kk + C * C;
    s.part = s.qk + C * C;
    s.snew = s.part + C * (size_t)dv;
    s.q = s.snew + (size_t)dv * (size_t)dk;
    s.k = s.q + C * (size_t)dk;
    s.o = s.k + C * (size_t)dk;
    return s;
}

size_t delta_rule_scratch_floats(int dk, int dv) {
    size_t C = DELTA_CHUNK;
    return 2 * C + 4 * C * (size_t)dv + 3 * C * (size_t)dk + 2 * C * C + (size_t)dv * (size_t)dk;
}

/* Token by token. The state is stored transposed, row j = column j of HF's
 * (dk, dv) state, and each row evolves on its own: delta_j reads row j
 * only, so a row is read, updated and read for o_j while in L1, and S is
 * read once and written once a token: decode is bound by that traffic
 * (2 MB per layer in Qwen3.5-35B-A3B), not by the arithmetic. The decay is
 * folded in: (d S)^T k = d (S^T k). */
void delta_rule_recurrent(const kernel_set *ks, float *S, int dk, int dv, int n, const delta_head *h,
                          float *scratch) {
    (void)scratch;
    for (int t = 0; t < n; t++) {
        const float *qt = h->q + (size_t)t * h->qkv_stride, *kt = h->k + (size_t)t * h->qkv_stride;
        const float *vt = h->v + (size_t)t * h->qkv_stride;
        float d = decay(h->g[(size_t)t * h->gate_stride]), b = h->beta[(size_t)t * h->gate_stride];
        float *ot = h->o + (size_t)t * h->o_stride;
        for (int j = 0; j < dv; j++) {
            float *row = S + (size_t)j * dk;
            float dj = b * (vt[j] - d * ks->dot_f32(row, kt, dk)); /* delta_j */
            for (int i = 0; i < dk; i++) row[i] = d * row[i] + dj * kt[i];
            ot[j] = ks->dot_f32(row, qt, dk);
        }
    }
}

/* y[t][r] = W row r . x row t: the kernel set's float tile (strides in floats) */
static void tile(const kernel_set *ks, int n, const float *w, size_t w_stride, int nr, const float *x,
                 size_t x_stride, int nt, float *y, size_t ldy) {
    kernel_tile(ks, DT_F32, n, w, w_stride * sizeof(float), nr, x, x_stride * sizeof(float), NULL, nt, y, ldy);
}

/* One chunk of c <= DELTA_CHUNK tokens (h points at its first); S is (dv, dk). */
static void delta_chunk(const kernel_set *ks, float *S, int dk, int dv, int c, const delta_head *h, float *scratch) {
    chunk_scratch m = carve(scratch, dk, dv);
    size_t C = DELTA_CHUNK, DK = (size_t)dk, DV = (size_t)dv;
    /* packed copies: rows of the pass are channels apart (32 KB in Qwen3.5), a
     * stride at which a chunk's rows would all fall into the same cache sets */
    for (int t = 0; t < c; t++) {
        memcpy(m.q + t * DK, h->q + (size_t)t * h->qkv_stride, sizeof(float) * DK);
        memcpy(m.k + t * DK, h->k + (size_t)t * h->qkv_stride, sizeof(float) * DK);
    }
    float run = 0.0f;
    for (int t = 0; t < c; t++) m.G[t] = run += h->g[(size_t)t * h->gate_stride];

    /* u_t = beta_t (v_t - e^G_t S0^T k_t), o_t = e^G_t S0^T q_t */
    tile(ks, dk, S, DK, dv, m.k, DK, c, m.u, DV);
    tile(ks, dk, S, DK, dv, m.q, DK, c, m.o, DV);
    for (int t = 0; t < c; t++) {
        float gam = decay(m.G[t]), b = h->beta[(size_t)t * h->gate_stride];
        float *ut = m.u + t * DV, *ot = m.o + t * DV;
        const float *vt = h->v + (size_t)t * h->qkv_stride;
        for (int j = 0; j < dv; j++) {
            ut[j] = b * (vt[j] - gam * ut[j]);
            ot[j] *= gam;
        }
    }

    /* the unit lower-triangular system by forward substitution: u_t is
     * final once u_0 .. u_(t-1) are */
    tile(ks, dk, m.k, DK, c, m.k, DK, c, m.kk, C);
    for (int t = 1; t < c; t++) {
        float *ut = m.u + t * DV, b = h->beta[(size_t)t * h->gate_stride];
        for (int s = 0; s < t; s++) ks->axpy_f32(ut, -b * decay(m.G[t] - m.G[s]) * m.kk[t * C + s], m.u + s * DV, dv);
    }
    /* the products over the chunk's tokens below run over cp, zero-padded:
     * SIMD tiles take whole vectors (16 floats), not a tail */
    int cp = (c + PAD - 1) / PAD * PAD;
    for (int j = 0; j < dv; j++)
        for (int t = 0; t < cp; t++) m.ut[j * C + t] = t < c ? m.u[t * DV + j] : 0.0f;

    /* o_t += sum_{s<=t} e^(G_t - G_s) (q_t.k_s) u_s */
    tile(ks, dk, m.k, DK, c, m.q, DK, c, m.qk, C);
    for (int t = 0; t < c; t++)
        for (int s = 0; s < cp; s++) {
            float *a = m.qk + t * C + s;
            *a = s <= t ? decay(m.G[t] - m.G[s]) * *a : 0.0f;
        }
    tile(ks, cp, m.ut, C, dv, m.qk, C, c, m.part, DV);
    for (int t = 0; t < c; t++) {
        float *ot = h->o + (size_t)t * h->o_stride;
        const float *a = m.o + t * DV, *p = m.part + t * DV;
        for (int j = 0; j < dv; j++) ot[j] = a[j] + p[j];
    }

    /* S = e^G_last S0 + sum_s e^(G_last - G_s) k_s u_s^T, i.e. row j of S^T
     * gains sum_s u_s[j] w_s k_s */
    float last = m.G[c - 1], dec = decay(last);
    for (int s = 0; s < c; s++) m.w[s] = decay(last - m.G[s]);
    for (int i = 0; i < dk; i++)
        for (int s = 0; s < cp; s++) m.kwt[i * C + s] = s < c ? m.w[s] * m.k[s * DK + i] : 0.0f;
    tile(ks, cp, m.kwt, C, dk, m.ut, C, dv, m.snew, DK);
    for (size_t i = 0; i < DK * DV; i++) S[i] = dec * S[i] + m.snew[i];
}

void delta_rule_chunked(const kernel_set *ks, float *S, int dk, int dv, int n, const delta_head *h, float *scratch) {
    for (int t0 = 0; t0 < n; t0 += DELTA_CHUNK) {
        delta_head part = *h;
        part.q += (size_t)t0 * h->qkv_stride;
        part.k += (size_t)t0 * h->qkv_stride;
        part.v += (size_t)t0 * h->qkv_stride;
        part.beta += (size_t)t0 * h->gate_stride;
        part.g += (size_t)t0 * h->gate_stride;
        part.o += (size_t)t0 * h->o_stride;
        delta_chunk(ks, S, dk, dv, n - t0 < DELTA_CHUNK ? n - t0 : DELTA_CHUNK, &part, scratch);
    }
}
