/* rope.h - rotary position embeddings as the HF references apply them.
 * A table of cos/sin per (position, pair) is built once per context, with
 * the scaling rule (linear, YaRN, llama3) and YaRN's attention factor folded
 * in, so applying RoPE is a rotation of dim/2 pairs. */
#ifndef MOE_ROPE_H
#define MOE_ROPE_H

#include "config.h"

typedef struct {
    int dim;              /* rotated dims per head (rope.dim) */
    rope_layout layout;   /* which dims pair up */
    int n_pos;
    float *cos, *sin;     /* (n_pos, dim/2), times rope.attn_factor */
} rope_table;

/* inv_freq[i], i < dim/2, after the scaling rule (docs/FORMAT.md "rope.*"). */
void rope_inv_freq(const moe_config *c, double *inv_freq);
int rope_table_init(rope_table *t, const moe_config *c, int n_pos, moe_err *err);
void rope_table_free(rope_table *t);
/* Rotate the first t->dim values of one head vector in place. */
void rope_apply(const rope_table *t, float *head, int pos);

#endif /* MOE_ROPE_H */
