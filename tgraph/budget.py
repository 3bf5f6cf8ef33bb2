"""Say what an allocation would need before making it: a shape from a file or an option
(``--dim T=10**12``, a 10⁶×10⁶ ``.npz`` header) becomes one clear error, not NumPy's
MemoryError or a machine swapping itself to death."""

from __future__ import annotations

import math
import os

from tgraph.errors import TGraphError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(n: float) -> str:
    i = 0
    while n >= 1024 and i < len(_UNITS) - 1:
        n /= 1024
        i += 1
    return f"{n:.1f} {_UNITS[i]}" if i else f"{int(n)} B"


def memory_limit() -> int:
    """Bytes one process may ask for: TGRAPH_MAX_BYTES, else the machine's physical memory."""
    env = os.environ.get("TGRAPH_MAX_BYTES", "")
    if env.isdigit():
        return int(env)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def nbytes(shape, itemsize: int) -> int:
    return math.prod(int(d) for d in shape) * itemsize


def check_bytes(n: int, what: str) -> None:
    """Raise before allocating ``n`` bytes for ``what`` when they cannot fit."""
    limit = memory_limit()
    if n > limit:
        raise TGraphError(f"{what} would need {human_bytes(n)}, more than the "
                          f"{human_bytes(limit)} of memory here")
