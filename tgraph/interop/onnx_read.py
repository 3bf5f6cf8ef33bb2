"""Reading an ONNX file safely: size limits, and external data only from beside the model.

Nothing in the file is executed (protobuf is data); tensors are bounded before they are
materialised; an external-data location must be a plain relative path inside the model's
folder, so a hostile file cannot read ``../../etc/passwd`` or a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tgraph.errors import GraphFileError


@dataclass(frozen=True)
class Limits:
    """What an import accepts; raise them for very large models."""

    file_bytes: int = 8 << 30
    tensor_bytes: int = 4 << 30
    total_bytes: int = 16 << 30
    nodes: int = 500_000


def load_model(path, limits: Limits = Limits()):
    """The ModelProto at ``path`` with every external tensor read in (checked), or a
    GraphFileError naming what is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    size = path.stat().st_size
    if size > limits.file_bytes:
        raise GraphFileError(f"{path}: {size} bytes is past the import limit of "
                             f"{limits.file_bytes} bytes")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise GraphFileError(f"{path}: not an ONNX model ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    nodes = len(model.graph.node)
    if nodes > limits.nodes:
        raise GraphFileError(f"{path}: {nodes} nodes is past the import limit of {limits.nodes}")
    total = 0
    for t in model.graph.initializer:
        total += tensor_bytes(t, limits)
        if total > limits.total_bytes:
            raise GraphFileError(f"{path}: initializers past the import limit of "
                                 f"{limits.total_bytes} bytes")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(t, path.parent, limits)
    return model


def tensor_bytes(t, limits: Limits) -> int:
    from onnx import helper

    try:
        item = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError):
        raise GraphFileError(f"tensor {t.name!r} has an unsupported element type "
                             f"{t.data_type}") from None
    if any(d < 0 for d in t.dims):
        raise GraphFileError(f"tensor {t.name!r} has a negative dim {list(t.dims)}")
    n = item
    for d in t.dims:
        n *= d
    if n > limits.tensor_bytes:
        raise GraphFileError(f"tensor {t.name!r} would need {n} bytes, past the import limit "
                             f"of {limits.tensor_bytes}")
    return n


def _read_external(t, folder: Path, limits: Limits) -> None:
    import onnx

    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    rel = Path(location)
    if not location or rel.is_absolute() or ".." in rel.parts:
        raise GraphFileError(f"tensor {t.name!r}: external data location {location!r} must be "
                             "a relative path beside the model")
    file = (folder / rel).resolve()
    if folder.resolve() not in file.parents or not file.is_file():
        raise GraphFileError(f"tensor {t.name!r}: external data {location!r} is not a file "
                             "beside the model")
    want = tensor_bytes(t, limits)
    offset, length = int(info.get("offset", 0)), int(info.get("length", want))
    if length != want or offset < 0 or offset + length > file.stat().st_size:
        raise GraphFileError(f"tensor {t.name!r}: external data {location!r} has no "
                             f"{want} bytes at offset {offset}")
    with open(file, "rb") as f:
        f.seek(offset)
        t.raw_data = f.read(length)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT
