"""Untrusted text (names from a graph file, arguments) made safe for where it goes.

``clean_text``: no control characters, lone surrogates or XML non-characters, capped length,
so any name can be written to UTF-8, DOT, SVG or HTML. ``clip``: the same for input echoed
in an error message. ``default_output``: the one way a file name is derived from a name
(a base name in the current directory, never a path from a file's contents).
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_LIMIT = 200  # characters of a name shown in a diagram or a file name
ECHO_LIMIT = 120  # characters of user input repeated in an error message

# C0/C1 controls, lone surrogates (unencodable as UTF-8) and U+FFFE/U+FFFF (not XML)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_PATH_UNSAFE = re.compile(r"[^\w.+=-]+")


def clean_text(text, limit: int = NAME_LIMIT) -> str:
    """``text`` as a printable one-line string of at most ``limit`` characters."""
    text = _UNSAFE.sub(" ", str(text))
    if len(text) > limit:
        half = (limit - 1) // 2
        text = text[:half] + "…" + text[len(text) - (limit - 1 - half):]
    return text


def clip(text, limit: int = ECHO_LIMIT) -> str:
    """User input repeated in a message: ``repr``-like, cleaned, at most ``limit`` chars."""
    return repr(clean_text(text, limit))


def default_output(name, suffix: str, fallback: str = "graph") -> Path:
    """A file in the current directory named after ``name``: separators, dots at the start
    and anything but letters, digits and ``._+=-`` become ``_``; never empty."""
    base = _PATH_UNSAFE.sub("_", clean_text(name, 100)).lstrip(".")
    return Path((base or fallback) + suffix)
