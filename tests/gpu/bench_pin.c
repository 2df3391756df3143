/* bench_pin.c - how host memory can be pinned on this machine, and the H2D rate from it: the
 * question behind expert streaming's registration (engine/model/ops_cuda_stream.c), which once
 * stalled for minutes in cudaHostRegister of a file mapping.
 *
 * Each probe runs in a child process under a watchdog, so a probe stuck in the kernel is
 * reported ("stalled") and killed while the rest still run:
 *   malloc-host  cudaMallocHost (the driver's own pinned pages)
 *   anon         anonymous mmap, touched, cudaHostRegister
 *   anon-thp     the same with MADV_HUGEPAGE
 *   file         a written file's private read-only mapping, cudaHostRegister(ReadOnly)
 *   file-sparse  the same for a file of holes (as `convert synth --zero-but-routing` writes)
 *   file-anon    the sparse file's mapping made anonymous by wt_pages_anonymous (streaming's
 *                path), then cudaHostRegister(ReadOnly)
 * Per probe: seconds to pin, and GB/s of cudaMemcpy host -> device from the pinned range.
 * Usage: bench_pin [--mib N (1024)] [--timeout S (60)] [--dir D (/tmp)] [--only NAME]
 * Exit 77 without a GPU. A benchmark, not a test: it prints, it does not judge. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "common/err.h"
#include "engine/weights/weights.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* a file of `bytes` under dir: written with a byte pattern, or all holes */
static int make_file(const char *dir, size_t bytes, int sparse, char *path, size_t n)
{
    snprintf(path, n, "%s/bench-pin-%d-%s", dir, (int)getpid(), sparse ? "sparse" : "data");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    int rc = ftruncate(fd, (off_t)bytes);
    if (!rc && !sparse) {
        static char buf[1 << 20];
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 131 + 7);
        for (size_t o = 0; !rc && o < bytes; o += sizeof buf) {
            size_t k = bytes - o < sizeof buf ? bytes - o : sizeof buf;
            rc = pwrite(fd, buf, k, (off_t)o) == (ssize_t)k ? 0 : -1;
        }
    }
    close(fd);
    return rc;
}

/* the probe itself (in the child): pin, then time an H2D copy of the whole range */
static int probe(const char *name, size_t bytes, const char *dir)
{
    void *p = NULL;
    char path[512] = "";
    unsigned flags = cudaHostRegisterPortable;
    int malloc_host = !strcmp(name, "malloc-host");
    if (cudaFree(0) != cudaSuccess) return 2; /* context first: its cost is not the pin's */
    if (!strcmp(name, "anon") || !strcmp(name, "anon-thp")) {
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        if (!strcmp(name, "anon-thp")) madvise(p, bytes, MADV_HUGEPAGE);
        memset(p, 1, bytes);
    } else if (!malloc_host) {
        int sparse = strcmp(name, "file") != 0;
        if (make_file(dir, bytes, sparse, path, sizeof path)) {
            fprintf(stderr, "%s: cannot write %s: %s\n", name, path, strerror(errno));
            return 2;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        p = fd < 0 ? MAP_FAILED : mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (fd >= 0) close(fd);
        unlink(path);
        if (p == MAP_FAILED) return 2;
        flags |= cudaHostRegisterReadOnly;
        if (!strcmp(name, "file-anon")) {
            char err[ERR_LEN];
            double t0 = now_s();
            if (wt_pages_anonymous(p, bytes, 8, err)) {
                fprintf(stderr, "%s: %s\n", name, err);
                return 2;
            }
            printf("%-12s made anonymous in %.2f s\n", name, now_s() - t0);
        }
    }
    double t0 = now_s();
    cudaError_t e = malloc_host ? cudaMallocHost(&p, bytes) : cudaHostRegister(p, bytes, flags);
    double pin_s = now_s() - t0;
    if (e != cudaSuccess) {
        printf("%-12s %6zu MiB: pin failed after %.2f s: %s\n", name, bytes >> 20, pin_s,
               cudaGetErrorString(e));
        return 1;
    }
    void *d = NULL;
    if (cudaMalloc(&d, bytes) != cudaSuccess) return 2;
    cudaMemcpy(d, p, bytes, cudaMemcpyHostToDevice); /* warm */
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = now_s();
        if (cudaMemcpy(d, p, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return 2;
        t = now_s() - t;
        if (t < best) best = t;
    }
    printf("%-12s %6zu MiB: pinned in %.3f s (%.1f GB/s of pinning), H2D %.1f GB/s\n", name,
           bytes >> 20, pin_s, (double)bytes / pin_s / 1e9, (double)bytes / best / 1e9);
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = 1024;
    int timeout = 60;
    const char *dir = "/tmp", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_pin [--mib N] [--timeout S] [--dir D] [--only NAME]\n");
            return 2;
        }
    }
    if (mib < 1 || mib > (1u << 20) || timeout < 1) {
        fprintf(stderr, "bench_pin: --mib 1..1048576, --timeout >= 1\n");
        return 2;
    }
    /* no CUDA call in the parent: each child makes its own context after fork */
    int ndev = 0;
    pid_t c = fork();
    if (c == 0) _exit(cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0 ? 0 : 77);
    int st = 0;
    if (c < 0 || waitpid(c, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) == 77) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const char *names[] = {"malloc-host", "anon", "anon-thp", "file", "file-sparse", "file-anon"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (only && strcmp(only, names[i])) continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(probe(names[i], mib << 20, dir));
        if (pid < 0) return 2;
        double t0 = now_s();
        int done = 0;
        while (!done && now_s() - t0 < timeout) {
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) done = 1;
            else usleep(100000);
        }
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            printf("%-12s %6zu MiB: stalled: no result within %d s (killed)\n", names[i], mib,
                   timeout);
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) == 2) {
            printf("%-12s %6zu MiB: probe error (status %d)\n", names[i], mib, st);
        }
    }
    return 0;
}
