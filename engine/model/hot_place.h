/* hot_place.h - the hot-expert placement over several GPUs: which experts are hot and on which
 * device each one lives, so that every device's share of the expert traffic is balanced.
 *
 * What: the candidates ((MoE row, expert) with device bytes > 0) are taken in ec_choose_hot's
 * order (recorded routes per byte, most first; ties by expert id, then row). Each goes to the
 * device with the least routes placed so far that still has room for it (ties: the fewest bytes
 * placed, then the lowest device index); one that fits no device is skipped, as ec_choose_hot
 * skips one that no longer fits. With one device this is ec_choose_hot's choice exactly. With
 * equal budgets and equal expert sizes the routes of any two devices differ by at most the
 * routes of the most routed chosen expert (greedy onto the least loaded keeps that invariant;
 * tests/engine/test_hot_place checks it on random counts). Without counts (all zero) the bytes
 * tie-break spreads the uniform order evenly over the devices.
 * Threads: pure function over caller-owned arrays; any thread. No globals.
 */
#ifndef TANDEM_HOT_PLACE_H
#define TANDEM_HOT_PLACE_H

#include <stddef.h>
#include <stdint.h>

#define HOT_PLACE_MAX_DEV 16

struct hot_place {
    int chosen, candidates;                 /* experts placed / with bytes > 0 */
    uint64_t routes, total;                 /* routes of the chosen / of every expert */
    int n_dev;                              /* devices */
    int count[HOT_PLACE_MAX_DEV];           /* experts placed per device */
    double bytes[HOT_PLACE_MAX_DEV];        /* their bytes per device */
    uint64_t dev_routes[HOT_PLACE_MAX_DEV]; /* their recorded routes per device */
    uint64_t max_routes;                    /* the most routed chosen expert's routes */
};

/* routes[row * n_expert + e]: recorded routes; bytes[...]: device bytes (0: cannot be hot);
 * budget[d]: bytes device d may take (d < n_dev <= HOT_PLACE_MAX_DEV). Writes dev[i] = the
 * device of expert i, -1 when it stays on the CPU. Returns the number chosen, ERR_INVAL for bad
 * sizes, ERR_NOMEM. */
int hot_place(const uint64_t *routes, const size_t *bytes, int rows, int n_expert,
              const double *budget, int n_dev, int8_t *dev, struct hot_place *out);

#endif
