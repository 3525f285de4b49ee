/* rope.c - RoPE frequencies (HF modeling_rope_utils / DeepSeek's YaRN) and
 * the rotation itself. */
#include "rope.h"

#include <math.h>
#include <stdlib.h>

#include "util.h"

/* YaRN: the pair index at which a wavelength completes num_rot rotations
 * within the original context (HF find_correction_dim). */
static double yarn_corr_dim(double num_rot, int dim, double base, int orig_ctx) {
    return (dim * log(orig_ctx / (num_rot * 2.0 * M_PI))) / (2.0 * log(base));
}

void rope_inv_freq(const moe_config *c, double *inv_freq) {
    int dim = c->rope_dim, half = dim / 2;
    double base = c->rope_theta, factor = c->rope_factor;
    for (int i = 0; i < half; i++) inv_freq[i] = 1.0 / pow(base, (2.0 * i) / dim);
    switch (c->rope_scaling) {
    case ROPE_SCALE_NONE: break;
    case ROPE_SCALE_LINEAR:
        for (int i = 0; i < half; i++) inv_freq[i] /= factor;
        break;
    case ROPE_SCALE_YARN: {
        /* low dims (fast rotation) extrapolate, high dims interpolate by factor,
         * with a linear ramp between (HF _compute_yarn_parameters). */
        double low = yarn_corr_dim(c->rope_beta_fast, dim, base, c->rope_orig_ctx);
        double high = yarn_corr_dim(c->rope_beta_slow, dim, base, c->rope_orig_ctx);
        if (c->rope_yarn_truncate) { /* HF truncate (its default); gpt-oss publishes false */
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrapolate = 1.0 - ramp;
            inv_freq[i] = inv_freq[i] / factor * (1.0 - extrapolate) + inv_freq[i] * extrapolate;
        }
        break;
    }
    case ROPE_SCALE_LLAMA3: {
        /* HF _compute_llama3_parameters: long wavelengths are divided by factor,
         * short ones kept, the band between smoothly interpolated. */
        double low_wavelen = c->rope_orig_ctx / c->rope_low_freq_factor;
        double high_wavelen = c->rope_orig_ctx / c->rope_high_freq_factor;
        for (int i = 0; i < half; i++) {
            double wavelen = 2.0 * M_PI / inv_freq[i];
            if (wavelen > low_wavelen) {
                inv_freq[i] /= factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (c->rope_orig_ctx / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv_freq[i] = (1.0 - smooth) * inv_freq[i] / factor + smooth * inv_freq[i];
            }
        }
        break;
    }
    }
}

int rope_table_init(rope_table *t, const moe_config *c, int n_pos, moe_err *err) {
    int half = c->rope_dim / 2;
    t->dim = c->rope_dim;
    t->layout = c->rope_layout;
    t->n_pos = n_pos;
    t->cos = malloc(sizeof(float) * (size_t)n_pos * (size_t)half);
    t->sin = malloc(sizeof(float) * (size_t)n_pos * (size_t)half);
    double *inv = malloc(sizeof(double) * (size_t)half);
    if (!t->cos || !t->sin || !inv) {
        free(inv);
        rope_table_free(t);
        return moe_fail(err, "out of memory for the RoPE table");
    }
    rope_inv_freq(c, inv);
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = p * inv[i];
            t->cos[(size_t)p * half + i] = (float)(cos(a) * c->rope_attn_factor);
            t->sin[(size_t)p * half + i] = (float)(sin(a) * c->rope_attn_factor);
        }
    free(inv);
    return 0;
}

void rope_table_free(rope_table *t) {
    free(t->cos);
    free(t->sin);
    t->cos = t->sin = NULL;
}

void rope_apply(const rope_table *t, float *x, int pos) {
    int half = t->dim / 2;
    const float *cs = t->cos + (size_t)pos * half, *sn = t->sin + (size_t)pos * half;
    /* half: dim i pairs with i + dim/2 (rotate_half); pair: 2i with 2i+1 */
    int stride = t->layout == ROPE_HALF ? 1 : 2, other = t->layout == ROPE_HALF ? half : 1;
    for (int i = 0; i < half; i++) {
        float *a = x + i * stride, *b = a + other;
        float x0 = *a, x1 = *b;
        *a = x0 * cs[i] - x1 * sn[i];
        *b = x1 * cs[i] + x0 * sn[i];
    }
}
