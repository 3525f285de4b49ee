/* generate.c - the smallest program on moe's public API: open a model,
 * tokenize a prompt, evaluate it, then sample and stream tokens until the
 * model ends its text or n tokens are made. It includes moe.h and nothing of
 * src/ (CMake gives it only include/), so it is what a program embedding moe
 * writes; the tests run it and compare its greedy text with `moe run`.
 *
 *   moe_example MODEL [PROMPT] [N]     (greedy; N defaults to 32) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"

static int fail(const char *what, const moe_err *err) {
    fprintf(stderr, "moe_example: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: moe_example MODEL [PROMPT] [N]\n");
        return 2;
    }
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    int n_new = argc > 3 ? atoi(argv[3]) : 32;
    /* the header and the library agree on the version (a stale header would not) */
    if (strcmp(moe_version(), MOE_VERSION_STRING) != 0) {
        fprintf(stderr, "moe_example: library %s, header %s\n", moe_version(), MOE_VERSION_STRING);
        return 1;
    }

    moe_err err = {{0}};
    moe_model *model = moe_model_open(argv[1], &err);
    if (!model) return fail("open", &err);
    moe_model_info info;
    moe_model_get_info(model, &info);

    /* the prompt's ids: a first call sizes the buffer */
    int n = moe_tokenize(model, prompt, strlen(prompt), MOE_TOK_ADD_BOS, NULL, 0, &err);
    if (n < 0) return fail("tokenize", &err);
    int32_t *ids = malloc(sizeof *ids * (size_t)(n + n_new));
    if (!ids || moe_tokenize(model, prompt, strlen(prompt), MOE_TOK_ADD_BOS, ids, n, &err) != n)
        return fail("tokenize", &err);

    moe_ctx_params cp = moe_ctx_default_params();
    cp.n_ctx = n + n_new;
    moe_ctx *ctx = moe_ctx_new(model, &cp, &err);
    if (!ctx) return fail("context", &err);
    moe_sampler_params sp = moe_sampler_default_params();
    sp.temperature = 0; /* greedy: the same text as `moe run --temp 0` */
    moe_sampler *sampler = moe_sampler_new(&sp, info.vocab_size, &err);
    if (!sampler) return fail("sampler", &err);

    /* the prompt in one call, then one token per call; the logits of the
     * last token stay readable until the next moe_eval on this context */
    if (moe_eval(ctx, ids, n, NULL, &err)) return fail("eval", &err);
    moe_detok detok;
    moe_detok_init(&detok, model);
    detok.prev = ids[n - 1]; /* the text continues the prompt: keep its first space */
    char piece[256];
    for (int i = 0; i < n_new; i++) {
        int32_t next = moe_sample(sampler, moe_ctx_logits(ctx), ids, n);
        if (moe_token_is_eos(model, next)) break;
        ids[n++] = next;
        moe_detok_push(&detok, next, piece, sizeof piece);
        fputs(piece, stdout);
        if (i + 1 < n_new && moe_eval(ctx, &next, 1, NULL, &err)) return fail("eval", &err);
    }
    moe_detok_flush(&detok, piece, sizeof piece);
    fputs(piece, stdout);
    putchar('\n');

    moe_sampler_free(sampler);
    moe_ctx_free(ctx);
    moe_model_free(model);
    free(ids);
    return 0;
}
