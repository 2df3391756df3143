/* cfg.h - the configuration: one struct generated from options.def, loaded once, then immutable.
 *
 * Sources, highest precedence first: --section.key=value flags, TANDEM_SECTION_KEY environment
 * variables, the INI file given with --config FILE (libinih), the defaults in options.def.
 * Errors name the source (file:line, env var or flag), the key and the accepted range.
 * Threads: load on main before other threads start; afterwards read-only from any thread.
 * Ownership: cfg_load allocates the strings; cfg_fini frees them.
 */
#ifndef TANDEM_CFG_H
#define TANDEM_CFG_H

#include <stdint.h>
#include <stdio.h>

struct cfg {
#define OPT_INT(s, k, d, lo, hi, h) int64_t s##_##k;
#define OPT_DBL(s, k, d, lo, hi, h) double s##_##k;
#define OPT_BOOL(s, k, d, h) int s##_##k;
#define OPT_STR(s, k, d, h) char *s##_##k;
#define OPT_ENUM(s, k, d, ch, h) char *s##_##k;
#include "options.def"
#undef OPT_INT
#undef OPT_DBL
#undef OPT_BOOL
#undef OPT_STR
#undef OPT_ENUM
    char *config_file; /* the --config file, or NULL */
};

/* Fill *c with defaults, then apply file, env and flags. Recognized arguments are removed from
 * argv: --config FILE, --config=FILE, --section.key=value, --section.key value, --model DIR.
 * Other arguments stay, in order, and *argc is updated. On error *c is left finalized-safe. */
int cfg_load(struct cfg *c, int *argc, char **argv, char *err);
void cfg_init_defaults(struct cfg *c);
void cfg_fini(struct cfg *c);

/* Set one option from text; `source` names where it came from for error messages. */
int cfg_set(struct cfg *c, const char *section, const char *key, const char *value,
            const char *source, char *err);

void cfg_print(const struct cfg *c, FILE *f); /* effective config as INI */
void cfg_write_markdown(FILE *f);             /* the reference table of docs/configuration.md */

#endif
