"""eval_http.py - task accuracy of a served model, end to end through tandem's HTTP API.

  python3 train/eval_http.py --url http://127.0.0.1:8080 --n 500 --seed 2 [--min 0.95]
  python3 train/eval_http.py --url URL --r1-url URL2 --n 1000 --agent-n 500 --seed 2

Generates held-out chats with train/data.py (a seed other than training's), sends each one's
history to /v1/chat/completions with greedy decoding, and checks that the answer contains the
expected text. With --agent-n N, also N agent examples (data.eval_examples: tasks drawn evenly,
from a generator of their own), sent the way a client sends them and checked on the API's
answer:
  call     `tools` (and sometimes tool_choice auto / required / named) in the request: exactly
           one `tool_calls` entry, finish_reason "tool_calls", the right function name and
           arguments that parse as JSON equal to the expected object;
  result   the history holds the assistant's tool call and a `tool` message with its result
           (tools in the request, tool_choice "none" or no tools): no tool call, and the
           content repeats the result (for example "sunny and 21 degrees");
  no_call  tools in the request that fit no question: no tool call, the plain answer;
  json     response_format json_object or json_schema ({"answer": N}): the content parses as
           JSON equal to the expected object;
  think    R1-style reasoning: sent to --r1-url, a server started with
           --model.template=deepseek-r1: reasoning_content holds the expected reasoning and
           content the answer.
Examples under the deepseek-r1 template (think, and some json) are skipped without --r1-url.
Prints per-task accuracy as JSON ("accuracy": the old-style chats, as before;
"accuracy_agent": the agent examples); exits 1 if either is below --min / --min-agent.
--answers FILE writes every example's task, correctness and answer, one JSON line each, so two
runs (e.g. engine.defer_experts on and off) can be compared answer by answer.
Standard library only.
"""
import argparse
import concurrent.futures
import json
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402


def post(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:   # an error answer counts as wrong, with its text
        return {"error": e.read().decode(errors="replace")[:300]}


def ask(url, msgs):
    r = post(url, {"model": "default", "messages": msgs, "temperature": 0, "max_tokens": 64})
    return r["choices"][0]["message"]["content"] if "choices" in r else json.dumps(r)


def request(ex):
    body = {"messages": ex["messages"], "temperature": 0, "max_tokens": 128}
    for k in ("tools", "tool_choice", "response_format"):
        if ex.get(k) is not None:
            body[k] = ex[k]
    return body


def score(ex, r):
    """(correct, what came back) for an agent example's API answer."""
    if "error" in r:
        return False, r
    c = r["choices"][0]
    m = c["message"]
    calls = m.get("tool_calls") or []
    got = {"finish_reason": c.get("finish_reason"), "content": m.get("content")}
    if calls:
        got["tool_calls"] = [[t["function"]["name"], t["function"]["arguments"]] for t in calls]
    if m.get("reasoning_content") is not None:
        got["reasoning_content"] = m["reasoning_content"]
    exp = ex["expect"]
    if "call" in exp:
        name, args = exp["call"]
        if c.get("finish_reason") != "tool_calls" or len(calls) != 1:
            return False, got
        try:
            parsed = json.loads(calls[0]["function"]["arguments"])
        except ValueError:
            return False, got
        return calls[0]["function"]["name"] == name and parsed == args, got
    if calls:
        return False, got
    content = m.get("content") or ""
    if "json" in exp:
        try:
            return json.loads(content) == exp["json"], got
        except ValueError:
            return False, got
    ok = exp["content"] in content
    if "reasoning" in exp:
        ok = ok and exp["reasoning"] in (m.get("reasoning_content") or "")
    return ok, got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--r1-url", default="", help="a server with --model.template=deepseek-r1")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--agent-n", type=int, default=0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--min", type=float, default=0.0)
    ap.add_argument("--min-agent", type=float, default=0.0)
    ap.add_argument("--answers", default="", help="write every answer here (JSON lines)")
    args = ap.parse_args()
    exs = data.eval_examples(args.seed, args.n, args.agent_n)
    convs, agent = exs[:args.n], exs[args.n:]
    skipped = [ex for ex in agent if ex["template"] == "deepseek-r1" and not args.r1_url]
    agent = [ex for ex in agent if not (ex["template"] == "deepseek-r1" and not args.r1_url)]

    def one(ex):
        if ex.get("train_history"):    # an old-style chat, sent as before
            return ask(args.url, ex["messages"])
        return post(args.r1_url if ex["template"] == "deepseek-r1" else args.url, request(ex))

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(pool.map(one, convs + agent))
    per, ok, wrong, lines = {}, [0, 0], [], []
    for k, (ex, a) in enumerate(zip(convs + agent, answers)):
        is_agent = k >= len(convs)
        if is_agent:
            good, got = score(ex, a)
        else:
            good, got = ex["check"] in a, a
        lines.append(json.dumps({"task": ex["task"], "ok": bool(good), "got": got},
                                ensure_ascii=False))
        ok[is_agent] += good
        c = per.setdefault(ex["task"], [0, 0])
        c[0] += good
        c[1] += 1
        if not good and len(wrong) < 10 + 10 * is_agent:
            q = [m["content"] for m in ex["messages"] if m["role"] == "user"][-1]
            wrong.append({"task": ex["task"], "q": q,
                          "expected": ex["expect"] if is_agent else ex["check"], "got": got})
    acc = ok[0] / max(len(convs), 1)
    out = {"n": args.n, "seed": args.seed, "accuracy": acc,
           "per_task": {k: round(v[0] / v[1], 4) for k, v in sorted(per.items())},
           "wrong": wrong}
    acc_agent = None
    if args.agent_n:
        acc_agent = ok[1] / max(len(agent), 1)
        out.update(agent_n=len(agent), agent_skipped=len(skipped), accuracy_agent=acc_agent,
                   agent_per_task_n={t: per[t][1] for t in data.AGENT_TASKS if t in per},
                   accuracy_all=(ok[0] + ok[1]) / max(len(convs) + len(agent), 1))
    if args.answers:
        with open(args.answers, "w") as f:
            f.write("\n".join(lines) + "\n")
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0 if acc >= args.min and (acc_agent is None or acc_agent >= args.min_agent) else 1


if __name__ == "__main__":
    sys.exit(main())
