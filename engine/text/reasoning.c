/* reasoning.c - incremental "<think>...</think>" splitter (see reasoning.h).
 *
 * Design: a two-state machine (content / thinking) scanning for the one tag that can change the
 * state ("<think>" in content, "</think>" while thinking). Both tags contain '<' only as their
 * first byte, so a held partial match that fails can be emitted as text at once and only the
 * failing byte needs a second look. Text runs without '<' are appended in one piece.
 * Invariant: hold[0..n_hold) is a proper prefix of the current tag (n_hold < tag length).
 */
#include "reasoning.h"

#include "common/err.h"

#include <string.h>

static const char TAG_OPEN[] = "<think>";
static const char TAG_CLOSE[] = "</think>";

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Append s[0..n) to the output of the current state, dropping leading whitespace after a tag. */
static int emit(struct reasoning *r, const char *s, size_t n, struct sbuf *content,
                struct sbuf *reasoning)
{
    if (r->skip_ws) {
        while (n && is_ws(*s)) s++, n--;
        if (!n) return 0;
        r->skip_ws = 0;
    }
    return sbuf_append(r->thinking ? reasoning : content, s, n);
}

void reasoning_init(struct reasoning *r, unsigned flags)
{
    memset(r, 0, sizeof *r);
    r->flags = flags;
    r->thinking = (flags & REASONING_START_THINKING) != 0;
    r->skip_ws = r->thinking;
}

void reasoning_fini(struct reasoning *r) { (void)r; }

int reasoning_feed(struct reasoning *r, const char *text, size_t n, struct sbuf *content,
                   struct sbuf *reasoning)
{
    int rc;
    if (r->flags & REASONING_INLINE) {
        if (!r->started && (r->flags & REASONING_START_THINKING)) {
            if ((rc = sbuf_append(content, "<think>\n", 8))) return rc;
        }
        r->started = 1;
        return sbuf_append(content, text, n);
    }
    size_t i = 0;
    while (i < n) {
        const char *tag = r->thinking ? TAG_CLOSE : TAG_OPEN;
        size_t tag_len = r->thinking ? sizeof TAG_CLOSE - 1 : sizeof TAG_OPEN - 1;
        if (r->n_hold == 0) {
            /* plain run up to the next '<' */
            const char *lt = memchr(text + i, '<', n - i);
            size_t run = lt ? (size_t)(lt - (text + i)) : n - i;
            if (run && (rc = emit(r, text + i, run, content, reasoning))) return rc;
            i += run;
            if (i == n) break;
            r->hold[r->n_hold++] = '<';
            i++;
            continue;
        }
        char c = text[i];
        if (tag[r->n_hold] == c) {
            r->hold[r->n_hold++] = c;
            i++;
            if (r->n_hold == tag_len) {
                r->thinking = !r->thinking;
                r->skip_ws = 1;
                r->n_hold = 0;
            }
            continue;
        }
        /* not a tag: the held bytes are text; look at c again with nothing held */
        size_t h = r->n_hold;
        r->n_hold = 0;
        if ((rc = emit(r, r->hold, h, content, reasoning))) return rc;
    }
    return 0;
}

int reasoning_finish(struct reasoning *r, struct sbuf *content, struct sbuf *reasoning)
{
    if (r->flags & REASONING_INLINE) {
        if (!r->started && (r->flags & REASONING_START_THINKING)) {
            r->started = 1;
            return sbuf_append(content, "<think>\n", 8);
        }
        return 0;
    }
    size_t h = r->n_hold;
    r->n_hold = 0;
    return h ? emit(r, r->hold, h, content, reasoning) : 0;
}

int reasoning_prompt_open(const char *prompt, size_t n)
{
    const char *open = NULL;
    for (const char *p = prompt; p && (size_t)(p - prompt) < n;) {
        p = memmem(p, n - (size_t)(p - prompt), TAG_OPEN, sizeof TAG_OPEN - 1);
        if (p) open = p++;
    }
    if (!open) return 0;
    size_t rest = n - (size_t)(open - prompt);
    return memmem(open, rest, TAG_CLOSE, sizeof TAG_CLOSE - 1) == NULL;
}
