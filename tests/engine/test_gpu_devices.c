/* test_gpu_devices.c - gpu.devices: the list parsed and checked (engine/model/gpu_devices.h),
 * and eng_create refusing a bad list, a device that does not exist and several devices (not
 * executed yet) with a clear error before it opens the model. */
#include "../check.h"
#include "common/err.h"
#include "config/cfg.h"
#include "engine/engine.h"
#include "engine/model/gpu_comm.h"
#include "engine/model/gpu_devices.h"

static void bad(const char *s, int primary, const char *needle)
{
    struct gpu_devices d;
    char err[ERR_LEN] = "";
    CHECK_EQ(gpu_devices_parse(s, primary, &d, err), ERR_CONFIG);
    CHECK_CONTAINS(err, "gpu.device");
    CHECK_CONTAINS(err, needle);
}

static void engine_refuses(const char *devices, const char *needle)
{
    struct cfg c;
    char err[ERR_LEN] = "";
    cfg_init_defaults(&c);
    /* the model path does not exist: the devices must be refused before it is opened */
    CHECK_EQ(cfg_set(&c, "model", "path", "/nonexistent/model", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "gpu", "devices", devices, "test", err), 0);
    struct engine *e = NULL;
    CHECK_EQ(eng_create(&c, NULL, NULL, &e, err), ERR_CONFIG);
    CHECK(e == NULL);
    CHECK_CONTAINS(err, "gpu.devices");
    CHECK_CONTAINS(err, needle);
    cfg_fini(&c);
}

int main(void)
{
    struct gpu_devices d;
    char err[ERR_LEN], buf[128];
    /* the default: the one device gpu.device names */
    CHECK_EQ(gpu_devices_parse("", 0, &d, err), 0);
    CHECK_EQ(d.n, 1);
    CHECK_EQ(d.id[0], 0);
    CHECK_EQ(d.from_list, 0);
    CHECK_EQ(gpu_devices_parse(NULL, 3, &d, err), 0);
    CHECK_EQ(d.n, 1);
    CHECK_EQ(d.id[0], 3);
    /* lists */
    CHECK_EQ(gpu_devices_parse("0,1, 3", 0, &d, err), 0);
    CHECK_EQ(d.n, 3);
    CHECK_EQ(d.id[2], 3);
    CHECK_EQ(d.from_list, 1);
    gpu_devices_format(&d, buf, sizeof buf);
    CHECK_STR(buf, "0,1,3");
    CHECK_EQ(gpu_devices_parse("2,0", 2, &d, err), 0); /* gpu.device agrees with the first */
    CHECK_EQ(d.id[0], 2);
    CHECK_EQ(gpu_devices_parse("5", 0, &d, err), 0); /* gpu.device at its default */
    CHECK_EQ(d.id[0], 5);
    /* errors name the option and the reason */
    bad("0,1,0", 0, "listed twice");
    bad("-1", 0, "not negative");
    bad("0,-2", 0, "not negative");
    bad("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", 0, "more than 16");
    bad("0,,1", 0, "separated by commas");
    bad("a", 0, "separated by commas");
    bad("0;1", 0, "separated by commas");
    bad("0,", 0, "separated by commas");
    bad("99999", 0, "out of range");
    bad("1,0", 2, "gpu.device = 2");
    /* existence: no device has an ordinal at or beyond the count present */
    int have = gpu_devices_present();
    snprintf(buf, sizeof buf, "%d", have);
    CHECK_EQ(gpu_devices_parse(buf, 0, &d, err), 0);
    CHECK_EQ(gpu_devices_check(&d, err), ERR_CONFIG);
    CHECK_CONTAINS(err, "does not exist");
    /* eng_create: a bad list, a missing device, several devices */
    engine_refuses("0,0", "listed twice");
    engine_refuses(buf, "does not exist");
    if (have >= 2) engine_refuses("0,1", gpu_comm_available() ? "not built yet" : "NCCL");
    printf("gpu_devices: ok (%d CUDA devices present)\n", have);
    return 0;
}
