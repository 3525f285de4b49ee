/* unicode.h - the Unicode building blocks the tokenizers need: a strict UTF-8
 * decoder, character classes for the pre-tokenizers (letters, numbers,
 * punctuation, symbols, marks, white space), and NFC normalization.
 *
 * The tables live in unicode_data.c, generated from Python's unicodedata by
 * tools/gen_unicode.py (never edited by hand). No globals are written: every
 * function is pure or works in caller-owned buffers. */
#ifndef MOE_UNICODE_H
#define MOE_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Character class flags (general category major class, the letter case the
 * o200k regex distinguishes, and the White_Space property, which is what \s
 * means in the tokenizer regexes). */
enum {
    UNI_L = 1,    /* \p{L} letter */
    UNI_N = 2,    /* \p{N} number (Nd, Nl, No) */
    UNI_P = 4,    /* \p{P} punctuation */
    UNI_S = 8,    /* \p{S} symbol */
    UNI_M = 16,   /* \p{M} mark */
    UNI_WS = 32,  /* White_Space: \s */
    UNI_LU = 64,  /* \p{Lu} or \p{Lt}: upper- and titlecase letters (with UNI_L) */
    UNI_LL = 128, /* \p{Ll} lowercase letter (with UNI_L); a letter with neither is Lm or Lo */
};

/* A byte that is not part of well-formed UTF-8 decodes to UNI_BAD_BASE + byte:
 * a value above U+10FFFF that belongs to no class, so the pre-tokenizers treat
 * it like an unassigned character and the bytes still reach BPE unchanged. */
#define UNI_BAD_BASE 0x110000u

/* Decode one character at s[0..n) (n >= 1). Sets *len to the bytes consumed
 * (1..4). Malformed input (a stray continuation byte, an overlong form, a
 * surrogate, a value above U+10FFFF, a truncated sequence) returns
 * UNI_BAD_BASE + s[0] with *len = 1. */
uint32_t utf8_decode(const uint8_t *s, size_t n, int *len);

/* Encode cp (< 0x110000) into out[0..4); returns the byte count. */
int utf8_encode(uint32_t cp, uint8_t *out);

/* How many bytes a well-formed sequence starting with this lead byte has
 * (1 for ASCII; 0 for a byte that cannot start one). */
int utf8_lead_len(uint8_t b);

/* UNI_* flags of a code point (0 for UNI_BAD_BASE values and unassigned ones). */
unsigned uni_flags(uint32_t cp);

/* Canonical combining class. */
unsigned uni_ccc(uint32_t cp);

/* NFC-normalize in[0..n) into *buf (grown with realloc as needed; *cap is its
 * size). Malformed bytes are copied through unchanged and never combine.
 * Returns the output length, or (size_t)-1 on allocation failure. */
size_t uni_nfc(const uint8_t *in, size_t n, uint8_t **buf, size_t *cap);

/* 1 if in[0..n) certainly is its own NFC (the fast path: only ASCII and
 * characters below U+0300 that are not followed by anything that combines). */
int uni_nfc_quick(const uint8_t *in, size_t n);

/* Generated tables (unicode_data.c). */
extern const char uni_data_version[];
extern const int uni_class_count, uni_ccc_count, uni_decomp_count, uni_comp_count;
extern const uint32_t uni_class_runs[];   /* (first cp << 8) | flags */
extern const uint32_t uni_ccc_runs[];     /* (first cp << 8) | ccc */
extern const uint64_t uni_decomp[];       /* (cp << 16) | (pool offset << 3) | length */
extern const uint32_t uni_decomp_pool[];
extern const uint64_t uni_comp_keys[];    /* (first << 21) | second */
extern const uint32_t uni_comp_vals[];

#endif /* MOE_UNICODE_H */
