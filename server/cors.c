/* cors.c - matching a request's Origin against server.cors_origins (cors.h). */
#include "cors.h"

#include "common/err.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

const char *cors_origin_list(const struct cfg *c)
{
    if (c->server_cors_origins && c->server_cors_origins[0]) return c->server_cors_origins;
    return c->server_cors ? "*" : "";
}

int cors_check(const char *list, char *err)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        int len = (int)(b - a);
        const char *sep = len > 0 ? strstr(a, "://") : NULL;
        int ok = len == 1 && *a == '*';
        if (!ok && sep && sep > a && sep + 3 < b) {
            ok = 1; /* a scheme, then a host[:port] without '/', spaces or controls */
            for (const char *c = sep + 3; c < b; c++)
                if (*c == '/' || (unsigned char)*c <= ' ' || *c == 0x7f) ok = 0;
        }
        if (!ok)
            return err_set(err, ERR_CONFIG,
                           "server.cors_origins: '%.*s' is not an origin (scheme://host[:port], no "
                           "path) or *",
                           len > 100 ? 100 : len, a);
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

const char *cors_allow_origin(const char *list, const char *origin)
{
    if (!list || !origin || !*origin) return NULL;
    size_t olen = strlen(origin);
    int wildcard = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if (b - a == 1 && *a == '*') wildcard = 1;
        if ((size_t)(b - a) == olen && strncasecmp(a, origin, olen) == 0) return origin;
        p += n;
        if (*p == ',') p++;
    }
    return wildcard ? "*" : NULL;
}

int cors_headers_echoable(const char *value)
{
    if (!value || strlen(value) > 512) return 0;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (!isalnum(*p) && !strchr("-_, ", *p)) return 0;
    return 1;
}
