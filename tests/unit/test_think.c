/* test_think.c - the reasoning / answer split of a streamed reply (src/think.c).
 * Each case's expected spans are written out by hand; then every way of cutting
 * each text into pieces must give the same spans as feeding it whole. */
#include "think.h"
#include "test_util.h"

/* What the emitter saw, as text with the reasoning between [ and ]. */
typedef struct {
    char out[512];
    size_t n;
    int spans;
} sink;

static void collect(void *user, const char *text, size_t n, int reasoning) {
    sink *k = user;
    CHECK(n > 0, "an empty span");
    if (k->n + n + 3 >= sizeof k->out) return;
    if (reasoning) k->out[k->n++] = '[';
    memcpy(k->out + k->n, text, n);
    k->n += n;
    if (reasoning) k->out[k->n++] = ']';
    k->out[k->n] = 0;
    k->spans++;
}

/* Merge "][" so that spans cut at different places compare equal. */
static void merge(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == ']' && r[1] == '[') {
            r++;
            continue;
        }
        *w++ = *r;
    }
    *w = 0;
}

/* Feed text in pieces of `piece` bytes (0 = whole) after prompt; the merged result. */
static void run(const char *prompt, const char *text, size_t piece, char *got, size_t cap) {
    think_split t;
    think_split_init(&t, prompt, strlen(prompt));
    sink k = {{0}, 0, 0};
    size_t n = strlen(text), step = piece ? piece : (n ? n : 1);
    for (size_t i = 0; i < n; i += step) think_split_push(&t, text + i, n - i < step ? n - i : step, collect, &k);
    think_split_flush(&t, collect, &k);
    merge(k.out);
    snprintf(got, cap, "%s", k.out);
}

static void expect(const char *prompt, const char *text, const char *want) {
    char got[512];
    size_t n = strlen(text);
    for (size_t piece = 0; piece <= n; piece++) {
        run(prompt, text, piece, got, sizeof got);
        CHECK(!strcmp(got, want), "prompt [%s] text [%s] in pieces of %zu: [%s], want [%s]", prompt, text, piece, got,
              want);
    }
}

/* Pieces of uneven sizes (1, 2, 3, 1, 2, 3, ...) too. */
static void expect_uneven(const char *text, const char *want) {
    think_split t;
    think_split_init(&t, "", 0);
    sink k = {{0}, 0, 0};
    size_t n = strlen(text), i = 0, step = 1;
    while (i < n) {
        size_t m = n - i < step ? n - i : step;
        think_split_push(&t, text + i, m, collect, &k);
        i += m;
        step = step % 3 + 1;
    }
    think_split_flush(&t, collect, &k);
    merge(k.out);
    CHECK(!strcmp(k.out, want), "uneven [%s]: [%s], want [%s]", text, k.out, want);
}

int main(void) {
    expect("", "", "");
    expect("", "plain answer", "plain answer");
    expect("", "<think>why</think>answer", "[<think>why</think>]answer");
    expect("", "<think>\nA\n</think>\n\nB", "[<think>\nA\n</think>]\n\nB");
    expect("", "a<think>b</think>c<think>d</think>e", "a[<think>b</think>]c[<think>d</think>]e");
    /* near misses stay answer text; a tail that only looked like a marker is released at the end */
    expect("", "<thin", "<thin");
    expect("", "<thinx>y", "<thinx>y");
    expect("", "<<think>x", "<[<think>x]");
    expect("", "a</think>b", "a</think>b");
    expect("", "1 < 2 <th", "1 < 2 <th");
    /* an unclosed reasoning runs to the end; a partial close marker inside it stays reasoning */
    expect("", "<think>still thinking</thi", "[<think>still thinking</thi]");
    expect("", "<think>a</thinker>b</think>c", "[<think>a</thinker>b</think>]c");
    /* the prompt decides where the reply starts */
    expect("<|im_start|>assistant\n<think>\n", "because</think>so", "[because</think>]so");
    expect("<think>\n\n</think>\n\n", "answer", "answer");
    expect("<think>a</think> then <think>", "b</think>c", "[b</think>]c");
    expect("no markers", "x<think>", "x[<think>]");
    /* multi-byte text around the markers */
    expect("", "\xc3\xa9<think>\xe2\x96\x81</think>\xc3\xa9", "\xc3\xa9[<think>\xe2\x96\x81</think>]\xc3\xa9");
    expect_uneven("ab<think>cd</think>ef<think>g", "ab[<think>cd</think>]ef[<think>g]");
    expect_uneven("<<<think>>></think></think>", "<<[<think>>></think>]</think>");
    /* gpt-oss (harmony): the analysis channel is reasoning up to the final channel's header */
    expect("<|start|>assistant", "<|channel|>analysis<|message|>why<|end|><|start|>assistant<|channel|>final<|message|>42",
           "[<|channel|>analysis<|message|>why<|end|><|start|>assistant<|channel|>final<|message|>]42");
    expect("", "<|channel|>final<|message|>only", "<|channel|>final<|message|>only");
    expect("", "<|channel|>analy", "<|channel|>analy");
    expect("", "<|channel|>analysis<|message|>a<think>b", "[<|channel|>analysis<|message|>a<think>b]");
    expect("<|start|>assistant<|channel|>analysis<|message|>", "hm<|end|><|start|>assistant<|channel|>final<|message|>x",
           "[hm<|end|><|start|>assistant<|channel|>final<|message|>]x");
    expect("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>final<|message|>b<|return|>", "c", "c");
    expect_uneven("a<|channel|>analysis<|message|>b<|channel|>final<|message|>c<think>d</think>e",
                  "a[<|channel|>analysis<|message|>b<|channel|>final<|message|>]c[<think>d</think>]e");
    return test_summary("test_think");
}
