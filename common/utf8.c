/* utf8.c - see utf8.h. */
#include "utf8.h"

#include "err.h"
#include "sbuf.h"

#include <string.h>

int utf8_step(const char *s, size_t n)
{
    int st = 0;
    for (size_t k = 0; k < n; k++) {
        st = utf8_dfa_next(st, (uint8_t)s[k]);
        if (st < 0) return k == 0 ? -1 : -(int)k;
        if (st == 0) return (int)k + 1;
    }
    return 0;
}

int utf8_check(const char *s, size_t n, size_t *bad_at)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = utf8_decode(s + i, n - i, &cp);
        if (!l) {
            if (bad_at) *bad_at = i;
            return ERR_UTF8;
        }
        i += l;
    }
    return 0;
}

int utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int utf8_append_lossy(struct sbuf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t bad = 0;
        if (utf8_check(s + i, n - i, &bad) == 0) return sbuf_append(out, s + i, n - i);
        if (sbuf_append(out, s + i, bad) || sbuf_append(out, UTF8_REPLACEMENT, 3)) return ERR_NOMEM;
        i += bad + 1;
    }
    return 0;
}
