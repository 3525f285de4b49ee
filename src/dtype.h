/* dtype.h - the data types of tensors in a .moe file, and one table that
 * says everything the engine knows about each (src/dtype.c).
 *
 * Adding a weight type takes:
 *   1. its id below (the number docs/FORMAT.md and tools/moefile.py give it;
 *      ids are below DT_COUNT);
 *   2. its block struct with a _Static_assert on its size (quant.h, or
 *      quant_legacy.h, quant_k.h, quant_mxfp4.h for ggml's other types), and
 *      its reference functions beside it: dequantize a row, quantize a row (if
 *      the engine writes it), and the dot product of a row with an
 *      activation row of the type it pairs with;
 *   3. a row in the table in dtype.c naming all of that;
 *   4. a row in tools/moefile.py's DTYPES table (same id, name, block sizes).
 * Nothing else: the loader, moe quantize, moe info and the scalar kernel set
 * read the table, and a kernel set without a tile for the type runs the
 * reference dot (kernels.h). Optional: SIMD tiles in kernels_<isa>.c. */
#ifndef MOE_DTYPE_H
#define MOE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DT_F32 = 0,
    DT_F16 = 1,
    DT_BF16 = 2,
    DT_I32 = 3,
    DT_U8 = 4,
    DT_Q8_0 = 16,
    DT_Q4_0 = 17,
    DT_Q4_K = 18,
    DT_Q8_0_R16 = 19, /* Q8_0 with 16 rows interleaved (quant.h) */
    DT_Q4_0_R16 = 20, /* Q4_0 with 16 rows interleaved */
    /* ggml's other block types, as llama.cpp stores them (quant_legacy.h,
     * quant_k.h, quant_mxfp4.h) */
    DT_Q4_1 = 21,
    DT_Q5_0 = 22,
    DT_Q5_1 = 23,
    DT_Q2_K = 24,
    DT_Q3_K = 25,
    DT_Q5_K = 26,
    DT_Q6_K = 27,
    DT_IQ4_NL = 28,
    DT_IQ4_XS = 29,
    DT_MXFP4 = 30,
} moe_dtype;

#define DT_COUNT 32 /* every id is below this: tables indexed by dtype have DT_COUNT rows */

/* The activation types weights pair with: a matmul quantizes its input rows
 * once per activation type (kernels.h act_rows), never per weight type. */
typedef enum { ACT_F32 = 0, ACT_Q8A = 1, ACT_Q8_K = 2 } act_type;
#define ACT_COUNT 3

/* Reference (scalar) functions of a type; n is a multiple of its block. */
typedef void (*dequantize_fn)(const void *x, float *y, int n);  /* n stored values -> floats */
typedef void (*quantize_fn)(const float *x, void *y, int n);    /* n floats -> stored values */
typedef float (*dot_fn)(const void *w, const void *a, int n);   /* weight row . activation row */

typedef struct {
    const char *name;          /* as files, messages and `moe quantize --type` spell it: "Q4_K" */
    int block;                 /* elements per block (1 for the plain types) */
    int block_bytes;           /* bytes per block */
    int row_group;             /* rows stored together (interleaved _R16: 16); a tensor's rows are a multiple */
    moe_dtype plain;           /* an interleaved type's plain twin (same bytes per block); else the type itself */
    int is_float;              /* F32, F16, BF16: a weight type read as is */
    int is_quant;              /* block-quantized weight type */
    act_type act;              /* the activation type its dot products read */
    dequantize_fn dequantize;  /* NULL: not a weight type, or interleaved (use the twin's on its blocks) */
    quantize_fn quantize;      /* NULL: the engine never writes it row by row */
    dot_fn dot;                /* reference dot with an `act` row; NULL as dequantize */
} dtype_traits;

/* The row of dtype t, or NULL if t is no known type. */
const dtype_traits *dtype_info(int t);

/* The activation types: what their rows hold and the reference quantizer. */
typedef struct {
    const char *name;
    int block;                 /* values per block */
    int block_bytes;
    quantize_fn quantize;      /* NULL for ACT_F32 (rows are the floats themselves) */
} act_traits;

const act_traits *act_info(act_type a);

/* Thin wrappers for the questions most call sites ask. */
static inline int dtype_known(int t) { return dtype_info(t) != NULL; }
/* "?" for an unknown id, so a message can always name the type. */
static inline const char *dtype_name(int t) { return dtype_info(t) ? dtype_info(t)->name : "?"; }
/* Bytes of a row of n elements of a known type (n a multiple of the block). */
static inline size_t dtype_row_bytes(moe_dtype t, uint64_t n) {
    const dtype_traits *d = dtype_info(t);
    return (size_t)(n / (uint64_t)d->block) * (size_t)d->block_bytes;
}
/* Bytes of an activation row of n values (n a multiple of the block). */
static inline size_t act_row_bytes(act_type a, int n) {
    const act_traits *d = act_info(a);
    return (size_t)(n / d->block) * (size_t)d->block_bytes;
}
/* The type named s, case-insensitively ("q4_k"); -1 if none is. */
int dtype_from_name(const char *s);

/* Index of the first NaN or Inf among n values of a float type (F32, F16,
 * BF16) at x, or -1 (also for any other type). Fast enough to run over a
 * layer's output rows after every layer. */
int64_t dtype_find_nonfinite(moe_dtype t, const void *x, uint64_t n);

#endif /* MOE_DTYPE_H */
