/* err.h - the one table of error codes.
 *
 * Every fallible function returns int: 0 on success or a negative ERR_* code. Functions that can
 * say more take a trailing `char *err` buffer of ERR_LEN bytes (may be NULL), filled by err_set().
 * The table maps each code to the HTTP status, OpenAI error type and OpenAI error code string the
 * server reports, so only server/http.c turns codes into responses. Every code has every column:
 * there is no fallback but the one for values outside the table. Thread-safe: all functions are
 * pure.
 */
#ifndef TANDEM_ERR_H
#define TANDEM_ERR_H

#include <stddef.h>

#define ERR_LEN 256

/* clang-format off */
/*  XX(name,            http, openai type,             openai code,               default message) */
#define ERR_MAP(XX)                                                                                                 \
    XX(INVAL,           400, "invalid_request_error", "invalid_value",           "invalid argument")                \
    XX(JSON,            400, "invalid_request_error", "invalid_json",            "malformed JSON")                  \
    XX(UTF8,            400, "invalid_request_error", "invalid_utf8",            "invalid UTF-8")                   \
    XX(CTX_OVERFLOW,    400, "invalid_request_error", "context_length_exceeded", "context length exceeded")         \
    XX(AUTH,            401, "authentication_error",  "invalid_api_key",         "invalid or missing API key")      \
    XX(NOT_FOUND,       404, "not_found_error",       "not_found",               "not found")                       \
    XX(MODEL_NOT_FOUND, 404, "invalid_request_error", "model_not_found",         "model not found")                 \
    XX(METHOD,          405, "invalid_request_error", "method_not_allowed",      "method not allowed")              \
    XX(TOO_LARGE,       413, "invalid_request_error", "request_too_large",       "request body too large")          \
    XX(QUEUE_FULL,      429, "rate_limit_error",      "queue_full",              "server busy: request queue full") \
    XX(CANCELLED,       499, "invalid_request_error", "internal_error",          "request cancelled")               \
    XX(NOMEM,           500, "server_error",          "internal_error",          "out of memory")                   \
    XX(IO,              500, "server_error",          "internal_error",          "I/O error")                       \
    XX(FORMAT,          500, "server_error",          "internal_error",          "malformed model file")            \
    XX(UNSUPPORTED,     500, "server_error",          "internal_error",          "unsupported format or feature")   \
    XX(CONFIG,          500, "server_error",          "internal_error",          "invalid configuration")           \
    XX(CUDA,            500, "server_error",          "internal_error",          "CUDA error")                      \
    XX(INTERNAL,        500, "server_error",          "internal_error",          "internal error")                  \
    XX(NOT_IMPLEMENTED, 501, "server_error",          "not_implemented",         "not implemented yet")             \
    XX(UNAVAILABLE,     503, "unavailable_error",     "service_unavailable",     "service unavailable")             \
    XX(MEDIA_TYPE,      415, "invalid_request_error", "unsupported_media_type",  "unsupported media type")

/* table position of each code (ERR_IDX_OK = 0) */
enum err_index {
    ERR_IDX_OK = 0,
#define XX(name, http, type, code, msg) ERR_IDX_##name,
    ERR_MAP(XX)
#undef XX
    ERR_IDX_COUNT
};

/* the codes themselves: 0 or negative (ERR_INVAL = -1, ERR_JSON = -2, ...) */
enum err_code {
    ERR_OK = 0,
#define XX(name, http, type, code, msg) ERR_##name = -ERR_IDX_##name,
    ERR_MAP(XX)
#undef XX
};
/* clang-format on */

const char *err_name(int code);    /* "INVAL"; "OK" for 0; "UNKNOWN" otherwise */
const char *err_message(int code); /* default human message */
int err_http_status(int code);     /* 200 for 0, 500 for unknown codes */
const char *err_type(int code);    /* OpenAI error type; "server_error" for unknown codes */
const char *
err_openai_code(int code); /* OpenAI error code string; "internal_error" for unknown codes */

/* printf into err (ERR_LEN bytes) when err != NULL; returns code so callers can
 * `return err_set(err, ERR_FORMAT, "...")`. */
int err_set(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
