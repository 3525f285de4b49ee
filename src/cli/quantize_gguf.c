/* quantize_gguf.c - `moe quantize IN.gguf OUT.gguf --type q4_k_m`: a GGUF
 * file as llama-quantize writes it. The metadata are IN's, byte for byte,
 * with general.file_type set to the mix's llama_ftype and
 * general.quantization_version 2 (added when IN has none); the tensors are
 * IN's, in IN's order with IN's names and shapes, each in the type the
 * caller chose (quant_mix.c's rules), converted row by row (a row is ne[0]
 * values). Layout: gguf.h; every tensor's data aligned to IN's alignment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantize_gguf.h"

#include "cli.h"
#include "quant.h"
#include "quant_k.h"
#include "threads.h"

/* The ggml type id whose blocks are dtype t's, or -1. */
static int ggml_type_of(int t) {
    for (int g = 0; g < 64; g++)
        if (ggml_type_known(g) && ggml_type_to_dtype(g) == t) return g;
    return -1;
}

typedef struct {
    FILE *f;
    const char *path;
    uint64_t at; /* bytes written */
} gguf_out;

static void put(gguf_out *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) die(1, "quantize", "%s: write failed", o->path);
    o->at += n;
}
static void put_u32(gguf_out *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(o, b, 4);
}
static void put_u64(gguf_out *o, uint64_t v) {
    put_u32(o, (uint32_t)v);
    put_u32(o, (uint32_t)(v >> 32));
}
static void put_str(gguf_out *o, const char *s, uint64_t n) {
    put_u64(o, n);
    put(o, s, (size_t)n);
}
static void pad_to(gguf_out *o, uint64_t align) {
    static const uint8_t zeros[64] = {0};
    while (o->at % align) put(o, zeros, (size_t)(align - o->at % align < 64 ? align - o->at % align : 64));
}

static uint64_t tensor_bytes(const gguf_tensor *t, int ggml_type) {
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n / (uint64_t)ggml_type_block(ggml_type) * (uint64_t)ggml_type_block_bytes(ggml_type);
}

/* The metadata: IN's bytes, with file_type patched in place or both keys added. */
static void put_metadata(gguf_out *o, const gguf_file *g, uint32_t file_type) {
    uint64_t start = 24, end = start; /* after magic, version, n_tensors, n_kv */
    for (uint64_t i = 0; i < g->n_kv; i++) {
        uint64_t e = (uint64_t)(g->kv[i].data - g->base) + g->kv[i].size;
        if (e > end) end = e;
    }
    const gguf_kv *ft = gguf_find(g, "general.file_type"), *qv = gguf_find(g, "general.quantization_version");
    if (ft && ft->type != GGUF_U32) die(1, "quantize", "general.file_type is %s, not u32", gguf_vtype_name(ft->type));
    int patch = ft != NULL;
    put_u32(o, 0x46554747); /* "GGUF" */
    put_u32(o, g->version); /* v2 and v3 lay metadata out alike: IN's bytes fit either */
    put_u64(o, g->n_tensors);
    put_u64(o, g->n_kv + !patch + !qv);
    if (patch) {
        uint64_t at = (uint64_t)(ft->data - g->base);
        put(o, g->base + start, (size_t)(at - start));
        put_u32(o, file_type);
        put(o, g->base + at + 4, (size_t)(end - at - 4));
    } else {
        put(o, g->base + start, (size_t)(end - start));
        put_str(o, "general.file_type", 17);
        put_u32(o, GGUF_U32);
        put_u32(o, file_type);
    }
    if (!qv) {
        put_str(o, "general.quantization_version", 28);
        put_u32(o, GGUF_U32);
        put_u32(o, 2);
    }
}

/* Tensor t's rows converted to dtype want, appended; chunked so memory stays small. */
static void put_tensor(gguf_out *o, const gguf_tensor *t, int want) {
    int have = ggml_type_to_dtype(t->type), cols = (int)t->ne[0];
    uint64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    size_t in_rb = dtype_row_bytes((moe_dtype)have, (uint64_t)cols), out_rb = dtype_row_bytes((moe_dtype)want, (uint64_t)cols);
    int chunk_rows = (int)((4u << 20) / out_rb + 1);
    uint8_t *chunk = malloc(out_rb * (size_t)chunk_rows);
    float *tmp = malloc(sizeof(float) * (size_t)cols * (size_t)threads_max());
    if (!chunk || !tmp) die(1, "quantize", "out of memory");
    for (uint64_t r0 = 0; r0 < rows; r0 += (uint64_t)chunk_rows) {
        int m = (int)(rows - r0 < (uint64_t)chunk_rows ? rows - r0 : (uint64_t)chunk_rows);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < m; r++) {
            float *x = tmp + (size_t)thread_id() * (size_t)cols;
            dequantize_row((moe_dtype)have, (const uint8_t *)t->data + (r0 + (uint64_t)r) * in_rb, x, cols);
            uint8_t *dst = chunk + (size_t)r * out_rb;
            if (want == DT_Q4_K) quantize_row_q4_K_ggml(x, dst, cols); /* llama.cpp's Q4_K blocks */
            else quantize_row((moe_dtype)want, x, dst, cols);
        }
        put(o, chunk, (size_t)m * out_rb);
    }
    free(chunk);
    free(tmp);
}

void quantize_write_gguf(const gguf_file *g, const int *want, uint32_t file_type, const char *path) {
    char part[4096];
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part) die(1, "quantize", "%s: path too long", path);
    int *types = malloc(sizeof(int) * (size_t)(g->n_tensors ? g->n_tensors : 1));
    if (!types) die(1, "quantize", "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        types[i] = want[i] < 0 || want[i] == ggml_type_to_dtype(t->type) ? t->type : ggml_type_of(want[i]);
        if (types[i] < 0) die(1, "quantize", "%.*s: no GGUF type for %s", (int)t->name_len, t->name, dtype_name(want[i]));
        if (types[i] != t->type && ggml_type_to_dtype(t->type) < 0)
            die(1, "quantize", "%.*s: cannot convert from %s", (int)t->name_len, t->name, ggml_type_name(t->type));
    }
    gguf_out o = {.f = fopen(part, "wb"), .path = part};
    if (!o.f) die(1, "quantize", "%s: cannot create", part);
    /* whole 2 MB pieces at 2 MB offsets, as writer.c does: the new file is
     * cached in 2 MB folios a run soon after maps as huge pages */
    char *buf = malloc(2u << 20);
    if (!buf || setvbuf(o.f, buf, _IOFBF, 2u << 20)) die(1, "quantize", "out of memory");
    put_metadata(&o, g, file_type);
    uint64_t off = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) { /* the directory: data offsets from the data section */
        const gguf_tensor *t = &g->tensors[i];
        put_str(&o, t->name, t->name_len);
        put_u32(&o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&o, t->ne[d]);
        put_u32(&o, (uint32_t)types[i]);
        put_u64(&o, off);
        off += (tensor_bytes(t, types[i]) + g->alignment - 1) / g->alignment * g->alignment;
    }
    pad_to(&o, g->alignment);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (types[i] == t->type) put(&o, t->data, (size_t)t->nbytes);
        else put_tensor(&o, t, ggml_type_to_dtype(types[i]));
        pad_to(&o, g->alignment);
    }
    if (fclose(o.f)) die(1, "quantize", "%s: write failed", part);
    free(buf);
    if (rename(part, path)) die(1, "quantize", "%s: cannot rename to %s", part, path);
    free(types);
}
