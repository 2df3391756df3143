/* log.h - leveled logging to stderr with sd-daemon "<N>" priority prefixes.
 *
 * Lines look like "<6>tandem[engine] loaded 61 layers"; journald strips the prefix and keeps the
 * priority. The level check happens before arguments are evaluated. Thread-safe: each line is
 * written with one fprintf to an unbuffered stderr. The level is process state set once by main
 * (like Redis' verbosity); nothing per token is ever logged.
 */
#ifndef TANDEM_LOG_H
#define TANDEM_LOG_H

/* sd-daemon priorities; LOG_LVL_CRIT is used only by ASSERT (it cannot be chosen as a level) */
enum log_level {
    LOG_LVL_CRIT = 2,
    LOG_LVL_ERR = 3,
    LOG_LVL_WARN = 4,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7
};

extern int log__level;

void log_set_level(int level);
int log_level_parse(const char *name); /* "err|warn|notice|info|debug" -> level, -1 if unknown */
void log_write(int level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_AT(lvl, tag, ...)                                                                      \
    do {                                                                                           \
        if (log__level >= (lvl)) log_write((lvl), (tag), __VA_ARGS__);                             \
    } while (0)
#define LOG_ERR(tag, ...) LOG_AT(LOG_LVL_ERR, tag, __VA_ARGS__)
#define LOG_WARN(tag, ...) LOG_AT(LOG_LVL_WARN, tag, __VA_ARGS__)
#define LOG_NOTICE(tag, ...) LOG_AT(LOG_LVL_NOTICE, tag, __VA_ARGS__)
#define LOG_INFO(tag, ...) LOG_AT(LOG_LVL_INFO, tag, __VA_ARGS__)
#define LOG_DEBUG(tag, ...) LOG_AT(LOG_LVL_DEBUG, tag, __VA_ARGS__)

/* ASSERT(x): an internal invariant check. When x is false it writes one line at the critical
 * level ("<2>tandem[assert] file:line: func: assertion failed: x"), whatever the log level, and
 * aborts (a core dump, and a failed unit under systemd). Unlike assert(3) it does not depend on
 * NDEBUG: it stays in release builds, because a broken invariant in block accounting or a queue
 * would go on to corrupt memory or other requests' output, which is worse than stopping. x is
 * evaluated exactly once in every build. For invariants only: never for input from a request, a
 * file or the configuration, which must fail with an ERR_* code instead. Cheap checks only: it
 * runs on every call in production. */
#define ASSERT(x)                                                                                  \
    do {                                                                                           \
        if (__builtin_expect(!(x), 0)) log__assert_fail(#x, __FILE__, __LINE__, __func__);         \
    } while (0)
void log__assert_fail(const char *expr, const char *file, int line, const char *func)
    __attribute__((noreturn, cold));

#endif
