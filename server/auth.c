/* auth.c - API key file loading and constant-time checking.
 *
 * Every key is stored in a fixed AUTH_MAX_KEY+1 byte slot (zero padded) with its length. A check
 * pads the candidate the same way and compares it against *every* key with an OR-accumulated
 * XOR over the whole slot plus the length, so the time depends only on the number of keys, not
 * on the content of either string. The file permission check refuses world-readable files
 * (a key anyone on the host can read is no key).
 */
#include "auth.h"

#include "common/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct key {
    unsigned char b[AUTH_MAX_KEY + 1];
    size_t len;
};

struct auth {
    char *path; /* NULL: authentication disabled */
    pthread_rwlock_t lock;
    struct key *keys;
    int n_keys;
};

static int load_keys(const char *path, struct key **out, int *n_out, char *err)
{
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f) return err_set(err, ERR_IO, "cannot open API key file %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return err_set(err, ERR_IO, "cannot stat API key file %s", path);
    }
    if (st.st_mode & S_IROTH) {
        fclose(f);
        return err_set(err, ERR_CONFIG, "API key file %s is world-readable; chmod o-r it", path);
    }
    struct key *keys = NULL;
    int n = 0, cap = 0, lineno = 0, rc = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        char *s = line, *e = line + len;
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
        if (s == e || *s == '#') continue;
        if (e - s > AUTH_MAX_KEY) {
            rc = err_set(err, ERR_CONFIG, "API key file %s:%d: key longer than %d bytes", path,
                         lineno, AUTH_MAX_KEY);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            struct key *k = realloc(keys, (size_t)cap * sizeof *k);
            if (!k) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                break;
            }
            keys = k;
        }
        memset(&keys[n], 0, sizeof keys[n]);
        memcpy(keys[n].b, s, (size_t)(e - s));
        keys[n].len = (size_t)(e - s);
        n++;
    }
    free(line);
    fclose(f);
    if (rc == 0 && n == 0) rc = err_set(err, ERR_CONFIG, "API key file %s holds no key", path);
    if (rc) {
        if (keys) memset(keys, 0, (size_t)cap * sizeof *keys);
        free(keys);
        return rc;
    }
    *out = keys;
    *n_out = n;
    return 0;
}

int auth_create(const char *path, struct auth **out, char *err)
{
    struct auth *a = calloc(1, sizeof *a);
    if (!a) return err_set(err, ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&a->lock, NULL);
    if (path && *path) {
        a->path = strdup(path);
        int rc = a->path ? load_keys(path, &a->keys, &a->n_keys, err)
                         : err_set(err, ERR_NOMEM, "out of memory");
        if (rc) {
            auth_destroy(a);
            return rc;
        }
    }
    *out = a;
    return 0;
}

void auth_destroy(struct auth *a)
{
    if (!a) return;
    if (a->keys) memset(a->keys, 0, (size_t)a->n_keys * sizeof *a->keys);
    free(a->keys);
    free(a->path);
    pthread_rwlock_destroy(&a->lock);
    free(a);
}

int auth_reload(struct auth *a, char *err)
{
    if (!a->path) return 0;
    struct key *keys;
    int n;
    int rc = load_keys(a->path, &keys, &n, err);
    if (rc) return rc;
    pthread_rwlock_wrlock(&a->lock);
    struct key *old = a->keys;
    int old_n = a->n_keys;
    a->keys = keys;
    a->n_keys = n;
    pthread_rwlock_unlock(&a->lock);
    if (old) memset(old, 0, (size_t)old_n * sizeof *old);
    free(old);
    return 0;
}

int auth_enabled(const struct auth *a) { return a && a->path; }

int auth_key_count(struct auth *a)
{
    pthread_rwlock_rdlock(&a->lock);
    int n = a->n_keys;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

int auth_check(struct auth *a, const char *authorization)
{
    if (!auth_enabled(a)) return 1;
    if (!authorization) return 0;
    const char *p = authorization;
    while (*p == ' ') p++;
    if (strncasecmp(p, "Bearer ", 7) != 0) return 0;
    return auth_check_key(a, p + 7);
}

int auth_check_key(struct auth *a, const char *key)
{
    if (!auth_enabled(a)) return 1;
    if (!key) return 0;
    const char *p = key;
    while (*p == ' ') p++;
    size_t len = strlen(p);
    while (len && p[len - 1] == ' ') len--;
    if (len == 0 || len > AUTH_MAX_KEY) return 0;
    unsigned char cand[AUTH_MAX_KEY + 1] = {0};
    memcpy(cand, p, len);

    int ok = 0;
    pthread_rwlock_rdlock(&a->lock);
    for (int k = 0; k < a->n_keys; k++) {
        volatile unsigned char diff = 0;
        for (size_t i = 0; i < sizeof cand; i++) diff |= cand[i] ^ a->keys[k].b[i];
        size_t dl = len ^ a->keys[k].len;
        ok |= (diff == 0) & (dl == 0);
    }
    pthread_rwlock_unlock(&a->lock);
    memset(cand, 0, sizeof cand);
    return ok;
}
