/* unicode.c - UTF-8, character classes and NFC over the generated tables.
 * See unicode.h. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- UTF-8 */

int utf8_lead_len(uint8_t b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

uint32_t utf8_decode(const uint8_t *s, size_t n, int *len) {
    uint8_t b = s[0];
    *len = 1;
    if (b < 0x80) return b;
    int need = utf8_lead_len(b);
    if (need == 0 || (size_t)need > n) return UNI_BAD_BASE + b;
    /* the second byte's range depends on the lead (no overlongs, surrogates, > U+10FFFF) */
    uint8_t lo = 0x80, hi = 0xBF;
    if (b == 0xE0) lo = 0xA0;
    else if (b == 0xED) hi = 0x9F;
    else if (b == 0xF0) lo = 0x90;
    else if (b == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return UNI_BAD_BASE + b;
    uint32_t cp;
    if (need == 2) {
        cp = ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
    } else if (need == 3) {
        if ((s[2] & 0xC0) != 0x80) return UNI_BAD_BASE + b;
        cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    } else {
        if ((s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return UNI_BAD_BASE + b;
        cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
             (s[3] & 0x3F);
    }
    *len = need;
    return cp;
}

int utf8_encode(uint32_t cp, uint8_t *out) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------- classes */

/* Value of the run containing cp in a (first << 8) | value run table. */
static unsigned run_lookup(const uint32_t *runs, int count, uint32_t cp) {
    int lo = 0, hi = count - 1; /* runs[0] starts at 0 */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((runs[mid] >> 8) <= cp) lo = mid;
        else hi = mid - 1;
    }
    return runs[lo] & 0xFF;
}

/* ASCII is by far the most common input: answer it from a small table built
 * from the same data (a const table below, checked by the unit test). */
static const uint8_t ascii_flags[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 32, 32, 32, 32, 0, 0,      /* \t \n \v \f \r */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    32, 4, 4, 4, 8, 4, 4, 4, 4, 4, 4, 8, 4, 4, 4, 4,          /* space ! " # $ % & ' ( ) * + , - . / */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 8, 8, 8, 4,           /* 0-9 : ; < = > ? */
    4, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65,                  /* @ A-O (L | Lu) */
    65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 65, 4, 4, 4, 8, 4,                      /* P-Z [ \ ] ^ _ */
    8, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129,   /* ` a-o (L | Ll) */
    129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 129, 4, 8, 4, 8, 0,           /* p-z { | } ~ DEL */
};

unsigned uni_flags(uint32_t cp) {
    if (cp < 128) return ascii_flags[cp];
    if (cp >= 0x110000) return 0;
    return run_lookup(uni_class_runs, uni_class_count, cp);
}

unsigned uni_ccc(uint32_t cp) {
    if (cp < 0x300 || cp >= 0x110000) return 0;
    return run_lookup(uni_ccc_runs, uni_ccc_count, cp);
}

/* ---------------------------------------------------------------- NFC */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28,
       NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

/* Full canonical decomposition of cp into out (room for 4); returns the count. */
static int decompose(uint32_t cp, uint32_t *out) {
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        out[0] = LBASE + s / NCOUNT;
        out[1] = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT) {
            out[2] = TBASE + s % TCOUNT;
            return 3;
        }
        return 2;
    }
    if (cp >= 0xC0 && cp < 0x110000) {
        int lo = 0, hi = uni_decomp_count - 1;
        while (lo <= hi) {
            int mid = (lo + hi) / 2;
            uint32_t key = (uint32_t)(uni_decomp[mid] >> 16);
            if (key == cp) {
                int off = (int)((uni_decomp[mid] >> 3) & 0x1FFF), len = (int)(uni_decomp[mid] & 7);
                for (int i = 0; i < len; i++) out[i] = uni_decomp_pool[off + i];
                return len;
            }
            if (key < cp) lo = mid + 1;
            else hi = mid - 1;
        }
    }
    out[0] = cp;
    return 1;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    if (a >= 0x110000 || b >= 0x110000) return 0;
    uint64_t key = ((uint64_t)a << 21) | b;
    int lo = 0, hi = uni_comp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (uni_comp_keys[mid] == key) return uni_comp_vals[mid];
        if (uni_comp_keys[mid] < key) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

int uni_nfc_quick(const uint8_t *in, size_t n) {
    /* Bytes below 0xCC are ASCII, continuation bytes, or leads of U+0000..U+02FF,
     * which hold no combining marks; a text without any lead >= 0xCC has no
     * character that could decompose, combine or be reordered. */
    for (size_t i = 0; i < n; i++)
        if (in[i] >= 0xCC) return 0;
    return 1;
}

/* Stable sort of a run of combining marks by ccc: insertion sort for short
 * runs, a counting sort for long ones (no quadratic time on hostile input). */
static int sort_marks(uint32_t *cp, uint8_t *cc, size_t n, uint32_t *tmp_cp, uint8_t *tmp_cc) {
    if (n < 2) return 0;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            uint32_t c = cp[i];
            uint8_t k = cc[i];
            size_t j = i;
            while (j > 0 && cc[j - 1] > k) {
                cp[j] = cp[j - 1];
                cc[j] = cc[j - 1];
                j--;
            }
            cp[j] = c;
            cc[j] = k;
        }
        return 0;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[cc[i] + 1]++;
    for (int k = 1; k < 257; k++) start[k] += start[k - 1];
    for (size_t i = 0; i < n; i++) {
        size_t at = start[cc[i]]++;
        tmp_cp[at] = cp[i];
        tmp_cc[at] = cc[i];
    }
    memcpy(cp, tmp_cp, n * sizeof *cp);
    memcpy(cc, tmp_cc, n);
    return 0;
}

static int grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2) return -1;
        c *= 2;
    }
    uint8_t *p = realloc(*buf, c);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* NFC of one chunk in[0..n), appended to *buf at *pos. *w is a work buffer of
 * 3 * *wcap words, grown here: decomposed code points (at most 4 per input byte),
 * sort scratch, and the combining classes with their scratch, one byte each. */
static int nfc_chunk(const uint8_t *in, size_t n, uint8_t **buf, size_t *cap, size_t *pos, uint32_t **w,
                     size_t *wcap) {
    size_t maxcp = 4 * n + 4;
    if (maxcp > *wcap) {
        if (maxcp > SIZE_MAX / (3 * sizeof(uint32_t))) return -1;
        uint32_t *p = realloc(*w, maxcp * 3 * sizeof(uint32_t));
        if (!p) return -1;
        *w = p;
        *wcap = maxcp;
    }
    uint32_t *cp = *w, *tmp_cp = *w + maxcp;
    uint8_t *cc = (uint8_t *)(*w + 2 * maxcp), *tmp_cc = cc + maxcp;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t c = utf8_decode(in + i, n - i, &len);
        i += (size_t)len;
        uint32_t d[4];
        int k = c >= UNI_BAD_BASE ? (d[0] = c, 1) : decompose(c, d);
        for (int j = 0; j < k; j++) {
            cp[m] = d[j];
            cc[m] = (uint8_t)uni_ccc(d[j]);
            m++;
        }
    }
    /* canonical ordering: sort each maximal run of non-starters by ccc */
    for (size_t i = 0; i < m;) {
        if (cc[i] == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < m && cc[j] != 0) j++;
        sort_marks(cp + i, cc + i, j - i, tmp_cp, tmp_cc);
        i = j;
    }
    /* canonical composition, in place */
    size_t out = 0;
    size_t starter = SIZE_MAX; /* output index of the last starter */
    int last_cc = 0;           /* ccc of the last character written */
    for (size_t i = 0; i < m; i++) {
        uint32_t c = cp[i];
        int k = cc[i];
        if (starter != SIZE_MAX && cp[starter] < UNI_BAD_BASE && c < UNI_BAD_BASE) {
            /* c is not blocked from the starter: nothing in between, or everything
             * in between has a lower non-zero class (they are sorted, so the last) */
            if (starter == out - 1 || (last_cc != 0 && last_cc < k)) {
                uint32_t comp = compose(cp[starter], c);
                if (comp) {
                    cp[starter] = comp;
                    continue;
                }
            }
        }
        cp[out] = c;
        cc[out] = (uint8_t)k;
        out++;
        if (k == 0) starter = out - 1;
        last_cc = k;
    }
    if (grow(buf, cap, *pos + 4 * out + 1)) return -1;
    for (size_t i = 0; i < out; i++) {
        if (cp[i] >= UNI_BAD_BASE) (*buf)[(*pos)++] = (uint8_t)(cp[i] - UNI_BAD_BASE);
        else *pos += (size_t)utf8_encode(cp[i], *buf + *pos);
    }
    return 0;
}

size_t uni_nfc(const uint8_t *in, size_t n, uint8_t **buf, size_t *cap) {
    if (uni_nfc_quick(in, n)) {
        if (grow(buf, cap, n + 1)) return (size_t)-1;
        if (n) memcpy(*buf, in, n);
        return n;
    }
    if (n > SIZE_MAX / 32) return (size_t)-1;
    /* An ASCII character never composes with what precedes it and is never
     * reordered, so NFC(a + b) = NFC(a) + NFC(b) when b starts with one: work in
     * chunks of about 4 KiB cut before an ASCII byte, to bound the work buffer. */
    uint32_t *w = NULL;
    size_t wcap = 0, pos = 0;
    int fail = grow(buf, cap, n + 1);
    for (size_t i = 0; i < n && !fail;) {
        size_t j = i + 4096 < n ? i + 4096 : n;
        while (j < n && in[j] >= 0x80) j++;
        fail = nfc_chunk(in + i, j - i, buf, cap, &pos, &w, &wcap);
        i = j;
    }
    free(w);
    return fail ? (size_t)-1 : pos;
}
