"""An independent float64 NumPy reference for the first attention layer of a pre-LN GPT
with learned positions, and a first-order bound on a float32 run's error against it."""

from __future__ import annotations

import numpy as np

U32 = 2.0 ** -24  # unit roundoff of float32


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def first_layer_attention(params: dict, tokens: np.ndarray, head: int, eps: float = 1e-5):
    """softmax(mask(q kᵀ/√d)) of layer 0, head ``head``, batch element 0, in float64, and
    a bound on |float32 − float64| per entry.

    Error model: LayerNorm, the D-term projections and the d-term dot product each add at
    most γ_n relative error in their magnitudes (|h|·|W| + |b|), so a score's error is at
    most γ_{4D+d}·2·(|q|ᵃ·|k|ᵃ)/√d; softmax turns a score error Δs into
    |Δp_ij| ≤ p_ij·(|Δs_ij| + Σ_k p_ik|Δs_ik|) + γ_{T+4}·p_ij (its own rounding)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    pre = f"decoder/layer_0/self_attn/head_{head}/"
    t = tokens[0]
    x = p["embed/token_table"][t] + p["embed/position_table"][np.arange(len(t))]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mu) / np.sqrt(var + eps) * p["decoder/layer_0/ln_1/gamma"] + \
        p["decoder/layer_0/ln_1/beta"]
    q = h @ p[pre + "w_q"] + p[pre + "b_q"]
    k = h @ p[pre + "w_k"] + p[pre + "b_k"]
    d, D = q.shape[-1], x.shape[-1]
    s = q @ k.T / np.sqrt(d)
    causal = np.tril(np.ones(s.shape, bool))
    s = np.where(causal, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    qa = np.abs(h) @ np.abs(p[pre + "w_q"]) + np.abs(p[pre + "b_q"])
    ka = np.abs(h) @ np.abs(p[pre + "w_k"]) + np.abs(p[pre + "b_k"])
    ds = np.where(causal, gamma(4 * D + d) * 2 * (qa @ ka.T) / np.sqrt(d), 0.0)
    bound = probs * (ds + (probs * ds).sum(-1, keepdims=True)) + gamma(len(t) + 4) * probs
    return probs, bound
