/* quant_k.c - reference dequantizers, dot products and quantizers of Q2_K,
 * Q3_K, Q5_K, Q6_K and IQ4_XS (quant_k.h). Plain C: what llama.cpp
 * computes, and what faster kernels are tested against.
 *
 * Dequantizers keep ggml's order of float operations ((d * sc) * q - dmin
 * * m); the build is ISO C, so nothing is fused into an FMA and the values
 * equal ggml's and gguf-py's bit for bit. The quantizers follow ggml's
 * reference algorithms step by step (same float expressions), so a tensor
 * quantized here has the bytes llama-quantize writes. */
#include "quant_k.h"

#include <math.h>
#include <string.h>

#include "quant_legacy.h"
#include "util.h"

static int nearest_int(float x) { return (int)lrintf(x); } /* half to even, as ggml's */

/* ------------------------------------------------------------ dequantize */

void dequantize_row_q2_K(const void *vx, float *y, int n) {
    const block_q2_K *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
        for (int e = 0; e < QK_K; e++, y++) {
            int h = e / 128, k = e / 32 % 4, l = e % 32;
            uint8_t sc = x[b].scales[8 * h + 2 * k + l / 16];
            float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            *y = dl * (float)(x[b].qs[32 * h + l] >> (2 * k) & 3) - ml;
        }
    }
}

void dequantize_row_q3_K(const void *vx, float *y, int n) {
    const block_q3_K *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d);
        for (int e = 0; e < QK_K; e++, y++) {
            int h = e / 128, k = e / 32 % 4, l = e % 32;
            int q = (x[b].qs[32 * h + l] >> (2 * k) & 3) - (x[b].hmask[l] >> (4 * h + k) & 1 ? 0 : 4);
            float dl = d * (float)(q3_K_scale(x[b].scales, 8 * h + 2 * k + l / 16) - 32);
            *y = dl * (float)q;
        }
    }
}

void dequantize_row_q5_K(const void *vx, float *y, int n) {
    const block_q5_K *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
        for (int j = 0; j < 8; j++) { /* sub-block j: nibble j % 2 of qs[32 (j / 2) + l], 5th bit qh[l] bit j */
            uint8_t sc, m;
            q4_K_scale_min(j, x[b].scales, &sc, &m);
            float dl = d * (float)sc, ml = dmin * (float)m;
            const uint8_t *qs = x[b].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++, y++) {
                int q = (qs[l] >> (4 * (j % 2)) & 0xF) | (x[b].qh[l] >> j & 1) << 4;
                *y = dl * (float)q - ml;
            }
        }
    }
}

/* The 256 codes of a Q6_K block minus 32, in value order. */
static void q6_K_values(const block_q6_K *x, int8_t *q) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *ql = x->ql + 64 * h, hb = x->qh[32 * h + l];
            int8_t *o = q + 128 * h + l; /* quarters k = 0..3 at o[32 k] */
            o[0] = (int8_t)(((ql[l] & 0xF) | (hb & 3) << 4) - 32);
            o[32] = (int8_t)(((ql[l + 32] & 0xF) | (hb >> 2 & 3) << 4) - 32);
            o[64] = (int8_t)(((ql[l] >> 4) | (hb >> 4 & 3) << 4) - 32);
            o[96] = (int8_t)(((ql[l + 32] >> 4) | (hb >> 6 & 3) << 4) - 32);
        }
}

void dequantize_row_q6_K(const void *vx, float *y, int n) {
    const block_q6_K *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d);
        int8_t q[QK_K];
        q6_K_values(&x[b], q);
        for (int e = 0; e < QK_K; e++, y++) *y = d * (float)x[b].scales[e / 16] * (float)q[e];
    }
}

void dequantize_row_iq4_xs(const void *vx, float *y, int n) {
    const block_iq4_xs *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < 8; j++, y += 32) {
            float dl = d * (float)(iq4_xs_scale(&x[b], j) - 32);
            const uint8_t *qs = x[b].qs + 16 * j;
            for (int i = 0; i < 16; i++) {
                y[i] = dl * (float)kvalues_iq4nl[qs[i] & 0xF];
                y[i + 16] = dl * (float)kvalues_iq4nl[qs[i] >> 4];
            }
        }
    }
}

/* ------------------------------------------------------------ reference dots */

/* Per super-block: integer dots per sub-block weighted by the integer
 * sub-block scales, then one float multiply by both super-block scales; a
 * min term uses the activation's sums of 16 (bsums). */

float dot_q2_K_q8_K_ref(const void *vw, const void *va, int n) {
    const block_q2_K *w = vw;
    const block_q8_K *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int g = 0; g < 16; g++) { /* 16 values of one scale: e = 16 g + i */
            int s = 0;
            for (int i = 0; i < 16; i++) {
                int e = 16 * g + i, h = e / 128, k = e / 32 % 4, l = e % 32;
                s += (w[b].qs[32 * h + l] >> (2 * k) & 3) * a[b].qs[e];
            }
            uint8_t sc = w[b].scales[g]; /* g = 8 h + 2 k + l / 16 */
            sumi += (sc & 0xF) * s;
            summ += (sc >> 4) * a[b].bsums[g];
        }
        sum += a[b].d * f16_to_f32(w[b].d) * (float)sumi - a[b].d * f16_to_f32(w[b].dmin) * (float)summ;
    }
    return sum;
}

float dot_q3_K_q8_K_ref(const void *vw, const void *va, int n) {
    const block_q3_K *w = vw;
    const block_q8_K *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) {
                int e = 16 * g + i, h = e / 128, k = e / 32 % 4, l = e % 32;
                int q = (w[b].qs[32 * h + l] >> (2 * k) & 3) - (w[b].hmask[l] >> (4 * h + k) & 1 ? 0 : 4);
                s += q * a[b].qs[e];
            }
            sumi += (q3_K_scale(w[b].scales, g) - 32) * s;
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

float dot_q5_K_q8a_ref(const void *vw, const void *va, int n) {
    const block_q5_K *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(w[b].d), dmin = f16_to_f32(w[b].dmin);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            q4_K_scale_min(j, w[b].scales, &sc, &m);
            const uint8_t *qs = w[b].qs + 32 * (j / 2);
            const block_q8a *x = &a[8 * b + j];
            int s = 0;
            for (int l = 0; l < 32; l++) s += ((qs[l] >> (4 * (j % 2)) & 0xF) | (w[b].qh[l] >> j & 1) << 4) * x->qs[l];
            sum += x->d * (d * (float)(sc * s) - dmin * (float)(m * x->sum));
        }
    }
    return sum;
}

float dot_q6_K_q8a_ref(const void *vw, const void *va, int n) {
    const block_q6_K *w = vw;
    const block_q8a *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        q6_K_values(&w[b], q);
        float d = f16_to_f32(w[b].d);
        for (int j = 0; j < 8; j++) { /* 32 values: scales 2j and 2j + 1 */
            const block_q8a *x = &a[8 * b + j];
            int s0 = 0, s1 = 0;
            for (int i = 0; i < 16; i++) {
                s0 += q[32 * j + i] * x->qs[i];
                s1 += q[32 * j + 16 + i] * x->qs[16 + i];
            }
            sum += d * x->d * (float)(w[b].scales[2 * j] * s0 + w[b].scales[2 * j + 1] * s1);
        }
    }
    return sum;
}

float dot_iq4_xs_q8_K_ref(const void *vw, const void *va, int n) {
    const block_iq4_xs *w = vw;
    const block_q8_K *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int sumi = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *qs = w[b].qs + 16 * j;
            const int8_t *q8 = a[b].qs + 32 * j;
            int s = 0;
            for (int i = 0; i < 16; i++)
                s += kvalues_iq4nl[qs[i] & 0xF] * q8[i] + kvalues_iq4nl[qs[i] >> 4] * q8[i + 16];
            sumi += (iq4_xs_scale(&w[b], j) - 32) * s;
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

/* ------------------------------------------------------------ quantize */

#define GROUP_MAX_EPS 1e-15f /* ggml: a group this small is all zero */

/* ggml make_qx_quants with rmse_type 1 and no importance weights: codes
 * L[i] + nmax in [0, 2 nmax) for x ~ scale * L, the value of largest
 * magnitude mapped to -nmax first, then 18 nearby inverse scales tried,
 * keeping the least-squares scale that explains most (weights x^2). */
static float fit_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml make_qkx2_quants: x ~ scale * L - the_min with L in 0..nmax, the
 * range-based fit first, then nstep + 1 inverse scales (nmax + rmin +
 * rdelta * is) / range, each refit by weighted least squares for scale and
 * min together; the one with the smallest weighted squared (use_mad:
 * absolute) error wins. */
static float fit_scale_min_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                                uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * (float)L[i] + min - x[i];
        best_error += weights[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                cur_error += weights[i] * (use_mad ? fabsf(diff) : diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Pack 8 six-bit scales and mins as Q4_K / Q5_K store them. */
static void pack_scale_min_k4(const uint8_t *ls, const uint8_t *lm, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | (lm[j] & 0xF) << 4);
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* ggml's Q4_K / Q5_K reference: per sub-block of 32 a fit x ~ scale * L -
 * min (codes 0..nmax), the 8 scales and mins as 6-bit multiples of d and
 * dmin (f16), then the codes again against the stored scales (a zero scale
 * keeps the fit's). Fills d, dmin, the 12 packed scale bytes and L. */
static void fit_k_block(const float *x, int nmax, float rmin, int nstep, uint16_t *d, uint16_t *dmin,
                        uint8_t *packed, uint8_t *L) {
    uint8_t Laux[32];
    float scales[8], mins[8], weights[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = fit_scale_min_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, 0);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        uint8_t s = (uint8_t)nearest_int(inv_scale * scales[j]), m = (uint8_t)nearest_int(inv_min * mins[j]);
        ls[j] = s < 63 ? s : 63;
        lm[j] = m < 63 ? m : 63;
    }
    pack_scale_min_k4(ls, lm, packed);
    *d = f32_to_f16(max_scale / 63.f);
    *dmin = f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        q4_K_scale_min(j, packed, &sc, &m);
        float dl = f16_to_f32(*d) * (float)sc;
        if (dl == 0) continue;
        float dm = f16_to_f32(*dmin) * (float)m;
        for (int i = 0; i < 32; i++) {
            int l = nearest_int((x[32 * j + i] + dm) / dl);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

void quantize_row_q4_K_ggml(const float *x, void *vy, int n) {
    block_q4_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        uint8_t L[QK_K];
        fit_k_block(x, 15, -1.0f, 20, &y[b].d, &y[b].dmin, y[b].scales, L);
        for (int c = 0; c < 4; c++) /* sub-block 2c in the low nibbles of qs[32c..], 2c+1 in the high */
            for (int l = 0; l < 32; l++) y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

void quantize_row_q5_K(const float *x, void *vy, int n) {
    block_q5_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        uint8_t L[QK_K];
        fit_k_block(x, 31, -0.5f, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < 4; c++) /* sub-blocks 2c, 2c+1 share qs[32c..]; their 5th bits are qh bits 2c, 2c+1 */
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                y[b].qh[l] |= (uint8_t)((l1 >> 4) << (2 * c) | (l2 >> 4) << (2 * c + 1));
                y[b].qs[32 * c + l] = (uint8_t)((l1 & 0xF) | (l2 & 0xF) << 4);
            }
    }
}

void quantize_row_q6_K(const float *x, void *vy, int n) {
    block_q6_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int8_t L[QK_K];
        float scales[16], max_scale = 0, max_abs_scale = 0;
        for (int g = 0; g < 16; g++) {
            scales[g] = fit_symmetric(16, 32, x + 16 * g, L + 16 * g);
            if (fabsf(scales[g]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[g]);
                max_scale = scales[g];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[b].d = f32_to_f16(1 / iscale);
        for (int g = 0; g < 16; g++) {
            int s = nearest_int(iscale * scales[g]);
            y[b].scales[g] = (int8_t)(s < 127 ? s : 127);
        }
        for (int g = 0; g < 16; g++) { /* the codes again, against the stored scales (a zero scale keeps the fit's) */
            float d = f16_to_f32(y[b].d) * (float)y[b].scales[g];
            if (d == 0) continue;
            for (int i = 0; i < 16; i++) {
                int l = nearest_int(x[16 * g + i] / d);
                L[16 * g + i] = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
            }
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *q = L + 128 * h + l; /* q[0], q[32], q[64], q[96]: quarters 0..3 */
                y[b].ql[64 * h + l] = (uint8_t)((q[0] & 0xF) | (q[64] & 0xF) << 4);
                y[b].ql[64 * h + 32 + l] = (uint8_t)((q[32] & 0xF) | (q[96] & 0xF) << 4);
                y[b].qh[32 * h + l] = (uint8_t)(q[0] >> 4 | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 | (q[96] >> 4) << 6);
            }
    }
}

void quantize_row_iq4_xs(const float *x, void *vy, int n) {
    block_iq4_xs *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        iq4_quantize(x, 8, &y[b].d, y[b].qs, &y[b].scales_h, y[b].scales_l);
    }
}

void quantize_row_q2_K(const float *x, void *vy, int n) {
    block_q2_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        uint8_t L[QK_K], Laux[16];
        float scales[16], mins[16], weights[16], max_scale = 0, max_min = 0;
        for (int g = 0; g < 16; g++) { /* 16 groups of 16: x ~ scale * L - min, L in 0..3, weights |x| */
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * g + l]);
            scales[g] = fit_scale_min_qkx2(16, 3, x + 16 * g, weights, L + 16 * g, &mins[g], Laux, -0.5f, 0.1f, 15, 1);
            if (scales[g] > max_scale) max_scale = scales[g];
            if (mins[g] > max_min) max_min = mins[g];
        }
        for (int g = 0; g < 16; g++) y[b].scales[g] = 0; /* 4-bit multiples of d (low) and dmin (high) */
        y[b].d = y[b].dmin = 0;
        if (max_scale > 0) {
            float iscale = 15.f / max_scale;
            for (int g = 0; g < 16; g++) y[b].scales[g] = (uint8_t)nearest_int(iscale * scales[g]);
            y[b].d = f32_to_f16(max_scale / 15.f);
        }
        if (max_min > 0) {
            float iscale = 15.f / max_min;
            for (int g = 0; g < 16; g++) y[b].scales[g] |= (uint8_t)(nearest_int(iscale * mins[g]) << 4);
            y[b].dmin = f32_to_f16(max_min / 15.f);
        }
        for (int g = 0; g < 16; g++) { /* the codes again, against the stored scales */
            float d = f16_to_f32(y[b].d) * (float)(y[b].scales[g] & 0xF);
            if (d == 0) continue;
            float dm = f16_to_f32(y[b].dmin) * (float)(y[b].scales[g] >> 4);
            for (int i = 0; i < 16; i++) {
                int l = nearest_int((x[16 * g + i] + dm) / d);
                L[16 * g + i] = (uint8_t)(l < 0 ? 0 : l > 3 ? 3 : l);
            }
        }
        for (int h = 0; h < 2; h++) /* value 128 h + 32 k + l at bits 2k of qs[32 h + l] */
            for (int l = 0; l < 32; l++) {
                const uint8_t *q = L + 128 * h + l;
                y[b].qs[32 * h + l] = (uint8_t)(q[0] | q[32] << 2 | q[64] << 4 | q[96] << 6);
            }
    }
}

/* ggml make_q3_quants with do_rmse: codes in [-nmax, nmax) for x ~ scale *
 * L, the value of largest magnitude mapped to -nmax, then up to 5 rounds
 * moving single codes while that improves the weighted (x^2) fit. */
static float fit_q3(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i], slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = new_l < -nmax ? -nmax : new_l > nmax - 1 ? nmax - 1 : new_l;
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

void quantize_row_q3_K(const float *x, void *vy, int n) {
    block_q3_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int8_t L[QK_K];
        float scales[16], max_scale = 0, amax = 0;
        for (int g = 0; g < 16; g++) {
            scales[g] = fit_q3(16, 4, x + 16 * g, L + 16 * g);
            if (fabsf(scales[g]) > amax) {
                amax = fabsf(scales[g]);
                max_scale = scales[g];
            }
        }
        memset(y[b].scales, 0, 12);
        y[b].d = 0;
        if (max_scale != 0) { /* 6-bit scales s - 32 of d, packed as q3_K_scale reads them */
            float iscale = -32.f / max_scale;
            for (int g = 0; g < 16; g++) {
                int l = (int8_t)nearest_int(iscale * scales[g]);
                l = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
                if (g < 8) y[b].scales[g] = (uint8_t)(l & 0xF);
                else y[b].scales[g - 8] |= (uint8_t)((l & 0xF) << 4);
                y[b].scales[8 + g % 4] |= (uint8_t)((l >> 4) << (2 * (g / 4)));
            }
            y[b].d = f32_to_f16(1 / iscale);
        }
        for (int g = 0; g < 16; g++) { /* the codes again, against the stored scales */
            float d = f16_to_f32(y[b].d) * (float)(q3_K_scale(y[b].scales, g) - 32);
            if (d == 0) continue;
            for (int i = 0; i < 16; i++) {
                int l = nearest_int(x[16 * g + i] / d);
                L[16 * g + i] = (int8_t)((l < -4 ? -4 : l > 3 ? 3 : l) + 4);
            }
        }
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int e = 0; e < QK_K; e++) /* the 3rd bit of value e: hmask[e % 32] bit e / 32 */
            if (L[e] > 3) {
                y[b].hmask[e % 32] |= (uint8_t)(1 << (e / 32));
                L[e] -= 4;
            }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *q = L + 128 * h + l;
                y[b].qs[32 * h + l] = (uint8_t)(q[0] | q[32] << 2 | q[64] << 4 | q[96] << 6);
            }
    }
}
