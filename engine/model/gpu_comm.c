/* gpu_comm.c - the NCCL communicator of gpu.devices (see gpu_comm.h). */
#include "engine/model/gpu_comm.h"

#include "common/err.h"

#include <stdlib.h>

#ifdef TANDEM_NCCL
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>

/* libnccl (~220 MB, not always installed beside the CUDA runtime) is opened on first use rather
 * than linked, so the daemon starts without it and only a gpu.devices list of several devices
 * needs it. The table is process-wide, filled once under pthread_once and never changed. */
static struct {
    int ok;
    ncclResult_t (*init_all)(ncclComm_t *, int, const int *);
    ncclResult_t (*destroy)(ncclComm_t);
    ncclResult_t (*group_start)(void);
    ncclResult_t (*group_end)(void);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                               ncclComm_t, cudaStream_t);
    ncclResult_t (*broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t,
                              cudaStream_t);
    const char *(*error_string)(ncclResult_t);
} nccl;
static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;

static void nccl_open(void)
{
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    *(void **)&nccl.init_all = dlsym(h, "ncclCommInitAll");
    *(void **)&nccl.destroy = dlsym(h, "ncclCommDestroy");
    *(void **)&nccl.group_start = dlsym(h, "ncclGroupStart");
    *(void **)&nccl.group_end = dlsym(h, "ncclGroupEnd");
    *(void **)&nccl.all_reduce = dlsym(h, "ncclAllReduce");
    *(void **)&nccl.broadcast = dlsym(h, "ncclBroadcast");
    *(void **)&nccl.error_string = dlsym(h, "ncclGetErrorString");
    nccl.ok = nccl.init_all && nccl.destroy && nccl.group_start && nccl.group_end &&
              nccl.all_reduce && nccl.broadcast && nccl.error_string;
    if (!nccl.ok) dlclose(h);
}

struct gpu_comm {
    int n;
    int *dev;
    ncclComm_t *comm;
};

int gpu_comm_available(void)
{
    pthread_once(&nccl_once, nccl_open);
    return nccl.ok;
}

int gpu_comm_create(const int *devices, int n, struct gpu_comm **out, char *err)
{
    *out = NULL;
    if (!gpu_comm_available())
        return err_set(err, ERR_UNSUPPORTED,
                       "gpu comm: libnccl.so.2 could not be opened (NCCL is not installed "
                       "where the dynamic loader looks: add its folder to LD_LIBRARY_PATH)");
    int have = 0;
    if (cudaGetDeviceCount(&have) != cudaSuccess) {
        (void)cudaGetLastError();
        have = 0;
    }
    if (n < 1) return err_set(err, ERR_INVAL, "gpu comm: no device");
    for (int i = 0; i < n; i++) {
        if (devices[i] < 0 || devices[i] >= have)
            return err_set(err, ERR_INVAL, "gpu comm: device %d does not exist (%d present)",
                           devices[i], have);
        for (int j = 0; j < i; j++)
            if (devices[j] == devices[i])
                return err_set(err, ERR_INVAL, "gpu comm: device %d listed twice", devices[i]);
    }
    struct gpu_comm *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "gpu comm: out of memory");
    c->n = n;
    c->dev = malloc((size_t)n * sizeof *c->dev);
    c->comm = calloc((size_t)n, sizeof *c->comm);
    if (!c->dev || !c->comm) {
        gpu_comm_destroy(c);
        return err_set(err, ERR_NOMEM, "gpu comm: out of memory");
    }
    for (int i = 0; i < n; i++) c->dev[i] = devices[i];
    setenv("NCCL_NVLS_ENABLE", "0", 1); /* NVLink multicast off */
    int cur = 0;
    (void)cudaGetDevice(&cur);
    ncclResult_t r = nccl.init_all(c->comm, n, c->dev);
    (void)cudaSetDevice(cur);
    if (r != ncclSuccess) {
        free(c->comm);
        c->comm = NULL;
        gpu_comm_destroy(c);
        return err_set(err, ERR_CUDA, "gpu comm: ncclCommInitAll over %d device%s: %s", n,
                       n == 1 ? "" : "s", nccl.error_string(r));
    }
    *out = c;
    return 0;
}

void gpu_comm_destroy(struct gpu_comm *c)
{
    if (!c) return;
    if (c->comm)
        for (int i = 0; i < c->n; i++)
            if (c->comm[i]) nccl.destroy(c->comm[i]);
    free(c->comm);
    free(c->dev);
    free(c);
}

int gpu_comm_size(const struct gpu_comm *c) { return c->n; }
int gpu_comm_device(const struct gpu_comm *c, int rank) { return c->dev[rank]; }

/* one NCCL group over every rank; op 0 all-reduce, 1 broadcast */
static int group(struct gpu_comm *c, int op, const float *const *send, float *const *recv,
                 size_t count, int root, void *const *streams, char *err)
{
    int cur = 0;
    (void)cudaGetDevice(&cur);
    ncclResult_t r = nccl.group_start(), r2;
    for (int i = 0; r == ncclSuccess && i < c->n; i++) {
        cudaStream_t s = streams ? (cudaStream_t)streams[i] : NULL;
        if (cudaSetDevice(c->dev[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            r = ncclUnhandledCudaError;
            break;
        }
        r = op == 0 ? nccl.all_reduce(send[i], recv[i], count, ncclFloat32, ncclSum, c->comm[i], s)
                    : nccl.broadcast(send ? send[i] : NULL, recv[i], count, ncclFloat32, root,
                                     c->comm[i], s);
    }
    r2 = nccl.group_end();
    (void)cudaSetDevice(cur);
    if (r == ncclSuccess) r = r2;
    if (r != ncclSuccess)
        return err_set(err, ERR_CUDA, "gpu comm: %s of %zu floats: %s",
                       op == 0 ? "all-reduce" : "broadcast", count, nccl.error_string(r));
    return 0;
}

int gpu_comm_allreduce_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, void *const *streams, char *err)
{
    return group(c, 0, send, recv, count, 0, streams, err);
}

int gpu_comm_broadcast_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, int root, void *const *streams, char *err)
{
    if (root < 0 || root >= c->n || !send || !send[root])
        return err_set(err, ERR_INVAL, "gpu comm: broadcast root %d of %d ranks", root, c->n);
    return group(c, 1, send, recv, count, root, streams, err);
}

#else /* no NCCL in this build */

struct gpu_comm {
    int n;
};

int gpu_comm_available(void) { return 0; }

int gpu_comm_create(const int *devices, int n, struct gpu_comm **out, char *err)
{
    (void)devices;
    (void)n;
    *out = NULL;
    return err_set(err, ERR_UNSUPPORTED,
                   "gpu comm: this build has no NCCL (nccl.h was not found when it was "
                   "configured%s)",
#ifdef TANDEM_CUDA
                   ""
#else
                   ", and it has no CUDA"
#endif
    );
}

void gpu_comm_destroy(struct gpu_comm *c) { (void)c; }
int gpu_comm_size(const struct gpu_comm *c) { return c ? c->n : 0; }
int gpu_comm_device(const struct gpu_comm *c, int rank)
{
    (void)c;
    (void)rank;
    return -1;
}

int gpu_comm_allreduce_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, void *const *streams, char *err)
{
    (void)c, (void)send, (void)recv, (void)count, (void)streams;
    return err_set(err, ERR_UNSUPPORTED, "gpu comm: this build has no NCCL");
}

int gpu_comm_broadcast_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, int root, void *const *streams, char *err)
{
    (void)c, (void)send, (void)recv, (void)count, (void)root, (void)streams;
    return err_set(err, ERR_UNSUPPORTED, "gpu comm: this build has no NCCL");
}

#endif
