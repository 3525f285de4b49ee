/* kernels.h - the matrix kernels behind every projection: one dispatch point
 * (kernels_get) picks a kernel set for this CPU once; the scalar reference
 * set is always compiled and is what the SIMD sets are tested against.
 *
 * Contract of matmul:  y[t][r] = sum_c W[r][c] * x[t][c]
 *   W: rows x cols in its storage dtype; x: n rows of cols floats;
 *   y: n rows of W.rows floats (overwritten). */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include "model.h"

typedef struct {
    const char *name;
    /* dot product of one stored row (dtype) with n floats */
    float (*dot)(moe_dtype dt, const void *row, const float *x, int n);
    void (*matmul)(float *y, const wmat *w, const float *x, int n);
} kernel_set;

/* The reference kernels (always available). */
const kernel_set *kernels_scalar(void);
/* The kernels this CPU runs best; chosen once. */
const kernel_set *kernels_get(void);

/* y = W x through the chosen kernels. */
static inline void matmul(float *y, const wmat *w, const float *x, int n) { kernels_get()->matmul(y, w, x, n); }

/* Row r of W widened to floats (embedding lookup). */
void wmat_row_to_f32(const wmat *w, int r, float *out);

#endif /* MOE_KERNELS_H */
