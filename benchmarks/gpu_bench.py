"""GPU timing: tgraph on the CuPy backend vs PyTorch CUDA eager, in one process.

For GPT config M (4 layers, d_model 256, 8 heads, d_ff 1024, vocab 1024; batch 8, seq 128)
and the gpt2-small preset (batch 8, seq 512): forward (loss) and forward+backward (loss and
every parameter's gradient). Prints milliseconds per step (median of REPEATS after warm-up),
the ratio tgraph/torch, and peak device memory (CuPy's pool and PyTorch's caching allocator,
both as reserved bytes, weights included). Float32 without TF32 on both sides.

    python benchmarks/gpu_bench.py [M] [gpt2-small]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

CONFIGS = {
    "M": ({"n_layers": 4, "d_model": 256, "n_heads": 8, "d_ff": 1024, "vocab": 1024,
           "max_len": 128}, 8, 128),
    "gpt2-small": ({"n_layers": 12, "d_model": 768, "n_heads": 12, "d_ff": 3072,
                    "vocab": 50257, "max_len": 1024}, 8, 512),
}
WARMUP, REPEATS = 3, 10


def timed(fn, sync) -> float:
    """Median seconds of fn() over REPEATS, after WARMUP calls (kernel compiles, pools)."""
    for _ in range(WARMUP):
        fn()
    sync()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tgraph_side(be, config, batch, seq):
    """{"fwd"/"fwd+bwd": (seconds, peak bytes)} and the forward loss, on the CuPy backend."""
    from torch_gpt import GRAPH_OPTIONS

    import tgraph as tg
    from tgraph.autodiff import grad
    from tgraph.models import build_model

    g = build_model("gpt", loss=True, **config, **GRAPH_OPTIONS)
    graphs = {"fwd": g, "fwd+bwd": grad(g, "loss")}
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config["vocab"], (batch, seq + 1))
    given = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:]}
    feeds = {v.name: be.asarray(given[v.name].astype(v.dtype)) for v in g.inputs}
    params = {k: be.asarray(a) for k, a in tg.init_params(g, 0).items()}  # on device once
    out, loss = {}, None
    for kind, graph in graphs.items():
        ex = tg.Executable(graph, be)
        be.reset_peak_memory()
        res = ex.run_device(feeds, params)
        peak = be.peak_memory_bytes()
        loss = float(res["loss"]) if kind == "fwd" else loss
        del res
        out[kind] = (timed(lambda ex=ex: ex.run_device(feeds, params), be.synchronize), peak)
    return out, loss


def torch_side(config, batch, seq):
    import torch
    from torch_gpt import GPT

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = GPT(**config).cuda()
    tokens = torch.randint(0, config["vocab"], (batch, seq + 1), device="cuda")
    x, y = tokens[:, :-1], tokens[:, 1:]

    def fwd():
        with torch.no_grad():
            return model(x, y)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x, y).backward()

    out = {}
    for kind, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fn()
        peak = torch.cuda.max_memory_reserved()
        out[kind] = (timed(fn, torch.cuda.synchronize), peak)
    return out, float(fwd())


def main(names) -> int:
    from tgraph.backends import get_backend
    from tgraph.errors import BackendError

    try:
        be = get_backend("cupy")
    except BackendError as e:
        print(f"error: no GPU benchmark on this machine: {e}", file=sys.stderr)
        return 1
    import torch

    if not torch.cuda.is_available():
        print("error: PyTorch here has no CUDA device to compare with", file=sys.stderr)
        return 1
    print(f"device: {torch.cuda.get_device_name()}, cupy {be.xp.__version__}, "
          f"torch {torch.__version__}; float32, no TF32; median of {REPEATS}")
    for name in names:
        config, batch, seq = CONFIGS[name]
        ours, our_loss = tgraph_side(be, config, batch, seq)
        peer, peer_loss = torch_side(config, batch, seq)
        # same init scheme, different random draws: both losses sit near ln(vocab)
        print(f"\nGPT {name} (batch {batch}, seq {seq}): loss tgraph {our_loss:.3f}, "
              f"torch {peer_loss:.3f}, ln(vocab) {np.log(config['vocab']):.3f}")
        for kind in ("fwd", "fwd+bwd"):
            (t, m), (pt, pm) = ours[kind], peer[kind]
            print(f"  {kind:8} tgraph {t * 1e3:8.2f} ms  torch {pt * 1e3:8.2f} ms  "
                  f"ratio {t / pt:5.2f}   peak memory tgraph {m / 2**20:7.0f} MiB  "
                  f"torch {pm / 2**20:7.0f} MiB  ratio {m / pm:4.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(CONFIGS)))
