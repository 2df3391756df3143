/* test_cors.c - server.cors_origins: exact origins (case-insensitive, trimmed), the wildcard,
 * the start-up check of the list, and which requested headers a preflight may echo. */
#include "../../common/err.h"
#include "../../server/cors.h"
#include "../check.h"

#include <string.h>

int main(void)
{
    char err[ERR_LEN];
    const char *list = " http://good.example , https://app.example:8443";
    CHECK_STR(cors_allow_origin(list, "http://good.example"), "http://good.example");
    CHECK_STR(cors_allow_origin(list, "HTTPS://APP.example:8443"), "HTTPS://APP.example:8443");
    CHECK(!cors_allow_origin(list, "https://good.example"));
    CHECK(!cors_allow_origin(list, "http://good.example:80"));
    CHECK(!cors_allow_origin(list, "http://good.example.evil"));
    CHECK(!cors_allow_origin(list, "null"));
    CHECK(!cors_allow_origin(list, ""));
    CHECK(!cors_allow_origin(list, NULL));
    CHECK(!cors_allow_origin("", "http://good.example"));
    CHECK_STR(cors_allow_origin("*", "http://any.example"), "*");
    CHECK_STR(cors_allow_origin("http://a.example, *", "http://a.example"), "http://a.example");
    CHECK_STR(cors_allow_origin("http://a.example, *", "http://b.example"), "*");

    CHECK_EQ(cors_check("", err), 0);
    CHECK_EQ(cors_check(list, err), 0);
    CHECK_EQ(cors_check("*", err), 0);
    CHECK_EQ(cors_check("http://[::1]:8080", err), 0);
    CHECK_EQ(cors_check("https://chat.example.com/", err), ERR_CONFIG);
    CHECK_CONTAINS(err, "'https://chat.example.com/'");
    CHECK_EQ(cors_check("chat.example.com", err), ERR_CONFIG);
    CHECK_EQ(cors_check("http://a.example,,http://b.example", err), ERR_CONFIG);
    CHECK_EQ(cors_check("http://a.example, ", err), ERR_CONFIG);
    CHECK_EQ(cors_check("http://", err), ERR_CONFIG);
    CHECK_EQ(cors_check("http://a b", err), ERR_CONFIG);

    CHECK(cors_headers_echoable("authorization, content-type, x-stainless-os"));
    CHECK(cors_headers_echoable(""));
    CHECK(!cors_headers_echoable(NULL));
    CHECK(!cors_headers_echoable("x-a\r\nSet-Cookie: a"));
    CHECK(!cors_headers_echoable("x-a;b"));
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(!cors_headers_echoable(big));
    return 0;
}
