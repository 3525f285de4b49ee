/* quant_k.h - ggml's other 256-weight super-block types, byte for byte as
 * llama.cpp writes them (ggml-common.h). Within a super-block, element
 * e = 128 h + 32 k + l (half h, quarter k, l < 32) unless said otherwise:
 *
 *   Q2_K   16 bytes of sub-block (4-bit scale | 4-bit min << 4), 64 bytes of
 *          2-bit codes, f16 d, f16 dmin.  e's code: qs[32 h + l] >> 2k & 3,
 *          sub-block 8 h + 2 k + l / 16       w = d * sc * q - dmin * m
 *   Q3_K   32 bytes hmask, 64 bytes of 2-bit codes, 12 bytes of sixteen 6-bit
 *          scales, f16 d.  q = (low 2 bits as Q2_K) - (hmask[l] bit 4h+k ? 0 : 4),
 *          scale s_j: low nibble of byte j (j < 8) or high nibble of byte
 *          j - 8, top 2 bits from byte 8 + j % 4 at bit 2 (j / 4)
 *                                             w = d * (s - 32) * q
 *   Q5_K   f16 d, f16 dmin, 12 bytes of scales and mins (as Q4_K), 32 bytes qh,
 *          128 bytes of nibbles.  e = 64 c + 32 i + l: nibble i of qs[32 c + l],
 *          5th bit = qh[l] bit 2 c + i, sub-block 2 c + i
 *                                             w = d * sc * q - dmin * m
 *   Q6_K   128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d.  e's low 4 bits:
 *          ql[64 h + 32 (k & 1) + l], nibble k / 2; top 2 bits: qh[32 h + l]
 *          at bit 2k; scale sc[8 h + 2 k + l / 16]
 *                                             w = d * sc * (q - 32)
 *   IQ4_XS f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of nibbles.
 *          Sub-block j (32 values): 6-bit scale ls = nibble j % 2 of
 *          scales_l[j / 2] | (scales_h >> 2 j & 3) << 4; its 16 bytes hold
 *          values i and i + 16 as in IQ4_NL     w = d * (ls - 32) * kvalues_iq4nl[q]
 *
 * Q2_K, Q3_K and IQ4_XS pair with Q8_K activations, Q5_K and Q6_K with Q8A
 * (32-value blocks), as in the reference engine's CPU backend (quant.h). */
#ifndef MOE_QUANT_K_H
#define MOE_QUANT_K_H

#include "quant.h"

typedef struct {
    uint8_t scales[QK_K / 16]; /* per 16 values: scale (low nibble), min (high nibble) */
    uint8_t qs[QK_K / 4];      /* 2-bit codes */
    uint16_t d;                /* f16 scale of the scales */
    uint16_t dmin;             /* f16 scale of the mins */
} block_q2_K;

typedef struct {
    uint8_t hmask[QK_K / 8];   /* 3rd bit of each code (set: no -4) */
    uint8_t qs[QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];        /* 16 x 6-bit scales, packed */
    uint16_t d;                /* f16 super-block scale */
} block_q3_K;

typedef struct {
    uint16_t d;                /* f16 scale of the sub-block scales */
    uint16_t dmin;             /* f16 scale of the sub-block mins */
    uint8_t scales[12];        /* 8 x (6-bit scale, 6-bit min), as Q4_K */
    uint8_t qh[QK_K / 8];      /* 5th bits */
    uint8_t qs[QK_K / 2];      /* low 4 bits */
} block_q5_K;

typedef struct {
    uint8_t ql[QK_K / 2];      /* low 4 bits */
    uint8_t qh[QK_K / 4];      /* high 2 bits */
    int8_t scales[QK_K / 16];  /* per 16 values */
    uint16_t d;                /* f16 super-block scale */
} block_q6_K;

typedef struct {
    uint16_t d;                /* f16 super-block scale */
    uint16_t scales_h;         /* top 2 bits of the 8 sub-block scales */
    uint8_t scales_l[QK_K / 64]; /* low 4 bits of the 8 sub-block scales */
    uint8_t qs[QK_K / 2];      /* indices into kvalues_iq4nl */
} block_iq4_xs;

_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K must match ggml");
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K must match ggml");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K must match ggml");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K must match ggml");
_Static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs must match ggml");

/* Reference dequantizers (exact, ggml's order of float operations) and dot
 * products with an activation row; n a multiple of 256. */
void dequantize_row_q2_K(const void *x, float *y, int n);
void dequantize_row_q3_K(const void *x, float *y, int n);
void dequantize_row_q5_K(const void *x, float *y, int n);
void dequantize_row_q6_K(const void *x, float *y, int n);
void dequantize_row_iq4_xs(const void *x, float *y, int n);
float dot_q2_K_q8_K_ref(const void *w, const void *a, int n);
float dot_q3_K_q8_K_ref(const void *w, const void *a, int n);
float dot_iq4_xs_q8_K_ref(const void *w, const void *a, int n);
/* Q5_K and Q6_K with a Q8A row (32-value blocks, quant.h), as Q4_K. */
float dot_q5_K_q8a_ref(const void *w, const void *a, int n);
float dot_q6_K_q8a_ref(const void *w, const void *a, int n);

/* ggml's reference quantizers (quantize_row_q5_K_ref, quantize_row_q6_K_ref,
 * quantize_row_q4_K_ref, quantize_row_q2_K_ref, quantize_row_q3_K_ref), which llama-quantize runs without an importance
 * matrix. (quant.c's quantize_row_q4_K is ours: a finer fit, other bytes.) */
void quantize_row_q5_K(const float *x, void *y, int n);
void quantize_row_q6_K(const float *x, void *y, int n);
void quantize_row_q4_K_ggml(const float *x, void *y, int n);
void quantize_row_q2_K(const float *x, void *y, int n);
void quantize_row_q3_K(const float *x, void *y, int n);
/* IQ4_XS as llama-quantize makes it without an importance matrix (ggml
 * quantize_iq4_xs: quant_legacy.h iq4_quantize over 8 sub-blocks). */
void quantize_row_iq4_xs(const float *x, void *y, int n);

/* Scale j (0..15, before the - 32) of a Q3_K block. */
static inline int q3_K_scale(const uint8_t *s, int j) {
    int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    return lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
}

/* Scale of sub-block j (0..7, before the - 32) of an IQ4_XS block. */
static inline int iq4_xs_scale(const block_iq4_xs *b, int j) {
    return ((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | ((b->scales_h >> (2 * j)) & 3) << 4;
}

#endif /* MOE_QUANT_K_H */
