/* test_model_damage.c - the whole loader (container, config, tensor binding,
 * tokenizer) on a tiny valid model and on thousands of randomly damaged
 * copies: every copy is accepted or refused with a message; accepted ones
 * are also run through the forward pass, which must not crash whatever the
 * weight bytes hold (and may only fail on non-finite values). Run under ASan/UBSan in CI. */
#include <math.h>

#include "model.h"
#include "tiny_model.h"

static void run_forward(moe_model *m) {
    moe_ctx_params p = {.n_ctx = 16, .n_batch = 4, .n_threads = 1};
    moe_err err = {{0}};
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    CHECK(c != NULL, "context on an accepted model: %s", err.msg);
    if (!c) return;
    int32_t toks[6] = {259, 116, 104, 101, 32, 257};
    /* damaged weight bytes may hold NaN or Inf: then eval refuses, naming where */
    int rc = moe_eval(c, toks, 6, NULL, &err);
    CHECK(rc == 0 || (rc == -1 && strstr(err.msg, "is not finite")), "eval: %d %s", rc, err.msg);
    moe_ctx_free(c);
}

int main(void) {
    size_t n;
    uint8_t *buf = tiny_model(&n);
    moe_err err = {{0}};
    moe_model *m = model_open_buffer(buf, n, &err);
    CHECK(m != NULL, "tiny model refused: %s", err.msg);
    if (m) {
        moe_model_info info;
        moe_model_get_info(m, &info);
        CHECK(info.n_experts == TM_E && info.n_moe_layers == 1 && info.vocab_size == TM_VOCAB, "info");
        run_forward(m);
        /* the forward pass is deterministic and finite */
        moe_ctx_params p = {.n_ctx = 16, .n_batch = 4, .n_threads = 1};
        moe_ctx *c = moe_ctx_new(m, &p, &err);
        CHECK(c != NULL, "context: %s", err.msg);
        int32_t toks[3] = {259, 116, 104};
        float a[3 * TM_VOCAB], b[3 * TM_VOCAB];
        int rc_a = moe_eval(c, toks, 3, a, &err);
        CHECK(rc_a == 0, "eval: %s", err.msg);
        moe_ctx_reset(c);
        int rc_b = moe_eval(c, toks, 3, b, &err);
        CHECK(rc_b == 0, "eval after reset: %s", err.msg);
        CHECK(rc_a == 0 && rc_b == 0 && !memcmp(a, b, sizeof a), "reset + re-eval gives the same logits");
        int finite = 1;
        for (int i = 0; i < 3 * TM_VOCAB; i++) finite &= isfinite(a[i]);
        CHECK(finite, "finite logits");
        moe_ctx_free(c);
        moe_model_free(m);
    }

    uint64_t s = 42;
    int accepted = 0, iters = 20000;
    for (int it = 0; it < iters; it++) {
        uint8_t *c = malloc(n);
        memcpy(c, buf, n);
        size_t len = n;
        int edits = 1 + (int)(s % 3);
        for (int e = 0; e < edits; e++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % n;
            if (it % 2 == 0) pos %= 2048; /* half the damage lands in the metadata and directory */
            switch ((s >> 20) % 5) {
            case 0: c[pos] ^= (uint8_t)(1u << ((s >> 8) % 8)); break;
            case 1: c[pos] = 0xff; break;
            case 2: c[pos] = 0; break;
            case 3: c[pos] = 0x7f; break;
            case 4: if (it % 7 == 0) len = pos; break;
            }
        }
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, c, len);
        moe_err e2 = {{0}};
        moe_model *dm = model_open_buffer(exact, len, &e2);
        if (dm) {
            accepted++;
            run_forward(dm);
            moe_model_free(dm);
        } else {
            CHECK(e2.msg[0] != 0, "iteration %d refused without a message", it);
        }
        free(exact);
        free(c);
    }
    printf("damaged models: %d of %d accepted (damage in weights) and ran\n", accepted, iters);
    free(buf);
    return test_summary("test_model_damage");
}
