/* tokenizer.h - text <-> token ids from the tok.* section of a .moe file.
 *
 * Two models (docs/FORMAT.md "tok.*"):
 *   bpe  byte-level BPE: pre-tokenizer split (per tok.pre), then merges by rank
 *   spm  SentencePiece-style BPE: score-ordered merges, dummy-prefix space,
 *        byte fallback to <0xXX> tokens
 * Tokens are stored as the bytes they decode to, so both work on raw bytes.
 * The public entry points (moe_tokenize, moe_detok_*, moe_token_*) are
 * declared in moe.h and implemented in api.c over these. */
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

/* Same contract as moe_tokenize(). flags: MOE_TOK_ADD_BOS adds BOS (and EOS)
 * when the tokenizer asks for them (tok.add_bos, tok.add_eos); MOE_TOK_SPECIAL
 * also recognises control-token text (<|im_start|>); user-defined added tokens
 * are always recognised. Invalid UTF-8 is encoded through byte tokens, or
 * refused with an error when the vocabulary has no token for a byte. */
int tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int flags, int32_t *out, int cap,
                     moe_err *err);

int tokenizer_n_tokens(const moe_tokenizer *t);
int tokenizer_bos(const moe_tokenizer *t);
int tokenizer_eos(const moe_tokenizer *t);
const char *tokenizer_token(const moe_tokenizer *t, int32_t id, size_t *len);
/* The longest token, in bytes (to size detokenizer buffers). */
size_t tokenizer_max_token_len(const moe_tokenizer *t);
int tokenizer_is_eos(const moe_tokenizer *t, int32_t id);
/* 1 for control tokens (BOS, <|im_start|>, ...): not printed when streaming */
int tokenizer_is_control(const moe_tokenizer *t, int32_t id);

/* The streaming detokenizer behind moe_detok_push/flush, on a tokenizer
 * directly (d->model is not used; start with d->prev = -1, n_pending = 0).
 * Control tokens print nothing (d->prev stays -1 until something prints); the
 * first SPM text of the stream, and text right after BOS, lose the dummy-prefix
 * space (to stream the continuation of a prompt with its first space, set
 * d->prev to the prompt's last token). out receives at most cap - 1 bytes and a
 * NUL: 3 * (longest token) + 4 bytes always suffice (each invalid byte becomes
 * a 3-byte U+FFFD); what does not fit is dropped. */
size_t tokenizer_detok_push(const moe_tokenizer *t, moe_detok *d, int32_t id, char *out, size_t cap);
size_t tokenizer_detok_flush(moe_detok *d, char *out, size_t cap);

#endif /* MOE_TOKENIZER_H */
