/* test_hot_place.c - the hot-expert placement over several GPUs (engine/model/hot_place.h), on
 * fresh random counts each run (TANDEM_TEST_SEED replays):
 *   - one device: exactly ec_choose_hot's choice (the counts fed through ec_add);
 *   - any number of devices: every budget respected, every chosen expert on exactly one device,
 *     experts of 0 bytes never, the per-device tallies equal to a recount from the placement;
 *   - equal budgets and equal expert sizes: the routes of any two devices differ by at most the
 *     most routed chosen expert's routes (the greedy's invariant), and as many experts are chosen
 *     as the budgets hold;
 *   - no counts: the uniform order spread evenly (the counts per device differ by at most one);
 *   - bad arguments.
 */
#include "../check.h"
#include "common/err.h"
#include "engine/model/expert_counts.h"
#include "engine/model/hot_place.h"

#include <stdint.h>

static unsigned long long rs;
static uint64_t rnd(void)
{
    unsigned long long z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int rint_(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

static struct wt_hparams shape(int moe_layers, int E, int top_k)
{
    struct wt_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_layers = moe_layers + 1;
    hp.first_k_dense = 1;
    hp.moe_layer_freq = 1;
    hp.n_routed = E;
    hp.top_k = top_k;
    hp.hidden = 64;
    return hp;
}

/* random routes into c (skewed: a few experts take most) and their snapshot into routes */
static void fill(struct expert_counts *c, int M, int E, uint64_t *routes)
{
    int32_t ids[64];
    for (int r = 0; r < M; r++) {
        int calls = rint_(0, 40), skew = rint_(0, 3);
        for (int k = 0; k < calls; k++) {
            int n = rint_(1, 64);
            for (int i = 0; i < n; i++) {
                int e = rint_(0, E - 1);
                for (int s = 0; s < skew; s++) e = e * rint_(0, E - 1) / E; /* toward 0 */
                ids[i] = e;
            }
            ec_add(c, r, ids, n);
        }
    }
    ec_snapshot(c, routes);
}

static void check_consistent(const uint64_t *routes, const size_t *bytes, int N, const double *bud,
                             int nd, const int8_t *dev, const struct hot_place *hp)
{
    double b[HOT_PLACE_MAX_DEV] = {0};
    uint64_t r[HOT_PLACE_MAX_DEV] = {0}, sum = 0, total = 0;
    int cnt[HOT_PLACE_MAX_DEV] = {0}, chosen = 0, cand = 0;
    for (int i = 0; i < N; i++) {
        total += routes[i];
        cand += bytes[i] > 0;
        if (dev[i] < 0) continue;
        CHECK(dev[i] < nd);
        CHECK(bytes[i] > 0);
        b[dev[i]] += (double)bytes[i];
        r[dev[i]] += routes[i];
        cnt[dev[i]]++;
        chosen++;
        sum += routes[i];
    }
    CHECK_EQ(chosen, hp->chosen);
    CHECK_EQ(cand, hp->candidates);
    CHECK_EQ(sum, hp->routes);
    CHECK_EQ(total, hp->total);
    for (int d = 0; d < nd; d++) {
        CHECK(b[d] <= bud[d]);
        CHECK(b[d] == hp->bytes[d]);
        CHECK_EQ(r[d], hp->dev_routes[d]);
        CHECK_EQ(cnt[d], hp->count[d]);
    }
}

int main(void)
{
    rs = check_seed();
    char err[ERR_LEN];
    double worst = 0; /* the largest spread seen, in units of the largest chosen expert */
    for (int it = 0; it < 300; it++) {
        int M = rint_(1, 6), E = rint_(2, 64), N = M * E;
        struct wt_hparams shp = shape(M, E, 2);
        struct expert_counts *c = NULL;
        CHECK_EQ(ec_create(&shp, &c, err), 0);
        uint64_t *routes = calloc((size_t)N, sizeof *routes);
        size_t *bytes = calloc((size_t)N, sizeof *bytes);
        int8_t *dev = calloc((size_t)N, 1);
        uint8_t *hot = calloc((size_t)N, 1);
        CHECK(routes && bytes && dev && hot);
        if (it % 5) fill(c, M, E, routes); /* every fifth: no counts */
        else ec_snapshot(c, routes);
        int equal = it % 2 == 0;
        size_t eb = (size_t)rint_(100, 1000);
        for (int i = 0; i < N; i++)
            bytes[i] = equal ? eb : rint_(0, 4) == 0 ? 0 : (size_t)rint_(50, 2000);
        struct hot_place hp;
        struct ec_choice ch;
        /* one device: ec_choose_hot's choice exactly */
        double b1 = (double)rint_(0, N) * 600.0;
        CHECK_EQ(hot_place(routes, bytes, M, E, &b1, 1, dev, &hp),
                 ec_choose_hot(c, bytes, b1, hot, &ch));
        for (int i = 0; i < N; i++) CHECK_EQ(dev[i] == 0, hot[i]);
        CHECK_EQ(hp.routes, ch.routes);
        CHECK(hp.bytes[0] == ch.bytes);
        check_consistent(routes, bytes, N, &b1, 1, dev, &hp);
        /* several devices */
        int nd = rint_(2, 8);
        double bud[HOT_PLACE_MAX_DEV];
        double cap = (double)rint_(0, N / nd + 2);
        for (int d = 0; d < nd; d++) bud[d] = equal ? cap * (double)eb : rint_(0, 6 * N) * 100.0;
        CHECK(hot_place(routes, bytes, M, E, bud, nd, dev, &hp) >= 0);
        check_consistent(routes, bytes, N, bud, nd, dev, &hp);
        if (equal) {
            int fit = (int)cap * nd;
            CHECK_EQ(hp.chosen, fit < N ? fit : N);
            uint64_t lo = UINT64_MAX, hi = 0;
            for (int d = 0; d < nd; d++) {
                if (hp.dev_routes[d] < lo) lo = hp.dev_routes[d];
                if (hp.dev_routes[d] > hi) hi = hp.dev_routes[d];
            }
            if (hi - lo > hp.max_routes) {
                fprintf(stderr, "spread %llu > max expert %llu (M %d E %d devices %d cap %.0f)\n",
                        (unsigned long long)(hi - lo), (unsigned long long)hp.max_routes, M, E, nd,
                        cap);
                return 1;
            }
            if (hp.max_routes && (double)(hi - lo) / (double)hp.max_routes > worst)
                worst = (double)(hi - lo) / (double)hp.max_routes;
            if (!hp.total) /* the uniform order spread evenly */
                for (int d = 1; d < nd; d++) CHECK(abs(hp.count[d] - hp.count[0]) <= 1);
        }
        free(routes);
        free(bytes);
        free(dev);
        free(hot);
        ec_destroy(c);
    }
    /* bad arguments */
    {
        uint64_t r = 0;
        size_t b = 1;
        int8_t d;
        double bud[HOT_PLACE_MAX_DEV + 1] = {0};
        struct hot_place hp;
        CHECK_EQ(hot_place(&r, &b, 1, 1, bud, 0, &d, &hp), ERR_INVAL);
        CHECK_EQ(hot_place(&r, &b, 1, 1, bud, HOT_PLACE_MAX_DEV + 1, &d, &hp), ERR_INVAL);
        CHECK_EQ(hot_place(&r, &b, -1, 1, bud, 1, &d, &hp), ERR_INVAL);
    }
    printf("hot_place: ok (largest spread between devices %.2f of the most routed expert)\n",
           worst);
    return 0;
}
