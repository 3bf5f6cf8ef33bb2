"""The PyTorch peer for GPT benchmarks: the same network as ``build_model("gpt", ...)`` with
pre-LN, learned positions, GELU and a tied unembedding, attention written out as eager ops
(QKᵀ, scale, causal mask, softmax, ×V) like the graph's, not a fused SDPA kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: config keys of ``build_model("gpt", ...)`` that make the graph this peer's twin
GRAPH_OPTIONS = {"norm": "pre", "pos": "learned", "activation": "gelu", "heads": "batched",
                 "tie_embeddings": True}


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, gelu: str = "none"):
        super().__init__()
        self.n_heads, self.gelu = n_heads, gelu
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x, causal):
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_heads, -1).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(d, dim=-1))
        s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        a = torch.softmax(s.masked_fill(~causal[:t, :t], float("-inf")), dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate=self.gelu))


class GPT(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, vocab: int,
                 max_len: int, gelu: str = "none"):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, gelu) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.register_buffer("causal", torch.ones(max_len, max_len, dtype=torch.bool).tril())
        for m in self.modules():  # GPT-2's init, as the graph's params: N(0, 0.02), zero bias
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, tokens, targets):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for blk in self.blocks:
            x = blk(x, self.causal)
        logits = self.ln_f(x) @ self.tok.weight.T
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
