/* gen_text.c - a request's queued engine events turned into each choice's text.
 *
 * What: gen_text_update takes the queued events (gen_events.c) and, per choice, counts tokens,
 * collects logprobs, feeds the token to the choice's detokenizer (complete UTF-8 only, stop
 * strings held back; detok.h) and records how the choice finished. For chat, an added token
 * that the choice's pipe does not parse (a stray <｜User｜>, tool markers without tools) gives
 * no text. For chat the new text then
 * goes through the choice's pipe (R1 reasoning split, tool calls; toolparse.h), which keeps it
 * until the SSE chunks or the final JSON take it (gen_output.c). A choice that hit a stop
 * string (or failed) is finished here; its engine request is returned to be cancelled, which
 * the caller does without any lock held.
 * Threads: the request's HTTP thread only; touches only HTTP-side state of the gen.
 * Invariants: a choice is finished once (n_finished counts them), so it is cancelled at most
 * once: the cancel list never holds more than n_choices ids.
 */
#include "gen.h"

#include "common/log.h"

#include <stdio.h>

static const char *finish_name(enum eng_finish f)
{
    /* CANCELLED only reaches a client still connected when the drain deadline cut it short */
    return f == ENG_FINISH_STOP ? "stop" : "length";
}

static void choice_finish(struct gen *g, struct choice *c, const char *reason)
{
    if (c->finished) return;
    c->finished = 1;
    c->finish = reason;
    g->n_finished++;
}

/* chat: an added or special token whose text the choice's pipe does not consume
 * (toolparse_pipe_wants) produces no text, so the model's markers never reach a client; the
 * chat detokenizer keeps special tokens (a tokenizer may mark the tool markers special) */
static int hidden_token(const struct gen *g, struct choice *c, int32_t id)
{
    if (!c->pipe_on || !(tok_is_added(g->srv->tok, id) || tok_is_special(g->srv->tok, id)))
        return 0;
    size_t len = 0;
    const char *piece = tok_piece(g->srv->tok, id, &len);
    return !piece || !toolparse_pipe_wants(&c->pipe, piece, len);
}

/* One token of choice c. Returns 1 when the choice ended here (its request is to be cancelled). */
static int take_token(struct gen *g, struct choice *c, const struct eng_event *ev)
{
    char err[ERR_LEN];
    c->n_gen++;
    if (ev->finish == ENG_FINISH_STOP) return 0; /* EOS / stop id: not part of the text */
    if (g->p.logprobs) gen_logprobs_add(g, c, ev);
    if (hidden_token(g, c, ev->token)) return 0;
    int rc = detok_feed(c->dt, ev->token, &c->text, err);
    if (rc == DETOK_STOPPED) {
        choice_finish(g, c, "stop");
        return 1;
    }
    if (rc < 0) {
        g->err_code = rc;
        snprintf(g->err_msg, sizeof g->err_msg, "%s", err);
        choice_finish(g, c, "stop");
        return 1;
    }
    return 0;
}

/* The engine finished choice c. */
static void take_done(struct gen *g, struct choice *c, const struct eng_event *ev)
{
    if (ev->finish == ENG_FINISH_ERROR) {
        g->err_code = ev->err ? ev->err : ERR_INTERNAL;
        snprintf(g->err_msg, sizeof g->err_msg, "generation failed: %s", err_message(g->err_code));
    }
    /* the U+FFFD that replaces an unfinished last character can complete a stop string: then
     * the choice ends with "stop" */
    int frc = detok_finish(c->dt, &c->text);
    if (frc < 0) g->err_code = ERR_NOMEM;
    choice_finish(g, c, frc == DETOK_STOPPED ? "stop" : finish_name(ev->finish));
}

/* chat: the new text goes through the choice's pipe (reasoning split, tool calls) */
static void feed_pipes(struct gen *g)
{
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        if (!c->pipe_on || c->pipe_done) continue;
        int rc = c->text.n ? toolparse_pipe_feed(&c->pipe, c->text.s, c->text.n) : 0;
        c->text.n = 0;
        if (rc == 0 && c->finished) {
            c->pipe_done = 1;
            rc = toolparse_pipe_finish(&c->pipe);
        }
        if (rc != 0 && !g->err_code) {
            g->err_code = ERR_NOMEM;
            snprintf(g->err_msg, sizeof g->err_msg, "out of memory");
        }
    }
}

int gen_text_update(struct gen *g, uint64_t *cancel)
{
    int n_cancel = 0;
    const struct gev *evs;
    size_t n = gen_take_events(g, &evs);
    for (size_t i = 0; i < n; i++) {
        const struct eng_event *ev = &evs[i].ev;
        ASSERT(evs[i].choice >= 0 && evs[i].choice < g->n_choices);
        struct choice *c = &g->ch[evs[i].choice];
        if (c->n_cached < ev->n_cached) c->n_cached = ev->n_cached;
        if (c->finished) continue;
        if (ev->kind == ENG_EV_TOKEN) {
            if (take_token(g, c, ev)) {
                ASSERT(n_cancel < g->n_choices && n_cancel < GEN_MAX_CHOICES);
                cancel[n_cancel++] = c->eng_id;
            }
        } else {
            take_done(g, c, ev);
        }
    }
    feed_pipes(g);
    return n_cancel;
}
