/* jinja.h - a Jinja interpreter for the subset Hugging Face chat templates use.
 *
 * Semantics follow Python Jinja2 as transformers configures it (trim_blocks, lstrip_blocks, the
 * loopcontrols extension, the default Undefined, raise_exception, tojson with ensure_ascii=False).
 * The supported statements, expressions, filters, tests and methods are listed in
 * docs/chat-templates.md, with the limits below.
 *
 * Limits (per render, a clear ERR_INVAL naming the limit when passed, never a hang): memory of
 * the values built while rendering, output size, loop iterations plus calls (steps), and macro
 * recursion depth. Parsing bounds the nesting depth of the template.
 *
 * Ownership: jinja_parse returns a template the caller frees with jinja_free; jinja_render
 * borrows the context and appends to the caller's buffer.
 * Threads: a parsed template is immutable; any number of threads may render it at once (each
 * render keeps its state in its own arena).
 */
#ifndef TANDEM_JINJA_H
#define TANDEM_JINJA_H

#include "common/sbuf.h"

#include <jansson.h>
#include <stddef.h>

struct jinja;

struct jinja_limits {
    size_t max_memory; /* bytes of values built while rendering */
    size_t max_output; /* bytes of output */
    long max_steps;    /* loop iterations + macro calls */
    int max_depth;     /* macro call depth */
};

/* Defaults: 256 MiB memory, 64 MiB output, 1e7 steps, depth 64. */
void jinja_default_limits(struct jinja_limits *l);

/* Parse a template. Returns 0, ERR_FORMAT (a syntax error: err gives "line L column C: ...")
 * or ERR_NOMEM. */
int jinja_parse(const char *text, struct jinja **out, char *err);
void jinja_free(struct jinja *t); /* accepts NULL */

/* Render with the variables of the JSON object `vars` (messages, tools, bos_token, ...); the
 * globals range, namespace, raise_exception and strftime_now are always defined. lim NULL = the
 * defaults. Returns 0, ERR_INVAL (raise_exception's message, a type error, a limit passed: err
 * says which) or ERR_NOMEM. Nothing is appended on error (out->n is restored). */
int jinja_render(const struct jinja *t, const json_t *vars, const struct jinja_limits *lim,
                 struct sbuf *out, char *err);

#endif
