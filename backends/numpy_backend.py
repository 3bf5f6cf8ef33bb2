"""The CPU backend: the registry's kernels run with xp = numpy."""

from __future__ import annotations

import numpy as np


class NumpyBackend:
    name = "numpy"
    xp = np
    kernels: dict = {}

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def synchronize(self) -> None:
        pass
