/* pretok.c - the pre-tokenizers of byte-level BPE (pretok.h): a matcher per
 * regex, and one table naming each pre-tokenizer's stages. */
#include "pretok.h"

#include <string.h>

#include "unicode.h"

#define CP(i) (e->cp[i])
#define FL(i) (e->fl[i])

static inline int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
static inline int is_ascii_alpha(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline int is_ascii_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
}

/* end of the run of code points from p whose flags meet mask */
static inline size_t run_any(const pretok_text *e, size_t p, size_t end, unsigned mask) {
    while (p < end && (FL(p) & mask)) p++;
    return p;
}
/* end of the run of code points from p that are none of \s, \p{L}, \p{N} */
static inline size_t run_other(const pretok_text *e, size_t p, size_t end) {
    while (p < end && !(FL(p) & (UNI_WS | UNI_L | UNI_N))) p++;
    return p;
}

/* \s+(?!\S)|\s+ at p (a white-space code point): the run, less its last
 * character when a non-space follows and the run is longer than one. */
static size_t ws_tail(const pretok_text *e, size_t p, size_t end) {
    size_t r = run_any(e, p, end, UNI_WS);
    return (r == end || r - p == 1) ? r - p : r - p - 1;
}

/* \s*[\r\n]+ at p: up to and including the last \r or \n of the white-space
 * run (0 if the run has none). */
static size_t ws_newlines(const pretok_text *e, size_t p, size_t end) {
    size_t last = 0;
    for (size_t q = p; q < end && (FL(q) & UNI_WS); q++)
        if (is_nl(CP(q))) last = q + 1;
    return last ? last - p : 0;
}

/* 's 't 're 've 'm 'll 'd at p (which holds an apostrophe); with fold, any case
 * (Unicode case folding also maps U+017F long s to s). */
static size_t contraction(const pretok_text *e, size_t p, size_t end, int fold) {
    if (p + 1 >= end) return 0;
    uint32_t a = CP(p + 1), b = p + 2 < end ? CP(p + 2) : 0;
    if (fold) {
        if (a == 0x17F) a = 's';
        if (a < 128) a |= 0x20;
        if (b < 128 && is_ascii_alpha(b)) b |= 0x20;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* GPT-2 (ByteLevel use_regex):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t m_gpt2(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    uint32_t c = CP(p);
    if (c == '\'') {
        size_t k = contraction(e, p, end, 0);
        if (k) return k;
    }
    size_t q = p + (c == ' ' && p + 1 < end);
    unsigned f = FL(q);
    if (f & UNI_L) return run_any(e, q, end, UNI_L) - p;
    if (f & UNI_N) return run_any(e, q, end, UNI_N) - p;
    if (!(f & UNI_WS)) return run_other(e, q, end) - p;
    return ws_tail(e, p, end);
}

/* Llama 3 (digits = 3) and Qwen2 (digits = 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * Qwen3.5 (digits = 1, marks = UNI_M) reads [\p{L}\p{M}] for both \p{L} but the
 * prefix's: [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+ and  ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*, so
 * a combining mark stays in its word instead of starting the next piece. */
static size_t m_llama3_like(const pretok_text *e, size_t p, size_t end, size_t digits, unsigned marks) {
    uint32_t c = CP(p);
    unsigned f = FL(p), word = UNI_L | marks;
    if (c == '\'') {
        size_t k = contraction(e, p, end, 1);
        if (k) return k;
    }
    if (f & word) return run_any(e, p, end, word) - p;
    if (!is_nl(c) && !(f & UNI_N) && p + 1 < end && (FL(p + 1) & word)) return run_any(e, p + 1, end, word) - p;
    if (f & UNI_N) {
        size_t r = run_any(e, p, end, UNI_N) - p;
        return r < digits ? r : digits;
    }
    size_t q = p + (c == ' ' && p + 1 < end);
    unsigned not_sym = UNI_WS | UNI_N | word;
    if (!(FL(q) & not_sym)) {
        size_t r = q;
        while (r < end && !(FL(r) & not_sym)) r++;
        while (r < end && is_nl(CP(r))) r++;
        return r - p;
    }
    size_t k = ws_newlines(e, p, end);
    return k ? k : ws_tail(e, p, end);
}
static size_t m_llama3(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return m_llama3_like(e, p, end, 3, 0);
}
static size_t m_qwen2(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return m_llama3_like(e, p, end, 1, 0);
}
static size_t m_qwen35(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return m_llama3_like(e, p, end, 1, UNI_M);
}

/* o200k (GPT-4o, gpt-oss), with U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and
 * W = [\p{Ll}\p{Lm}\p{Lo}\p{M}] (so Lm, Lo and marks are both):
 *   [^\r\n\p{L}\p{N}]?U*W+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 *   [^\r\n\p{L}\p{N}]?U+W*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * A word is a run of capitals then a run of lowercase: "HelloWorld" is two. */
static inline int o200k_upper(unsigned f) { return (f & UNI_M) || ((f & UNI_L) && !(f & UNI_LL)); }
static inline int o200k_lower(unsigned f) { return (f & UNI_M) || ((f & UNI_L) && !(f & UNI_LU)); }

/* U*W+ (lower = 1) or U+W* (lower = 0) from q, plus an optional
 * contraction: the end, or 0 if no match. U* is greedy, giving back
 * characters until W+ can start (the last position up to the end of the U
 * run that holds a W character). */
static size_t o200k_word(const pretok_text *e, size_t q, size_t end, int lower) {
    size_t u = q;
    while (u < end && o200k_upper(FL(u))) u++;
    size_t w = u;
    if (lower) {
        size_t j = u + 1;
        while (j > q && !(j - 1 < end && o200k_lower(FL(j - 1)))) j--;
        if (j == q) return 0;
        w = j - 1;
    } else if (u == q) {
        return 0;
    }
    while (w < end && o200k_lower(FL(w))) w++;
    if (w < end && CP(w) == '\'') w += contraction(e, w, end, 1);
    return w;
}

static size_t m_o200k(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    uint32_t c = CP(p);
    int prefix = !is_nl(c) && !(FL(p) & (UNI_L | UNI_N)); /* [^\r\n\p{L}\p{N}]? may take p */
    for (int lower = 1; lower >= 0; lower--) {
        size_t r = prefix && p + 1 < end ? o200k_word(e, p + 1, end, lower) : 0;
        if (!r) r = o200k_word(e, p, end, lower);
        if (r) return r - p;
    }
    if (FL(p) & UNI_N) {
        size_t r = run_any(e, p, end, UNI_N) - p;
        return r < 3 ? r : 3;
    }
    size_t q = p + (c == ' ' && p + 1 < end);
    if (!(FL(q) & (UNI_WS | UNI_L | UNI_N))) {
        size_t r = run_other(e, q, end);
        while (r < end && (is_nl(CP(r)) || CP(r) == '/')) r++;
        return r - p;
    }
    size_t k = ws_newlines(e, p, end);
    return k ? k : ws_tail(e, p, end);
}

/* \p{N}{1,3} (DeepSeek-V3 stage 1) */
static size_t m_digits3(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    if (!(FL(p) & UNI_N)) {
        size_t q = p + 1;
        while (q < end && !(FL(q) & UNI_N)) q++;
        *skip = q - p; /* no match before the next number */
        return 0;
    }
    size_t r = run_any(e, p, end, UNI_N) - p;
    return r < 3 ? r : 3;
}

/* \p{N}+ and \p{N} */
static size_t m_digits(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return (FL(p) & UNI_N) ? run_any(e, p, end, UNI_N) - p : 0;
}
static size_t m_digit(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    (void)end;
    return (FL(p) & UNI_N) ? 1 : 0;
}

/* [\r\n] */
static size_t m_newline(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    (void)end;
    return is_nl(CP(p)) ? 1 : 0;
}

/* a run of code points for which in(c) holds, optionally after one \s */
static size_t ws_opt_run(const pretok_text *e, size_t p, size_t end, int (*in)(const pretok_text *, size_t)) {
    size_t q = p;
    if ((FL(p) & UNI_WS) && p + 1 < end && in(e, p + 1)) q = p + 1;
    if (!in(e, q)) return 0;
    while (q < end && in(e, q)) q++;
    return q - p;
}

/* DeepSeek-V3 stage 2 [一-龥぀-ゟ゠-ヿ]+ : CJK ideographs to U+9FA5, hiragana, katakana */
static size_t m_cjk_v3(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    size_t q = p;
    while (q < end && ((CP(q) >= 0x4E00 && CP(q) <= 0x9FA5) || (CP(q) >= 0x3040 && CP(q) <= 0x30FF))) q++;
    return q - p;
}

/* DeepSeek LLM/Coder [一-龥ࠀ-一가-퟿]+ : U+0800..U+9FA5 and U+AC00..U+D7FF */
static size_t m_cjk_ds(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    size_t q = p;
    while (q < end && ((CP(q) >= 0x800 && CP(q) <= 0x9FA5) || (CP(q) >= 0xAC00 && CP(q) <= 0xD7FF))) q++;
    return q - p;
}

/* DeepSeek-V3 stage 3:
 *   [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *    ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t m_deepseek_v3(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    uint32_t c = CP(p);
    unsigned f = FL(p);
    if (is_ascii_punct(c) && p + 1 < end && is_ascii_alpha(CP(p + 1))) {
        size_t q = p + 1;
        while (q < end && is_ascii_alpha(CP(q))) q++;
        return q - p;
    }
    if (!is_nl(c) && !(f & (UNI_L | UNI_P | UNI_S)) && p + 1 < end && (FL(p + 1) & (UNI_L | UNI_M)))
        return run_any(e, p + 1, end, UNI_L | UNI_M) - p;
    if (f & (UNI_L | UNI_M)) return run_any(e, p, end, UNI_L | UNI_M) - p;
    size_t q = p + (c == ' ' && p + 1 < end);
    if (FL(q) & (UNI_P | UNI_S)) {
        size_t r = run_any(e, q, end, UNI_P | UNI_S);
        while (r < end && is_nl(CP(r))) r++;
        return r - p;
    }
    if (f & UNI_WS) {
        size_t k = ws_newlines(e, p, end);
        return k ? k : ws_tail(e, p, end);
    }
    return 0;
}

/* DeepSeek LLM stage 2: \s?[cased letters]+ (the class in deepseek-llm's
 * tokenizer.json: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee, ...) */
static const uint32_t ds_letters[][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
    {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
    {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC},
    {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3},
    {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF},
    {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF},
    {0x1E900, 0x1E943},
};
static int in_ds_letters(const pretok_text *e, size_t i) {
    uint32_t c = CP(i);
    if (c < 0x80) return is_ascii_alpha(c);
    int lo = 0, hi = (int)(sizeof ds_letters / sizeof *ds_letters) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < ds_letters[mid][0]) hi = mid - 1;
        else if (c > ds_letters[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
static size_t m_ds_letters(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return ws_opt_run(e, p, end, in_ds_letters);
}

/* DeepSeek LLM stage 3: \s?[!-/:-~！-／：-～‘-‟　-。]+ */
static int in_ds_punct(const pretok_text *e, size_t i) {
    uint32_t c = CP(i);
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) || (c >= 0xFF01 && c <= 0xFF0F) ||
           (c >= 0xFF1A && c <= 0xFF5E) || (c >= 0x2018 && c <= 0x201F) || (c >= 0x3000 && c <= 0x3002);
}
static size_t m_ds_punct(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return ws_opt_run(e, p, end, in_ds_punct);
}

/* DeepSeek LLM stage 4: \s+$ (the piece has no newline inside: stage 1 cut them out) */
static size_t m_ws_at_end(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    if (!(FL(p) & UNI_WS)) return 0;
    size_t r = run_any(e, p, end, UNI_WS);
    if (r == end) return r - p;
    *skip = r - p; /* no position inside this run can match either */
    return 0;
}

/* DeepSeek Coder stages 2 and 3: \s?\p{L}+ and \s?\p{P}+ */
static int in_letter(const pretok_text *e, size_t i) { return (FL(i) & UNI_L) != 0; }
static int in_punct(const pretok_text *e, size_t i) { return (FL(i) & UNI_P) != 0; }
static size_t m_ws_letters(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return ws_opt_run(e, p, end, in_letter);
}
static size_t m_ws_punct(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    return ws_opt_run(e, p, end, in_punct);
}

/* Falcon stage 1, HF Punctuation(behavior contiguous): runs of ASCII
 * punctuation or \p{P} */
static size_t m_punct_run(const pretok_text *e, size_t p, size_t end, size_t *skip) {
    (void)skip;
    size_t q = p;
    while (q < end && (is_ascii_punct(CP(q)) || (FL(q) & UNI_P))) q++;
    return q - p;
}

typedef size_t (*match_fn)(const pretok_text *e, size_t p, size_t end, size_t *skip);

static const match_fn pipe_gpt2[] = {m_gpt2, NULL};
static const match_fn pipe_qwen2[] = {m_qwen2, NULL};
static const match_fn pipe_llama3[] = {m_llama3, NULL};
static const match_fn pipe_qwen35[] = {m_qwen35, NULL};
static const match_fn pipe_deepseek_llm[] = {m_newline, m_ds_letters, m_ds_punct, m_ws_at_end, m_cjk_ds, m_digits, NULL};
static const match_fn pipe_deepseek_coder[] = {m_newline, m_ws_letters, m_ws_punct, m_cjk_ds, m_digit, NULL};
static const match_fn pipe_deepseek_v3[] = {m_digits3, m_cjk_v3, m_deepseek_v3, NULL};
static const match_fn pipe_falcon[] = {m_punct_run, m_gpt2, NULL};
static const match_fn pipe_starcoder[] = {m_digit, m_gpt2, NULL};
static const match_fn pipe_o200k[] = {m_o200k, NULL};

/* Falcon, after ByteLevel: Digits(individual_digits = false) runs on the
 * byte-level characters, where the numeric ones are the bytes 0-9 and the
 * Latin-1 stand-ins ² ³ ¹ ¼ ½ ¾ (bytes B2 B3 B9 BC BD BE, which are numeric in
 * Unicode); then Split([0-9][0-9][0-9]) isolates each group of three ASCII digits. */
static int falcon_numeric(uint8_t b) {
    return (b >= '0' && b <= '9') || b == 0xB2 || b == 0xB3 || b == 0xB9 || b == 0xBC || b == 0xBD || b == 0xBE;
}
static int falcon_bytes(const uint8_t *s, size_t n, pretok_bytes_fn piece, void *user) {
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int num = falcon_numeric(s[i]);
        while (j < n && falcon_numeric(s[j]) == num) j++;
        if (!num) {
            if (piece(user, s + i, j - i)) return -1;
        } else {
            size_t g = i; /* start of the text not yet emitted */
            for (size_t k = i; k + 3 <= j;) {
                int three = 1;
                for (size_t d = k; d < k + 3; d++) three &= s[d] >= '0' && s[d] <= '9';
                if (three) {
                    if ((g < k && piece(user, s + g, k - g)) || piece(user, s + k, 3)) return -1;
                    k += 3;
                    g = k;
                } else {
                    k++;
                }
            }
            if (g < j && piece(user, s + g, j - g)) return -1;
        }
        i = j;
    }
    return 0;
}

/* Every pre-tokenizer, by its tok.pre name: the regex stages in order and,
 * for Falcon, a last stage on each piece's bytes (after ByteLevel). */
struct pretok {
    const char *name;
    const match_fn *stages; /* NULL-terminated */
    int (*bytes)(const uint8_t *s, size_t n, pretok_bytes_fn piece, void *user); /* or NULL */
};
static const pretok pretoks[] = {
    {"gpt2", pipe_gpt2, NULL},                      /* ByteLevel's own regex */
    {"gpt_neox", pipe_gpt2, NULL},
    {"mpt", pipe_gpt2, NULL},
    {"qwen2", pipe_qwen2, NULL},                    /* Split(qwen2 regex) */
    {"llama3", pipe_llama3, NULL},                  /* Split(llama3 regex): as qwen2 with digits in groups of 3 */
    {"qwen35", pipe_qwen35, NULL},                  /* Split(qwen3.5 regex): as qwen2 with combining marks in words */
    {"deepseek_llm", pipe_deepseek_llm, NULL},      /* six Splits */
    {"deepseek_coder", pipe_deepseek_coder, NULL},  /* five Splits */
    {"deepseek_v3", pipe_deepseek_v3, NULL},        /* three Splits */
    {"falcon", pipe_falcon, falcon_bytes},          /* Punctuation, ByteLevel regex; on bytes, Digits and [0-9]{3} */
    {"starcoder", pipe_starcoder, NULL},            /* Digits(individual), ByteLevel regex */
    {"refact", pipe_starcoder, NULL},
    {"o200k", pipe_o200k, NULL},                    /* Split(o200k regex): GPT-4o / gpt-oss, case-aware words */
};

int pretok_find(const char *s, size_t n, const pretok **out) {
    *out = NULL;
    if (n == 7 && memcmp(s, "default", 7) == 0) return 0; /* spm's: none */
    for (size_t k = 0; k < sizeof pretoks / sizeof *pretoks; k++)
        if (strlen(pretoks[k].name) == n && memcmp(pretoks[k].name, s, n) == 0) {
            *out = &pretoks[k];
            return 0;
        }
    return -1;
}

/* HF Split(behavior = Isolated) of code points [b, end) by stage k: the
 * matches and the gaps between them go, in order, to stage k + 1. */
static int split_stage(const pretok_text *e, const match_fn *stages, int k, size_t b, size_t end, pretok_piece_fn piece,
                       void *user) {
    if (!stages[k]) return piece(user, b, end);
    size_t gap = b, p = b;
    while (p < end) {
        size_t skip = 1;
        size_t m = stages[k](e, p, end, &skip);
        if (m) {
            if (gap < p && split_stage(e, stages, k + 1, gap, p, piece, user)) return -1;
            if (split_stage(e, stages, k + 1, p, p + m, piece, user)) return -1;
            p += m;
            gap = p;
        } else {
            p += skip;
        }
    }
    if (gap < end && split_stage(e, stages, k + 1, gap, end, piece, user)) return -1;
    return 0;
}

int pretok_split(const pretok *p, const pretok_text *text, pretok_piece_fn piece, void *user) {
    return split_stage(text, p->stages, 0, 0, text->n, piece, user);
}

int pretok_bytes(const pretok *p, const uint8_t *s, size_t n, pretok_bytes_fn piece, void *user) {
    return p->bytes ? p->bytes(s, n, piece, user) : piece(user, s, n);
}
