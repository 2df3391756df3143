#!/usr/bin/env python3
"""scaling_sim.py - queueing simulation of N tandem replicas behind a balancer (docs/scaling.md).

Each replica is simulated as tandem's engine schedules: continuous batching with at most
--max-running sequences, steps that carry one token per decoding sequence plus prefill chunks up
to --max-batch-tokens, and a step time linear in the tokens it carries:
    step = c0 + c1 * (new tokens) + c1 * (1 - saving) * (prefix-cached prompt tokens)
c0 and c1 are fitted from measured serve_bench.mjs figures (TPOT at concurrency 1: one token;
TTFT at concurrency 1: one prompt), and `saving` (the share of a cached token's prefill cost that
the prefix cache removes) from a measured --multi-turn run: turn 2's TTFT against a cold prompt
of the same length. The defaults are the figures measured on models/default (docs/scaling.md).

Load: chat sessions arrive as a Poisson process; each has --turns turns, the next sent an
exponential think time (mean --think-s) after the previous answer; turn k's prompt is the whole
history (first prompt, then every answer and follow-up). Routing: with affinity, consistent
hashing of the session id (64 virtual nodes per replica, as HAProxy's `hash-type consistent`);
without, round-robin. A turn hits the prefix cache when it lands on the replica that served the
previous turn (whole 16-token blocks of the history; no eviction is modelled). TTFT = queueing
+ the prefill step(s) that produce the first token.

Output: a markdown table of TTFT p50/p99 (ms) against offered load for each N, with and without
affinity. Standard library only. Deterministic (--seed).
Usage: python3 scripts/scaling_sim.py [--replicas 1,2,4,8,16] [--loads 0.5,0.7,0.9,1.1,1.3]
         [--sweep sweep.json --multi-turn mt.json --cold cold.json]  (serve_bench --result-file)
"""
import argparse
import bisect
import hashlib
import heapq
import json
import random

BLOCK = 16


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # measured on models/default (docs/scaling.md): serve_bench.mjs, concurrency 1
    p.add_argument("--ttft-ms", type=float, default=561.3, help="TTFT of a cold prompt")
    p.add_argument("--ttft-len", type=int, default=128, help="its prompt tokens")
    p.add_argument("--tpot-ms", type=float, default=8.3, help="TPOT at concurrency 1")
    p.add_argument("--cold-ms", type=float, default=1716.6, help="TTFT, cold prompt of turn 2's length")
    p.add_argument("--turn2-ms", type=float, default=526.0, help="TTFT of turn 2 (history cached)")
    p.add_argument("--turn2-cached", type=int, default=256, help="turn 2's cached tokens")
    p.add_argument("--turn2-new", type=int, default=64, help="turn 2's new tokens")
    p.add_argument("--sweep", help="serve_bench result file: takes ttft/tpot of its concurrency-1 point")
    p.add_argument("--multi-turn", help="serve_bench --multi-turn result file (turn 2 TTFT)")
    p.add_argument("--cold", help="serve_bench result file of cold prompts of turn 2's length")
    # engine
    p.add_argument("--max-running", type=int, default=16)
    p.add_argument("--max-batch-tokens", type=int, default=2048)
    # workload
    p.add_argument("--first-len", type=int, default=128, help="first prompt's tokens")
    p.add_argument("--turn-len", type=int, default=64, help="each follow-up's new tokens")
    p.add_argument("--out-len", type=int, default=32, help="answer tokens")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--think-s", type=float, default=5.0)
    # experiment
    p.add_argument("--replicas", default="1,2,4,8,16")
    p.add_argument("--loads", default="0.5,0.7,0.9,1.1,1.3",
                   help="offered load per replica, as a share of one replica's capacity without affinity")
    p.add_argument("--requests", type=int, default=2400, help="requests per simulated point (x sqrt N)")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def load_measured(a):
    def point(path, conc=1):
        pts = json.load(open(path))
        return next(x for x in pts if (x.get("max_concurrency") or 0) == conc)
    if a.sweep:
        x = point(a.sweep)
        a.ttft_ms, a.ttft_len, a.tpot_ms = x["ttft_ms"]["mean"], x["input_len"], x["tpot_ms"]["mean"]
    if a.multi_turn:
        x = point(a.multi_turn)
        a.turn2_ms, a.turn2_cached = x["turn2_ttft_ms"]["mean"], x["input_len"]
    if a.cold:
        x = point(a.cold)
        a.cold_ms = x["ttft_ms"]["mean"]
        a.turn2_new = x["input_len"] - a.turn2_cached


def fit(a):
    c1 = (a.ttft_ms - a.tpot_ms) / (a.ttft_len - 1) / 1000.0
    c0 = max(a.tpot_ms / 1000.0 - c1, 0.0)
    # turn 2 = c0 + c1 * new + c1 * (1 - saving) * cached
    rest = a.turn2_ms / 1000.0 - c0 - c1 * a.turn2_new
    saving = min(max(1.0 - rest / (c1 * a.turn2_cached), 0.0), 1.0)
    return c0, c1, saving


class Seq:
    __slots__ = ("sess", "turn", "t_arrive", "prompt", "cached", "todo", "out", "ttft")

    def __init__(self, sess, turn, t, prompt, cached, out):
        self.sess, self.turn, self.t_arrive = sess, turn, t
        self.prompt, self.cached, self.out = prompt, cached, out
        self.todo = prompt - cached  # prompt tokens still to compute
        self.ttft = None


class Replica:
    def __init__(self):
        self.waiting, self.running = [], []
        self.busy = False
        self.cache = set()  # (session, turn) whose history this replica holds


class Sim:
    def __init__(self, a, model, n, affinity, rate, seed):
        self.a, (self.c0, self.c1, self.saving) = a, model
        self.n, self.affinity, self.rate = n, affinity, rate
        self.rng = random.Random(seed)
        self.reps = [Replica() for _ in range(n)]
        self.ev, self.k = [], 0
        self.rr = 0
        ring = []
        for r in range(n):
            for v in range(64):
                h = int.from_bytes(hashlib.md5(f"r{r}-{v}".encode()).digest()[:8], "big")
                ring.append((h, r))
        ring.sort()
        self.ring_keys, self.ring_reps = [h for h, _ in ring], [r for _, r in ring]
        self.done = []
        self.sent = 0
        self.queue = []  # (time, requests waiting on all replicas) at each arrival

    def push(self, t, kind, obj):
        self.k += 1
        heapq.heappush(self.ev, (t, self.k, kind, obj))

    def route(self, sess):
        if not self.affinity:
            self.rr = (self.rr + 1) % self.n
            return self.rr
        h = int.from_bytes(hashlib.md5(f"s{sess}".encode()).digest()[:8], "big")
        i = bisect.bisect(self.ring_keys, h) % len(self.ring_keys)
        return self.ring_reps[i]

    def submit(self, t, sess, turn):
        a = self.a
        prompt = a.first_len + turn * (a.out_len + a.turn_len)
        r = self.route(sess)
        rep = self.reps[r]
        cached = 0
        if turn > 0 and (sess, turn - 1) in rep.cache:
            cached = (prompt - a.turn_len) // BLOCK * BLOCK  # the history, whole blocks
        rep.waiting.append(Seq(sess, turn, t, prompt, cached, a.out_len))
        self.sent += 1
        self.queue.append((t, sum(len(x.waiting) for x in self.reps)))
        if not rep.busy:
            self.step(t, r)

    def step(self, t, r):
        rep, a = self.reps[r], self.a
        while rep.waiting and len(rep.running) < a.max_running:
            rep.running.append(rep.waiting.pop(0))
        if not rep.running:
            rep.busy = False
            return
        decode = [s for s in rep.running if s.todo == 0]
        budget = a.max_batch_tokens - len(decode)
        work = len(decode) * self.c1
        chunks = []
        for s in rep.running:
            if s.todo > 0 and budget > 0:
                c = min(s.todo, budget)
                budget -= c
                work += c * self.c1
                if s.todo == s.prompt - s.cached:  # first chunk: the cached history's attention
                    work += s.cached * self.c1 * (1.0 - self.saving)
                chunks.append((s, c))
        rep.busy = True
        self.push(t + self.c0 + work, "step", (r, decode, chunks))

    def end_step(self, t, r, decode, chunks):
        rep = self.reps[r]
        finished = []
        for s, c in chunks:
            s.todo -= c
            if s.todo == 0:  # the prefill's step also yields the first token
                s.ttft = t - s.t_arrive
                s.out -= 1
        for s in decode:
            s.out -= 1
        for s in list(rep.running):
            if s.todo == 0 and s.out <= 0:
                rep.running.remove(s)
                finished.append(s)
        for s in finished:
            rep.cache.add((s.sess, s.turn))
            self.done.append(s)
            if s.turn + 1 < self.a.turns:
                self.push(t + self.rng.expovariate(1.0 / self.a.think_s), "turn", (s.sess, s.turn + 1))
        self.step(t, r)

    def run(self, n_requests):
        a = self.a
        sess_rate = self.rate / a.turns  # each session sends `turns` requests
        n_sessions = n_requests // a.turns
        t = 0.0
        for i in range(n_sessions):
            t += self.rng.expovariate(sess_rate)
            self.push(t, "turn", (i, 0))
        t_last = t
        while self.ev:
            t, _, kind, obj = heapq.heappop(self.ev)
            if kind == "turn":
                self.submit(t, *obj)
            else:
                self.end_step(t, *obj)
        return t_last


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    i = (len(xs) - 1) * p
    f = int(i)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (i - f)


def simulate(a, model, n, affinity, rate, seed):
    s = Sim(a, model, n, affinity, rate, seed)
    n_req = int(a.requests * n ** 0.5)
    t_last = s.run(n_req)
    done = sorted(s.done, key=lambda x: x.t_arrive)
    done = done[len(done) // 10:]  # leave out the warm-up
    ttft = [x.ttft * 1000 for x in done]
    later = [x for x in done if x.turn > 0]
    hits = sum(1 for x in later if x.cached > 0) / max(len(later), 1)
    # saturated: while sessions arrive, the queue keeps growing (its last quarter holds far more
    # than its second), so the TTFT figures only say "more than this"
    def mean_queue(lo, hi):
        q = [w for t, w in s.queue if lo * t_last <= t < hi * t_last]
        return sum(q) / max(len(q), 1)
    q2, q4 = mean_queue(0.25, 0.5), mean_queue(0.75, 1.0)
    return pct(ttft, 0.5), pct(ttft, 0.99), hits, q4 > 1.5 * q2 + n


def main():
    a = parse()
    load_measured(a)
    model = fit(a)
    c0, c1, saving = model
    # one replica's capacity without cache hits: full batches, every prompt token computed
    avg_prompt = sum(a.first_len + k * (a.out_len + a.turn_len) for k in range(a.turns)) / a.turns
    decode_per_req = a.out_len * (c0 / a.max_running + c1)  # full batches
    prefill_per_req = avg_prompt * c1
    cap = 1.0 / (decode_per_req + prefill_per_req)
    print(f"fitted: step = {c0 * 1000:.2f} ms + {c1 * 1000:.3f} ms/token; a cached prompt token "
          f"saves {saving * 100:.0f}% of its prefill")
    print(f"workload: sessions of {a.turns} turns, first prompt {a.first_len} tokens, +{a.turn_len} "
          f"per turn (plus the previous answer), answers {a.out_len}, think time {a.think_s:.0f} s; "
          f"mean prompt {avg_prompt:.0f} tokens")
    print(f"one replica's capacity without cache hits: {cap:.3f} req/s "
          f"(prefill {prefill_per_req * 1000:.0f} ms + decode {decode_per_req * 1000:.0f} ms per request)")
    print()
    print("| N | load/replica | offered req/s | affinity TTFT p50 / p99 ms | cache hits | "
          "round-robin TTFT p50 / p99 ms | cache hits |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in a.replicas.split(",")]:
        for f in [float(x) for x in a.loads.split(",")]:
            rate = f * cap * n
            row = [str(n), f"{f:.2f}", f"{rate:.2f}"]
            for aff in (True, False):
                p50, p99, hits, sat = simulate(a, model, n, aff, rate, a.seed + n)
                row += [f"saturated (>{p50:.0f} / >{p99:.0f})" if sat else f"{p50:.0f} / {p99:.0f}",
                        f"{hits * 100:.0f}%"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
