"""Interop with foreign formats: ONNX export and import (``onnx``/``onnxruntime``, the
``[onnx]`` extra), and the ONNX Runtime backend (``--backend onnxruntime``)."""

from tgraph.interop.onnx_export import DEFAULT_OPSET, ExportError, export_onnx, to_onnx_model
from tgraph.interop.onnx_import import IMPORTERS, from_model, import_onnx
from tgraph.interop.onnx_read import Limits

__all__ = ["DEFAULT_OPSET", "IMPORTERS", "ExportError", "Limits", "export_onnx", "from_model",
           "import_onnx", "to_onnx_model"]
