/* act_rows.h - the input rows of a matmul, prepared once per activation
 * type: an act_rows remembers the float rows and quantizes them on first
 * use for each type a weight pairs with (dtype.h), so q, k and v (or an
 * expert's gate and up) share one quantization. */
#ifndef MOE_ACT_ROWS_H
#define MOE_ACT_ROWS_H

#include <stddef.h>

#include "dtype.h"
#include "kernels.h"

/* n float rows of cols values (row t at x + t*cols) plus lazily filled
 * quantized copies, one per activation type, in caller-provided scratch. */
typedef struct {
    const float *x;             /* (n, cols) */
    int n, cols;
    void *q[ACT_COUNT];         /* (n, act_row_bytes(type, cols)) in the scratch; q[ACT_F32] unused */
    int have[ACT_COUNT];        /* q[type] holds the rows */
} act_rows;

/* Bytes of scratch act_rows needs for n rows of cols (scratch may be NULL
 * when only float weights will read the rows); SIZE_MAX if that overflows. */
size_t act_scratch_bytes(int n, int cols);
void act_init(act_rows *a, const float *x, int n, int cols, void *scratch);
/* Quantize for this weight dtype if not done yet (with the set's quantizer,
 * on up to n_threads threads); returns the rows' base and stride. */
const void *act_prepare(const kernel_set *ks, act_rows *a, moe_dtype wtype, size_t *stride, int n_threads);

#endif /* MOE_ACT_ROWS_H */
