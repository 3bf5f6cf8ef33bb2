"""Cold kernels compiled on two cores: a helper process takes a share of them.

Numba compiles one function at a time under the GIL, so building the Executable of
gpt2-small's -O2 forward+backward with an empty kernel cache takes ~3.9 s on one core (10
fused loops, 0.1-0.4 s each, and the row kernels: attention's 1.0 s). Two compiles at once
each run slower (attention's 1.9 s beside the helper's), so two cores give ~1.3x, not 2x.
The kernels are shared out by rough compile times (COST), longest first, each to the
process that would finish sooner, nodes that compile one loop (``_compiles``) together.
When at least ``MIN_COLD`` fused loops are missing from the cache, the helper's share is
sent to a fresh ``python -m tgraph.codegen.ahead``, which compiles it into the same disk
cache while this process compiles the rest; this process then only loads the helper's
share. The helper gets node types and attrs as JSON on its stdin (what this process
already checked), and nothing depends on it: a kernel it did not write is compiled here
as usual.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: fewer cold fused loops than this: not worth a process start (~0.6 s of imports)
MIN_COLD = 4
#: seconds this process waits for the helper before compiling its share itself
TIMEOUT_S = 300
#: rough seconds of a cold compile by op (gpt2-small, one process: attention 1.6-2.2 with
#: the masked softmax rows it imports, its gradient 0.7-1.3, a row kernel 0.2-0.5, a fused
#: loop 0.15-0.3; matmul, concat and the like compile nothing of their own)
COST = {"attention": 1.6, "attention_grad": 1.0, "fused": 0.25, "layernorm": 0.35,
        "layernorm_grad": 0.35, "cross_entropy": 0.35, "cross_entropy_grad": 0.35,
        "softmax": 0.35, "softmax_grad": 0.35, "masked_softmax": 0.35, "mask": 0.35}
#: seconds the helper starts behind this process (its imports)
HELPER_START_S = 0.6


def compile_ahead(backend, nodes) -> None:
    """Compile (into the memo and the disk cache) the kernels ``backend.prepare`` would,
    split over this process and a helper, when enough of them are cold."""
    from tgraph.codegen.numba_cpu import is_cached
    from tgraph.ops.registry import get_op
    from tgraph.parallel import cores

    groups: dict[object, list] = {}  # what one compile builds -> distinct nodes needing it
    specs, cold = set(), 0
    for n in nodes:
        if n.op != "fused" and n.op not in backend.kernels:
            continue
        spec = json.dumps(_spec(n), sort_keys=True)
        symbolic = any(isinstance(d, str) for k in get_op(n.op).shape_attrs
                       for d in (n.attrs.get(k) or ()))
        if spec in specs or symbolic:  # symbolic shape attrs: compiled on the first run
            continue
        specs.add(spec)
        key = _compiles(n)
        if key not in groups:
            cold += n.op == "fused" and not is_cached(key)
        groups.setdefault(key, []).append(n)
    if cold < MIN_COLD or cores() < 2:
        return
    mine, theirs = _shares(list(groups.values()))
    try:
        helper = subprocess.Popen([sys.executable, "-m", "tgraph.codegen.ahead"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        helper.stdin.write(json.dumps([_spec(n) for n in theirs]).encode())
        helper.stdin.close()
    except OSError:
        return  # no helper: prepare compiles everything, one by one
    try:
        for n in mine:
            backend.prepare(n)
        helper.wait(timeout=TIMEOUT_S)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()


def _compiles(node) -> object:
    """What compiling ``node``'s kernel builds: a fused loop's canonical form (its cache
    key); for any other op its op and its first input's dtype alone, since a row kernel's
    attrs (and LayerNorm's gradient's optional residual) are parameters of one loop. Nodes
    alike here go to one process, which compiles once what two would have compiled twice
    (gpt2-small's three variants of LayerNorm's gradient: one 0.5 s loop)."""
    from tgraph.codegen.numba_cpu import FusedKernel

    if node.op == "fused":
        return FusedKernel(node).key()
    return node.op, node.inputs[0].dtype if node.inputs else None


def _shares(groups: list[list]) -> tuple[list, list]:
    """(this process's kernels, the helper's) from groups of nodes that compile one kernel:
    the longest first, each group to the process that would finish its share sooner (the
    helper starting HELPER_START_S behind)."""
    loads, shares = [0.0, HELPER_START_S], ([], [])
    for group in sorted(groups, key=lambda g: -COST.get(g[0].op, 0.0)):
        side = 0 if loads[0] <= loads[1] else 1
        loads[side] += COST.get(group[0].op, 0.0)
        shares[side].extend(group)
    return shares


def _spec(n) -> dict:
    return {"op": n.op, "attrs": n.attrs,
            "inputs": [[list(v.shape), v.dtype] for v in n.inputs]}


def main() -> None:
    """The helper: rebuild each node from its spec and compile its kernel."""
    import tgraph as tg
    from tgraph.backends import get_backend

    backend = get_backend("numpy")
    for spec in json.loads(sys.stdin.read()):
        g = tg.Graph("ahead")
        ins = [g.input(f"x{i}", tuple(shape), dtype)
               for i, (shape, dtype) in enumerate(spec["inputs"])]
        out = g.apply(spec["op"], ins, spec["attrs"])
        node = (out[0] if isinstance(out, tuple) else out).node
        backend.prepare(node)


if __name__ == "__main__":
    main()
