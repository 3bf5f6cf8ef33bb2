"""PyTorch peers of the model zoo, loaded with the same weights (batched-heads names).

Layers are torch.nn.TransformerEncoderLayer / TransformerDecoderLayer (norm_first for
pre-LN) with nn.MultiheadAttention; where an option has no torch.nn module (RoPE,
additive scores, low-rank values) the layer's attention is replaced by ``WrittenAttention``,
written out in torch from the formulas. Masks (causal, window, padding) and ALiBi biases
are built here as float attention masks, independently of the graph's mask op.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a))


class Weights:
    def __init__(self, params):
        self.params = params

    def __call__(self, name):
        return tensor(self.params[name])

    def __contains__(self, name):
        return name in self.params


def sinusoidal(t, d, dtype):
    pos = torch.arange(t, dtype=dtype)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=dtype) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, dtype=dtype)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def rotate(x):
    """RoPE, rotate-half layout, on x [B, H, T, d]."""
    d, t = x.shape[-1], x.shape[-2]
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=x.dtype) / d))
    ang = torch.outer(torch.arange(t, dtype=x.dtype), inv)
    emb = torch.cat([ang, ang], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def float_mask(cfg, b, t, s, causal=False, keep=None, alibi=False):
    """[B·H, T, S] additive mask: −inf where not allowed, −m_h|i−j| for ALiBi."""
    dtype = getattr(torch, cfg["dtype"])
    h = cfg["n_heads"]
    i = torch.arange(t)[:, None] + (s - t)
    j = torch.arange(s)[None, :]
    allowed = torch.ones(b, 1, t, s, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if cfg["window"]:
        allowed &= (j - i).abs() <= cfg["window"]
    if keep is not None:
        allowed &= tensor(keep)[:, None, None, :]
    bias = torch.zeros(b, h, t, s, dtype=dtype)
    if alibi:
        slopes = torch.tensor([2 ** (-8 * (k + 1) / h) for k in range(h)], dtype=dtype)
        bias = bias - slopes[:, None, None] * (i - j).abs().to(dtype)
    bias = bias.masked_fill(~allowed, float("-inf"))
    return bias.reshape(b * h, t, s)


class WrittenAttention(nn.Module):
    """nn.MultiheadAttention's call signature, the variants written out in torch."""

    def __init__(self, cfg, w, prefix, rope):
        super().__init__()
        self.cfg, self.w, self.prefix, self.rope = cfg, w, prefix, rope

    def p(self, name):
        return self.w(f"{self.prefix}/{name}")

    def forward(self, query, key, value, attn_mask=None, **_):
        cfg = self.cfg
        b, t, d = query.shape
        s, h = key.shape[1], cfg["n_heads"]

        def heads(x, width):
            return x.view(b, x.shape[1], h, width).transpose(1, 2)

        q = heads(query @ self.p("w_q") + self.p("b_q"), d // h)
        k = heads(key @ self.p("w_k") + self.p("b_k"), d // h)
        if cfg["value_rank"]:
            v = heads(value @ self.p("w_v_down"), cfg["value_rank"]) @ self.p("w_v_up")
        else:
            v = heads(value @ self.p("w_v") + self.p("b_v"), d // h)
        if self.rope:
            q, k = rotate(q), rotate(k)
        if cfg["score"] == "additive":
            e = torch.tanh((q @ self.p("scores/w_q")).unsqueeze(-2)
                           + (k @ self.p("scores/w_k")).unsqueeze(-3))
            scores = (e @ self.p("scores/v")).squeeze(-1)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if attn_mask is not None:
            scores = scores + attn_mask.view(b, h, t, s)
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        return out @ self.p("w_o") + self.p("b_o"), None


def attention_module(cfg, w, prefix, self_attention):
    rope = self_attention and cfg["pos"] == "rope"
    if rope or cfg["score"] == "additive" or cfg["value_rank"]:
        return WrittenAttention(cfg, w, prefix, rope)
    d = cfg["d_model"]
    mha = nn.MultiheadAttention(d, cfg["n_heads"], batch_first=True,
                                dtype=getattr(torch, cfg["dtype"]))
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w(f"{prefix}/w_{x}").T for x in "qkv"]))
        mha.in_proj_bias.copy_(torch.cat([w(f"{prefix}/b_{x}") for x in "qkv"]))
        mha.out_proj.weight.copy_(w(f"{prefix}/w_o").T)
        mha.out_proj.bias.copy_(w(f"{prefix}/b_o"))
    return mha


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu,
               "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


def layer(cfg, w, prefix, decoder=False):
    cls = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    m = cls(cfg["d_model"], cfg["n_heads"], cfg["d_ff"], dropout=0.0,
            activation=ACTIVATIONS[cfg["activation"]], layer_norm_eps=cfg["eps"],
            batch_first=True, norm_first=cfg["norm"] == "pre",
            dtype=getattr(torch, cfg["dtype"]))
    m.train()  # dropout is 0; training mode keeps torch off its fused fast path
    m.self_attn = attention_module(cfg, w, f"{prefix}/self_attn", True)
    if decoder:
        m.multihead_attn = attention_module(cfg, w, f"{prefix}/cross_attn", False)
    with torch.no_grad():
        m.linear1.weight.copy_(w(f"{prefix}/ffn/w_1").T)
        m.linear1.bias.copy_(w(f"{prefix}/ffn/b_1"))
        m.linear2.weight.copy_(w(f"{prefix}/ffn/w_2").T)
        m.linear2.bias.copy_(w(f"{prefix}/ffn/b_2"))
        for i in range(1, 4 if decoder else 3):
            getattr(m, f"norm{i}").weight.copy_(w(f"{prefix}/ln_{i}/gamma"))
            getattr(m, f"norm{i}").bias.copy_(w(f"{prefix}/ln_{i}/beta"))
    return m


def final_norm(cfg, w, x, scope):
    if cfg["norm"] != "pre":
        return x
    return F.layer_norm(x, x.shape[-1:], w(f"{scope}/ln_f/gamma"), w(f"{scope}/ln_f/beta"),
                        cfg["eps"])


def embed(cfg, w, tokens, scale=1.0):
    """Token rows × scale plus sinusoidal or learned positions."""
    table = w("embed/token_table")
    x = F.embedding(tensor(tokens), table) * scale
    return add_positions(cfg, w, x)


def add_positions(cfg, w, x):
    t = x.shape[1]
    if cfg["pos"] == "sinusoidal":
        return x + sinusoidal(t, x.shape[-1], x.dtype)
    if cfg["pos"] == "learned":
        return x + w("embed/position_table")[:t]
    return x


def unembed(cfg, w, x):
    return x @ (w("embed/token_table").T if cfg["tie_embeddings"] else w("head/w_out"))


def encode(cfg, w, x, scope, n_layers, causal=False, keep=None):
    b, t, _ = x.shape
    mask = float_mask(cfg, b, t, t, causal=causal, keep=keep, alibi=cfg["pos"] == "alibi")
    for i in range(n_layers):
        x = layer(cfg, w, f"{scope}/layer_{i}")(x, src_mask=mask)
    return final_norm(cfg, w, x, scope)


def gpt(cfg, w, feeds):
    x = embed(cfg, w, feeds["tokens"])
    return unembed(cfg, w, encode(cfg, w, x, "decoder", cfg["n_layers"], causal=True))


def bert(cfg, w, feeds):
    x = embed(cfg, w, feeds["tokens"])
    x = F.layer_norm(x, x.shape[-1:], w("embed/ln/gamma"), w("embed/ln/beta"), cfg["eps"])
    x = encode(cfg, w, x, "encoder", cfg["n_layers"], keep=feeds["attention_mask"])
    return unembed(cfg, w, x)


def transformer(cfg, w, feeds):
    scale = math.sqrt(cfg["d_model"])
    memory = encode(cfg, w, embed(cfg, w, feeds["src_tokens"], scale), "encoder",
                    cfg["n_enc_layers"] or cfg["n_layers"])
    y = embed(cfg, w, feeds["tgt_tokens"], scale)
    b, t, _ = y.shape
    mask = float_mask(cfg, b, t, t, causal=True, alibi=cfg["pos"] == "alibi")
    for i in range(cfg["n_dec_layers"] or cfg["n_layers"]):
        y = layer(cfg, w, f"decoder/layer_{i}", decoder=True)(y, memory, tgt_mask=mask)
    return unembed(cfg, w, final_norm(cfg, w, y, "decoder"))


def vit(cfg, w, feeds):
    p, d = cfg["patch_size"], cfg["d_model"]
    conv = nn.Conv2d(cfg["channels"], d, p, stride=p, dtype=getattr(torch, cfg["dtype"]))
    with torch.no_grad():  # the graph's [C·p·p, D] patch matrix is the conv kernel, flattened
        conv.weight.copy_(w("embed/w_patch").T.reshape(d, cfg["channels"], p, p))
        conv.bias.copy_(w("embed/b_patch"))
    x = conv(tensor(feeds["images"])).flatten(2).transpose(1, 2)  # [B, N, D]
    cls = w("embed/class_token").expand(x.shape[0], 1, d)
    x = add_positions(cfg, w, torch.cat([cls, x], 1))
    x = encode(cfg, w, x, "encoder", cfg["n_layers"])
    return x[:, 0] @ w("head/w_out") + w("head/b_out")


MODELS = {"gpt": gpt, "bert": bert, "transformer": transformer, "vit": vit}


def torch_logits(model, cfg, params, feeds) -> np.ndarray:
    """The PyTorch peer's logits for weights in the batched-heads layout."""
    return MODELS[model](cfg, Weights(params), feeds).detach().numpy()
