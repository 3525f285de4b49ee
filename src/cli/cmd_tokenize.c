/* cmd_tokenize.c - `moe tokenize`: the ids of a text, space-separated, one line. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "tokenize";

static void help(void) {
    printf("usage: moe tokenize -m MODEL [TEXT | -f FILE] [flags]\n\n"
           "Prints the token ids of the text alone (no BOS or EOS), space-separated on one\n"
           "line. -f takes the file's bytes exactly as they are. Special-token text such as\n"
           "<|im_start|> becomes its token, as Hugging Face tokenizers do by default.\n\n"
           "  -m, --model FILE   model file (.moe or GGUF) or tokenizer-only file\n"
           "  -f, --file FILE    read the text from a file\n"
           "      --no-special   treat special-token text as plain text\n"
           "      --bos          prepend BOS if the model's tokenizer does\n"
           "      --pieces       print each token's text next to its id\n");
}

int cmd_tokenize(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *file = NULL, *text = NULL, *flag;
    int no_special = 0, bos = 0, pieces = 0;
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "-f") || !strcmp(flag, "--file")) file = args_value(&a, flag);
        else if (!strcmp(flag, "--no-special")) no_special = 1;
        else if (!strcmp(flag, "--bos")) bos = 1;
        else if (!strcmp(flag, "--pieces")) pieces = 1;
        else if (flag[0] == '-' && flag[1]) die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe tokenize -h)", flag);
        else if (text) die(EXIT_USAGE, CMD, "give one TEXT argument (quote it) or -f FILE");
        else text = flag;
    }
    if (text && file) die(EXIT_USAGE, CMD, "give TEXT or -f FILE, not both");
    if (!text && !file) die(EXIT_USAGE, CMD, "nothing to tokenize: give TEXT or -f FILE");
    size_t len = text ? strlen(text) : 0;
    char *buf = file ? read_file_or_die(CMD, file, &len) : NULL;
    moe_model *m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    int n;
    int32_t *ids = tokenize_or_die(CMD, m, buf ? buf : text, len,
                                   (no_special ? 0 : MOE_TOK_SPECIAL) | (bos ? MOE_TOK_ADD_BOS : 0), &n);
    for (int i = 0; i < n; i++) {
        printf(i ? " %d" : "%d", ids[i]);
        if (pieces) {
            size_t k;
            const char *s = moe_token_bytes(m, ids[i], &k);
            printf(":'");
            for (size_t j = 0; j < k; j++) {
                unsigned char ch = (unsigned char)s[j];
                if (ch < 32 || ch == '\'' || ch == '\\' || ch == 127) printf("\\x%02x", ch);
                else putchar(ch);
            }
            printf("'");
        }
    }
    printf("\n");
    free(ids);
    free(buf);
    moe_model_free(m);
    return 0;
}
