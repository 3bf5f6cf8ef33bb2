"""What to train on: toy sequence tasks for the encoder–decoder and a text corpus for GPT.

A task knows its vocabulary, the model overrides that fit it, the inputs it feeds, and
makes batches of feeds named like the model's inputs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tgraph.errors import TGraphError
from tgraph.sanitize import clip

SEQUENCE_TASKS = {"reverse": lambda x: x[:, ::-1], "copy": lambda x: x,
                  "sort": lambda x: np.sort(x, axis=1)}


class SequenceTask:
    """Map a digit sequence to its reverse, a copy or its sorted form (``transformer``).

    Tokens 0–9 are digits and 10 is BOS; the decoder reads BOS + answer[:-1] and is
    trained to emit the answer (teacher forcing); evaluation decodes greedily.
    """

    model = "transformer"
    feeds = {"src_tokens": "int64", "tgt_tokens": "int64", "targets": "int64"}

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

    def batch(self, rng, n: int, inputs=tuple(feeds)) -> dict:
        """Feeds for the graph inputs named ``inputs``."""
        src, answer = self.sample(rng, n)
        out = {"src_tokens": src, "tgt_tokens": self.teacher_forced(answer), "targets": answer}
        return {k: out[k] for k in inputs}

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
    """Characters ↔ token ids (the text's characters, sorted)."""

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @property
    def size(self) -> int:
        return len(self.chars)

    def to_meta(self) -> dict:
        return {"codec": "chars", "chars": self.chars}

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise TGraphError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


class ByteVocab:
    """UTF-8 bytes as token ids 0–255: any text fits a graph with 256 ids or more."""

    size = 256

    def to_meta(self) -> dict:
        return {"codec": "bytes"}

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def codec_from_meta(meta: dict):
    """The text codec a trained graph keeps in ``meta["text"]``, or None."""
    text = meta.get("text") or {}
    if text.get("codec") == "chars":
        return CharVocab(text["chars"])
    return ByteVocab() if text.get("codec") == "bytes" else None


def text_codec(text: str, limit: int | None, source: str = "text"):
    """Ids for the text within ``limit`` ids: its characters when they fit (all of them when
    limit is None), else its UTF-8 bytes when 256 ids fit."""
    chars = CharVocab("".join(sorted(set(text))))
    if limit is None or chars.size <= limit:
        return chars
    if limit >= ByteVocab.size:
        return ByteVocab()
    raise TGraphError(f"{source} needs {chars.size} token ids (its distinct characters) but "
                      f"the graph has {limit}: build it with vocab >= {chars.size} (or >= 256 "
                      "for bytes)")


class TextTask:
    """Next-character prediction on a text file (``gpt``; any graph reading tokens).

    ``vocab``: the ids the graph has (None: one per distinct character of the text). A
    graph with an ``attention_mask`` input gets all-true masks (no padding)."""

    model = "gpt"
    feeds = {"tokens": "int64", "targets": "int64", "attention_mask": "bool"}

    def __init__(self, path, seq_len: int = 64, vocab: int | None = None):
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as e:
            raise TGraphError(f"cannot read text file {clip(str(path))}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise TGraphError(f"{clip(str(path))} is not UTF-8 text (byte {e.start}); "
                              "--task text trains on a text file") from None
        self.codec = text_codec(text, vocab, f"text file {clip(str(path))}")
        self.data = np.array(self.codec.encode(text), dtype=np.int64)
        if len(self.data) < seq_len + 2:
            raise TGraphError(f"text file {clip(str(path))} is shorter than one sequence "
                              f"({len(self.data)} tokens, seq_len {seq_len})")
        self.seq_len = seq_len

    @property
    def vocab(self) -> int:
        return self.codec.size

    def model_overrides(self) -> dict:
        return {"vocab": self.vocab, "max_len": self.seq_len}

    def batch(self, rng, n: int, inputs=("tokens", "targets")) -> dict:
        """Feeds for the graph inputs named ``inputs`` (an attention_mask is all true)."""
        starts = rng.integers(0, len(self.data) - self.seq_len - 1, n)
        window = self.data[starts[:, None] + np.arange(self.seq_len + 1)]
        out = {"tokens": window[:, :-1], "targets": window[:, 1:]}
        if "attention_mask" in inputs:
            out["attention_mask"] = np.ones((n, self.seq_len), bool)
        return {k: out[k] for k in inputs}

    def unigram_entropy(self) -> float:
        """Entropy of the character frequencies in nats: the loss of the best model that
        ignores context, which a language model must beat."""
        counts = np.array(list(Counter(self.data.tolist()).values()), dtype=np.float64)
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())


TASKS = (*SEQUENCE_TASKS, "text")


def make_task(name: str, data=None, seq_len: int | None = None, vocab: int | None = None):
    """seq_len: the context for text (default 64), the digits per sequence otherwise (8);
    vocab: the token ids of the graph to train (text picks its codec to fit)."""
    if name == "text":
        if data is None:
            raise TGraphError("task text needs a text file (--data FILE)")
        return TextTask(data, seq_len or 64, vocab)
    return SequenceTask(name, seq_len or 8)
