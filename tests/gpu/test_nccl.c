/* test_nccl.c - the NCCL communicator of gpu.devices (engine/model/gpu_comm.h) over every CUDA
 * device present, one rank each (one rank on a one-GPU machine): all-reduce of random buffers of
 * integer-valued floats (exact in fp32, so the result must equal the host sum bit for bit) and
 * of random normal floats (within the rounding of a sum of n terms), in place and out of place,
 * on a stream of each device; broadcast from every root; a bad list is refused. Fresh inputs each
 * run (TANDEM_TEST_SEED replays). Exits 77 without a GPU, in a build without NCCL, or when
 * TANDEM_TEST_GPUS=k asks for more devices than are present (k also caps the ranks used).
 */
#include "tests/gpu/gpu_test.h"

#include "common/err.h"
#include "engine/model/gpu_comm.h"

#define MAXR 16

static int ranks;
static int devs[MAXR];
static cudaStream_t st[MAXR];

static void run_allreduce(struct gpu_comm *c, size_t count, int integers, int in_place)
{
    char err[ERR_LEN];
    float *h[MAXR], *sum = calloc(count, sizeof *sum), *got = malloc(count * sizeof *got);
    double *dsum = calloc(count, sizeof *dsum), *asum = calloc(count, sizeof *asum);
    float *d_send[MAXR], *d_recv[MAXR];
    CHECK(sum && got && dsum && asum);
    for (int r = 0; r < ranks; r++) {
        h[r] = malloc(count * sizeof *h[r]);
        CHECK(h[r]);
        for (size_t i = 0; i < count; i++) {
            h[r][i] = integers ? (float)gt_int(-1000, 1000) : (float)gt_normal();
            sum[i] += h[r][i]; /* integers: exact, any order */
            dsum[i] += h[r][i];
            asum[i] += fabs(h[r][i]);
        }
        CUDA_CHECK(cudaSetDevice(devs[r]));
        CUDA_CHECK(cudaMalloc((void **)&d_send[r], count * sizeof(float)));
        d_recv[r] = d_send[r];
        if (!in_place) CUDA_CHECK(cudaMalloc((void **)&d_recv[r], count * sizeof(float)));
        CUDA_CHECK(cudaMemcpy(d_send[r], h[r], count * sizeof(float), cudaMemcpyHostToDevice));
    }
    CHECK_EQ(gpu_comm_allreduce_f32(c, (const float *const *)d_send, d_recv, count,
                                    (void *const *)st, err),
             0);
    double worst = 0;
    for (int r = 0; r < ranks; r++) {
        CUDA_CHECK(cudaSetDevice(devs[r]));
        CUDA_CHECK(cudaStreamSynchronize(st[r]));
        CUDA_CHECK(cudaMemcpy(got, d_recv[r], count * sizeof(float), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < count; i++) {
            if (integers) {
                if (memcmp(&got[i], &sum[i], sizeof(float))) {
                    fprintf(stderr, "rank %d [%zu]: %.9g != %.9g\n", r, i, got[i], sum[i]);
                    exit(1);
                }
                continue;
            }
            /* n - 1 fp32 additions: |error| <= (n - 1) u sum|x_i| (u = 2^-24), plus the final
             * rounding to fp32 */
            double tol = (ranks + 1) * 0x1.0p-24 * asum[i] + 1e-30;
            double e = fabs((double)got[i] - dsum[i]);
            if (e > tol) {
                fprintf(stderr, "rank %d [%zu]: %.9g vs %.9g (tol %.3g)\n", r, i, got[i], dsum[i],
                        tol);
                exit(1);
            }
            if (asum[i] > 0 && e / asum[i] > worst) worst = e / asum[i];
        }
        CUDA_CHECK(cudaFree(d_send[r]));
        if (!in_place) CUDA_CHECK(cudaFree(d_recv[r]));
        free(h[r]);
    }
    printf("all-reduce %d ranks, %zu floats, %s, %s: ok%s", ranks, count,
           integers ? "integers (bitwise)" : "normal", in_place ? "in place" : "out of place",
           integers ? "\n" : "");
    if (!integers) printf(" (worst error %.2e of sum |x|)\n", worst);
    free(sum);
    free(got);
    free(dsum);
    free(asum);
}

static void run_broadcast(struct gpu_comm *c, size_t count, int root)
{
    char err[ERR_LEN];
    float *h = malloc(count * sizeof *h), *got = malloc(count * sizeof *got);
    float *d[MAXR];
    CHECK(h && got);
    for (size_t i = 0; i < count; i++) h[i] = (float)gt_normal();
    for (int r = 0; r < ranks; r++) {
        CUDA_CHECK(cudaSetDevice(devs[r]));
        d[r] = gt_dev(count * sizeof(float)); /* poisoned */
    }
    CUDA_CHECK(cudaSetDevice(devs[root]));
    CUDA_CHECK(cudaMemcpy(d[root], h, count * sizeof(float), cudaMemcpyHostToDevice));
    CHECK_EQ(
        gpu_comm_broadcast_f32(c, (const float *const *)d, d, count, root, (void *const *)st, err),
        0);
    for (int r = 0; r < ranks; r++) {
        CUDA_CHECK(cudaSetDevice(devs[r]));
        CUDA_CHECK(cudaStreamSynchronize(st[r]));
        CUDA_CHECK(cudaMemcpy(got, d[r], count * sizeof(float), cudaMemcpyDeviceToHost));
        CHECK(memcmp(got, h, count * sizeof(float)) == 0);
        CUDA_CHECK(cudaFree(d[r]));
    }
    printf("broadcast from rank %d of %d, %zu floats: ok\n", root, ranks, count);
    free(h);
    free(got);
}

int main(void)
{
    gt_require_gpu();
    if (!gpu_comm_available()) SKIP("this build has no NCCL");
    int have = 0;
    CUDA_CHECK(cudaGetDeviceCount(&have));
    const char *k = getenv("TANDEM_TEST_GPUS");
    ranks = have < MAXR ? have : MAXR;
    if (k) {
        int want = atoi(k);
        if (want > have) SKIP("TANDEM_TEST_GPUS=%d but %d CUDA devices present", want, have);
        if (want >= 1) ranks = want;
    }
    gt_state = check_seed();
    for (int r = 0; r < ranks; r++) {
        devs[r] = r;
        CUDA_CHECK(cudaSetDevice(r));
        CUDA_CHECK(cudaStreamCreateWithFlags(&st[r], cudaStreamNonBlocking));
    }
    char err[ERR_LEN];
    struct gpu_comm *c = NULL;
    if (gpu_comm_create(devs, ranks, &c, err)) {
        fprintf(stderr, "gpu_comm_create: %s\n", err);
        return 1;
    }
    CHECK_EQ(gpu_comm_size(c), ranks);
    CHECK_STR(getenv("NCCL_NVLS_ENABLE"), "0");
    const size_t sizes[] = {1, 7, 4096, 1u << 20, 3u * 7168 + 5};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        run_allreduce(c, sizes[i], 1, 0);
        run_allreduce(c, sizes[i], 1, 1);
        run_allreduce(c, sizes[i], 0, (int)(i & 1));
    }
    for (int root = 0; root < ranks; root++) run_broadcast(c, 12345, root);
    CHECK_EQ(gpu_comm_broadcast_f32(c, NULL, NULL, 1, ranks, NULL, err), ERR_INVAL);
    gpu_comm_destroy(c);
    /* bad lists: a device not present, a duplicate */
    int bad[2] = {0, have};
    CHECK_EQ(gpu_comm_create(bad, 2, &c, err), ERR_INVAL);
    CHECK_CONTAINS(err, "does not exist");
    bad[1] = 0;
    CHECK_EQ(gpu_comm_create(bad, 2, &c, err), ERR_INVAL);
    CHECK_CONTAINS(err, "twice");
    for (int r = 0; r < ranks; r++) {
        CUDA_CHECK(cudaSetDevice(r));
        CUDA_CHECK(cudaStreamDestroy(st[r]));
    }
    printf("nccl: ok (%d rank%s of %d devices)\n", ranks, ranks == 1 ? "" : "s", have);
    return 0;
}
