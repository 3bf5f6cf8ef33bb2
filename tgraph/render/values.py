"""Values on the graph: run it once on real input and keep, per node, statistics of its
output (shape, mean, std, min, max, a histogram) and, for every attention softmax, the
pattern of the first sequence in the batch with its token labels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tgraph.errors import FeedError, TGraphError
from tgraph.execute import Executable
from tgraph.feeds import feed_dims, random_feeds
from tgraph.ir import Graph, Node
from tgraph.render.hierarchy import split_scope
from tgraph.render.view import View

HIST_BINS = 16
MAX_TOKENS = 128  # longest sequence whose attention patterns are kept
TOKEN_INPUT = "tokens"
_HEAD = re.compile(r"head_(\d+)$")


@dataclass
class Pattern:
    """One head's attention for one input: rows are queries, columns keys; sum 1 per row."""

    node: str
    layer: str
    head: int
    weights: np.ndarray  # [T, S] float64
    queries: list[str]
    keys: list[str]


@dataclass
class Values:
    stats: dict[str, list[dict]] = field(default_factory=dict)  # node name -> per output
    patterns: list[Pattern] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    source: str = ""  # what was fed, for the page's header


def tensor_stats(a: np.ndarray) -> dict:
    """Shape, dtype, mean, std, min, max and a histogram, in float64; NaN and ±inf are
    counted apart so one bad value does not hide the rest."""
    a = np.asarray(a)
    x = a.astype(np.float64).ravel()
    finite = x[np.isfinite(x)]
    out = {"shape": list(a.shape), "dtype": str(a.dtype), "size": int(a.size),
           "nonfinite": int(x.size - finite.size)}
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        counts, _ = np.histogram(finite, HIST_BINS, (lo, hi if hi > lo else lo + 1))
        out.update(mean=float(finite.mean()), std=float(finite.std()), min=lo, max=hi,
                   hist=counts.tolist())
    return out


def is_attention(n: Node) -> bool:
    """A softmax in an attention scope over [..., T, S] scores."""
    return (n.op == "softmax" and len(n.outputs[0].shape) >= 3
            and any("attn" in part for part in split_scope(n.scope)))


def head_patterns(n: Node, probs: np.ndarray, tokens: list[str]) -> list[Pattern]:
    """Per-head [T, S] patterns of the first batch element: one head per split-head
    softmax (its scope names ``head_k``), or one per slice of a batched head axis."""
    parts = split_scope(n.scope)
    heads = [i for i, p in enumerate(parts) if _HEAD.match(p)]
    first = np.asarray(probs, dtype=np.float64)[(0,) * (probs.ndim - 2 - (not heads))]
    if heads:
        at = heads[-1]
        layer, stack = "/".join(parts[:at]), [(int(_HEAD.match(parts[at]).group(1)), first)]
    else:
        layer, stack = n.scope, list(enumerate(first))
    t, s = first.shape[-2:]
    return [Pattern(n.name, layer, h, w, _labels(tokens, t), _labels(tokens, s))
            for h, w in stack]


def _labels(tokens: list[str], n: int) -> list[str]:
    return tokens if len(tokens) == n else [str(i) for i in range(n)]


def collect_values(graph: Graph, feeds: dict, params: dict, tokens: list[str] | None = None,
                   backend: str = "numpy") -> Values:
    ex = Executable(graph, backend)
    values = Values(tokens=list(tokens or []))
    to_numpy = ex.backend.to_numpy

    def observe(n: Node, outs: list) -> None:
        arrays = [to_numpy(a) for a in outs]
        values.stats[n.name] = [tensor_stats(a) for a in arrays]
        if is_attention(n) and max(arrays[0].shape[-2:]) <= MAX_TOKENS:
            values.patterns.extend(head_patterns(n, arrays[0], values.tokens))

    ex.run(feeds, params, observe=observe)
    return values


def text_tokens(graph: Graph, text: str) -> tuple[np.ndarray, list[str]]:
    """Token ids and labels for ``text``: the codec a graph trained with ``--task text``
    keeps, else UTF-8 bytes when the graph has 256 token ids or more."""
    from tgraph.train.tasks import ByteVocab, CharVocab, codec_from_meta

    if not text:
        raise TGraphError("--text is empty: give at least one character")
    codec = codec_from_meta(graph.meta)
    if codec is None and graph.meta.get("int_ranges", {}).get(TOKEN_INPUT, 0) >= ByteVocab.size:
        codec = ByteVocab()
    if codec is None:
        raise TGraphError(f"graph {graph.name!r} has no text vocabulary (train it with "
                          "'tgraph train ... --task text') and fewer than 256 token ids, so "
                          "--text cannot be encoded; use --feed tokens=FILE.npy")
    ids = codec.encode(text)
    if isinstance(codec, CharVocab):
        labels = list(text)
    else:
        labels = [chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in ids]
    return np.asarray([ids], dtype=np.int64), labels


def value_feeds(graph: Graph, text: str | None = None, given: dict | None = None,
                random: bool = False, seed: int = 0,
                dims: dict | None = None) -> tuple[dict, list[str]]:
    """Feeds for a values run and the token labels: ``text`` fills the ``tokens`` input (and
    ``targets`` with the next characters), ``given`` arrays override, ``random`` fills the rest
    (batch 1, T at most 32 unless ``dims`` says)."""
    feeds = dict(given or {})
    labels: list[str] = []
    dims = dict(dims or {})
    if text is not None:
        if TOKEN_INPUT not in {v.name for v in graph.inputs}:
            raise FeedError(f"--text fills the input {TOKEN_INPUT!r}, which graph "
                            f"{graph.name!r} does not have; use --feed NAME=FILE.npy")
        ids, labels = text_tokens(graph, text)
        feeds.setdefault(TOKEN_INPUT, ids)
        if "targets" in {v.name for v in graph.inputs}:
            feeds.setdefault("targets", np.roll(ids, -1, axis=1))
        dims.setdefault("B", 1)
        dims.setdefault("T", ids.shape[1])
    elif TOKEN_INPUT in feeds and np.ndim(feeds[TOKEN_INPUT]) == 2:
        labels = [str(i) for i in np.asarray(feeds[TOKEN_INPUT])[0]]
    missing = [v.name for v in graph.inputs if v.name not in feeds]
    if missing and not (random or text is not None):
        raise FeedError(f"no value for input {missing[0]!r}: give --text, --feed "
                        f"{missing[0]}=FILE.npy or --random")
    if missing:
        env = feed_dims(graph, {"B": 1, **dims})
        env["T"] = min(env.get("T", 32), 32) if "T" not in dims else dims["T"]
        made = random_feeds(graph, env, seed)
        feeds.update({k: made[k] for k in missing})
        if TOKEN_INPUT in missing and made[TOKEN_INPUT].ndim == 2:
            labels = [str(i) for i in made[TOKEN_INPUT][0]]
    return feeds, labels


def attach_patterns(graph: Graph, view: View, patterns: list[Pattern] | None,
                    limit: int = 32) -> View:
    """Put each pattern into the box that draws its softmax: the op itself, or the collapsed
    block holding it when that block holds just one pattern (a head). At most ``limit``
    tokens a side are drawn."""
    if not patterns:
        return view
    nodes = {n.name: n for n in graph.nodes}
    by_box: dict[str, list[Pattern]] = {}
    for p in patterns:
        n = nodes.get(p.node)
        box = n is not None and (view.ids.get(("op", id(n))) or _block_of(view, n))
        if box:
            by_box.setdefault(box, []).append(p)
    for box, found in by_box.items():
        if len(found) == 1:
            view.items[box].heatmap = found[0].weights[:limit, :limit].tolist()
    return view


def _block_of(view: View, n: Node) -> str | None:
    parts = split_scope(n.scope)
    for i in range(len(parts), 0, -1):
        if ("block", parts[:i]) in view.ids:
            return view.ids[("block", parts[:i])]
    return None
