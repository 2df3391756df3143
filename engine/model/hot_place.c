/* hot_place.c - hot experts placed over several GPUs (see hot_place.h). */
#include "engine/model/hot_place.h"
#include "engine/model/expert_counts.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

int hot_place(const uint64_t *routes, const size_t *bytes, int rows, int n_expert,
              const double *budget, int n_dev, int8_t *dev, struct hot_place *out)
{
    memset(out, 0, sizeof *out);
    if (rows < 0 || n_expert < 0 || n_dev < 1 || n_dev > HOT_PLACE_MAX_DEV) return ERR_INVAL;
    const size_t N = (size_t)rows * (size_t)n_expert;
    out->n_dev = n_dev;
    memset(dev, -1, N);
    struct ec_cand *cd = malloc((N ? N : 1) * sizeof *cd);
    if (!cd) return ERR_NOMEM;
    size_t nc = 0;
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < n_expert; e++) {
            size_t i = (size_t)r * n_expert + e;
            out->total += routes[i];
            if (!bytes[i]) continue;
            cd[nc++] = (struct ec_cand){.routes = routes[i], .bytes = bytes[i], .row = r, .e = e};
        }
    out->candidates = (int)nc;
    qsort(cd, nc, sizeof *cd, ec_cand_cmp) /* ec_choose_hot's order */;
    double left[HOT_PLACE_MAX_DEV];
    for (int d = 0; d < n_dev; d++) left[d] = budget[d];
    for (size_t i = 0; i < nc; i++) {
        int best = -1;
        for (int d = 0; d < n_dev; d++) {
            if ((double)cd[i].bytes > left[d]) continue;
            if (best < 0 || out->dev_routes[d] < out->dev_routes[best] ||
                (out->dev_routes[d] == out->dev_routes[best] && out->bytes[d] < out->bytes[best]))
                best = d;
        }
        if (best < 0) continue;
        left[best] -= (double)cd[i].bytes;
        dev[(size_t)cd[i].row * n_expert + cd[i].e] = (int8_t)best;
        out->chosen++;
        out->count[best]++;
        out->bytes[best] += (double)cd[i].bytes;
        out->dev_routes[best] += cd[i].routes;
        out->routes += cd[i].routes;
        if (cd[i].routes > out->max_routes) out->max_routes = cd[i].routes;
    }
    free(cd);
    return out->chosen;
}
