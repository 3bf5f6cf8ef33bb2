"""Find the attention heads of a trained char-level GPT that do something recognisable,
by scoring every head's pattern on a text, and write the viewer page showing them.

    tgraph train gpt --task text --data examples/data/corpus.txt --preset tiny -o text.npz
    python examples/attention_heads.py text.json text.npz "some text" [out.html]

Scores per head (each a mean over query positions, 1.0 = all the weight):
  previous: weight on the token just before the query;
  same char: weight on earlier positions holding the query's own character;
  self: weight on the query's own position;
  word start: weight on the first two letters of the query's word (queries in a word).
"""

from __future__ import annotations

import sys

import numpy as np

import tgraph as tg
from tgraph.models import build_model
from tgraph.models.layout import to_layout
from tgraph.render.html import write_html
from tgraph.render.values import collect_values, value_feeds


def with_split_heads(graph: tg.Graph, params: dict) -> tuple[tg.Graph, dict]:
    """The same model with one scope per head (trained batched for speed: same numbers)."""
    config = graph.meta["config"]
    if config["heads"] == "split":
        return graph, params
    split = build_model(graph.meta["model"], **{**config, "heads": "split"})
    split.meta["text"] = graph.meta["text"]
    return split, to_layout(params, split)


def head_scores(weights: np.ndarray, text: str) -> dict[str, float]:
    t = len(text)
    chars = np.array(list(text))
    same = (chars[:, None] == chars[None, :]) & np.tril(np.ones((t, t), bool), -1)
    starts = [(i, text.rfind(" ", 0, i + 1) + 1) for i in range(t) if text[i] != " "]
    return {"previous": float(np.mean([weights[i, i - 1] for i in range(1, t)])),
            "same char": float((weights * same).sum(1)[same.any(1)].mean()),
            "self": float(np.mean(np.diag(weights))),
            "word start": float(np.mean([weights[i, s:min(s + 2, i + 1)].sum()
                                         for i, s in starts]))}


def main(graph_path: str, weights_path: str, text: str, out: str = "attention.html") -> None:
    graph = tg.load_graph(graph_path)
    graph, params = with_split_heads(graph, tg.load_weights(weights_path, graph))
    feeds, labels = value_feeds(graph, text)
    values = collect_values(graph, feeds, params, labels)
    rows = [(p.layer, p.head, head_scores(p.weights, text)) for p in values.patterns]
    print(f"{'layer':32} head  previous  same char  self  word start")
    for layer, head, s in rows:
        print(f"{layer:32} {head:4}  {s['previous']:8.2f}  {s['same char']:9.2f}  "
              f"{s['self']:4.2f}  {s['word start']:10.2f}")
    for kind in ("previous", "same char", "self", "word start"):
        layer, head, s = max(rows, key=lambda r: r[2][kind])
        print(f"most '{kind}': {layer} head {head} ({s[kind]:.2f})")
    values.source = f"text {text!r}; weights {weights_path}"
    write_html(graph, out, values=values, fold=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
