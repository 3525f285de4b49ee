/* wmat.h - a weight matrix as the kernels see it: a view of rows of one
 * data type in the read-only mapping (it owns nothing). Kernels, GPTQ and
 * the model all speak it; this header needs only the type table. */
#ifndef MOE_WMAT_H
#define MOE_WMAT_H

#include <stddef.h>

#include "dtype.h"

/* Row-major [rows, cols]. Stacked tensors ([n_mats, rows, cols]: experts,
 * MLA heads) are n_mats such matrices, mat_bytes apart; wmat_at() selects one. */
typedef struct {
    const void *data;
    moe_dtype dtype;
    int rows, cols;       /* of one matrix */
    int n_mats;           /* 1 for a plain matrix */
    size_t row_bytes;     /* bytes of one row (dtype blocks) */
    /* bytes from one stacked matrix to the next; 0: rows * row_bytes (back to
     * back). More for a view into a fused stack: the gate half of
     * [n_experts, 2 * ff, dim] gate|up rows steps 2 * ff rows per expert. */
    size_t mat_bytes;
} wmat;

static inline wmat wmat_at(wmat m, int i) {
    size_t step = m.mat_bytes ? m.mat_bytes : (size_t)m.rows * m.row_bytes;
    m.data = (const char *)m.data + (size_t)i * step;
    m.n_mats = 1;
    return m;
}
static inline const void *wmat_row(const wmat *m, int r) { return (const char *)m->data + (size_t)r * m->row_bytes; }

#endif /* MOE_WMAT_H */
