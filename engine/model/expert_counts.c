/* expert_counts.c - routing counts per (MoE layer, expert), their file and the hot-set choice
 * (see expert_counts.h for the contract and the file format).
 */
#include "engine/model/expert_counts.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define MAGIC "tandem-expert-counts"
#define VERSION 1
#define MAX_EXPERTS 65536
#define SMALL_CALL 32 /* routes of a call up to which each is added on its own */

struct expert_counts {
    struct ec_shape sh;
    int *layer_of;         /* [moe_layers] */
    _Atomic uint64_t *cnt; /* [moe_layers][n_expert] */
    _Atomic uint64_t routes, hot;
    struct { /* ec_autosave_* */
        pthread_mutex_t mu;
        pthread_cond_t cv;
        pthread_t th;
        int running, stop, period_ms;
        char *path;
        uint64_t saved_total; /* ec_total at the last successful save */
        char last_err[ERR_LEN];
    } as;
};

static uint64_t ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit((_Atomic uint64_t *)a, memory_order_relaxed);
}

int ec_create(const struct wt_hparams *hp, struct expert_counts **out, char *err)
{
    *out = NULL;
    int M = 0;
    for (int l = 0; l < hp->n_layers; l++) M += wt_layer_is_moe(hp, l) != 0;
    if (M < 1 || hp->n_routed < 1 || hp->n_routed > MAX_EXPERTS || hp->top_k < 1)
        return err_set(err, ERR_INVAL,
                       "expert counts: the model has no routed experts to count (%d MoE layers, "
                       "%d experts)",
                       M, hp->n_routed);
    struct expert_counts *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "expert counts: out of memory");
    c->sh = (struct ec_shape){.n_layers = hp->n_layers,
                              .moe_layers = M,
                              .n_expert = hp->n_routed,
                              .top_k = hp->top_k,
                              .hidden = hp->hidden};
    c->layer_of = malloc((size_t)M * sizeof *c->layer_of);
    c->cnt = malloc((size_t)M * hp->n_routed * sizeof *c->cnt);
    if (!c->layer_of || !c->cnt) {
        free(c->layer_of);
        free(c->cnt);
        free(c);
        return err_set(err, ERR_NOMEM, "expert counts: out of memory");
    }
    for (int l = 0, r = 0; l < hp->n_layers; l++)
        if (wt_layer_is_moe(hp, l)) c->layer_of[r++] = l;
    for (size_t i = 0; i < (size_t)M * hp->n_routed; i++) atomic_init(&c->cnt[i], 0);
    atomic_init(&c->routes, 0);
    atomic_init(&c->hot, 0);
    pthread_mutex_init(&c->as.mu, NULL);
    pthread_cond_init(&c->as.cv, NULL);
    *out = c;
    return 0;
}

void ec_destroy(struct expert_counts *c)
{
    if (!c) return;
    ec_autosave_stop(c, NULL);
    pthread_mutex_destroy(&c->as.mu);
    pthread_cond_destroy(&c->as.cv);
    free(c->layer_of);
    free(c->cnt);
    free(c);
}

const struct ec_shape *ec_shape(const struct expert_counts *c) { return &c->sh; }

int ec_layer_of(const struct expert_counts *c, int row)
{
    return row >= 0 && row < c->sh.moe_layers ? c->layer_of[row] : -1;
}

void ec_add(struct expert_counts *c, int row, const int32_t *ids, int64_t n)
{
    if (!c || row < 0 || row >= c->sh.moe_layers || n <= 0) return;
    const int E = c->sh.n_expert;
    _Atomic uint64_t *r = c->cnt + (size_t)row * E;
    uint64_t added = 0;
    if (n <= SMALL_CALL || E > 1024) {
        for (int64_t i = 0; i < n; i++)
            if (ids[i] >= 0 && ids[i] < E) {
                atomic_fetch_add_explicit(&r[ids[i]], 1, memory_order_relaxed);
                added++;
            }
    } else {
        uint32_t h[1024];
        memset(h, 0, (size_t)E * sizeof *h);
        for (int64_t i = 0; i < n; i++)
            if (ids[i] >= 0 && ids[i] < E) h[ids[i]]++;
        for (int e = 0; e < E; e++)
            if (h[e]) {
                atomic_fetch_add_explicit(&r[e], h[e], memory_order_relaxed);
                added += h[e];
            }
    }
    atomic_fetch_add_explicit(&c->routes, added, memory_order_relaxed);
}

void ec_add_hot(struct expert_counts *c, int64_t routes)
{
    if (c && routes > 0) atomic_fetch_add_explicit(&c->hot, (uint64_t)routes, memory_order_relaxed);
}

uint64_t ec_get(const struct expert_counts *c, int row, int e)
{
    if (row < 0 || row >= c->sh.moe_layers || e < 0 || e >= c->sh.n_expert) return 0;
    return ld(&c->cnt[(size_t)row * c->sh.n_expert + e]);
}

void ec_snapshot(const struct expert_counts *c, uint64_t *out)
{
    size_t n = (size_t)c->sh.moe_layers * c->sh.n_expert;
    for (size_t i = 0; i < n; i++) out[i] = ld(&c->cnt[i]);
}

uint64_t ec_total(const struct expert_counts *c)
{
    uint64_t s = 0;
    size_t n = (size_t)c->sh.moe_layers * c->sh.n_expert;
    for (size_t i = 0; i < n; i++) s += ld(&c->cnt[i]);
    return s;
}

uint64_t ec_routes(const struct expert_counts *c) { return c ? ld(&c->routes) : 0; }
uint64_t ec_hot_routes(const struct expert_counts *c) { return c ? ld(&c->hot) : 0; }

/* ---------------------------------------------------------------- the file */

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* the file's text without its end line; NULL when out of memory */
static char *render(const struct expert_counts *c, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    const int M = c->sh.moe_layers, E = c->sh.n_expert;
    uint64_t *snap = malloc((size_t)M * E * sizeof *snap);
    if (!snap) {
        fclose(f);
        free(buf);
        return NULL;
    }
    ec_snapshot(c, snap);
    uint64_t total = 0;
    for (size_t i = 0; i < (size_t)M * E; i++) total += snap[i];
    fprintf(f, "%s %d\nshape layers %d moe_layers %d experts %d top_k %d hidden %d\ntotal %llu\n",
            MAGIC, VERSION, c->sh.n_layers, M, E, c->sh.top_k, c->sh.hidden,
            (unsigned long long)total);
    for (int r = 0; r < M; r++) {
        fprintf(f, "layer %d", c->layer_of[r]);
        for (int e = 0; e < E; e++)
            fprintf(f, " %llu", (unsigned long long)snap[(size_t)r * E + e]);
        fputc('\n', f);
    }
    free(snap);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* fsync the directory holding path, so the rename itself is durable (best effort) */
static void sync_dir(const char *path)
{
    char dir[4096];
    const char *s = strrchr(path, '/');
    if (!s) snprintf(dir, sizeof dir, ".");
    else if (s == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(s - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int ec_save(const struct expert_counts *c, const char *path, char *err)
{
    static _Atomic unsigned seq;
    if (!path || !path[0]) return err_set(err, ERR_IO, "expert counts: no file name");
    size_t len = 0;
    char *text = render(c, &len);
    if (!text) return err_set(err, ERR_NOMEM, "expert counts: out of memory");
    char endl[48];
    int el = snprintf(endl, sizeof endl, "end %016llx\n", (unsigned long long)fnv1a(text, len));
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 64);
    if (!tmp) {
        free(text);
        return err_set(err, ERR_NOMEM, "expert counts: out of memory");
    }
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        unsigned k = atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed);
        snprintf(tmp, pl + 64, "%s.tmp.%ld.%u", path, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    int rc = 0;
    if (fd < 0) {
        rc = err_set(err, ERR_IO, "expert counts: cannot create %s: %s", tmp, strerror(errno));
    } else {
        int bad = write_all(fd, text, len) || write_all(fd, endl, (size_t)el) || fsync(fd);
        int e = errno;
        if (close(fd) != 0 && !bad) {
            bad = 1;
            e = errno;
        }
        if (bad) rc = err_set(err, ERR_IO, "expert counts: cannot write %s: %s", tmp, strerror(e));
        else if (rename(tmp, path) != 0)
            rc = err_set(err, ERR_IO, "expert counts: cannot rename %s to %s: %s", tmp, path,
                         strerror(errno));
        if (rc) unlink(tmp);
        else sync_dir(path);
    }
    free(tmp);
    free(text);
    return rc;
}

/* a strict reader over one line: words separated by single spaces */
struct cur {
    const char *p, *end; /* end: the line's '\n' */
};

static int word(struct cur *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) || (c->p + n < c->end && c->p[n] != ' '))
        return -1;
    c->p += n;
    if (c->p < c->end) c->p++;
    return 0;
}

static int num(struct cur *c, uint64_t max, uint64_t *v)
{
    uint64_t x = 0;
    const char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');
        if (x > (max - d) / 10) return -1;
        x = x * 10 + d;
        c->p++;
    }
    if (c->p == s || c->p - s > 20 || (c->p < c->end && *c->p != ' ')) return -1;
    if (c->p < c->end) {
        c->p++;
        if (c->p == c->end) return -1; /* a trailing space */
    }
    *v = x;
    return 0;
}

static int next_line(const char **p, const char *end, struct cur *c)
{
    if (*p >= end) return -1;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl) return -1;
    c->p = *p;
    c->end = nl;
    *p = nl + 1;
    return 0;
}

static int parse(struct expert_counts *c, const char *path, const char *buf, size_t n,
                 uint64_t *vals, char *err)
{
#define BAD(...) err_set(err, ERR_FORMAT, __VA_ARGS__)
    /* the end line and its checksum first: a truncated or damaged file is "corrupt" whatever
     * else it says */
    if (n < 2 || buf[n - 1] != '\n')
        return BAD("expert counts: %s is corrupt (truncated: no final newline)", path);
    const char *last = buf + n - 1;
    while (last > buf && last[-1] != '\n') last--;
    struct cur e = {.p = last, .end = buf + n - 1};
    uint64_t want = 0;
    if (word(&e, "end") || e.end - e.p != 16)
        return BAD("expert counts: %s is corrupt (truncated: no end line)", path);
    for (const char *q = e.p; q < e.end; q++) {
        int d = *q >= '0' && *q <= '9' ? *q - '0' : *q >= 'a' && *q <= 'f' ? *q - 'a' + 10 : -1;
        if (d < 0) return BAD("expert counts: %s is corrupt (bad checksum field)", path);
        want = want << 4 | (uint64_t)d;
    }
    if (fnv1a(buf, (size_t)(last - buf)) != want)
        return BAD("expert counts: %s is corrupt (checksum mismatch)", path);
    const char *p = buf, *body_end = last;
    struct cur l;
    uint64_t v[5];
    if (next_line(&p, body_end, &l) || word(&l, MAGIC) || num(&l, 1000, &v[0]) || l.p != l.end)
        return BAD("expert counts: %s is not an expert counts file (no '%s' header)", path, MAGIC);
    if (v[0] != VERSION)
        return BAD("expert counts: %s has version %llu, this tandem reads %d", path,
                   (unsigned long long)v[0], VERSION);
    static const char *keys[5] = {"layers", "moe_layers", "experts", "top_k", "hidden"};
    if (next_line(&p, body_end, &l) || word(&l, "shape"))
        return BAD("expert counts: %s is corrupt (no shape line)", path);
    for (int i = 0; i < 5; i++)
        if (word(&l, keys[i]) || num(&l, 1u << 30, &v[i]))
            return BAD("expert counts: %s is corrupt (shape line)", path);
    if (l.p != l.end) return BAD("expert counts: %s is corrupt (shape line)", path);
    const struct ec_shape *s = &c->sh;
    if ((int)v[0] != s->n_layers || (int)v[1] != s->moe_layers || (int)v[2] != s->n_expert ||
        (int)v[3] != s->top_k || (int)v[4] != s->hidden)
        return err_set(err, ERR_INVAL,
                       "expert counts: %s is for another model shape (layers %llu, moe_layers "
                       "%llu, experts %llu, top_k %llu, hidden %llu; this model: %d, %d, %d, %d, "
                       "%d)",
                       path, (unsigned long long)v[0], (unsigned long long)v[1],
                       (unsigned long long)v[2], (unsigned long long)v[3], (unsigned long long)v[4],
                       s->n_layers, s->moe_layers, s->n_expert, s->top_k, s->hidden);
    uint64_t total = 0, sum = 0;
    if (next_line(&p, body_end, &l) || word(&l, "total") || num(&l, UINT64_MAX, &total) ||
        l.p != l.end)
        return BAD("expert counts: %s is corrupt (no total line)", path);
    const int E = s->n_expert;
    for (int r = 0; r < s->moe_layers; r++) {
        uint64_t id;
        if (next_line(&p, body_end, &l) || word(&l, "layer") || num(&l, 1u << 30, &id))
            return BAD("expert counts: %s is corrupt (MoE row %d)", path, r);
        if ((int)id != c->layer_of[r])
            return err_set(err, ERR_INVAL,
                           "expert counts: %s is for another model shape (MoE row %d is layer "
                           "%llu, here layer %d)",
                           path, r, (unsigned long long)id, c->layer_of[r]);
        for (int x = 0; x < E; x++) {
            uint64_t *d = &vals[(size_t)r * E + x];
            if (num(&l, UINT64_MAX, d))
                return BAD("expert counts: %s is corrupt (layer %llu, expert %d)", path,
                           (unsigned long long)id, x);
            if (sum + *d < sum) return BAD("expert counts: %s is corrupt (overflow)", path);
            sum += *d;
        }
        if (l.p != l.end)
            return BAD("expert counts: %s is corrupt (layer %llu has more than %d counts)", path,
                       (unsigned long long)id, E);
    }
    if (p != body_end)
        return BAD("expert counts: %s is corrupt (lines after the last layer)", path);
    if (sum != total)
        return BAD("expert counts: %s is corrupt (total %llu, counts sum to %llu)", path,
                   (unsigned long long)total, (unsigned long long)sum);
    return 0;
#undef BAD
}

int ec_load(struct expert_counts *c, const char *path, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO,
                       "expert counts: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    const int M = c->sh.moe_layers, E = c->sh.n_expert;
    /* an honest file: 21 bytes a count at most, plus the few fixed lines */
    size_t cap = (size_t)M * (24 + (size_t)E * 21) + 4096;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, ERR_IO, "expert counts: %s is not a regular file", path);
    }
    if ((size_t)st.st_size > cap) {
        close(fd);
        return err_set(err, ERR_FORMAT,
                       "expert counts: %s is corrupt (%lld bytes, more than a counts file of "
                       "this model can have)",
                       path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    uint64_t *vals = malloc((size_t)M * E * sizeof *vals);
    int rc = 0;
    if (!buf || !vals) rc = err_set(err, ERR_NOMEM, "expert counts: out of memory");
    while (!rc && got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            rc = err_set(err, ERR_IO, "expert counts: cannot read %s: %s", path, strerror(errno));
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (!rc) rc = parse(c, path, buf, got, vals, err);
    if (!rc)
        for (size_t i = 0; i < (size_t)M * E; i++)
            atomic_fetch_add_explicit(&c->cnt[i], vals[i], memory_order_relaxed);
    free(buf);
    free(vals);
    return rc;
}

/* ---------------------------------------------------------------- autosave */

static void autosave_once(struct expert_counts *c, int last)
{
    uint64_t t = ec_total(c);
    if (!last && t == c->as.saved_total) return;
    char e2[ERR_LEN];
    if (ec_save(c, c->as.path, e2) == 0) {
        c->as.saved_total = t;
        c->as.last_err[0] = 0;
        return;
    }
    if (strcmp(e2, c->as.last_err)) {
        LOG_WARN("engine", "%s (the routing counts are kept in memory; retried later)", e2);
        snprintf(c->as.last_err, sizeof c->as.last_err, "%s", e2);
    }
}

static void *autosave_main(void *ud)
{
    struct expert_counts *c = ud;
    pthread_mutex_lock(&c->as.mu);
    while (!c->as.stop) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += c->as.period_ms / 1000;
        dl.tv_nsec += (long)(c->as.period_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        int r = 0;
        while (!c->as.stop && r == 0) r = pthread_cond_timedwait(&c->as.cv, &c->as.mu, &dl);
        if (c->as.stop) break;
        pthread_mutex_unlock(&c->as.mu);
        autosave_once(c, 0);
        pthread_mutex_lock(&c->as.mu);
    }
    pthread_mutex_unlock(&c->as.mu);
    return NULL;
}

int ec_autosave_start(struct expert_counts *c, const char *path, int period_ms, char *err)
{
    if (c->as.running) return err_set(err, ERR_INTERNAL, "expert counts: autosave runs already");
    if (!path || !path[0] || period_ms < 1)
        return err_set(err, ERR_INVAL, "expert counts: autosave needs a file and a period");
    if (!(c->as.path = strdup(path)))
        return err_set(err, ERR_NOMEM, "expert counts: out of memory");
    c->as.period_ms = period_ms;
    c->as.stop = 0;
    c->as.saved_total = ec_total(c);
    if (pthread_create(&c->as.th, NULL, autosave_main, c) != 0) {
        free(c->as.path);
        c->as.path = NULL;
        return err_set(err, ERR_INTERNAL, "expert counts: cannot start the autosave thread");
    }
    c->as.running = 1;
    return 0;
}

int ec_autosave_stop(struct expert_counts *c, char *err)
{
    if (!c || !c->as.running) return 0;
    pthread_mutex_lock(&c->as.mu);
    c->as.stop = 1;
    pthread_cond_signal(&c->as.cv);
    pthread_mutex_unlock(&c->as.mu);
    pthread_join(c->as.th, NULL);
    c->as.running = 0;
    int rc = ec_save(c, c->as.path, err);
    if (!rc) c->as.saved_total = ec_total(c);
    free(c->as.path);
    c->as.path = NULL;
    return rc;
}

/* ---------------------------------------------------------------- the hot-set choice */

int ec_cand_cmp(const void *a, const void *b)
{
    const struct ec_cand *x = a, *y = b;
    /* routes per byte, most first: x.routes / x.bytes vs y.routes / y.bytes */
    long double l = (long double)x->routes * (long double)y->bytes;
    long double r = (long double)y->routes * (long double)x->bytes;
    if (l != r) return l > r ? -1 : 1;
    if (x->e != y->e) return x->e < y->e ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

int ec_choose_hot(const struct expert_counts *c, const size_t *bytes, double budget, uint8_t *hot,
                  struct ec_choice *out)
{
    const int M = c->sh.moe_layers, E = c->sh.n_expert;
    const size_t N = (size_t)M * E;
    memset(out, 0, sizeof *out);
    memset(hot, 0, N);
    struct ec_cand *cd = malloc(N * sizeof *cd);
    if (!cd) return ERR_NOMEM;
    size_t nc = 0;
    for (int r = 0; r < M; r++)
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)r * E + e;
            uint64_t k = ld(&c->cnt[i]);
            out->total += k;
            if (!bytes[i]) continue;
            cd[nc++] = (struct ec_cand){.routes = k, .bytes = bytes[i], .row = r, .e = e};
        }
    out->candidates = (int)nc;
    out->from_counts = out->total > 0;
    qsort(cd, nc, sizeof *cd, ec_cand_cmp);
    double left = budget;
    for (size_t i = 0; i < nc; i++) {
        if ((double)cd[i].bytes > left) continue;
        left -= (double)cd[i].bytes;
        hot[(size_t)cd[i].row * E + cd[i].e] = 1;
        out->chosen++;
        out->bytes += (double)cd[i].bytes;
        out->routes += cd[i].routes;
    }
    for (int r = 0; r < M; r++)
        for (int e = 0; e < E; e++)
            if (hot[(size_t)r * E + e]) {
                out->layers++;
                break;
            }
    free(cd);
    return out->chosen;
}

int ec_parse_hot(const char *s, enum ec_hot_mode *mode, long long *mib, char *err)
{
    *mode = EC_HOT_OFF;
    *mib = 0;
    if (!s || !s[0] || !strcmp(s, "off")) return 0;
    if (!strcmp(s, "auto")) {
        *mode = EC_HOT_AUTO;
        return 0;
    }
    long long v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9' && v <= (1ll << 24); p++) v = v * 10 + (*p - '0');
    if (p == s || *p || v < 1 || v > (1ll << 24))
        return err_set(err, ERR_CONFIG,
                       "gpu.hot_experts = '%s': must be off, auto or a number of MiB "
                       "(1..16777216)",
                       s);
    *mode = EC_HOT_MIB;
    *mib = v;
    return 0;
}
