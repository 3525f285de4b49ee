/* quant.c - reference quantizers, dequantizers and dot products for the
 * block types of quant.h. Plain C, the standard every SIMD kernel is tested
 * against. */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "util.h"

static int nearest_int(float x) { return (int)lrintf(x); }


/* ------------------------------------------------------------ float types */

void quantize_row_f32(const float *x, void *y, int n) { memcpy(y, x, sizeof(float) * (size_t)n); }
void quantize_row_f16(const float *x, void *y, int n) {
    for (int i = 0; i < n; i++) ((uint16_t *)y)[i] = f32_to_f16(x[i]);
}
void quantize_row_bf16(const float *x, void *y, int n) {
    for (int i = 0; i < n; i++) ((uint16_t *)y)[i] = f32_to_bf16(x[i]);
}

void dequantize_row_f32(const void *x, float *y, int n) { memcpy(y, x, sizeof(float) * (size_t)n); }
void dequantize_row_f16(const void *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = f16_to_f32(((const uint16_t *)x)[i]);
}
void dequantize_row_bf16(const void *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = bf16_to_f32(((const uint16_t *)x)[i]);
}

float dot_f32_ref(const void *w, const void *x, int n) {
    const float *a = w, *b = x;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
float dot_f16_ref(const void *w, const void *x, int n) {
    const uint16_t *a = w;
    const float *b = x;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += f16_to_f32(a[i]) * b[i];
    return s;
}
float dot_bf16_ref(const void *w, const void *x, int n) {
    const uint16_t *a = w;
    const float *b = x;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += bf16_to_f32(a[i]) * b[i];
    return s;
}

/* ------------------------------------------------------------ Q8_0 */

void quantize_row_q8_0(const float *x, void *vy, int n) {
    block_q8_0 *y = vy;
    for (int b = 0; b < n / QK8_0; b++, x += QK8_0) {
        float amax = 0.0f;
        for (int i = 0; i < QK8_0; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f; /* all-zero block: d = 0, q = 0 */
        if (!block_finite(x, QK8_0) || id > FLT_MAX) { /* see block_finite */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        y[b].d = f32_to_f16(d);
        /* halves away from zero (roundf), as ggml's quantize_row_q8_0_ref: bf16-valued
         * weights land on exact halves often enough to matter for identical bytes */
        for (int i = 0; i < QK8_0; i++) y[b].qs[i] = (int8_t)roundf(x[i] * id);
    }
}

void quantize_row_q8a(const float *x, void *vy, int n) {
    block_q8a *y = vy;
    for (int b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax; /* not fmaxf: a libm call */
        float d = bf16_to_f32(f32_to_bf16(amax / 127.0f)), id = d > 0 ? 1.0f / d : 0.0f; /* quant.h: bf16 scale */
        if (!block_finite(x, 32) || id > FLT_MAX) { /* see block_finite */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += y[b].qs[i] = (int8_t)nearest_int(x[i] * id);
        y[b].d = d;
        y[b].sum = sum;
    }
}

/* ------------------------------------------------------------ Q4_0 */

/* ggml's reference maps the value of largest magnitude to -8, so its sign
 * sets d's sign and all 16 levels are used. We start there and also try a
 * few nearby inverse scales; for each candidate rounding q the best scale
 * is the least-squares d = sum(x q) / sum(q q), and we keep the candidate
 * that explains most of the block, (sum x q)^2 / sum(q q). Same format,
 * smaller error (tests/unit/test_kernels.c measures it). */
static float q4_0_fit(const float *x, float max, int *q) {
    if (max == 0.0f) {
        for (int i = 0; i < QK4_0; i++) q[i] = 0;
        return 0.0f;
    }
    float best = -1.0f, best_d = 0.0f;
    for (int s = -6; s <= 6; s++) {
        float id = -(8.0f + 0.15f * (float)s) / max, sxq = 0.0f, sqq = 0.0f;
        int c[QK4_0];
        for (int i = 0; i < QK4_0; i++) {
            int v = nearest_int(x[i] * id);
            c[i] = v < -8 ? -8 : v > 7 ? 7 : v;
            sxq += x[i] * (float)c[i];
            sqq += (float)(c[i] * c[i]);
        }
        if (sqq > 0 && sxq * sxq / sqq > best) {
            best = sxq * sxq / sqq;
            best_d = sxq / sqq;
            memcpy(q, c, sizeof c);
        }
    }
    return best_d;
}

void quantize_row_q4_0(const float *x, void *vy, int n) {
    block_q4_0 *y = vy;
    for (int b = 0; b < n / QK4_0; b++, x += QK4_0) {
        if (!block_finite(x, QK4_0)) { /* see block_finite */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < QK4_0; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        int q[QK4_0];
        y[b].d = f32_to_f16(q4_0_fit(x, max, q));
        for (int j = 0; j < QK4_0 / 2; j++) y[b].qs[j] = (uint8_t)((q[j] + 8) | ((q[j + 16] + 8) << 4));
    }
}

/* ------------------------------------------------------------ Q4_K */

/* Fit x ~ scale * L - mn (L in 0..15, mn >= 0) for one sub-block of 32,
 * weighting each value by how much it matters (|x| plus the block rms).
 * Tries a small grid of inverse scales around the range-based one and keeps
 * the least-squares fit with the smallest weighted error. */
static void fit_scale_min(const float *x, float *scale, float *mn) {
    float xmin = x[0], xmax = x[0], sum_x2 = 0;
    for (int i = 0; i < 32; i++) {
        xmin = fminf(xmin, x[i]);
        xmax = fmaxf(xmax, x[i]);
        sum_x2 += x[i] * x[i];
    }
    if (xmin > 0) xmin = 0;
    if (xmax <= xmin) {
        *scale = 0;
        *mn = -xmin;
        return;
    }
    float av = sqrtf(sum_x2 / 32), w[32];
    for (int i = 0; i < 32; i++) w[i] = av + fabsf(x[i]);
    float best_err = INFINITY, best_s = (xmax - xmin) / 15, best_m = -xmin;
    for (int step = -10; step <= 10; step++) {
        float iscale = (15.0f + 0.1f * step) / (xmax - xmin);
        float sw = 0, swl = 0, swl2 = 0, swx = 0, swlx = 0;
        uint8_t L[32];
        for (int i = 0; i < 32; i++) {
            int l = nearest_int(iscale * (x[i] - xmin));
            L[i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
            sw += w[i];
            swl += w[i] * L[i];
            swl2 += w[i] * L[i] * L[i];
            swx += w[i] * x[i];
            swlx += w[i] * L[i] * x[i];
        }
        float det = sw * swl2 - swl * swl;
        if (det <= 0) continue;
        float s = (sw * swlx - swl * swx) / det, off = (swl2 * swx - swl * swlx) / det; /* x ~ s L + off */
        if (off > 0) { /* the min must not be positive: refit the scale alone */
            off = 0;
            s = swl2 > 0 ? swlx / swl2 : 0;
        }
        float err = 0;
        for (int i = 0; i < 32; i++) {
            float e = s * L[i] + off - x[i];
            err += w[i] * e * e;
        }
        if (err < best_err && s > 0) {
            best_err = err;
            best_s = s;
            best_m = -off;
        }
    }
    *scale = best_s;
    *mn = best_m;
}

void quantize_row_q4_K(const float *x, void *vy, int n) {
    block_q4_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        if (!block_finite(x, QK_K)) { /* see block_finite */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            fit_scale_min(x + 32 * j, &scales[j], &mins[j]);
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        float d = max_scale / 63, dmin = max_min / 63;
        y[b].d = f32_to_f16(d);
        y[b].dmin = f32_to_f16(dmin);
        d = f16_to_f32(y[b].d); /* quantize against the stored values */
        dmin = f16_to_f32(y[b].dmin);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            int s = d > 0 ? nearest_int(scales[j] / d) : 0, mm = dmin > 0 ? nearest_int(mins[j] / dmin) : 0;
            sc[j] = (uint8_t)(s < 0 ? 0 : s > 63 ? 63 : s);
            m[j] = (uint8_t)(mm < 0 ? 0 : mm > 63 ? 63 : mm);
        }
        /* pack as ggml: j < 4 in the low 6 bits of bytes j and j+4; j >= 4 split
         * into the nibbles of byte j+4 and the top 2 bits of bytes j-4 and j */
        memset(y[b].scales, 0, 12);
        for (int j = 0; j < 8; j++) {
            if (j < 4) {
                y[b].scales[j] |= sc[j];
                y[b].scales[j + 4] |= m[j];
            } else {
                y[b].scales[j + 4] = (uint8_t)((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
                y[b].scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
                y[b].scales[j] |= (uint8_t)((m[j] >> 4) << 6);
            }
        }
        uint8_t L[QK_K];
        for (int j = 0; j < 8; j++) {
            uint8_t s, mm;
            q4_K_scale_min(j, y[b].scales, &s, &mm);
            float ds = d * s, dm = dmin * mm;
            for (int i = 0; i < 32; i++) {
                int l = ds > 0 ? nearest_int((x[32 * j + i] + dm) / ds) : 0;
                L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
            }
        }
        /* 64 values per 32 bytes: sub-block 2i in the low nibbles, 2i+1 in the high */
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

/* ------------------------------------------------------------ Q8_K */

void quantize_row_q8_K(const float *x, void *vy, int n) {
    block_q8_K *y = vy;
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float amax = 0;
        for (int i = 0; i < QK_K; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        if (!block_finite(x, QK_K) || id > FLT_MAX) { /* see block_finite */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        y[b].d = d;
        for (int i = 0; i < QK_K; i++) y[b].qs[i] = (int8_t)nearest_int(x[i] * id);
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += y[b].qs[16 * g + i];
            y[b].bsums[g] = (int16_t)s;
        }
    }
}

/* x (n values, a multiple of the type's block) replaced by what its
 * activation rows of type at stand for: the values a matmul with a weight
 * pairing with at computes with. */
void act_round_row(act_type at, float *x, int n) {
    if (at == ACT_Q8A)
        for (int b = 0; b < n / 32; b++) {
            block_q8a q;
            quantize_row_q8a(x + 32 * b, &q, 32);
            for (int i = 0; i < 32; i++) x[32 * b + i] = q.d * (float)q.qs[i];
        }
    else if (at == ACT_Q8_K)
        for (int b = 0; b < n / QK_K; b++) {
            block_q8_K q;
            quantize_row_q8_K(x + QK_K * b, &q, QK_K);
            for (int i = 0; i < QK_K; i++) x[QK_K * b + i] = q.d * (float)q.qs[i];
        }
}

/* ------------------------------------------------------------ dequantize */

void dequantize_row_q8_0(const void *vx, float *y, int n) {
    const block_q8_0 *x = vx;
    for (int b = 0; b < n / QK8_0; b++)
        for (int i = 0; i < QK8_0; i++) y[b * QK8_0 + i] = f16_to_f32(x[b].d) * x[b].qs[i];
}

void dequantize_row_q4_0(const void *vx, float *y, int n) {
    const block_q4_0 *x = vx;
    for (int b = 0; b < n / QK4_0; b++) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[b * 32 + j] = d * ((x[b].qs[j] & 0xF) - 8);
            y[b * 32 + j + 16] = d * ((x[b].qs[j] >> 4) - 8);
        }
    }
}

void dequantize_row_q4_K(const void *vx, float *y, int n) {
    const block_q4_K *x = vx;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
        for (int c = 0; c < 4; c++) {
            uint8_t s1, m1, s2, m2;
            q4_K_scale_min(2 * c, x[b].scales, &s1, &m1);
            q4_K_scale_min(2 * c + 1, x[b].scales, &s2, &m2);
            const uint8_t *q = x[b].qs + 32 * c;
            float *o = y + b * QK_K + 64 * c;
            for (int l = 0; l < 32; l++) {
                o[l] = d * s1 * (q[l] & 0xF) - dmin * m1;
                o[l + 32] = d * s2 * (q[l] >> 4) - dmin * m2;
            }
        }
    }
}

/* ------------------------------------------------------------ by type */

void dequantize_row(moe_dtype t, const void *x, float *y, int n) {
    const dtype_traits *d = dtype_info(t);
    if (d && d->dequantize) d->dequantize(x, y, n);
    else memset(y, 0, sizeof(float) * (size_t)n);
}

void quantize_row(moe_dtype t, const float *x, void *y, int n) {
    const dtype_traits *d = dtype_info(t);
    if (d && d->quantize) d->quantize(x, y, n);
}

/* ------------------------------------------------------------ interleaved rows */

/* An interleaved type's plain twin; a group's block column is 16 of the
 * twin's blocks, scales first. (Spelled as one of the two so the compiler
 * sees blk below only ever holds a Q8_0 or Q4_0 block.) */
static moe_dtype r16_base(moe_dtype t) { return dtype_info(t)->plain == DT_Q8_0 ? DT_Q8_0 : DT_Q4_0; }

/* Move row r's block (f16 d, then qs) into / out of block column g. */
static void r16_put(moe_dtype base, uint8_t *g, int r, const uint8_t *blk) {
    int qsb = dtype_info(base)->block_bytes - 2;
    memcpy(g + 2 * r, blk, 2);
    for (int k = 0; k < qsb / 4; k++) memcpy(g + 2 * R16 + 64 * k + 4 * r, blk + 2 + 4 * k, 4);
}
static void r16_get(moe_dtype base, const uint8_t *g, int r, uint8_t *blk) {
    int qsb = dtype_info(base)->block_bytes - 2;
    memcpy(blk, g + 2 * r, 2);
    for (int k = 0; k < qsb / 4; k++) memcpy(blk + 2 + 4 * k, g + 2 * R16 + 64 * k + 4 * r, 4);
}

void quantize_rows(moe_dtype t, const float *x, void *y, int nrows, int n) {
    if (dtype_info(t)->row_group == 1) {
        size_t rb = dtype_row_bytes(t, (uint64_t)n);
        for (int r = 0; r < nrows; r++) quantize_row(t, x + (size_t)r * n, (char *)y + (size_t)r * rb, n);
        return;
    }
    moe_dtype base = r16_base(t); /* each row quantized as its twin, block by block, then placed */
    size_t col = (size_t)R16 * (size_t)dtype_info(base)->block_bytes;
    uint8_t *g = y, blk[64];
    for (int r0 = 0; r0 < nrows; r0 += R16, g += (size_t)(n / 32) * col)
        for (int r = 0; r < R16; r++)
            for (int b = 0; b < n / 32; b++) {
                quantize_row(base, x + (size_t)(r0 + r) * n + b * 32, blk, 32);
                r16_put(base, g + (size_t)b * col, r, blk);
            }
}

void pack_rows_r16(moe_dtype t, const void *plain, void *y, int n) {
    moe_dtype base = r16_base(t);
    size_t bb = (size_t)dtype_info(base)->block_bytes, col = R16 * bb, rb = (size_t)(n / 32) * bb;
    for (int r = 0; r < R16; r++)
        for (int b = 0; b < n / 32; b++)
            r16_put(base, (uint8_t *)y + (size_t)b * col, r, (const uint8_t *)plain + (size_t)r * rb + (size_t)b * bb);
}

void dequantize_row_at(moe_dtype t, const void *base_ptr, size_t row_bytes, size_t r, float *y, int n) {
    if (dtype_info(t)->row_group == 1) {
        dequantize_row(t, (const char *)base_ptr + r * row_bytes, y, n);
        return;
    }
    moe_dtype base = r16_base(t);
    size_t col = (size_t)R16 * (size_t)dtype_info(base)->block_bytes;
    const uint8_t *g = (const uint8_t *)base_ptr + (r - r % R16) * row_bytes;
    uint8_t blk[64];
    for (int b = 0; b < n / 32; b++) {
        r16_get(base, g + (size_t)b * col, (int)(r % R16), blk);
        dequantize_row(base, blk, y + b * 32, 32);
    }
}

float dot_row_at(moe_dtype t, const void *base_ptr, size_t row_bytes, size_t r, const void *x, int n) {
    if (dtype_info(t)->row_group == 1) return dtype_info(t)->dot((const char *)base_ptr + r * row_bytes, x, n);
    moe_dtype base = r16_base(t); /* the twin's dot on each of the row's blocks, summed as the twin's own loop does */
    dot_fn dot = dtype_info(base)->dot;
    size_t col = (size_t)R16 * (size_t)dtype_info(base)->block_bytes, xb = act_row_bytes(dtype_info(base)->act, 32);
    const uint8_t *g = (const uint8_t *)base_ptr + (r - r % R16) * row_bytes;
    uint8_t blk[64];
    float sum = 0;
    for (int b = 0; b < n / 32; b++) {
        r16_get(base, g + (size_t)b * col, (int)(r % R16), blk);
        sum += dot(blk, (const char *)x + (size_t)b * xb, 32);
    }
    return sum;
}

/* ------------------------------------------------------------ reference dots */

float dot_q8_0_q8a_ref(const void *vw, const void *vx, int n) {
    const block_q8_0 *w = vw;
    const block_q8a *x = vx;
    float sum = 0;
    for (int b = 0; b < n / QK8_0; b++) {
        int s = 0;
        for (int i = 0; i < QK8_0; i++) s += w[b].qs[i] * x[b].qs[i];
        sum += f16_to_f32(w[b].d) * x[b].d * (float)s;
    }
    return sum;
}

float dot_q4_0_q8a_ref(const void *vw, const void *vx, int n) {
    const block_q4_0 *w = vw;
    const block_q8a *x = vx;
    float sum = 0;
    for (int b = 0; b < n / QK4_0; b++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((w[b].qs[j] & 0xF) - 8) * x[b].qs[j] + ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + 16];
        sum += f16_to_f32(w[b].d) * x[b].d * (float)s;
    }
    return sum;
}

float dot_q4_K_q8a_ref(const void *vw, const void *vx, int n) {
    const block_q4_K *w = vw;
    const block_q8a *x = vx;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        float d = f16_to_f32(w[b].d), dmin = f16_to_f32(w[b].dmin);
        for (int j = 0; j < 8; j++) { /* sub-block j: nibble j % 2 of bytes 32 (j / 2) .. + 32 */
            uint8_t sc, m;
            q4_K_scale_min(j, w[b].scales, &sc, &m);
            const uint8_t *q = w[b].qs + 32 * (j / 2);
            const block_q8a *a = &x[8 * b + j];
            int s = 0;
            for (int l = 0; l < 32; l++) s += (q[l] >> (4 * (j % 2)) & 0xF) * a->qs[l];
            sum += a->d * (d * (float)(sc * s) - dmin * (float)(m * a->sum));
        }
    }
    return sum;
}
