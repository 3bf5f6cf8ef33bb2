"""Heat shading: a box's fill darkens with its share of the FLOPs or parameters."""

from __future__ import annotations

# White to a saturated colour, one ramp per measure.
RAMPS = {"flops": (255, 255, 255, 203, 24, 29), "params": (255, 255, 255, 33, 113, 181)}


def heat_fill(intensity: float, measure: str) -> str:
    """Fill colour for ``intensity`` in [0, 1] (the share relative to the largest)."""
    r0, g0, b0, r1, g1, b1 = RAMPS[measure]
    t = min(max(intensity, 0.0), 1.0) ** 0.5 * 0.85  # sqrt: small shares stay visible
    channels = (round(a + (b - a) * t) for a, b in ((r0, r1), (g0, g1), (b0, b1)))
    return "#" + "".join(f"{c:02x}" for c in channels)
