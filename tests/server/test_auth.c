/* test_auth.c - API key file: permissions, parsing, checks, reload keeps old keys on error. */
#include "../../common/err.h"
#include "../../server/auth.h"
#include "../check.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(text, f);
    fclose(f);
    CHECK_EQ(chmod(path, mode), 0);
}

int main(void)
{
    char dir[] = "/tmp/tandem-auth-XXXXXX";
    CHECK(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/keys", dir);
    char err[ERR_LEN];
    struct auth *a = NULL;

    /* disabled: everything passes */
    CHECK_EQ(auth_create("", &a, err), 0);
    CHECK_EQ(auth_enabled(a), 0);
    CHECK_EQ(auth_check(a, NULL), 1);
    size_t n0;
    CHECK(auth_request_key(a, "Bearer sk-one", "sk-one", &n0) == NULL); /* no namespace */
    auth_destroy(a);

    write_file(path, "# comment\n  sk-one  \n\nsk-two\r\n", 0644);
    CHECK_EQ(auth_create(path, &a, err), ERR_CONFIG); /* world-readable */
    CHECK_CONTAINS(err, "world-readable");
    CHECK(!strstr(err, "sk-one"));

    CHECK_EQ(chmod(path, 0600), 0);
    CHECK_EQ(auth_create(path, &a, err), 0);
    CHECK_EQ(auth_enabled(a), 1);
    CHECK_EQ(auth_key_count(a), 2);
    CHECK_EQ(auth_check(a, "Bearer sk-one"), 1);
    CHECK_EQ(auth_check(a, "bearer sk-two"), 1);
    CHECK_EQ(auth_check(a, "Bearer sk-on"), 0);
    CHECK_EQ(auth_check(a, "Bearer sk-one1"), 0);
    CHECK_EQ(auth_check(a, "Bearer "), 0);
    CHECK_EQ(auth_check(a, "sk-one"), 0);
    CHECK_EQ(auth_check(a, NULL), 0);
    CHECK_EQ(auth_check(a, "# comment"), 0);
    CHECK_EQ(auth_check_key(a, " sk-two "), 1);
    CHECK_EQ(auth_check_key(a, "sk-tw"), 0);
    CHECK_EQ(auth_check_key(a, NULL), 0);

    /* the key a request was authenticated with (the prefix-cache namespace) */
    size_t len = 0;
    const char *k = auth_request_key(a, "Bearer sk-one ", "sk-two", &len);
    CHECK(k && len == 6 && memcmp(k, "sk-one", 6) == 0);
    k = auth_request_key(a, "Bearer sk-bad", " sk-two", &len);
    CHECK(k && len == 6 && memcmp(k, "sk-two", 6) == 0);
    CHECK(auth_request_key(a, "Bearer sk-bad", "sk-worse", &len) == NULL);
    CHECK(auth_request_key(a, NULL, NULL, &len) == NULL);

    /* reload: new keys replace old ones */
    write_file(path, "sk-three\n", 0600);
    CHECK_EQ(auth_reload(a, err), 0);
    CHECK_EQ(auth_check(a, "Bearer sk-one"), 0);
    CHECK_EQ(auth_check(a, "Bearer sk-three"), 1);
    /* a bad reload keeps the old keys */
    write_file(path, "\n# nothing\n", 0600);
    CHECK_EQ(auth_reload(a, err), ERR_CONFIG);
    CHECK_EQ(auth_check(a, "Bearer sk-three"), 1);
    auth_destroy(a);

    CHECK_EQ(auth_create("/nonexistent/keys", &a, err), ERR_IO);
    unlink(path);
    rmdir(dir);
    return 0;
}
