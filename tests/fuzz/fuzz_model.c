/* fuzz_model.c - libFuzzer target for the whole loader (container parser,
 * config binder, tensor binding, tokenizer tables) and, when a file is
 * accepted, one short forward pass.
 *
 * Build and run with tests/fuzz/run.sh (clang with libFuzzer; seeds the
 * corpus with the tiny model of tests/unit/tiny_model.h).
 */
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1); /* the model keeps pointers into its buffer */
    if (!copy) return 0;
    memcpy(copy, data, size);
    moe_err err;
    moe_model *m = model_open_buffer(copy, size, &err);
    if (m) {
        moe_ctx_params p = {8, 4, 1, 0, 0, 0};
        moe_ctx *c = moe_ctx_new(m, &p, &err);
        if (c) {
            int32_t t[2] = {0, 1};
            moe_eval(c, t, 2, NULL, &err);
            moe_ctx_free(c);
        }
        moe_model_free(m);
    }
    free(copy);
    return 0;
}
