"""The README and the plugin author's guide (docs/plugins.md) cannot drift from the code:
each document's examples run, in document order, in one scratch folder of its own (where
``examples/`` of this repository is visible).

- In a ```console block every line starting with ``$ tgraph `` runs through bash (a line
  ending in ``\\`` continues on the next). It must exit 0, unless the lines shown after it
  (its expected output) hold one starting with ``error:``: then it must exit 1 and print
  that line on stderr.
- A ```python block runs as a script, so the files it writes exist for the commands after
  it. One whose first line is ``# file: NAME.py`` is also saved as NAME.py there (a
  plugin for ``--plugin NAME.py``, say). Show code that is not meant to run in a plain
  ``` or ```text block.

Other ``$`` lines (``$ pip install ...``) are shown to readers, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/plugins.md")
FENCE = re.compile(r"^```(\w*)\s*$")


def readme_steps(text: str) -> list[tuple[str, str, str | None]]:
    """(kind, code, expected error line) for each runnable example, in document order."""
    steps, block, lang = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and block is None:
            block, lang = [], fence.group(1)
        elif fence:
            steps += _block_steps(lang, block)
            block = None
        elif block is not None:
            block.append(line)
    return steps


def _block_steps(lang: str, lines: list[str]):
    if lang == "python":
        return [("python", "\n".join(lines), None)]
    if lang != "console":
        return []
    steps, i = [], 0
    while i < len(lines):
        command = lines[i]
        i += 1
        if not command.startswith("$ "):
            continue
        while command.endswith("\\") and i < len(lines):
            command, i = command[:-1].rstrip() + " " + lines[i].strip(), i + 1
        shown = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        if command.startswith("$ tgraph "):
            error = next((s.strip() for s in shown if s.strip().startswith("error:")), None)
            steps.append(("console", command[2:], error))
    return steps


@pytest.mark.parametrize("doc", DOCS)
def test_document_examples_run(doc, tmp_path):
    steps = readme_steps((ROOT / doc).read_text())
    commands = [code for kind, code, _ in steps if kind == "console"]
    assert commands, (f"{doc} shows no command to test: put them in ```console blocks "
                      "as lines starting with '$ tgraph '")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    failures = []
    for kind, code, error in steps:
        saved_as = re.match(r"# file: (\S+\.py)\n", code) if kind == "python" else None
        if saved_as:
            (tmp_path / saved_as.group(1)).write_text(code)
        argv = ([sys.executable, "-c", code] if kind == "python" else
                ["bash", "-c", f"set -o pipefail; {code}"])
        out = subprocess.run(argv, cwd=tmp_path, env=env, check=False, capture_output=True,
                             text=True, timeout=600)
        shown = code if kind == "console" else f"python block: {code.splitlines()[0]} ..."
        if error is None and out.returncode != 0:
            failures.append(f"{shown}\n  exit {out.returncode}: {out.stderr.strip()[-2000:]}")
        elif error is not None and (out.returncode != 1 or error not in out.stderr):
            failures.append(f"{shown}\n  expected exit 1 with {error!r}, got exit "
                            f"{out.returncode}: {out.stderr.strip()}")
    assert not failures, f"{doc} examples that fail:\n" + "\n".join(failures)


def test_the_guide_names_every_builder_function():
    """The guide's table of what a VJP may call lists all of tgraph.builder."""
    import tgraph.builder as tb

    guide = (ROOT / "docs" / "plugins.md").read_text()
    public = [name for name, f in vars(tb).items() if callable(f) and not name.startswith("_")
              and getattr(f, "__module__", "") == tb.__name__]
    assert public and not [name for name in public if f"`tb.{name}(" not in guide]


def test_the_parser_reads_commands_continuations_and_expected_errors():
    text = textwrap.dedent("""\
        ```console
        $ tgraph info gpt \\
            --preset tiny
        scope  params
        $ pip install x
        $ tgraph info nope
        error: 'nope' is neither a graph file
        ```
        ```python
        print(1)
        ```
        ```
        $ tgraph not run
        ```
        """)
    assert readme_steps(text) == [
        ("console", "tgraph info gpt --preset tiny", None),
        ("console", "tgraph info nope", "error: 'nope' is neither a graph file"),
        ("python", "print(1)", None)]
