/* think.c - splitting a streamed reply at its reasoning markers (think.h). */
#include "think.h"

#include <string.h>

/* The reasoning markers, by kind: <think> ... </think>, and gpt-oss's harmony
 * analysis channel. A harmony reply reads
 *   <|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...
 * so the reasoning closes at the final channel's header, which hides the
 * message header between the two channels with it. */
static const struct {
    const char *open, *close;
} MARKERS[] = {
    {THINK_OPEN, THINK_CLOSE},
    {"<|channel|>analysis<|message|>", "<|channel|>final<|message|>"},
};
enum { N_KINDS = sizeof MARKERS / sizeof MARKERS[0] };

/* The last occurrence of needle in s[0..n), or NULL. */
static const char *last_of(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

void think_split_init(think_split *t, const char *prompt, size_t len) {
    memset(t, 0, sizeof *t);
    const char *latest = NULL;
    for (int kind = 0; kind < N_KINDS; kind++) {
        const char *open = last_of(prompt, len, MARKERS[kind].open);
        const char *close = last_of(prompt, len, MARKERS[kind].close);
        if (open && (!close || open > close) && open > latest) {
            latest = open;
            t->in_think = 1;
            t->kind = kind;
        }
    }
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of marker. */
static size_t partial_marker(const char *s, size_t n, const char *marker) {
    size_t k = strlen(marker);
    for (size_t m = n < k - 1 ? n : k - 1; m > 0; m--)
        if (!memcmp(s + n - m, marker, m)) return m;
    return 0;
}

/* The first marker in s[0..n) that switches the state (a close of the open
 * kind, or any kind's open): its offset (n: none), length and kind. */
static size_t next_marker(const think_split *t, const char *s, size_t n, size_t *len, int *kind) {
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < N_KINDS; k++) {
            if (t->in_think && k != t->kind) continue;
            const char *m = t->in_think ? MARKERS[k].close : MARKERS[k].open;
            size_t mk = strlen(m);
            if (i + mk <= n && !memcmp(s + i, m, mk)) {
                *len = mk;
                *kind = k;
                return i;
            }
        }
    return n;
}

/* The longest tail of s[0..n) that may begin a marker that switches the state. */
static size_t partial_any(const think_split *t, const char *s, size_t n) {
    size_t tail = 0;
    for (int k = 0; k < N_KINDS; k++) {
        if (t->in_think && k != t->kind) continue;
        size_t m = partial_marker(s, n, t->in_think ? MARKERS[k].close : MARKERS[k].open);
        if (m > tail) tail = m;
    }
    return tail;
}

/* Scan s[0..n) (the held tail first, then the new piece): emit up to and including each marker,
 * switching state at it; keep a tail that may begin the next marker. */
static void scan(think_split *t, const char *s, size_t n, think_emit emit, void *user) {
    while (n > 0) {
        size_t k = 0;
        int kind = 0;
        size_t at = next_marker(t, s, n, &k, &kind);
        if (at == n) { /* no whole marker: emit all but a tail that may start one */
            size_t tail = partial_any(t, s, n);
            if (n > tail) emit(user, s, n - tail, t->in_think);
            memcpy(t->held, s + n - tail, tail);
            t->n_held = tail;
            return;
        }
        if (at > 0) emit(user, s, at, t->in_think);
        emit(user, s + at, k, 1);
        t->in_think = !t->in_think;
        t->kind = kind;
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
