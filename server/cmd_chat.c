/* cmd_chat.c - `tandem chat`: talk to a model in the terminal, or generate from one prompt.
 *
 *   tandem chat --model DIR                     interactive: each line is a user message; the
 *                                               conversation is rendered with the model's chat
 *                                               template (tmpl.h) and the reply streams out.
 *                                               "/reset" starts over, "/quit" or EOF ends,
 *                                               Ctrl-C stops the current reply.
 *   tandem chat --model DIR --prompt TEXT       one reply to TEXT (as a user message; with --raw
 *                                               TEXT is the whole prompt, no template, BOS added
 *                                               unless TEXT starts with it), printed to stdout.
 * Options: --max-tokens N (default engine.max_tokens_default), --temperature T (default 0 =
 * greedy with --prompt, 0.6 interactive), --top-p P, --top-k K, --seed N (default 0),
 * --ignore-eos, --stats (prompt/generated token counts, time to first token and decode tokens/s
 * on stderr), plus every configuration flag (--section.key=value).
 *
 * It drives the engine through engine.h exactly as the server does (eng_create, eng_submit,
 * events), so it exercises the same scheduler. Threads: the engine thread calls on_event, which
 * only queues the event under a mutex and signals; the main thread detokenizes and prints.
 */
#include "cmd.h"

#include "common/err.h"
#include "common/log.h"
#include "config/cfg.h"
#include "engine/engine.h"
#include "engine/text/detok.h"
#include "engine/text/jinja.h"
#include "engine/text/tmpl.h"
#include "engine/text/tok.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* events from the engine thread to the main thread */
struct inbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct eng_event *ev;
    int n, cap;
    int oom;
};

static void on_event(void *ud, const struct eng_event *ev)
{
    struct inbox *q = ud;
    pthread_mutex_lock(&q->mu);
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 64;
        struct eng_event *n = realloc(q->ev, (size_t)cap * sizeof *n);
        if (n) {
            q->ev = n;
            q->cap = cap;
        }
    }
    if (q->n < q->cap) q->ev[q->n++] = *ev;
    else if (ev->kind == ENG_EV_DONE) q->oom = 2; /* never lose the DONE: flag it */
    else q->oom = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct opts {
    const char *prompt;
    int raw, ignore_eos, stats;
    int max_tokens;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    int temperature_set;
};

struct turn_result {
    enum eng_finish finish;
    int n_prompt, n_cached, n_generated;
    double ttft, decode_s;
};

/* Submit ids, stream the reply to stdout (and into reply, if not NULL). Returns 0 or an ERR_*. */
static int generate(struct engine *eng, const struct tok *tk, const struct opts *o,
                    const struct tok_ids *ids, struct sbuf *reply, struct turn_result *res,
                    char *err)
{
    struct inbox q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct detok *dt = NULL;
    int rc = detok_create(&dt, tk, NULL, 0, DETOK_SKIP_SPECIAL, err);
    if (rc) return rc;
    struct eng_request r;
    memset(&r, 0, sizeof r);
    snprintf(r.request_id, sizeof r.request_id, "chat");
    r.prompt = malloc(ids->n * sizeof *r.prompt);
    if (!r.prompt) {
        detok_destroy(dt);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    memcpy(r.prompt, ids->v, ids->n * sizeof *r.prompt);
    r.n_prompt = (int)ids->n;
    r.samp.temperature = o->temperature;
    r.samp.top_p = o->top_p;
    r.samp.top_k = o->top_k;
    r.samp.repetition_penalty = 1.0f;
    r.samp.seed = o->seed;
    r.max_tokens = o->max_tokens;
    r.ignore_eos = o->ignore_eos;
    r.on_event = on_event;
    r.ud = &q;
    double t0 = now_s(), t_first = 0, t_last = 0;
    rc = eng_submit(eng, &r, err);
    if (rc) {
        free(r.prompt);
        detok_destroy(dt);
        return rc;
    }
    struct sbuf out = {0};
    int done = 0, cancelled = 0;
    memset(res, 0, sizeof *res);
    while (!done) {
        pthread_mutex_lock(&q.mu);
        while (q.n == 0 && !q.oom) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&q.cv, &q.mu, &ts);
            if (interrupted && !cancelled) break;
        }
        int n = q.n, oom = q.oom;
        struct eng_event *evs = NULL;
        if (n) {
            evs = malloc((size_t)n * sizeof *evs);
            if (evs) memcpy(evs, q.ev, (size_t)n * sizeof *evs);
            else oom = 1;
            q.n = 0;
        }
        q.oom = oom == 2 ? 2 : 0;
        pthread_mutex_unlock(&q.mu);
        if (interrupted && !cancelled) {
            eng_cancel(eng, r.id);
            cancelled = 1;
        }
        if (oom == 2) done = 1;
        for (int i = 0; evs && i < n; i++) {
            const struct eng_event *ev = &evs[i];
            res->n_prompt = ev->n_prompt;
            res->n_cached = ev->n_cached;
            res->n_generated = ev->n_generated;
            if (ev->kind == ENG_EV_DONE) {
                res->finish = ev->finish;
                done = 1;
                if (ev->finish == ENG_FINISH_ERROR)
                    rc = err_set(err, ev->err ? ev->err : ERR_INTERNAL, "generation failed: %s",
                                 err_message(ev->err ? ev->err : ERR_INTERNAL));
                continue;
            }
            t_last = now_s();
            if (!t_first) t_first = t_last;
            if (ev->finish == ENG_FINISH_STOP) continue; /* EOS: not part of the text */
            size_t before = out.n;
            if (detok_feed(dt, ev->token, &out, NULL) < 0) continue;
            if (out.n > before)
                fwrite(out.s + before, 1, out.n - before, stdout); /* s may be NULL */
            fflush(stdout);
        }
        free(evs);
    }
    size_t before = out.n;
    detok_finish(dt, &out);
    if (out.n > before) fwrite(out.s + before, 1, out.n - before, stdout);
    fflush(stdout);
    if (reply && out.n) sbuf_append(reply, out.s, out.n);
    res->ttft = t_first ? t_first - t0 : 0;
    res->decode_s = t_first ? t_last - t_first : 0;
    sbuf_fini(&out);
    detok_destroy(dt);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cv);
    free(q.ev);
    return rc;
}

static void print_stats(const struct turn_result *r)
{
    double dec = r->n_generated > 1 && r->decode_s > 0 ? (r->n_generated - 1) / r->decode_s : 0;
    double pre = r->ttft > 0 ? (r->n_prompt - r->n_cached) / r->ttft : 0;
    fprintf(stderr,
            "[prompt %d tokens (%d cached), generated %d; time to first token %.3f s (%.1f "
            "prompt tok/s); decode %.2f tok/s]\n",
            r->n_prompt, r->n_cached, r->n_generated, r->ttft, pre, dec);
}

static int parse_args(int argc, char **argv, struct opts *o, const struct cfg *cfg)
{
    memset(o, 0, sizeof *o);
    o->max_tokens = (int)cfg->engine_max_tokens_default;
    o->top_p = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "--raw") == 0) {
            o->raw = 1;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            o->ignore_eos = 1;
        } else if (strcmp(a, "--stats") == 0) {
            o->stats = 1;
        } else if (!v) {
            fprintf(stderr, "tandem chat: unknown option or missing value: %s\n", a);
            return -1;
        } else if (strcmp(a, "--prompt") == 0) {
            o->prompt = v;
            i++;
        } else if (strcmp(a, "--max-tokens") == 0) {
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 1048576) goto bad;
            o->max_tokens = (int)n;
            i++;
        } else if (strcmp(a, "--temperature") == 0) {
            o->temperature = strtof(v, &end);
            if (*end || !(o->temperature >= 0 && o->temperature <= 100)) goto bad;
            o->temperature_set = 1;
            i++;
        } else if (strcmp(a, "--top-p") == 0) {
            o->top_p = strtof(v, &end);
            if (*end || !(o->top_p > 0 && o->top_p <= 1)) goto bad;
            i++;
        } else if (strcmp(a, "--top-k") == 0) {
            long n = strtol(v, &end, 10);
            if (*end || n < 0 || n > 1000000) goto bad;
            o->top_k = (int)n;
            i++;
        } else if (strcmp(a, "--seed") == 0) {
            errno = 0;
            o->seed = strtoull(v, &end, 0);
            if (*end || errno) goto bad;
            i++;
        } else {
            fprintf(stderr, "tandem chat: unknown option %s\n", a);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "tandem chat: bad value for %s: %s\n", a, v);
        return -1;
    }
    if (o->prompt && !o->prompt[0]) {
        fprintf(stderr, "tandem chat: empty prompt\n");
        return -1;
    }
    if (!o->temperature_set) o->temperature = o->prompt ? 0.0f : 0.6f;
    return 0;
}

/* The conversation so far, for the template. */
struct history {
    struct tmpl_msg *m;
    char **owned;
    size_t n, cap;
};

static int history_add(struct history *h, const char *role, const char *text, size_t len)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct tmpl_msg *m = realloc(h->m, cap * sizeof *m);
        if (!m) return ERR_NOMEM;
        h->m = m;
        char **o = realloc(h->owned, cap * sizeof *o);
        if (!o) return ERR_NOMEM;
        h->owned = o;
        h->cap = cap;
    }
    char *s = strndup(text, len);
    if (!s) return ERR_NOMEM;
    memset(&h->m[h->n], 0, sizeof h->m[h->n]);
    h->m[h->n].role = role;
    h->m[h->n].content = s;
    h->owned[h->n] = s;
    h->n++;
    return 0;
}

static void history_clear(struct history *h)
{
    for (size_t i = 0; i < h->n; i++) free(h->owned[i]);
    h->n = 0;
}

/* the history as OpenAI messages, for an interpreted template */
static int render_jinja(const struct tok *tk, const struct jinja *jt, const struct history *h,
                        struct sbuf *out, char *err)
{
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < h->n; i++)
        if (json_array_append_new(
                msgs, json_pack("{s:s,s:s}", "role", h->m[i].role, "content", h->m[i].content))) {
            json_decref(msgs);
            msgs = NULL;
        }
    if (!msgs) return err_set(err, ERR_NOMEM, "out of memory");
    struct tmpl_jinja_ctx c = {.messages = msgs,
                               .add_generation_prompt = 1,
                               .bos_token = tok_bos_text(tk),
                               .eos_token = tok_eos_text(tk)};
    int rc = tmpl_jinja_render(jt, &c, out, err);
    json_decref(msgs);
    return rc;
}

static int encode_turn(const struct tok *tk, enum tmpl_kind kind, const struct jinja *jt,
                       const struct history *h, struct tok_ids *ids, char *err)
{
    struct sbuf text = {0};
    struct tmpl_opts to = {.add_generation_prompt = 1, .bos_token = tok_bos_text(tk)};
    int rc = kind == TMPL_JINJA ? render_jinja(tk, jt, h, &text, err)
                                : tmpl_render(kind, h->m, h->n, &to, &text, err);
    ids->n = 0;
    if (rc == 0) rc = tok_encode(tk, text.s, text.n, TOK_ENC_SPECIAL, ids, err);
    sbuf_fini(&text);
    return rc;
}

static void progress(void *ud, double frac, const char *what)
{
    int *tty = ud;
    if (*tty) fprintf(stderr, "\rloading %3.0f%% %-40.40s", frac * 100, what ? what : "");
}

int cmd_chat(int argc, char **argv)
{
    struct cfg cfg;
    char err[ERR_LEN] = "";
    if (cfg_load(&cfg, &argc, argv, err) != 0) {
        fprintf(stderr, "tandem chat: %s\n", err);
        return 2;
    }
    log_set_level(log_level_parse(cfg.log_level));
    struct opts o;
    if (parse_args(argc, argv, &o, &cfg) != 0) {
        cfg_fini(&cfg);
        return 2;
    }
    if (!cfg.model_path || !cfg.model_path[0]) {
        fprintf(stderr, "tandem chat: no model: use --model DIR\n");
        cfg_fini(&cfg);
        return 2;
    }
    int status = 1;
    struct tok *tk = NULL;
    struct engine *eng = NULL;
    struct tok_ids ids = {0};
    struct history hist = {0};
    enum tmpl_kind kind = TMPL_DEEPSEEK_V3;
    struct jinja *jt = NULL;
    char *file_text = NULL;
    if (tok_load(&tk, cfg.model_path, err) != 0) goto out;
    if (!(o.prompt && o.raw)) {
        const char *text = tok_chat_template(tk);
        if (cfg.model_chat_template_file[0]) {
            if (tmpl_read_file(cfg.model_chat_template_file, &file_text, err) != 0) goto out;
            text = file_text;
        }
        int rc = tmpl_select(cfg.model_template, text, &kind, err);
        if (rc == 0 && kind == TMPL_JINJA) rc = jinja_parse(text, &jt, err);
        if (rc != 0) {
            if (strcmp(cfg.model_template, "auto") != 0) goto out;
            /* a chat tool should still chat: say so and use the DeepSeek-V3 template */
            LOG_WARN("chat", "%s; using deepseek-v3", err);
            kind = TMPL_DEEPSEEK_V3;
            err[0] = 0;
        }
    }
    int tty = isatty(2);
    if (eng_create(&cfg, progress, &tty, &eng, err) != 0) {
        if (tty) fprintf(stderr, "\n");
        goto out;
    }
    if (tty) fprintf(stderr, "\r%-60s\r", "");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    struct turn_result res;

    if (o.prompt) {
        int rc;
        if (o.raw) {
            const char *bos = tok_bos_text(tk);
            unsigned fl = TOK_ENC_SPECIAL;
            if (bos[0] && strncmp(o.prompt, bos, strlen(bos)) != 0) fl |= TOK_ENC_BOS;
            rc = tok_encode(tk, o.prompt, strlen(o.prompt), fl, &ids, err);
        } else {
            rc = history_add(&hist, "user", o.prompt, strlen(o.prompt));
            if (rc == 0) rc = encode_turn(tk, kind, jt, &hist, &ids, err);
        }
        if (rc == 0) rc = generate(eng, tk, &o, &ids, NULL, &res, err);
        if (rc != 0) goto out;
        printf("\n");
        if (o.stats) print_stats(&res);
        status = 0;
        goto out;
    }

    /* interactive */
    int in_tty = isatty(0);
    if (in_tty)
        fprintf(stderr,
                "tandem chat (%s template). /reset starts over, /quit or Ctrl-D ends, "
                "Ctrl-C stops a reply.\n",
                tmpl_kind_name(kind));
    char *line = NULL;
    size_t cap = 0;
    status = 0;
    for (;;) {
        if (in_tty) {
            fprintf(stderr, "> ");
            fflush(stderr);
        }
        interrupted = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            history_clear(&hist);
            continue;
        }
        struct sbuf reply = {0};
        int rc = history_add(&hist, "user", line, (size_t)n);
        int added = rc == 0;
        if (rc == 0) rc = encode_turn(tk, kind, jt, &hist, &ids, err);
        if (rc == 0) rc = generate(eng, tk, &o, &ids, &reply, &res, err);
        printf("\n");
        fflush(stdout);
        if (rc != 0) {
            fprintf(stderr, "tandem chat: %s\n", err[0] ? err : err_message(rc));
            if (added) free(hist.owned[--hist.n]); /* drop the failed user turn */
        } else {
            history_add(&hist, "assistant", reply.s ? reply.s : "", reply.n);
            if (o.stats) print_stats(&res);
        }
        sbuf_fini(&reply);
    }
    free(line);

out:
    if (status != 0 && err[0]) fprintf(stderr, "tandem chat: %s\n", err);
    eng_destroy(eng);
    history_clear(&hist);
    free(hist.m);
    free(hist.owned);
    tok_ids_fini(&ids);
    tok_destroy(tk);
    jinja_free(jt);
    free(file_text);
    cfg_fini(&cfg);
    return status;
}
