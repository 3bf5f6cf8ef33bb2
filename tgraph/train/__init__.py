"""Training: optimizers, the loop, toy tasks and a text corpus task, sampling."""

from tgraph.train.loop import Trainer
from tgraph.train.optim import OPTIMIZERS, SGD, AdamW, clip_grad_norm, warmup_cosine

__all__ = ["OPTIMIZERS", "SGD", "AdamW", "Trainer", "clip_grad_norm", "warmup_cosine"]
