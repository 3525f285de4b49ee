/* pretok.h - the pre-tokenizers of byte-level BPE (tok.pre): how a text is cut
 * into the pieces whose bytes BPE then merges, never across a piece.
 *
 * They are the regexes of the Hugging Face tokenizer.json files, written out
 * by hand: each stage is a matcher that says how long the regex match
 * starting at a given code point is (0: none); the driver finds matches left
 * to right and hands both the matches and the text between them to the next
 * stage (HF `Split` with behavior "Isolated"), and the last stage's pieces to
 * the caller. */
#ifndef MOE_PRETOK_H
#define MOE_PRETOK_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PRE_DEFAULT,        /* spm: none */
    PRE_GPT2,           /* ByteLevel's own regex (gpt2, gpt_neox, mpt) */
    PRE_QWEN2,          /* Split(qwen2 regex) */
    PRE_LLAMA3,         /* Split(llama3 regex): as qwen2 with digits in groups of 3 */
    PRE_DEEPSEEK_LLM,   /* six Splits */
    PRE_DEEPSEEK_CODER, /* five Splits */
    PRE_DEEPSEEK_V3,    /* three Splits */
    PRE_FALCON,         /* Punctuation, ByteLevel regex, then Digits and [0-9]{3} on bytes */
    PRE_STARCODER,      /* Digits(individual), ByteLevel regex (starcoder, refact) */
    PRE_O200K,          /* Split(o200k regex): GPT-4o / gpt-oss, case-aware words */
    PRE_QWEN35,         /* Split(qwen3.5 regex): as qwen2 with combining marks in words */
} pre_kind;

/* The pre-tokenizer tok.pre = s[0..n) names, or -1 when none has that name. */
int pretok_find(const char *s, size_t n);

/* A segment of text as the matchers read it. */
typedef struct {
    const uint32_t *cp;         /* (n) code points; an invalid byte b reads as UNI_BAD_BASE + b */
    const uint8_t *fl;          /* (n) their UNI_* classes (unicode.h) */
    size_t n;
} pretok_text;

/* Receives each final piece, code points [b, end), in order; a non-zero
 * return stops the split and is returned. */
typedef int (*pretok_piece_fn)(void *user, size_t b, size_t end);

/* Cut the text by pre-tokenizer k's stages (k is not PRE_DEFAULT: that is spm's, which has none). */
int pretok_split(pre_kind k, const pretok_text *text, pretok_piece_fn piece, void *user);

/* Falcon's last stages, on the bytes of one of its pieces (after ByteLevel):
 * piece receives the byte runs s[0..n) is cut into. */
typedef int (*pretok_bytes_fn)(void *user, const uint8_t *s, size_t n);
int pretok_falcon_bytes(const uint8_t *s, size_t n, pretok_bytes_fn piece, void *user);

#endif /* MOE_PRETOK_H */
