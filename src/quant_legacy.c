/* quant_legacy.c - reference dequantizers, dot products and quantizers of
 * Q4_1, Q5_0, Q5_1 and IQ4_NL (quant_legacy.h). Plain C: what llama.cpp
 * computes, and what faster kernels are tested against.
 *
 * Dequantizers keep ggml's order of float operations (d * q, then + m):
 * the build is ISO C, so the compiler never fuses them into an FMA and the
 * values equal ggml's and gguf-py's bit for bit. */
#include "quant_legacy.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "util.h"

const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The 5th bits of a Q5 block, element i at bit i. */
static uint32_t q5_high_bits(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* Element j and j + 16 of a 5-bit block: its nibble plus its 5th bit. */
static int q5_lo(const uint8_t *qs, uint32_t qh, int j) { return (qs[j] & 0xF) | (int)((qh >> j) & 1) << 4; }
static int q5_hi(const uint8_t *qs, uint32_t qh, int j) { return (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4; }

/* ------------------------------------------------------------ dequantize */

void dequantize_row_q4_1(const void *vx, float *y, int n) {
    const block_q4_1 *x = vx;
    for (int b = 0; b < n / QK4_1; b++, y += QK4_1) {
        float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(x[b].qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

void dequantize_row_q5_0(const void *vx, float *y, int n) {
    const block_q5_0 *x = vx;
    for (int b = 0; b < n / QK5_0; b++, y += QK5_0) {
        float d = f16_to_f32(x[b].d);
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(q5_lo(x[b].qs, qh, j) - 16) * d;
            y[j + 16] = (float)(q5_hi(x[b].qs, qh, j) - 16) * d;
        }
    }
}

void dequantize_row_q5_1(const void *vx, float *y, int n) {
    const block_q5_1 *x = vx;
    for (int b = 0; b < n / QK5_1; b++, y += QK5_1) {
        float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)q5_lo(x[b].qs, qh, j) * d + m;
            y[j + 16] = (float)q5_hi(x[b].qs, qh, j) * d + m;
        }
    }
}

void dequantize_row_iq4_nl(const void *vx, float *y, int n) {
    const block_iq4_nl *x = vx;
    for (int b = 0; b < n / QK4_NL; b++, y += QK4_NL) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)kvalues_iq4nl[x[b].qs[j] & 0xF];
            y[j + 16] = d * (float)kvalues_iq4nl[x[b].qs[j] >> 4];
        }
    }
}

/* ------------------------------------------------------------ reference dots */

/* Per block: the integer dot of the codes with the activation's int8
 * values, times both scales; an offset m adds m * (the activation block's
 * value sum), which Q8A carries as d_a * sum. */

float dot_q4_1_q8a_ref(const void *vw, const void *va, int n) {
    const block_q4_1 *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK4_1; b++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += (w[b].qs[j] & 0xF) * a[b].qs[j] + (w[b].qs[j] >> 4) * a[b].qs[j + 16];
        sum += f16_to_f32(w[b].d) * a[b].d * (float)s + f16_to_f32(w[b].m) * a[b].d * (float)a[b].sum;
    }
    return sum;
}

float dot_q5_0_q8a_ref(const void *vw, const void *va, int n) {
    const block_q5_0 *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK5_0; b++) {
        uint32_t qh = q5_high_bits(w[b].qh);
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += (q5_lo(w[b].qs, qh, j) - 16) * a[b].qs[j] + (q5_hi(w[b].qs, qh, j) - 16) * a[b].qs[j + 16];
        sum += f16_to_f32(w[b].d) * a[b].d * (float)s;
    }
    return sum;
}

float dot_q5_1_q8a_ref(const void *vw, const void *va, int n) {
    const block_q5_1 *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK5_1; b++) {
        uint32_t qh = q5_high_bits(w[b].qh);
        int s = 0;
        for (int j = 0; j < 16; j++) s += q5_lo(w[b].qs, qh, j) * a[b].qs[j] + q5_hi(w[b].qs, qh, j) * a[b].qs[j + 16];
        sum += f16_to_f32(w[b].d) * a[b].d * (float)s + f16_to_f32(w[b].m) * a[b].d * (float)a[b].sum;
    }
    return sum;
}

float dot_iq4_nl_q8a_ref(const void *vw, const void *va, int n) {
    const block_iq4_nl *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK4_NL; b++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += kvalues_iq4nl[w[b].qs[j] & 0xF] * a[b].qs[j] + kvalues_iq4nl[w[b].qs[j] >> 4] * a[b].qs[j + 16];
        sum += f16_to_f32(w[b].d) * a[b].d * (float)s;
    }
    return sum;
}

/* ------------------------------------------------------------ quantize */

/* The block's range: x ~ d * q + min with q in 0..levels-1; q rounds half
 * up by truncating q + 0.5 (ggml's reference). */
static void range_of(const float *x, float *min, float *max) {
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

/* (int)u, a code truncated as ggml's quantizers do, capped at top, for any
 * float: a block whose range or inverse scale overflows (values near
 * FLT_MAX, or tiny ones) gives Inf or NaN here, and converting those to int
 * is undefined (NaN: 0). */
static int code_of(float u, int top) { return u < (float)top ? (u > 0 ? (int)u : 0) : u >= (float)top ? top : 0; }

void quantize_row_q4_1(const float *x, void *vy, int n) {
    block_q4_1 *y = vy;
    for (int b = 0; b < n / QK4_1; b++, x += QK4_1) {
        if (!block_finite(x, QK4_1)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float min, max;
        range_of(x, &min, &max);
        float d = (max - min) / 15, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        y[b].m = f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            int q0 = code_of((x[j] - min) * id + 0.5f, 15), q1 = code_of((x[j + 16] - min) * id + 0.5f, 15);
            y[b].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* Put 32 five-bit codes into a Q5 block's nibbles and 5th bits. */
static void q5_pack(const int *q, uint8_t *qs, uint8_t qh[4]) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
        h |= (uint32_t)(q[j] >> 4 & 1) << j | (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> 8 * k);
}

void quantize_row_q5_0(const float *x, void *vy, int n) {
    block_q5_0 *y = vy;
    for (int b = 0; b < n / QK5_0; b++, x += QK5_0) {
        if (!block_finite(x, QK5_0)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float amax = 0, max = 0; /* the value of largest magnitude maps to -16 */
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -16, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        int q[32];
        for (int j = 0; j < 32; j++) {
            q[j] = code_of(x[j] * id + 16.5f, 31);
        }
        q5_pack(q, y[b].qs, y[b].qh);
    }
}

void quantize_row_q5_1(const float *x, void *vy, int n) {
    block_q5_1 *y = vy;
    for (int b = 0; b < n / QK5_1; b++, x += QK5_1) {
        if (!block_finite(x, QK5_1)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float min, max;
        range_of(x, &min, &max);
        float d = (max - min) / 31, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        y[b].m = f32_to_f16(min);
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = code_of((x[j] - min) * id + 0.5f, 31);
        q5_pack(q, y[b].qs, y[b].qh);
    }
}

/* ------------------------------------------------------------ IQ4 */

/* The index of the level of kvalues_iq4nl nearest to x (ggml best_index_int8). */
static int nearest_iq4(float x) {
    const int8_t *v = kvalues_iq4nl;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < v[mid]) hi = mid;
        else lo = mid;
    }
    return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

static int nearest_int(float x) { return (int)lrintf(x); }

void iq4_quantize(const float *x, int nsub, uint16_t *d_out, uint8_t *qs, uint16_t *scales_h, uint8_t *scales_l) {
    enum { NTRY = 7 }; /* what llama-quantize passes */
    uint8_t L[256];
    float scales[8], max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nsub; ib++) {
        const float *xb = x + 32 * ib;
        float amax = 0, max = 0, w[32];
        for (int j = 0; j < 32; j++) {
            w[j] = xb[j] * xb[j];
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        }
        if (amax < 1e-15f) { /* ggml GROUP_MAX_EPS: all zero */
            scales[ib] = 0;
            continue;
        }
        /* first the scale that maps the largest magnitude to the end level,
         * then 15 inverse scales around it; keep the least-squares scale of
         * the rounding that explains most (weights x^2) */
        float d = -max / kvalues_iq4nl[0], id = 1 / d, sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            int l = nearest_iq4(id * xb[j]);
            L[32 * ib + j] = (uint8_t)l;
            float q = kvalues_iq4nl[l];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -NTRY; itry <= NTRY; itry++) {
            id = (float)(itry + kvalues_iq4nl[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = kvalues_iq4nl[nearest_iq4(id * xb[j])];
                sumqx += w[j] * q * xb[j];
                sumq2 += w[j] * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if (fabsf(d) > amax_scale) {
            amax_scale = fabsf(d);
            max_scale = d;
        }
    }
    if (nsub > 1) { /* IQ4_XS: 6-bit sub-block scales (ls - 32) * d, codes again against them */
        *scales_h = 0;
        float d = -max_scale / 32, id = d != 0 ? 1 / d : 0.f;
        *d_out = f32_to_f16(d);
        for (int ib = 0; ib < nsub; ib++) {
            int l = nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            float dl = d * (float)l, idl = dl != 0 ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++) L[32 * ib + j] = (uint8_t)nearest_iq4(idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0) scales_l[ib / 2] = (uint8_t)(l & 0xF);
            else scales_l[ib / 2] |= (uint8_t)((l & 0xF) << 4);
            *scales_h |= (uint16_t)((l >> 4) << (2 * (ib % 8)));
        }
    } else { /* IQ4_NL: the float scale, codes again against it */
        *d_out = f32_to_f16(scales[0]);
        float id = scales[0] != 0 ? 1 / scales[0] : 0;
        for (int j = 0; j < 32; j++) L[j] = (uint8_t)nearest_iq4(id * x[j]);
    }
    for (int i = 0; i < nsub; i++)
        for (int j = 0; j < 16; j++) qs[16 * i + j] = (uint8_t)(L[32 * i + j] | L[32 * i + 16 + j] << 4);
}

void quantize_row_iq4_nl(const float *x, void *vy, int n) {
    block_iq4_nl *y = vy;
    for (int b = 0; b < n / QK4_NL; b++, x += QK4_NL) {
        if (!block_finite(x, QK4_NL)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        iq4_quantize(x, 1, &y[b].d, y[b].qs, NULL, NULL);
    }
}
