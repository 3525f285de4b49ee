/* cli.h - shared pieces of the moe command line: strict flag parsing, the
 * default model, and the subcommands. Only the CLI prints and exits. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "moe.h"

/* Exit codes: 0 ok, 1 runtime failure (bad file, ...), 2 usage error. */
#define EXIT_USAGE 2

/* Print "moe <cmd>: message" to stderr and exit(code). */
void die(int code, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

/* Flag values: every number is checked in full and for range. */
typedef struct {
    const char *cmd;   /* for messages */
    int argc, i;
    char **argv;
} args;

int args_next(args *a, const char **flag);      /* 0 when done; flag = argv[i] */
const char *args_value(args *a, const char *flag); /* the value after flag, or usage error */
int args_int(args *a, const char *flag, long lo, long hi);
int args_kv_type(args *a, const char *flag);   /* --kv f32|f16: 1 for f16 */
float args_float(args *a, const char *flag, double lo, double hi);
uint64_t args_u64(args *a, const char *flag);
/* The sampler's flags (--temp, --top-k, --top-p, --min-p, --repeat-penalty, -s/--seed) into sp;
 * 0 when flag is none of them. */
int args_sampler(args *a, const char *flag, moe_sampler_params *sp);
/* Parse "1,2,3" into a newly allocated array; usage error on junk. */
int32_t *parse_id_list(const char *cmd, const char *text, int *n);

/* The model path: -m if given, else the default model in models/. */
const char *default_model_path(const char *argv0);
moe_model *open_model_or_die(const char *cmd, const char *path);
/* Usage error when the output file `out` (given with flag) is the model file
 * itself: writing it would destroy the weights being read. */
void refuse_model_as_output(const char *cmd, const char *model, const char *out, const char *flag);

/* "s" unless n is 1: "1 token", "2 tokens". */
static inline const char *plural(long n) { return n == 1 ? "" : "s"; }

/* Read a whole file (binary-exact); exits on failure. */
char *read_file_or_die(const char *cmd, const char *path, size_t *len);

/* Tokenize or exit; returns a malloc'ed array. */
int32_t *tokenize_or_die(const char *cmd, const moe_model *m, const char *text, size_t len, int flags, int *n);

double now_seconds(void);
/* log(sum exp x): a log-softmax's normaliser, stable (the max is taken out first) */
double log_sum_exp(const float *x, int n);

/* Routing flags shared by run, logits, perplexity and route (routing.c). */
typedef struct {
    int n_active;            /* --experts-per-token, 0 = the model's k */
    const char *disable;     /* --disable-experts L:E,... */
    const char *trace_path;  /* --trace-routing FILE */
    int trace_jsonl;         /* --trace-format jsonl */
} route_opts;

int route_flag(args *a, const char *flag, route_opts *o); /* 1 if flag was one of them (consumed) */
void route_opts_help(void);
void route_opts_apply(const char *cmd, const moe_model *m, moe_ctx *ctx, const route_opts *o);
/* moe_ctx_new with the k override, then the disabled experts; exits on error. */
moe_ctx *route_ctx_new(const char *cmd, const moe_model *m, moe_ctx_params *cp, const route_opts *o);

typedef struct trace_writer trace_writer;
/* NULL when no trace was asked for; the trace functions accept NULL. */
trace_writer *trace_open(const char *cmd, const moe_model *m, moe_ctx *ctx, const route_opts *o);
void trace_flush(trace_writer *t);
moe_route_hook trace_hook(trace_writer *t); /* its hook, to chain with another */  /* write what the last moe_eval calls reported */
size_t trace_close(trace_writer *t); /* flush, close; returns the rows written */
/* Token bytes as a quoted CSV field, a JSON string, or XML text (docs/ROUTING.md). */
enum { TEXT_CSV = 0, TEXT_JSON = 1, TEXT_XML = 2 };
void put_text(FILE *f, const unsigned char *s, size_t n, int mode);

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_dequant(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_route(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif /* MOE_CLI_H */
