"""What to train on: toy sequence tasks for the encoder–decoder and a text corpus for GPT.

A task knows its vocabulary, the model overrides that fit it, and makes batches of feeds
named like the model's inputs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tgraph.errors import TGraphError

SEQUENCE_TASKS = {"reverse": lambda x: x[:, ::-1], "copy": lambda x: x,
                  "sort": lambda x: np.sort(x, axis=1)}


class SequenceTask:
    """Map a digit sequence to its reverse, a copy or its sorted form (``transformer``).

    Tokens 0–9 are digits and 10 is BOS; the decoder reads BOS + answer[:-1] and is
    trained to emit the answer (teacher forcing); evaluation decodes greedily.
    """

    model = "transformer"

    def __init__(self, kind: str = "reverse", length: int = 8, digits: int = 10):
        if kind not in SEQUENCE_TASKS:
            raise TGraphError(f"unknown task {kind!r}; tasks: {', '.join(TASKS)}")
        self.kind, self.length, self.digits = kind, length, digits
        self.bos = digits

    @property
    def vocab(self) -> int:
        return self.digits + 1

    def model_overrides(self) -> dict:
        return {"vocab": self.vocab, "max_len": self.length + 1}

    def sample(self, rng, n: int) -> tuple[np.ndarray, np.ndarray]:
        src = rng.integers(0, self.digits, (n, self.length))
        return src, np.ascontiguousarray(SEQUENCE_TASKS[self.kind](src))

    def teacher_forced(self, answer: np.ndarray) -> np.ndarray:
        return np.concatenate([np.full((len(answer), 1), self.bos), answer[:, :-1]], axis=1)

    def batch(self, rng, n: int) -> dict:
        src, answer = self.sample(rng, n)
        return {"src_tokens": src, "tgt_tokens": self.teacher_forced(answer),
                "targets": answer}

    def accuracy(self, executable, params, rng, n: int = 500) -> float:
        """Exact-sequence accuracy of greedy decoding on n fresh sequences (held out: the
        chance that one of them was a training sequence is negligible, 10^-8 each)."""
        src, answer = self.sample(rng, n)
        out = np.zeros_like(answer)
        for t in range(self.length):  # the causal decoder never looks past position t
            logits = executable.run({"src_tokens": src, "tgt_tokens": self.teacher_forced(out)},
                                    params)["logits"]
            out[:, t] = logits[:, t].argmax(-1)
        return float(np.mean((out == answer).all(axis=1)))


class CharVocab:
    """Characters ↔ token ids; a trained GPT's graph keeps it as ``meta["chars"]``."""

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise TGraphError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


class TextTask:
    """Character-level language modelling on a text file (``gpt``)."""

    model = "gpt"

    def __init__(self, path, seq_len: int = 64):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise TGraphError(f"cannot read text file {str(path)!r}: {e.strerror}") from None
        if len(text) < seq_len + 2:
            raise TGraphError(f"text file {str(path)!r} is shorter than one sequence "
                              f"({len(text)} characters, seq_len {seq_len})")
        self.vocab_chars = CharVocab("".join(sorted(set(text))))
        self.data = np.array(self.vocab_chars.encode(text), dtype=np.int64)
        self.seq_len = seq_len

    @property
    def vocab(self) -> int:
        return len(self.vocab_chars.chars)

    def model_overrides(self) -> dict:
        return {"vocab": self.vocab, "max_len": self.seq_len}

    def batch(self, rng, n: int) -> dict:
        starts = rng.integers(0, len(self.data) - self.seq_len - 1, n)
        window = self.data[starts[:, None] + np.arange(self.seq_len + 1)]
        return {"tokens": window[:, :-1], "targets": window[:, 1:]}

    def unigram_entropy(self) -> float:
        """Entropy of the character frequencies in nats: the loss of the best model that
        ignores context, which a language model must beat."""
        counts = np.array(list(Counter(self.data.tolist()).values()), dtype=np.float64)
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())


TASKS = (*SEQUENCE_TASKS, "text")


def make_task(name: str, data=None, seq_len: int | None = None):
    """seq_len: the context for text (default 64), the digits per sequence otherwise (8)."""
    if name == "text":
        if data is None:
            raise TGraphError("task text needs a text file (--data FILE)")
        return TextTask(data, seq_len or 64)
    return SequenceTask(name, seq_len or 8)
