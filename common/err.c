/* err.c - lookups into the ERR_MAP table of err.h. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

struct err_row {
    const char *name;
    int http;
    const char *type; /* OpenAI error type */
    const char *code; /* OpenAI error code string */
    const char *msg;
};

static const struct err_row err_rows[] = {{"OK", 200, "", "", "ok"},
#define XX(name, http, type, code, msg) {#name, http, type, code, msg},
                                          ERR_MAP(XX)
#undef XX
};

static const struct err_row *err_row(int code)
{
    int i = -code;
    if (i < 0 || i >= ERR_IDX_COUNT) return NULL;
    return &err_rows[i];
}

const char *err_name(int code)
{
    const struct err_row *r = err_row(code);
    return r ? r->name : "UNKNOWN";
}

const char *err_message(int code)
{
    const struct err_row *r = err_row(code);
    return r ? r->msg : "unknown error";
}

int err_http_status(int code)
{
    const struct err_row *r = err_row(code);
    return r ? r->http : 500;
}

const char *err_type(int code)
{
    const struct err_row *r = err_row(code);
    return r ? r->type : "server_error";
}

const char *err_openai_code(int code)
{
    const struct err_row *r = err_row(code);
    return r ? r->code : "internal_error";
}

int err_set(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return code;
}
