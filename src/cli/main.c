/* main.c - `moe <command> [flags]`: dispatch to the subcommands. */
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"run", cmd_run, "generate text from a prompt (streams to stdout, speed to stderr)"},
    {"logits", cmd_logits, "evaluate token ids, write float32 logits [n, vocab]"},
    {"perplexity", cmd_perplexity, "perplexity of a text (+/- stderr); KL divergence against a saved run"},
    {"route", cmd_route, "routing statistics and SVG plots for a text"},
    {"chat", cmd_chat, "a conversation with the model's chat template (reuses the KV cache across turns)"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server (chat, completions, streaming)"},
    {"template", cmd_template, "render a chat request with the model's chat template (prints the prompt)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"info", cmd_info, "architecture, sizes and parameters of a model file"},
    {"bench", cmd_bench, "prefill and decode tokens/s, achieved vs measured bandwidth"},
    {"dequant", cmd_dequant, "write one tensor's values as float32 (GGUF or .moe)"},
    {"quantize", cmd_quantize, "requantize weights to a ggml block type (q8_0, q4_0, q4_k, ...)"},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

static void usage(FILE *out) {
    fprintf(out, "moe %s - a small CPU inference engine for mixture-of-experts models\n\n", moe_version());
    fprintf(out, "usage: moe <command> [flags]   (moe <command> -h for its flags)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\nkernels: %s\n", moe_kernel_name());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("moe %s (%s kernels)\n", moe_version(), moe_kernel_name());
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 2, argv + 2);
    fprintf(stderr, "moe: unknown command \"%s\" (moe help lists them)\n", argv[1]);
    return EXIT_USAGE;
}
