#!/usr/bin/env python3
"""hf_compare.py - tandem's logits against Hugging Face transformers' DeepseekV3ForCausalLM.

Run on the GPU machine (torch + transformers + safetensors; nothing else needed):

    # 1. on any machine with the tandem build: a dequantized copy and tandem's logits
    tandem convert dequant --model SYNTH_DIR --out HF_DIR
    build/tests/engine/dump_logits --model SYNTH_DIR --make-ids 256 --seed 1 --ids ids.txt \
        --out tandem.f32
    build/tests/engine/dump_logits --model SYNTH_DIR --ids ids.txt --out exact.f32 --ref-exact
    # 2. the comparison (one command)
    python3 tests/reference/hf_compare.py --model HF_DIR --tandem-logits tandem.f32 --ids ids.txt \
        --ref-logits exact.f32

HF runs in float32 with eager attention on the dequantized weights (FP8 blocks times scales,
experts dequantized from their GGML type), all positions in one forward. Printed: per-position
cosine similarity and relative L2 error of the logits, top-1 agreement, and the routing
decisions where a 0.0 fill of the masked expert groups (HF 4.x and the hub's remote code, spec
§5) would pick different experts than the -inf fill that tandem, DeepSeek's reference and
transformers 5.x use; --group-fill chooses the fill HF runs with. Exit status 0 when the files
named by --require (default: the first tandem file) meet cosine >= 0.999 at every position and
top-1 agreement >= 99%, else 1; the other files are measurements.

The tandem files can come from any run on the same ids: the FP8/GGML model under the contract
(the default), `dump_logits --w8a16` (FP8 activations unquantized), `--kv f32` (an f32 latent
cache), or tandem on HF_DIR itself (`dump_logits --model HF_DIR --kv f32`: the very weights HF
gets, every linear F32, so nothing is rounded on either side but fp32 arithmetic).

--ref-logits takes a second logits file (e.g. `dump_logits --ref-exact`, the float64 reference
without quantization) and reports it against HF and against tandem as well.

Expected differences (docs/numerics.md): tandem quantizes FP8-linear activations per 128
channels to e4m3 and expert activations to Q8_K/Q8_0 (GGML semantics) while HF multiplies fp32
activations by the dequantized weights; tandem keeps the latent KV cache in bf16; HF's
RMSNorm is fp32 here (its bf16 rounding only happens in bf16 runs).
"""
import argparse
import math
import sys

import numpy as np


def read_ids(path):
    with open(path) as f:
        return [int(t) for t in f.read().split()]


def patch_router(fill, stats):
    """Wrap HF's DeepSeek-V3 expert selection (docs/model.md §2, MoE:
    sigmoid scores, + correction bias for selection only, top-2-sum group scores, keep topk_group
    groups, top-k; weights from unbiased scores, normalized, scaled). Counts the (token, layer)
    selections that differ between a 0.0 and a -inf fill of the dropped groups, and selects with
    `fill` ("-inf", "0"; None keeps the installed transformers' own choice, which is -inf in
    transformers 5.x and 0.0 in 4.4x-4.5x and the hub's remote code)."""
    import torch
    import torch.nn.functional as F
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as mod

    def select(choice, n_group, topk_group, top_k, value):
        E = choice.shape[-1]
        gs = choice.view(-1, n_group, E // n_group).topk(min(2, E // n_group), dim=-1)[0].sum(-1)
        gidx = gs.topk(topk_group, dim=-1)[1]
        gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
        emask = gmask.unsqueeze(-1).expand(-1, n_group, E // n_group).reshape(-1, E).bool()
        return choice.masked_fill(~emask, value).topk(top_k, dim=-1)[1]

    def margins(choice, n_group, topk_group, top_k):
        # the -inf selection's closest calls: group cut and expert cut (score units)
        E = choice.shape[-1]
        gs = choice.view(-1, n_group, E // n_group).topk(min(2, E // n_group), dim=-1)[0].sum(-1)
        gsorted = gs.sort(-1, descending=True)[0]
        inf = torch.full_like(gsorted[:, 0], float("inf"))
        gm = gsorted[:, topk_group - 1] - gsorted[:, topk_group] if topk_group < n_group else inf
        gidx = gs.topk(topk_group, dim=-1)[1]
        gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
        emask = gmask.unsqueeze(-1).expand(-1, n_group, E // n_group).reshape(-1, E).bool()
        es = choice.masked_fill(~emask, float("-inf")).sort(-1, descending=True)[0]
        em = es[:, top_k - 1] - es[:, top_k] if top_k < E else inf
        return gm, em

    def routed(scores, bias, n_group, topk_group, top_k, norm, scale, own):
        choice = scores + bias
        a = select(choice, n_group, topk_group, top_k, 0.0)
        b = select(choice, n_group, topk_group, top_k, float("-inf"))
        diff = (a.sort(-1)[0] != b.sort(-1)[0]).any(-1)
        stats["tokens"] += int(diff.numel())
        stats["differ"] += int(diff.sum())
        idx = {"0": a, "-inf": b}.get(fill, own)
        gm, em = margins(choice, n_group, topk_group, top_k)
        stats["calls"].append((idx.sort(-1)[0].cpu().numpy(), gm.cpu().numpy(), em.cpu().numpy()))
        w = scores.gather(1, idx)
        if norm:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return idx, w * scale

    router = getattr(mod, "DeepseekV3TopkRouter", None)
    if router is not None and not hasattr(router, "get_topk_indices"):
        # transformers 5.x: the router's forward returns (logits, weights, indices)
        orig = router.forward

        def forward(self, hidden_states):
            logits, w_own, idx_own = orig(self, hidden_states)
            scores = logits.float().sigmoid()
            idx, w = routed(scores, self.e_score_correction_bias.float(), self.num_group,
                            self.topk_group, self.top_k, self.norm_topk_prob,
                            self.routed_scaling_factor, idx_own)
            return logits, w.to(w_own.dtype), idx
        router.forward = forward
        return "DeepseekV3TopkRouter.forward (transformers 5.x)"
    if router is not None and hasattr(router, "get_topk_indices"):
        # transformers 4.4x-4.5x: get_topk_indices(scores) -> indices; fill 0.0
        orig = router.get_topk_indices

        def get_topk_indices(self, scores):
            own = orig(self, scores)
            idx, _ = routed(scores.view(-1, self.n_routed_experts),
                            self.e_score_correction_bias.float(), self.n_group, self.topk_group,
                            self.top_k, False, 1.0, own)
            return idx
        router.get_topk_indices = get_topk_indices
        return "DeepseekV3TopkRouter.get_topk_indices (transformers 4.x)"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="dequantized HF model dir (tandem convert dequant)")
    ap.add_argument("--tandem-logits", required=True, nargs="+",
                    help="raw f32 [n, vocab] from dump_logits; several files (e.g. the CPU and the "
                         "GPU backend's) are each compared with the one HF run and with the "
                         "first")
    ap.add_argument("--require", nargs="+", default=None,
                    help="the tandem files that must meet the targets for exit status 0 "
                         "(default: the first)")
    ap.add_argument("--ids", required=True, help="token ids, whitespace separated")
    ap.add_argument("--ref-logits", help="optional: the float64 reference's logits (dump_logits --ref)")
    ap.add_argument("--group-fill", choices=["model", "-inf", "0"], default="model",
                    help="value for dropped expert groups: the installed transformers' own "
                         "(default; -inf in 5.x, 0.0 in 4.x), -inf (tandem, DeepSeek), 0 (old HF)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--save-hf", help="write HF's logits here (raw f32)")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, DeepseekV3ForCausalLM

    ids = read_ids(args.ids)
    n = len(ids)
    cfg = AutoConfig.from_pretrained(args.model)
    V = cfg.vocab_size
    tls = []
    for path in args.tandem_logits:
        tl = np.fromfile(path, dtype=np.float32)
        if tl.size != n * V:
            sys.exit(f"{path}: {tl.size} floats, expected {n} x {V}")
        tls.append(tl.reshape(n, V).astype(np.float64))

    stats = {"tokens": 0, "differ": 0, "calls": []}
    where = patch_router(None if args.group_fill == "model" else args.group_fill, stats)
    if where is None:
        print("warning: could not find HF's router selection to patch; routing stats unavailable")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = DeepseekV3ForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                      attn_implementation="eager")
    except TypeError:
        model = DeepseekV3ForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                      attn_implementation="eager")
    model.to(device).eval()
    with torch.no_grad():
        x = torch.tensor([ids], dtype=torch.long, device=device)
        out = model(input_ids=x, use_cache=False)
        hl = out.logits[0].float().cpu().numpy().astype(np.float64)
    if args.save_hf:
        hl.astype(np.float32).tofile(args.save_hf)

    def compare(name, a, b):
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
        rel = np.linalg.norm(a - b, axis=1) / (np.linalg.norm(b, axis=1) + 1e-30)
        top1 = (a.argmax(1) == b.argmax(1))
        print(f"{name}: {n} positions  cosine min {cos.min():.6f} mean {cos.mean():.6f}  "
              f"rel-L2 max {rel.max():.3g} mean {rel.mean():.3g}  top-1 agreement "
              f"{top1.mean() * 100:.2f}% ({int(top1.sum())}/{n})")
        bad = np.where(cos < 0.999)[0]
        if bad.size:
            print(f"  positions with cosine < 0.999: {bad[:20].tolist()}{' ...' if bad.size > 20 else ''}")
        met = cos.min() >= 0.999 and top1.mean() >= 0.99
        print(f"  targets (cosine >= 0.999 at every position, top-1 >= 99%): "
              f"{'met' if met else 'not met'}")
        return cos.min(), top1.mean()

    print(f"model {args.model}: vocab {V}, {cfg.num_hidden_layers} layers, device {device}, "
          f"router hook {where}, group fill {args.group_fill}")
    require = args.require or args.tandem_logits[:1]
    for path in require:
        if path not in args.tandem_logits:
            sys.exit(f"--require {path}: not among --tandem-logits")
    res = {}     # path -> (cosine min, top-1 agreement) against HF
    res[args.tandem_logits[0]] = compare(f"tandem ({args.tandem_logits[0]}) vs HF", tls[0], hl)
    for path, tl in zip(args.tandem_logits[1:], tls[1:]):
        res[path] = compare(f"tandem ({path}) vs HF", tl, hl)
        compare(f"tandem ({path}) vs tandem ({args.tandem_logits[0]})", tl, tls[0])
    # routing: HF's choices per MoE layer (router calls in layer order) against tandem's, where
    # dump_logits --routes wrote them next to a logits file (X.f32 -> X.routes)
    moe_layers = [l for l in range(cfg.num_hidden_layers) if l >= cfg.first_k_dense_replace]
    hf_routes = {}
    for l, (idx, gm, em) in zip(moe_layers, stats["calls"]):
        for p in range(min(n, idx.shape[0])):
            hf_routes[(p, l)] = (tuple(int(e) for e in idx[p]), float(gm[p]), float(em[p]))
    if hf_routes:
        allm = [min(v[1], v[2]) for v in hf_routes.values()]
        print(f"HF routing: {len(hf_routes)} (position, MoE layer) selections; smallest margin "
              f"{min(allm):.3g}, {sum(m < 1e-3 for m in allm)} below 1e-3")
    for path in args.tandem_logits:
        rpath = path[:-4] + ".routes" if path.endswith(".f32") else path + ".routes"
        try:
            with open(rpath) as f:
                rows = [list(map(int, line.split())) for line in f if line.strip()]
        except OSError:
            continue
        differ = [(r[0], r[1]) for r in rows
                  if (r[0], r[1]) in hf_routes and tuple(r[2:]) != hf_routes[(r[0], r[1])][0]]
        print(f"routing of {path}: {len(differ)} of {len(rows)} selections differ from HF's")
        for p, l in differ[:12]:
            _, gm, em = hf_routes[(p, l)]
            print(f"  position {p} layer {l}: HF's margins: group cut {gm:.3g}, expert cut {em:.3g}")
    if args.ref_logits:
        rl = np.fromfile(args.ref_logits, dtype=np.float32).reshape(n, V).astype(np.float64)
        compare("float64 reference vs HF", rl, hl)
        compare("tandem vs float64 reference", tls[0], rl)
    if stats["tokens"]:
        print(f"routing: {stats['differ']} of {stats['tokens']} (token, MoE layer) selections would "
              f"differ between a 0.0 and a -inf fill of the dropped groups")
    ok = all(res[p][0] >= 0.999 and res[p][1] >= 0.99 for p in require)
    print("PASS" if ok else "FAIL", f"(targets: cosine >= 0.999 at every position, top-1 >= 99%, "
          f"required of {' '.join(require)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
