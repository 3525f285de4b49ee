/* strbuf.h - a growable byte buffer with a size limit, for writers that
 * build text (json.c, jinja.c). Header-only.
 *
 * A failed append (out of memory, or past the limit) sets `failed` and leaves
 * the contents as they were; writers check it once at the end, so the many
 * small appends of a serializer need no error path each. */
#ifndef MOE_STRBUF_H
#define MOE_STRBUF_H

#include <stdlib.h>
#include <string.h>

typedef struct strbuf {
    char *p;         /* (cap) bytes, p[n] = 0 whenever p != NULL */
    size_t n, cap;
    size_t limit;    /* most bytes it may hold; 0 = no limit */
    int failed;      /* 1: out of memory, 2: over the limit */
} strbuf;

static inline int sb_reserve(strbuf *b, size_t extra) {
    if (b->failed) return -1;
    if (extra > (size_t)-1 / 2 - b->n || (b->limit && b->n + extra > b->limit)) {
        b->failed = 2;
        return -1;
    }
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void sb_put(strbuf *b, const void *s, size_t n) {
    if (sb_reserve(b, n)) return;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static inline void sb_putc(strbuf *b, char c) { sb_put(b, &c, 1); }
static inline void sb_free(strbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->failed = 0;
}

#endif /* MOE_STRBUF_H */
