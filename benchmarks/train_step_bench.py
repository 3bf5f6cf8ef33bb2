"""Forward+backward step time of GPT config M on the NumPy backend vs PyTorch eager CPU,
in the same process, and the peak memory (max RSS) of each in its own process.

Config M: layers 4, d_model 256, heads 8, d_ff 1024, seq 128, batch 8, vocab 1024.
    python benchmarks/train_step_bench.py            # times and ratio, then RSS of each
    python benchmarks/train_step_bench.py --only tgraph|torch   (one side; prints RSS)
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/train_step_bench.py
        (both sides on one core: steadier when other jobs share the machine)
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import numpy as np
from timing import best_of  # benchmarks/timing.py, beside this script

import tgraph as tg
from tgraph.autodiff import grad
from tgraph.models import build_model
from tgraph.passes import optimize

M = dict(n_layers=4, d_model=256, n_heads=8, d_ff=1024, vocab=1024, max_len=128)
BATCH, SEQ, STEPS = 8, 128, 5


def batch():
    r = np.random.default_rng(0)
    return {"tokens": r.integers(0, M["vocab"], (BATCH, SEQ)),
            "targets": r.integers(0, M["vocab"], (BATCH, SEQ))}


def tgraph_step(heads: str, compiled: bool = False):
    """One forward+backward step; ``compiled``: the graph goes through optimize() (heads
    merged into one batched path, CSE) before it is differentiated."""
    g = build_model("gpt", loss=True, heads=heads, norm="pre", pos="learned", **M)
    g = grad(optimize(g)[0] if compiled else g, "loss")
    ex, params, feeds = tg.Executable(g), tg.init_params(g, 0), batch()
    return lambda: ex.run(feeds, params)


def torch_step():
    """The same GPT (pre-LN, learned positions, exact GELU, tied embeddings) in torch.nn;
    torch is imported here so the tgraph side's memory figure does not include it."""
    import torch
    import torch.nn as nn

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            d = M["d_model"]
            self.tokens = nn.Embedding(M["vocab"], d)
            self.positions = nn.Parameter(torch.zeros(M["max_len"], d))
            layer = nn.TransformerEncoderLayer(d, M["n_heads"], M["d_ff"], dropout=0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            self.layers = nn.TransformerEncoder(layer, M["n_layers"],
                                                enable_nested_tensor=False)
            self.ln_f = nn.LayerNorm(d)

        def forward(self, tokens, targets):
            t = tokens.shape[1]
            causal = nn.Transformer.generate_square_subsequent_mask(t)
            x = self.tokens(tokens) + self.positions[:t]
            x = self.ln_f(self.layers(x, mask=causal, is_causal=True))
            logits = x @ self.tokens.weight.T
            return nn.functional.cross_entropy(logits.reshape(-1, M["vocab"]),
                                               targets.reshape(-1))

    model = TorchGPT().train()
    feeds = {k: torch.from_numpy(a) for k, a in batch().items()}

    def step():
        model.zero_grad(set_to_none=True)
        model(**feeds).backward()

    return step


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def only(side: str) -> None:
    step = torch_step() if side == "torch" else tgraph_step("batched")
    for _ in range(3):
        step()
    print(f"{peak_rss_mib():.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["tgraph", "torch"])
    args = parser.parse_args()
    if args.only:
        return only(args.only)
    # first, while this process is small: Linux keeps a parent's max RSS across fork+exec
    rss = {side: float(subprocess.run([sys.executable, __file__, "--only", side],
                                      capture_output=True, text=True, check=True).stdout)
           for side in ("tgraph", "torch")}
    import torch

    peer = best_of(torch_step(), STEPS)
    print(f"numpy {np.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads; best of {STEPS} steps")
    print(f"torch eager CPU:            {peer * 1e3:8.1f} ms/step")
    for heads, compiled in (("batched", False), ("split", False), ("split", True)):
        ours = best_of(tgraph_step(heads, compiled), STEPS)
        label = f"heads={heads}" + (" +optimize" if compiled else "")
        print(f"tgraph numpy {label:<22} {ours * 1e3:8.1f} ms/step   "
              f"ratio {ours / peer:.2f} (target ≤ 1.5)")
    print(f"peak RSS (own process, heads batched, 3 steps): tgraph {rss['tgraph']:.0f} MiB, "
          f"torch {rss['torch']:.0f} MiB, ratio {rss['tgraph'] / rss['torch']:.2f}")


if __name__ == "__main__":
    main()
