/* router.h - expert selection for one token, for every supported family,
 * driven only by route_config (config.h). Pure: no state, no allocation,
 * no stack sized by the file (the caller lends the scratch). */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

#include "config.h"

typedef struct {
    /* in */
    const float *logits;       /* (E) router logits, HF gate(x) */
    const float *bias;         /* (E) selection-only bias, or NULL */
    const unsigned char *off;  /* (E) 1 = disabled: never chosen (choice -inf), or NULL */
    /* out */
    float *scores;             /* (E) softmax or sigmoid scores */
    float *choice;             /* (E) the scores the selection used (bias added, groups masked) */
    unsigned char *group_kept; /* (n_groups) 1 = group kept; may be NULL */
    int *ids;                  /* (k) chosen experts, best first */
    float *weights;            /* (k) their weights */
    /* scratch */
    unsigned char *mask;       /* (n_experts + n_groups) */
    float *group_scores;       /* (n_groups) */
} route_io;

void route(const route_config *rc, route_io *io);

#endif /* MOE_ROUTER_H */
