/* gptq.h - calibrated rounding of weight rows (GPTQ) for Q8_0, Q4_0, Q4_K.
 *
 * Plain rounding picks each weight's nearest grid point. GPTQ (Frantar et
 * al., 2022) rounds the columns of a row one after another and moves each
 * rounding error onto the columns not yet rounded, in the proportions that
 * keep the row's output on the calibration inputs closest: H = sum x x^T
 * over those inputs says how the columns move together. Same blocks, same
 * kernels; only which grid points are chosen changes (moe quantize --calib). */
#ifndef MOE_GPTQ_H
#define MOE_GPTQ_H

#include "dtype.h"

/* U, the upper-triangular Cholesky factor of (H + damp * mean(diag H) * I)^-1
 * (U^T U = that inverse), n x n row-major, from H (n x n, symmetric).
 * Returns 0, or -1 if the damped H is not positive definite, n is not
 * positive, or its n x n doubles do not fit in memory. */
int gptq_factor(const float *H, int n, float damp, float *U);

/* nrows rows of n floats at x as plain Q8_0, Q4_0 or Q4_K rows at y (n a
 * multiple of the block). Each block's scales (Q4_K: its sub-blocks' scales
 * and mins) come from the block quantizer on the block's values as they
 * stand when it is reached; x is overwritten (it ends holding the values
 * with every earlier error folded in). */
void gptq_rows(moe_dtype t, float *x, int nrows, int n, const float *U, void *y);

#endif /* MOE_GPTQ_H */
