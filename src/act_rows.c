/* act_rows.c - a matmul input's rows, quantized at most once per activation
 * type however many weight matrices read them (act_rows.h). */
#include "act_rows.h"

#include "quant.h"
#include "threads.h"
#include "util.h"

/* Values below which quantizing the rows stays on one thread (a team costs
 * about a microsecond to wake; decode's 8 experts' hidden rows, 8 x 768,
 * are above). */
#define QUANTIZE_PAR_MIN_VALUES 4096

/* Bytes of one quantized copy of the rows, 64-byte aligned, or 0 when cols
 * is no multiple of the type's block (no weight of that width pairs with
 * it); SIZE_MAX when the size does not fit. */
static size_t act_copy_bytes(act_type at, int n, int cols) {
    uint64_t bytes;
    if (cols % act_info(at)->block) return 0;
    if (!mul_u64((uint64_t)n, act_row_bytes(at, cols), &bytes) || bytes > SIZE_MAX - 64) return SIZE_MAX;
    return ((size_t)bytes + 63) & ~(size_t)63;
}

size_t act_scratch_bytes(int n, int cols) {
    size_t total = 128;
    for (int at = ACT_F32 + 1; at < ACT_COUNT; at++) {
        size_t b = act_copy_bytes((act_type)at, n, cols);
        if (b > SIZE_MAX - total) return SIZE_MAX;
        total += b;
    }
    return total;
}

void act_init(act_rows *a, const float *x, int n, int cols, void *scratch) {
    *a = (act_rows){.x = x, .n = n, .cols = cols};
    size_t off = 0;
    for (int at = ACT_F32 + 1; at < ACT_COUNT && scratch; at++) {
        a->q[at] = (char *)scratch + off;
        off += act_copy_bytes((act_type)at, n, cols);
    }
}

const void *act_prepare(const kernel_set *ks, act_rows *a, moe_dtype wtype, size_t *stride, int n_threads) {
    act_type at = dtype_info(wtype)->act;
    size_t rb = act_row_bytes(at, a->cols);
    *stride = rb;
    if (at == ACT_F32) return a->x;
    if (!a->have[at]) {
        quantize_fn quantize = at == ACT_Q8A && ks->quantize_q8a ? ks->quantize_q8a : act_info(at)->quantize;
        char *q = a->q[at];
        if (a->n > 1 && (int64_t)a->n * a->cols >= QUANTIZE_PAR_MIN_VALUES && n_threads > 1) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int t = 0; t < a->n; t++) quantize(a->x + (size_t)t * a->cols, q + (size_t)t * rb, a->cols);
        } else { /* not even an if(0) region: entering one costs most of a one-row quantize */
            for (int t = 0; t < a->n; t++) quantize(a->x + (size_t)t * a->cols, q + (size_t)t * rb, a->cols);
        }
        a->have[at] = 1;
    }
    return a->q[at];
}
