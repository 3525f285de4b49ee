/* dtype.c - the table of data types (dtype.h says what adding one takes).
 * One row per type; the functions are the reference ones of quant.c,
 * quant_legacy.c, quant_k.c and quant_mxfp4.c. */
#include "dtype.h"

#include <ctype.h>
#include <string.h>

#include "quant.h"
#include "quant_k.h"
#include "quant_legacy.h"
#include "quant_mxfp4.h"

static const dtype_traits DTYPES[DT_COUNT] = {
    [DT_F32] = {.name = "F32", .block = 1, .block_bytes = 4, .row_group = 1, .plain = DT_F32, .is_float = 1,
                .act = ACT_F32, .dequantize = dequantize_row_f32, .quantize = quantize_row_f32, .dot = dot_f32_ref},
    [DT_F16] = {.name = "F16", .block = 1, .block_bytes = 2, .row_group = 1, .plain = DT_F16, .is_float = 1,
                .act = ACT_F32, .dequantize = dequantize_row_f16, .quantize = quantize_row_f16, .dot = dot_f16_ref},
    [DT_BF16] = {.name = "BF16", .block = 1, .block_bytes = 2, .row_group = 1, .plain = DT_BF16, .is_float = 1,
                 .act = ACT_F32, .dequantize = dequantize_row_bf16, .quantize = quantize_row_bf16,
                 .dot = dot_bf16_ref},
    /* integers and bytes: tokenizer tables, never weights */
    [DT_I32] = {.name = "I32", .block = 1, .block_bytes = 4, .row_group = 1, .plain = DT_I32},
    [DT_U8] = {.name = "U8", .block = 1, .block_bytes = 1, .row_group = 1, .plain = DT_U8},
    [DT_Q8_0] = {.name = "Q8_0", .block = QK8_0, .block_bytes = sizeof(block_q8_0), .row_group = 1, .plain = DT_Q8_0,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q8_0, .quantize = quantize_row_q8_0,
                 .dot = dot_q8_0_q8a_ref},
    [DT_Q4_0] = {.name = "Q4_0", .block = QK4_0, .block_bytes = sizeof(block_q4_0), .row_group = 1, .plain = DT_Q4_0,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q4_0, .quantize = quantize_row_q4_0,
                 .dot = dot_q4_0_q8a_ref},
    [DT_Q4_K] = {.name = "Q4_K", .block = QK_K, .block_bytes = sizeof(block_q4_K), .row_group = 1, .plain = DT_Q4_K,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q4_K, .quantize = quantize_row_q4_K,
                 .dot = dot_q4_K_q8a_ref},
    /* ggml's other block types. Activation pairing as the reference engine's CPU backend (ik_llama.cpp)
     * rounds them, measured against the alternatives in docs/QUANTIZATION.md: Q8A (32 values, bf16 scale)
     * for the 32-blocks and Q4_K/Q5_K/Q6_K, Q8_K (256 values) for Q2_K, Q3_K and IQ4_XS; MXFP4 with
     * floats (quant_mxfp4.h says why). */
    [DT_Q4_1] = {.name = "Q4_1", .block = QK4_1, .block_bytes = sizeof(block_q4_1), .row_group = 1, .plain = DT_Q4_1,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q4_1, .quantize = quantize_row_q4_1,
                 .dot = dot_q4_1_q8a_ref},
    [DT_Q5_0] = {.name = "Q5_0", .block = QK5_0, .block_bytes = sizeof(block_q5_0), .row_group = 1, .plain = DT_Q5_0,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q5_0, .quantize = quantize_row_q5_0,
                 .dot = dot_q5_0_q8a_ref},
    [DT_Q5_1] = {.name = "Q5_1", .block = QK5_1, .block_bytes = sizeof(block_q5_1), .row_group = 1, .plain = DT_Q5_1,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q5_1, .quantize = quantize_row_q5_1,
                 .dot = dot_q5_1_q8a_ref},
    [DT_Q2_K] = {.name = "Q2_K", .block = QK_K, .block_bytes = sizeof(block_q2_K), .row_group = 1, .plain = DT_Q2_K,
                 .is_quant = 1, .act = ACT_Q8_K, .dequantize = dequantize_row_q2_K, .quantize = quantize_row_q2_K,
                 .dot = dot_q2_K_q8_K_ref},
    [DT_Q3_K] = {.name = "Q3_K", .block = QK_K, .block_bytes = sizeof(block_q3_K), .row_group = 1, .plain = DT_Q3_K,
                 .is_quant = 1, .act = ACT_Q8_K, .dequantize = dequantize_row_q3_K, .quantize = quantize_row_q3_K,
                 .dot = dot_q3_K_q8_K_ref},
    [DT_Q5_K] = {.name = "Q5_K", .block = QK_K, .block_bytes = sizeof(block_q5_K), .row_group = 1, .plain = DT_Q5_K,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q5_K, .quantize = quantize_row_q5_K,
                 .dot = dot_q5_K_q8a_ref},
    [DT_Q6_K] = {.name = "Q6_K", .block = QK_K, .block_bytes = sizeof(block_q6_K), .row_group = 1, .plain = DT_Q6_K,
                 .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_q6_K, .quantize = quantize_row_q6_K,
                 .dot = dot_q6_K_q8a_ref},
    [DT_IQ4_NL] = {.name = "IQ4_NL", .block = QK4_NL, .block_bytes = sizeof(block_iq4_nl), .row_group = 1,
                   .plain = DT_IQ4_NL, .is_quant = 1, .act = ACT_Q8A, .dequantize = dequantize_row_iq4_nl,
                   .quantize = quantize_row_iq4_nl, .dot = dot_iq4_nl_q8a_ref},
    [DT_IQ4_XS] = {.name = "IQ4_XS", .block = QK_K, .block_bytes = sizeof(block_iq4_xs), .row_group = 1,
                   .plain = DT_IQ4_XS, .is_quant = 1, .act = ACT_Q8_K, .dequantize = dequantize_row_iq4_xs,
                   .quantize = quantize_row_iq4_xs, .dot = dot_iq4_xs_q8_K_ref},
    [DT_MXFP4] = {.name = "MXFP4", .block = QK_MXFP4, .block_bytes = sizeof(block_mxfp4), .row_group = 1,
                  .plain = DT_MXFP4, .is_quant = 1, .act = ACT_F32, .dequantize = dequantize_row_mxfp4,
                  .quantize = quantize_row_mxfp4, .dot = dot_mxfp4_f32_ref},
    /* interleaved: quant.c's *_rows / *_at functions move their blocks to and from the twin's */
    [DT_Q8_0_R16] = {.name = "Q8_0_R16", .block = QK8_0, .block_bytes = sizeof(block_q8_0), .row_group = R16,
                     .plain = DT_Q8_0, .is_quant = 1, .act = ACT_Q8A},
    [DT_Q4_0_R16] = {.name = "Q4_0_R16", .block = QK4_0, .block_bytes = sizeof(block_q4_0), .row_group = R16,
                     .plain = DT_Q4_0, .is_quant = 1, .act = ACT_Q8A},
};

const dtype_traits *dtype_info(int t) {
    return t >= 0 && t < DT_COUNT && DTYPES[t].name ? &DTYPES[t] : NULL;
}

static const act_traits ACTS[ACT_COUNT] = {
    [ACT_F32] = {.name = "F32", .block = 1, .block_bytes = sizeof(float)},
    [ACT_Q8A] = {.name = "Q8A", .block = 32, .block_bytes = sizeof(block_q8a), .quantize = quantize_row_q8a},
    [ACT_Q8_K] = {.name = "Q8_K", .block = QK_K, .block_bytes = sizeof(block_q8_K), .quantize = quantize_row_q8_K},
};

const act_traits *act_info(act_type a) { return &ACTS[a]; }

int dtype_from_name(const char *s) {
    for (int t = 0; t < DT_COUNT; t++) {
        const char *n = DTYPES[t].name;
        if (!n) continue;
        size_t i = 0;
        while (n[i] && s[i] && toupper((unsigned char)s[i]) == n[i]) i++;
        if (!n[i] && !s[i]) return t;
    }
    return -1;
}

/* The exponent bits of each float type: all ones is an Inf or a NaN. Tested
 * a chunk at a time with integer ops the compiler vectorises; only a chunk
 * that holds one is searched again for the index. */
int64_t dtype_find_nonfinite(moe_dtype t, const void *x, uint64_t n) {
    enum { CHUNK = 1024 };
    if (t != DT_F32 && t != DT_F16 && t != DT_BF16) return -1;
    const uint8_t *p = x;
    uint32_t exp = t == DT_F32 ? 0x7f800000u : t == DT_F16 ? 0x7c00u : 0x7f80u;
    size_t size = t == DT_F32 ? 4 : 2;
    for (uint64_t i0 = 0; i0 < n; i0 += CHUNK) {
        uint64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const uint8_t *c = p + i0 * size;
        unsigned bad = 0;
        if (size == 4)
            for (uint64_t i = 0; i < m; i++) {
                uint32_t u;
                memcpy(&u, c + 4 * i, 4);
                bad |= (u & exp) == exp;
            }
        else
            for (uint64_t i = 0; i < m; i++) {
                uint16_t u;
                memcpy(&u, c + 2 * i, 2);
                bad |= (u & exp) == exp;
            }
        if (!bad) continue;
        for (uint64_t i = 0; i < m; i++) {
            uint32_t u = 0;
            memcpy(&u, c + size * i, size); /* little-endian: the low bytes */
            if ((u & exp) == exp) return (int64_t)(i0 + i);
        }
    }
    return -1;
}
