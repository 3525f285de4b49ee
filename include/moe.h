/*
 * moe.h - the public C API of moe, a small CPU inference engine for
 * mixture-of-experts transformers.
 *
 * Data flow:
 *   moe_model_open()   map a .moe file read-only, validate it, bind the weights
 *   moe_ctx_new()      allocate one sequence's state: KV cache + scratch (the only
 *                      large allocation; nothing is allocated per token)
 *   moe_tokenize()     text -> token ids
 *   moe_eval()         feed token ids, get logits
 *   moe_eval_batch()   the same for several sequences of one context in one pass
 *   moe_sampler_*()    logits -> next token id
 *   moe_detok_*()      token ids -> text, streamed (partial UTF-8 held back)
 *
 * Errors: every call that can fail takes a moe_err* (may be NULL) and fills it
 * with one line naming the problem; it returns NULL or a negative number. The
 * library never exits, asserts on file content, or prints.
 *
 * Threads: a moe_model is read-only once opened, so any number of threads may
 * use one model at the same time (moe_tokenize, moe_token_bytes, moe_ctx_new,
 * moe_model_get_info, ...) as long as none frees it meanwhile. A moe_ctx, a
 * moe_sampler and a moe_detok are one sequence's state: each may be used by
 * one thread at a time; different ones may run concurrently (two contexts of
 * one model evaluating on two threads is tested under ThreadSanitizer). The
 * kernel set is chosen once per process, race-free, on first use.
 * moe_eval spreads its work over the context's n_threads with OpenMP
 * num_threads clauses: it never changes the caller's OpenMP settings
 * (omp_set_num_threads and the like are the program's own).
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_ERR_LEN 512

typedef struct moe_err {
    char msg[MOE_ERR_LEN];
} moe_err;

/* ---------------------------------------------------------------- model */

typedef struct moe_model moe_model;

/* Map and validate a .moe file (model or tokenizer-only). */
moe_model *moe_model_open(const char *path, moe_err *err);
/* Read every page of the mapped weights once, so a later run does not pay
 * for page faults (benchmarks; like llama.cpp's MAP_POPULATE). Returns the
 * bytes touched. The pages stay in the page cache, shared, not copied. */
size_t moe_model_prefault(const moe_model *m);
/* Bytes of the mapped file now mapped as 2 MB pages (Linux; elsewhere 0).
 * Decode reads faster from them (see README, Memory). */
size_t moe_model_huge_bytes(const moe_model *m);
void moe_model_free(moe_model *m);

/* A summary for `moe info` and for callers sizing buffers. */
typedef struct moe_model_info {
    const char *arch;          /* general.arch, "" for a tokenizer-only file */
    const char *name;          /* general.name */
    const char *weight_type;   /* dtype holding most weight bytes ("BF16", "Q4_0", ...) */
    int has_weights;           /* 0: tokenizer-only file */
    int vocab_size;            /* logits per position (model.vocab_size) */
    int n_tokens;              /* tokens in the tokenizer (<= vocab_size) */
    int dim, n_layers, n_heads, n_kv_heads, head_dim;
    int n_experts, n_active;   /* 0, 0 for a dense model */
    int n_moe_layers;          /* layers whose FFN is MoE */
    int n_mtp_layers;          /* multi-token-prediction layers of the checkpoint, left out (not run) */
    int max_ctx;
    int bos, eos;              /* -1: none */
    uint64_t n_params;         /* parameters (elements) of all weight tensors */
    uint64_t n_params_active;  /* parameters touched per token (k of E experts) */
    uint64_t weight_bytes;     /* bytes of all weight tensors */
    uint64_t active_bytes;     /* bytes read per decoded token */
    uint64_t kv_bytes_per_token; /* KV cache bytes per position (f32 cache), of the layers that keep every position */
    int n_window_layers;       /* layers attending within a sliding window of `window` positions; */
    int window;                /* their cache is a fixed ring (docs/FORMAT.md attn.window) */
    uint64_t kv_ring_bytes;    /* bytes of those rings (f32), whatever the context */
    int n_ssm_layers;          /* Gated DeltaNet (linear attention) layers: no KV cache */
    uint64_t state_bytes;      /* their recurrent state per sequence (conv + delta-rule state, f32) */
    const char *skipped;       /* general.skipped: what the converter left out (vision tower, MTP), */
    int skipped_len;           /* not NUL-terminated; NULL, 0: nothing */
    uint64_t file_bytes;
} moe_model_info;

void moe_model_get_info(const moe_model *m, moe_model_info *info);

/* Print every metadata key and every tensor (name, dtype, shape) to a FILE*
 * passed as void* to keep stdio out of this header. */
void moe_model_dump(const moe_model *m, void *file);

/* ---------------------------------------------------------------- context */

typedef struct moe_ctx moe_ctx;

typedef struct moe_ctx_params {
    int n_ctx;        /* context length (KV cache positions); 0 = model.max_ctx capped at 4096 */
    int n_batch;      /* largest number of tokens evaluated at once; 0 = 512 */
    int n_threads;    /* 0 = all cores (OpenMP builds), at most 1024; ignored without OpenMP */
    int n_active;     /* experts per token, k; 0 = the model's (moe.n_active). A routing
                         experiment: the trained k reproduces the model exactly */
    int kv_f16;       /* 1: keep the KV cache in f16 (half the memory; llama.cpp's default) */
    int n_seq;        /* sequences the context holds, each with its own cache; 0 = 1 (moe_eval_batch) */
} moe_ctx_params;

moe_ctx_params moe_ctx_default_params(void);
/* Sizes the KV cache, scratch and RoPE tables first (overflow-checked) and
 * refuses, with err set and nothing allocated, a context that would need more
 * memory than the machine has. */
moe_ctx *moe_ctx_new(const moe_model *m, const moe_ctx_params *p, moe_err *err);
void moe_ctx_free(moe_ctx *c);

/* The calls below without a sequence number act on sequence 0, the only
 * one of a context made with n_seq = 1 (moe_eval_batch: the others). */

/* Forget the sequence (position back to 0). */
void moe_ctx_reset(moe_ctx *c);
/* Keep only positions 0..pos-1 of the cache (pos <= moe_ctx_pos): the next
 * moe_eval continues at pos, as if the later tokens had never been fed.
 * A chat turn keeps the prefix its prompt shares with the cache this way.
 * Fails (cache unchanged) when a sliding-window layer's ring has already
 * overwritten what position pos would attend to; then reset and re-evaluate. */
int moe_ctx_truncate(moe_ctx *c, int pos, moe_err *err);
/* Number of positions already in the KV cache. */
int moe_ctx_pos(const moe_ctx *c);
int moe_ctx_n_ctx(const moe_ctx *c);
/* Bytes this context allocated (cache + scratch). */
size_t moe_ctx_bytes(const moe_ctx *c);

/*
 * Evaluate n tokens appended at the current position, in batches of n_batch.
 * logits: if non-NULL, receives n * vocab_size floats (row i = logits after
 * token i). Whether or not it is given, the last row is kept and returned by
 * moe_ctx_logits(). Returns 0, or -1 (context full, bad token id) with err set.
 * Also -1 when a layer's output or the logits stop being finite (a NaN or Inf
 * weight, or an overflow): err names the layer, and the sequence is reset.
 */
int moe_eval(moe_ctx *c, const int32_t *tokens, int n, float *logits, moe_err *err);
const float *moe_ctx_logits(const moe_ctx *c);

/* ---------------------------------------------------------------- several sequences */

/*
 * A context made with n_seq > 1 holds that many independent sequences
 * (numbered 0..n_seq-1), each with its own KV cache, position and recurrent
 * state, sharing the weights and the scratch. moe_eval_batch appends tokens
 * to several of them in one pass through the model: every matrix product
 * (projections, router, shared experts, lm head) covers all their tokens at
 * once, attention reads each sequence's own cache, and the experts run over
 * all tokens grouped by expert, so an expert several sequences chose is read
 * once per pass. Each sequence's logits are those it gets evaluated alone
 * (up to float rounding: see README, Several sequences at once).
 *
 * A server's decode step, one token per active sequence:
 *
 *     moe_ctx_params p = moe_ctx_default_params();
 *     p.n_seq = 4;
 *     moe_ctx *c = moe_ctx_new(model, &p, &err);
 *     ...
 *     moe_batch_item it[4];
 *     int n = 0;
 *     for (int s = 0; s < 4; s++)
 *         if (active[s]) it[n++] = (moe_batch_item){.seq = s, .tokens = &next[s], .n = 1};
 *     if (moe_eval_batch(c, it, n, &err)) ...;
 *     for (int i = 0; i < n; i++)
 *         next[it[i].seq] = moe_sample(sampler[it[i].seq], moe_seq_logits(c, it[i].seq), ...);
 *
 * A new request's prompt can join the same call as an item of many tokens
 * (then the pass has more rows; passes hold n_batch rows, longer work is cut
 * into several). A finished sequence frees its slot with moe_seq_reset, or
 * keeps a shared prompt prefix with moe_seq_truncate.
 */
typedef struct moe_batch_item {
    int seq;               /* 0..n_seq-1, at most once per call */
    const int32_t *tokens; /* appended at the sequence's position */
    int n;                 /* >= 1 */
    float *logits;         /* NULL, or n * vocab_size floats: row i = logits after token i */
} moe_batch_item;

/* Evaluate the items in one pass (several when they hold more than n_batch
 * tokens). Whatever logits asks for, each sequence's last row is kept and
 * returned by moe_seq_logits. Returns 0, or -1 with err set, having evaluated
 * nothing (bad sequence, one named twice, context full, bad token id); or -1
 * when values stop being finite (as moe_eval), the failing pass's sequences
 * reset. */
int moe_eval_batch(moe_ctx *c, const moe_batch_item *items, int n_items, moe_err *err);
int moe_ctx_n_seq(const moe_ctx *c);
/* The logits after sequence seq's last evaluated token (vocab_size floats). */
const float *moe_seq_logits(const moe_ctx *c, int seq);
int moe_seq_pos(const moe_ctx *c, int seq);
/* moe_ctx_reset and moe_ctx_truncate for one sequence; the others are untouched. */
void moe_seq_reset(moe_ctx *c, int seq);
int moe_seq_truncate(moe_ctx *c, int seq, int pos, moe_err *err);

/* Phases of the forward pass whose wall-clock time moe_ctx_time_phases adds up. */
typedef enum {
    MOE_PHASE_ATTENTION,  /* attention layers: projections, attention, output projection */
    MOE_PHASE_DELTANET,   /* Gated DeltaNet layers but their delta rule: projections, conv, gated norm */
    MOE_PHASE_DELTA_RULE, /* the delta rule: the recurrence (decode) or its chunks (prefill) */
    MOE_PHASE_ROUTING,    /* router logits and the choice of experts */
    MOE_PHASE_EXPERTS,    /* FFN products: routed and shared experts, dense FFN */
    MOE_PHASE_OUTPUT,     /* final norm and lm_head */
    MOE_PHASE_OTHER,      /* the rest: embedding, block norms, residual adds */
    MOE_PHASE_COUNT
} moe_phase;
const char *moe_phase_name(moe_phase p);

/* Work counters since moe_ctx_new (benchmarks, tests). */
typedef struct moe_ctx_stats {
    uint64_t passes;       /* passes through the model (at most n_batch token rows each) */
    uint64_t rows;         /* token rows evaluated */
    uint64_t expert_reads; /* routed experts' weights streamed: one per (pass, MoE layer, expert chosen),
                              more when an expert's rows exceed the FFN's row group (ffn.c) */
    uint64_t expert_rows;  /* (token, expert) rows those reads computed: rows * k per MoE layer */
    double phase_seconds[MOE_PHASE_COUNT]; /* wall-clock seconds per phase while timed, else 0 */
} moe_ctx_stats;
void moe_ctx_get_stats(const moe_ctx *c, moe_ctx_stats *s);
/* Time the phases of every pass from now on (on = 1) or stop (0; the default: then no
 * clock is read). Off costs a branch per phase. moe bench --phases uses it. */
void moe_ctx_time_phases(moe_ctx *c, int on);

/* ---------------------------------------------------------------- routing */

/* What the router decided for one token at one MoE layer (docs/ROUTING.md).
 * Pointers are valid only during the hook call. */
typedef struct moe_route_event {
    int pos, layer, token;        /* position in the sequence, layer index, token id */
    int k, n_experts, n_groups;   /* experts chosen, routed experts E, groups (1 = none) */
    const int *ids;               /* (k) chosen experts, best first */
    const float *weights;         /* (k) their routing weights (renormalised, scaled) */
    const float *logits;          /* (E) raw router logits, HF gate(x) */
    const float *scores;          /* (E) softmax or sigmoid of the logits */
    const float *choice;          /* (E) what selection compared: scores + bias, dropped
                                     groups 0, disabled experts -inf */
    const unsigned char *group_kept; /* (n_groups) 1 = group kept; NULL without groups */
    float shared_weight;          /* multiplier of the always-on shared expert(s): 0 = none,
                                     1, or Qwen2-MoE's sigmoid gate */
    int seq;                      /* the sequence (moe_eval_batch); 0 for moe_eval */
} moe_route_event;
typedef void (*moe_route_hook)(void *user, const moe_route_event *ev);

/* Call hook after every routing decision (NULL: off, the default, costs nothing).
 * Within one moe_eval batch events arrive layer by layer, tokens in order
 * (moe_eval_batch: the items' tokens in the items' order). */
void moe_ctx_set_route_hook(moe_ctx *c, moe_route_hook hook, void *user);

/* Take expert `expert` of layer `layer` out of selection: it is never chosen
 * (it competes with score -inf, in group scoring too). Fails for a dense
 * layer, an id out of range, or when fewer than k experts would remain. */
int moe_ctx_disable_expert(moe_ctx *c, int layer, int expert, moe_err *err);
/* 1 if layer's FFN is a mixture of experts, 0 if dense or out of range. */
int moe_layer_is_moe(const moe_model *m, int layer);

/* ---------------------------------------------------------------- matrix inputs */

/* The inputs the weight matrices of a layer see, for calibrated quantization
 * (moe quantize --calib): n rows of cols floats, valid only during the call;
 * expert: the routed expert whose down projection reads them, else -1. */
typedef enum {
    MOE_INPUT_ATTN = 0,     /* attention's normed input: q, k, v (MLA: q or q_a, kv_a; DeltaNet: qkv, z, b, a) */
    MOE_INPUT_ATTN_OUT = 1, /* the heads' output: o (DeltaNet: the gated-normed output, for out_proj) */
    MOE_INPUT_FFN = 2,      /* the FFN's normed input: gate and up of every expert */
    MOE_INPUT_FFN_DOWN = 3, /* silu(gate x) * up x of one expert (or the dense / shared FFN): its down */
    MOE_INPUT_KINDS = 4
} moe_input_kind;
typedef void (*moe_input_hook)(void *user, int layer, moe_input_kind kind, int expert, const float *x, int n,
                               int cols);

/* Call hook with every such input (NULL: off, the default, costs nothing). */
void moe_ctx_set_input_hook(moe_ctx *c, moe_input_hook hook, void *user);

/* ---------------------------------------------------------------- tokenizer */

enum {
    MOE_TOK_ADD_BOS = 1,   /* prepend BOS if the model asks for it (tok.add_bos) */
    MOE_TOK_SPECIAL = 2,   /* recognise special-token text such as <|im_start|> */
};

/* Encode len bytes of text. Writes at most cap ids to out and returns the total
 * number of ids (call again with a larger buffer if it exceeds cap), or -1. */
int moe_tokenize(const moe_model *m, const char *text, size_t len, int flags,
                 int32_t *out, int cap, moe_err *err);

/* Streaming detokenizer: holds back an incomplete UTF-8 sequence until the
 * token that completes it arrives, so every call returns whole characters. */
typedef struct moe_detok {
    const moe_model *model;
    int prev;              /* previous token id, -1 at start */
    int n_pending;
    unsigned char pending[8];
} moe_detok;

void moe_detok_init(moe_detok *d, const moe_model *m);
/* Append the text of token id to out (NUL-terminated, at most cap-1 bytes);
 * returns bytes written. Invalid bytes that can never complete a character
 * are emitted as U+FFFD. */
size_t moe_detok_push(moe_detok *d, int32_t id, char *out, size_t cap);
/* Flush whatever is still pending at the end of the stream. */
size_t moe_detok_flush(moe_detok *d, char *out, size_t cap);

/* Raw bytes of one token (not NUL-terminated); NULL for an out-of-range id. */
const char *moe_token_bytes(const moe_model *m, int32_t id, size_t *len);
/* 1 if generation should stop at this token (tok.eos_ids). */
int moe_token_is_eos(const moe_model *m, int32_t id);

/* ---------------------------------------------------------------- sampler */

typedef struct moe_sampler_params {
    float temperature;     /* 0 = greedy (argmax) */
    int top_k;             /* 0 = off */
    float top_p;           /* 1 = off */
    float min_p;           /* 0 = off */
    float repeat_penalty;  /* 1 = off */
    int repeat_last_n;     /* how many previous tokens the penalties look at */
    uint64_t seed;
    float presence_penalty;  /* OpenAI's: subtracted once from the logit of every id seen; 0 = off */
    float frequency_penalty; /* OpenAI's: subtracted per occurrence; 0 = off */
} moe_sampler_params;

typedef struct moe_sampler moe_sampler;

moe_sampler_params moe_sampler_default_params(void);
moe_sampler *moe_sampler_new(const moe_sampler_params *p, int vocab_size, moe_err *err);
void moe_sampler_free(moe_sampler *s);
/* Pick the next token from logits (vocab_size floats; not modified).
 * history: the ids seen so far (for the repetition penalty), may be NULL. */
int32_t moe_sample(moe_sampler *s, const float *logits, const int32_t *history, int n_history);

/* ---------------------------------------------------------------- chat */

/* The model's chat template (tok.chat_template: the Jinja text of
 * tokenizer_config.json, or of a GGUF's tokenizer.chat_template), not
 * NUL-terminated; NULL (len 0) when the file has none. */
const char *moe_chat_template(const moe_model *m, size_t *len);

typedef struct moe_chat_opts {
    const char *template_text; /* NULL: the model's own template */
    size_t template_len;
    int year, month, day;      /* the date strftime_now sees; year 0 = today (local time) */
    int hour, minute, second;
} moe_chat_opts;

/* Render an OpenAI-style chat request (JSON text: "messages" with role,
 * content, reasoning_content, tool_calls; optional "tools", "documents",
 * "add_generation_prompt" (default true), "chat_template_kwargs", and
 * "bos_token" / "eos_token" overriding the model's) with the template, as
 * Hugging Face's apply_chat_template(tokenize=False) does. m may be NULL when
 * opts gives the template. Returns the prompt (malloc'ed, NUL-terminated,
 * *len bytes), or NULL with err set: the template's own message when it
 * raised (then *raised = 1), else one line naming the problem. */
char *moe_chat_render(const moe_model *m, const char *request_json, size_t request_len, const moe_chat_opts *opts,
                      size_t *len, int *raised, moe_err *err);

/* Token ids that end an assistant turn: the tokenizer's EOS ids (EOS and
 * generation_config's eos_token_id) and its control tokens that close a turn
 * (<|im_end|>, <|end_of_text|>, <|eot_id|>, <|return|>, ...). Writes at most
 * cap ids; returns how many there are. */
int moe_chat_end_tokens(const moe_model *m, int32_t *out, int cap);

/* ---------------------------------------------------------------- misc */

const char *moe_version(void);
/* Which kernel set the dispatcher chose ("scalar", "avx2", ...). */
const char *moe_kernel_name(void);

#ifdef __cplusplus
}
#endif
#endif /* MOE_H */
