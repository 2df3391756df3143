/* test_log.c - ASSERT: a true invariant costs nothing and evaluates once; a false one writes
 * file:line, the function and the expression at the critical level and aborts, also with NDEBUG. */
#define NDEBUG 1
#include "../check.h"
#include "common/log.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int failing_invariant(int a, int b)
{
    ASSERT(a == b);
    return a;
}

int main(void)
{
    int n = 0;
    ASSERT(++n == 1);
    CHECK_EQ(n, 1);

    int fd[2];
    CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fd[1], 2);
        close(fd[0]);
        log_set_level(LOG_LVL_ERR); /* the assertion line is written whatever the level */
        failing_invariant(1, 2);
        _exit(0);
    }
    close(fd[1]);
    char buf[512];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd[0]);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st));
    CHECK_EQ(WTERMSIG(st), SIGABRT);
    fprintf(stderr, "child wrote: %s", buf);
    CHECK(strncmp(buf, "<2>tandem[assert] ", 18) == 0);
    CHECK(strstr(buf, "test_log.c:14: failing_invariant: assertion failed: a == b\n") != NULL);
    return 0;
}
