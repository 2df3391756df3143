/* detok.c - incremental detokenizer: token bytes -> complete UTF-8, stop strings held back.
 *
 * State per request: `raw` holds at most 3 bytes of a UTF-8 character that has begun but not
 * ended; `text` holds valid UTF-8 that is final as text but held back because it could be the
 * beginning of a stop string. Each feed:
 *   1. decodes raw + the token's bytes: complete characters go to `text`; a byte sequence that
 *      cannot become a character becomes U+FFFD (one per maximal invalid subpart, the
 *      WHATWG/Python "replace" rule); an unfinished tail stays in `raw`;
 *   2. looks for each stop string in `text` (a match must involve new bytes, older text having
 *      been searched before, but `text` is short so it is searched whole); the earliest match
 *      wins: its prefix is emitted, the detok is done;
 *   3. otherwise keeps the longest suffix of `text` that is a proper prefix of some stop string
 *      and emits the rest. Since stop strings are valid UTF-8, such a suffix always starts on a
 *      character boundary.
 * Invariant: len(text) after a feed < the longest stop string (or 0 with no stops).
 * Threads: one owner thread per struct detok (see detok.h).
 */
#include "detok.h"

#include "common/err.h"
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

struct detok {
    const struct tok *t;
    unsigned flags;
    int n_stops;
    char *stop[DETOK_MAX_STOPS];
    size_t stop_len[DETOK_MAX_STOPS];
    unsigned char raw[4];
    int n_raw;
    struct sbuf text;
    int done;       /* finished or stopped */
    int stop_index; /* matched stop string, -1 */
};

int detok_create(struct detok **out, const struct tok *t, const char *const *stops, size_t n_stops,
                 unsigned flags, char *err)
{
    *out = NULL;
    struct detok *d = calloc(1, sizeof *d);
    if (!d) return ERR_NOMEM;
    d->t = t;
    d->flags = flags;
    d->stop_index = -1;
    for (size_t i = 0; i < n_stops; i++) {
        size_t n = stops[i] ? strlen(stops[i]) : 0;
        if (n == 0) continue;
        int rc = 0;
        if (d->n_stops == DETOK_MAX_STOPS)
            rc = err_set(err, ERR_INVAL, "too many stop strings (at most %d)", DETOK_MAX_STOPS);
        else if (n > DETOK_MAX_STOP_LEN)
            rc = err_set(err, ERR_INVAL, "stop string %zu is longer than %d bytes", i,
                         DETOK_MAX_STOP_LEN);
        else if (utf8_check(stops[i], n, NULL))
            rc = err_set(err, ERR_INVAL, "stop string %zu is not valid UTF-8", i);
        else if (!(d->stop[d->n_stops] = strdup(stops[i]))) rc = ERR_NOMEM;
        if (rc) {
            detok_destroy(d);
            return rc;
        }
        d->stop_len[d->n_stops++] = n;
    }
    *out = d;
    return 0;
}

void detok_destroy(struct detok *d)
{
    if (!d) return;
    for (int i = 0; i < d->n_stops; i++) free(d->stop[i]);
    sbuf_fini(&d->text);
    free(d);
}

/* Decode the pending raw bytes followed by p[0..n) into d->text. */
static int absorb(struct detok *d, const char *p0, size_t n0)
{
    char small[256];
    size_t n = (size_t)d->n_raw + n0;
    char *p = n <= sizeof small ? small : malloc(n);
    if (!p) return ERR_NOMEM;
    memcpy(p, d->raw, (size_t)d->n_raw);
    memcpy(p + d->n_raw, p0, n0);
    d->n_raw = 0;
    int rc = 0;
    size_t i = 0;
    while (i < n && !rc) {
        size_t start = i;
        int r = 0;
        while (i < n && (r = utf8_step(p + i, n - i)) > 0) i += (size_t)r;
        if (i > start) rc = sbuf_append(&d->text, p + start, i - start);
        if (rc || i >= n) break;
        if (r == 0) { /* unfinished character at the end: keep it */
            memcpy(d->raw, p + i, n - i);
            d->n_raw = (int)(n - i);
            break;
        }
        rc = sbuf_append(&d->text, UTF8_REPLACEMENT, 3);
        i += (size_t)-r;
    }
    if (p != small) free(p);
    return rc ? ERR_NOMEM : 0;
}

/* Emit text[0..n) to out and drop it from d->text. */
static int emit(struct detok *d, size_t n, struct sbuf *out)
{
    if (n && sbuf_append(out, d->text.s, n)) return ERR_NOMEM;
    if (d->text.n > n) memmove(d->text.s, d->text.s + n, d->text.n - n);
    d->text.n -= n;
    if (d->text.s) d->text.s[d->text.n] = 0;
    return 0;
}

/* Stop matching and hold-back on d->text; emits what is final. Returns 0, DETOK_STOPPED or an
 * error. */
static int settle(struct detok *d, struct sbuf *out, int final)
{
    const char *s = d->text.s;
    size_t n = d->text.n;
    size_t best = (size_t)-1;
    int which = -1;
    for (int k = 0; k < d->n_stops && n; k++) {
        const char *m = memmem(s, n, d->stop[k], d->stop_len[k]);
        if (m && (size_t)(m - s) < best) {
            best = (size_t)(m - s);
            which = k;
        }
    }
    if (which >= 0) {
        int rc = emit(d, best, out);
        d->text.n = 0;
        d->n_raw = 0;
        d->done = 1;
        d->stop_index = which;
        return rc ? rc : DETOK_STOPPED;
    }
    size_t hold = 0;
    if (!final) {
        for (int k = 0; k < d->n_stops; k++) {
            size_t maxl = d->stop_len[k] - 1 < n ? d->stop_len[k] - 1 : n;
            for (size_t l = maxl; l > hold; l--)
                if (memcmp(s + n - l, d->stop[k], l) == 0) {
                    hold = l;
                    break;
                }
        }
    }
    return emit(d, n - hold, out);
}

int detok_feed(struct detok *d, int32_t id, struct sbuf *out, char *err)
{
    if (d->done) return d->stop_index >= 0 ? DETOK_STOPPED : 0;
    size_t len;
    if (id < 0) return err_set(err, ERR_INVAL, "token id %d is out of range", (int)id);
    /* ids past the tokenizer (the model's embedding is padded, e.g. 129280 rows for 128815
     * tokens) have no text, as in Hugging Face's decode */
    const char *p = tok_piece(d->t, id, &len);
    if (!p) return 0;
    if ((d->flags & DETOK_SKIP_SPECIAL) && tok_is_special(d->t, id)) return 0;
    if (absorb(d, p, len)) return ERR_NOMEM;
    return settle(d, out, 0);
}

int detok_feed_n(struct detok *d, const int32_t *ids, size_t n, struct sbuf *out, char *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = detok_feed(d, ids[i], out, err);
        if (rc) return rc;
    }
    return 0;
}

int detok_finish(struct detok *d, struct sbuf *out)
{
    if (d->done) return d->stop_index >= 0 ? DETOK_STOPPED : 0;
    if (d->n_raw) { /* an unfinished character at the end is one U+FFFD */
        if (sbuf_append(&d->text, UTF8_REPLACEMENT, 3)) return ERR_NOMEM;
        d->n_raw = 0;
    }
    int rc = settle(d, out, 1);
    d->done = 1;
    return rc;
}

int detok_stop_index(const struct detok *d) { return d->stop_index; }
size_t detok_held(const struct detok *d) { return d->text.n + (size_t)d->n_raw; }
