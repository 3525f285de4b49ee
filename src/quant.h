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
 *   Q8_0_R16, Q4_0_R16  (ours, not ggml's; like ik_llama.cpp's repacked
 *         _R8 types) the scales and quant bytes of Q8_0 / Q4_0 with 16 rows
 *         interleaved: per block column of a group of 16 rows, the 16 f16
 *         scales, then the rows' qs bytes in 4-byte steps,
 *         qs[64k + 4r + j] = qs_r[4k + j] (8 steps for Q8_0, 4 for Q4_0).
 *         One 64-byte load holds 4 values (Q4_0: 4 + 4) of each of the 16
 *         rows, so a SIMD dot's lanes are rows: one scale multiply per 16
 *         rows and block, no horizontal sums. Same bytes per weight.
 *
 * Activations are quantized once per matmul input to the type the weight
 * type pairs with (Q8A for Q8_0/Q4_0/Q4_K); float weights use
 * float activations. Activation blocks never reach a file, so Q8A is laid
 * out for the kernels: a float scale and the block sum precomputed (Q4_0's
 * "- 8" becomes one correction per block). */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

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

#define R16 16
typedef struct {
    uint16_t d[R16];     /* f16 scale of each row's block */
    int8_t qs[R16 * QK8_0];
} block_q8_0x16;

typedef struct {
    uint16_t d[R16];
    uint8_t qs[R16 * QK4_0 / 2];
} block_q4_0x16;

typedef struct {
    uint16_t d;          /* f16 super-block scale of the sub-block scales */
    uint16_t dmin;       /* f16 super-block scale of the sub-block mins */
    uint8_t scales[12];  /* 8 x (6-bit scale, 6-bit min), packed as ggml */
    uint8_t qs[QK_K / 2];
} block_q4_K;

/* The activation partner of every 32-block type, Q4_K, Q5_K and Q6_K (and
 * the _R16 forms): 32 int8 values, their scale d, and their exact sum (what
 * a weight offset, Q4_0's "- 8" or an unsigned trick's "+ 128", multiplies).
 * d is amax / 127 rounded to bf16 and the values are rounded with that d,
 * as llama.cpp's CPU backend (ik_llama.cpp's Q8_2) rounds these activations:
 * the same 8-bit values as the engine people compare us with, which on
 * MoE routing near-ties decides which experts run (docs/QUANTIZATION.md). */
typedef struct {
    float d;             /* a bf16 value, kept as float for the kernels */
    int32_t sum;
    int8_t qs[32];
} block_q8a;

/* The activation partner of Q2_K, Q3_K and IQ4_XS (ggml's Q8_K): 256 int8
 * values, one float scale, and the sums of each 16 values (they multiply
 * the mins). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must match ggml");
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must match ggml");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K must match ggml");
_Static_assert(sizeof(block_q8_0x16) == R16 * sizeof(block_q8_0), "Q8_0_R16: the bytes of 16 Q8_0 blocks");
_Static_assert(sizeof(block_q4_0x16) == R16 * sizeof(block_q4_0), "Q4_0_R16: the bytes of 16 Q4_0 blocks");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K must match ggml");
_Static_assert(sizeof(block_q8a) == 40, "block_q8a: scale, sum and 32 values");

/* Reference (scalar) quantizers, dequantizers and dot products, one per
 * type (dtype.c names them in its table); n is a multiple of the block. */
void quantize_row_f32(const float *x, void *y, int n);
void quantize_row_f16(const float *x, void *y, int n);
void quantize_row_bf16(const float *x, void *y, int n);
void quantize_row_q8_0(const float *x, void *y, int n);
void quantize_row_q4_0(const float *x, void *y, int n);
void quantize_row_q4_K(const float *x, void *y, int n);
void quantize_row_q8_K(const float *x, void *y, int n); /* activations */
void quantize_row_q8a(const float *x, void *y, int n);  /* activations */
/* x rounded in place to the values its activation row of type at holds (ACT_F32: unchanged). */
void act_round_row(act_type at, float *x, int n);

void dequantize_row_f32(const void *x, float *y, int n);
void dequantize_row_f16(const void *x, float *y, int n);
void dequantize_row_bf16(const void *x, float *y, int n);
void dequantize_row_q8_0(const void *x, float *y, int n);
void dequantize_row_q4_0(const void *x, float *y, int n);
void dequantize_row_q4_K(const void *x, float *y, int n);

/* A weight row with an activation row of the type it pairs with. */
float dot_f32_ref(const void *w, const void *x, int n);
float dot_f16_ref(const void *w, const void *x, int n);
float dot_bf16_ref(const void *w, const void *x, int n);
float dot_q8_0_q8a_ref(const void *w, const void *x, int n);
float dot_q4_0_q8a_ref(const void *w, const void *x, int n);
float dot_q4_K_q8a_ref(const void *w, const void *x, int n);

/* By type, through the table (any weight type but the interleaved ones;
 * dequantize_row writes zeros for a type it cannot read). */
void dequantize_row(moe_dtype t, const void *x, float *y, int n);
void quantize_row(moe_dtype t, const float *x, void *y, int n);

/* Whole rows, interleaved types included (their groups hold the twin's
 * blocks, each row's taken out or put in block by block). */
/* nrows rows of n (any dtype; nrows a multiple of its row_group). */
void quantize_rows(moe_dtype t, const float *x, void *y, int nrows, int n);
/* 16 plain rows of n values (Q8_0 or Q4_0, as t's twin) laid out as one
 * group of t (Q8_0_R16 / Q4_0_R16). */
void pack_rows_r16(moe_dtype t, const void *plain, void *y, int n);
/* Row r of a matrix of rows of row_bytes at base, as floats (any dtype). */
void dequantize_row_at(moe_dtype t, const void *base, size_t row_bytes, size_t r, float *y, int n);
/* Row r of that matrix . activation row x (the reference every tile is
 * tested against). */
float dot_row_at(moe_dtype t, const void *base, size_t row_bytes, size_t r, const void *x, int n);

/* 1 if all n values are finite: x - x is 0 for those and NaN for Inf/NaN.
 * Quantizers give a non-finite block a zero block, because converting a
 * non-finite or out-of-range float to an integer is undefined in C (the
 * forward pass's own non-finite check reports the error). */
static inline int block_finite(const float *x, int n) {
    float z = 0.0f;
    for (int i = 0; i < n; i++) z += x[i] - x[i];
    return z == 0.0f;
}

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
