/* cors.c - matching a request's Origin against server.cors_origins (cors.h). */
#include "cors.h"

#include <string.h>
#include <strings.h>

const char *cors_origin_list(const struct cfg *c)
{
    if (c->server_cors_origins && c->server_cors_origins[0]) return c->server_cors_origins;
    return c->server_cors ? "*" : "";
}

int cors_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin) return 0;
    size_t olen = strlen(origin);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if (b - a == 1 && *a == '*') return 1;
        if ((size_t)(b - a) == olen && strncasecmp(a, origin, olen) == 0) return 1;
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}
