/* test_reasoning.c - the reasoning / answer split (src/reasoning.c): each
 * reply is fed whole, byte by byte and in pieces of every size, and must give
 * the same two parts, worked out by hand from the rule in reasoning.h. */
#include "reasoning.h"
#include "test_util.h"

typedef struct {
    int in_reasoning;
    const char *reply, *reasoning, *content;
} split_case;

static const split_case CASES[] = {
    {0, "<think>\nI plan.\n</think>\n\nAnswer.", "I plan.\n", "Answer."},
    {1, "I plan.\n</think>\n\nAnswer.", "I plan.\n", "Answer."},
    {1, "\n\nI plan.</think>Answer. </think> ok", "I plan.", "Answer. </think> ok"},
    {0, "  \n<think>r</think>a", "r", "a"},
    {0, "Hello <think>x</think>", "", "Hello <think>x</think>"}, /* not at the start: no split */
    {0, "  <thi", "", "  <thi"},                                 /* undecided until the end: an answer */
    {0, "<thinking>", "", "<thinking>"},
    {0, "<think>abc</thi", "abc</thi", ""},                       /* never closed */
    {0, "\n\n", "", "\n\n"},
    {0, "", "", ""},
    {0, "<think></think>", "", ""},
    {1, "a</think>b</think>c", "a", "b</think>c"},
    {1, "x <</think>", "x <", ""},
};

/* Feed reply in pieces of `step` bytes (0: whole). */
static void run(const split_case *c, size_t step, strbuf *rs, strbuf *ct) {
    reasoning_split r;
    reasoning_init(&r, c->in_reasoning);
    size_t n = strlen(c->reply);
    if (!step) step = n ? n : 1;
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        size_t before = rs->n;
        reasoning_feed(&r, c->reply + i, k, 0, rs, ct);
        /* nothing decided early may be a piece of a tag */
        CHECK(!(rs->n > before && rs->p[rs->n - 1] == '<' && strstr(c->reasoning, "<") == NULL),
              "'%s' step %zu: a '<' left early", c->reply, step);
    }
    reasoning_feed(&r, "", 0, 1, rs, ct);
    reasoning_free(&r);
}

#define OPEN_(s) reasoning_prompt_open(s, strlen(s))

int main(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        const split_case *c = &CASES[i];
        for (size_t step = 0; step <= 9; step++) {
            strbuf rs = {0}, ct = {0};
            sb_put(&rs, "", 0); /* an empty result is "", not NULL */
            sb_put(&ct, "", 0);
            run(c, step, &rs, &ct);
            CHECK(!strcmp(rs.p, c->reasoning), "'%s' step %zu: reasoning '%s', want '%s'", c->reply, step, rs.p,
                  c->reasoning);
            CHECK(!strcmp(ct.p, c->content), "'%s' step %zu: content '%s', want '%s'", c->reply, step, ct.p, c->content);
            sb_free(&rs);
            sb_free(&ct);
        }
    }
    CHECK(OPEN_("<|im_start|>assistant\n<think>\n"), "open at the end");
    CHECK(!OPEN_("<think>\n\n</think>\n\n"), "closed (thinking off)");
    CHECK(!OPEN_("no tags"), "no tags");
    CHECK(OPEN_("<think>a</think><think>"), "the last one is open");
    CHECK(!OPEN_("<think"), "half a tag");
    return test_summary("test_reasoning");
}
