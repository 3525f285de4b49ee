/* serve_engine.c - the model thread of `moe serve`.
 *
 * One thread owns the moe_ctx, so the model is driven from one place and
 * nothing in the library needs a lock. The context holds n_slots sequences;
 * slot s is sequence s, with the token ids its KV cache holds. A queued job
 * goes to the free slot whose cache shares the longest prefix with its prompt
 * (a follow-up chat turn then evaluates only its new tokens). Each round puts
 * every running slot's tokens (a prompt, or the one token it just sampled)
 * into one moe_eval_batch: one pass through the model for all of them.
 *
 * Text leaves a slot only up to the point no stop string can still begin:
 * the longest suffix that is a prefix of a stop string is held back, so a
 * stop string split across tokens is never sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "serve.h"

typedef struct {
    int32_t *cache;       /* (n_cache) token ids in the KV cache, in order; room for n_ctx */
    int n_cache;
    serve_job *job;       /* running job, NULL: free */
    int prefilled;        /* 0: the job's prompt is not evaluated yet */
    int32_t next;         /* the token sampled this round, evaluated in the batch */
    moe_sampler *smp;
    moe_detok dt;
    strbuf text;          /* the job's generated text so far */
    size_t sent;          /* bytes of text handed to the job */
    serve_logprobs lp;    /* with logprobs: an entry per token of text */
    int lp_sent;          /* entries handed to the job */
    int cut;              /* text was cut at a stop string */
    int n_gen;
    uint64_t last_used;   /* the round it last finished a job in (0: never used) */
} slot;

struct serve_engine {
    const moe_model *m;
    int vocab;
    moe_ctx *ctx;         /* n_slots sequences */
    slot *slots;          /* (n_slots) */
    moe_batch_item *items; /* (n_slots) this round's */
    int n_slots;
    int32_t *end_ids;     /* (n_end) ids that end a chat reply */
    int n_end;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work;     /* a job was queued, or quit */
    pthread_cond_t progress; /* some job has new text or is done */
    serve_job *head, *tail;  /* the queue */
    int queued, queue_cap;
    int quit;
    uint64_t rounds;
};

void job_release(serve_job *j) {
    free(j->prompt);
    j->prompt = NULL;
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    j->n_stops = 0;
    sb_free(&j->out);
    free(j->lp.p);
    j->lp = (serve_logprobs){0};
}

void logprobs_push(serve_logprobs *l, const serve_logprob *e) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        serve_logprob *p = cap > l->cap ? realloc(l->p, sizeof *p * (size_t)cap) : NULL;
        if (!p) {
            l->failed = 1;
            return;
        }
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n++] = *e;
}

/* The entry of token id after logits: log-softmax (in double, over the whole
 * vocabulary) and the top most likely ids, best first (ties: lower id). */
static void logprob_of(const float *logits, int vocab, int32_t id, int top, serve_logprob *e) {
    double lse = log_sum_exp(logits, vocab);
    *e = (serve_logprob){.id = id, .logprob = (float)(logits[id] - lse)};
    for (int i = 0; i < vocab; i++) { /* insertion into the short sorted list */
        int k = e->n_top < top ? e->n_top++ : top;
        while (k > 0 && logits[i] > logits[e->top_id[k - 1]]) {
            if (k < top) e->top_id[k] = e->top_id[k - 1];
            k--;
        }
        if (k < top) e->top_id[k] = i;
    }
    for (int k = 0; k < e->n_top; k++) e->top_logprob[k] = (float)(logits[e->top_id[k]] - lse);
}

static int is_end(const serve_engine *e, const serve_job *j, int32_t id) {
    if (moe_token_is_eos(e->m, id)) return 1;
    if (!j->chat) return 0;
    for (int i = 0; i < e->n_end; i++)
        if (e->end_ids[i] == id) return 1;
    return 0;
}

/* The free slot for a prompt: the one whose cache it shares the longest prefix
 * with, as long as that is at least half of what the slot holds (a shared BOS
 * alone is no reason to evict another conversation); else the least recently
 * used (never-used slots first). */
static slot *pick_slot(serve_engine *e, const serve_job *j) {
    slot *best = NULL, *lru = NULL;
    int best_common = 0;
    for (int i = 0; i < e->n_slots; i++) {
        slot *s = &e->slots[i];
        if (s->job) continue;
        if (!lru || s->last_used < lru->last_used) lru = s;
        int c = 0;
        while (c < s->n_cache && c < j->n_prompt && s->cache[c] == j->prompt[c]) c++;
        if (c > best_common && 2 * c >= s->n_cache) {
            best = s;
            best_common = c;
        }
    }
    return best ? best : lru;
}

/* Bytes at the end of text that could be the start of a stop string. */
static size_t stop_holdback(const serve_job *j, const char *text, size_t n, size_t from) {
    size_t hold = 0;
    for (int i = 0; i < j->n_stops; i++) {
        size_t len = strlen(j->stops[i]);
        for (size_t k = len - 1; k > hold; k--)
            if (k <= n - from && !memcmp(text + n - k, j->stops[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Where the earliest stop string starts at or after from, or (size_t)-1. */
static size_t find_stop(const serve_job *j, const char *text, size_t n, size_t from) {
    size_t best = (size_t)-1;
    for (int i = 0; i < j->n_stops; i++) {
        size_t len = strlen(j->stops[i]);
        for (size_t p = from; p + len <= n && p < best; p++)
            if (!memcmp(text + p, j->stops[i], len)) {
                best = p;
                break;
            }
    }
    return best;
}

/* Hand text[sent..upto) to the job (under the lock), with the logprob
 * entries of the tokens it completes; at the end (last), also of a token whose
 * text a stop string cut, but none after the stop string. */
static void publish(serve_engine *e, slot *s, size_t upto, int last) {
    if (upto > s->sent) sb_put(&s->job->out, s->text.p + s->sent, upto - s->sent);
    s->sent = upto;
    for (; s->lp_sent < s->lp.n; s->lp_sent++) {
        const serve_logprob *lp = &s->lp.p[s->lp_sent];
        size_t start = s->lp_sent ? lp[-1].text_end : 0;
        if (last ? s->cut && start >= upto : lp->text_end > upto) break;
        logprobs_push(&s->job->lp, lp);
    }
    if (s->lp.failed) s->job->lp.failed = 1;
}

static int seq_of(const serve_engine *e, const slot *s) { return (int)(s - e->slots); }

/* The job is over: flush what is left (lock held by the caller) and free the slot. */
static void finish(serve_engine *e, slot *s, const char *reason, const char *error) {
    serve_job *j = s->job;
    if (!error && !j->cancelled) publish(e, s, s->text.n, 1);
    j->finish = error || j->cancelled ? NULL : reason;
    if (error) { /* the cache may hold half an evaluation: forget it */
        snprintf(j->error, sizeof j->error, "%.255s", error);
        moe_seq_reset(e->ctx, seq_of(e, s));
        s->n_cache = 0;
    }
    if (j->out.failed && !j->error[0]) snprintf(j->error, sizeof j->error, "out of memory");
    j->n_completion = s->n_gen;
    j->done = 1;
    s->job = NULL;
    s->last_used = e->rounds;
    moe_sampler_free(s->smp);
    s->smp = NULL;
    pthread_cond_broadcast(&e->progress);
}

static void cache_push(slot *s, int32_t id) { s->cache[s->n_cache++] = id; }

/* The batch item that evaluates a new job's prompt after the prefix the
 * slot's cache already holds (at least its last token, for the logits).
 * Returns the error, or NULL. */
static const char *prefill_item(serve_engine *e, slot *s, moe_batch_item *it, moe_err *err) {
    serve_job *j = s->job;
    int seq = seq_of(e, s), keep = 0;
    while (keep < s->n_cache && keep < j->n_prompt && s->cache[keep] == j->prompt[keep]) keep++;
    if (keep == j->n_prompt) keep--;
    if (keep < moe_seq_pos(e->ctx, seq) && moe_seq_truncate(e->ctx, seq, keep, err)) {
        moe_seq_reset(e->ctx, seq); /* a recurrent state or a moved-on sliding-window ring: start over */
        keep = 0;
    }
    s->n_cache = keep;
    if (j->n_prompt > moe_ctx_n_ctx(e->ctx)) return "the prompt does not fit the context";
    *it = (moe_batch_item){.seq = seq, .tokens = j->prompt + keep, .n = j->n_prompt - keep};
    return NULL;
}

/* The prompt is in the cache: get ready to sample. */
static const char *ready_to_sample(serve_engine *e, slot *s, moe_err *err) {
    serve_job *j = s->job;
    int keep = s->n_cache;
    for (int i = keep; i < j->n_prompt; i++) cache_push(s, j->prompt[i]);
    s->smp = moe_sampler_new(&j->sp, e->vocab, err);
    if (!s->smp) return err->msg;
    moe_detok_init(&s->dt, e->m);
    s->dt.prev = j->prompt[j->n_prompt - 1];
    s->text.n = 0;
    s->sent = 0;
    s->lp.n = s->lp.failed = s->lp_sent = s->cut = 0;
    s->n_gen = 0;
    s->prefilled = 1;
    pthread_mutex_lock(&e->mu);
    j->n_reused = keep;
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Sample a running slot's next token and hand on the text it completes.
 * Returns 1 when the token is to be evaluated (in s->next), 0 when the job
 * ended. */
static int sample_next(serve_engine *e, slot *s) {
    serve_job *j = s->job;
    const float *logits = moe_seq_logits(e->ctx, seq_of(e, s));
    s->next = moe_sample(s->smp, logits, s->cache, s->n_cache);
    const char *reason = NULL, *error = NULL;
    if (is_end(e, j, s->next)) {
        reason = "stop";
    } else {
        char piece[1024];
        size_t k = moe_detok_push(&s->dt, s->next, piece, sizeof piece);
        sb_put(&s->text, piece, k);
        if (j->logprobs) {
            serve_logprob lp;
            logprob_of(logits, e->vocab, s->next, j->top_logprobs, &lp);
            lp.text_end = s->text.n;
            logprobs_push(&s->lp, &lp);
        }
        s->n_gen++;
        if (s->n_gen >= j->max_tokens || s->n_cache >= moe_ctx_n_ctx(e->ctx)) reason = "length";
    }
    if (reason) { /* the end: what the detokenizer still holds belongs to the text */
        char piece[64];
        size_t k = moe_detok_flush(&s->dt, piece, sizeof piece);
        sb_put(&s->text, piece, k);
        if (s->lp.n) s->lp.p[s->lp.n - 1].text_end = s->text.n;
    }
    if (s->text.failed) error = "out of memory";
    size_t at = find_stop(j, s->text.p, s->text.n, s->sent);
    if (at != (size_t)-1) {
        s->text.n = at;
        s->cut = 1;
        reason = "stop";
    }
    size_t upto = reason ? s->text.n : s->text.n - stop_holdback(j, s->text.p, s->text.n, s->sent);
    pthread_mutex_lock(&e->mu);
    if (error || reason) {
        finish(e, s, reason, error);
    } else if (upto > s->sent) {
        publish(e, s, upto, 0);
        pthread_cond_broadcast(&e->progress);
    }
    pthread_mutex_unlock(&e->mu);
    return !error && !reason;
}

/* The slot's item was evaluated (error NULL) or refused. */
static void evaluated(serve_engine *e, slot *s, const char *error, moe_err *err) {
    if (!error) {
        if (!s->prefilled) error = ready_to_sample(e, s, err);
        else cache_push(s, s->next);
    }
    if (error) {
        pthread_mutex_lock(&e->mu);
        finish(e, s, NULL, error);
        pthread_mutex_unlock(&e->mu);
    }
}

/* One round: every running slot's tokens (a new prompt, or the token it just
 * sampled) go through the model in one moe_eval_batch, so the experts several
 * sequences chose are read once. */
static void run_round(serve_engine *e) {
    int n = 0;
    for (int i = 0; i < e->n_slots; i++) {
        slot *s = &e->slots[i];
        if (!s->job) continue;
        moe_err err = {{0}};
        pthread_mutex_lock(&e->mu);
        int cancelled = s->job->cancelled;
        if (cancelled) finish(e, s, NULL, NULL);
        pthread_mutex_unlock(&e->mu);
        if (cancelled) continue;
        if (s->prefilled) {
            if (sample_next(e, s)) e->items[n++] = (moe_batch_item){.seq = i, .tokens = &s->next, .n = 1};
            continue;
        }
        const char *error = prefill_item(e, s, &e->items[n], &err);
        if (!error) {
            n++;
            continue;
        }
        pthread_mutex_lock(&e->mu);
        finish(e, s, NULL, error);
        pthread_mutex_unlock(&e->mu);
    }
    if (n == 0) return;
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < n; i++) {
        serve_job *j = e->slots[e->items[i].seq].job;
        if (n > j->max_batch) j->max_batch = n;
    }
    pthread_mutex_unlock(&e->mu);
    moe_err err = {{0}};
    if (moe_eval_batch(e->ctx, e->items, n, &err) == 0) {
        for (int i = 0; i < n; i++) evaluated(e, &e->slots[e->items[i].seq], NULL, &err);
        return;
    }
    /* one bad item refuses the whole call (nothing evaluated): alone, only it fails */
    for (int i = 0; i < n; i++) {
        moe_err one = {{0}};
        int rc = moe_eval_batch(e->ctx, &e->items[i], 1, &one);
        evaluated(e, &e->slots[e->items[i].seq], rc ? one.msg : NULL, &one);
    }
}

static void *engine_main(void *arg) {
    serve_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        int running = 0;
        for (int i = 0; i < e->n_slots; i++) running += e->slots[i].job != NULL;
        while (!e->quit && !running && !e->head) pthread_cond_wait(&e->work, &e->mu);
        if (e->quit) break;
        while (e->head && running < e->n_slots) { /* queued jobs to free slots, oldest first */
            serve_job *j = e->head;
            e->head = j->next;
            if (!e->head) e->tail = NULL;
            e->queued--;
            slot *s = pick_slot(e, j);
            s->job = j;
            s->prefilled = 0;
            j->slot = (int)(s - e->slots);
            running++;
        }
        e->rounds++;
        pthread_mutex_unlock(&e->mu);
        run_round(e);
        pthread_mutex_lock(&e->mu);
    }
    for (int i = 0; i < e->n_slots; i++) /* quitting: release whoever still waits */
        if (e->slots[i].job) finish(e, &e->slots[i], NULL, "the server is shutting down");
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

serve_engine *engine_new(const moe_model *m, const moe_ctx_params *cp, int n_slots, int queue_cap, moe_err *err) {
    serve_engine *e = calloc(1, sizeof *e);
    if (!e || !(e->slots = calloc((size_t)n_slots, sizeof *e->slots)) ||
        !(e->items = calloc((size_t)n_slots, sizeof *e->items))) {
        if (e) free(e->slots);
        free(e);
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return NULL;
    }
    moe_model_info info;
    moe_model_get_info(m, &info);
    e->m = m;
    e->vocab = info.vocab_size;
    e->n_slots = n_slots;
    e->queue_cap = queue_cap;
    e->n_end = moe_chat_end_tokens(m, NULL, 0);
    e->end_ids = malloc(sizeof *e->end_ids * (size_t)(e->n_end + 1));
    int ok = e->end_ids != NULL;
    if (ok) moe_chat_end_tokens(m, e->end_ids, e->n_end);
    moe_ctx_params p = *cp;
    p.n_seq = n_slots;
    if (ok) ok = (e->ctx = moe_ctx_new(m, &p, err)) != NULL;
    for (int i = 0; ok && i < n_slots; i++)
        ok = (e->slots[i].cache = malloc(sizeof *e->slots[i].cache * (size_t)moe_ctx_n_ctx(e->ctx))) != NULL;
    if (ok) {
        pthread_mutex_init(&e->mu, NULL);
        pthread_cond_init(&e->work, NULL);
        pthread_cond_init(&e->progress, NULL);
        ok = pthread_create(&e->thread, NULL, engine_main, e) == 0;
        if (!ok) {
            pthread_mutex_destroy(&e->mu);
            pthread_cond_destroy(&e->work);
            pthread_cond_destroy(&e->progress);
        }
    }
    if (!ok) {
        if (!err->msg[0]) snprintf(err->msg, sizeof err->msg, "out of memory");
        moe_ctx_free(e->ctx);
        for (int i = 0; i < n_slots; i++) free(e->slots[i].cache);
        free(e->slots);
        free(e->items);
        free(e->end_ids);
        free(e);
        return NULL;
    }
    return e;
}

int engine_n_ctx(const serve_engine *e) { return moe_ctx_n_ctx(e->ctx); }

void engine_free(serve_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->quit = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    moe_ctx_free(e->ctx);
    for (int i = 0; i < e->n_slots; i++) {
        free(e->slots[i].cache);
        sb_free(&e->slots[i].text);
        free(e->slots[i].lp.p);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->progress);
    free(e->slots);
    free(e->items);
    free(e->end_ids);
    free(e);
}

int engine_submit(serve_engine *e, serve_job *j) {
    pthread_mutex_lock(&e->mu);
    int idle = 0; /* free slots take jobs at once: only the jobs beyond them wait */
    for (int i = 0; i < e->n_slots; i++) idle += e->slots[i].job == NULL;
    int full = e->queued >= e->queue_cap + idle || e->quit;
    if (!full) {
        j->next = NULL;
        j->done = j->cancelled = 0;
        j->slot = -1;
        j->max_batch = 0;
        if (e->tail) e->tail->next = j;
        else e->head = j;
        e->tail = j;
        e->queued++;
        pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->mu);
    return full ? -1 : 0;
}

int engine_wait(serve_engine *e, serve_job *j, strbuf *take, serve_logprobs *take_lp, int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->mu);
    while (!j->done && j->out.n == 0)
        if (pthread_cond_timedwait(&e->progress, &e->mu, &until)) break;
    if (j->out.n) {
        sb_put(take, j->out.p, j->out.n);
        j->out.n = 0;
    }
    for (int i = 0; take_lp && i < j->lp.n; i++) logprobs_push(take_lp, &j->lp.p[i]);
    if (take_lp && j->lp.failed) take_lp->failed = 1;
    j->lp.n = 0;
    int done = j->done;
    pthread_mutex_unlock(&e->mu);
    return done;
}

void engine_cancel(serve_engine *e, serve_job *j) {
    pthread_mutex_lock(&e->mu);
    if (!j->done && j->slot < 0) { /* still queued: unlink it */
        serve_job **p = &e->head, *prev = NULL;
        while (*p && *p != j) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = j->next;
            if (e->tail == j) e->tail = prev;
            e->queued--;
            j->done = 1;
        }
    }
    j->cancelled = 1;
    while (!j->done) pthread_cond_wait(&e->progress, &e->mu);
    pthread_mutex_unlock(&e->mu);
}
