/* jinja.h - a Jinja interpreter for the subset chat templates use, rendering
 * as Hugging Face transformers renders them: jinja2's ImmutableSandboxedEnvironment
 * with trim_blocks, lstrip_blocks and loop controls; `tojson` = Python's
 * json.dumps(ensure_ascii=False, ...); globals raise_exception(msg) and
 * strftime_now(fmt); undefined names behave as jinja2's default Undefined.
 *
 * Pipeline: source -> tokens (lexer: text, tags, whitespace control) -> AST
 * (parser) -> output (evaluator over values built from a JSON object of
 * variables). What lies outside the subset (a filter or tag we do not
 * implement, Python behaviour we cannot reproduce exactly) is refused with one
 * line naming the construct and its line and column — never rendered
 * approximately. Limits bound the work a hostile template can cause.
 *
 * Errors unwind with longjmp to jinja_parse / jinja_render; everything they
 * allocate lives in one arena freed on the way out, so nothing leaks. */
#ifndef MOE_JINJA_H
#define MOE_JINJA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "json.h"
#include "moe.h"
#include "strbuf.h"

typedef struct jinja_template jinja_template;

/* Parse a template (any size; a copy is kept). NULL with err set:
 * "template line L col C: what". */
jinja_template *jinja_parse(const char *src, size_t len, moe_err *err);
void jinja_free(jinja_template *t);

typedef struct jinja_opts {
    struct tm now;        /* what strftime_now formats */
    size_t max_output;    /* bytes of output; 0 = 16 MB */
    size_t max_memory;    /* bytes of working memory; 0 = 256 MB */
    uint64_t max_steps;   /* loop iterations + calls + statements; 0 = 10 million */
    int max_depth;        /* nested macro calls; 0 = 64 */
} jinja_opts;

enum { JINJA_OK = 0, JINJA_ERROR = -1, JINJA_RAISED = -2 };

/* Render with the members of `vars` (a JSON object) as the template's
 * variables (JSON null is Python's None). Appends to out. Returns JINJA_OK;
 * JINJA_RAISED when the template called raise_exception (err = its message,
 * exactly); JINJA_ERROR for anything else (unsupported construct, undefined
 * value used, a limit: err = one line with the position). */
int jinja_render(const jinja_template *t, const json_value *vars, const jinja_opts *opts, strbuf *out,
                 moe_err *err);

#endif /* MOE_JINJA_H */
