/* fuzz_detok.c - libFuzzer target: the incremental detokenizer with stop strings.
 *
 * Byte 0: number of stop strings (bits 0-2, capped at 4 as the API allows), DETOK_SKIP_SPECIAL
 * (bit 3). Then, for each stop string, a length byte and that
 * many bytes; the rest is a list of little-endian u16 token ids (modulo vocab + 2: a few are past
 * the vocabulary, like a model's padded embedding rows, and must produce no text).
 * Properties: the streamed text is valid UTF-8 at every step (never a partial character); after
 * DETOK_STOPPED nothing more is emitted (detok_finish included), the stop index is in range and
 * the output contains none of the stop strings (the earliest match wins); an id past the
 * vocabulary produces nothing.
 */
#include "fuzz_common.h"
#include "common/utf8.h"
#include "engine/text/detok.h"

#include <stdint.h>
#include <string.h>

static struct tok *tk;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tk = fuzz_load_tokenizer();
    return 0;
}

static int contains(const struct sbuf *s, const char *needle)
{
    return s->n && memmem(s->s, s->n, needle, strlen(needle)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t n_stops = data[0] & 7;
    if (n_stops > 4) n_stops = 4;
    unsigned flags = (data[0] >> 3) & 1 ? DETOK_SKIP_SPECIAL : 0;
    size_t pos = 1;
    char *stops[4] = {0};
    size_t k = 0;
    for (; k < n_stops && pos < size; k++) {
        size_t len = data[pos++];
        if (len > size - pos) len = size - pos;
        stops[k] = strndup((const char *)data + pos, len); /* an embedded NUL shortens it */
        pos += len;
    }
    n_stops = k;
    struct detok *d = NULL;
    char err[ERR_LEN] = "";
    int rc = detok_create(&d, tk, (const char *const *)stops, n_stops, flags, err);
    if (rc != 0) {
        if (rc != ERR_INVAL || !err[0]) abort(); /* e.g. a stop string that is not UTF-8 */
        goto out;
    }
    struct sbuf text = {0};
    int vocab = tok_vocab_size(tk), stopped = 0;
    size_t bad = 0;
    for (; pos + 1 < size; pos += 2) {
        int32_t id = (int32_t)((data[pos] | data[pos + 1] << 8) % (vocab + 2));
        size_t before = text.n;
        rc = detok_feed(d, id, &text, err);
        if (id >= vocab) {
            /* past the vocabulary (a model's padded rows): no text, no error */
            if (rc < 0 || text.n != before) abort();
            continue;
        }
        if (rc < 0) abort();
        if (stopped && text.n != before) abort();
        if (rc == DETOK_STOPPED) {
            stopped = 1;
            if (detok_stop_index(d) < 0 || detok_stop_index(d) >= (int)n_stops) abort();
        }
        if (utf8_check(text.s, text.n, &bad) != 0) {
            fprintf(stderr, "detok: invalid UTF-8 at byte %zu of %zu after id %d\n", bad, text.n,
                    (int)id);
            for (size_t i = 0; i < text.n; i++) fprintf(stderr, "%02x", (unsigned char)text.s[i]);
            fprintf(stderr, "\n");
            abort();
        }
    }
    size_t before = text.n;
    rc = detok_finish(d, &text);
    /* DETOK_STOPPED from detok_finish (detok.h says 0 or ERR_NOMEM): after an earlier stop, and
     * when the U+FFFD that replaces an unfinished trailing character completes a stop string */
    if (rc != 0 && rc != DETOK_STOPPED) {
        fprintf(stderr, "detok_finish: rc %d (stopped %d)\n", rc, stopped);
        abort();
    }
    if (stopped && text.n != before) abort();
    if (rc == DETOK_STOPPED) stopped = 1;
    if (utf8_check(text.s, text.n, &bad) != 0) {
        fprintf(stderr, "detok_finish: invalid UTF-8 at byte %zu of %zu:\n", bad, text.n);
        for (size_t i = 0; i < text.n; i++) fprintf(stderr, "%02x", (unsigned char)text.s[i]);
        fprintf(stderr, "\n");
        abort();
    }
    if (stopped)
        for (size_t i = 0; i < n_stops; i++)
            if (stops[i][0] && contains(&text, stops[i])) abort();
    sbuf_fini(&text);
    detok_destroy(d);
out:
    for (size_t i = 0; i < 4; i++) free(stops[i]);
    return 0;
}
