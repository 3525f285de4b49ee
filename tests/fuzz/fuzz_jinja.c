/* fuzz_jinja.c - libFuzzer target for the template interpreter (src/jinja.c):
 * any input is parsed as a template and, if it parses, rendered with a small
 * conversation under tight limits. Either it renders or it is refused with a
 * one-line message; never a crash, a hang or unbounded memory.
 *
 * Build and run: tests/fuzz/run.sh [SECONDS] fuzz_jinja (seeded with
 * ../shared/chat-templates/ *.jinja). */
#include <stdlib.h>
#include <string.h>

#include "jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Hi\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>r</think>A\", \"tool_calls\": [{\"type\": \"function\","
    " \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1}}}]}, {\"role\": \"tool\", \"content\": \"1\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\","
    " \"properties\": {\"a\": {\"type\": \"integer\"}}}}}], \"add_generation_prompt\": true,"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err = {{0}};
    jinja_template *t = jinja_parse((const char *)data, size, &err);
    if (!t) {
        if (!err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    json_value *vars = json_parse(VARS, sizeof VARS - 1, &err);
    if (!vars) abort();
    jinja_opts o = {.max_output = 1 << 16, .max_memory = 64 << 20, .max_steps = 100000, .max_depth = 16};
    strbuf out = {0};
    int rc = jinja_render(t, vars, &o, &out, &err);
    if (rc == JINJA_OK && out.n > o.max_output) abort();
    if (rc == JINJA_ERROR && (!err.msg[0] || strchr(err.msg, '\n'))) abort();
    sb_free(&out);
    json_free(vars);
    jinja_free(t);
    return 0;
}
