/* replica.c - the replica's name and its /health readiness detail (replica.h). */
#include "replica.h"

#include "common/err.h"

#include <string.h>

int replica_init(struct srv *s, char *err)
{
    const char *name = s->cfg->server_replica_name ? s->cfg->server_replica_name : "";
    size_t n = strlen(name);
    if (n >= sizeof s->replica)
        return err_set(err, ERR_CONFIG, "server.replica_name is longer than %zu bytes",
                       sizeof s->replica - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
            return err_set(err, ERR_CONFIG,
                           "server.replica_name must be printable ASCII (byte %zu is not)", i);
    memcpy(s->replica, name, n + 1);
    return 0;
}

json_t *replica_health(struct srv *s, int *code, const char **why)
{
    int loaded = atomic_load_explicit(&s->ready, memory_order_acquire);
    struct eng_stats st = {0};
    if (loaded) eng_stats(s->eng, &st);
    const char *state = "ready";
    *code = ERR_UNAVAILABLE;
    if (atomic_load(&s->leaving) || atomic_load(&s->draining)) {
        state = "draining";
        *why = "the server is shutting down";
    } else if (!loaded) {
        state = "loading";
        *why = "the model is still loading";
    } else if (st.failed) {
        state = "failed";
        *why = "the engine has failed";
    } else {
        *code = 0;
        *why = NULL;
    }
    json_t *r = json_pack("{s:s, s:s, s:s}", "status", *code ? "unavailable" : "ok", "state", state,
                          "model", s->model_name);
    if (r && s->replica[0]) json_object_set_new(r, "replica", json_string(s->replica));
    if (r && loaded) {
        json_object_set_new(r, "in_flight", json_integer(api_gen_count(s)));
        json_object_set_new(r, "running", json_integer(st.running));
        json_object_set_new(r, "waiting", json_integer(st.waiting));
        json_object_set_new(r, "kv_usage", json_real((double)(int)(st.kv_usage * 1000) / 1000));
    }
    return r;
}
