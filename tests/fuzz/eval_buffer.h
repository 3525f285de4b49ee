/* eval_buffer.h - what the fuzz targets do with a model file: open it from the
 * buffer and, when the loader accepts it, run one short forward pass. */
#ifndef EVAL_BUFFER_H
#define EVAL_BUFFER_H

#include <stdint.h>

#include "model.h"

static void open_and_eval(uint8_t *buf, size_t size) {
    moe_err err;
    moe_model *m = model_open_buffer(buf, size, &err);
    if (!m) return;
    moe_ctx_params p = {.n_ctx = 8, .n_batch = 4, .n_threads = 1};
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    if (c) {
        int32_t t[2] = {0, 1};
        moe_eval(c, t, 2, NULL, &err);
        moe_ctx_free(c);
    }
    moe_model_free(m);
}

#endif
