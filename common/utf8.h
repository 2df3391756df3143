/* utf8.h - UTF-8: decoding with validation, validation of a buffer, encoding.
 *
 * Valid UTF-8 is RFC 3629's: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF, no truncated sequences. Every function here applies exactly that definition; they
 * differ only in what they report:
 *   utf8_decode      one complete character (tokenizer, JSON-space scans);
 *   utf8_step        one character of a stream that may continue (the incremental detokenizer):
 *                    an unfinished prefix is told apart from an invalid sequence;
 *   utf8_dfa_next    one byte at a time, for state kept between bytes (constrained decoding);
 *   utf8_check       a whole buffer (HTTP bodies, stop strings, GGUF names), with the offset;
 *   utf8_append_lossy a buffer made valid: invalid bytes become U+FFFD (JSON output).
 * utf8_decode and utf8_dfa_next are inline: they sit in per-byte loops of the tokenizer and of
 * constrained decoding.
 * Threads: pure functions, no state.
 */
#ifndef TANDEM_UTF8_H
#define TANDEM_UTF8_H

#include <stddef.h>
#include <stdint.h>

struct sbuf;

#define UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD, 3 bytes */

/* Length (1..4) of the valid UTF-8 sequence at s[0..n) (n >= 1) with its code point in *cp, or 0
 * when the bytes there are not a complete valid sequence. */
static inline size_t utf8_decode(const char *str, size_t n, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogates */
        *cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
        *cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* The validating automaton, one byte at a time. States: 0 at a character boundary; 1..3 that
 * many continuation bytes (80..BF) still to come; 4 after E0 (next A0..BF), 5 after ED (next
 * 80..9F), 6 after F0 (next 90..BF), 7 after F4 (next 80..8F). Returns the state after byte b,
 * or -1 when b cannot follow state st. */
#define UTF8_DFA_STATES 8
static inline int utf8_dfa_next(int st, uint8_t b)
{
    switch (st) {
    case 0:
        if (b < 0x80) return 0;
        if (b >= 0xC2 && b <= 0xDF) return 1;
        if (b == 0xE0) return 4;
        if (b == 0xED) return 5;
        if (b >= 0xE1 && b <= 0xEF) return 2;
        if (b == 0xF0) return 6;
        if (b >= 0xF1 && b <= 0xF3) return 3;
        if (b == 0xF4) return 7;
        return -1;
    case 1:
    case 2:
    case 3: return b >= 0x80 && b <= 0xBF ? st - 1 : -1;
    case 4: return b >= 0xA0 && b <= 0xBF ? 1 : -1;
    case 5: return b >= 0x80 && b <= 0x9F ? 1 : -1;
    case 6: return b >= 0x90 && b <= 0xBF ? 2 : -1;
    case 7: return b >= 0x80 && b <= 0x8F ? 2 : -1;
    }
    return -1;
}

/* One character of a stream at s[0..n) (n >= 1): > 0, the length of a complete valid character;
 * 0, s[0..n) is a valid but unfinished prefix (more bytes may complete it); < 0, minus the length
 * of the maximal invalid subpart (Unicode's "maximal subpart" rule: the lead byte and the
 * continuation bytes that were still acceptable, at least 1), which one U+FFFD replaces. */
int utf8_step(const char *s, size_t n);

/* Check that s[0..n) is valid UTF-8. Returns 0, or ERR_UTF8 with the offset of the first byte of
 * the first invalid or truncated sequence in *bad_at (when bad_at is not NULL). */
int utf8_check(const char *s, size_t n, size_t *bad_at);

/* Write cp (at most U+10FFFF; callers never pass a surrogate) as UTF-8 into out, which has room
 * for 4 bytes. Returns the length, 1..4. */
int utf8_encode(uint32_t cp, char *out);

/* Append s[0..n) to out as valid UTF-8: where the input stops being valid (utf8_check's bad_at),
 * that one byte becomes U+FFFD and checking resumes at the next byte. Returns 0 or ERR_NOMEM
 * (out then holds a prefix of the result). */
int utf8_append_lossy(struct sbuf *out, const char *s, size_t n);

#endif
