/* test_threads.c - moe.h's threads contract (include/moe.h, "Threads"): one
 * model, two contexts, two threads evaluating at the same time, each getting
 * exactly what it gets alone. The kernel set is first asked for by both
 * threads together, so its once-only choice races here too. CI also runs
 * this under ThreadSanitizer (.ci/run). */
#include <pthread.h>

#include "model.h"
#include "moe.h"
#include "test_util.h"
#include "tiny_model.h"

#define N_TOK 24

typedef struct {
    const moe_model *m;
    const int32_t *toks;
    float *logits;   /* (N_TOK, TM_VOCAB) */
    pthread_barrier_t *start;
    int rc;
    moe_err err;
} job;

/* A context of its own, the whole sequence (in batches of 5 so the KV cache
 * carries between calls), then one decode step at a time. */
static void *evaluate(void *arg) {
    job *j = arg;
    moe_ctx_params p = moe_ctx_default_params();
    p.n_batch = 5;
    p.n_threads = 2;
    if (j->start) pthread_barrier_wait(j->start);
    moe_ctx *c = moe_ctx_new(j->m, &p, &j->err);
    j->rc = c ? 0 : -1;
    for (int i = 0; c && !j->rc && i < N_TOK - 4; i += 5)
        j->rc = moe_eval(c, j->toks + i, 5, j->logits + (size_t)i * TM_VOCAB, &j->err);
    for (int i = N_TOK - 4; c && !j->rc && i < N_TOK; i++)
        j->rc = moe_eval(c, j->toks + i, 1, j->logits + (size_t)i * TM_VOCAB, &j->err);
    moe_ctx_free(c);
    return NULL;
}

int main(void) {
    size_t n;
    uint8_t *buf = tiny_model(&n);
    moe_err err = {{0}};
    moe_model *m = model_open_buffer(buf, n, &err);
    CHECK(m != NULL, "open: %s", err.msg);
    if (!m) return test_summary("test_threads");

    int32_t toks[2][N_TOK];
    for (int i = 0; i < N_TOK; i++) {
        toks[0][i] = (i * 37 + 5) % TM_VOCAB;
        toks[1][i] = (i * 11 + 200) % TM_VOCAB;
    }
    size_t bytes = sizeof(float) * N_TOK * TM_VOCAB;
    float *together[2] = {malloc(bytes), malloc(bytes)}, *alone[2] = {malloc(bytes), malloc(bytes)};

    /* together: two threads released at once */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    job jobs[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        jobs[t] = (job){.m = m, .toks = toks[t], .logits = together[t], .start = &start};
        CHECK(pthread_create(&th[t], NULL, evaluate, &jobs[t]) == 0, "thread %d starts", t);
    }
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);

    /* alone: the same sequences one after the other, on this thread */
    for (int t = 0; t < 2; t++) {
        CHECK(jobs[t].rc == 0, "thread %d: %s", t, jobs[t].err.msg);
        job one = {.m = m, .toks = toks[t], .logits = alone[t]};
        evaluate(&one);
        CHECK(one.rc == 0, "alone %d: %s", t, one.err.msg);
        CHECK(!memcmp(together[t], alone[t], bytes), "sequence %d: logits evaluated beside another thread differ", t);
    }
    CHECK(memcmp(alone[0], alone[1], bytes) != 0, "the two sequences give different logits (the test sees them)");

    for (int t = 0; t < 2; t++) {
        free(together[t]);
        free(alone[t]);
    }
    moe_model_free(m);
    free(buf);
    return test_summary("test_threads");
}
