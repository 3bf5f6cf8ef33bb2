"""Progress and verbosity shared by long work (training, large renders): a bar on a
terminal, quiet in pipes. The level comes from the running CLI command's -q/-v flags when
there is one (see tgraph.cli.common.verbosity_options), else the normal level."""

from __future__ import annotations

import sys
import time

import click

QUIET, NORMAL, VERBOSE = -1, 0, 1
_VERBOSITY = "tgraph.verbosity"


def verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_VERBOSITY, NORMAL) if ctx else NORMAL


class Progress:
    """Progress of a loop of known length, on stderr: a bar redrawn in place on a terminal;
    in a pipe nothing, or with --verbose one line per tenth; with --quiet nothing at all.

        with Progress(steps, "train") as bar:
            for step in range(steps):
                bar.update(loss=loss)
    """

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.stream = stream or sys.stderr
        level = verbosity()
        terminal = _isatty(self.stream) and _isatty(sys.stdout)
        self.mode = ("bar" if terminal and level > QUIET else
                     "lines" if level == VERBOSE else None)
        self.start = self._drawn = time.monotonic()
        self._tenth = 0

    def update(self, n: int = 1, **metrics) -> None:
        self.done += n
        now = time.monotonic()
        if self.mode == "bar" and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self.stream.write("\r" + self.text(metrics) + "\x1b[K")
            self.stream.flush()
        elif self.mode == "lines" and self.done * 10 // self.total > self._tenth:
            self._tenth = self.done * 10 // self.total
            self.stream.write(self.text(metrics) + "\n")

    def text(self, metrics: dict) -> str:
        width = 24
        filled = width * min(self.done, self.total) // self.total
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        extra = "".join(f"  {k} {v:.4g}" if isinstance(v, float) else f"  {k} {v}"
                        for k, v in metrics.items())
        return (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total}  {rate:.3g}/s{extra}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())
