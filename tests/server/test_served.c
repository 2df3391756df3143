/* test_served.c - model.served_names: the fallback name when empty, trimmed comma-separated
 * names, exact matches only, the start-up checks (empty names, too long, too many). */
#include "../../common/err.h"
#include "../../server/served.h"
#include "../check.h"

#include <string.h>

int main(void)
{
    char err[ERR_LEN], buf[SERVED_MAX_NAME_LEN + 1];
    /* empty: only the fallback */
    CHECK_EQ(served_check("", err), 0);
    CHECK_EQ(served_check("  ", err), 0);
    CHECK(served_has("", "tiny", "tiny"));
    CHECK(!served_has("", "tiny", "tin"));
    CHECK(!served_has(" ", "tiny", ""));
    CHECK(served_name("", "tiny", 0, buf));
    CHECK_STR(buf, "tiny");
    CHECK(!served_name("", "tiny", 1, buf));
    /* a list: trimmed, exact, the fallback not implied */
    const char *list = " a, deepseek-v3 ,b c";
    CHECK_EQ(served_check(list, err), 0);
    CHECK(served_has(list, "tiny", "a"));
    CHECK(served_has(list, "tiny", "deepseek-v3"));
    CHECK(served_has(list, "tiny", "b c"));
    CHECK(!served_has(list, "tiny", "tiny"));
    CHECK(!served_has(list, "tiny", " a"));
    CHECK(!served_has(list, "tiny", "deepseek"));
    CHECK(!served_has(list, "tiny", ""));
    CHECK(served_name(list, "tiny", 1, buf));
    CHECK_STR(buf, "deepseek-v3");
    CHECK(served_name(list, "tiny", 2, buf));
    CHECK_STR(buf, "b c");
    CHECK(!served_name(list, "tiny", 3, buf));
    /* bad lists */
    CHECK_EQ(served_check("a,,b", err), ERR_CONFIG);
    CHECK_CONTAINS(err, "empty name");
    CHECK_EQ(served_check("a, ", err), ERR_CONFIG);
    char longname[SERVED_MAX_NAME_LEN + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_EQ(served_check(longname, err), ERR_CONFIG);
    CHECK_CONTAINS(err, "longer than");
    char many[4 * (SERVED_MAX_NAMES + 1)] = "";
    for (int i = 0; i <= SERVED_MAX_NAMES; i++) strcat(many, i ? ",m" : "m");
    CHECK_EQ(served_check(many, err), ERR_CONFIG);
    CHECK_CONTAINS(err, "more than");
    many[strlen(many) - 2] = 0; /* SERVED_MAX_NAMES names */
    CHECK_EQ(served_check(many, err), 0);
    return 0;
}
