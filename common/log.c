/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int log__level = LOG_LVL_INFO;

void log_set_level(int level) { log__level = level; }

int log_level_parse(const char *name)
{
    static const char *names[] = {"err", "warn", "notice", "info", "debug"};
    for (int i = 0; i < 5; i++)
        if (strcmp(name, names[i]) == 0) return LOG_LVL_ERR + i;
    return -1;
}

void log_write(int level, const char *tag, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "<%d>tandem[%s] %s\n", level, tag, line);
}

void log__assert_fail(const char *expr, const char *file, int line, const char *func)
{
    /* straight to stderr (unbuffered): the level check and log_write's buffer are not needed */
    fprintf(stderr, "<%d>tandem[assert] %s:%d: %s: assertion failed: %s\n", LOG_LVL_CRIT, file,
            line, func, expr);
    abort();
}
