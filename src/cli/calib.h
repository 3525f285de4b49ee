/* calib.h - calibration for moe quantize --calib (GPTQ rounding, gptq.h). */
#ifndef MOE_CLI_CALIB_H
#define MOE_CLI_CALIB_H

#include "cli.h"

typedef struct calib calib;

/* Run m on the text in path (at most max_tokens tokens, in chunks of up to
 * 512 positions, each starting a new sequence) and factor what each layer's
 * matrices read. Exits with a message on any failure. */
calib *calib_run(const char *cmd, const moe_model *m, const char *path, int max_tokens, int quiet);

/* GPTQ's factor U (n x n) for the input of the weight matrix named name
 * (len bytes, "blk.N.attn_q" ...; for ffn_down_exps, that of routed expert
 * `expert`), or NULL when calibration does not cover it: MLA's q_b reads an
 * input not gathered here, an expert never routed to has none, and the
 * experts' downs are skipped when their H would not fit (calib.c). */
const float *calib_factor(const calib *c, const char *name, int len, int expert, int *n);

void calib_free(calib *c);

#endif /* MOE_CLI_CALIB_H */
