/* reasoning.h - split a thinking model's reply into its reasoning and its
 * answer as the text streams in: "<think>reasoning</think>answer", where the
 * opening tag may also come from the prompt (a template that ends its
 * generation prompt with "<think>"). What an OpenAI-style server returns as
 * reasoning_content and content. Pure: text in, text out, no model.
 *
 * A tag split across pieces is held back until it is decided, so neither
 * part ever shows a piece of "<think>" or "</think>". Leading white space of
 * the reasoning and of the answer is dropped (the newlines templates and
 * models put after the tags). */
#ifndef MOE_REASONING_H
#define MOE_REASONING_H

#include "strbuf.h"

typedef struct reasoning_split {
    int state;       /* 0: at the start (may open with <think>), 1: in the reasoning, 2: in the answer */
    int trim;        /* 1: drop white space until the first other byte */
    strbuf held;     /* bytes not yet decided */
} reasoning_split;

/* in_reasoning: the prompt already opened the reasoning. */
void reasoning_init(reasoning_split *r, int in_reasoning);
/* Feed n bytes; what is now decided is appended to reasoning / content. With
 * last = 1 everything held is decided (the end of the reply). */
void reasoning_feed(reasoning_split *r, const char *s, size_t n, int last, strbuf *reasoning, strbuf *content);
void reasoning_free(reasoning_split *r);
/* 1 if the rendered prompt leaves the model inside an open <think> block
 * (its last "<think>" is not closed by a later "</think>"). */
int reasoning_prompt_open(const char *prompt, size_t n);

#endif /* MOE_REASONING_H */
