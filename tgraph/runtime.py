"""The one place backend names map to implementations.

``numpy``, ``cupy`` and ``auto`` run the graph kernel by kernel in tgraph's executor;
``onnxruntime`` (or ``ort``) exports the whole graph to ONNX and runs it in one ONNX Runtime
session. Commands and the trainer call ``executable``.
"""

from __future__ import annotations

from tgraph.ir import Graph

BACKENDS = ("numpy", "cupy", "auto", "onnxruntime", "ort")


def executable(graph: Graph, backend: str = "numpy"):
    """An object with ``run(feeds, params, dims) -> {name: np.ndarray}`` for the backend."""
    if backend in ("onnxruntime", "ort"):
        from tgraph.interop.ort import OrtExecutable

        return OrtExecutable(graph)
    from tgraph.execute import Executable

    return Executable(graph, backend)
