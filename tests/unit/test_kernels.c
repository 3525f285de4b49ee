/* test_kernels.c - every kernel set agrees with a float64 reference on odd
 * sizes, per dtype, within a per-type error budget; the half-precision
 * conversions are exact. When SIMD sets exist, each is compared with the
 * scalar set too. */
#include "kernels.h"
#include "test_util.h"
#include "util.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / 8388608.0) - 1.0f;
}

/* Encode f32 values into the storage dtype (round to nearest) and back, so
 * the reference uses exactly the values the kernel sees. */
static void store(moe_dtype dt, const float *src, void *dst, float *exact, int n) {
    for (int i = 0; i < n; i++) {
        if (dt == DT_F32) { ((float *)dst)[i] = src[i]; exact[i] = src[i]; }
        if (dt == DT_F16) { uint16_t h = f32_to_f16(src[i]); ((uint16_t *)dst)[i] = h; exact[i] = f16_to_f32(h); }
        if (dt == DT_BF16) { uint16_t h = f32_to_bf16(src[i]); ((uint16_t *)dst)[i] = h; exact[i] = bf16_to_f32(h); }
    }
}

static void check_set(const kernel_set *ks, moe_dtype dt) {
    static const int cols_list[] = {1, 2, 3, 7, 16, 31, 32, 33, 64, 65, 127, 257, 1000};
    static const int rows_list[] = {1, 3, 17};
    static const int toks_list[] = {1, 2, 5};
    for (size_t ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++)
        for (size_t ri = 0; ri < 3; ri++)
            for (size_t ti = 0; ti < 3; ti++) {
                int cols = cols_list[ci], rows = rows_list[ri], n = toks_list[ti];
                size_t es = dt == DT_F32 ? 4 : 2;
                float *src = malloc(sizeof(float) * rows * cols), *w = malloc(sizeof(float) * rows * cols);
                void *stored = malloc(es * rows * cols);
                float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
                for (int i = 0; i < rows * cols; i++) src[i] = frand();
                for (int i = 0; i < n * cols; i++) x[i] = frand() * 4.0f;
                store(dt, src, stored, w, rows * cols);
                wmat m = {stored, dt, rows, cols, 1, es * (size_t)cols};
                ks->matmul(y, &m, x, n);
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < rows; r++) {
                        double ref = 0, mag = 0;
                        for (int c = 0; c < cols; c++) {
                            ref += (double)w[r * cols + c] * x[t * cols + c];
                            mag += fabs((double)w[r * cols + c] * x[t * cols + c]);
                        }
                        /* float accumulation: error grows with the sum of |terms| */
                        double tol = 4e-7 * mag * (1 + sqrt((double)cols)) + 1e-30;
                        double got = y[t * rows + r];
                        if (fabs(got - ref) > tol) {
                            CHECK(0, "%s %s rows %d cols %d n %d [%d,%d]: %.9g vs %.9g", ks->name, dtype_name(dt),
                                  rows, cols, n, t, r, got, ref);
                            goto next;
                        }
                    }
                g_checks++;
            next:
                free(src); free(w); free(stored); free(x); free(y);
            }
}

static void test_half_conversions(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (f != f) continue; /* NaN payloads need not round-trip exactly */
        if (f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d f16 values do not round-trip", bad);
    CHECK(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x0001) == ldexpf(1, -24),
          "f16 decoding");
    CHECK(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff, "f16 overflow rounding");
    CHECK(f32_to_bf16(1.0f) == 0x3f80 && bf16_to_f32(0x3f80) == 1.0f, "bf16 basics");
    CHECK(f32_to_bf16(bf16_to_f32(0x3f81) + ldexpf(1, -8)) == 0x3f82, "bf16 ties to even (odd rounds up)");
    CHECK(f32_to_bf16(bf16_to_f32(0x3f80) + ldexpf(1, -8)) == 0x3f80, "bf16 ties to even (even stays)");
}

int main(void) {
    test_half_conversions();
    const kernel_set *sets[2] = {kernels_scalar(), kernels_get()};
    int n_sets = sets[0] == sets[1] ? 1 : 2;
    moe_dtype types[3] = {DT_F32, DT_F16, DT_BF16};
    for (int s = 0; s < n_sets; s++)
        for (int t = 0; t < 3; t++) check_set(sets[s], types[t]);
    printf("kernel sets tested: %s%s%s\n", sets[0]->name, n_sets > 1 ? ", " : "", n_sets > 1 ? sets[1]->name : "");
    return test_summary("test_kernels");
}
