"""GPT config M on tgraph's NumPy executor vs the same graph in ONNX Runtime (CPU provider)
vs PyTorch eager, in one process: forward (inference) and forward+backward (a training
step's gradients). Prints seconds and each time as a ratio of NumPy's.

Config M: layers 4, d_model 256, heads 8, d_ff 1024, seq 128, batch 8, vocab 1024.
    python benchmarks/ort_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of  # benchmarks/timing.py, beside this script

import tgraph as tg
from tgraph.autodiff import grad
from tgraph.interop.ort import OrtExecutable
from tgraph.models import build_model

M = dict(n_layers=4, d_model=256, n_heads=8, d_ff=1024, vocab=1024, max_len=128)
BATCH, SEQ = 8, 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import onnxruntime
    import torch
    from torch_gpt import GPT, GRAPH_OPTIONS

    r = np.random.default_rng(0)
    feeds = {"tokens": r.integers(0, M["vocab"], (BATCH, SEQ)),
             "targets": r.integers(0, M["vocab"], (BATCH, SEQ))}
    g = build_model("gpt", loss=True, **GRAPH_OPTIONS, **M)
    params = tg.init_params(g, 0)
    fb = grad(g, "loss")
    model = GPT(**M)
    tt = {k: torch.from_numpy(v) for k, v in feeds.items()}
    print(f"GPT M, batch {BATCH} x {SEQ}; onnxruntime {onnxruntime.__version__}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    for label, graph in (("forward", g), ("forward+backward", fb)):
        numpy_ex, ort_ex = tg.Executable(graph), OrtExecutable(graph)
        got, ref = ort_ex.run(feeds, params), numpy_ex.run(feeds, params)
        assert np.allclose(got["loss"], ref["loss"], rtol=1e-4)
        if label == "forward":
            def peer():
                with torch.no_grad():
                    model(**tt)
        else:
            def peer():
                model.zero_grad(set_to_none=True)
                model(**tt).backward()
        times = {"tgraph NumPy": best_of(lambda: numpy_ex.run(feeds, params), args.repeats),
                 "tgraph on ONNX Runtime": best_of(lambda: ort_ex.run(feeds, params),
                                                   args.repeats),
                 "PyTorch eager": best_of(peer, args.repeats)}
        base = times["tgraph NumPy"]
        for name, t in times.items():
            print(f"{label:17s} {name:24s} {t * 1e3:8.1f} ms   {t / base:5.2f}x NumPy's")


if __name__ == "__main__":
    main()
