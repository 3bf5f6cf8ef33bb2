"""Train a character-level GPT on examples/data/corpus.txt, compare its loss with the
corpus's unigram entropy (the best a model blind to context can do), then sample.

    python examples/train_text.py [STEPS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tgraph as tg
from tgraph.models import build_model
from tgraph.train import AdamW, Trainer, warmup_cosine
from tgraph.train.sample import generate
from tgraph.train.tasks import TextTask

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


def main(steps: int = 400) -> None:
    task = TextTask(CORPUS, seq_len=64)
    config = dict(preset="tiny", heads="batched", **task.model_overrides())
    graph = build_model("gpt", loss=True, **config)
    trainer = Trainer(graph, tg.init_params(graph, 0), AdamW(3e-3, weight_decay=0.01))
    rng = np.random.default_rng(0)
    losses = trainer.fit(lambda step: task.batch(rng, 32), steps,
                         warmup_cosine(3e-3, steps, warmup=40), checkpoint="text.npz")
    print(f"loss {np.mean(losses[-20:]):.3f} nats/char vs unigram entropy "
          f"{task.unigram_entropy():.3f}")
    forward = tg.Executable(build_model("gpt", **config))
    ids = generate(forward, trainer.host_params(), task.codec.encode("The "), 200,
                   task.seq_len, temperature=0.7, rng=np.random.default_rng(1))
    print(task.codec.decode(ids))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
