/* jinja_lex.c - Jinja template text -> tokens.
 *
 * Data between tags becomes one JT_TEXT token, after whitespace control as Jinja2 applies it with
 * trim_blocks and lstrip_blocks (Hugging Face's settings): `{%-`/`{{-`/`{#-` strip all whitespace
 * before the tag, `-%}`/`-}}`/`-#}` all whitespace after it; a block or comment tag alone on its
 * line after spaces/tabs drops them (lstrip_blocks, not with `{%+`); the first newline after a
 * block or comment tag is dropped (trim_blocks, not with `+%}`). One trailing newline of the
 * template is dropped (keep_trailing_newline=False). Inside a tag, end markers count only outside
 * brackets, as in Jinja2, so `{{ {'a': {'b': 1}} }}` works.
 * Threads: pure (writes only the arena it is given).
 */
#include "jinja_internal.h"

#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS (1u << 22)

struct lexer {
    struct jarena *a;
    const char *src, *end;
    struct jtok *t;
    size_t n, cap;
    /* line/column of an offset: counted forward from the last position asked */
    const char *pos_at;
    int line, col;
    char *err;
};

static void where(struct lexer *L, const char *p, int *line, int *col)
{
    if (p < L->pos_at) { /* rare: restart */
        L->pos_at = L->src;
        L->line = 1;
        L->col = 1;
    }
    for (; L->pos_at < p; L->pos_at++) {
        if (*L->pos_at == '\n') {
            L->line++;
            L->col = 1;
        } else if (((unsigned char)*L->pos_at & 0xC0) != 0x80) {
            L->col++;
        }
    }
    *line = L->line;
    *col = L->col;
}

static int fail_at(struct lexer *L, const char *p, const char *msg)
{
    int line, col;
    where(L, p, &line, &col);
    return err_set(L->err, ERR_FORMAT, "chat template line %d column %d: %s", line, col, msg);
}

static struct jtok *push(struct lexer *L, enum jtok_kind k, const char *at)
{
    if (L->n == L->cap) {
        if (L->cap >= MAX_TOKENS) return NULL;
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct jtok *t = ja_alloc(L->a, cap * sizeof *t);
        if (!t) return NULL;
        if (L->n) memcpy(t, L->t, L->n * sizeof *t);
        L->t = t;
        L->cap = cap;
    }
    struct jtok *t = &L->t[L->n++];
    memset(t, 0, sizeof *t);
    t->kind = k;
    where(L, at, &t->line, &t->col);
    return t;
}

static int nomem(struct lexer *L) { return err_set(L->err, ERR_NOMEM, "chat template too large"); }

/* a string literal at p (quote p[0]); decoded into the arena as Python's escapes say */
static int lex_string(struct lexer *L, const char **pp)
{
    const char *p = *pp, q = *p++;
    const char *start = p;
    while (p < L->end && *p != q) p += (*p == '\\' && p + 1 < L->end) ? 2 : 1;
    if (p >= L->end) return fail_at(L, start - 1, "unterminated string literal");
    char *o = ja_alloc(L->a, (size_t)(p - start) + 1);
    if (!o) return nomem(L);
    size_t n = 0;
    for (const char *s = start; s < p; s++) {
        if (*s != '\\') {
            o[n++] = *s;
            continue;
        }
        char c = *++s;
        switch (c) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'v': o[n++] = '\v'; break;
        case 'a': o[n++] = '\a'; break;
        case '0': o[n++] = '\0'; break;
        case '\\': o[n++] = '\\'; break;
        case '\'': o[n++] = '\''; break;
        case '"': o[n++] = '"'; break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
            int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            unsigned long cp = 0;
            int k = 0;
            for (; k < digits && s + 1 + k < p && isxdigit((unsigned char)s[1 + k]); k++)
                cp = cp * 16 + (unsigned long)(isdigit((unsigned char)s[1 + k])
                                                   ? s[1 + k] - '0'
                                                   : (tolower((unsigned char)s[1 + k]) - 'a' + 10));
            if (k < digits || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return fail_at(L, s - 1, "bad escape in string literal");
            s += digits;
            /* UTF-8 of cp: at most 4 bytes, never longer than the 4..10 byte escape */
            if (cp < 0x80) {
                o[n++] = (char)cp;
            } else if (cp < 0x800) {
                o[n++] = (char)(0xC0 | (cp >> 6));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                o[n++] = (char)(0xE0 | (cp >> 12));
                o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                o[n++] = (char)(0xF0 | (cp >> 18));
                o[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: /* unknown escapes stay as written */ o[n++] = '\\'; o[n++] = c;
        }
    }
    struct jtok *t = push(L, JT_STRING, start - 1);
    if (!t) return nomem(L);
    t->s = o;
    t->n = n;
    *pp = p + 1;
    return 0;
}

static int lex_number(struct lexer *L, const char **pp)
{
    const char *p = *pp, *start = p;
    char buf[64];
    size_t n = 0;
    int is_float = 0;
    while (p < L->end && (isdigit((unsigned char)*p) || *p == '_')) {
        if (*p != '_' && n < sizeof buf - 1) buf[n++] = *p;
        p++;
    }
    if (p + 1 < L->end && *p == '.' && isdigit((unsigned char)p[1])) {
        is_float = 1;
        buf[n < sizeof buf - 1 ? n++ : n] = '.';
        for (p++; p < L->end && (isdigit((unsigned char)*p) || *p == '_'); p++)
            if (*p != '_' && n < sizeof buf - 1) buf[n++] = *p;
    }
    if (p < L->end && (*p == 'e' || *p == 'E')) {
        const char *e = p + 1;
        if (e < L->end && (*e == '+' || *e == '-')) e++;
        if (e < L->end && isdigit((unsigned char)*e)) {
            is_float = 1;
            for (; p < e; p++)
                if (n < sizeof buf - 1) buf[n++] = *p;
            for (; p < L->end && isdigit((unsigned char)*p); p++)
                if (n < sizeof buf - 1) buf[n++] = *p;
        }
    }
    buf[n] = 0;
    if (n >= sizeof buf - 1) return fail_at(L, start, "number literal too long");
    struct jtok *t = push(L, is_float ? JT_FLOAT : JT_INT, start);
    if (!t) return nomem(L);
    if (is_float) {
        t->f = strtod(buf, NULL);
    } else {
        errno = 0;
        t->i = strtoll(buf, NULL, 10);
        if (errno == ERANGE) return fail_at(L, start, "integer literal too large");
    }
    *pp = p;
    return 0;
}

static const char *const ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                  "/",  "%",  "~",  "<",  ">",  "=",  ".", ",", ":",
                                  "|",  "(",  ")",  "[",  "]",  "{",  "}", NULL};

/* tokens of one tag, from p (after the opening marker) to its end marker; *trim_after set from
 * the end marker ('-': strip all, '+': keep, 0: default) */
static int lex_tag(struct lexer *L, const char **pp, int var, int *trim_after)
{
    const char *p = *pp, *open = p - 2;
    char close = var ? '}' : '%';
    int depth = 0;
    for (;;) {
        while (p < L->end && isspace((unsigned char)*p)) p++;
        if (p >= L->end) return fail_at(L, open, var ? "unclosed '{{'" : "unclosed '{%'");
        if (depth == 0) {
            int mark = (*p == '-' || *p == '+') ? 1 : 0;
            if (p + mark + 1 < L->end && p[mark] == close && p[mark + 1] == '}' &&
                (mark == 0 || *p == '-' || !var)) {
                if (!push(L, var ? JT_VAR_END : JT_BLOCK_END, p)) return nomem(L);
                *trim_after = mark ? *p : 0;
                *pp = p + mark + 2;
                return 0;
            }
        }
        unsigned char c = (unsigned char)*p;
        if (c == '\'' || c == '"') {
            int rc = lex_string(L, &p);
            if (rc) return rc;
            continue;
        }
        if (isdigit(c)) {
            int rc = lex_number(L, &p);
            if (rc) return rc;
            continue;
        }
        if (isalpha(c) || c == '_') {
            const char *s = p;
            while (p < L->end && (isalnum((unsigned char)*p) || *p == '_')) p++;
            struct jtok *t = push(L, JT_NAME, s);
            if (!t) return nomem(L);
            t->s = s;
            t->n = (size_t)(p - s);
            continue;
        }
        const char *op = NULL;
        for (int i = 0; ops[i]; i++) {
            size_t k = strlen(ops[i]);
            if ((size_t)(L->end - p) >= k && memcmp(p, ops[i], k) == 0) {
                op = ops[i];
                break;
            }
        }
        if (!op) return fail_at(L, p, "unexpected character in tag");
        if (*op == '(' || *op == '[' || *op == '{') depth++;
        if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) depth--;
        struct jtok *t = push(L, JT_OP, p);
        if (!t) return nomem(L);
        t->s = op;
        t->n = strlen(op);
        p += t->n;
    }
}

/* Whitespace control on the text before a tag: strip_all ('-'), or lstrip_blocks when the tag is
 * a block or comment alone on its line after spaces/tabs. Returns the new length. */
static size_t trim_before(const char *s, size_t n, int strip_all, int lstrip, int line_start)
{
    if (strip_all) {
        while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
        return n;
    }
    if (!lstrip) return n;
    size_t k = n;
    while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t')) k--;
    if (k > 0 ? s[k - 1] == '\n' : line_start) return k;
    return n;
}

int jinja_lex(struct jarena *a, const char *text, struct jtok **toks, size_t *n, char *err)
{
    struct lexer L = {.a = a, .src = text, .end = text + strlen(text), .err = err};
    L.pos_at = text;
    L.line = L.col = 1;
    if (L.end > L.src && L.end[-1] == '\n') L.end--;
    const char *p = L.src;
    int trim_after = 0; /* of the previous tag: '-', '+', 0 */
    int prev_block = 0; /* the previous tag was a block or comment (trim_blocks) */
    int line_start = 1; /* the text starts a line (template start, or a newline was trimmed) */
    while (p < L.end) {
        /* the data up to the next tag */
        const char *q = p;
        while (q + 1 < L.end && !(q[0] == '{' && (q[1] == '{' || q[1] == '%' || q[1] == '#'))) q++;
        if (q + 1 >= L.end) q = L.end;
        const char *s = p;
        if (trim_after == '-') {
            while (s < q && isspace((unsigned char)*s)) s++;
        } else if (trim_after != '+' && prev_block && s < q && *s == '\n') {
            s++;
            line_start = 1;
        }
        size_t len = (size_t)(q - s);
        if (q < L.end) {
            char kind = q[1], mark = q + 2 < L.end ? q[2] : 0;
            len = trim_before(s, len, mark == '-', kind != '{' && mark != '+', line_start);
        }
        if (len) {
            struct jtok *t = push(&L, JT_TEXT, s);
            if (!t) return nomem(&L);
            t->s = s;
            t->n = len;
        }
        if (q >= L.end) break;
        char kind = q[1];
        p = q + 2;
        if (p < L.end && (*p == '-' || *p == '+')) p++;
        line_start = 0;
        if (kind == '#') {
            const char *e = p;
            while (e + 1 < L.end && !(e[0] == '#' && e[1] == '}')) e++;
            if (e + 1 >= L.end) return fail_at(&L, q, "unclosed comment");
            trim_after = e > p && (e[-1] == '-' || e[-1] == '+') ? e[-1] : 0;
            prev_block = 1;
            p = e + 2;
            continue;
        }
        if (!push(&L, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, q)) return nomem(&L);
        int rc = lex_tag(&L, &p, kind == '{', &trim_after);
        if (rc) return rc;
        prev_block = kind == '%';
    }
    if (!push(&L, JT_EOF, L.end)) return nomem(&L);
    *toks = L.t;
    *n = L.n;
    return 0;
}
