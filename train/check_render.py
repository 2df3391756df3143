"""check_render.py - the training text equals what `tandem serve` renders, token for token.

  python3 train/check_render.py --url http://127.0.0.1:8080 [--r1-url URL] [--tokenizer FILE]
                                [--n 300] [--seed 5]

For chats of every kind train.py trains on (train/data.py: the training mix and the agent tasks
drawn evenly: tools, tool_choice, tool calls and results in the history, system prompts, R1),
compares the ids of the server's prompt (POST /tokenize with the request's messages, tools and
tool_choice) with (1) the server's ids of render.render_prompt's text (POST /tokenize with that
text as a raw prompt, special tokens matched) and (2) the ids train.py builds for the same prompt
(render.encode: segment by segment), with the Hugging Face tokenizer FILE when given
(tokenizers installed, as on the GPU machine), else with the server's tokenizer. Examples under
the deepseek-r1 template go to --r1-url (a server started with --model.template=deepseek-r1);
without it they are skipped. Prints a JSON summary; exits 1 on any difference.
"""
import argparse
import json
import os
import random
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import render  # noqa: E402


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


class ServerTok:
    """tokenizers.Tokenizer's encode_batch, through the server's /tokenize."""

    def __init__(self, url):
        self.url = url

    def encode_batch(self, texts, add_special_tokens=False):
        class E:
            pass
        out = []
        for t in texts:
            e = E()
            e.ids = post(self.url, "/tokenize", {"prompt": t, "add_special_tokens": add_special_tokens})["tokens"]
            out.append(e)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--r1-url", default="")
    ap.add_argument("--tokenizer", default="", help="tokenizer.json to encode with (tokenizers)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    exs = [data.training_example(rng, 0.5) for _ in range(args.n // 2)]
    exs += [data.agent_example(rng, [1] * len(data.AGENT_TASKS)) for _ in range(args.n - len(exs))]
    hf = None
    if args.tokenizer:
        from tokenizers import Tokenizer
        hf = Tokenizer.from_file(args.tokenizer)
    res = {"n": 0, "skipped": 0, "text_mismatch": 0, "train_ids_mismatch": 0,
           "tokenizer": "hf" if hf else "server", "tasks": {}, "first_mismatch": None}
    for ex in exs:
        url = args.r1_url if ex["template"] == render.R1 else args.url
        if not url:
            res["skipped"] += 1
            continue
        body = {"messages": ex["messages"]}
        for k in ("tools", "tool_choice"):
            if ex.get(k) is not None:
                body[k] = ex[k]
        server = post(url, "/tokenize", body)["tokens"]
        text = render.render_prompt(ex["messages"], ex["tools"], ex["tool_choice"],
                                    template=ex["template"])
        mine = post(url, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
        trained = render.prompt_ids(hf or ServerTok(url), ex)
        res["n"] += 1
        res["tasks"][ex["task"]] = res["tasks"].get(ex["task"], 0) + 1
        bad = []
        if mine != server:
            res["text_mismatch"] += 1
            bad.append("text")
        if trained != server:
            res["train_ids_mismatch"] += 1
            bad.append("train ids")
        if bad and not res["first_mismatch"]:
            res["first_mismatch"] = {"what": bad, "example": ex, "server": server, "text": text,
                                     "render_ids": mine, "train_ids": trained}
    print(json.dumps(res, indent=1, ensure_ascii=False))
    return 1 if res["text_mismatch"] or res["train_ids_mismatch"] or not res["n"] else 0


if __name__ == "__main__":
    sys.exit(main())
