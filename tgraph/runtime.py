"""The one place backend names map to implementations.

``numpy``, ``cupy`` and ``auto`` run the graph kernel by kernel in tgraph's executor (and
train with its own ``grad``); ``onnxruntime`` (or ``ort``) exports the whole graph to ONNX
and runs it in one ONNX Runtime session; ``jax`` hands the whole graph to XLA
(``tgraph.lower``) and trains data-parallel over a device mesh. Commands call
``executable`` and ``trainer``.
"""

from __future__ import annotations

from tgraph.errors import TGraphError
from tgraph.ir import Graph

BACKENDS = ("numpy", "cupy", "auto", "onnxruntime", "ort", "jax")


def executable(graph: Graph, backend: str = "numpy"):
    """An object with ``run(feeds, params, dims) -> {name: np.ndarray}`` for the backend."""
    if backend in ("onnxruntime", "ort"):
        from tgraph.interop.ort import OrtExecutable

        return OrtExecutable(graph)
    if backend == "jax":
        from tgraph.lower.jax import JaxExecutable, enable_x64_for

        enable_x64_for(graph)
        return JaxExecutable(graph)
    from tgraph.execute import Executable

    return Executable(graph, backend)


def trainer(graph: Graph, params: dict, optimizer, backend: str = "numpy", clip: float = 1.0,
            devices: int | None = None, level: int = 0):
    """A trainer for the backend; ``devices`` (jax only) sizes the data-parallel mesh,
    ``level`` the optimisation of tgraph's own forward+backward graph."""
    if backend == "jax":
        from tgraph.lower.jax import enable_x64_for
        from tgraph.train.data_parallel import DataParallelTrainer

        enable_x64_for(graph)
        return DataParallelTrainer(graph, params, optimizer, clip, devices=devices)
    if devices not in (None, 1):
        raise TGraphError(f"--devices {devices} needs --backend jax: the {backend} backend "
                          "trains on one device")
    from tgraph.train.loop import Trainer

    return Trainer(graph, params, optimizer, backend, clip, level=level)
