/* serve.h - the model side of `moe serve`: one thread owns the model's
 * contexts ("slots") and runs the generation jobs the connection threads
 * queue (serve_engine.c); cmd_serve.c is the HTTP side.
 *
 * All running slots advance together: one moe_eval_batch per round.
 *
 * A job is owned by the connection that made it. It hands the job over with
 * engine_submit and may free it only after engine_wait reported it done (or
 * engine_cancel returned): until then the model thread writes to it. */
#ifndef MOE_SERVE_H
#define MOE_SERVE_H

#include <pthread.h>
#include <stdint.h>

#include "moe.h"
#include "strbuf.h"

#define SERVE_MAX_STOPS 16
#define SERVE_MAX_TOP_LOGPROBS 20

/* One generated token's log-probabilities: the model's log-softmax over its
 * raw logits (before penalties, temperature and truncation), as OpenAI reports. */
typedef struct {
    int32_t id;                 /* the token generated */
    float logprob;
    size_t text_end;            /* bytes of the reply's text through this token */
    int n_top;
    int32_t top_id[SERVE_MAX_TOP_LOGPROBS]; /* (n_top) the most likely ids, best first */
    float top_logprob[SERVE_MAX_TOP_LOGPROBS];
} serve_logprob;

typedef struct {
    serve_logprob *p;           /* (n) entries, room for cap */
    int n, cap;
    int failed;                 /* out of memory: entries were lost */
} serve_logprobs;

/* Append one entry (sets failed when out of memory). */
void logprobs_push(serve_logprobs *l, const serve_logprob *e);

typedef struct serve_job {
    /* the request: set before engine_submit, read-only afterwards */
    int32_t *prompt;            /* (n_prompt) token ids, owned by the job */
    int n_prompt;
    int max_tokens;             /* most tokens to generate, >= 1 */
    int chat;                   /* 1: stop at the end-of-turn tokens, else at EOS only */
    int logprobs;               /* 1: report each token's log-probability */
    int top_logprobs;           /* and this many alternatives (0..SERVE_MAX_TOP_LOGPROBS) */
    int truncated;              /* prompt tokens dropped to fit the context ("truncate": true) */
    moe_sampler_params sp;
    char *stops[SERVE_MAX_STOPS]; /* (n_stops) stop strings, NUL-terminated, owned by the job */
    int n_stops;

    /* progress: read and written under the engine's lock */
    strbuf out;                 /* text generated and not yet taken (never past a stop string) */
    serve_logprobs lp;          /* with logprobs: the entries of the tokens of out */
    int done;                   /* 1: the model thread no longer touches the job */
    int cancelled;              /* set by the connection: stop at the next step */
    const char *finish;         /* when done: "stop" or "length" (NULL: failed or cancelled) */
    int n_completion;           /* tokens generated */
    int n_reused;               /* prompt tokens kept from the slot's cache (not evaluated) */
    int slot;                   /* which slot ran it, -1 before */
    int max_batch;              /* most sequences evaluated in one round with it */
    char error[256];            /* non-empty: the job failed (done is set) */
    struct serve_job *next;     /* the queue's link */
} serve_job;

typedef struct serve_engine serve_engine;

/* Start the model thread with one context of parameters cp holding n_slots sequences; at most
 * queue_cap jobs wait for a slot (beyond those a free slot takes at once).
 * NULL with err set on failure. */
serve_engine *engine_new(const moe_model *m, const moe_ctx_params *cp, int n_slots, int queue_cap, moe_err *err);
/* Positions each slot's sequence holds. */
int engine_n_ctx(const serve_engine *e);
/* Stop the model thread (after its current step) and free the slots. */
void engine_free(serve_engine *e);

/* Queue a job; -1 when the queue is full (the job stays the caller's). */
int engine_submit(serve_engine *e, serve_job *j);
/* Wait up to timeout_ms for new text or the end of the job; appends the new
 * text to take (and, with logprobs, its tokens' entries to take_lp). Returns
 * 1 once the job is done (all its text taken), else 0. */
int engine_wait(serve_engine *e, serve_job *j, strbuf *take, serve_logprobs *take_lp, int timeout_ms);
/* The client is gone: take the job out of the queue, or have the model
 * thread stop it at its next step, and wait until it is done. */
void engine_cancel(serve_engine *e, serve_job *j);
/* Free what the job owns (prompt, stops, out, lp), not the job itself. */
void job_release(serve_job *j);

#endif /* MOE_SERVE_H */
