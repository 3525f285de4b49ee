/* think.h - a streamed reply split into the model's reasoning and its answer.
 * Thinking models (Qwen3, DeepSeek-R1 / V3.1, GLM-4.5, ...) write their
 * reasoning between <think> and </think>, gpt-oss in its harmony "analysis"
 * channel (up to the "final" channel's header); `moe chat` shows it dimmed or
 * hides it. Pieces arrive a token at a time, so a marker may be split across them:
 * the tail that could still begin one is held back until it is decided. Pure
 * text: no model, no I/O (tests/unit/test_think.c). */
#ifndef MOE_THINK_H
#define MOE_THINK_H

#include <stddef.h>

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"

typedef struct {
    int in_think;  /* inside reasoning */
    int kind;      /* which markers opened it (think.c's MARKERS) */
    char held[32]; /* (n_held) a tail that may be the start of the next marker: shorter than any */
    size_t n_held;
} think_split;

/* Called for each decided span of text; reasoning = 1 for the markers and what is between them. */
typedef void (*think_emit)(void *user, const char *text, size_t n, int reasoning);

/* Start a reply to `prompt`: inside reasoning if the prompt left a <think> (or analysis channel) open (a generation
 * prompt that ends with "<think>\n", as DeepSeek-R1's does). */
void think_split_init(think_split *t, const char *prompt, size_t len);
void think_split_push(think_split *t, const char *s, size_t n, think_emit emit, void *user);
/* The end of the reply: a held tail is emitted as it is. */
void think_split_flush(think_split *t, think_emit emit, void *user);

#endif
