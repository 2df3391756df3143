"""model.py - a small DeepSeek-V3 in plain PyTorch, written from docs/model.md, for training tandem's
default model. Parameter names and math follow Hugging Face's DeepseekV3ForCausalLM checkpoints
(docs/model.md): MLA with q_lora, interleaved RoPE with YaRN and the
mscale^2 softmax factor, sigmoid router with correction bias (selection only), group-limited
top-k, normalized weights times routed_scaling_factor, a shared expert, dense first layers.
The correction bias is not trained by gradients: train.py nudges it toward balanced expert load
(DeepSeek-V3's auxiliary-loss-free balancing).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def yarn_freqs(cfg):
    """omega_i for i in 0..rope_dim/2-1 (docs/model.md §2, RoPE)."""
    dim, theta = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return base
    f, L = rs["factor"], rs["original_max_position_embeddings"]

    def d(r):
        return dim * math.log(L / (2 * math.pi * r)) / (2 * math.log(theta))

    low = max(math.floor(d(rs["beta_fast"])), 0)
    high = min(math.ceil(d(rs["beta_slow"])), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    return base * (1 - ramp) + base / f * ramp


def softmax_scale(cfg):
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    tau = qk ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and rs["factor"] > 1:
        m = 0.1 * rs.get("mscale_all_dim", 1.0) * math.log(rs["factor"]) + 1.0
        tau *= m * m
    return tau


def rope_interleaved(x, cos, sin):
    """x [..., T, dim]; rotate pairs (2i, 2i+1) by the angle whose cos/sin are [T, dim/2]."""
    xf = x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2).to(x.dtype)


class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.H, self.nope, self.rope, self.vd = H, cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.kvr = cfg["kv_lora_rank"]
        qk = self.nope + self.rope
        self.q_a_proj = nn.Linear(D, cfg["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"], 1e-6)
        self.q_b_proj = nn.Linear(cfg["q_lora_rank"], H * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kvr + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kvr, 1e-6)
        self.kv_b_proj = nn.Linear(self.kvr, H * (self.nope + self.vd), bias=False)
        self.o_proj = nn.Linear(H * self.vd, D, bias=False)
        self.scale = softmax_scale(cfg)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        H = self.H
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, T, H, -1).transpose(1, 2)
        q_nope, q_pe = q[..., :self.nope], q[..., self.nope:]
        kv = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv[..., :self.kvr], kv[..., self.kvr:]
        kvb = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(B, T, H, -1).transpose(1, 2)
        k_nope, v = kvb[..., :self.nope], kvb[..., self.nope:]
        q_pe = rope_interleaved(q_pe, cos, sin)
        k_pe = rope_interleaved(k_pe.unsqueeze(1), cos, sin).expand(B, H, T, self.rope)
        qq = torch.cat((q_nope, q_pe), -1)
        kk = torch.cat((k_nope, k_pe), -1)
        o = F.scaled_dot_product_attention(qq, kk, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * self.vd))


class MLP(nn.Module):
    def __init__(self, D, inter):
        super().__init__()
        self.gate_proj = nn.Linear(D, inter, bias=False)
        self.up_proj = nn.Linear(D, inter, bias=False)
        self.down_proj = nn.Linear(inter, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.E, self.k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        self.G, self.kg = cfg["n_group"], cfg["topk_group"]
        self.scale = cfg["routed_scaling_factor"]
        self.weight = nn.Parameter(torch.empty(self.E, cfg["hidden_size"]))
        self.register_buffer("e_score_correction_bias", torch.zeros(self.E))

    def forward(self, f):
        s = F.linear(f.float(), self.weight.float()).sigmoid()          # [N, E]
        b = s.detach() + self.e_score_correction_bias
        if self.G > 1:
            gs = b.view(-1, self.G, self.E // self.G).topk(2, dim=-1)[0].sum(-1)
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(self.kg, dim=-1)[1], 1.0)
            keep = keep.unsqueeze(-1).expand(-1, self.G, self.E // self.G).reshape(-1, self.E)
            b = b.masked_fill(keep == 0, float("-inf"))
        idx = b.topk(self.k, dim=-1)[1]
        w = s.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * self.scale
        return idx, w


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D = cfg["hidden_size"]
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(MLP(D, cfg["moe_intermediate_size"]) for _ in range(cfg["n_routed_experts"]))
        self.shared_experts = MLP(D, cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        self.last_load = None

    def forward(self, x):
        shp = x.shape
        f = x.reshape(-1, shp[-1])
        idx, w = self.gate(f)
        out = torch.zeros(f.shape, dtype=torch.float32, device=f.device)
        flat = idx.flatten()
        self.last_load = torch.bincount(flat, minlength=len(self.experts)).detach()
        order = flat.argsort()
        counts = self.last_load.tolist()
        tok = order // idx.shape[1]
        wk = w.flatten()[order]
        start = 0
        for e, n in enumerate(counts):
            if n:
                t = tok[start:start + n]
                y = self.experts[e](f[t]).float() * wk[start:start + n, None]
                out.index_add_(0, t, y)
            start += n
        return (out.to(x.dtype) + self.shared_experts(f)).view(shp)


class Layer(nn.Module):
    def __init__(self, cfg, l):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = MoE(cfg) if l >= cfg["first_k_dense_replace"] else MLP(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg, l) for l in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class DeepseekV3Small(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.register_buffer("omega", yarn_freqs(cfg), persistent=False)
        n_layers = cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                continue
            std = 0.02
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                std = 0.02 / math.sqrt(2 * n_layers)
            nn.init.normal_(p, std=std)

    def forward(self, ids, pos=None, mask=None):
        """ids [B, T]; pos [B, T] absolute positions (default 0..T-1); mask bool [B,1,T,T] or None (causal)."""
        B, T = ids.shape
        if pos is None:
            pos = torch.arange(T, device=ids.device).expand(B, T)
        if mask is None:
            mask = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        ang = pos.float().unsqueeze(-1) * self.omega          # [B, T, rope/2]
        cos, sin = ang.cos().unsqueeze(1), ang.sin().unsqueeze(1)
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.model.norm(h)).float()

    def moe_layers(self):
        return [l.mlp for l in self.model.layers if isinstance(l.mlp, MoE)]
