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

/* A pre-tokenizer: an entry of pretok.c's table. */
typedef struct pretok pretok;

/* The pre-tokenizer tok.pre = s[0..n) names, in *out: NULL for "default"
 * (spm's: none). Returns -1 when no pre-tokenizer has that name, else 0. */
int pretok_find(const char *s, size_t n, const pretok **out);

/* A segment of text as the matchers read it. */
typedef struct {
    const uint32_t *cp;         /* (n) code points; an invalid byte b reads as UNI_BAD_BASE + b */
    const uint8_t *fl;          /* (n) their UNI_* classes (unicode.h) */
    size_t n;
} pretok_text;

/* Receives each final piece, code points [b, end), in order; a non-zero
 * return stops the split, which then returns -1. */
typedef int (*pretok_piece_fn)(void *user, size_t b, size_t end);

/* Cut the text by p's stages. */
int pretok_split(const pretok *p, const pretok_text *text, pretok_piece_fn piece, void *user);

/* The bytes s[0..n) of a piece through p's last stage on bytes, where it has
 * one (Falcon): piece receives the runs they are cut into, else s[0..n) whole. */
typedef int (*pretok_bytes_fn)(void *user, const uint8_t *s, size_t n);
int pretok_bytes(const pretok *p, const uint8_t *s, size_t n, pretok_bytes_fn piece, void *user);

#endif /* MOE_PRETOK_H */
