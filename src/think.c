/* think.c - splitting a streamed reply at <think> / </think> (think.h). */
#include "think.h"

#include <string.h>

/* The last occurrence of needle in s[0..n), or NULL. */
static const char *last_of(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

void think_split_init(think_split *t, const char *prompt, size_t len) {
    memset(t, 0, sizeof *t);
    const char *open = last_of(prompt, len, THINK_OPEN), *close = last_of(prompt, len, THINK_CLOSE);
    t->in_think = open && (!close || open > close);
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of marker. */
static size_t partial_marker(const char *s, size_t n, const char *marker) {
    size_t k = strlen(marker);
    for (size_t m = n < k - 1 ? n : k - 1; m > 0; m--)
        if (!memcmp(s + n - m, marker, m)) return m;
    return 0;
}

/* Scan s[0..n) (the held tail first, then the new piece): emit up to and including each marker,
 * switching state at it; keep a tail that may begin the next marker. */
static void scan(think_split *t, const char *s, size_t n, think_emit emit, void *user) {
    while (n > 0) {
        const char *marker = t->in_think ? THINK_CLOSE : THINK_OPEN;
        size_t k = strlen(marker), at = n;
        for (size_t i = 0; i + k <= n; i++)
            if (!memcmp(s + i, marker, k)) {
                at = i;
                break;
            }
        if (at == n) { /* no whole marker: emit all but a tail that may start one */
            size_t tail = partial_marker(s, n, marker);
            if (n > tail) emit(user, s, n - tail, t->in_think);
            memcpy(t->held, s + n - tail, tail);
            t->n_held = tail;
            return;
        }
        if (at > 0) emit(user, s, at, t->in_think);
        emit(user, s + at, k, 1);
        t->in_think = !t->in_think;
        s += at + k;
        n -= at + k;
    }
}

void think_split_push(think_split *t, const char *s, size_t n, think_emit emit, void *user) {
    /* the held tail is shorter than a marker, so joining it with at most a marker's worth of the
     * piece decides it; the rest of the piece is scanned in place */
    while (t->n_held > 0 && n > 0) {
        char buf[2 * sizeof t->held];
        size_t take = n < sizeof t->held ? n : sizeof t->held;
        memcpy(buf, t->held, t->n_held);
        memcpy(buf + t->n_held, s, take);
        size_t len = t->n_held + take;
        t->n_held = 0;
        scan(t, buf, len, emit, user);
        s += take;
        n -= take;
    }
    scan(t, s, n, emit, user);
}

void think_split_flush(think_split *t, think_emit emit, void *user) {
    if (t->n_held) emit(user, t->held, t->n_held, t->in_think);
    t->n_held = 0;
}
