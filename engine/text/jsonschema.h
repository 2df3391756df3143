/* jsonschema.h - JSON schema (and response_format / forced tool calls) -> a byte-level grammar.
 *
 * The grammar is a small tree of nodes (an array indexed by uint32) that constrain.c runs as a
 * pushdown automaton over the bytes of the output, so every output the automaton accepts is
 * valid JSON (RFC 8259, parseable by jansson) that validates against the schema.
 *
 * Supported schema keywords (everything else -> ERR_INVAL naming the keyword, a 400):
 *   type (a name or a list of names: object, array, string, number, integer, boolean, null),
 *   properties, required, additionalProperties (true/false/a schema), items (one schema),
 *   minItems, maxItems, minLength, maxLength (characters; an escape is one), enum, const, anyOf,
 * allOf with exactly one schema, $ref to
 *   "#/$defs/NAME" or "#/definitions/NAME" (expanded inline; recursive references fail with a
 *   "too deep" error), $defs/definitions, and the annotations title, description, default,
 *   examples, $schema, $id, $comment, deprecated, readOnly, writeOnly (ignored).
 *   `true` and `{}` mean any JSON value; `false` is an error (nothing could be generated).
 * Policies (documented in docs/structured-output.md):
 *   - additionalProperties absent: when `properties` is given no other keys are generated (the
 *     output still validates: extra keys are allowed, not required); without `properties` any
 *     keys are allowed (any object).
 *   - property names may not contain '"', '\\' or control characters; generated keys never
 *     contain escapes; at most JSONSCHEMA_MAX_PROPS properties per object.
 *   - strings: minLength/maxLength when given, no formats; escapes allowed, except \u0000
 *     and surrogates.
 *   - numbers: at most 15 integer and 15 fraction digits and a 2-digit exponent (so jansson
 *     never overflows); integers: no fraction, no exponent.
 * JSONSCHEMA_LENIENT (used for tool parameters, which the model only fills in when a tool is
 * forced) ignores validation keywords the grammar cannot enforce (minimum, maximum, pattern,
 * format, minLength, ...) instead of failing.
 *
 * Threads: compilation is pure; a compiled grammar is immutable and may be shared by any number
 * of threads and constraints. Ownership: reference counted (jsonschema_ref / jsonschema_unref);
 * the creator holds one reference; every struct constrain holds one.
 */
#ifndef TANDEM_JSONSCHEMA_H
#define TANDEM_JSONSCHEMA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define JSONSCHEMA_MAX_PROPS 64
#define JSONSCHEMA_MAX_DEPTH 20    /* nesting of schema objects/arrays */
#define JSONSCHEMA_MAX_NODES 20000 /* bounds the work a hostile schema can cause */
#define JSONSCHEMA_LENIENT 1u
#define JSONSCHEMA_WS_FREE UINT16_MAX /* max_ws: any amount of whitespace */

enum jsonschema_kind {
    JSK_ANY = 1, /* any JSON value: alts = {object, array, string, number, true, false,
                    null}, chosen by the first byte */
    JSK_OBJECT,
    JSK_ARRAY,
    JSK_STRING,
    JSK_NUMBER,
    JSK_INTEGER,
    JSK_CONST,   /* exactly `text` (a compact JSON text) */
    JSK_ENUM,    /* one of texts[] (compact JSON texts, sorted bytewise, shorter first,
                    distinct): enum and const */
    JSK_LITERAL, /* exactly `text`, raw (not JSON; e.g. tool-call markup); added tokens
                    whose text matches may be used here */
    JSK_ANYOF,   /* one of alts */
    JSK_SEQ,     /* alts one after another, nothing in between */
};

struct jsonschema_prop {
    char *name; /* the key as written between the quotes */
    size_t name_len;
    uint32_t node;
};

struct jsonschema_node {
    enum jsonschema_kind kind;
    /* OBJECT */
    struct jsonschema_prop *props;
    uint32_t n_props;
    uint64_t required;  /* bit i: props[i] is required */
    int64_t additional; /* node of additional properties, -1 = none allowed */
    /* ARRAY; STRING: min_items/max_items are minLength/maxLength in characters */
    uint32_t items;
    uint32_t min_items, max_items; /* max UINT32_MAX = unbounded */
    /* CONST, LITERAL */
    char *text;
    size_t text_len;
    /* ENUM */
    char **texts;
    uint32_t *text_lens;
    uint32_t n_texts;
    /* ANY, ANYOF, SEQ */
    uint32_t *alts;
    uint32_t n_alts;
};

struct jsonschema_grammar {
    int refs; /* atomic */
    struct jsonschema_node *nodes;
    uint32_t n_nodes, cap_nodes;
    uint32_t root;
    int has_literals; /* some JSK_LITERAL node exists */
    uint16_t max_ws;  /* whitespace bytes per place: 0 (compact, the default) ..
                         JSONSCHEMA_WS_FREE */
    int64_t any;      /* the shared JSK_ANY node, -1 until needed (compile-time only) */
};

/* Compile a JSON schema (object or boolean). Returns 0 or ERR_INVAL (err names the keyword and
 * where, e.g. "unsupported JSON schema keyword 'pattern' at #/properties/id"), ERR_NOMEM. */
int jsonschema_compile(const json_t *schema, unsigned flags, struct jsonschema_grammar **out,
                       char *err);

/* Any JSON object (response_format {"type":"json_object"}). */
int jsonschema_compile_json_object(struct jsonschema_grammar **out, char *err);

/* The request's response_format: absent/null/{"type":"text"} -> *out = NULL; json_object ->
 * any object; {"type":"json_schema","json_schema":{"name"?, "schema": {...}, "strict"?}} -> the
 * schema (missing schema = any object). Errors: ERR_INVAL with *param = "response_format" and
 * err naming the problem (bad shape, unknown type, unsupported keyword). */
int jsonschema_response_format(const json_t *root, struct jsonschema_grammar **out,
                               const char **param, char *err);

/* A forced tool call (tool_choice "required" or a named function): exactly one DeepSeek call
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
 * with NAME one of the tools (only `only_name` when not NULL) and ARGS matching that tool's
 * parameters (compiled with JSONSCHEMA_LENIENT; absent parameters = any object). `tools` is a
 * "tools" array that toolparse_req_parse accepted. format TOOLPARSE_FMT_V31 (toolparse.h):
 * DeepSeek-V3.1's call instead,
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜><｜tool▁calls▁end｜>
 * TOOLPARSE_FMT_KIMI: Kimi-K2's,
 *   <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>ARGS<|tool_call_end|><|tool_calls_section_end|>
 * Errors as jsonschema_compile. */
int jsonschema_compile_tool_call(const json_t *tools, const char *only_name, int format,
                                 struct jsonschema_grammar **out, char *err);

/* Make the output start with the raw text `prefix` before the grammar (e.g. "</think>\n\n"
 * when an R1 prompt opened a think block that the constrained answer must close first).
 * 0 or ERR_NOMEM. */
int jsonschema_add_prefix(struct jsonschema_grammar *g, const char *prefix);

/* Whitespace between JSON tokens: at most max_ws bytes in each place (0 = compact JSON, the
 * default of every compiled grammar; JSONSCHEMA_WS_FREE = unbounded). Set it before the first
 * constrain_create on g. */
void jsonschema_set_whitespace(struct jsonschema_grammar *g, uint16_t max_ws);

struct jsonschema_grammar *jsonschema_ref(struct jsonschema_grammar *g);
void jsonschema_unref(struct jsonschema_grammar *g); /* frees at 0; accepts NULL */

#endif
