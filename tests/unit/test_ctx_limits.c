/* test_ctx_limits.c - moe_ctx_new sizes everything before it allocates: a
 * context too large for the machine, or a thread count past the limit, is
 * refused with one message (never a wrapped size, a heap overflow or a long
 * stall building RoPE tables first). */
#include <limits.h>

#include "model.h"
#include "moe.h"
#include "test_util.h"
#include "tiny_model.h"

/* The tiny model with model.max_ctx set to v (the INT value after its key). */
static void set_max_ctx(uint8_t *buf, size_t n, int64_t v) {
    static const char key[] = "model.max_ctx";
    for (size_t i = 0; i + sizeof key + 8 <= n; i++)
        if (!memcmp(buf + i, key, sizeof key - 1) && buf[i + sizeof key - 1] == 0 /* KV_INT */) {
            for (int b = 0; b < 8; b++) buf[i + sizeof key + b] = (uint8_t)((uint64_t)v >> (8 * b));
            return;
        }
    CHECK(0, "model.max_ctx not found in the tiny model");
}

int main(void) {
    size_t n;
    uint8_t *buf = tiny_model(&n);
    set_max_ctx(buf, n, 1 << 30); /* the largest INT the loader takes */
    moe_err err = {{0}};
    moe_model *m = model_open_buffer(buf, n, &err);
    CHECK(m != NULL, "open with max_ctx 2^30: %s", err.msg);
    if (!m) return test_summary("test_ctx_limits");

    /* 2^30 positions of this model: 128 GB of KV cache alone */
    moe_ctx_params p = moe_ctx_default_params();
    p.n_ctx = 1 << 30;
    p.n_batch = 1;
    p.n_threads = 1;
    err.msg[0] = 0;
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    printf("n_ctx %d: %s\n", p.n_ctx, err.msg);
    CHECK(c == NULL && strstr(err.msg, "more than this machine") && strstr(err.msg, "KV cache"),
          "a context larger than the machine's memory is refused: %s", err.msg);
    moe_ctx_free(c);

    /* a thread count past the limit */
    p.n_ctx = 32;
    p.n_threads = INT_MAX;
    err.msg[0] = 0;
    c = moe_ctx_new(m, &p, &err);
    CHECK(c == NULL && strstr(err.msg, "threads"), "INT_MAX threads refused: %s", err.msg);
    moe_ctx_free(c);

    /* and a sane one still works on the same model */
    p.n_threads = 1;
    c = moe_ctx_new(m, &p, &err);
    CHECK(c != NULL, "32 positions: %s", err.msg);
    int32_t toks[2] = {1, 2};
    CHECK(c && moe_eval(c, toks, 2, NULL, &err) == 0, "eval: %s", err.msg);
    moe_ctx_free(c);

    moe_model_free(m);
    free(buf);
    return test_summary("test_ctx_limits");
}
