/* gpu_devices.h - gpu.devices: the CUDA devices a hybrid model may use, parsed and checked.
 *
 * What: gpu.devices is a comma-separated list of CUDA device ordinals ("0,1,3"); empty (the
 * default) means the one device gpu.device names, which is today's single-GPU engine exactly.
 * The first device listed is the primary one: attention, the dense layers, the shared experts,
 * the router and the KV cache live there; the others may only hold hot experts (docs/gpu.md,
 * "Several GPUs"). gpu_devices_parse checks the text (numbers only, no duplicates, none
 * negative, at most GPU_DEVICES_MAX) and its agreement with gpu.device; gpu_devices_check asks
 * the CUDA runtime whether each exists (a build without CUDA has none).
 * Threads: pure functions except gpu_devices_present (the CUDA runtime; any thread).
 * Ownership: caller-owned arrays.
 */
#ifndef TANDEM_GPU_DEVICES_H
#define TANDEM_GPU_DEVICES_H

#define GPU_DEVICES_MAX 16

struct gpu_devices {
    int n;                   /* 1..GPU_DEVICES_MAX */
    int id[GPU_DEVICES_MAX]; /* CUDA ordinals; id[0] is the primary device */
    int from_list;           /* 1: gpu.devices was given; 0: gpu.device alone */
};

/* Parse gpu.devices (s; NULL or "" = {primary}) against gpu.device (primary). A list whose first
 * entry differs from a gpu.device other than 0 is an error (two options naming different primary
 * devices). ERR_CONFIG naming gpu.devices and the value. */
int gpu_devices_parse(const char *s, int primary, struct gpu_devices *out, char *err);

/* CUDA devices present (0 without CUDA or without a usable driver). */
int gpu_devices_present(void);

/* ERR_CONFIG when a listed device does not exist (naming it and how many there are). */
int gpu_devices_check(const struct gpu_devices *d, char *err);

/* "0,1,3" into buf. */
void gpu_devices_format(const struct gpu_devices *d, char *buf, int n);

#endif
