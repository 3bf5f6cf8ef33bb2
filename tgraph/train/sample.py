"""Sampling text from a trained GPT: temperature and top-k over the last position's
logits, one character at a time (no KV cache: the context is re-run each step)."""

from __future__ import annotations

import numpy as np


def generate(executable, params, prompt: list[int], steps: int, max_len: int,
             temperature: float = 1.0, top_k: int = 0, rng=None,
             n_ids: int | None = None) -> list[int]:
    """``prompt`` extended by ``steps`` sampled token ids; temperature 0 is greedy.
    ``n_ids``: sample only ids below it (those the text codec maps; a graph may have more)."""
    rng = rng or np.random.default_rng()
    ids = list(prompt)
    for _ in range(steps):
        context = np.array([ids[-max_len:]], dtype=np.int64)
        logits = executable.run({"tokens": context}, params)["logits"][0, -1, :n_ids]
        logits = logits.astype(np.float64)
        ids.append(pick(logits, temperature, top_k, rng))
    return ids


def pick(logits: np.ndarray, temperature: float, top_k: int, rng) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    if 0 < top_k < len(logits):
        logits = np.where(logits >= np.sort(logits)[-top_k], logits, -np.inf)
    z = (logits - logits.max()) / temperature
    p = np.exp(z)
    return int(rng.choice(len(p), p=p / p.sum()))
