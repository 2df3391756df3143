/* fuzz_counts.c - libFuzzer target: the routing-counts file (gpu.hot_experts_file) as read at
 * start-up (ec_load of engine/model/expert_counts.h). The input is written to a file and loaded
 * into counts of a fixed model shape (4 layers, 3 of them MoE, 8 experts, top-2).
 * Properties besides "no crash/leak/UB": a refused file leaves every count at zero and says why;
 * a loaded one saves and loads back to the same counts (the file is the format's fixed point).
 */
#include "fuzz_common.h"
#include "engine/model/expert_counts.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct wt_hparams hp;
static char path[64], path2[80];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_ERR);
    hp.n_layers = 4;
    hp.first_k_dense = 1;
    hp.moe_layer_freq = 1;
    hp.n_routed = 8;
    hp.top_k = 2;
    hp.hidden = 64;
    snprintf(path, sizeof path, "/tmp/fuzz-counts-%d", (int)getpid());
    snprintf(path2, sizeof path2, "%s.saved", path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
    char err[ERR_LEN] = "";
    struct expert_counts *c = NULL;
    if (ec_create(&hp, &c, err)) abort();
    int rc = ec_load(c, path, err);
    if (rc) {
        if (!err[0] || ec_total(c) != 0) abort(); /* refused: says why, adds nothing */
    } else {
        const struct ec_shape *sh = ec_shape(c);
        size_t n = (size_t)sh->moe_layers * sh->n_expert;
        uint64_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        struct expert_counts *d = NULL;
        if (!a || !b || ec_create(&hp, &d, err)) abort();
        ec_snapshot(c, a);
        if (ec_save(c, path2, err) || ec_load(d, path2, err)) abort();
        ec_snapshot(d, b);
        if (memcmp(a, b, n * sizeof *a) != 0) abort();
        ec_destroy(d);
        free(a);
        free(b);
        unlink(path2);
    }
    ec_destroy(c);
    return 0;
}
