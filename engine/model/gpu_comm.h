/* gpu_comm.h - the NCCL communicator of gpu.devices: one process, one rank per device.
 *
 * What: gpu_comm_create builds a communicator over the listed CUDA devices (ncclCommInitAll;
 * rank i is devices[i]) after setting NCCL_NVLS_ENABLE=0 (NVLink multicast stays off); all-reduce
 * (sum) and broadcast of fp32 buffers run as one NCCL group over every rank, each rank's
 * operation enqueued on the stream the caller gives for it (the call returns once they are
 * enqueued; the caller synchronizes those streams). NCCL is not linked: a CUDA build with
 * nccl.h opens libnccl.so.2 on first use (gpu_comm_available says whether it could); a build
 * without the header, or without CUDA, has gpu_comm_available() == 0. Either way gpu_comm_create
 * then fails with ERR_UNSUPPORTED saying why.
 * Threads: create and destroy on one owner thread (create sets an environment variable: call it
 * before other threads read the environment); the collectives from one thread at a time per
 * communicator. Each call leaves the calling thread's current CUDA device as it found it.
 * Ownership: the communicator owns its NCCL handles; buffers and streams are the caller's.
 */
#ifndef TANDEM_GPU_COMM_H
#define TANDEM_GPU_COMM_H

#include <stddef.h>

struct gpu_comm;

/* 1 when this build has NCCL and libnccl.so.2 could be opened (thread-safe; opens it once). */
int gpu_comm_available(void);

/* n >= 1 distinct devices that exist. ERR_INVAL (bad list: a device missing, a duplicate),
 * ERR_UNSUPPORTED (no NCCL in this build), ERR_CUDA (NCCL's message), ERR_NOMEM. */
int gpu_comm_create(const int *devices, int n, struct gpu_comm **out, char *err);
void gpu_comm_destroy(struct gpu_comm *c); /* NULL is fine */

int gpu_comm_size(const struct gpu_comm *c);
int gpu_comm_device(const struct gpu_comm *c, int rank);

/* send[r], recv[r]: count floats on rank r's device (recv[r] == send[r] works in place);
 * streams[r]: a cudaStream_t of that device (NULL: its default stream). recv[r] = the sum over
 * every rank's send. ERR_CUDA with NCCL's message. */
int gpu_comm_allreduce_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, void *const *streams, char *err);
/* recv[r] = send[root] on every rank (send[r] of other ranks is not read; may be NULL). */
int gpu_comm_broadcast_f32(struct gpu_comm *c, const float *const *send, float *const *recv,
                           size_t count, int root, void *const *streams, char *err);

#endif
