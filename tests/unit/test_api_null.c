/* test_api_null.c - moe.h's NULL contract (include/moe.h, "NULL"): every call
 * given a NULL model, context, sampler or detokenizer returns its failure
 * value (with err set when it takes one) or does nothing, and never
 * dereferences it. Uses moe.h only. */
#include "moe.h"
#include "test_util.h"

int main(void) {
    moe_err err = {{0}};
    /* the free functions */
    moe_model_free(NULL);
    moe_ctx_free(NULL);
    moe_sampler_free(NULL);

    /* the model's */
    CHECK(moe_model_open(NULL, &err) == NULL && err.msg[0], "open NULL path: %s", err.msg);
    moe_model_info info;
    memset(&info, 0xff, sizeof info);
    moe_model_get_info(NULL, &info);
    CHECK(info.vocab_size == 0 && info.arch == NULL && info.n_params == 0, "get_info(NULL) zeroes info");
    moe_model_get_info(NULL, NULL);
    moe_model_dump(NULL, stdout);
    CHECK(moe_model_prefault(NULL) == 0 && moe_model_huge_bytes(NULL) == 0, "prefault, huge_bytes");
    CHECK(moe_layer_is_moe(NULL, 0) == 0, "layer_is_moe");
    size_t len = 7;
    CHECK(moe_model_mapping(NULL, &len) == NULL && len == 0, "mapping");
    len = 7;
    CHECK(moe_token_bytes(NULL, 1, &len) == NULL, "token_bytes");
    CHECK(moe_token_is_eos(NULL, 1) == 0, "token_is_eos");
    CHECK(moe_chat_template(NULL, &len) == NULL && len == 0, "chat_template");
    CHECK(moe_chat_end_tokens(NULL, NULL, 0) == 0, "chat_end_tokens");
    err.msg[0] = 0;
    CHECK(moe_tokenize(NULL, "a", 1, 0, NULL, 0, &err) == -1 && err.msg[0], "tokenize: %s", err.msg);
    err.msg[0] = 0;
    int raised = 1;
    CHECK(moe_chat_render(NULL, NULL, 0, NULL, &len, &raised, &err) == NULL && err.msg[0] && !raised, "chat_render");

    /* the context's */
    err.msg[0] = 0;
    CHECK(moe_ctx_new(NULL, NULL, &err) == NULL && err.msg[0], "ctx_new(NULL model): %s", err.msg);
    moe_ctx_reset(NULL);
    moe_seq_reset(NULL, 0);
    err.msg[0] = 0;
    CHECK(moe_ctx_truncate(NULL, 0, &err) == -1 && err.msg[0], "truncate");
    err.msg[0] = 0;
    CHECK(moe_seq_truncate(NULL, 0, 0, &err) == -1 && err.msg[0], "seq_truncate");
    CHECK(moe_ctx_pos(NULL) == -1 && moe_seq_pos(NULL, 0) == -1, "pos");
    CHECK(moe_ctx_n_ctx(NULL) == 0 && moe_ctx_n_seq(NULL) == 0 && moe_ctx_bytes(NULL) == 0, "sizes");
    CHECK(moe_ctx_logits(NULL) == NULL && moe_seq_logits(NULL, 0) == NULL, "logits");
    moe_ctx_stats st;
    memset(&st, 0xff, sizeof st);
    moe_ctx_get_stats(NULL, &st);
    CHECK(st.passes == 0 && st.rows == 0, "get_stats(NULL) zeroes stats");
    moe_ctx_set_route_hook(NULL, NULL, NULL);
    moe_ctx_set_input_hook(NULL, NULL, NULL);
    err.msg[0] = 0;
    CHECK(moe_ctx_disable_expert(NULL, 0, 0, &err) == -1 && err.msg[0], "disable_expert");
    int32_t tok = 1;
    err.msg[0] = 0;
    CHECK(moe_eval(NULL, &tok, 1, NULL, &err) == -1 && err.msg[0], "eval: %s", err.msg);
    err.msg[0] = 0;
    CHECK(moe_eval_batch(NULL, NULL, 0, &err) == -1 && err.msg[0], "eval_batch");

    /* sampler and detokenizer */
    moe_sampler *s = moe_sampler_new(NULL, 8, &err); /* NULL params: the defaults */
    CHECK(s != NULL, "sampler_new(NULL params): %s", err.msg);
    float logits[8] = {0, 1, 5, 2, 0, 0, 0, 0};
    int32_t id = moe_sample(s, logits, NULL, 0);
    CHECK(id >= 0 && id < 8, "sample with the default params: %d", id);
    CHECK(moe_sample(NULL, logits, NULL, 0) == -1 && moe_sample(s, NULL, NULL, 0) == -1, "sample(NULL)");
    moe_sampler_free(s);
    moe_detok_init(NULL, NULL);
    moe_detok d;
    moe_detok_init(&d, NULL);
    char out[8] = "x";
    CHECK(moe_detok_push(NULL, 1, out, sizeof out) == 0 && out[0] == 0, "detok_push(NULL)");
    out[0] = 'x';
    CHECK(moe_detok_push(&d, 1, out, sizeof out) == 0 && out[0] == 0, "detok_push without a model");
    CHECK(moe_detok_flush(NULL, out, sizeof out) == 0, "detok_flush(NULL)");
    /* err itself may be NULL everywhere */
    CHECK(moe_ctx_new(NULL, NULL, NULL) == NULL && moe_eval(NULL, &tok, 1, NULL, NULL) == -1, "err NULL");
    return test_summary("test_api_null");
}
