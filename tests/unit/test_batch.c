/* test_batch.c - several sequences of one context evaluated together
 * (moe_eval_batch) on the tiny model of tiny_model.h.
 *
 * With the scalar kernel set (one reference dot product per weight row and
 * token, whatever the number of tokens), a batched pass computes every
 * value exactly as a sequence evaluated alone does, so the logits must be
 * bit-identical: sequences join, decode, keep a prefix (truncate), free and
 * reuse a slot, and a pass that holds more than n_batch rows splits.
 * tests/py/test_batch.py covers the SIMD kernels (within a tolerance) and
 * the special families on real checkpoints. Also: an expert chosen by
 * several sequences is read once per pass (moe_ctx_stats), and refused
 * calls change nothing. */
#include "model.h"
#include "tiny_model.h"

#define N_BATCH 4 /* small: a step of several sequences needs several passes */
#define MAX_OPS 32

/* One step of a scenario: sequence seq (a slot) first forgets (reset) or
 * keeps a prefix (truncate_to >= 0), then is fed toks. stream names the
 * logical conversation, replayed alone as the reference. */
typedef struct {
    int step, seq, stream;
    int reset, truncate_to;
    int n;
    int32_t tok[12];
    int all_rows; /* ask for every row's logits */
} op;

static int32_t next_tok(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((*s >> 33) % TM_VOCAB);
}

static op make_op(uint64_t *rng, int step, int seq, int stream, int n) {
    op o = {.step = step, .seq = seq, .stream = stream, .reset = 0, .truncate_to = -1, .n = n, .all_rows = 0};
    for (int i = 0; i < n; i++) o.tok[i] = next_tok(rng);
    return o;
}

/* The scenario: streams 0-2 in slots 0-2 start at different steps with
 * different prompt lengths; stream 2 keeps 5 positions of its cache and goes
 * on; stream 3 reuses slot 0 after stream 0 ends. */
static int scenario(op *ops) {
    uint64_t rng = 99;
    int n = 0;
    ops[n++] = make_op(&rng, 0, 0, 0, 7);
    ops[n++] = make_op(&rng, 0, 2, 2, 9);
    ops[n - 1].all_rows = 1;
    for (int s = 1; s <= 6; s++) ops[n++] = make_op(&rng, s, 0, 0, 1);
    ops[n++] = make_op(&rng, 2, 1, 1, 4); /* joins while 0 decodes */
    ops[n - 1].all_rows = 1;
    for (int s = 3; s <= 8; s++) ops[n++] = make_op(&rng, s, 1, 1, 1);
    ops[n++] = make_op(&rng, 1, 2, 2, 1);
    ops[n++] = make_op(&rng, 3, 2, 2, 3); /* prefix reuse: back to position 5, then 3 new tokens */
    ops[n - 1].truncate_to = 5;
    for (int s = 4; s <= 8; s++) ops[n++] = make_op(&rng, s, 2, 2, 1);
    ops[n++] = make_op(&rng, 7, 0, 3, 6); /* slot 0 freed and reused */
    ops[n - 1].reset = 1;
    ops[n++] = make_op(&rng, 8, 0, 3, 1);
    return n;
}

/* Run the scenario batched; each op's resulting logits go to out[op] (V
 * floats, the sequence's last row) and rows[op] (all rows, if asked). */
static void run_batched(const moe_model *m, const op *ops, int n_ops, float *out, float *rows) {
    moe_ctx_params p = {.n_ctx = 40, .n_batch = N_BATCH, .n_threads = 2, .n_seq = 3};
    moe_err err = {{0}};
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    CHECK(c != NULL && moe_ctx_n_seq(c) == 3, "3-sequence context: %s", err.msg);
    if (!c) return;
    for (int step = 0; step <= 8; step++) {
        moe_batch_item items[3];
        int which[3], n = 0;
        for (int i = 0; i < n_ops; i++) {
            if (ops[i].step != step) continue;
            if (ops[i].reset) moe_seq_reset(c, ops[i].seq);
            if (ops[i].truncate_to >= 0)
                CHECK(moe_seq_truncate(c, ops[i].seq, ops[i].truncate_to, &err) == 0, "truncate: %s", err.msg);
            which[n] = i;
            items[n++] = (moe_batch_item){.seq = ops[i].seq, .tokens = ops[i].tok, .n = ops[i].n,
                                          .logits = ops[i].all_rows ? rows + (size_t)i * 12 * TM_VOCAB : NULL};
        }
        CHECK(moe_eval_batch(c, items, n, &err) == 0, "step %d: %s", step, err.msg);
        for (int j = 0; j < n; j++)
            memcpy(out + (size_t)which[j] * TM_VOCAB, moe_seq_logits(c, ops[which[j]].seq), sizeof(float) * TM_VOCAB);
    }
    moe_ctx_free(c);
}

/* Each stream alone, with moe_eval, op by op; every logit must match. */
static void check_alone(const moe_model *m, const op *ops, int n_ops, const float *out, const float *rows) {
    for (int stream = 0; stream < 4; stream++) {
        moe_ctx_params p = {.n_ctx = 40, .n_batch = 512, .n_threads = 1};
        moe_err err = {{0}};
        moe_ctx *c = moe_ctx_new(m, &p, &err);
        CHECK(c != NULL, "context: %s", err.msg);
        if (!c) return;
        float all[12 * TM_VOCAB];
        int compared = 0;
        for (int i = 0; i < n_ops; i++) {
            if (ops[i].stream != stream) continue;
            if (ops[i].truncate_to >= 0) moe_ctx_truncate(c, ops[i].truncate_to, &err);
            CHECK(moe_eval(c, ops[i].tok, ops[i].n, ops[i].all_rows ? all : NULL, &err) == 0, "alone: %s", err.msg);
            CHECK(!memcmp(moe_ctx_logits(c), out + (size_t)i * TM_VOCAB, sizeof(float) * TM_VOCAB),
                  "stream %d, step %d: batched logits differ from alone", stream, ops[i].step);
            if (ops[i].all_rows)
                CHECK(!memcmp(all, rows + (size_t)i * 12 * TM_VOCAB, sizeof(float) * ops[i].n * TM_VOCAB),
                      "stream %d, step %d: batched rows differ from alone", stream, ops[i].step);
            compared++;
        }
        CHECK(compared > 1, "stream %d has ops", stream);
        moe_ctx_free(c);
    }
}

/* Route events of one call: which (layer, expert) pairs each sequence chose. */
typedef struct {
    unsigned char chose[4][2][TM_E]; /* (seq, layer, expert) */
    int events;
} choices;

static void record(void *user, const moe_route_event *ev) {
    choices *ch = user;
    for (int i = 0; i < ev->k; i++) ch->chose[ev->seq][ev->layer][ev->ids[i]] = 1;
    ch->events++;
}

/* Four sequences decode one token together: 4 x k = 8 choices among 4
 * experts, so some expert is shared, and each chosen expert is read once. */
static void check_expert_reads(const moe_model *m) {
    moe_ctx_params p = {.n_ctx = 16, .n_batch = 8, .n_threads = 2, .n_seq = 4};
    moe_err err = {{0}};
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    CHECK(c != NULL, "context: %s", err.msg);
    if (!c) return;
    int32_t prompt[4][3] = {{259, 116, 104}, {40, 41, 42}, {100, 7, 9}, {200, 201, 3}}, next[4] = {5, 60, 70, 80};
    moe_batch_item it[4];
    for (int s = 0; s < 4; s++) it[s] = (moe_batch_item){.seq = s, .tokens = prompt[s], .n = 3};
    CHECK(moe_eval_batch(c, it, 4, &err) == 0, "prompts: %s", err.msg);
    choices ch = {{{{0}}}, 0};
    moe_ctx_set_route_hook(c, record, &ch);
    moe_ctx_stats before, after;
    moe_ctx_get_stats(c, &before);
    for (int s = 0; s < 4; s++) it[s] = (moe_batch_item){.seq = s, .tokens = &next[s], .n = 1};
    CHECK(moe_eval_batch(c, it, 4, &err) == 0, "step: %s", err.msg);
    moe_ctx_get_stats(c, &after);
    moe_model_info info;
    moe_model_get_info(m, &info);
    int union_count = 0, per_seq = 0, k = info.n_active;
    for (int l = 0; l < 2; l++)
        for (int e = 0; e < TM_E; e++) {
            int any = 0;
            for (int s = 0; s < 4; s++) any |= ch.chose[s][l][e], per_seq += ch.chose[s][l][e];
            union_count += any;
        }
    CHECK(ch.events == 4, "one route event per sequence at the MoE layer, got %d", ch.events);
    CHECK(after.passes - before.passes == 1 && after.rows - before.rows == 4, "one pass of 4 rows");
    CHECK(per_seq == 4 * k && union_count < per_seq, "sequences share experts (%d distinct of %d)", union_count,
          per_seq);
    CHECK(after.expert_reads - before.expert_reads == (uint64_t)union_count,
          "expert reads %llu, distinct experts chosen %d (alone: %d)",
          (unsigned long long)(after.expert_reads - before.expert_reads), union_count, per_seq);
    CHECK(after.expert_rows - before.expert_rows == (uint64_t)(4 * k), "expert rows");
    moe_ctx_free(c);
}

/* Refused calls evaluate nothing: positions stay. */
static void check_refusals(const moe_model *m) {
    moe_ctx_params p = {.n_ctx = 8, .n_batch = 4, .n_threads = 1, .n_seq = 2};
    moe_err err = {{0}};
    moe_ctx *c = moe_ctx_new(m, &p, &err);
    CHECK(c != NULL, "context: %s", err.msg);
    if (!c) return;
    int32_t t[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, bad = TM_VOCAB;
    moe_batch_item ok = {.seq = 0, .tokens = t, .n = 2};
    moe_batch_item cases[][2] = {
        {ok, {.seq = 0, .tokens = t, .n = 1}},   /* a sequence twice */
        {ok, {.seq = 2, .tokens = t, .n = 1}},   /* no such sequence */
        {ok, {.seq = 1, .tokens = t, .n = 9}},   /* context full */
        {ok, {.seq = 1, .tokens = &bad, .n = 1}}, /* bad token */
        {ok, {.seq = 1, .tokens = t, .n = 0}},   /* nothing */
    };
    const char *want[] = {"twice", "sequences 0..1", "context full", "outside the vocabulary", "no tokens"};
    for (int i = 0; i < 5; i++) {
        err.msg[0] = 0;
        CHECK(moe_eval_batch(c, cases[i], 2, &err) == -1 && strstr(err.msg, want[i]), "case %d refused: %s", i,
              err.msg);
        CHECK(moe_seq_pos(c, 0) == 0 && moe_seq_pos(c, 1) == 0, "case %d evaluated nothing", i);
    }
    CHECK(moe_seq_truncate(c, 3, 0, &err) == -1, "truncate a missing sequence");
    CHECK(moe_seq_pos(c, 5) == -1 && moe_seq_logits(c, -1) == NULL, "out-of-range queries");
    CHECK(moe_eval_batch(c, &ok, 1, &err) == 0 && moe_seq_pos(c, 0) == 2 && moe_ctx_pos(c) == 2, "sequence 0 is moe_ctx's");
    moe_seq_reset(c, 1);
    CHECK(moe_seq_pos(c, 0) == 2, "resetting sequence 1 leaves 0");
    moe_ctx_free(c);
}

int main(void) {
    setenv("MOE_KERNELS", "scalar", 1); /* before the first kernel call picks the set */
    size_t size;
    uint8_t *buf = tiny_model(&size);
    moe_err err = {{0}};
    moe_model *m = model_open_buffer(buf, size, &err);
    CHECK(m != NULL, "tiny model: %s", err.msg);
    if (!m) {
        free(buf);
        return test_summary("test_batch");
    }
    CHECK(!strcmp(moe_kernel_name(), "scalar"), "scalar kernels, got %s", moe_kernel_name());

    static op ops[MAX_OPS];
    int n_ops = scenario(ops);
    static float out[MAX_OPS * TM_VOCAB], rows[MAX_OPS * 12 * TM_VOCAB];
    run_batched(m, ops, n_ops, out, rows);
    check_alone(m, ops, n_ops, out, rows);
    check_expert_reads(m);
    check_refusals(m);
    moe_model_free(m);
    free(buf);
    return test_summary("test_batch");
}
