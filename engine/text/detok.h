/* detok.h - incremental detokenizer for streaming: token ids in, complete UTF-8 text out.
 *
 * One struct detok per request (per choice). Each detok_feed() appends to `out` only text that
 * is final:
 *   - never a partial UTF-8 sequence: bytes of a character split across tokens are held until
 *     the character is complete. Bytes that can never form a valid character (the model can
 *     emit any byte sequence) are replaced by U+FFFD, one per maximal invalid subpart, like
 *     Python's bytes.decode(errors="replace");
 *   - never a stop string nor any prefix of one that might still grow into a match: the
 *     longest tail that is a prefix of some stop string is held back. When a stop string
 *     completes (it may span any number of tokens), the text before it is emitted, the stop
 *     string and everything after it are dropped, and detok_feed returns DETOK_STOPPED; later
 *     feeds are ignored. Among stop strings completing at once, the earliest match wins.
 * detok_finish() flushes what is held (a held partial stop match is plain text then; an
 * incomplete trailing UTF-8 sequence becomes U+FFFD) unless a stop string matched.
 *
 * Threads: a struct detok is used by one thread at a time (the request's HTTP thread); the
 * struct tok it reads is shared read-only. Ownership: the detok copies the stop strings; it
 * borrows the tokenizer, which must outlive it. `out` belongs to the caller and is appended to.
 */
#ifndef TANDEM_DETOK_H
#define TANDEM_DETOK_H

#include "tok.h"

#include <stddef.h>
#include <stdint.h>

struct detok;

#define DETOK_MAX_STOPS 16      /* OpenAI allows 4; we accept up to this many */
#define DETOK_MAX_STOP_LEN 4096 /* bytes per stop string */

#define DETOK_SKIP_SPECIAL 1u /* special (control) tokens produce no text */

#define DETOK_STOPPED 1 /* detok_feed return value: a stop string matched */

/* Create a detokenizer. stops[0..n_stops) are non-empty NUL-terminated UTF-8 strings (empty
 * strings are ignored). Returns 0, ERR_INVAL (too many / too long / invalid UTF-8 stop string;
 * err says which) or ERR_NOMEM. */
int detok_create(struct detok **out, const struct tok *t, const char *const *stops, size_t n_stops,
                 unsigned flags, char *err);
void detok_destroy(struct detok *d); /* accepts NULL */

/* Feed one token. Appends newly final text to out (possibly nothing). Returns 0, DETOK_STOPPED
 * (a stop string matched: final text appended; the detok ignores further input), ERR_INVAL (a
 * negative id; nothing changes) or ERR_NOMEM. Ids >= tok_vocab_size() (a model's padded
 * embedding rows) produce no text, as in Hugging Face's decode. */
int detok_feed(struct detok *d, int32_t id, struct sbuf *out, char *err);

/* Feed several tokens; stops at the first stop match. Same returns as detok_feed. */
int detok_feed_n(struct detok *d, const int32_t *ids, size_t n, struct sbuf *out, char *err);

/* End of generation: append the held text (nothing after a stop match). Returns 0,
 * DETOK_STOPPED (a stop string had matched earlier, or matches only now that a trailing partial
 * character became U+FFFD) or ERR_NOMEM. Afterwards the detok accepts no more input. */
int detok_finish(struct detok *d, struct sbuf *out);

/* Index of the stop string that matched, or -1. */
int detok_stop_index(const struct detok *d);

/* Bytes currently held back (partial character or partial stop match). */
size_t detok_held(const struct detok *d);

#endif
