/* fuzz_model.c - libFuzzer target for the whole loader (container parser,
 * config binder, tensor binding, tokenizer tables) and, when a file is
 * accepted, one short forward pass.
 *
 * Build and run: tests/fuzz/run.sh [SECONDS] fuzz_model (seeded with the tiny
 * model of tests/unit/tiny_model.h and quantized .moe files, tests/fuzz/make_seeds.py).
 */
#include <stdlib.h>
#include <string.h>

#include "eval_buffer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1); /* the model keeps pointers into its buffer */
    if (!copy) return 0;
    memcpy(copy, data, size);
    open_and_eval(copy, size);
    free(copy);
    return 0;
}
