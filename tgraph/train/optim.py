"""Optimizers as plain in-place array updates on a parameters dict.

They use only array operators, so the same code updates NumPy and CuPy arrays: weights
stay on the device between steps.
"""

from __future__ import annotations

import math


class SGD:
    """p ← p − lr · (g + weight_decay · p), with optional momentum."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        for name, g in grads.items():
            p = params[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity.get(name)
                g = self.velocity[name] = g if v is None else self.momentum * v + g
            p -= self.lr * g


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), applied to matrices only:
    biases, LayerNorm gains and other vectors are not decayed."""

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        b1, b2 = self.betas
        step = self.lr / (1 - b1 ** self.t)  # bias corrections, placed as PyTorch does
        root_bc2 = math.sqrt(1 - b2 ** self.t)
        for name, g in grads.items():
            p = params[name]
            if name not in self.m:
                self.m[name], self.v[name] = g * 0, g * 0
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            if self.weight_decay and p.ndim >= 2:
                p -= (self.lr * self.weight_decay) * p
            p -= step * m / (v ** 0.5 / root_bc2 + self.eps)


OPTIMIZERS = {"adamw": AdamW, "sgd": SGD}


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most max_norm; returns
    the norm before clipping."""
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    if max_norm and norm > max_norm:
        scale = max_norm / (norm + 1e-12)
        for g in grads.values():
            g *= scale
    return norm


def warmup_cosine(lr: float, steps: int, warmup: int = 0, floor: float = 0.1):
    """Learning rate at each step: linear warm-up, then cosine decay to floor · lr."""

    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(steps - warmup, 1)
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    return at
