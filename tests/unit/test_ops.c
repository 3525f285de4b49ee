/* test_ops.c - the vector operations against their definitions: exp_fast
 * against libm's expf over its whole range, softmax_fast against softmax,
 * swiglu, silu and mul_silu against silu(g) * u with expf. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops.h"
#include "test_util.h"

/* distance in float ulps (same sign, finite) */
static double ulps(float a, float b) {
    if (a == b) return 0.0;
    double scale = ldexp(1.0, ilogb(b) - 23);
    return fabs((double)a - (double)b) / scale;
}

static void test_exp(void) {
    double worst = 0.0;
    float at = 0.0f;
    int n = 0;
    for (float x = -87.0f; x <= 88.3f; x += 0.000731f, n++) {
        double u = ulps(exp_fast(x), expf(x));
        if (u > worst) worst = u, at = x;
    }
    printf("exp_fast: worst %.2f ulps of expf (at %g) over %d points in [-87, 88.3]\n", worst, at, n);
    CHECK(worst <= 2.0, "exp_fast within 2 ulps of expf");
    CHECK(exp_fast(0.0f) == 1.0f, "exp(0) = 1 exactly");
    CHECK(exp_fast(-100.0f) == 0.0f && exp_fast(-INFINITY) == 0.0f, "exp of very negative values is 0");
    CHECK(isinf(exp_fast(100.0f)) && isinf(exp_fast(INFINITY)), "exp of large values is inf");
    CHECK(isnan(exp_fast(NAN)), "exp(NaN) is NaN");
}

static void test_softmax(void) {
    for (int n = 1; n <= 70; n += 3) {
        float a[70], b[70];
        for (int i = 0; i < n; i++) a[i] = b[i] = (float)((i * 37 % 23) - 11) * 0.9f;
        softmax(a, n);
        softmax_fast(b, n);
        float sum = 0.0f, err = 0.0f;
        for (int i = 0; i < n; i++) {
            sum += b[i];
            err = fmaxf(err, fabsf(a[i] - b[i]) / a[i]);
        }
        CHECK(err < 2e-6f && fabsf(sum - 1.0f) < 1e-5f, "softmax_fast n=%d: rel err %g, sum %g", n, err, sum);
    }
}

static void test_swiglu(void) {
    float g[41], u[41];
    for (int i = 0; i < 41; i++) g[i] = (float)(i - 20) * 0.7f, u[i] = 0.3f + 0.01f * (float)i;
    float want[41];
    for (int i = 0; i < 41; i++) want[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    swiglu(g, u, 41);
    for (int i = 0; i < 41; i++)
        CHECK(fabsf(g[i] - want[i]) <= 1e-6f * fmaxf(1.0f, fabsf(want[i])), "swiglu %d: %g vs %g", i, g[i], want[i]);
}

/* silu and mul_silu (the conv's activation, the gated norm's gate) against x / (1 + expf(-x)),
 * on a length that leaves a scalar tail after any vector width */
static void test_silu(void) {
    float x[41], g[41], y[41];
    for (int i = 0; i < 41; i++) x[i] = g[i] = (float)(i - 20) * 0.7f, y[i] = 0.3f + 0.01f * (float)i;
    silu(x, 41);
    mul_silu(y, g, 41);
    for (int i = 0; i < 41; i++) {
        float s = g[i] / (1.0f + expf(-g[i])), u = 0.3f + 0.01f * (float)i;
        CHECK(fabsf(x[i] - s) <= 1e-6f * fmaxf(1.0f, fabsf(s)), "silu %d: %g vs %g", i, x[i], s);
        CHECK(fabsf(y[i] - s * u) <= 1e-6f * fmaxf(1.0f, fabsf(s * u)), "mul_silu %d: %g vs %g", i, y[i], s * u);
    }
}

int main(void) {
    test_exp();
    test_softmax();
    test_swiglu();
    test_silu();
    return test_summary("test_ops");
}
