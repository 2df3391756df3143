/* mapfile.c - the one way model files are opened (read-only, private mapping, size checked),
 * parts of the mapping made anonymous for pinning (wt_pages_anonymous), and files are
 * written (PATH.tmp, renamed over PATH when complete, so a crash never leaves a partial model).
 * Threads: any; no shared state. */
#include "weights_internal.h"

#include "common/err.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int wt__map_file(const char *path, size_t min_size, const char *what, const uint8_t **map,
                 size_t *size, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size < min_size) {
        close(fd);
        return err_set(err, ERR_FORMAT, "%s: too small for a %s file (%lld bytes)", path, what,
                       (long long)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return err_set(err, ERR_IO, "%s: mmap: %s", path, strerror(errno));
    *map = m;
    *size = (size_t)st.st_size;
    return 0;
}

struct copy_part {
    char *dst;
    const char *src;
    size_t n;
};

static void *copy_part(void *arg)
{
    struct copy_part *c = arg;
    memcpy(c->dst, c->src, c->n);
    return NULL;
}

/* memcpy on up to `threads` threads (one reader alone does not reach the DRAM or page-cache
 * rate); a thread that cannot start leaves its part to the caller */
static void copy_threads(char *dst, const char *src, size_t len, int threads)
{
    enum { MAXT = 16 };
    const size_t min_part = (size_t)16 << 20;
    if (threads > MAXT) threads = MAXT;
    if (threads < 1 || len < 2 * min_part) threads = 1;
    if ((size_t)threads > len / min_part) threads = (int)(len / min_part);
    if (threads < 1) threads = 1;
    pthread_t t[MAXT];
    struct copy_part c[MAXT];
    int started[MAXT] = {0};
    size_t part = (len / (size_t)threads + 4095) & ~(size_t)4095;
    for (int i = 0; i < threads; i++) {
        size_t o = (size_t)i * part, k = o >= len ? 0 : (len - o < part ? len - o : part);
        c[i] = (struct copy_part){dst + o, src + o, k};
        if (i > 0 && k) started[i] = pthread_create(&t[i], NULL, copy_part, &c[i]) == 0;
    }
    for (int i = 0; i < threads; i++)
        if (!started[i] && c[i].n) copy_part(&c[i]);
    for (int i = 1; i < threads; i++)
        if (started[i]) pthread_join(t[i], NULL);
}

int wt_pages_anonymous(const void *p, size_t n, int threads, char *err)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(pg - 1), hi = ((uintptr_t)p + n + pg - 1) & ~(pg - 1);
    if (hi <= lo) return 0;
    size_t len = hi - lo;
    void *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return err_set(err, ERR_NOMEM, "out of memory for a %.1f MiB anonymous copy of weights",
                       (double)len / (1 << 20));
    copy_threads(a, (const char *)lo, len, threads);
    /* read-only like the mapping it replaces; mremap moves the pages over the old range in one
     * step, so a reader never sees a hole */
    if (mprotect(a, len, PROT_READ) != 0 ||
        mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)lo) == MAP_FAILED) {
        int e = errno;
        munmap(a, len);
        return err_set(err, ERR_IO, "replacing %.1f MiB of mapped weights by anonymous memory: %s",
                       (double)len / (1 << 20), strerror(e));
    }
    return 0;
}

int wt__tmp_create(const char *path, char **tmp, FILE **f, char *err)
{
    *f = NULL;
    *tmp = malloc(strlen(path) + 5);
    if (!*tmp) return err_set(err, ERR_NOMEM, "out of memory");
    sprintf(*tmp, "%s.tmp", path);
    *f = fopen(*tmp, "wb");
    if (!*f) return err_set(err, ERR_IO, "%s: %s", *tmp, strerror(errno));
    setvbuf(*f, NULL, _IOFBF, 1 << 20);
    return 0;
}

int wt__tmp_commit(FILE *f, const char *tmp, const char *path, char *err)
{
    off_t end = ftello(f);
    if (fflush(f) != 0 || ftruncate(fileno(f), end) != 0) { /* a trailing hole */
        int rc = err_set(err, ERR_IO, "%s: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return rc;
    }
    if (fclose(f) != 0) {
        int rc = err_set(err, ERR_IO, "%s: close: %s", tmp, strerror(errno));
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int rc = err_set(err, ERR_IO, "%s: rename: %s", path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    return 0;
}

int wt__tmp_write(FILE *f, const char *tmp, int *failed, const void *p, size_t n, char *err)
{
    if (!p) {
        if (n && fseeko(f, (off_t)n, SEEK_CUR) != 0) {
            *failed = 1;
            return err_set(err, ERR_IO, "%s: seek: %s", tmp, strerror(errno));
        }
        return 0;
    }
    if (n && fwrite(p, 1, n, f) != n) {
        *failed = 1;
        return err_set(err, ERR_IO, "%s: write: %s", tmp, strerror(errno));
    }
    return 0;
}
