"""The ``onnxruntime`` backend: the whole graph runs in one ONNX Runtime session.

Parameters are graph inputs of the session (not initializers), so a trainer feeds new
weights every step and one session serves forward and forward+backward graphs alike.
Feeds and weights get the executor's checks (names, dtypes, dims) before ORT sees them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tgraph.errors import BackendError, FeedError
from tgraph.ir import Graph


def providers() -> list[str]:
    """CUDA where ONNX Runtime has it (onnxruntime-gpu on a GPU machine), else CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OrtExecutable:
    """Same interface as ``tgraph.execute.Executable``: ``run(feeds, params, dims)``."""

    def __init__(self, graph: Graph, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the onnxruntime backend needs ONNX Runtime: "
                               "pip install 'tgraph[onnx]'") from None
        from tgraph.backends import get_backend
        from tgraph.interop.onnx_export import to_onnx_model

        self.graph = graph.validate()
        self.backend = get_backend("numpy")  # arrays stay NumPy on the host side
        model = to_onnx_model(graph, params_as_inputs=True, value_infos=False)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=providers())
        except Exception as e:  # ORT raises its own classes; one line names the graph
            raise BackendError(f"ONNX Runtime cannot load graph {graph.name!r}: "
                               f"{str(e).splitlines()[0]}") from None
        self.output_names = list(graph.outputs)

    def run(self, feeds: Mapping | None = None, params: Mapping | None = None,
            dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        from tgraph.execute import bind_dims, check_feeds, check_int_ranges, conform
        from tgraph.io import check_weights

        feeds, params, g = dict(feeds or {}), dict(params or {}), self.graph
        check_feeds(g, feeds)
        check_weights(g, params)
        arrays = {v.name: np.asarray(conform(feeds[v.name], v, "feed"), order="C")
                  for v in g.inputs}
        bind_dims(g, arrays, dims)
        check_int_ranges(g, arrays)
        arrays.update({v.name: np.asarray(conform(params[v.name], v, "parameter"), order="C")
                       for v in g.params})
        try:
            out = self.session.run(self.output_names, arrays)
        except Exception as e:  # a token id past the table, say: data the types allow
            raise FeedError(f"ONNX Runtime failed on graph {g.name!r}: "
                            f"{str(e).splitlines()[0]}") from None
        return dict(zip(self.output_names, out))

    run_device = run
