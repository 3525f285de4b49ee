/* tokenizer.h - text <-> token ids from the tok.* section of a .moe file.
 *
 * Two models (docs/FORMAT.md "tok.*"):
 *   bpe  byte-level BPE: pre-tokenizer split (per tok.pre), then merges by rank
 *   spm  SentencePiece-style BPE: score-ordered merges, dummy-prefix space,
 *        byte fallback to <0xXX> tokens
 * Tokens are stored as the bytes they decode to, so both work on raw bytes.
 * The public entry points (moe_tokenize, moe_detok_*, moe_token_*) are
 * declared in moe.h and implemented in tokenizer.c. */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "file.h"
#include "moe.h"

typedef struct moe_tokenizer moe_tokenizer;

/* Build the tokenizer from a parsed file: reads the tok.* keys and tensors
 * (marking the tensors used) and builds the lookup tables. vocab_size is the
 * model's logit count (0 for a tokenizer-only file); the tokenizer may not
 * have more tokens than that. Returns NULL with err set on bad data. */
moe_tokenizer *tokenizer_load(const moe_file *f, int vocab_size, moe_err *err);
void tokenizer_free(moe_tokenizer *t);

/* Same contract as moe_tokenize(). */
int tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int flags, int32_t *out, int cap,
                     moe_err *err);

int tokenizer_n_tokens(const moe_tokenizer *t);
int tokenizer_bos(const moe_tokenizer *t);
int tokenizer_eos(const moe_tokenizer *t);
const char *tokenizer_token(const moe_tokenizer *t, int32_t id, size_t *len);
int tokenizer_is_eos(const moe_tokenizer *t, int32_t id);
/* 1 for control tokens (BOS, <|im_start|>, ...): not printed when streaming */
int tokenizer_is_control(const moe_tokenizer *t, int32_t id);

#endif /* MOE_TOKENIZER_H */
