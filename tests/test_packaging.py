"""The wheel installs tgraph.ops and tgraph.backends from their mapped folders, with every
subpackage, and works outside the repo (where a bare ``ops`` folder cannot mask anything)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_every_subpackage_outside_the_repo(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools leaves a build/ folder where it builds
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "out", "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("tgraph-*.whl")
    site = tmp_path / "site"  # the wheel alone; numpy & co. come from this venv
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    import setuptools

    packages = setuptools.find_packages(str(ROOT), include=["tgraph*"])
    packages += ["tgraph.ops", "tgraph.backends"] + [
        f"tgraph.{top}.{p}" for top in ("ops", "backends")
        for p in setuptools.find_packages(str(ROOT / top))]
    code = ("import importlib, tgraph, sys\n"
            f"for name in {sorted(set(packages))!r}:\n"
            "    m = importlib.import_module(name)\n"
            f"    assert {str(ROOT)!r} not in (m.__file__ or ''), (name, m.__file__)\n"
            "from tgraph.ops import get_op\n"
            "print(get_op('softmax').name, len(tgraph.ops.all_ops()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("softmax ")
    cli = subprocess.run([site / "bin" / "tgraph", "ops"], cwd=tmp_path, capture_output=True,
                         text=True, env=env)
    assert cli.returncode == 0 and "matmul(a[..., M, K]" in cli.stdout
    module = subprocess.run([sys.executable, "-m", "tgraph", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert module.returncode == 0 and "Usage" in module.stdout
    viewer = subprocess.run([site / "bin" / "tgraph", "render", "gpt", "--preset", "tiny",
                             "--depth", "1", "-o", "v.html"], cwd=tmp_path, capture_output=True,
                            text=True, env=env)
    assert viewer.returncode == 0, viewer.stderr  # the viewer's JS and CSS are in the wheel
    assert "window.tgraphViewer" in (tmp_path / "v.html").read_text(encoding="utf-8")
