/* test_metrics.c - Prometheus exposition: names, labels, cumulative buckets, counts. */
#include "../../common/err.h"
#include "../../server/metrics.h"
#include "../check.h"

#include <stdlib.h>

int main(void)
{
    struct metrics *m = NULL;
    CHECK_EQ(metrics_create("tiny \"x\"", &m), 0);
    metrics_observe(m, MET_TTFT, 0.003);
    metrics_observe(m, MET_TTFT, 0.5);
    metrics_observe(m, MET_TTFT, 1e6);
    metrics_observe(m, MET_GEN_TOKENS, 7);
    metrics_finished(m, MET_FIN_STOP);
    metrics_finished(m, MET_FIN_LENGTH);
    metrics_finished(m, MET_FIN_LENGTH);
    metrics_error(m, ERR_QUEUE_FULL);
    struct eng_stats st = {0};
    st.running = 3;
    st.waiting = 2;
    st.kv_usage = 0.25;
    st.iter_tokens_bucket[0] = 1;
    st.iter_tokens_bucket[11] = 4;
    st.iter_tokens_count = 5;
    st.expert_routes_total = 1000;
    st.hot_expert_routes_total = 250;
    st.hot_experts = 12;
    st.hot_expert_bytes = 123456789;
    size_t len = 0;
    char *t = metrics_render(m, &st, &len);
    CHECK(t);
    CHECK_EQ(strlen(t), len);
    CHECK_CONTAINS(t, "# TYPE tandem:num_requests_running gauge\n");
    CHECK_CONTAINS(t, "tandem:num_requests_running{model_name=\"tiny \\\"x\\\"\"} 3\n");
    CHECK_CONTAINS(t, "tandem:num_requests_waiting{model_name=\"tiny \\\"x\\\"\"} 2\n");
    CHECK_CONTAINS(t, "tandem:kv_cache_usage_perc{model_name=\"tiny \\\"x\\\"\"} 0.250000\n");
    CHECK_CONTAINS(t, "tandem:time_to_first_token_seconds_bucket{model_name=\"tiny "
                      "\\\"x\\\"\",le=\"0.005\"} 1\n");
    CHECK_CONTAINS(
        t,
        "tandem:time_to_first_token_seconds_bucket{model_name=\"tiny \\\"x\\\"\",le=\"0.5\"} 2\n");
    CHECK_CONTAINS(
        t,
        "tandem:time_to_first_token_seconds_bucket{model_name=\"tiny \\\"x\\\"\",le=\"+Inf\"} 3\n");
    CHECK_CONTAINS(t,
                   "tandem:time_to_first_token_seconds_count{model_name=\"tiny \\\"x\\\"\"} 3\n");
    CHECK_CONTAINS(
        t, "tandem:request_generation_tokens_bucket{model_name=\"tiny \\\"x\\\"\",le=\"5\"} 0\n");
    CHECK_CONTAINS(
        t, "tandem:request_generation_tokens_bucket{model_name=\"tiny \\\"x\\\"\",le=\"10\"} 1\n");
    CHECK_CONTAINS(t, "tandem:request_success_total{model_name=\"tiny "
                      "\\\"x\\\"\",finished_reason=\"length\"} 2\n");
    CHECK_CONTAINS(t, "tandem:http_errors_total{model_name=\"tiny "
                      "\\\"x\\\"\",code=\"QUEUE_FULL\",status=\"429\"} 1\n");
    /* per-bucket counts (the engine's form): accumulated, last bucket = over 1024 */
    CHECK_CONTAINS(
        t, "tandem:iteration_tokens_total_bucket{model_name=\"tiny \\\"x\\\"\",le=\"1\"} 1\n");
    CHECK_CONTAINS(
        t, "tandem:iteration_tokens_total_bucket{model_name=\"tiny \\\"x\\\"\",le=\"1024\"} 1\n");
    CHECK_CONTAINS(
        t, "tandem:iteration_tokens_total_bucket{model_name=\"tiny \\\"x\\\"\",le=\"+Inf\"} 5\n");
    CHECK_CONTAINS(t, "tandem:iteration_tokens_total_count{model_name=\"tiny \\\"x\\\"\"} 5\n");
    CHECK_CONTAINS(t, "tandem:e2e_request_latency_seconds_count");
    CHECK_CONTAINS(t, "tandem:request_queue_time_seconds_count");
    CHECK_CONTAINS(t, "tandem:inter_token_latency_seconds_count");
    CHECK_CONTAINS(t, "tandem:request_prompt_tokens_count");
    CHECK_CONTAINS(t, "tandem:prefix_cache_hits_total");
    CHECK_CONTAINS(t, "tandem:expert_routes_total{model_name=\"tiny \\\"x\\\"\"} 1000\n");
    CHECK_CONTAINS(t, "tandem:hot_expert_routes_total{model_name=\"tiny \\\"x\\\"\"} 250\n");
    CHECK_CONTAINS(t, "# TYPE tandem:hot_experts gauge\n");
    CHECK_CONTAINS(t, "tandem:hot_experts{model_name=\"tiny \\\"x\\\"\"} 12\n");
    CHECK_CONTAINS(t, "tandem:hot_expert_bytes{model_name=\"tiny \\\"x\\\"\"} 123456789\n");
    free(t);
    t = metrics_render(m, NULL, &len); /* before the engine exists */
    CHECK(t);
    free(t);
    metrics_destroy(m);
    return 0;
}
