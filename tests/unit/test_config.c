/* test_config.c - configuration: defaults, precedence flag > env > file > default, error
 * messages that name source, line, key and range, and docs/configuration.md agreeing with the
 * options table. */
#include "../check.h"
#include "common/err.h"
#include "config/cfg.h"

#include <stdlib.h>
#include <stdarg.h>
#include <unistd.h>

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/tandem-cfg-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int load(struct cfg *c, char *err, int n, ...)
{
    char *argv[16] = {"test"};
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) argv[i + 1] = va_arg(ap, char *);
    va_end(ap);
    int argc = n + 1;
    return cfg_load(c, &argc, argv, err);
}

int main(int argc, char **argv)
{
    struct cfg c;
    char err[ERR_LEN];

    if (argc > 1 && strcmp(argv[1], "--write-table") == 0) {
        cfg_write_markdown(stdout);
        return 0;
    }

    /* defaults */
    unsetenv("TANDEM_SERVER_PORT");
    CHECK_EQ(load(&c, err, 0), 0);
    CHECK_EQ(c.server_port, 8080);
    CHECK_STR(c.server_host, "127.0.0.1");
    CHECK_STR(c.cpu_isa, "auto");
    cfg_fini(&c);

    /* file < env < flag */
    char *file = write_tmp("[server]\nport = 9000\nhost = 0.0.0.0\n[engine]\nmax_running = 3\n");
    CHECK_EQ(load(&c, err, 2, "--config", file), 0);
    CHECK_EQ(c.server_port, 9000);
    CHECK_STR(c.server_host, "0.0.0.0");
    CHECK_EQ(c.engine_max_running, 3);
    cfg_fini(&c);
    setenv("TANDEM_SERVER_PORT", "9001", 1);
    CHECK_EQ(load(&c, err, 2, "--config", file), 0);
    CHECK_EQ(c.server_port, 9001);
    cfg_fini(&c);
    CHECK_EQ(load(&c, err, 3, "--config", file, "--server.port=9002"), 0);
    CHECK_EQ(c.server_port, 9002);
    cfg_fini(&c);
    CHECK_EQ(load(&c, err, 4, "--config", file, "--server.port", "9003"), 0);
    CHECK_EQ(c.server_port, 9003);
    cfg_fini(&c);
    unsetenv("TANDEM_SERVER_PORT");

    /* --model shorthand, unrelated args kept in order */
    {
        char *argv[] = {"t", "a", "--model", "/m", "b", "--log.level=debug", "c", NULL};
        int argc = 7;
        CHECK_EQ(cfg_load(&c, &argc, argv, err), 0);
        CHECK_EQ(argc, 4);
        CHECK_STR(argv[1], "a");
        CHECK_STR(argv[2], "b");
        CHECK_STR(argv[3], "c");
        CHECK_STR(c.model_path, "/m");
        CHECK_STR(c.log_level, "debug");
        cfg_fini(&c);
    }

    /* errors name the source, key and range */
    CHECK_EQ(load(&c, err, 1, "--server.port=70000"), ERR_CONFIG);
    CHECK_CONTAINS(err, "flag --server.port=70000");
    CHECK_CONTAINS(err, "[1, 65535]");
    cfg_fini(&c);
    CHECK_EQ(load(&c, err, 1, "--server.nope=1"), ERR_CONFIG);
    CHECK_CONTAINS(err, "unknown option 'server.nope'");
    cfg_fini(&c);
    CHECK_EQ(load(&c, err, 1, "--cpu.isa=sse"), ERR_CONFIG);
    CHECK_CONTAINS(err, "auto|amx|avx512|avx2|scalar");
    cfg_fini(&c);
    file = write_tmp("[server]\nport = 80\n\n[engine]\nmax_runing = 3\n");
    CHECK_EQ(load(&c, err, 2, "--config", file), ERR_CONFIG);
    CHECK_CONTAINS(err, ":5: unknown option 'engine.max_runing'");
    cfg_fini(&c);
    file = write_tmp("[server]\nport = eighty\n");
    CHECK_EQ(load(&c, err, 2, "--config", file), ERR_CONFIG);
    CHECK_CONTAINS(err, ":2: server.port = 'eighty'");
    cfg_fini(&c);
    setenv("TANDEM_ENGINE_MAX_QUEUED", "-5", 1);
    CHECK_EQ(load(&c, err, 0), ERR_CONFIG);
    CHECK_CONTAINS(err, "environment TANDEM_ENGINE_MAX_QUEUED");
    cfg_fini(&c);
    unsetenv("TANDEM_ENGINE_MAX_QUEUED");
    CHECK_EQ(load(&c, err, 2, "--config", "/nonexistent/tandem.conf"), ERR_CONFIG);
    CHECK_CONTAINS(err, "/nonexistent/tandem.conf");
    cfg_fini(&c);

    /* docs/configuration.md contains the generated table verbatim */
    char *table = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&table, &len);
    cfg_write_markdown(mf);
    fclose(mf);
    const char *src = getenv("TANDEM_SRC");
    CHECK(src);
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/configuration.md", src);
    FILE *df = fopen(path, "rb");
    CHECK(df);
    char *doc = calloc(1, 1 << 20);
    size_t n = fread(doc, 1, (1 << 20) - 1, df);
    fclose(df);
    doc[n] = 0;
    if (!strstr(doc, table)) {
        fprintf(stderr,
                "docs/configuration.md is out of date; regenerate the table with:\n"
                "  build/tests/unit/test_config --write-table\n---\n%s",
                table);
        return 1;
    }
    free(doc);
    free(table);
    unlink(file);
    return 0;
}
