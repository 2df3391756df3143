/* constrain.h - grammar-constrained decoding: which tokens may come next.
 *
 * Two objects:
 *   struct constrain_vocab  per tokenizer, built once at start-up (tens of ms for the 129k
 *                           DeepSeek-V3 vocabulary): every token's bytes, the tokens sorted by
 *                           bytes with their common-prefix lengths (a flattened trie: the mask
 *                           walk steps the automaton once per distinct prefix and skips whole
 *                           subtrees whose prefix is rejected), and per-UTF-8-state bitsets of
 *                           the "plain" tokens that can sit anywhere inside a JSON string.
 *   struct constrain        per request (per choice): the automaton state for one grammar
 *                           (jsonschema.h). constrain_mask() sets the logits of tokens that
 *                           cannot continue a valid prefix to -inf; constrain_accept() advances
 *                           by the sampled token.
 * EOS (the vocabulary's eos id) is allowed exactly when the output so far is complete
 * (constrain_done); once complete and nothing else can follow (a closed object), EOS is the
 * only token left, so generation is forced to end. Added tokens (special or not, e.g.
 * "<｜User｜>") are never allowed, except inside the raw literals of a forced tool-call grammar
 * when their text is exactly the next part of the literal. Should no token at all be allowed
 * (cannot happen with a byte-level vocabulary, which has all 256 single bytes), EOS is allowed
 * so the request ends instead of looping.
 * Whitespace policy: at most the grammar's max_ws bytes of JSON whitespace in one place (before
 * a value, around ':' and ',', before '}' / ']'; jsonschema_set_whitespace: 0 by default,
 * CONSTRAIN_MAX_WS for the server's "bounded" mode), none after the complete value. A raw literal
 * that goes on with the whole text of an added token (a tool-call marker) takes only that token.
 *
 * Cost: one mask is a few hundred microseconds at most on one core for the DeepSeek-V3
 * vocabulary (see docs/performance.md, "Structured output"); inside a string it is a bitset
 * copy plus a walk over the few thousand tokens containing '"' or '\\'.
 *
 * Threads: a constrain_vocab is immutable after creation and shared by all threads. A struct
 * constrain is used by one thread at a time (the engine thread, through the eng_request hook).
 * Ownership: constrain_create takes a reference on the grammar (jsonschema_ref) and borrows the
 * vocabulary, which must outlive it.
 */
#ifndef TANDEM_CONSTRAIN_H
#define TANDEM_CONSTRAIN_H

#include "jsonschema.h"
#include "tok.h"

#include <stddef.h>
#include <stdint.h>

#define CONSTRAIN_MAX_WS 16 /* max_ws of structured.whitespace = bounded */
/* Tokens longer than this are never allowed under a constraint (real vocabularies stay far
 * below: DeepSeek-V3's longest token is 128 bytes). It bounds the per-request walk scratch, one
 * state set (~9 KiB) per byte of the longest token, whatever the tokenizer file holds. */
#define CONSTRAIN_MAX_TOKEN_BYTES 1024

struct constrain_vocab;
struct constrain;

/* From a tokenizer: token bytes via tok_piece, added tokens via tok_is_added, EOS via tok_eos.
 * Errors: ERR_NOMEM, ERR_INVAL (empty vocabulary). */
int constrain_vocab_create(const struct tok *t, struct constrain_vocab **out, char *err);

/* From raw pieces (tests, other vocabularies): pieces[i][0..lens[i]) are the bytes of token i;
 * added[i] != 0 marks added tokens (may be NULL); eos may be -1. Copies what it keeps. */
int constrain_vocab_create_pieces(const char *const *pieces, const size_t *lens,
                                  const uint8_t *added, int n, int32_t eos,
                                  struct constrain_vocab **out, char *err);
void constrain_vocab_destroy(struct constrain_vocab *v); /* accepts NULL */
int constrain_vocab_size(const struct constrain_vocab *v);

/* A fresh constraint at the start of the output. Errors: ERR_NOMEM. */
int constrain_create(const struct constrain_vocab *v, struct jsonschema_grammar *g,
                     struct constrain **out, char *err);
void constrain_destroy(struct constrain *c); /* accepts NULL */

/* Set logits[i] = -inf for every token i < vocab that may not come next (ids >= the
 * vocabulary's size are masked too). */
void constrain_mask(struct constrain *c, float *logits, int vocab);

/* The allowed tokens as a bitset of (vocab + 63) / 64 words (bit i of word i/64). Returns the
 * number of allowed tokens. Same rules as constrain_mask. */
int constrain_allowed(struct constrain *c, uint64_t *bits);

/* Advance by `token`. Returns 0, or ERR_INVAL when the token is not allowed (the state is
 * unchanged; the engine should then end the request). */
int constrain_accept(struct constrain *c, int32_t token);

/* 1 when the output so far is a complete value (EOS allowed), else 0. */
int constrain_done(const struct constrain *c);

/* Advance by raw bytes (tests, and prompts that pre-fill part of the output). Returns 0 or
 * ERR_INVAL (state unchanged). */
int constrain_accept_bytes(struct constrain *c, const char *s, size_t n);

/* Adapters with void * state, for an engine per-request hook such as
 *   struct eng_constraint { void *ud; void (*mask)(void *, float *, int);
 *                           int (*accept)(void *, int32_t); void (*destroy)(void *); };
 * filled with {c, constrain_hook_mask, constrain_hook_accept, constrain_hook_destroy}. The engine
 * thread calls mask before sampling, accept after it, destroy when the request ends. */
void constrain_hook_mask(void *c, float *logits, int vocab);
int constrain_hook_accept(void *c, int32_t token);
void constrain_hook_destroy(void *c);

#endif
