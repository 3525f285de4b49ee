/* quant_legacy.h - ggml's other 32-weight block types, byte for byte as
 * llama.cpp writes them (ggml-common.h), so GGUF tensors are used in place:
 *
 *   Q4_1   f16 d, f16 m, 16 bytes of nibbles                w = d * q + m
 *   Q5_0   f16 d, 4 bytes of 5th bits, 16 bytes of nibbles  w = d * (q - 16)
 *   Q5_1   f16 d, f16 m, 4 bytes of 5th bits, 16 nibbles    w = d * q + m
 *   IQ4_NL f16 d, 16 bytes of nibbles                       w = d * kvalues_iq4nl[q]
 *
 * As in Q4_0, byte j holds element j in its low nibble and element j + 16 in
 * its high nibble; Q5_x's 32-bit little-endian qh holds element i's 5th bit
 * at bit i.
 *
 * Each pairs with Q8A activations (ggml: Q8_0 for Q5_0/IQ4_NL, Q8_1 for
 * Q4_1/Q5_1, whose min term m * sum(a) needs the activation block's sum,
 * which Q8A carries). */
#ifndef MOE_QUANT_LEGACY_H
#define MOE_QUANT_LEGACY_H

#include "quant.h"

#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK4_NL 32

typedef struct {
    uint16_t d;          /* f16 scale */
    uint16_t m;          /* f16 offset (the block's minimum) */
    uint8_t qs[QK4_1 / 2];
} block_q4_1;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qh[4];       /* 5th bit of each of the 32 values */
    uint8_t qs[QK5_0 / 2];
} block_q5_0;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint16_t m;          /* f16 offset */
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;

typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qs[QK4_NL / 2]; /* indices into kvalues_iq4nl */
} block_iq4_nl;

_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 must match ggml");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 must match ggml");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 must match ggml");
_Static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl must match ggml");

/* The 16 non-linear levels of IQ4_NL and IQ4_XS (ggml kvalues_iq4nl). */
extern const int8_t kvalues_iq4nl[16];

/* Reference dequantizers (exact: the products ggml and gguf-py compute, in
 * the same order) and dot products with a Q8A row; n a multiple of 32. */
void dequantize_row_q4_1(const void *x, float *y, int n);
void dequantize_row_q5_0(const void *x, float *y, int n);
void dequantize_row_q5_1(const void *x, float *y, int n);
void dequantize_row_iq4_nl(const void *x, float *y, int n);
float dot_q4_1_q8a_ref(const void *w, const void *a, int n);
float dot_q5_0_q8a_ref(const void *w, const void *a, int n);
float dot_q5_1_q8a_ref(const void *w, const void *a, int n);
float dot_iq4_nl_q8a_ref(const void *w, const void *a, int n);

/* ggml's reference quantizers (quantize_row_*_ref): same bytes as
 * llama-quantize without an importance matrix. */
void quantize_row_q4_1(const float *x, void *y, int n);
void quantize_row_q5_0(const float *x, void *y, int n);
void quantize_row_q5_1(const float *x, void *y, int n);
/* IQ4_NL as llama-quantize makes it (ggml quantize_iq4_nl, no importance
 * matrix): per block a search of 15 scales around the range-based one. */
void quantize_row_iq4_nl(const float *x, void *y, int n);
/* That search for nsub sub-blocks of 32 values (1: an IQ4_NL block, into d
 * and qs; 8: an IQ4_XS super-block, also into its scale fields). */
void iq4_quantize(const float *x, int nsub, uint16_t *d, uint8_t *qs, uint16_t *scales_h, uint8_t *scales_l);

#endif /* MOE_QUANT_LEGACY_H */
