/* gpu_devices.c - gpu.devices parsed and checked (see gpu_devices.h). */
#include "engine/model/gpu_devices.h"

#include "common/err.h"

#include <stdio.h>
#include <string.h>

#ifdef TANDEM_CUDA
#include <cuda_runtime_api.h>
#endif

int gpu_devices_parse(const char *s, int primary, struct gpu_devices *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (primary < 0)
        return err_set(err, ERR_CONFIG, "gpu.device = %d: must not be negative", primary);
    if (!s || !s[0]) {
        out->n = 1;
        out->id[0] = primary;
        return 0;
    }
    out->from_list = 1;
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '-')
            return err_set(err, ERR_CONFIG, "gpu.devices = '%s': device ordinals are not negative",
                           s);
        if (*p < '0' || *p > '9')
            return err_set(err, ERR_CONFIG,
                           "gpu.devices = '%s': must be CUDA device ordinals separated by commas "
                           "(e.g. 0,1)",
                           s);
        long v = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            if ((v = v * 10 + (*p - '0')) > 1024)
                return err_set(err, ERR_CONFIG, "gpu.devices = '%s': ordinal out of range", s);
        if (out->n == GPU_DEVICES_MAX)
            return err_set(err, ERR_CONFIG, "gpu.devices = '%s': more than %d devices", s,
                           GPU_DEVICES_MAX);
        for (int i = 0; i < out->n; i++)
            if (out->id[i] == (int)v)
                return err_set(err, ERR_CONFIG, "gpu.devices = '%s': device %ld is listed twice", s,
                               v);
        out->id[out->n++] = (int)v;
        while (*p == ' ') p++;
        if (!*p) break;
        if (*p++ != ',')
            return err_set(err, ERR_CONFIG,
                           "gpu.devices = '%s': must be CUDA device ordinals separated by commas "
                           "(e.g. 0,1)",
                           s);
    }
    if (primary != 0 && primary != out->id[0])
        return err_set(err, ERR_CONFIG,
                       "gpu.devices = '%s' starts with device %d but gpu.device = %d: leave "
                       "gpu.device unset or make it the first device listed",
                       s, out->id[0], primary);
    return 0;
}

int gpu_devices_present(void)
{
#ifdef TANDEM_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

int gpu_devices_check(const struct gpu_devices *d, char *err)
{
    int have = gpu_devices_present();
    for (int i = 0; i < d->n; i++)
        if (d->id[i] >= have) {
            char list[128];
            gpu_devices_format(d, list, sizeof list);
            return err_set(
                err, ERR_CONFIG,
                "gpu.devices = %s: device %d does not exist (%d CUDA device%s present%s)", list,
                d->id[i], have, have == 1 ? "" : "s",
#ifdef TANDEM_CUDA
                ""
#else
                ", a build without CUDA"
#endif
            );
        }
    return 0;
}

void gpu_devices_format(const struct gpu_devices *d, char *buf, int n)
{
    int len = 0;
    if (n > 0) buf[0] = 0;
    for (int i = 0; i < d->n && len < n; i++) {
        int k = snprintf(buf + len, (size_t)(n - len), i ? ",%d" : "%d", d->id[i]);
        if (k < 0) break;
        len += k;
    }
}
