"""train.py - train tandem's embedded default model on the GPU machine, in one command.

  python3 train/train.py --out DIR [--seconds 360] [--seed 1] [--eval-seed 2]
  python3 train/train.py --out DIR --smoke      (about a minute: proves the pipeline works)

Steps: (1) train a small byte-level BPE tokenizer (DeepSeek-V3 pre-tokenizer and special
tokens; digits are never merged, so numbers are one token per digit); (2) generate synthetic
chats (train/data.py, seed --seed: the old-style chats plus, at --agent-share, the agent tasks:
tool calls, answers from tool results, JSON answers, R1 reasoning), rendered exactly as `tandem
serve` renders them (train/render.py; train/check_render.py compares with a server); (3) train
train/model.py's small DeepSeek-V3 for a fixed wall-clock budget with auxiliary-loss-free expert
balancing, whole chats packed into rows (none is cut); (4) evaluate greedy answers on held-out
chats (seed --eval-seed) in bf16, per task; (5) write an HF-layout model directory: config.json,
model-0000N-of-0000M.safetensors (bf16), tokenizer.json, tokenizer_config.json, train_log.json.
`tandem convert quantize` then makes the FP8 + Q4_K hybrid model that tandem ships.
Needs torch, tokenizers and safetensors (present on the GPU machine); nothing is downloaded.
"""
import argparse
import itertools
import json
import math
import os
import random
import re
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import render  # noqa: E402
from model import DeepseekV3Small  # noqa: E402
from render import BOS, EOS, PAD, SPECIALS  # noqa: E402
SPLIT3 = (r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"""
          r""" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 128, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
    "v_head_dim": 64, "head_dim": 32,
    "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4,
    "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "rope_type": "yarn", "factor": 4.0,
                     "original_max_position_embeddings": 512, "beta_fast": 32.0, "beta_slow": 1.0,
                     "mscale": 1.0, "mscale_all_dim": 1.0},
    "max_position_embeddings": 2048, "num_nextn_predict_layers": 0,
    "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
    "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "initializer_range": 0.02,
}


def train_tokenizer(vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex("[一-龥぀-ゟ゠-ヿ]+"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(SPLIT3), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # The corpus is the fixed wording only (no random words, cities or numbers), so merges cover
    # the phrasings and random task words stay close to single letters. Special-token text is
    # cut out (those are added tokens, never merged into).
    fixed = []
    for group in (data.ADD_Q, data.SUB_Q, data.REV_Q, data.CNT_Q, data.CPY_Q, data.SYSTEMS,
                  data.WEATHER_Q, data.TIME_Q, data.JSON_ASK, data.JSON_SYSTEMS, data.CONDITIONS):
        fixed += group
    for qs, ans, _ in data.FACTS:
        fixed += qs + [ans]
    fixed += ["The word reversed is .", "The word has letters.", " + = .", " - = ."]
    # agent tasks: the server's tool list (each tool alone and all together, every tool_choice),
    # tool calls and results, JSON answers and the reasoning sentences, each with its slots empty
    tools = list(data.TOOLS.values())
    for choice in (None, "required", {"type": "function", "function": {"name": "add"}}):
        fixed.append(render.tools_prompt(tools, choice))
    fixed += [render.tools_prompt([t]) for t in tools]
    fixed += [render.call_block([(n, {k: "" for k in t["function"]["parameters"]["properties"]})])
              for n, t in data.TOOLS.items()]
    fixed += [data.compact({"answer": ""}), data.compact({"answer": 0}),
              data.compact({"result": 0}), data.compact({"time": ""}),
              data.compact({"city": "", "temperature": 0, "condition": ""}),
              data.compact({"temp_c": 0, "sky": ""}), ", degrees", "It is and degrees in .",
              "It is in .", "I add and : + = .", "I subtract from : - = .",
              "The letters of are , , . Backwards they are , , .", "That is letters.",
              "The list is . I repeat it.", "The question is about tandem.", "\n</think>\n\n"]
    specials = re.compile("|".join(re.escape(t) for t in SPECIALS))
    corpus = []
    for s in fixed:
        s = re.sub(r"\{[a-z]\}", "", s)
        corpus += [p for p in specials.split(s) if p]
    corpus = corpus * 50
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    # Never merge digits: drop every multi-character token containing a digit and its merges.
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]

    def bad(t):
        return len(t) > 1 and any(c.isdigit() for c in t)

    def pair(m):
        return m.split(" ", 1) if isinstance(m, str) else m

    merges = [m for m in j["model"]["merges"] if not bad("".join(pair(m)))]
    kept = sorted((i, t) for t, i in vocab.items() if not bad(t))
    j["model"]["vocab"] = {t: n for n, (_, t) in enumerate(kept)}
    j["model"]["merges"] = merges
    remap = {i: n for n, (i, _) in enumerate(kept)}
    for a in j["added_tokens"]:
        a["id"] = remap[a["id"]]
        a["special"] = True
    return Tokenizer.from_str(json.dumps(j)), j


def packed_batches(seqs, seq_len, batch, rng, pad_id):
    """Whole conversations packed into rows of seq_len+1 tokens (a chat that does not fit the
    rest of a row starts the next one; the rest is padding, outside the loss), so every chat is
    seen from its BOS with all of its prompt (a tool list is long). Loss only on assistant
    tokens. Chats longer than a row must be left out by the caller. Each epoch's rows are built
    at once with tensor gathers (a fraction of a second), then served in random order."""
    L = seq_len + 1
    lens_l = [len(s[0]) for s in seqs]
    lens = torch.tensor(lens_l, dtype=torch.long)
    flat_ids = torch.tensor([t for s in seqs for t in s[0]], dtype=torch.long)
    flat_mask = torch.tensor([b for s in seqs for b in s[1]], dtype=torch.bool)
    starts = torch.cumsum(lens, 0) - lens
    order = list(range(len(seqs)))
    while True:
        rng.shuffle(order)
        dst, row, used = [0] * len(order), 0, 0
        for k, i in enumerate(order):
            if used + lens_l[i] > L:
                row, used = row + 1, 0
            dst[k] = row * L + used
            used += lens_l[i]
        n_rows = row + 1
        if n_rows < batch:
            raise SystemExit(f"{n_rows} rows of {L} tokens: fewer than a batch ({batch})")
        o = torch.tensor(order, dtype=torch.long)
        ln = lens[o]
        seg = torch.repeat_interleave(torch.arange(len(order)), ln)
        within = torch.arange(int(ln.sum())) - torch.repeat_interleave(torch.cumsum(ln, 0) - ln, ln)
        src = starts[o][seg] + within
        pos = torch.tensor(dst, dtype=torch.long)[seg] + within
        ids = torch.full((n_rows * L,), pad_id, dtype=torch.long)
        mask = torch.zeros(n_rows * L, dtype=torch.bool)
        ids[pos] = flat_ids[src]
        mask[pos] = flat_mask[src]
        ids, mask = ids.view(n_rows, L), mask.view(n_rows, L)
        k = len(order) - 1             # spot check: the last chat sits where it was put
        r, c = divmod(dst[k], L)
        assert ids[r, c:c + lens_l[order[k]]].tolist() == seqs[order[k]][0]
        assert mask[r, c:c + lens_l[order[k]]].tolist() == list(seqs[order[k]][1])
        perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(rng.randrange(2 ** 31)))
        for b in range(0, n_rows - batch + 1, batch):
            sel = perm[b:b + batch]
            yield ids[sel], mask[sel]


@torch.no_grad()
def generate(model, tok, prompts, max_new=112, dev="cuda"):
    """Greedy decoding for a batch of token-id prompts (left padded, recomputed each step)."""
    eos = tok.token_to_id(EOS)
    outs = [[] for _ in prompts]
    done = [False] * len(prompts)
    seqs = [list(p) for p in prompts]
    for _ in range(max_new):
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), 2, dtype=torch.long)
        pad = torch.zeros(len(seqs), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, L - len(s):] = torch.tensor(s)
            pad[i] = L - len(s)
        ids, pad = ids.to(dev), pad.to(dev)
        ar = torch.arange(L, device=dev)
        pos = (ar.unsqueeze(0) - pad.unsqueeze(1)).clamp(min=0)
        keymask = ar.unsqueeze(0) >= pad.unsqueeze(1)                  # [B, L]
        mask = torch.ones(L, L, dtype=torch.bool, device=dev).tril().unsqueeze(0) & keymask[:, None, :]
        mask = mask | torch.eye(L, dtype=torch.bool, device=dev).unsqueeze(0)
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=dev != "cpu"):
            logits = model(ids, pos, mask.unsqueeze(1))
        nxt = logits[:, -1].argmax(-1).tolist()
        for i, t in enumerate(nxt):
            if done[i]:
                continue
            if t == eos:
                done[i] = True
            else:
                outs[i].append(t)
                seqs[i].append(t)
        if all(done):
            break
    # special tokens as text: a tool-call block or "</think>" is part of what is checked
    return [tok.decode(o, skip_special_tokens=False) for o in outs]


def evaluate(model, tok, n, seed, agent_n=0, dev="cuda"):
    """Greedy answers to the held-out set data.eval_examples(seed, n, agent_n) (the old-style
    chats as before, then the agent tasks drawn evenly), scored by data.score_completion on the
    raw completion. Returns (accuracy of the old-style chats, of the agent tasks, per task,
    samples)."""
    exs = data.eval_examples(seed, n, agent_n)
    texts = [render.render_prompt(ex["messages"], ex["tools"], ex["tool_choice"],
                                  template=ex["template"]) for ex in exs]
    prompts = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    order = sorted(range(len(exs)), key=lambda i: len(prompts[i]))  # batches of like lengths
    answers = [None] * len(exs)
    for i in range(0, len(order), 256):
        part = order[i:i + 256]
        for j, a in zip(part, generate(model, tok, [prompts[j] for j in part], dev=dev)):
            answers[j] = a
    per, ok, samples = {}, [0, 0], []
    for k, (ex, a) in enumerate(zip(exs, answers)):
        good = data.score_completion(ex, a)
        ok[k >= n] += good
        c = per.setdefault(ex["task"], [0, 0])
        c[0] += good
        c[1] += 1
        if len(samples) < 12 or (not good and len(samples) < 40 and ex["task"] in data.AGENT_TASKS):
            samples.append({"task": ex["task"], "q": ex["messages"][-1]["content"], "a": a,
                            "ok": good})
    return (ok[0] / max(n, 1), ok[1] / max(agent_n, 1),
            {k: v[0] / v[1] for k, v in sorted(per.items())}, samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=360)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-seed", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--eval-agent-n", type=int, default=500, help="held-out agent examples")
    ap.add_argument("--n-convs", type=int, default=300000)
    ap.add_argument("--agent-share", type=float, default=0.2,
                    help="share of agent examples among the training chats")
    ap.add_argument("--agent-weights", default="",
                    help="relative weights of the agent tasks call,result,no_call,json,think "
                         "(default: data.AGENT_WEIGHTS, 30,25,10,15,20)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--chat-template", default="")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a slow local check")
    ap.add_argument("--smoke", action="store_true",
                    help="a quick end-to-end run: 20 s of training on 20,000 chats, small eval")
    args = ap.parse_args()
    weights = None
    if args.agent_weights:
        try:
            weights = [float(w) for w in args.agent_weights.split(",")]
        except ValueError:
            weights = []
        if len(weights) != len(data.AGENT_TASKS) or min(weights) < 0 or sum(weights) <= 0:
            ap.error(f"--agent-weights takes {len(data.AGENT_TASKS)} non-negative numbers "
                     f"({','.join(data.AGENT_TASKS)}) with a positive sum")
    if args.smoke:
        args.seconds, args.n_convs = min(args.seconds, 20), min(args.n_convs, 20000)
        args.eval_n, args.eval_agent_n = min(args.eval_n, 200), min(args.eval_agent_n, 100)
    t0 = time.time()
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log = {"args": vars(args)}

    tok, _ = train_tokenizer(args.vocab)
    cfg = dict(CONFIG, vocab_size=tok.get_vocab_size())
    print(f"tokenizer: {tok.get_vocab_size()} tokens", flush=True)
    rng = random.Random(args.seed)
    convs = [data.training_example(rng, args.agent_share, weights) for _ in range(args.n_convs)]
    seqs = render.encode(tok, convs)
    long = sum(len(s[0]) > args.seq_len + 1 for s in seqs)
    stats = {}
    for ex, (ids, _) in zip(convs, seqs):
        kind = ex["task"] if ex["task"] in data.AGENT_TASKS else "chat"
        st = stats.setdefault(kind, [0, 0, 0])
        st[0] += 1
        st[1] += len(ids)
        st[2] = max(st[2], len(ids))
    seqs = [s for s in seqs if len(s[0]) <= args.seq_len + 1]
    ntok = sum(len(s[0]) for s in seqs)
    log["data"] = {"chats": len(seqs), "tokens": ntok, "left_out_too_long": long,
                   "per_kind": {k: {"chats": v[0], "tokens": v[1], "max_len": v[2]}
                                for k, v in sorted(stats.items())}}
    print(f"data: {len(seqs)} chats, {ntok} tokens, {long} longer than a row left out "
          f"({time.time() - t0:.0f}s)", flush=True)
    for k, v in sorted(stats.items()):
        print(f"  {k:8} {v[0]:7} chats {v[1]:9} tokens (max {v[2]})", flush=True)

    dev = args.device
    model = DeepseekV3Small(cfg).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"model: {nparam / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    batches = packed_batches(seqs, args.seq_len, args.batch, random.Random(args.seed + 7),
                             tok.token_to_id(PAD))
    first = next(batches)       # the first epoch's rows, built before the clock starts
    batches = itertools.chain([first], batches)
    t_train = time.time()
    step, losses, est_steps = 0, [], None
    warm = 100
    while True:
        el = time.time() - t_train
        if el > args.seconds:
            break
        if step == 30:
            est_steps = int(args.seconds / (el / 30))
        total = est_steps or 10 ** 9
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, m = next(batches)
        x, m = x.to(dev, non_blocking=True), m.to(dev, non_blocking=True)
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=dev != "cpu"):
            logits = model(x[:, :-1])
        tgt = x[:, 1:].masked_fill(~m[:, 1:], -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():   # auxiliary-loss-free balancing: nudge biases toward equal load
            for moe in model.moe_layers():
                load = moe.last_load.float()
                moe.gate.e_score_correction_bias += 1e-3 * torch.sign(load.mean() - load)
        step += 1
        if step % 200 == 0:
            losses.append((step, loss.item()))
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} ({time.time() - t_train:.0f}s)", flush=True)
    log["steps"] = step
    log["train_seconds"] = time.time() - t_train
    log["losses"] = losses
    print(f"trained {step} steps in {log['train_seconds']:.0f}s "
          f"({step / max(log['train_seconds'], 1e-9):.2f} steps/s)", flush=True)
    model.eval()
    t_eval = time.time()
    acc, acc_agent, per, samples = evaluate(model, tok, args.eval_n, args.eval_seed,
                                            args.eval_agent_n, dev=dev)
    log["eval"] = {"seed": args.eval_seed, "n": args.eval_n, "agent_n": args.eval_agent_n,
                   "accuracy_bf16": acc, "accuracy_agent_bf16": acc_agent, "per_task": per,
                   "seconds": time.time() - t_eval, "samples": samples}
    print(f"eval (bf16 PyTorch, seed {args.eval_seed}, n={args.eval_n} + {args.eval_agent_n} "
          f"agent): chats {acc:.4f}, agent {acc_agent:.4f} {per} ({time.time() - t_eval:.0f}s)",
          flush=True)
    for s in samples[:8] + [s for s in samples[8:] if not s["ok"]][:8]:
        print(f"  {s['ok']!s:5} {s['task']:7} {s['q']!r} -> {s['a']!r}")

    # export: HF layout, bf16 safetensors in shards under 15 MB
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}
    for moe_i, l in enumerate(model.model.layers):
        if hasattr(l.mlp, "gate"):
            key = f"model.layers.{moe_i}.mlp.gate.e_score_correction_bias"
            sd[key] = l.mlp.gate.e_score_correction_bias.detach().float().cpu().contiguous()
    shards, cur, size = [], {}, 0
    for k in sorted(sd):
        nb = sd[k].numel() * sd[k].element_size()
        if cur and size + nb > 15_000_000:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = sd[k]
        size += nb
    shards.append(cur)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())}, "weight_map": {}}
    for i, sh in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, os.path.join(args.out, name), metadata={"format": "pt"})
        for k in sh:
            index["weight_map"][k] = name
    json.dump(index, open(os.path.join(args.out, "model.safetensors.index.json"), "w"), indent=1)
    json.dump(cfg, open(os.path.join(args.out, "config.json"), "w"), indent=2)
    json.dump(json.loads(tok.to_str()), open(os.path.join(args.out, "tokenizer.json"), "w"), ensure_ascii=False)
    template = open(args.chat_template).read() if args.chat_template else ""
    tcfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS,
            "pad_token": PAD, "model_max_length": cfg["max_position_embeddings"],
            "tokenizer_class": "LlamaTokenizerFast", "legacy": True, "chat_template": template}
    json.dump(tcfg, open(os.path.join(args.out, "tokenizer_config.json"), "w"), indent=2, ensure_ascii=False)
    log["parameters"] = nparam
    log["total_seconds"] = time.time() - t0
    json.dump(log, open(os.path.join(args.out, "train_log.json"), "w"), indent=1)
    print(f"done in {time.time() - t0:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
