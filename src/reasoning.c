/* reasoning.c - the reasoning / answer split of reasoning.h. */
#include "reasoning.h"

#include <string.h>

static const char OPEN[] = "<think>", CLOSE[] = "</think>";
#define OPEN_LEN (sizeof OPEN - 1)
#define CLOSE_LEN (sizeof CLOSE - 1)

static int is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/* Where tag first occurs in s[0..n), or n. */
static size_t find(const char *s, size_t n, const char *tag, size_t t) {
    for (size_t i = 0; i + t <= n; i++)
        if (!memcmp(s + i, tag, t)) return i;
    return n;
}

/* The longest suffix of s[0..n) that is a proper prefix of tag: it may still become the tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag, size_t t) {
    for (size_t k = t - 1 < n ? t - 1 : n; k > 0; k--)
        if (!memcmp(s + n - k, tag, k)) return k;
    return 0;
}

void reasoning_init(reasoning_split *r, int in_reasoning) {
    *r = (reasoning_split){.state = in_reasoning ? 1 : 0, .trim = in_reasoning};
}

void reasoning_free(reasoning_split *r) { sb_free(&r->held); }

void reasoning_feed(reasoning_split *r, const char *s, size_t n, int last, strbuf *reasoning, strbuf *content) {
    sb_put(&r->held, s, n);
    const char *h = r->held.p;
    size_t hn = r->held.n, pos = 0;
    while (pos < hn || (last && r->state == 0)) {
        if (r->trim) {
            while (pos < hn && is_space(h[pos])) pos++;
            if (pos == hn) break;
            r->trim = 0;
        }
        if (r->state == 0) { /* does the reply open with <think> (after white space)? */
            size_t p = pos;
            while (p < hn && is_space(h[p])) p++;
            size_t rest = hn - p;
            if (rest >= OPEN_LEN && !memcmp(h + p, OPEN, OPEN_LEN)) {
                pos = p + OPEN_LEN;
                r->state = 1;
                r->trim = 1;
                continue;
            }
            if (rest < OPEN_LEN && (rest == 0 || !memcmp(h + p, OPEN, rest)) && !last) break; /* undecided */
            r->state = 2;
            continue;
        }
        if (r->state == 1) {
            size_t c = pos + find(h + pos, hn - pos, CLOSE, CLOSE_LEN);
            if (c < hn) {
                sb_put(reasoning, h + pos, c - pos);
                pos = c + CLOSE_LEN;
                r->state = 2;
                r->trim = 1;
                continue;
            }
            size_t keep = last ? 0 : partial_tag(h + pos, hn - pos, CLOSE, CLOSE_LEN);
            sb_put(reasoning, h + pos, hn - pos - keep);
            pos = hn - keep;
            break;
        }
        sb_put(content, h + pos, hn - pos);
        pos = hn;
    }
    if (r->held.p) {
        memmove(r->held.p, h + pos, hn - pos);
        r->held.n = hn - pos;
        r->held.p[r->held.n] = 0;
    }
}

int reasoning_prompt_open(const char *prompt, size_t n) {
    size_t open = n; /* the last <think> */
    for (size_t i = 0; i + OPEN_LEN <= n; i++)
        if (!memcmp(prompt + i, OPEN, OPEN_LEN)) open = i;
    if (open == n) return 0;
    return find(prompt + open, n - open, CLOSE, CLOSE_LEN) == n - open;
}
