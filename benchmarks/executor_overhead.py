"""Per-node overhead of the executor: a 1,000-node chain of small elementwise ops.

Prints µs/node for tgraph and for PyTorch eager running the same chain, and their ratio.
Small tensors (8 elements) so the time is dispatch, not arithmetic.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from timing import best_of  # benchmarks/timing.py, beside this script

import tgraph as tg
from tgraph import builder as tb

N_NODES, SIZE, REPEATS = 1000, 8, 20
OPS = ("add", "mul", "tanh", "sub")


def chain_graph() -> tg.Graph:
    g = tg.Graph("chain")
    x = g.input("x", (SIZE,), "float32")
    y = g.input("y", (SIZE,), "float32")
    h = x
    for i in range(N_NODES):
        op = OPS[i % len(OPS)]
        h = tb.tanh(h) if op == "tanh" else tb.apply(op, h, y)
    g.set_output("h", h)
    return g


def torch_chain(x, y):
    h = x
    for i in range(N_NODES):
        op = OPS[i % len(OPS)]
        h = torch.tanh(h) if op == "tanh" else getattr(torch, op)(h, y)
    return h


def main() -> None:
    g = chain_graph()
    t0 = time.perf_counter()
    ex = tg.Executable(g)
    compile_s = time.perf_counter() - t0
    x = np.linspace(-1, 1, SIZE, dtype=np.float32)
    y = np.full(SIZE, 0.5, dtype=np.float32)
    ours = best_of(lambda: ex.run({"x": x, "y": y}), REPEATS)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        peer = best_of(lambda: torch_chain(tx, ty), REPEATS)
    np.testing.assert_allclose(ex.run({"x": x, "y": y})["h"], torch_chain(tx, ty).numpy(),
                               rtol=1e-5)
    print(f"compile: {compile_s * 1e3:.1f} ms for {len(g.nodes)} nodes")
    print(f"tgraph numpy: {ours / N_NODES * 1e6:.2f} µs/node")
    print(f"torch eager:  {peer / N_NODES * 1e6:.2f} µs/node")
    print(f"ratio tgraph/torch: {ours / peer:.2f}")


if __name__ == "__main__":
    main()
