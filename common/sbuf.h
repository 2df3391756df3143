/* sbuf.h - a growable byte string.
 *
 * Zero-initialize ({0}) before first use. After a successful append s[n] == 0, so s can be used
 * as a C string when the content has no NUL bytes (it may have some: n is authoritative). The
 * buffer grows by doubling from 64 bytes and is never shrunk, so one buffer reused across calls
 * (n = 0) does not churn the heap.
 * Ownership: whoever holds the struct owns s; sbuf_fini frees it and leaves an empty buffer.
 * Threads: no shared state; one thread at a time per buffer.
 */
#ifndef TANDEM_SBUF_H
#define TANDEM_SBUF_H

#include <stddef.h>

struct sbuf {
    char *s;
    size_t n, cap;
};

void sbuf_fini(struct sbuf *b);                           /* accepts NULL */
int sbuf_append(struct sbuf *b, const char *p, size_t n); /* 0 or ERR_NOMEM */
/* Room for `extra` more bytes and the terminating NUL without another allocation; 0 or
 * ERR_NOMEM (also when the size would overflow). */
int sbuf_reserve(struct sbuf *b, size_t extra);

#endif
