/* test_err.c - the error table: codes are negative and distinct, lookups agree with the table, and
 * every code has every column (HTTP status, OpenAI type and code string, message). */
#include "../check.h"
#include "common/err.h"

int main(void)
{
    CHECK_EQ(ERR_INVAL, -1);
    CHECK_EQ(err_http_status(0), 200);
    CHECK_EQ(err_http_status(ERR_QUEUE_FULL), 429);
    CHECK_EQ(err_http_status(ERR_AUTH), 401);
    CHECK_EQ(err_http_status(ERR_UNAVAILABLE), 503);
    CHECK_STR(err_type(ERR_AUTH), "authentication_error");
    CHECK_STR(err_name(ERR_CTX_OVERFLOW), "CTX_OVERFLOW");
    CHECK_STR(err_name(-1000), "UNKNOWN");
    CHECK_EQ(err_http_status(-1000), 500);
    CHECK_EQ(err_http_status(5), 500);
    for (int i = 1; i < ERR_IDX_COUNT; i++) {
        CHECK(strcmp(err_name(-i), "UNKNOWN") != 0);
        CHECK(err_http_status(-i) >= 400);
        CHECK(err_type(-i)[0] != '\0');
        CHECK(err_openai_code(-i)[0] != '\0');
        CHECK(err_message(-i)[0] != '\0');
    }
    /* the code strings the server has always sent, including the codes that get "internal_error" */
    CHECK_STR(err_openai_code(ERR_INVAL), "invalid_value");
    CHECK_STR(err_openai_code(ERR_JSON), "invalid_json");
    CHECK_STR(err_openai_code(ERR_UTF8), "invalid_utf8");
    CHECK_STR(err_openai_code(ERR_CTX_OVERFLOW), "context_length_exceeded");
    CHECK_STR(err_openai_code(ERR_AUTH), "invalid_api_key");
    CHECK_STR(err_openai_code(ERR_NOT_FOUND), "not_found");
    CHECK_STR(err_openai_code(ERR_METHOD), "method_not_allowed");
    CHECK_STR(err_openai_code(ERR_TOO_LARGE), "request_too_large");
    CHECK_STR(err_openai_code(ERR_QUEUE_FULL), "queue_full");
    CHECK_STR(err_openai_code(ERR_UNAVAILABLE), "service_unavailable");
    CHECK_STR(err_openai_code(ERR_NOT_IMPLEMENTED), "not_implemented");
    const int internal[] = {ERR_CANCELLED,   ERR_NOMEM,  ERR_IO,   ERR_FORMAT,
                            ERR_UNSUPPORTED, ERR_CONFIG, ERR_CUDA, ERR_INTERNAL};
    for (size_t i = 0; i < sizeof internal / sizeof internal[0]; i++)
        CHECK_STR(err_openai_code(internal[i]), "internal_error");
    CHECK_STR(err_openai_code(-1000), "internal_error");
    CHECK_STR(err_type(-1000), "server_error");
    char buf[ERR_LEN];
    CHECK_EQ(err_set(buf, ERR_FORMAT, "x=%d", 7), ERR_FORMAT);
    CHECK_STR(buf, "x=7");
    CHECK_EQ(err_set(NULL, ERR_IO, "ignored"), ERR_IO);
    return 0;
}
