"""The training loop: compile forward+backward once, then step, clip, update, report.

    trainer = Trainer(build_model("gpt", loss=True, vocab=65), params, AdamW(3e-3))
    losses = trainer.fit(lambda step: task.batch(rng, 16), steps=500, checkpoint="w.npz")
"""

from __future__ import annotations

import numpy as np

from tgraph.io import save_weights
from tgraph.ir import Graph
from tgraph.passes import training_graph
from tgraph.runtime import executable
from tgraph.train.optim import clip_grad_norm


class Trainer:
    """Owns a copy of the weights (on the backend's device) and the optimizer state; the
    forward+backward graph is compiled at optimisation ``level`` (0: as differentiated)."""

    def __init__(self, graph: Graph, params: dict, optimizer, backend="numpy",
                 clip: float = 1.0, loss: str = "loss", level: int = 0):
        self.graph = training_graph(graph, loss, level)
        self.loss = loss
        self.executable = executable(self.graph, backend)
        be = self.executable.backend
        self.params = {k: be.asarray(np.array(a, copy=True)) for k, a in params.items()}
        self.wrt: dict[str, str] = self.graph.meta["grad"]["wrt"]
        self.optimizer, self.clip = optimizer, clip
        self.step_count = 0

    def step(self, feeds: dict) -> float:
        """One forward+backward pass and update; returns the loss before the update."""
        out = self.executable.run_device(feeds, self.params)
        grads = {p: out[o] for p, o in self.wrt.items()}
        if self.clip:
            clip_grad_norm(grads, self.clip)
        self.optimizer.step(self.params, grads)
        self.step_count += 1
        return float(out[self.loss])

    def fit(self, batches, steps: int, schedule=None, checkpoint=None, every: int = 0,
            label: str = "train") -> list[float]:
        """Run ``steps`` steps on ``batches(step) -> feeds``; ``schedule(step) -> lr``;
        saves the weights to ``checkpoint`` every ``every`` steps and at the end. Shows a
        progress bar (loss, steps/s) on a terminal and nothing otherwise."""
        from tgraph.progress import Progress

        losses = []
        with Progress(steps, label) as bar:
            for i in range(steps):
                if schedule is not None:
                    self.optimizer.lr = schedule(i)
                losses.append(self.step(batches(i)))
                bar.update(loss=float(np.mean(losses[-20:])))
                if checkpoint and every and (i + 1) % every == 0:
                    self.save(checkpoint)
        if checkpoint:
            self.save(checkpoint)
        return losses

    def host_params(self) -> dict[str, np.ndarray]:
        to_numpy = self.executable.backend.to_numpy
        return {k: to_numpy(a) for k, a in self.params.items()}

    def save(self, path) -> None:
        """Weights to .npz, written atomically: a crash never leaves half a checkpoint."""
        save_weights(self.host_params(), path)
