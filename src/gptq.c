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
    /* n * n fits in 64 bits, its bytes may not (n = 1518500250 wraps to 277 MB) */
    uint64_t bytes;
    if (n <= 0 || !mul_u64((uint64_t)n * (uint64_t)n, sizeof(double), &bytes) || bytes > SIZE_MAX) return -1;
    double *a = malloc((size_t)bytes), *m = malloc((size_t)bytes);
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

/* A block's grid once its scales are set: sub-block j (32 values) holds
 * a[j] * q - b[j] for codes q in lo..hi. Read back from the block quantizer's
 * own output, so the scales are exactly the ones it would store. */
typedef struct {
    float a[8], b[8];
    int lo, hi, values; /* values per block: 32, or 256 for Q4_K */
    int zero;           /* the code the quantizer writes where a[j] is 0 (any code is worth the same) */
} grid;

static grid block_grid(moe_dtype t, const uint8_t *blk) {
    grid g = {{0}, {0}, 0, 15, 32, 0};
    uint16_t dh;
    memcpy(&dh, blk, 2);
    float d = f16_to_f32(dh);
    if (t == DT_Q8_0) {
        g.a[0] = d, g.lo = -127, g.hi = 127;
    } else if (t == DT_Q4_0) {
        g.a[0] = d, g.b[0] = 8 * d, g.zero = 8; /* codes 0..15 are w / d + 8 */
    } else { /* Q4_K: d * scale_j * q - dmin * min_j */
        const block_q4_K *k = (const block_q4_K *)blk;
        float dmin = f16_to_f32(k->dmin);
        g.values = QK_K;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            q4_K_scale_min(j, k->scales, &sc, &m);
            g.a[j] = d * sc, g.b[j] = dmin * m;
        }
    }
    return g;
}

static int grid_code(const grid *g, int j, float w) {
    if (g->a[j] == 0.0f) return g->zero;
    int q = (int)lrintf((w + g->b[j]) / g->a[j]);
    return q < g->lo ? g->lo : q > g->hi ? g->hi : q;
}

/* The codes into the block's bytes (its scales stay as the quantizer set them). */
static void put_codes(moe_dtype t, const int *q, uint8_t *blk) {
    if (t == DT_Q8_0)
        for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)(int8_t)q[i];
    else if (t == DT_Q4_0)
        for (int i = 0; i < 16; i++) blk[2 + i] = (uint8_t)(q[i] | (q[i + 16] << 4));
    else /* Q4_K: 64 values per 32 bytes, sub-block 2c in the low nibbles, 2c+1 in the high */
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                ((block_q4_K *)blk)->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

/* One block (columns c0.., g.values of them) of one row w: set the block's
 * scales by the block quantizer on its values as they stand, then round
 * column by column, spreading each error over the block's later columns;
 * the scaled errors go to e[] for the columns after the block. */
static void round_block(moe_dtype t, float *w, int c0, int n, const float *U, uint8_t *blk, float *e) {
    quantize_row(t, w + c0, blk, dtype_info(t)->block);
    grid g = block_grid(t, blk);
    int q[QK_K];
    for (int i = 0; i < g.values; i++) {
        const float *u = U + (size_t)(c0 + i) * n;
        int j = i / 32;
        q[i] = grid_code(&g, j, w[c0 + i]);
        e[i] = (w[c0 + i] - (g.a[j] * (float)q[i] - g.b[j])) / u[c0 + i];
        for (int k = i + 1; k < g.values; k++) w[c0 + k] -= e[i] * u[c0 + k];
    }
    put_codes(t, q, blk);
}

void gptq_rows(moe_dtype t, float *x, int nrows, int n, const float *U, void *y) {
    int bv = dtype_info(t)->block; /* values per block */
    size_t bb = (size_t)dtype_info(t)->block_bytes, rb = (size_t)(n / bv) * bb;
    for (int c0 = 0; c0 < n; c0 += bv)
        for (int r = 0; r < nrows; r++) {
            float *w = x + (size_t)r * n, e[QK_K];
            round_block(t, w, c0, n, U, (uint8_t *)y + (size_t)r * rb + (size_t)(c0 / bv) * bb, e);
            for (int i = 0; i < bv; i++) { /* the later blocks take this block's errors at once */
                const float *u = U + (size_t)(c0 + i) * n;
                for (int k = c0 + bv; k < n; k++) w[k] -= e[i] * u[k];
            }
        }
}
