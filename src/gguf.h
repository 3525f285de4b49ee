/* gguf.h - llama.cpp's GGUF container (v2 and v3): a pure, bounds-checked
 * parser over a byte buffer (what tests and the fuzzer call), and the ggml
 * tensor types it can name. After gguf_parse() succeeds every key, value,
 * tensor name and tensor byte range is known to lie inside the buffer, the
 * tensor data are aligned and do not overlap, and each tensor's size is its
 * element count times its type's size.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv;
 * n_kv x (string key, u32 value type, value); n_tensors x (string name,
 * u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset); padding to
 * general.alignment (default 32); the data. A string is u64 length + bytes;
 * an array is u32 element type, u64 count, elements. ne[0] is the fastest
 * dimension: a GGUF [ne0, ne1] matrix is a row-major [ne1][ne0] one.
 *
 * gguf_view.c translates a parsed file into the engine's own view (moe_file
 * keys and tensor names) so the forward pass is the same for both formats. */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "moe.h"

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
} gguf_vtype;

typedef struct {
    const char *key;          /* in the buffer, not NUL-terminated */
    uint32_t key_len;
    gguf_vtype type;
    gguf_vtype elem_type;     /* GGUF_ARRAY: type of the elements */
    uint64_t n;               /* GGUF_ARRAY: element count; GGUF_STRING: byte length */
    const uint8_t *data;      /* scalar: its bytes; string: its bytes; array: the first element */
    uint64_t size;            /* bytes of data (arrays: all elements, with nested headers) */
} gguf_kv;

typedef struct {
    const char *name;         /* in the buffer, not NUL-terminated */
    uint32_t name_len;
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims 1 */
    int type;                 /* ggml type id (ggml_type_*) */
    uint64_t offset;          /* from the start of the data section */
    uint64_t nbytes;
    const void *data;         /* inside the buffer, aligned */
} gguf_tensor;

typedef struct {
    const uint8_t *base;      /* the whole file */
    size_t size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;     /* start of the data section */
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;              /* allocated: n_kv entries */
    gguf_tensor *tensors;     /* allocated: n_tensors entries */
} gguf_file;

/* 1 if the buffer starts with the GGUF magic. */
int gguf_is(const void *buf, size_t size);
/* Parse a buffer that must outlive g (nothing is copied). */
int gguf_parse(gguf_file *g, const void *buf, size_t size, moe_err *err);
void gguf_free(gguf_file *g);

/* Lookups (NULL when absent); key/name NUL-terminated. */
const gguf_kv *gguf_find(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed reads of a value; -1 + err naming the key when the type does not fit. */
int gguf_kv_uint(const gguf_kv *kv, uint64_t *out, moe_err *err);   /* any integer type or bool, >= 0 */
int gguf_kv_float(const gguf_kv *kv, double *out, moe_err *err);    /* F32, F64 or an integer */
int gguf_kv_bool(const gguf_kv *kv, int *out, moe_err *err);        /* BOOL or an integer */
/* A string value: its bytes and length (not NUL-terminated). */
int gguf_kv_str(const gguf_kv *kv, const char **s, uint64_t *len, moe_err *err);
/* Element i of an array of integers / floats (elem type checked by the caller). */
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gguf_arr_float(const gguf_kv *kv, uint64_t i);
/* Walk an array of strings: *pos starts at 0; returns the next string. */
const char *gguf_arr_next_str(const gguf_kv *kv, uint64_t *pos, uint64_t *len);

const char *gguf_vtype_name(gguf_vtype t);

/* ggml tensor types: name, elements per block, bytes per block. */
const char *ggml_type_name(int type);      /* "?" when unknown */
int ggml_type_known(int type);
int ggml_type_block(int type);
int ggml_type_block_bytes(int type);
/* The engine's dtype for a ggml type, or -1 when this build cannot compute
 * with it (ggml's block layouts are used as they are). */
int ggml_type_to_dtype(int type);

#endif /* MOE_GGUF_H */
