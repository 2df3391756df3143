/* daemon.c - `tandem serve`: the daemon's main thread (cmd_serve.c calls daemon_serve).
 *
 * What: load the configuration, start the HTTP front end (so /health answers 503 while the
 * model loads), load the model and start the engine (progress on a TTY, STATUS= to systemd),
 * then run a libuv loop until a drain completes:
 *   SIGTERM/SIGINT  with server.drain_grace_s > 0, first a grace period: /health answers 503
 *                   (draining) while new requests are still served, so a load balancer's health
 *                   check takes the replica out before it refuses anything (a second signal ends
 *                   the grace at once). Then drain: no new connections (MHD quiesced) or
 *                   requests (503), the engine stops admitting; in-flight requests finish, or are
 *                   cancelled once server.drain_timeout_s has passed; then exit 0.
 *   SIGHUP          reload the API key file (old keys stay on error).
 *   probe timer     every 100 ms, cancel requests whose client disconnected while suspended.
 *   watchdog timer  WATCHDOG=1 only while the engine heartbeat (eng_stats.steps) advances or the
 *                   engine is idle; a failed engine starts a drain that exits 1 (systemd restarts).
 * Socket activation: with LISTEN_FDS (sd_listen_fds) the first passed socket is served.
 * Threads: this file runs on main only. Shutdown order: stop the loop, stop MHD (completes and
 * releases every connection), destroy the engine (delivers the last DONE events), free the rest.
 */
#include "common/err.h"
#include "common/log.h"
#include "config/cfg.h"
#include "engine/text/constrain.h"
#include "engine/text/jinja.h"
#include "auth.h"
#include "cors.h"
#include "daemon.h"
#include "http.h"
#include "metrics.h"
#include "replica.h"
#include "served.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

struct daemon {
    struct srv srv;
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t probe, watchdog, drain;
    uint64_t last_steps;
    int leaving; /* in the grace period before the drain */
    int draining;
    int cancelled;
    double drain_deadline;
    int exit_code;
};

static void progress_cb(void *ud, double frac, const char *what)
{
    int *tty = ud;
    char status[200];
    snprintf(status, sizeof status, "STATUS=loading %3.0f%% %s", frac * 100, what ? what : "");
    sd_notify(0, status);
    if (*tty) fprintf(stderr, "\rloading %3.0f%% %-60.60s", frac * 100, what ? what : "");
}

static void begin_drain(struct daemon *d, int exit_code, const char *why)
{
    if (d->draining) return;
    d->draining = 1;
    d->exit_code = exit_code;
    struct srv *s = &d->srv;
    if (exit_code)
        LOG_ERR("serve", "%s: draining %d request(s) (up to %llds), then exiting %d", why,
                api_gen_count(s), (long long)s->cfg->server_drain_timeout_s, exit_code);
    else
        LOG_NOTICE("serve", "%s: draining %d request(s) (up to %llds)", why, api_gen_count(s),
                   (long long)s->cfg->server_drain_timeout_s);
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    atomic_store(&s->draining, 1);
    http_quiesce(s);
    if (s->eng) eng_drain(s->eng);
    d->drain_deadline = http_now() + (double)s->cfg->server_drain_timeout_s;
}

static void on_drain_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    int n = api_gen_count(&d->srv);
    if (n == 0) {
        uv_stop(&d->loop);
        return;
    }
    double now = http_now();
    if (!d->cancelled && now >= d->drain_deadline) {
        LOG_NOTICE("serve", "drain deadline reached: cancelling %d request(s)", n);
        api_gen_cancel_all(&d->srv);
        d->cancelled = 1;
    } else if (d->cancelled && now >= d->drain_deadline + 10) {
        LOG_WARN("serve", "%d request(s) did not finish after cancellation; stopping anyway", n);
        uv_stop(&d->loop);
    }
}

static void start_drain(struct daemon *d, int exit_code, const char *why)
{
    if (d->draining) return;
    begin_drain(d, exit_code, why);
    uv_timer_stop(&d->drain);
    uv_timer_start(&d->drain, on_drain_tick, 0, 50);
}

static void on_grace_end(uv_timer_t *t)
{
    struct daemon *d = t->data;
    start_drain(d, 0, "grace period over");
}

/* SIGTERM/SIGINT: the grace period (server.drain_grace_s) if any, then the drain */
static void begin_leaving(struct daemon *d, const char *why)
{
    struct srv *s = &d->srv;
    long long grace = s->cfg->server_drain_grace_s;
    if (grace <= 0 || d->leaving) {
        start_drain(d, 0, why);
        return;
    }
    d->leaving = 1;
    atomic_store(&s->leaving, 1);
    LOG_NOTICE("serve", "%s: /health answers 503; still serving for %llds (server.drain_grace_s)",
               why, grace);
    sd_notify(0, "STOPPING=1\nSTATUS=leaving the load balancer");
    uv_timer_start(&d->drain, on_grace_end, (uint64_t)grace * 1000, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP) {
        char err[ERR_LEN];
        if (!auth_enabled(d->srv.auth)) {
            LOG_INFO("serve", "SIGHUP: no API key file configured");
        } else if (auth_reload(d->srv.auth, err) != 0) {
            LOG_ERR("serve", "SIGHUP: keeping the old API keys: %s", err);
        } else {
            LOG_NOTICE("serve", "SIGHUP: reloaded %d API key(s)", auth_key_count(d->srv.auth));
        }
        return;
    }
    if (d->draining && signum == SIGINT) {
        LOG_NOTICE("serve", "second SIGINT: cancelling everything");
        api_gen_cancel_all(&d->srv);
        d->cancelled = 1;
        return;
    }
    begin_leaving(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_probe(uv_timer_t *t)
{
    struct daemon *d = t->data;
    api_gen_probe(&d->srv);
}

static void on_watchdog(uv_timer_t *t)
{
    struct daemon *d = t->data;
    struct eng_stats st;
    eng_stats(d->srv.eng, &st);
    if (st.failed) {
        start_drain(d, 1, "engine failed");
        return;
    }
    int idle = st.running == 0 && st.waiting == 0;
    if (st.steps != d->last_steps || idle) sd_notify(0, "WATCHDOG=1");
    d->last_steps = st.steps;
}

static void fingerprint(struct srv *s, const char *model_path)
{
    uint32_t h = 2166136261u;
    const char *parts[] = {TANDEM_VERSION, model_path, s->model_name};
    for (int p = 0; p < 3; p++)
        for (const char *c = parts[p]; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
    snprintf(s->fingerprint, sizeof s->fingerprint, "fp_%08x", h);
}

static void model_name(struct srv *s, const struct cfg *c)
{
    if (c->model_name && *c->model_name) {
        snprintf(s->model_name, sizeof s->model_name, "%s", c->model_name);
        return;
    }
    /* the directory (or file) name without trailing slashes */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", c->model_path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *base = strrchr(buf, '/');
    base = base ? base + 1 : buf;
    size_t len = strlen(base);
    if (len >= sizeof s->model_name) len = sizeof s->model_name - 1;
    memcpy(s->model_name, base, len);
    s->model_name[len] = 0;
}

/* The tokenizer lives beside the weights: model.path itself (tokenizer.json, tiktoken.model, or
 * the GGUF metadata of a GGUF-only directory or file, as tok_load decides), or the directory of
 * a file. */
static int load_tokenizer(struct srv *s, const char *path, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return err_set(err, ERR_IO, "model.path %s: %s", path, strerror(errno));
    size_t n = strlen(path);
    if (S_ISDIR(st.st_mode) || (n > 5 && strcmp(path + n - 5, ".gguf") == 0))
        return tok_load(&s->tok, path, err);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return tok_load(&s->tok, ".", err);
    if (slash == dir) slash++;
    *slash = 0;
    return tok_load(&s->tok, dir, err);
}

/* The chat template: model.chat_template_file or the tokenizer's, rendered by a built-in
 * renderer when recognized, else parsed once for the Jinja interpreter. A model without any
 * template falls back to DeepSeek-V3's, loudly (like `tandem chat`; synthetic test models). */
static int select_template(struct srv *s, const struct cfg *cfg, char *err)
{
    char *file_text = NULL;
    const char *text = tok_chat_template(s->tok);
    int rc = 0;
    if (cfg->model_chat_template_file[0]) {
        if ((rc = tmpl_read_file(cfg->model_chat_template_file, &file_text, err)) != 0) return rc;
        text = file_text;
    }
    if (!text && strcmp(cfg->model_template, "auto") == 0) {
        LOG_WARN("serve", "the model has no chat template; using deepseek-v3");
        s->tmpl = TMPL_DEEPSEEK_V3;
        return 0;
    }
    rc = tmpl_select(cfg->model_template, text, &s->tmpl, err);
    if (rc == 0 && s->tmpl == TMPL_JINJA) {
        rc = jinja_parse(text, &s->jinja, err);
        tmpl_modes_of(text, &s->tmpl_modes);
        if (rc == 0)
            LOG_NOTICE("serve",
                       "chat template: no built-in renderer recognizes it; interpreting it as "
                       "Jinja (DeepSeek tool-call markers: %s, <think> reasoning: %s)",
                       s->tmpl_modes.kimi_tools        ? "Kimi-K2's"
                       : !s->tmpl_modes.deepseek_tools ? "no"
                       : s->tmpl_modes.v31_tools       ? "yes, V3.1's form"
                                                       : "yes",
                       s->tmpl_modes.think ? "yes" : "no");
    }
    free(file_text);
    return rc;
}

static int serve(struct daemon *d, const struct cfg *cfg)
{
    struct srv *s = &d->srv;
    char err[ERR_LEN] = "";
    int rc;
    int tty = isatty(2);

    s->cfg = cfg;
    s->listen_fd = -1;
    s->created = (long long)time(NULL);
    pthread_mutex_init(&s->gens_mu, NULL);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) seed = (uint64_t)time(NULL);
    atomic_store(&s->next_id, seed & 0x0000ffffffffffffull);
    model_name(s, cfg);
    fingerprint(s, cfg->model_path);
    if (served_check(cfg->model_served_names, err) != 0 || replica_init(s, err) != 0 ||
        cors_check(cfg->server_cors_origins, err) != 0) {
        LOG_ERR("serve", "%s", err);
        return 1;
    }

    if ((rc = metrics_create(s->model_name, &s->metrics)) != 0) {
        LOG_ERR("serve", "out of memory");
        return 1;
    }
    if ((rc = auth_create(cfg->server_api_key_file, &s->auth, err)) != 0) {
        LOG_ERR("serve", "%s", err);
        return 1;
    }
    int nfds = sd_listen_fds(1);
    if (nfds > 0) s->listen_fd = SD_LISTEN_FDS_START;
    if ((rc = http_start(s, err)) != 0) {
        LOG_ERR("serve", "%s", err);
        return 1;
    }
    if (s->listen_fd >= 0)
        LOG_NOTICE("serve", "serving on the socket passed by systemd (%d fd(s))", nfds);
    else
        LOG_NOTICE("serve", "listening on http://%s:%lld (loading %s)", cfg->server_host,
                   (long long)cfg->server_port, cfg->model_path);

    sd_notify(0, "STATUS=loading the model");
    if ((rc = load_tokenizer(s, cfg->model_path, err)) != 0) {
        LOG_ERR("serve", "tokenizer: %s", err);
        return 1;
    }
    if ((rc = select_template(s, cfg, err)) != 0) {
        LOG_ERR("serve", "chat template: %s", err);
        return 1;
    }
    if ((rc = constrain_vocab_create(s->tok, &s->cvocab, err)) != 0) {
        LOG_ERR("serve", "constrained decoding tables: %s", err);
        return 1;
    }
    double t0 = http_now();
    rc = eng_create(cfg, progress_cb, &tty, &s->eng, err);
    if (tty) fprintf(stderr, "\r%-80s\r", "");
    if (rc != 0) {
        LOG_ERR("serve", "loading %s: %s", cfg->model_path, err);
        sd_notify(0, "STATUS=model load failed");
        return 1;
    }
    eng_info(s->eng, &s->info);
    if (s->info.vocab_size <= 0) s->info.vocab_size = tok_vocab_size(s->tok);
    atomic_store_explicit(&s->ready, 1, memory_order_release);
    LOG_NOTICE("serve", "model %s loaded in %.1fs (%s, context %d, template %s); ready",
               s->model_name, http_now() - t0, s->info.placement ? s->info.placement : "?",
               s->info.context, tmpl_kind_name(s->tmpl));
    char status[300];
    snprintf(status, sizeof status, "READY=1\nSTATUS=serving %s on %s:%lld", s->model_name,
             cfg->server_host, (long long)cfg->server_port);
    sd_notify(0, status);

    uv_loop_init(&d->loop);
    uv_signal_init(&d->loop, &d->sig_term);
    uv_signal_init(&d->loop, &d->sig_int);
    uv_signal_init(&d->loop, &d->sig_hup);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
    uv_timer_init(&d->loop, &d->probe);
    uv_timer_init(&d->loop, &d->watchdog);
    uv_timer_init(&d->loop, &d->drain);
    d->probe.data = d->watchdog.data = d->drain.data = d;
    uv_timer_start(&d->probe, on_probe, 100, 100);
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
        uint64_t ms = wd_usec / 2000;
        uv_timer_start(&d->watchdog, on_watchdog, 0, ms ? ms : 1);
    } else {
        uv_timer_start(&d->watchdog, on_watchdog, 1000, 1000); /* still notices engine failure */
    }

    uv_run(&d->loop, UV_RUN_DEFAULT);

    LOG_NOTICE("serve", "stopping");
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->probe, NULL);
    uv_close((uv_handle_t *)&d->watchdog, NULL);
    uv_close((uv_handle_t *)&d->drain, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_loop_close(&d->loop);
    return d->exit_code;
}

int daemon_serve(int argc, char **argv)
{
    struct cfg cfg;
    char err[ERR_LEN] = "";
    if (cfg_load(&cfg, &argc, argv, err) != 0) {
        fprintf(stderr, "tandem serve: %s\n", err);
        cfg_fini(&cfg);
        return 2;
    }
    int print = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-config") == 0) {
            print = 1;
        } else {
            fprintf(stderr, "tandem serve: unknown argument '%s' (see tandem serve --help)\n",
                    argv[i]);
            cfg_fini(&cfg);
            return 2;
        }
    }
    if (print) {
        cfg_print(&cfg, stdout);
        cfg_fini(&cfg);
        return 0;
    }
    int lvl = log_level_parse(cfg.log_level);
    if (lvl > 0) log_set_level(lvl);
    if (!cfg.model_path || !*cfg.model_path) {
        fprintf(stderr, "tandem serve: no model: give --model DIR (or model.path)\n");
        cfg_fini(&cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct daemon *d = calloc(1, sizeof *d);
    if (!d) {
        cfg_fini(&cfg);
        return 1;
    }
    int rc = serve(d, &cfg);
    struct srv *s = &d->srv;
    http_stop(s);        /* closes every connection: on_complete releases each request */
    eng_destroy(s->eng); /* the last DONE events free what the engine still held */
    constrain_vocab_destroy(s->cvocab); /* after the engine: constraints borrow it */
    tok_destroy(s->tok);
    jinja_free(s->jinja);
    auth_destroy(s->auth);
    metrics_destroy(s->metrics);
    pthread_mutex_destroy(&s->gens_mu);
    free(d);
    cfg_fini(&cfg);
    if (rc == 0) LOG_NOTICE("serve", "drained; bye");
    return rc;
}
