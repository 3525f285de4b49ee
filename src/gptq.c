/* gptq.c - calibrated rounding of weight rows (GPTQ): see gptq.h. */
#include "gptq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* In-place lower Cholesky factor of the n x n row-major a (a = L L^T, the
 * upper triangle left as it was). Row by row: each entry is one contiguous
 * dot product with an earlier row. */
static int cholesky_lower(double *a, int n) {
    for (int i = 0; i < n; i++) {
        double *ri = a + (size_t)i * n;
        for (int j = 0; j <= i; j++) {
            const double *rj = a + (size_t)j * n;
            double s = ri[j];
            for (int k = 0; k < j; k++) s -= ri[k] * rj[k];
            if (j < i) ri[j] = s / rj[j];
            else if (s > 0) ri[i] = sqrt(s);
            else return -1;
        }
    }
    return 0;
}

/* X = L^-1 for lower-triangular L, both n x n row-major, row by row:
 * row i of X is (e_i - sum_k<i L[i][k] X[k]) / L[i][i]. */
static void invert_lower(const double *l, double *x, int n) {
    memset(x, 0, sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n; i++) {
        double *xi = x + (size_t)i * n;
        const double *li = l + (size_t)i * n;
        xi[i] = 1.0;
        for (int k = 0; k < i; k++) {
            const double *xk = x + (size_t)k * n;
            for (int j = 0; j <= k; j++) xi[j] -= li[k] * xk[j];
        }
        for (int j = 0; j <= i; j++) xi[j] /= li[i];
    }
}

/* With J the order-reversing permutation: if J A J = M M^T (M lower), then
 * A = V V^T with V = J M J upper, so A^-1 = V^-T V^-1 and U = V^-1 =
 * J M^-1 J is the upper factor wanted. Two O(n^3/3) steps, in double. */
int gptq_factor(const float *H, int n, float damp, float *U) {
    size_t nn = (size_t)n * n;
    double *a = malloc(sizeof(double) * nn), *m = malloc(sizeof(double) * nn);
    if (!a || !m) {
        free(a), free(m);
        return -1;
    }
    double mean = 0;
    for (int i = 0; i < n; i++) mean += H[(size_t)i * n + i];
    mean = mean > 0 ? mean / n : 1.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) a[(size_t)i * n + j] = H[(size_t)(n - 1 - i) * n + (n - 1 - j)];
    for (int i = 0; i < n; i++) a[(size_t)i * n + i] += damp * mean;
    int rc = cholesky_lower(a, n);
    if (rc == 0) {
        invert_lower(a, m, n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) U[(size_t)i * n + j] = (float)m[(size_t)(n - 1 - i) * n + (n - 1 - j)];
    }
    free(a);
    free(m);
    return rc;
}

/* The grid point code nearest w / d, and its value in units of d. */
static int grid_code(moe_dtype t, float w, float d) {
    int lo = t == DT_Q4_0 ? -8 : -127, hi = t == DT_Q4_0 ? 7 : 127;
    int q = d != 0.0f ? (int)lrintf(w / d) : 0;
    return q < lo ? lo : q > hi ? hi : q;
}

static void put_codes(moe_dtype t, const int *q, uint8_t *blk) {
    if (t == DT_Q4_0)
        for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)((q[j] + 8) | ((q[j + 16] + 8) << 4));
    else
        for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)q[j];
}

/* One block column (columns c0..c0+31) of one row w: round each column with
 * the block's scale and spread its error over the block's later columns;
 * the scaled errors go to e[32] for the columns after the block. */
static void round_block(moe_dtype t, float *w, int c0, int n, const float *U, uint8_t *blk, float *e) {
    quantize_row(t, w + c0, blk, 32); /* the block's scale, from its values as they stand */
    uint16_t dh;
    memcpy(&dh, blk, 2);
    float d = f16_to_f32(dh);
    int q[32];
    for (int i = 0; i < 32; i++) {
        const float *u = U + (size_t)(c0 + i) * n;
        q[i] = grid_code(t, w[c0 + i], d);
        e[i] = (w[c0 + i] - d * (float)q[i]) / u[c0 + i];
        for (int k = i + 1; k < 32; k++) w[c0 + k] -= e[i] * u[c0 + k];
    }
    put_codes(t, q, blk);
}

void gptq_rows(moe_dtype t, float *x, int nrows, int n, const float *U, void *y) {
    size_t bb = (size_t)dtype_block_bytes(t), rb = (size_t)(n / 32) * bb;
    for (int c0 = 0; c0 < n; c0 += 32)
        for (int r = 0; r < nrows; r++) {
            float *w = x + (size_t)r * n, e[32];
            round_block(t, w, c0, n, U, (uint8_t *)y + (size_t)r * rb + (size_t)(c0 / 32) * bb, e);
            for (int i = 0; i < 32; i++) { /* the later blocks take this block's errors at once */
                const float *u = U + (size_t)(c0 + i) * n;
                for (int k = c0 + 32; k < n; k++) w[k] -= e[i] * u[k];
            }
        }
}
