"""WCAG 2 contrast: the ratio between two colours' relative luminances, and the ink that
reads on a fill (dark on light fills, white on the darkest heat shades)."""

from __future__ import annotations

AA = 4.5  # WCAG AA for normal text
DARK_INK = "#1a1a1a"
LIGHT_INK = "#ffffff"


def luminance(colour: str) -> float:
    """Relative luminance of '#rrggbb' (sRGB, WCAG 2.x)."""
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def ink_on(fill: str) -> str:
    """The text colour with the higher contrast on ``fill``."""
    return DARK_INK if contrast(DARK_INK, fill) >= contrast(LIGHT_INK, fill) else LIGHT_INK


def legible(fill: str) -> str:
    """``fill``, lightened a step at a time until one of the inks reaches AA on it (a
    mid-luminance shade admits neither dark nor white text at 4.5:1)."""
    while max(contrast(DARK_INK, fill), contrast(LIGHT_INK, fill)) < AA:
        fill = "#" + "".join(f"{min(255, int(fill[i:i + 2], 16) + 8):02x}" for i in (1, 3, 5))
    return fill
