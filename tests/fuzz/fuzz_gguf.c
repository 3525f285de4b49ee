/* fuzz_gguf.c - libFuzzer target for the GGUF parser (src/gguf.c), every
 * typed read of what it accepted, and the translation into the engine's view
 * and the model binder (gguf_view.c, gguf_tok.c, model.c); when a model
 * loads, one short forward pass. Seeded by tests/fuzz/make_seeds.py.
 *
 * Built through CMake: cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DMOE_FUZZ=ON
 * (tests/fuzz/run.sh [SECONDS] fuzz_gguf does it and runs it). */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "eval_buffer.h"
#include "model.h"

/* Read every value the way the translation may: nothing may read outside the buffer. */
static void read_all(const gguf_file *g) {
    volatile double sink = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        uint64_t u, len, pos = 0;
        double d;
        int b;
        const char *s;
        if (gguf_kv_uint(kv, &u, NULL) == 0) sink += (double)u;
        if (gguf_kv_float(kv, &d, NULL) == 0) sink += d;
        if (gguf_kv_bool(kv, &b, NULL) == 0) sink += b;
        if (gguf_kv_str(kv, &s, &len, NULL) == 0 && len) sink += s[len - 1];
        if (kv->type != GGUF_ARRAY) continue;
        if (kv->elem_type == GGUF_STRING)
            while ((s = gguf_arr_next_str(kv, &pos, &len))) sink += len ? s[len - 1] : 0;
        else if (kv->elem_type != GGUF_ARRAY)
            for (uint64_t j = 0; j < kv->n; j++) sink += gguf_arr_float(kv, j) + (double)gguf_arr_int(kv, j);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const uint8_t *p = g->tensors[i].data;
        sink += p[0] + p[g->tensors[i].nbytes - 1];
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1); /* the views keep pointers into their buffer */
    if (!copy) return 0;
    memcpy(copy, data, size);
    gguf_file g;
    moe_err err;
    if (gguf_parse(&g, copy, size, &err) == 0) {
        read_all(&g);
        gguf_free(&g);
    }
    open_and_eval(copy, size);
    free(copy);
    return 0;
}
