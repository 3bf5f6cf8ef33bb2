"""The hostile-input fuzzer: seeded mutations of real graph and weights files, hostile CLI
arguments and hostile names, each run through tgraph's CLI and judged by one oracle.

A case is a function of (seed, index) alone, so a failure is replayed by its number:
``python tests/fuzzing.py --n 1 --start 4711 -v``. ``make test`` runs a fixed sample
(tests/test_fuzz.py); ``make fuzz N=10000`` runs more and prints the counts.

The oracle, per case:
- traceback: an exception other than SystemExit, or an exit code other than 0, 1, 2;
- unclean error: exit 1 whose stderr is not one ``error: ...`` line of ≤ 300 characters
  (exit 2, click's usage error, must end in one ``Error: ...`` line of ≤ 300);
- hang: over 20 s (SIGALRM, in-process; a timeout for subprocess cases);
- partial file: any file left in the output folder by a failed command, any ``*.tmp``
  file, or an output of a successful one that does not read back (JSON, npz, SVG);
- outside: any file created outside the case's output folder;
- injection: an SVG with a script, link, event handler, external reference or processing
  instruction (tests/hostile_checks.py), or a DOT whose objects carry URL/image/... attrs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hostile_checks import dot_injections, html_injections, svg_injections

HANG_S = 20
LINE_MAX = 300
FAILURES = ("traceback", "unclean error", "hang", "partial file", "outside", "injection")

HOSTILE_NAMES = [
    '<x> URL="javascript:alert(1)" image="/etc/passwd" tooltip=<y>', "<b>", "",
    "<script>alert(1)</script>", '<?xml-stylesheet href="http://e.invalid/s.css"?>',
    '"]; e [URL="javascript:alert(1)"]; x ["', "a\\", "\\N\\G\\", "../../x", "/abs/x",
    "\ud800", "ctl\x00\x1b[31m\n", "a:b:n", "}}", "&amp;&#x3c;", "x" * 70_000, "é😀",
    "con", ".", "..", "a/" * 300, " ", "\u202e", "-o",
]
HOSTILE_NUMBERS = [-1, 0, 1, 2, 3, 7, 2**31, 2**63, -2**63, 10**30, 10**600, 0.5, -0.0, 1e308,
                   float("nan"), float("inf"), float("-inf"), True, False, None]
HOSTILE_VALUES = HOSTILE_NUMBERS + HOSTILE_NAMES[:12] + [[], {}, [1, 2], {"a": 1}, [[[]]],
                                                          ["B", "T"], "B*T", "-inf", "1e-5"]
ARG_VALUES = ["0", "-1", "1", "2", "3", "nan", "inf", "-inf", "1e308", "²", "9" * 25, "",
              "x", "1.5", "0x10", " 2", "true", "99999999999999999999", "<b>", "../../x",
              "x" * 5000]


@dataclass
class Outcome:
    kind: str  # ok | error | usage | one of FAILURES
    detail: str = ""
    seconds: float = 0.0
    svgs: int = 0  # SVG files written and parsed
    pages: int = 0  # HTML viewer pages written and checked


@dataclass
class Seeds:
    """Real files, made once per run by tgraph itself (build_model, grad, save_weights)."""

    root: Path
    graphs: dict[str, dict] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # the graphs as JSON
    paths: dict[str, list] = field(default_factory=dict)  # every path into each graph
    weights: dict[str, bytes] = field(default_factory=dict)
    text: Path | None = None

    @classmethod
    def make(cls, root: Path) -> Seeds:
        import tgraph as tg
        from tgraph.autodiff import grad
        from tgraph.io import graph_to_json
        from tgraph.models import build_model

        small = dict(n_layers=1, d_model=16, n_heads=2, d_ff=32, vocab=16, max_len=8)
        s = cls(root)
        gpt = build_model("gpt", loss=True, **small)
        models = {"gpt": gpt, "gpt_fwd": build_model("gpt", **small),
                  "transformer": build_model("transformer", loss=True, **small),
                  "bert": build_model("bert", pos="rope", **small),
                  "gpt_grad": grad(gpt, "loss")}
        models["gpt_fwd"].meta["text"] = {"codec": "chars", "chars": "abcdefghij .,\n!?",
                                          "context": 8}
        for name, g in models.items():
            s.graphs[name] = graph_to_json(g)
            s.texts[name] = json.dumps(s.graphs[name])
            s.paths[name] = [p for p in _paths(s.graphs[name]) if p]
            path = root / f"{name}.npz"
            tg.save_weights(tg.init_params(g, 0), path)
            s.weights[name] = path.read_bytes()
        s.text = root / "corpus.txt"
        s.text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
        return s


# ----- mutations ------------------------------------------------------------------------
def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def mutate_json(text: str, paths: list, rng: random.Random) -> dict:
    """``paths``: the seed's; an earlier edit may have moved one, which is then skipped."""
    d = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        try:
            parent, key = _get(d, path[:-1]), path[-1]
            parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        action = rng.randrange(7)
        if action == 0:
            parent[key] = rng.choice(HOSTILE_VALUES)
        elif action == 1:
            del parent[key]
        elif action == 2 and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif action == 3:  # a real value from elsewhere: type confusion with plausible data
            try:
                parent[key] = copy.deepcopy(_get(d, rng.choice(paths)))
            except (KeyError, IndexError, TypeError):
                pass
        elif action == 4 and isinstance(parent[key], str):
            parent[key] = parent[key] + rng.choice(HOSTILE_NAMES[:12])
        elif action == 5 and isinstance(parent[key], (int, float)) and not isinstance(
                parent[key], bool):
            parent[key] = rng.choice([parent[key] * 10**6, -parent[key] - 1, parent[key] + 1])
        else:
            parent[key] = [parent[key]]
    return d


PLAUSIBLE = {  # values of the right JSON type that a schema cannot reject outright
    "axis": [-1, 0, 1, 2, 3, -4], "axes": [None, [0], [1, 2], [-1], [0, 0], 5],
    "perm": [[0, 2, 1], [1, 0], [0, 1, 2, 3], [0, 0, 1]], "shape": [[2, 3], ["B", "T", 16],
    ["B*T", -1], [-1, -1], [0], ["B", 0, 16]], "sizes": [[8, 8], [1], [16, 16, 16]],
    "start": [0, 1, -1, 5], "stop": [None, 0, 2, -1], "depth": [1, 2, 16, 1000],
    "window": [0, 1, 100], "causal": [True, False], "eps": [1e-30, 1e30, 0.5],
    "fill": ["-inf", "0", "1e308", "inf"], "keepdims": [True, False],
    "approximate": ["none", "tanh"], "dtype": ["float64", "int64", "bool", "float16"],
}


def mutate_plausible(d: dict, rng: random.Random) -> dict:
    """Edits that survive the file checks and reach shape rules, the executor and render:
    attrs from the right family, ops swapped for another of the same arity, dims
    changed, metadata hints changed."""
    from tgraph.ops import all_ops

    for _ in range(rng.randint(1, 2)):
        n = rng.choice(d["nodes"])
        action = rng.randrange(5)
        if action == 0 and n.get("attrs"):
            key = rng.choice(list(n["attrs"]))
            n["attrs"][key] = rng.choice(PLAUSIBLE.get(key, [0, 1, "x"]))
        elif action == 1:
            n["op"] = rng.choice(sorted(all_ops()))
        elif action == 2:
            v = rng.choice(d["inputs"] + d["params"] + n["outputs"])
            if v["shape"]:
                i = rng.randrange(len(v["shape"]))
                v["shape"][i] = rng.choice([1, 2, 3, 16, 0, "B", "T", "X", "B*T"])
        elif action == 3:
            meta = d.setdefault("meta", {})
            key = rng.choice(["dims", "int_ranges", "dim_limits"])
            meta.setdefault(key, {})[rng.choice(["B", "T", "S", "tokens", "targets"])] = \
                rng.choice([1, 2, 3, 10**6, 2**48])
        else:
            n["inputs"] = n["inputs"][::-1] if rng.random() < 0.5 else n["inputs"][:1]
    return d


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    action = rng.randrange(4)
    if action == 0 and data:
        return bytes(data[:rng.randrange(len(data))])
    if action == 1:
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if action == 2:
        i = rng.randrange(len(data) + 1)
        return bytes(data[:i]) + rng.choice([b"\xff\xfe", b"[" * 5000, b"9" * 5000, b"\x00"]) \
            + bytes(data[i:])
    return bytes(data) + b"\n" + bytes(data)


def npy_header(shape, descr="<f4", fortran=False) -> bytes:
    text = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def mutate_npz(data: bytes, rng: random.Random) -> bytes:
    """A weights file: a member renamed, reshaped, retyped, inflated, added or dropped."""
    import io

    src = zipfile.ZipFile(io.BytesIO(data))
    members = {i.filename: src.read(i) for i in src.infolist()}
    names = list(members)
    action = rng.randrange(9)
    victim = rng.choice(names)
    if action == 0:
        members[rng.choice(HOSTILE_NAMES[:12] + ["typo"]) + ".npy"] = members.pop(victim)
    elif action == 1:
        shape = rng.choice([(10**6, 10**6), (2**40,), (-1, 3), (3,), (), (0, 16)])
        members[victim] = npy_header(shape) + b"\0" * rng.choice([0, 64, 1000])
    elif action == 2:
        descr = rng.choice(["|O", "<c8", "<U3", "|V4", "<M8[s]", "<f8", "<i8", "|b1", "}{"])
        body = members[victim][128:]
        members[victim] = npy_header((16, 16), descr) + body
    elif action == 3:  # a zip bomb: 64 MiB of zeros compressed to 64 KiB
        return _bomb(victim)
    elif action == 4:
        del members[victim]
    elif action == 5:
        members["extra.npy"] = members[victim]
    elif action == 6:
        return mutate_bytes(data, rng)
    elif action == 7:
        buf = io.BytesIO()
        np.save(buf, np.zeros((16, 16), np.float32))
        return buf.getvalue()  # a bare .npy
    else:
        members[victim] = npy_header((16, 16), fortran=True) + members[victim][128:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, body in members.items():
            try:
                z.writestr(name, body)
            except (UnicodeEncodeError, ValueError):
                z.writestr("bad.npy", body)
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def _bomb(name: str) -> bytes:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, npy_header((4096, 4096)) + b"\0" * (4096 * 4096 * 4))
    return out.getvalue()


# ----- cases ----------------------------------------------------------------------------
GRAPH_COMMANDS = [
    ["info", "{g}"], ["info", "{g}", "--depth", "1", "--json"],
    ["info", "{g}", "--dim", "B=2", "--dim", "T=4"],
    ["render", "{g}", "-o", "out.svg", "--depth", "2"], ["render", "{g}", "-o", "out.dot"],
    ["render", "{g}", "--depth", "1"], ["render", "{g}", "-o", "out.svg", "--backward"],
    ["render", "{g}", "-o", "out.html"], ["render", "{g}", "-o", "out.html", "--random", "-O2"],
    ["view", "{g}", "--no-open", "-o", "out.html"],
    ["run", "{g}", "--random", "-o", "out.npz"], ["run", "{g}", "--weights", "{w}", "--random"],
    ["grad", "{g}", "-o", "fb.json"], ["compile", "{g}", "-o", "fast.json"],
    ["generate", "{g}", "--weights", "{w}", "--length", "3"],
]
MODEL_ARGS = ["gpt", "bert", "transformer", "vit", "nope", "gpt.json"]
CONFIG_KEYS = ["n_layers", "d_model", "n_heads", "d_ff", "vocab", "max_len", "eps", "window",
               "value_rank", "pos", "norm", "heads", "dtype", "x", "tie_embeddings"]


def make_case(seeds: Seeds, index: int, base_seed: int = 0):
    """(kind, argv, files to write into the input folder) for case ``index``."""
    rng = random.Random(f"{base_seed}:{index}")
    kind = rng.choices(["graph", "plausible", "graph_bytes", "weights", "args", "names"],
                       weights=[25, 25, 6, 14, 22, 8])[0]
    files: dict[str, bytes] = {}
    name = rng.choice(list(seeds.graphs))
    files["w.npz"] = seeds.weights[name]
    if kind in ("graph", "plausible", "graph_bytes"):
        d = mutate_plausible(json.loads(seeds.texts[name]), rng) if kind == "plausible" \
            else mutate_json(seeds.texts[name], seeds.paths[name], rng)
        text = json.dumps(d).encode("utf-8", "surrogatepass")
        files["g.json"] = mutate_bytes(text, rng) if kind == "graph_bytes" else text
        argv = rng.choice(GRAPH_COMMANDS)
    elif kind == "weights":
        files["g.json"] = seeds.texts[name].encode()
        files["w.npz"] = mutate_npz(seeds.weights[name], rng)
        argv = rng.choice([["run", "{g}", "--weights", "{w}", "--random"],
                           ["generate", "{g}", "--weights", "{w}", "--length", "2"],
                           ["run", "{g}", "--weights", "{w}", "--random", "--feed", "x={w}"]])
    elif kind == "names":
        d = json.loads(seeds.texts[name])
        hostile = rng.choice(HOSTILE_NAMES)
        target = rng.choice(["name", "scope", "input", "output", "param"])
        if target == "name":
            d["name"] = hostile
        elif target == "scope":
            rng.choice(d["nodes"])["scope"] = hostile
        elif target == "output":
            k = rng.choice(list(d["outputs"]))
            d["outputs"][hostile] = d["outputs"].pop(k)
        else:
            _rename(d, rng.choice(d["inputs" if target == "input" else "params"])["name"],
                    hostile)
        files["g.json"] = json.dumps(d).encode("utf-8", "surrogatepass")
        argv = rng.choice([["render", "{g}", "-o", "out.svg"], ["render", "{g}"],
                           ["render", "{g}", "-o", "out.dot"], ["info", "{g}"],
                           ["render", "{g}", "-o", "out.html", "--random"],
                           ["run", "{g}", "--random", "-o", "out.npz"]])
    else:
        argv = _hostile_args(rng, seeds)
    return kind, list(argv), files


def _rename(d: dict, old: str, new: str) -> None:
    for n in d["nodes"]:
        n["inputs"] = [new if x == old else x for x in n["inputs"]]
    for group in ("inputs", "params", "consts"):
        for e in d[group]:
            if e["name"] == old:
                e["name"] = new
    d["outputs"] = {k: new if v == old else v for k, v in d["outputs"].items()}


def _hostile_args(rng: random.Random, seeds: Seeds) -> list[str]:
    value = rng.choice(ARG_VALUES)
    model = rng.choice(MODEL_ARGS)
    tiny = ["--preset", "tiny", "--set", "n_layers=1", "--set", "d_model=16", "--set",
            "n_heads=2", "--set", "d_ff=32"]
    form = rng.randrange(8)
    if form == 0:
        return ["info", model, "--dim", f"{rng.choice(['B', 'T', 'X', '', 'B*T'])}={value}"]
    if form == 1:
        return ["run", model, "--random", *tiny[:2], "--set", f"{rng.choice(CONFIG_KEYS)}={value}"]
    if form == 2:
        return ["run", "gpt", *tiny, "--random", "--dim", f"T={value}", "--dim", "B=1"]
    if form == 3:
        return ["build", model, *tiny[:2], "-o", rng.choice(["g.json", "sub/g.json", value]),
                "--weights", rng.choice(["w2.npz", "missing/w.npz", "g.json"])]
    if form == 4:
        opt = rng.choice(["--lr", "--steps", "--batch", "--seq-len", "--clip", "--warmup",
                          "--weight-decay", "--checkpoint-every", "--seed"])
        return ["train", "gpt", "--task", "text", "--data", "{text}", *tiny[2:], "--steps",
                "2", "--batch", "2", "--seq-len", "4", opt, value, "-o", "t.npz"]
    if form == 5:
        return ["train", "gpt", "--task", "text", "--data", rng.choice(["{w}", "{g}", "nope"]),
                *tiny[2:], "--steps", "1", "--batch", "2", "--seq-len", "4", "-o", "t.npz"]
    if form == 6:
        return ["render", model, *tiny[:2], rng.choice(["--depth", "--rankdir", "--color",
                                                         "--time-budget", "-O", "--text"]),
                value, "-o", rng.choice(["out.svg", "out.html"])]
    return [rng.choice(["info", "run", "render", "grad", "compile", "generate"]),
            rng.choice(HOSTILE_NAMES[:12] + ["{g}", "{w}"]), *rng.choice(
                [[], ["--set", value], ["--preset", value], ["--plugin", value]])]


# ----- running and judging --------------------------------------------------------------
class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def run_case(seeds: Seeds, index: int, base_seed: int = 0, subprocess_mode: bool = False,
             hang_s: float = HANG_S) -> Outcome:
    from tgraph.cli import main

    kind, argv, files = make_case(seeds, index, base_seed)
    with tempfile.TemporaryDirectory(prefix="tgfuzz") as tmp:
        root = Path(tmp)
        inp, out = root / "in", root / "out"
        inp.mkdir()
        out.mkdir()
        for fname, data in files.items():
            (inp / fname).write_bytes(data)
        subst = {"{g}": str(inp / "g.json"), "{w}": str(inp / "w.npz"),
                 "{text}": str(seeds.text)}
        argv = [subst.get(a, a).replace("x={w}", f"x={inp / 'w.npz'}") for a in argv]
        before = snapshot(root)
        cwd = os.getcwd()
        os.chdir(out)
        start = time.perf_counter()
        try:
            if subprocess_mode:
                outcome = _run_subprocess(argv, hang_s)
            else:
                outcome = _run_in_process(main, argv, hang_s)
        finally:
            os.chdir(cwd)
        outcome.seconds = time.perf_counter() - start
        if outcome.kind in ("ok", "error", "usage"):
            outcome = _judge_files(root, before, outcome) or outcome
            outcome.svgs = sum(1 for p in out.rglob("*.svg"))
            outcome.pages = sum(1 for p in out.rglob("*.html"))
    outcome.detail = f"case {index} [{kind}] tgraph {' '.join(a[:60] for a in argv)}: " \
                     + outcome.detail
    return outcome


def _run_in_process(main, argv, hang_s: float) -> Outcome:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    try:
        r = CliRunner().invoke(main, argv, catch_exceptions=True)
    except _Hang:
        return Outcome("hang", f"over {hang_s:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the CLI installs its own
    if isinstance(r.exception, _Hang):
        return Outcome("hang", f"over {hang_s:g} s")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(r.exception)[-3:])
        return Outcome("traceback", f"{type(r.exception).__name__}: {tb[-600:]}")
    return _judge_exit(r.exit_code, r.stderr)


def _run_subprocess(argv, hang_s: float) -> Outcome:
    try:
        done = subprocess.run([sys.executable, "-m", "tgraph", *argv], capture_output=True,
                              timeout=hang_s, check=False)
    except subprocess.TimeoutExpired:
        return Outcome("hang", f"over {hang_s:g} s (subprocess)")
    stderr = done.stderr.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in stderr:
        return Outcome("traceback", stderr[-600:])
    return _judge_exit(done.returncode, stderr)


def _judge_exit(code: int, stderr: str) -> Outcome:
    lines = [x for x in stderr.splitlines() if x.strip()]
    if code == 0:
        return Outcome("ok")
    if code == 1:
        errors = [x for x in lines if x.startswith("error: ")]
        if len(errors) != 1 or len(errors[0]) > LINE_MAX or lines[-1] != errors[0]:
            return Outcome("unclean error", repr(stderr[-400:]))
        return Outcome("error", errors[0][:200])
    if code == 2:
        if not lines or not lines[-1].startswith("Error: ") or len(lines[-1]) > LINE_MAX:
            return Outcome("unclean error", repr(stderr[-400:]))
        return Outcome("usage", lines[-1][:200])
    return Outcome("traceback", f"exit code {code}: {stderr[-400:]!r}")


def _judge_files(root: Path, before: dict, outcome: Outcome) -> Outcome | None:
    after = snapshot(root)
    new = {p: s for p, s in after.items() if before.get(p) != s}
    outside = [p for p in new if not p.startswith("out/")]
    if outside:
        return Outcome("outside", f"wrote {outside[:3]} after {outcome.kind} {outcome.detail}")
    temps = [p for p in after if p.endswith(".tmp")]
    if temps:
        return Outcome("partial file", f"left {temps[:3]}")
    if outcome.kind != "ok" and new:
        return Outcome("partial file", f"{outcome.kind} ({outcome.detail}) but wrote "
                                       f"{sorted(new)[:3]}")
    for rel in new:
        problem = _read_back(root / rel)
        if problem:
            return Outcome(problem[0], f"{rel}: {problem[1]}")
    return None


def _read_back(path: Path) -> tuple[str, str] | None:
    """Read an output back by what it holds (``-o`` may give any name to any format)."""
    data = path.read_bytes()
    try:
        if path.suffix == ".svg" or data.startswith(b"<?xml"):
            found = svg_injections(data)
            return ("injection", "; ".join(found)[:300]) if found else None
        if path.suffix == ".html" or data.startswith(b"<!DOCTYPE html"):
            found = html_injections(data)
            return ("injection", "; ".join(found)[:300]) if found else None
        if path.suffix == ".dot" or data.startswith(b"digraph"):
            found = dot_injections(path)
            return ("injection", "; ".join(found)[:300]) if found else None
        if data.startswith(b"{"):
            json.loads(data)
        elif data.startswith(b"PK"):
            with zipfile.ZipFile(path) as z:
                if z.testzip() is not None:
                    return ("partial file", "corrupt member")
    except (ValueError, zipfile.BadZipFile) as e:
        return ("partial file", f"does not read back: {e}")
    return None


def run_cases(n: int, start: int = 0, base_seed: int = 0, every_subprocess: int = 0,
              verbose: bool = False, seeds: Seeds | None = None,
              hang_s: float = HANG_S) -> tuple[Counter, list]:
    """Counts of outcome kinds over cases start..start+n-1, and the failures."""
    os.environ.setdefault("TGRAPH_MAX_BYTES", str(2 << 30))  # one verdict on any machine
    own = seeds is None
    tmp = Path(tempfile.mkdtemp(prefix="tgseeds")) if own else None
    try:
        seeds = seeds or Seeds.make(tmp)
        counts, failures = Counter(), []
        for i in range(start, start + n):
            sub = bool(every_subprocess) and i % every_subprocess == 0
            o = run_case(seeds, i, base_seed, sub, hang_s)
            counts[o.kind] += 1
            counts["subprocess"] += sub
            counts["svg parsed"] += o.svgs
            counts["pages checked"] += o.pages
            if o.kind in FAILURES:
                failures.append(o)
            if verbose:
                print(_printable(f"{o.kind:14} {o.seconds:6.2f}s {o.detail[:300]}"))
        return counts, failures
    finally:
        if own:
            shutil.rmtree(tmp, ignore_errors=True)


_WORKER_SEEDS: Seeds | None = None


def _init_worker(root: str) -> None:
    global _WORKER_SEEDS
    os.environ.setdefault("TGRAPH_MAX_BYTES", str(2 << 30))
    _WORKER_SEEDS = Seeds.make(Path(tempfile.mkdtemp(dir=root)))


def _chunk(args) -> tuple[Counter, list]:
    start, n, base_seed, every = args
    return run_cases(n, start, base_seed, every, seeds=_WORKER_SEEDS)


def run_parallel(n: int, start: int, base_seed: int, every: int, jobs: int,
                 verbose: bool) -> tuple[Counter, list]:
    """run_cases over ``jobs`` processes, in chunks of 50 cases."""
    if jobs <= 1:
        return run_cases(n, start, base_seed, every, verbose)
    from concurrent.futures import ProcessPoolExecutor

    counts, failures = Counter(), []
    chunks = [(s, min(50, start + n - s), base_seed, every) for s in range(start, start + n, 50)]
    with tempfile.TemporaryDirectory(prefix="tgseeds") as root, ProcessPoolExecutor(
            jobs, initializer=_init_worker, initargs=(root,)) as pool:
        for done, (c, f) in enumerate(pool.map(_chunk, chunks), 1):
            counts.update(c)
            failures += f
            kinds = ", ".join(f"{k} {counts[k]}" for k in ("ok", "error", "usage", *FAILURES))
            print(f"{min(done * 50, n)} cases: {kinds}", file=sys.stderr, flush=True)
    return counts, failures


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def main_cli(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="cases to run")
    p.add_argument("--start", type=int, default=0, help="first case number")
    p.add_argument("--seed", type=int, default=0, help="base seed of the case generator")
    p.add_argument("--every-subprocess", type=int, default=100,
                   help="run every Nth case through `python -m tgraph` (0: none)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    counts, failures = run_parallel(a.n, a.start, a.seed, a.every_subprocess, a.jobs,
                                    a.verbose)
    for o in failures[:50]:
        print(_printable(f"FAIL {o.kind}: {o.detail[:1000]}"))
    total = sum(counts[k] for k in ("ok", "error", "usage", *FAILURES))
    print(f"{total} cases (seed {a.seed}, cases {a.start}..{a.start + a.n - 1}) in "
          f"{time.perf_counter() - t0:.0f} s; {counts['subprocess']} through subprocesses; "
          f"{counts['svg parsed']} SVGs parsed, {counts['pages checked']} viewer pages checked")
    print("  exit 0: {ok}, one-line errors (exit 1): {error}, usage errors (exit 2): {usage}"
          .format(**{k: counts[k] for k in ("ok", "error", "usage")}))
    print("  " + ", ".join(f"{k}s: {counts[k]}" for k in FAILURES))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_cli())
