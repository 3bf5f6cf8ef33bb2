"""The JAX peer for GPT benchmarks: torch_gpt.py's network written in jax.numpy (pre-LN,
learned positions, GELU, tied unembedding, attention as QKᵀ, scale, causal mask, softmax,
×V), jitted whole: XLA fuses and schedules it, which is what tgraph's -O2 is measured
against. Benchmark-only: JAX is not a tgraph dependency here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def init(n_layers, d_model, n_heads, d_ff, vocab, max_len, seed=0):
    r = np.random.default_rng(seed)

    def w(*shape):
        return jnp.asarray(r.normal(0, 0.02, shape), jnp.float32)

    def zeros(*shape):
        return jnp.zeros(shape, jnp.float32)

    blocks = [dict(ln1=(jnp.ones(d_model), zeros(d_model)), ln2=(jnp.ones(d_model), zeros(d_model)),
                   qkv=(w(d_model, 3 * d_model), zeros(3 * d_model)),
                   proj=(w(d_model, d_model), zeros(d_model)),
                   fc1=(w(d_model, d_ff), zeros(d_ff)), fc2=(w(d_ff, d_model), zeros(d_model)))
              for _ in range(n_layers)]
    return dict(tok=w(vocab, d_model), pos=w(max_len, d_model), blocks=blocks,
                ln_f=(jnp.ones(d_model), zeros(d_model)))


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p[0] + p[1]


def loss(params, tokens, targets, n_heads: int, approximate: bool):
    b, t = tokens.shape
    x = params["tok"][tokens] + params["pos"][:t]
    causal = jnp.tril(jnp.ones((t, t), bool))
    for p in params["blocks"]:
        d = x.shape[-1]
        qkv = _ln(x, p["ln1"]) @ p["qkv"][0] + p["qkv"][1]
        q, k, v = (z.reshape(b, t, n_heads, -1).transpose(0, 2, 1, 3)
                   for z in jnp.split(qkv, 3, axis=-1))
        s = (q @ k.transpose(0, 1, 3, 2)) * q.shape[-1] ** -0.5
        a = jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1) @ v
        x = x + a.transpose(0, 2, 1, 3).reshape(b, t, d) @ p["proj"][0] + p["proj"][1]
        h = jax.nn.gelu(_ln(x, p["ln2"]) @ p["fc1"][0] + p["fc1"][1], approximate=approximate)
        x = x + h @ p["fc2"][0] + p["fc2"][1]
    logits = _ln(x, params["ln_f"]) @ params["tok"].T
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()


def jax_sides(cfg, b, t):
    """{"jax jit forward": fn, "jax jit step": fn}, compiled on first call."""
    params = init(cfg["n_layers"], cfg["d_model"], cfg["n_heads"], cfg["d_ff"], cfg["vocab"],
                  cfg["max_len"])
    r = np.random.default_rng(0)
    tokens = jnp.asarray(r.integers(0, cfg["vocab"], (b, t)))
    targets = jnp.asarray(r.integers(0, cfg["vocab"], (b, t)))
    kw = dict(n_heads=cfg["n_heads"], approximate=cfg["activation"] == "gelu_tanh")
    forward = jax.jit(lambda p, x, y: loss(p, x, y, **kw))
    step = jax.jit(jax.grad(lambda p, x, y: loss(p, x, y, **kw)))
    return {"jax jit forward": lambda: forward(params, tokens, targets).block_until_ready(),
            "jax jit step": lambda: jax.block_until_ready(step(params, tokens, targets))}
