/* kernels.c - scalar reference kernels and the dispatch point.
 *
 * These are written for clarity, not speed: one dot product per (row, token),
 * accumulated in float. Faster kernel sets live in their own files and must
 * agree with these (tests/unit/test_kernels.c). */
#include "kernels.h"

#include "util.h"

static float dot_f32(const float *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += bf16_to_f32(w[i]) * x[i];
    return s;
}

static float scalar_dot(moe_dtype dt, const void *row, const float *x, int n) {
    switch (dt) {
    case DT_F32: return dot_f32(row, x, n);
    case DT_F16: return dot_f16(row, x, n);
    case DT_BF16: return dot_bf16(row, x, n);
    default: return 0.0f; /* quantized types arrive with their kernels */
    }
}

static void scalar_matmul(float *y, const wmat *w, const float *x, int n) {
    int rows = w->rows, cols = w->cols;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const void *row = wmat_row(w, r);
        for (int t = 0; t < n; t++) y[(size_t)t * rows + r] = scalar_dot(w->dtype, row, x + (size_t)t * cols, cols);
    }
}

const kernel_set *kernels_scalar(void) {
    static const kernel_set k = {"scalar", scalar_dot, scalar_matmul};
    return &k;
}

const kernel_set *kernels_get(void) { return kernels_scalar(); }

const char *moe_kernel_name(void) { return kernels_get()->name; }

void wmat_row_to_f32(const wmat *w, int r, float *out) {
    const void *row = wmat_row(w, r);
    switch (w->dtype) {
    case DT_F32: memcpy(out, row, sizeof(float) * (size_t)w->cols); break;
    case DT_F16:
        for (int i = 0; i < w->cols; i++) out[i] = f16_to_f32(((const uint16_t *)row)[i]);
        break;
    case DT_BF16:
        for (int i = 0; i < w->cols; i++) out[i] = bf16_to_f32(((const uint16_t *)row)[i]);
        break;
    default:
        memset(out, 0, sizeof(float) * (size_t)w->cols);
        break;
    }
}
