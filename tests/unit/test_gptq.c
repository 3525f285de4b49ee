/* test_gptq.c - GPTQ rounding (gptq.h) against its definition:
 *   - the factor: U upper triangular and U^T U (H + damp) = I;
 *   - with uncorrelated inputs (H = I) nothing is carried between columns,
 *     so each block keeps the block quantizer's scale and every value its
 *     nearest grid point: no block's error exceeds plain rounding's;
 *   - with correlated inputs the row outputs on those inputs, W x, come out
 *     closer than plain rounding's (what GPTQ is for);
 *   - the _r16 layout of GPTQ's plain rows holds the same values.
 * For Q8_0, Q4_0 and Q4_K (whose blocks carry 8 sub-block scales and mins). */
#include "gptq.h"
#include "quant.h"
#include "test_util.h"

static unsigned rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* N inputs of n columns that move together: x = z mixed by a fixed random A,
 * with a few strong columns (like a norm's large gains). */
static float *correlated_inputs(int N, int n) {
    float *a = malloc(sizeof(float) * (size_t)n * n), *x = malloc(sizeof(float) * (size_t)N * n);
    for (int i = 0; i < n * n; i++) a[i] = frand();
    for (int t = 0; t < N; t++) {
        float z[256];
        for (int j = 0; j < n; j++) z[j] = frand();
        for (int i = 0; i < n; i++) {
            float s = 0;
            for (int j = 0; j < n; j++) s += a[i * n + j] * z[j];
            x[(size_t)t * n + i] = s * (i % 13 == 0 ? 4.0f : 1.0f);
        }
    }
    free(a);
    return x;
}

static float *gram(const float *x, int N, int n) {
    float *h = calloc((size_t)n * n, sizeof(float));
    for (int t = 0; t < N; t++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) h[i * n + j] += x[(size_t)t * n + i] * x[(size_t)t * n + j];
    return h;
}

static void test_factor(int n) {
    int N = 4 * n;
    float *x = correlated_inputs(N, n), *h = gram(x, N, n), *u = malloc(sizeof(float) * (size_t)n * n);
    float damp = 0.01f, mean = 0;
    for (int i = 0; i < n; i++) mean += h[i * n + i] / n;
    CHECK(gptq_factor(h, n, damp, u) == 0, "n %d: factor failed", n);
    double worst = 0, lower = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (j < i) lower = fmax(lower, fabs(u[i * n + j]));
            double s = 0; /* (U^T U (H + damp mean I))[i][j] */
            for (int k = 0; k < n; k++) {
                double utu = 0;
                for (int l = 0; l <= (i < k ? i : k); l++) utu += (double)u[l * n + i] * u[l * n + k];
                s += utu * (h[k * n + j] + (k == j ? damp * mean : 0.0f));
            }
            worst = fmax(worst, fabs(s - (i == j)));
        }
    CHECK(lower == 0, "n %d: U has %g below its diagonal", n, lower);
    CHECK(worst < 2e-3, "n %d: U^T U (H + damp) is I to %g", n, worst);
    float minus[4] = {1, 2, 2, 1}; /* not positive definite: eigenvalues 3 and -1 */
    CHECK(gptq_factor(minus, 2, 0.0f, u) == -1, "an indefinite H must be refused");
    /* n x n doubles of 1518500250 are 2^64 + 277 MB: a wrapped size would
     * allocate 277 MB and write past it (here: read the NULL H) */
    CHECK(gptq_factor(NULL, 1518500250, 0.0f, NULL) == -1, "a size that wraps must be refused");
    CHECK(gptq_factor(NULL, 0, 0.0f, NULL) == -1, "n = 0 must be refused");
    free(x), free(h), free(u);
}

static int block_values(moe_dtype t) { return dtype_info(t)->block; }

static double block_err(moe_dtype t, const float *w, const void *blk) {
    float v[QK_K];
    dequantize_row(t, blk, v, block_values(t));
    double e = 0;
    for (int i = 0; i < block_values(t); i++) e += (double)(w[i] - v[i]) * (w[i] - v[i]);
    return e;
}

static void test_identity(moe_dtype t) {
    int n = 512, rows = 8, bv = block_values(t), head = t == DT_Q4_K ? 16 : 2; /* scale bytes per block */
    float *u = calloc((size_t)n * n, sizeof(float)), *h = calloc((size_t)n * n, sizeof(float));
    for (int i = 0; i < n; i++) h[i * n + i] = 1.0f;
    CHECK(gptq_factor(h, n, 0.01f, u) == 0, "identity");
    float *w = malloc(sizeof(float) * (size_t)rows * n), *x = malloc(sizeof(float) * (size_t)rows * n);
    for (int i = 0; i < rows * n; i++) w[i] = x[i] = frand() * (i % 7 == 0 ? 3.0f : 0.5f);
    size_t rb = dtype_row_bytes(t, (uint64_t)n), bb = (size_t)dtype_info(t)->block_bytes;
    uint8_t *g = malloc(rb * rows), *p = malloc(rb * rows);
    gptq_rows(t, x, rows, n, u, g);
    quantize_rows(t, w, p, rows, n);
    int worse = 0, moved = 0, same_d = 1;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < n / bv; b++) {
            const uint8_t *gb = g + r * rb + b * bb, *pb = p + r * rb + b * bb;
            const float *wb = w + (size_t)r * n + bv * b;
            same_d &= !memcmp(gb, pb, (size_t)head);
            worse += block_err(t, wb, gb) > block_err(t, wb, pb) + 1e-9;
            for (int i = 0; i < bv; i++) moved += x[(size_t)r * n + bv * b + i] != wb[i];
        }
    CHECK(same_d, "%s: H = I keeps the block quantizer's scales", dtype_name(t));
    CHECK(worse == 0, "%s: %d blocks rounded worse than nearest", dtype_name(t), worse);
    CHECK(moved == 0, "%s: H = I carried errors to %d values", dtype_name(t), moved);
    free(u), free(h), free(w), free(x), free(g), free(p);
}

/* sum over inputs and rows of ((W - What) x)^2 */
static double output_err(moe_dtype t, const float *w, const void *q, const float *x, int rows, int n, int N) {
    float *wh = malloc(sizeof(float) * (size_t)rows * n);
    size_t rb = dtype_row_bytes(t, (uint64_t)n);
    for (int r = 0; r < rows; r++) dequantize_row(t, (const char *)q + r * rb, wh + (size_t)r * n, n);
    double e = 0;
    for (int t2 = 0; t2 < N; t2++)
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += (double)(w[(size_t)r * n + i] - wh[(size_t)r * n + i]) * x[(size_t)t2 * n + i];
            e += s * s;
        }
    free(wh);
    return e;
}

static void test_correlated(moe_dtype t) {
    int n = t == DT_Q4_K ? 256 : 96, rows = 16, N = 512;
    float *x = correlated_inputs(N, n), *h = gram(x, N, n), *u = malloc(sizeof(float) * (size_t)n * n);
    CHECK(gptq_factor(h, n, 0.01f, u) == 0, "factor");
    float *w = malloc(sizeof(float) * (size_t)rows * n), *tmp = malloc(sizeof(float) * (size_t)rows * n);
    for (int i = 0; i < rows * n; i++) tmp[i] = w[i] = frand() * 0.1f;
    size_t rb = dtype_row_bytes(t, (uint64_t)n);
    uint8_t *g = malloc(rb * rows), *p = malloc(rb * rows);
    gptq_rows(t, tmp, rows, n, u, g);
    quantize_rows(t, w, p, rows, n);
    double eg = output_err(t, w, g, x, rows, n, N), ep = output_err(t, w, p, x, rows, n, N);
    printf("%s: output error on correlated inputs: GPTQ %.4g, nearest %.4g (%.0f %%)\n", dtype_name(t), eg, ep,
           100 * eg / ep);
    CHECK(eg < 0.7 * ep, "%s: GPTQ %.4g vs nearest %.4g", dtype_name(t), eg, ep);

    /* the same rows in the _r16 layout hold the same values */
    if (t == DT_Q4_K) {
        free(x), free(h), free(u), free(w), free(tmp), free(g), free(p);
        return;
    }
    moe_dtype r16 = t == DT_Q4_0 ? DT_Q4_0_R16 : DT_Q8_0_R16;
    uint8_t *grp = malloc(rb * rows);
    pack_rows_r16(r16, g, grp, n);
    int same = 1;
    for (int r = 0; r < rows; r++) {
        float a[96], b[96];
        dequantize_row_at(r16, grp, rb, (size_t)r, a, n);
        dequantize_row(t, g + r * rb, b, n);
        same &= !memcmp(a, b, sizeof a);
    }
    CHECK(same, "%s: pack_rows_r16 keeps every value", dtype_name(r16));
    free(x), free(h), free(u), free(w), free(tmp), free(g), free(p), free(grp);
}

int main(void) {
    test_factor(64);
    test_factor(96);
    test_identity(DT_Q8_0);
    test_identity(DT_Q4_0);
    test_identity(DT_Q4_K);
    test_correlated(DT_Q8_0);
    test_correlated(DT_Q4_0);
    test_correlated(DT_Q4_K);
    return test_summary("test_gptq");
}
