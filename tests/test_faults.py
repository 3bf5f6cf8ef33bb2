"""Faults: a killed `tgraph render` takes its `dot` child with it (SIGTERM and SIGKILL), a
SIGTERM'd `tgraph train` leaves no temporary file, a SIGTERM in the middle of writing
weights exits as the signal asks once the file is whole, and the next run removes what a
SIGKILL left. Real processes and real signals; no timing is asserted, only states."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tgraph as tg
from tgraph.io import temp_files_of
from tgraph.models import build_model

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def comm(pid: int) -> str:
    """The program a process runs (a forked child is still python until it execs dot)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_for(predicate, limit=120.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail("the awaited state never came")


@pytest.fixture(scope="module")
def big_graph(tmp_path_factory):
    """A graph whose full layout keeps dot busy for a while."""
    path = tmp_path_factory.mktemp("big") / "big.json"
    tg.save_graph(build_model("gpt", n_layers=12, n_heads=8), path)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_render_kills_dot(big_graph, tmp_path, sig):
    p = subprocess.Popen([sys.executable, "-m", "tgraph", "render", str(big_graph), "--no-fold",
                          "-o", str(tmp_path / "g.svg")], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dot = wait_for(lambda: [c for c in children(p.pid) if comm(c) == "dot"])[0]
    os.kill(p.pid, sig)
    p.wait(timeout=60)
    wait_for(lambda: not alive(dot), 30)
    assert not list(tmp_path.iterdir())  # no output, no temporary file


def test_sigterm_during_train_leaves_no_temp_files(tmp_path):
    out = tmp_path / "w.npz"
    p = subprocess.Popen([sys.executable, "-m", "tgraph", "train", "gpt", "--task", "text",
                          "--data", str(Path("examples/data/corpus.txt").resolve()),
                          "--set", "n_layers=1", "--set", "d_model=16", "--set", "n_heads=2",
                          "--steps", "100000", "--batch", "2", "--seq-len", "8",
                          "--checkpoint-every", "1", "-o", str(out)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    wait_for(out.exists)  # checkpoints are being written, one per step
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # a hang: every thread's stack, then fail
        p.send_signal(signal.SIGABRT)
        _, err = p.communicate(timeout=30)
        pytest.fail("train did not exit on SIGTERM:\n" + err.decode()[-4000:])
    assert p.returncode == 128 + signal.SIGTERM and b"Traceback" not in err, err.decode()[-2000:]
    assert temp_files_of(out) == [] and not list(tmp_path.glob(".*.tmp"))
    tg.load_weights(out)  # the last complete checkpoint


def test_sigterm_while_weights_are_written_ends_after_the_file(tmp_path, monkeypatch):
    """The signal lands inside np.savez's zip member (where unwinding made zipfile raise
    ValueError over the exit): the CLI's handler's SystemExit comes once the file is
    complete, and no temporary file is left."""
    from tgraph.cli.common import _terminated

    write_array = np.lib.format.write_array

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with pytest.raises(SystemExit) as exit_:
            tg.save_weights({"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)},
                            tmp_path / "w.npz")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert temp_files_of(tmp_path / "w.npz") == [] and not list(tmp_path.glob(".*.tmp"))
    assert np.array_equal(tg.load_weights(tmp_path / "w.npz")["w"], np.arange(6.0).reshape(2, 3))


def test_train_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "w.npz"
    stale = tmp_path / ".w.npz.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    (tmp_path / ".w.json.xyz.tmp").write_bytes(b"{")
    keep = tmp_path / ".other.npz.abc.tmp"  # not ours: left alone
    keep.write_bytes(b"")
    from click.testing import CliRunner

    from tgraph.cli import main

    r = CliRunner().invoke(main, ["train", "gpt", "--task", "text", "--data",
                                  "examples/data/corpus.txt", "--set", "n_layers=1", "--set",
                                  "d_model=16", "--set", "n_heads=2", "--steps", "1",
                                  "--batch", "2", "--seq-len", "8", "-o", str(out), "-v"])
    assert r.exit_code == 0, r.output
    assert "left by an interrupted run" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.abc.tmp", "w.json",
                                                          "w.npz"]
