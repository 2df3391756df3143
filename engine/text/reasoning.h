/* reasoning.h - split R1-style "<think>...</think>" reasoning from the answer, incrementally.
 *
 * DeepSeek-R1 writes its chain of thought between "<think>" and "</think>" and the answer after
 * it. The OpenAI-compatible API returns the first as message.reasoning_content (streaming:
 * delta.reasoning_content) and the second as content. This module is fed the detokenized text
 * of one choice in chunks, as it comes from detok_feed() (complete UTF-8, any chunking), and
 * routes every byte to one of two outputs:
 *   - outside a think block: to `content`;
 *   - inside (after "<think>", before "</think>"): to `reasoning`; the tags themselves are
 *     dropped. Tags may toggle several times; a "<think>" inside a think block is plain
 *     reasoning text, a "</think>" outside one is plain content.
 *   - whitespace right after "<think>" (the "\n" the model writes) and right after "</think>"
 *     (the "\n\n" before the answer) is dropped, as DeepSeek's own API does.
 * A tag split across chunks is handled: a tail that is a proper prefix of the tag being looked
 * for is held back until the next chunk decides it (at most 7 bytes), and reasoning_finish()
 * flushes it as ordinary text.
 *
 * Start state: with REASONING_START_THINKING the splitter starts inside a think block, for
 * templates whose generation prompt already ends with "<think>\n" (deepseek-r1); the model then
 * writes reasoning first and only the closing tag. Generation cut short before "</think>" (length)
 * leaves everything in `reasoning` and `content` empty, like DeepSeek's API.
 * With REASONING_INLINE the splitter is a pass-through: everything goes to `content` unchanged
 * (the "keep the reasoning inline" request option), except that when the template opened the
 * block the "<think>\n" that the prompt ended with is re-inserted at the start so the client
 * sees a balanced block.
 *
 * Server use (one per choice, on the HTTP thread, after detok_feed):
 *     reasoning_init(&r, (prompt ends with "<think>\n" ? REASONING_START_THINKING : 0)
 *                        | (request asked to keep it inline ? REASONING_INLINE : 0));
 *     per chunk: reasoning_feed(&r, text, n, &content, &reason), then send what was appended
 *                as delta.content / delta.reasoning_content (both keys may share one chunk);
 *     at the end: reasoning_finish(&r, &content, &reason).
 * Only use it for R1-family templates (deepseek-r1, deepseek-r1-0528); a V3 model's "<think>"
 * is ordinary text.
 *
 * Threads: a struct reasoning is used by one thread at a time. Ownership: caller storage
 * (init/fini pattern); the output strings belong to the caller and are appended to.
 */
#ifndef TANDEM_REASONING_H
#define TANDEM_REASONING_H

#include "tok.h"

#include <stddef.h>

#define REASONING_START_THINKING 1u /* the prompt already opened "<think>" */
#define REASONING_INLINE 2u         /* do not split: everything is content */

struct reasoning {
    unsigned flags;
    int thinking;  /* 1: inside a think block */
    int skip_ws;   /* drop whitespace until the next non-space byte */
    int started;   /* inline mode: the synthetic "<think>\n" was written */
    char hold[16]; /* partial tag held back */
    size_t n_hold;
};

void reasoning_init(struct reasoning *r, unsigned flags);
void reasoning_fini(struct reasoning *r); /* nothing to free today; accepts NULL */

/* Route text[0..n) (may be empty). Appends to content and/or reasoning. Returns 0 or
 * ERR_NOMEM. */
int reasoning_feed(struct reasoning *r, const char *text, size_t n, struct sbuf *content,
                   struct sbuf *reasoning);

/* End of generation: flush a held partial tag as plain text. Returns 0 or ERR_NOMEM. */
int reasoning_finish(struct reasoning *r, struct sbuf *content, struct sbuf *reasoning);

/* 1 when the rendered prompt leaves a think block open (its last "<think>" has no "</think>"
 * after it, e.g. deepseek-r1's generation prompt "<｜Assistant｜><think>\n"): start the splitter
 * with REASONING_START_THINKING then. Else 0. */
int reasoning_prompt_open(const char *prompt, size_t n);

#endif
