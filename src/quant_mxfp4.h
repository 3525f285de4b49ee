/* quant_mxfp4.h - MXFP4 (OCP microscaling FP4), byte for byte as ggml's
 * block_mxfp4 (GGML type 39), which is what gpt-oss's experts are:
 *
 *   MXFP4  32 weights: one E8M0 exponent byte e, 16 bytes of FP4 (E2M1)
 *          codes, element j in the low nibble of byte j, j + 16 in the high
 *                      w = kvalues_mxfp4[q] * 2^(e - 128) = fp4(q) * 2^(e - 127)
 *
 * kvalues_mxfp4 holds the E2M1 values doubled (0, 1, 2, 3, 4, 6, 8, 12 and
 * their negatives) so they are integers; the matching half scale 2^(e - 128)
 * makes every weight exact. (Hugging Face's gpt-oss files store the same
 * codes with element 2i low and 2i + 1 high in byte i, and the scales
 * apart: a converter reorders the nibbles.)
 *
 * MXFP4 pairs with float activations: gpt-oss's logits move by 0.15 when
 * the expert inputs are rounded to 8 bits (the golden README measured it),
 * so the dot product decodes the weights and multiplies floats. */
#ifndef MOE_QUANT_MXFP4_H
#define MOE_QUANT_MXFP4_H

#include <stdint.h>
#include <string.h>

#define QK_MXFP4 32

typedef struct {
    uint8_t e;                 /* E8M0 shared exponent */
    uint8_t qs[QK_MXFP4 / 2];  /* E2M1 codes */
} block_mxfp4;

_Static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 must match ggml");

/* The E2M1 values times 2 (ggml kvalues_mxfp4). */
extern const int8_t kvalues_mxfp4[16];

/* 2^(e - 128): half the E8M0 scale (ggml GGML_E8M0_TO_FP32_HALF), exact for
 * every e (e = 0 and 1 are float subnormals). Inline: the SIMD tiles call it
 * once per block. */
static inline float mxfp4_half_scale(uint8_t e) {
    /* as float bits: a normal exponent field e - 1 for e >= 2; e = 1 is
     * 2^-127 and e = 0 is 2^-128, subnormals with mantissa bit 22 or 21 set */
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void dequantize_row_mxfp4(const void *x, float *y, int n);
/* Reference dot of an MXFP4 row with a float row. */
float dot_mxfp4_f32_ref(const void *w, const void *a, int n);
/* ggml's reference quantizer (quantize_row_mxfp4_ref): e from the block's
 * largest magnitude, each value to the nearest level. */
void quantize_row_mxfp4(const float *x, void *y, int n);

#endif /* MOE_QUANT_MXFP4_H */
