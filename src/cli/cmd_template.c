/* cmd_template.c - `moe template`: render a chat request with a model's own
 * chat template (or a template file) and print the prompt exactly. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "template";

static void help(void) {
    printf("usage: moe template (-m MODEL | --template FILE.jinja) REQUEST.json [--date YYYY-MM-DD]\n\n"
           "Renders an OpenAI-style chat request with the chat template, as Hugging Face's\n"
           "apply_chat_template(tokenize=False) does, and prints the prompt to stdout with\n"
           "nothing added. REQUEST.json: {\"messages\": [{\"role\": ..., \"content\": ...}, ...],\n"
           "\"tools\": [...], \"add_generation_prompt\": true, \"chat_template_kwargs\": {...},\n"
           "\"bos_token\": ..., \"eos_token\": ...} (all but messages optional; the model's own\n"
           "BOS / EOS text is the default). If the template raises, its message is printed on\n"
           "one line and the exit code is 1.\n\n"
           "  -m, --model FILE     use the template stored in this .moe or GGUF file (and its BOS / EOS)\n"
           "      --template FILE  use this Jinja template instead (with -m: the model's BOS / EOS)\n"
           "      --date DATE      the date strftime_now sees, YYYY-MM-DD[THH:MM:SS] (default: now)\n");
}

/* "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS" into the options. */
static void parse_date(const char *s, moe_chat_opts *o) {
    int y, mo, d, h = 0, mi = 0, se = 0, n = 0;
    int ok = sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) == 3 && (size_t)n == strlen(s);
    if (!ok) ok = sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) == 6 && (size_t)n == strlen(s);
    if (!ok || y < 1900 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || h < 0 || mi < 0 || se < 0)
        die(EXIT_USAGE, CMD, "--date \"%s\": expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS", s);
    o->year = y, o->month = mo, o->day = d, o->hour = h, o->minute = mi, o->second = se;
}

/* The message on one line: control characters (newlines) become spaces. */
static void print_one_line(const char *msg) {
    fputs("moe template: ", stderr);
    for (const char *p = msg; *p; p++) fputc((unsigned char)*p < 0x20 ? ' ' : *p, stderr);
    fputc('\n', stderr);
}

int cmd_template(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *tmpl = NULL, *request = NULL, *flag;
    moe_chat_opts o = {0};
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--template")) tmpl = args_value(&a, flag);
        else if (!strcmp(flag, "--date")) parse_date(args_value(&a, flag), &o);
        else if (flag[0] == '-' && flag[1]) die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe template -h)", flag);
        else if (request) die(EXIT_USAGE, CMD, "give one REQUEST.json");
        else request = flag;
    }
    if (!request) die(EXIT_USAGE, CMD, "no request: give REQUEST.json (see moe template -h)");
    size_t req_len, tmpl_len = 0;
    char *req = read_file_or_die(CMD, request, &req_len);
    char *tsrc = tmpl ? read_file_or_die(CMD, tmpl, &tmpl_len) : NULL;
    moe_model *m = tmpl && !model ? NULL : open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    o.template_text = tsrc;
    o.template_len = tmpl_len;
    moe_err err = {{0}};
    size_t n = 0;
    int raised = 0;
    char *prompt = moe_chat_render(m, req, req_len, &o, &n, &raised, &err);
    int rc = 0;
    if (prompt) {
        if (fwrite(prompt, 1, n, stdout) != n || fflush(stdout)) die(1, CMD, "writing the prompt failed");
    } else {
        print_one_line(err.msg);
        rc = 1;
    }
    free(prompt);
    free(req);
    free(tsrc);
    moe_model_free(m);
    return rc;
}
