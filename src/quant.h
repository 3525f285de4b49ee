/* quant.h - block-quantized weight types, with ggml's layouts so files and
 * numbers are comparable with llama.cpp's:
 *
 *   Q8_0  32 weights: f16 scale d, 32 x int8 q              w = d * q
 *   Q4_0  32 weights: f16 scale d, 16 bytes of nibbles      w = d * (q - 8)
 *         (byte j: element j in the low nibble, j+16 in the high nibble)
 *   Q4_K  256 weights in 8 sub-blocks of 32: f16 d and dmin, 12 bytes of
 *         6-bit sub-block scales and mins, 128 bytes of nibbles
 *                                                          w = d*sc*q - dmin*m
 *
 * Activations are quantized once per matmul input to the type the weight
 * type pairs with (Q8A for Q8_0/Q4_0, Q8_K for Q4_K); float weights use
 * float activations. Activation blocks never reach a file, so Q8A is laid
 * out for the kernels: a float scale and the block sum precomputed (Q4_0's
 * "- 8" becomes one correction per block). */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "file.h"

#define QK8_0 32
#define QK4_0 32
#define QK_K 256

typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qs[QK4_0 / 2];
} block_q4_0;

typedef struct {
    uint16_t d;          /* f16 super-block scale of the sub-block scales */
    uint16_t dmin;       /* f16 super-block scale of the sub-block mins */
    uint8_t scales[12];  /* 8 x (6-bit scale, 6-bit min), packed as ggml */
    uint8_t qs[QK_K / 2];
} block_q4_K;

/* The activation partner of Q8_0 and Q4_0: 32 int8 values, their float
 * scale d, and s = d * sum(qs). */
typedef struct {
    float d, s;
    int8_t qs[32];
} block_q8a;

/* The activation partner of Q4_K: 256 int8 values, one float scale, and
 * the sums of each 16 values (they multiply the mins). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must match ggml");
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must match ggml");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K must match ggml");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K must match ggml");
_Static_assert(sizeof(block_q8a) == 40, "block_q8a: 8 bytes of scales + 32");

/* Activation types a weight type pairs with. */
typedef enum { ACT_F32 = 0, ACT_Q8A = 1, ACT_Q8_K = 2 } act_type;

act_type dtype_act(moe_dtype t);
size_t act_row_bytes(act_type a, int n);

/* Reference (scalar) quantizers and dequantizers; n is a multiple of the block. */
void quantize_row_q8_0(const float *x, void *y, int n);
void quantize_row_q4_0(const float *x, void *y, int n);
void quantize_row_q4_K(const float *x, void *y, int n);
void quantize_row_q8_K(const float *x, void *y, int n);
void quantize_row_q8a(const float *x, void *y, int n);
void dequantize_row(moe_dtype t, const void *x, float *y, int n);
/* Quantize one row of n floats to a weight dtype (any float or quant type). */
void quantize_row(moe_dtype t, const float *x, void *y, int n);

/* Reference dot products of a weight row with a prepared activation row. */
float dot_q8_0_q8a_ref(const void *w, const void *x, int n);
float dot_q4_0_q8a_ref(const void *w, const void *x, int n);
float dot_q4_K_q8_K_ref(const void *w, const void *x, int n);

/* 6-bit scale and min of sub-block j of a Q4_K block (ggml get_scale_min_k4). */
static inline void q4_K_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif /* MOE_QUANT_H */
