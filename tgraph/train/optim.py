"""Optimizers as pure updates of a parameters dict and a state dict.

They use only array operators, so the same formula updates NumPy and CuPy arrays (weights
stay on the device between steps) and runs inside a jitted JAX step over a device mesh.
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    """``update`` is a pure function of array operators (state in, state out), so one
    formula serves NumPy and CuPy in ``step`` and JAX inside a jitted, sharded step."""

    lr: float

    def init(self, params: dict) -> dict:
        raise NotImplementedError

    def update(self, params: dict, grads: dict, state: dict, lr) -> tuple[dict, dict]:
        """New values of the parameters in ``grads``, and the new state."""
        raise NotImplementedError

    def step(self, params: dict, grads: dict) -> None:
        """Update ``params`` (the dict) in place with the current ``lr``."""
        if getattr(self, "state", None) is None:
            self.state = self.init({k: params[k] for k in grads})
        new, self.state = self.update(params, grads, self.state, self.lr)
        params.update(new)


class SGD(Optimizer):
    """p ← p − lr · (g + weight_decay · p), with optional momentum."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.state = None

    def init(self, params):
        return {"velocity": {k: p * 0 for k, p in params.items()}} if self.momentum else {}

    def update(self, params, grads, state, lr):
        new, velocity = {}, {}
        for name, g in grads.items():
            p = params[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:  # from zeros, so the first step's velocity is g, as in torch
                g = velocity[name] = self.momentum * state["velocity"][name] + g
            new[name] = p - lr * g
        return new, ({"velocity": velocity} if self.momentum else {})


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), applied to matrices only:
    biases, LayerNorm gains and other vectors are not decayed."""

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.state = None

    def init(self, params):
        return {"t": 0, "m": {k: p * 0 for k, p in params.items()},
                "v": {k: p * 0 for k, p in params.items()}}

    def step(self, params: dict, grads: dict) -> None:
        """On NumPy arrays, one compiled in-place loop per parameter (tgraph/codegen/
        adamw.py); elsewhere (CuPy) the pure ``update``."""
        from tgraph.codegen.adamw import adamw_inplace, usable

        if self.state is None:
            self.state = self.init({k: params[k] for k in grads})
        s = self.state
        grads = {k: np.ascontiguousarray(g) if isinstance(g, np.ndarray) else g
                 for k, g in grads.items()}
        if not all(usable(params[k], g, s["m"][k], s["v"][k]) for k, g in grads.items()):
            return super().step(params, grads)
        s["t"] += 1
        b1, b2 = self.betas
        for name, g in grads.items():
            p = params[name]
            adamw_inplace(p, g, s["m"][name], s["v"][name], lr=self.lr, b1=b1, b2=b2,
                          eps=self.eps,
                          decay=self.lr * self.weight_decay if p.ndim >= 2 else 0.0,
                          step=self.lr / (1 - b1 ** s["t"]),
                          root_bc2=(1 - b2 ** s["t"]) ** 0.5)

    def update(self, params, grads, state, lr):
        t = state["t"] + 1  # a traced scalar under jit: the bias corrections follow it
        b1, b2 = self.betas
        step = lr / (1 - b1 ** t)  # bias corrections, placed as PyTorch does
        root_bc2 = (1 - b2 ** t) ** 0.5
        new, ms, vs = {}, {}, {}
        for name, g in grads.items():
            p = params[name]
            m = ms[name] = b1 * state["m"][name] + (1 - b1) * g
            v = vs[name] = b2 * state["v"][name] + (1 - b2) * (g * g)
            if self.weight_decay and p.ndim >= 2:
                p = p - (lr * self.weight_decay) * p
            new[name] = p - step * m / (v ** 0.5 / root_bc2 + self.eps)
        return new, {"t": t, "m": ms, "v": vs}


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
