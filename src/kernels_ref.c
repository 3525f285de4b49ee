/* kernels_ref.c - the scalar reference kernel set: what every SIMD set is
 * tested against (tests/unit/test_kernels.c), written for clarity.
 *
 * It has no tiles of its own: tile_ref computes any weight type of the
 * table (dtype.h) with one reference dot product per (row, token). */
#include "kernels.h"

#include "quant.h"
#include "util.h"

static float dot_f32(const float *a, const float *b, int n) { return dot_f32_ref(a, b, n); }

static void axpy_f32_ref(float *y, float s, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += s * x[i];
}

static void axpy_f16_ref(float *y, float s, const uint16_t *x, int n) {
    for (int i = 0; i < n; i++) y[i] += s * f16_to_f32(x[i]);
}

void tile_ref(moe_dtype t, int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
              const int *idx, int nt, float *y, size_t ldy) {
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nt; k++) {
            const void *ak = (const char *)a + (size_t)(idx ? idx[k] : k) * a_stride;
            y[(size_t)k * ldy + r] = dot_row_at(t, w, w_stride, (size_t)r, ak, n);
        }
}

/* Sixteen independent sums, so the loop is bound by loads, not by one
 * chain of adds (the compiler vectorizes it); 64 words of each part in turn. */
static void read_chunk_ref(const uint64_t *q, uint64_t *s) {
    for (int i = 0; i < 64; i += 16)
        for (int l = 0; l < 16; l++) s[l] += q[i + l];
}
static uint64_t read_sum_ref(const uint64_t *p, size_t n, int parts) {
    uint64_t s[16] = {0}, t = 0;
    size_t part = n / (size_t)parts / 64 * 64;
    for (size_t i = 0; i < part; i += 64)
        for (int k = 0; k < parts; k++) read_chunk_ref(p + (size_t)k * part + i, s);
    for (size_t i = (size_t)parts * part; i < n; i += 64) read_chunk_ref(p + i, s);
    for (int l = 0; l < 16; l++) t += s[l];
    return t;
}

static const kernel_set SCALAR = {
    .name = "scalar", /* no tiles: every type runs tile_ref */
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32_ref,
    .axpy_f16 = axpy_f16_ref,
    .quantize_q8a = quantize_row_q8a,
    .read_sum = read_sum_ref,
};

const kernel_set *kernels_scalar(void) { return &SCALAR; }
