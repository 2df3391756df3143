/* served.c - the model names this server answers to (see served.h). */
#include "served.h"

#include "common/err.h"

#include <stdio.h>
#include <string.h>

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* The next comma-separated item of *p, trimmed: [*a, *b). Returns 0 at the end of the list. */
static int next_item(const char **p, const char **a, const char **b)
{
    const char *s = *p;
    if (!s) return 0;
    const char *comma = strchr(s, ',');
    const char *e = comma ? comma : s + strlen(s);
    *p = comma ? comma + 1 : NULL;
    while (s < e && is_space(*s)) s++;
    while (e > s && is_space(e[-1])) e--;
    *a = s;
    *b = e;
    return 1;
}

static int blank(const char *list)
{
    for (; list && *list; list++)
        if (!is_space(*list)) return 0;
    return 1;
}

int served_check(const char *list, char *err)
{
    if (blank(list)) return 0;
    const char *p = list, *a, *b;
    int n = 0;
    while (next_item(&p, &a, &b)) {
        if (a == b)
            return err_set(err, ERR_CONFIG, "model.served_names: an empty name in '%.100s'", list);
        if (b - a > SERVED_MAX_NAME_LEN)
            return err_set(err, ERR_CONFIG, "model.served_names: a name longer than %d bytes",
                           SERVED_MAX_NAME_LEN);
        if (++n > SERVED_MAX_NAMES)
            return err_set(err, ERR_CONFIG, "model.served_names: more than %d names",
                           SERVED_MAX_NAMES);
    }
    return 0;
}

int served_has(const char *list, const char *fallback, const char *name)
{
    if (blank(list)) return strcmp(name, fallback) == 0;
    const char *p = list, *a, *b;
    size_t n = strlen(name);
    while (next_item(&p, &a, &b))
        if ((size_t)(b - a) == n && memcmp(a, name, n) == 0) return 1;
    return 0;
}

int served_name(const char *list, const char *fallback, int i, char *buf)
{
    if (blank(list)) {
        if (i != 0) return 0;
        snprintf(buf, SERVED_MAX_NAME_LEN + 1, "%s", fallback);
        return 1;
    }
    const char *p = list, *a, *b;
    for (int k = 0; next_item(&p, &a, &b); k++) {
        if (k < i) continue;
        size_t n = (size_t)(b - a) > SERVED_MAX_NAME_LEN ? SERVED_MAX_NAME_LEN : (size_t)(b - a);
        memcpy(buf, a, n);
        buf[n] = 0;
        return 1;
    }
    return 0;
}
