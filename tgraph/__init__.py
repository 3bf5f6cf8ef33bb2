"""tgraph: Transformers as explicit computation graphs you can render, run, differentiate
and compile.

    import tgraph as tg
    from tgraph import builder as tb
"""

from tgraph import ops  # noqa: F401  (registers the built-in ops)
from tgraph.errors import TGraphError
from tgraph.execute import Executable, run
from tgraph.io import load_graph, load_weights, save_graph, save_weights
from tgraph.ir import Graph, Node, Value
from tgraph.params import init_params
from tgraph.types import TensorType

__version__ = "0.1.0"

__all__ = ["Executable", "Graph", "Node", "TensorType", "TGraphError", "Value", "init_params",
           "load_graph", "load_weights", "run", "save_graph", "save_weights"]
