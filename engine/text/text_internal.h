/* text_internal.h - helpers shared by the files of engine/text (not a public API). */
#ifndef TANDEM_TEXT_INTERNAL_H
#define TANDEM_TEXT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Fingerprint of a chat template (template.c): FNV-1a 64 over the text with whitespace inside
 * {{ }} / {% %} tags (outside string literals) left out. */
uint64_t tmpl__fingerprint(const char *s);

#endif
