/* test_delta_rule.c - the chunked gated delta rule (prefill) computes what
 * the recurrent one (decode) does.
 *
 * On random heads (L2-normalised q and k as deltanet.c gives them, q scaled
 * by dk^-1/2, v in [-1, 1], beta in (0, 1), log decay g in [-2, 0] or, for
 * one case, down to -60 so e^G underflows inside a chunk) from a random
 * nonzero state, for n = 1, 63, 64, 65, 200 and several (dk, dv):
 *   - both float paths against the recurrence run in double precision
 *     (written here independently from the formula in delta_rule.h):
 *     outputs and final state within TOL;
 *   - chunked against recurrent directly within TOL;
 *   - prefill then decode: the first tokens chunked, the rest recurrent,
 *     equals the whole run recurrent (the state hand-over);
 * with the scalar kernel set and the machine's best one (dot and axpy).
 * A negative control proves the comparison can fail: a chunked run with one
 * token's decay changed (the state nearly forgotten there) moves the outputs
 * far beyond TOL. */
#include <stdio.h>
#include <stdlib.h>

#include "delta_rule.h"
#include "test_util.h"

/* worst |error| seen at these sizes (values and state of order 1): 1e-6;
 * the bound leaves room for other compilers' contractions */
#define TOL 2e-5

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static float uniform(void) { /* [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0));
}

typedef struct {
    int n, dk, dv, stride; /* tokens, dims; q|k|v rows stride floats apart */
    float *qkv, *beta, *g, *S0;
} head_case;

static void normalise(float *x, int n, float scale) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] * scale / sqrt(ss + 1e-6));
}

static head_case make_case(int n, int dk, int dv, float g_min) {
    head_case c = {.n = n, .dk = dk, .dv = dv, .stride = 2 * dk + dv + 3}; /* odd padding: rows not packed */
    c.qkv = malloc(sizeof(float) * (size_t)n * c.stride);
    c.beta = malloc(sizeof(float) * (size_t)n);
    c.g = malloc(sizeof(float) * (size_t)n);
    c.S0 = malloc(sizeof(float) * (size_t)dk * dv);
    for (int t = 0; t < n; t++) {
        float *r = c.qkv + (size_t)t * c.stride;
        for (int i = 0; i < c.stride; i++) r[i] = 2 * uniform() - 1;
        normalise(r, dk, 1.0f / sqrtf((float)dk));
        normalise(r + dk, dk, 1.0f);
        c.beta[t] = 0.02f + 0.96f * uniform();
        c.g[t] = g_min * uniform();
    }
    for (int i = 0; i < dk * dv; i++) c.S0[i] = 2 * uniform() - 1;
    return c;
}

static void free_case(head_case *c) { free(c->qkv), free(c->beta), free(c->g), free(c->S0); }

static delta_head view(const head_case *c, int t0, float *o) {
    const float *r = c->qkv + (size_t)t0 * c->stride;
    return (delta_head){.q = r, .k = r + c->dk, .v = r + 2 * c->dk, .qkv_stride = (size_t)c->stride,
                        .beta = c->beta + t0, .g = c->g + t0, .gate_stride = 1, .o = o, .o_stride = (size_t)c->dv};
}

/* S_t = e^g S + k u^T, u = beta (v - e^g S^T k), o = S_t^T q, in double;
 * S (dk, dv) stored transposed as delta_rule.h keeps it */
static void recurrent_double(const head_case *c, double *S, double *o) {
    int dk = c->dk, dv = c->dv;
    for (int i = 0; i < dk * dv; i++) S[i] = c->S0[i];
    double *u = malloc(sizeof(double) * dv);
    for (int t = 0; t < c->n; t++) {
        const float *q = c->qkv + (size_t)t * c->stride, *k = q + dk, *v = q + 2 * dk;
        double d = exp((double)c->g[t]);
        for (int j = 0; j < dv; j++) {
            double sk = 0;
            for (int i = 0; i < dk; i++) sk += S[j * dk + i] * k[i];
            u[j] = c->beta[t] * (v[j] - d * sk);
        }
        for (int i = 0; i < dk; i++)
            for (int j = 0; j < dv; j++) S[j * dk + i] = d * S[j * dk + i] + k[i] * u[j];
        for (int j = 0; j < dv; j++) {
            double s = 0;
            for (int i = 0; i < dk; i++) s += S[j * dk + i] * q[i];
            o[(size_t)t * dv + j] = s;
        }
    }
    free(u);
}

static double max_diff_f(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) { /* !(x <= m): a NaN difference is kept (fmax would drop it) */
        double x = fabs((double)a[i] - b[i]);
        if (!(x <= m)) m = x;
    }
    return m;
}
static double max_diff_d(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) { /* !(x <= m): a NaN difference is kept (fmax would drop it) */
        double x = fabs((double)a[i] - b[i]);
        if (!(x <= m)) m = x;
    }
    return m;
}

/* Run c through `chunked_upto` tokens chunked and the rest recurrent. */
static void run_split(const kernel_set *ks, const head_case *c, int chunked_upto, float *S, float *o, float *scratch) {
    memcpy(S, c->S0, sizeof(float) * (size_t)c->dk * c->dv);
    delta_head a = view(c, 0, o), b = view(c, chunked_upto, o + (size_t)chunked_upto * c->dv);
    if (chunked_upto) delta_rule_chunked(ks, S, c->dk, c->dv, chunked_upto, &a, scratch);
    if (c->n > chunked_upto) delta_rule_recurrent(ks, S, c->dk, c->dv, c->n - chunked_upto, &b, scratch);
}

static double worst_seen = 0;

static void check_case(const kernel_set *ks, int n, int dk, int dv, float g_min) {
    head_case c = make_case(n, dk, dv, g_min);
    size_t ns = (size_t)dk * dv, no = (size_t)n * dv;
    double *Sd = malloc(sizeof(double) * ns), *od = malloc(sizeof(double) * no);
    float *Sr = malloc(sizeof(float) * ns), *or_ = malloc(sizeof(float) * no);
    float *Sc = malloc(sizeof(float) * ns), *oc = malloc(sizeof(float) * no);
    float *scratch = malloc(sizeof(float) * delta_rule_scratch_floats(dk, dv));
    char what[160];
    recurrent_double(&c, Sd, od);

    run_split(ks, &c, 0, Sr, or_, scratch); /* all recurrent */
    run_split(ks, &c, n, Sc, oc, scratch);  /* all chunked */
    double e[4] = {max_diff_d(or_, od, no), max_diff_d(Sr, Sd, ns), max_diff_d(oc, od, no), max_diff_d(Sc, Sd, ns)};
    const char *names[4] = {"recurrent o", "recurrent S", "chunked o", "chunked S"};
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "%s %s vs double, n %d dk %d dv %d g_min %g", ks->name, names[i], n, dk, dv, g_min);
        CHECK(e[i] <= TOL, "%s: %.3g", what, e[i]);
        worst_seen = fmax(worst_seen, e[i]);
    }
    double d = max_diff_f(oc, or_, no);
    CHECK(d <= TOL, "%s chunked vs recurrent o, n %d dk %d dv %d: %.3g", ks->name, n, dk, dv, d);

    /* prefill (chunked) then decode (recurrent) against all recurrent */
    int cut = n > 1 ? n * 2 / 3 : 1;
    run_split(ks, &c, cut, Sc, oc, scratch);
    d = fmax(max_diff_f(oc, or_, no), max_diff_f(Sc, Sr, ns));
    CHECK(d <= TOL, "%s chunked %d then recurrent %d vs recurrent, dk %d dv %d: %.3g", ks->name, cut, n - cut, dk, dv, d);

    free_case(&c), free(Sd), free(od), free(Sr), free(or_), free(Sc), free(oc), free(scratch);
}

/* The comparison can fail: one decay changed in the middle of a chunk. */
static void negative_control(const kernel_set *ks) {
    head_case c = make_case(100, 16, 16, -2.0f);
    size_t no = (size_t)c.n * c.dv;
    double *Sd = malloc(sizeof(double) * 256), *od = malloc(sizeof(double) * no);
    float *S = malloc(sizeof(float) * 256), *o = malloc(sizeof(float) * no);
    float *scratch = malloc(sizeof(float) * delta_rule_scratch_floats(16, 16));
    recurrent_double(&c, Sd, od);
    c.g[70] = -10.0f;
    run_split(ks, &c, c.n, S, o, scratch);
    CHECK(max_diff_d(o, od, no) > 100 * TOL, "a changed decay must move the outputs: %.3g", max_diff_d(o, od, no));
    free_case(&c), free(Sd), free(od), free(S), free(o), free(scratch);
}

int main(void) {
    const kernel_set *sets[2] = {kernels_scalar(), kernels_get()};
    int n_sets = sets[1] == sets[0] ? 1 : 2;
    static const int ns[] = {1, 2, 63, 64, 65, 200};
    static const int dims[][2] = {{128, 128}, {16, 32}, {32, 16}, {5, 7}};
    for (int s = 0; s < n_sets; s++) {
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) check_case(sets[s], ns[i], dims[d][0], dims[d][1], -2.0f);
        check_case(sets[s], 200, 32, 32, -60.0f); /* e^G underflows to 0 inside a chunk */
        negative_control(sets[s]);
    }
    printf("worst |error| vs double: %.3g (tolerance %.0e)\n", worst_seen, TOL);
    return test_summary("test_delta_rule");
}
