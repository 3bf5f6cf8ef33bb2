"""AdamW's update as one compiled loop over each parameter, in place.

The optimizer's pure formula (``tgraph/train/optim.py``) reads and writes each parameter,
its gradient and both moments about a dozen times through NumPy temporaries; for
gpt2-small's 124M parameters that was longer than the forward+backward step itself. Here
each element is read once and p, m, v are written back in place, in float64 arithmetic
whatever the arrays' dtype, split over the cores. Same formula, same order of operations
as the pure update (the tests hold them together).
"""

from __future__ import annotations

import functools

import numpy as np

from tgraph.codegen.entry import Entry
from tgraph.codegen.numba_cpu import entry_module, load_entry
from tgraph.parallel import split

KERNEL = """def kernel(i0, i1, p: "F 1d", g: "F 1d", m: "F 1d", v: "F 1d", lr: float, b1: float,
           b2: float, eps: float, decay: float, step: float, root_bc2: float):
    for i in range(i0, i1):
        gi = g[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * (gi * gi)
        pi = p[i] - decay * p[i]
        p[i] = pi - step * mi / (math.sqrt(vi) / root_bc2 + eps)
        m[i] = mi
        v[i] = vi
"""


@functools.cache
def _entry(dtype: np.dtype) -> Entry:
    return load_entry(entry_module(KERNEL, dtype, "import math\nimport numpy as np\n"))


def usable(*arrays) -> bool:
    """NumPy float arrays of one dtype and shape, contiguous and writable."""
    a = arrays[0]
    return all(isinstance(x, np.ndarray) and x.dtype == a.dtype and x.dtype.kind == "f"
               and x.shape == a.shape and x.flags.c_contiguous for x in arrays) and all(
        x.flags.writeable for x in (arrays[0], *arrays[2:]))


def adamw_inplace(p, g, m, v, *, lr, b1, b2, eps, decay, step, root_bc2) -> None:
    """p, m, v updated in place; ``decay`` is lr·weight_decay (0 for vectors)."""
    flat = [a.reshape(-1) for a in (p, g, m, v)]
    split(_entry(p.dtype).job(*flat, lr, b1, b2, eps, decay, step, root_bc2),
          flat[0].size, flat[0].size)
