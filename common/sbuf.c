/* sbuf.c - see sbuf.h. */
#include "sbuf.h"

#include "err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void sbuf_fini(struct sbuf *b)
{
    if (!b) return;
    free(b->s);
    b->s = NULL;
    b->n = b->cap = 0;
}

int sbuf_reserve(struct sbuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 4 - b->n) return ERR_NOMEM;
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *q = realloc(b->s, cap);
    if (!q) return ERR_NOMEM;
    b->s = q;
    b->cap = cap;
    return 0;
}

int sbuf_append(struct sbuf *b, const char *p, size_t n)
{
    int rc = sbuf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}
