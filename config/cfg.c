/* cfg.c - loading struct cfg from defaults, an INI file, the environment and flags.
 *
 * The options table (options.def) is expanded into `cfg_opts[]`, one row per option with the
 * offset of its field, so every source goes through one function, cfg_set(). Precedence is
 * obtained by applying sources in increasing order: defaults, file, env, flags.
 */
#include "cfg.h"

#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum opt_kind { K_INT, K_DBL, K_BOOL, K_STR, K_ENUM };

struct opt {
    enum opt_kind kind;
    const char *section, *key;
    size_t off;
    int64_t ilo, ihi, idef;
    double dlo, dhi, ddef;
    const char *sdef, *choices, *help;
};

static const struct opt cfg_opts[] = {
#define OPT_INT(s, k, d, lo, hi, h)                                                                \
    {K_INT, #s, #k, offsetof(struct cfg, s##_##k), lo, hi, d, 0, 0, 0, NULL, NULL, h},
#define OPT_DBL(s, k, d, lo, hi, h)                                                                \
    {K_DBL, #s, #k, offsetof(struct cfg, s##_##k), 0, 0, 0, lo, hi, d, NULL, NULL, h},
#define OPT_BOOL(s, k, d, h)                                                                       \
    {K_BOOL, #s, #k, offsetof(struct cfg, s##_##k), 0, 1, d, 0, 0, 0, NULL, NULL, h},
#define OPT_STR(s, k, d, h)                                                                        \
    {K_STR, #s, #k, offsetof(struct cfg, s##_##k), 0, 0, 0, 0, 0, 0, d, NULL, h},
#define OPT_ENUM(s, k, d, ch, h)                                                                   \
    {K_ENUM, #s, #k, offsetof(struct cfg, s##_##k), 0, 0, 0, 0, 0, 0, d, ch, h},
#include "options.def"
#undef OPT_INT
#undef OPT_DBL
#undef OPT_BOOL
#undef OPT_STR
#undef OPT_ENUM
};
#define N_OPTS (sizeof cfg_opts / sizeof cfg_opts[0])

static void *field(struct cfg *c, const struct opt *o) { return (char *)c + o->off; }
static const void *cfield(const struct cfg *c, const struct opt *o)
{
    return (const char *)c + o->off;
}

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (!s) return ERR_NOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

void cfg_init_defaults(struct cfg *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &cfg_opts[i];
        switch (o->kind) {
        case K_INT: *(int64_t *)field(c, o) = o->idef; break;
        case K_DBL: *(double *)field(c, o) = o->ddef; break;
        case K_BOOL: *(int *)field(c, o) = (int)o->idef; break;
        case K_STR:
        case K_ENUM: *(char **)field(c, o) = strdup(o->sdef); break;
        }
    }
}

void cfg_fini(struct cfg *c)
{
    if (!c) return;
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &cfg_opts[i];
        if (o->kind == K_STR || o->kind == K_ENUM) {
            free(*(char **)field(c, o));
            *(char **)field(c, o) = NULL;
        }
    }
    free(c->config_file);
    c->config_file = NULL;
}

static const struct opt *find_opt(const char *section, const char *key)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(cfg_opts[i].section, section) == 0 && strcmp(cfg_opts[i].key, key) == 0)
            return &cfg_opts[i];
    return NULL;
}

static int enum_has(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

int cfg_set(struct cfg *c, const char *section, const char *key, const char *value,
            const char *source, char *err)
{
    const struct opt *o = find_opt(section, key);
    if (!o) return err_set(err, ERR_CONFIG, "%s: unknown option '%s.%s'", source, section, key);
    char *end;
    switch (o->kind) {
    case K_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        while (*end && isspace((unsigned char)*end)) end++;
        if (errno || end == value || *end || v < o->ilo || v > o->ihi)
            return err_set(err, ERR_CONFIG, "%s: %s.%s = '%s': expected an integer in [%lld, %lld]",
                           source, section, key, value, (long long)o->ilo, (long long)o->ihi);
        *(int64_t *)field(c, o) = v;
        return 0;
    }
    case K_DBL: {
        errno = 0;
        double v = strtod(value, &end);
        while (*end && isspace((unsigned char)*end)) end++;
        if (errno || end == value || *end || !isfinite(v) || v < o->dlo || v > o->dhi)
            return err_set(err, ERR_CONFIG, "%s: %s.%s = '%s': expected a number in [%g, %g]",
                           source, section, key, value, o->dlo, o->dhi);
        *(double *)field(c, o) = v;
        return 0;
    }
    case K_BOOL: {
        static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0) {
                *(int *)field(c, o) = 1;
                return 0;
            }
            if (strcasecmp(value, no[i]) == 0) {
                *(int *)field(c, o) = 0;
                return 0;
            }
        }
        return err_set(err, ERR_CONFIG, "%s: %s.%s = '%s': expected true or false", source, section,
                       key, value);
    }
    case K_ENUM:
        if (!enum_has(o->choices, value))
            return err_set(err, ERR_CONFIG, "%s: %s.%s = '%s': expected one of %s", source, section,
                           key, value, o->choices);
        /* fall through */
    case K_STR:
        if (set_str((char **)field(c, o), value)) return err_set(err, ERR_NOMEM, "out of memory");
        return 0;
    }
    return ERR_INTERNAL;
}

/* Debian's libinih does not pass line numbers to the handler; ini_parse_file() returns the line
 * of the first line the handler rejected, so the first message is kept and prefixed afterwards. */
struct ini_ctx {
    struct cfg *c;
    int rc;
    char msg[ERR_LEN];
};

static int ini_on_value(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    if (x->rc) return 0;
    if (!*section) x->rc = err_set(x->msg, ERR_CONFIG, "key '%s' outside of a [section]", name);
    else x->rc = cfg_set(x->c, section, name, value, "", x->msg);
    return x->rc == 0;
}

static int load_file(struct cfg *c, const char *path, char *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, ERR_CONFIG, "%s: cannot open config file: %s", path, strerror(errno));
    struct ini_ctx x = {.c = c};
    int line = ini_parse_file(f, ini_on_value, &x);
    fclose(f);
    const char *msg = x.msg[0] == ':' ? x.msg + 2 : x.msg; /* drop cfg_set's empty source */
    if (x.rc) return err_set(err, x.rc, "%s:%d: %s", path, line, msg);
    if (line > 0) return err_set(err, ERR_CONFIG, "%s:%d: syntax error", path, line);
    if (line < 0) return err_set(err, ERR_CONFIG, "%s: cannot read config file", path);
    return 0;
}

static int load_env(struct cfg *c, char *err)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &cfg_opts[i];
        char name[128];
        snprintf(name, sizeof name, "TANDEM_%s_%s", o->section, o->key);
        for (char *p = name; *p; p++) *p = (char)toupper((unsigned char)*p);
        const char *v = getenv(name);
        if (!v) continue;
        char src[160];
        snprintf(src, sizeof src, "environment %s", name);
        int rc = cfg_set(c, o->section, o->key, v, src, err);
        if (rc) return rc;
    }
    return 0;
}

/* "--section.key=value" or ("--section.key", "value"): split into section/key/value. */
static int parse_flag(const char *arg, char *section, char *key, const char **value)
{
    if (strncmp(arg, "--", 2) != 0) return 0;
    const char *s = arg + 2, *dot = strchr(s, '.');
    if (!dot || dot == s || dot - s >= 32) return 0;
    const char *eq = strchr(dot, '=');
    size_t klen = eq ? (size_t)(eq - dot - 1) : strlen(dot + 1);
    if (klen == 0 || klen >= 64) return 0;
    memcpy(section, s, (size_t)(dot - s));
    section[dot - s] = 0;
    memcpy(key, dot + 1, klen);
    key[klen] = 0;
    *value = eq ? eq + 1 : NULL;
    return 1;
}

int cfg_load(struct cfg *c, int *argc, char **argv, char *err)
{
    cfg_init_defaults(c);
    int rc = 0, out = 1;
    const char *file = getenv("TANDEM_CONFIG");
    /* pass 1: find --config (the file is applied before env and flags) */
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= *argc) return err_set(err, ERR_CONFIG, "--config needs a file name");
            file = argv[i + 1];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        }
    }
    if (file && *file) {
        c->config_file = strdup(file);
        if ((rc = load_file(c, file, err))) return rc;
    }
    if ((rc = load_env(c, err))) return rc;
    /* pass 2: flags, removed from argv */
    for (int i = 1; i < *argc; i++) {
        char section[32], key[64];
        const char *value;
        if (strcmp(argv[i], "--") == 0) {
            while (i < *argc) argv[out++] = argv[i++];
            break;
        }
        if (strcmp(argv[i], "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--config=", 9) == 0) continue;
        if (strcmp(argv[i], "--model") == 0 || strncmp(argv[i], "--model=", 8) == 0) {
            const char *v = argv[i][7] == '=' ? argv[i] + 8 : (i + 1 < *argc ? argv[++i] : NULL);
            if (!v) return err_set(err, ERR_CONFIG, "--model needs a directory");
            if ((rc = cfg_set(c, "model", "path", v, "flag --model", err))) return rc;
            continue;
        }
        if (parse_flag(argv[i], section, key, &value)) {
            char src[160];
            snprintf(src, sizeof src, "flag %s", argv[i]);
            if (!value) {
                if (i + 1 >= *argc) return err_set(err, ERR_CONFIG, "%s: missing value", src);
                value = argv[++i];
            }
            if ((rc = cfg_set(c, section, key, value, src, err))) return rc;
            continue;
        }
        argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

void cfg_print(const struct cfg *c, FILE *f)
{
    const char *sec = "";
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &cfg_opts[i];
        if (strcmp(sec, o->section) != 0) {
            fprintf(f, "%s[%s]\n", i ? "\n" : "", o->section);
            sec = o->section;
        }
        switch (o->kind) {
        case K_INT:
            fprintf(f, "%s = %lld\n", o->key, (long long)*(const int64_t *)cfield(c, o));
            break;
        case K_DBL: fprintf(f, "%s = %g\n", o->key, *(const double *)cfield(c, o)); break;
        case K_BOOL:
            fprintf(f, "%s = %s\n", o->key, *(const int *)cfield(c, o) ? "true" : "false");
            break;
        case K_STR:
        case K_ENUM: fprintf(f, "%s = %s\n", o->key, *(char *const *)cfield(c, o)); break;
        }
    }
}

void cfg_write_markdown(FILE *f)
{
    fprintf(f, "| option | type | default | range | environment | description |\n");
    fprintf(f, "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &cfg_opts[i];
        char env[128];
        snprintf(env, sizeof env, "TANDEM_%s_%s", o->section, o->key);
        for (char *p = env; *p; p++) *p = (char)toupper((unsigned char)*p);
        fprintf(f, "| `%s.%s` | ", o->section, o->key);
        switch (o->kind) {
        case K_INT:
            fprintf(f, "int | %lld | %lld..%lld", (long long)o->idef, (long long)o->ilo,
                    (long long)o->ihi);
            break;
        case K_DBL: fprintf(f, "number | %g | %g..%g", o->ddef, o->dlo, o->dhi); break;
        case K_BOOL: fprintf(f, "bool | %s | true, false", o->idef ? "true" : "false"); break;
        case K_STR: fprintf(f, "string | `%s` | ", o->sdef); break;
        case K_ENUM:
            fprintf(f, "enum | `%s` | ", o->sdef);
            for (const char *p = o->choices; *p; p++) fputs(*p == '|' ? ", " : (char[2]){*p, 0}, f);
            break;
        }
        fprintf(f, " | `%s` | %s |\n", env, o->help);
    }
}
