"""PyTorch models the ONNX import tests export: nn.TransformerEncoder, nn.Transformer and a
GPT written in torch.nn (dropout off, eval mode)."""

from __future__ import annotations

import torch
from torch import nn

D, HEADS, FF, VOCAB = 32, 4, 64, 50


class Encoder(nn.Module):
    def __init__(self, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class EncoderDecoder(nn.Module):
    def __init__(self, layers=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.transformer = nn.Transformer(D, HEADS, layers, layers, FF, dropout=0.0,
                                          batch_first=True)
        self.head = nn.Linear(D, VOCAB)

    def forward(self, src, tgt):
        t = tgt.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        y = self.transformer(self.embed(src), self.embed(tgt), tgt_mask=mask)
        return self.head(y)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.out = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=-1)
        q, k, v = (z.reshape(b, t, HEADS, D // HEADS).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(-2, -1) / (D // HEADS) ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        s = s.masked_fill(~causal, float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D)
        x = x + self.proj(y)
        return x + self.out(nn.functional.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, layers=2, max_len=64):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, D), nn.Embedding(max_len, D)
        self.layers = nn.ModuleList(Block() for _ in range(layers))
        self.ln_f = nn.LayerNorm(D)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for layer in self.layers:
            x = layer(x)
        return self.ln_f(x) @ self.tok.weight.T


def export(model: nn.Module, args: tuple, path, names: list[str], dynamic: dict):
    """torch.onnx.export with the TorchScript exporter (dynamo=False): a second or two per
    model, where the torch.export-based one takes 20-40 s on a 2-core machine."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=["y"], dynamic_axes=dynamic)
