/* quant_mxfp4.c - MXFP4 blocks (quant_mxfp4.h): dequantize, the float
 * activation dot product, ggml's reference quantizer. */
#include "quant_mxfp4.h"

#include <math.h>
#include <string.h>

#include "quant.h" /* block_finite */

const int8_t kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void dequantize_row_mxfp4(const void *vx, float *y, int n) {
    const block_mxfp4 *x = vx;
    for (int b = 0; b < n / QK_MXFP4; b++, y += QK_MXFP4) {
        float d = mxfp4_half_scale(x[b].e);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)kvalues_mxfp4[x[b].qs[j] & 0xF] * d;
            y[j + 16] = (float)kvalues_mxfp4[x[b].qs[j] >> 4] * d;
        }
    }
}

float dot_mxfp4_f32_ref(const void *vw, const void *va, int n) {
    const block_mxfp4 *w = vw;
    const float *a = va;
    float sum = 0;
    for (int b = 0; b < n / QK_MXFP4; b++, a += QK_MXFP4) {
        float s = 0; /* the block's levels (integers) times the floats, then the block's power of two */
        for (int j = 0; j < 16; j++)
            s += (float)kvalues_mxfp4[w[b].qs[j] & 0xF] * a[j] + (float)kvalues_mxfp4[w[b].qs[j] >> 4] * a[j + 16];
        sum += s * mxfp4_half_scale(w[b].e);
    }
    return sum;
}

/* The level index nearest to x at half scale d (the first on a tie, as
 * ggml's best_index_mxfp4). */
static int nearest_level(float x, float d) {
    int best = 0;
    float best_err = fabsf((float)kvalues_mxfp4[0] * d - x);
    for (int i = 1; i < 16; i++) {
        float err = fabsf((float)kvalues_mxfp4[i] * d - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return best;
}

void quantize_row_mxfp4(const float *x, void *vy, int n) {
    block_mxfp4 *y = vy;
    for (int b = 0; b < n / QK_MXFP4; b++, x += QK_MXFP4) {
        if (!block_finite(x, QK_MXFP4)) { /* quant.h */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float amax = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        /* the largest level (6 = 2^2 * 1.5) covers amax: e = floor(log2 amax) - 2 + 127 */
        float lg = amax > 0 ? floorf(log2f(amax)) : -1000; /* log2f, not frexpf: ggml's rounding near powers of 2 */
        int e = lg < -125 ? 0 : lg > 128 ? 255 : (int)lg - 2 + 127; /* clamped where ggml's is undefined */
        float d = mxfp4_half_scale((uint8_t)e);
        y[b].e = (uint8_t)e;
        for (int j = 0; j < 16; j++) y[b].qs[j] = (uint8_t)(nearest_level(x[j], d) | nearest_level(x[j + 16], d) << 4);
    }
}
