"""Loading user ops. Every door is explicit: ``--plugin MODULE_OR_PATH`` (``load_plugin``),
the ``TGRAPH_PLUGINS`` environment variable (entries separated by ``os.pathsep``), and the
``tgraph.ops`` entry-point group of installed packages. A graph file only names its ops; it
never causes code to be imported.

A plugin is plain Python that registers ops with ``@register_op`` when imported. Loading
records it as each new op's ``source``; a plugin that raises while loading leaves the
registry as it found it and becomes one ``TGraphError`` line naming the plugin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from tgraph.errors import TGraphError

ENTRY_POINT_GROUP = "tgraph.ops"
_loaded: set[str] = set()  # module names and resolved file paths already imported
_installed_loaded = False


def is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def load_plugin(spec: str) -> None:
    """Import a plugin module (``pkg.ops``, looked up on sys.path with the current directory
    first) or Python file (``path/to/ops.py``), once."""
    path = Path(spec).resolve() if is_path(spec) else None
    key = str(path) if path else spec
    if key in _loaded:
        return
    if path and not path.is_file():
        raise TGraphError(f"plugin file {spec!r} does not exist")
    if not path and os.getcwd() not in sys.path:  # `--plugin my_ops` finds ./my_ops.py
        sys.path.insert(0, os.getcwd())
    _guarded_import(f"plugin {spec!r}", spec,
                    lambda: _import_file(path) if path else importlib.import_module(spec))
    _loaded.add(key)


def load_installed() -> None:
    """Import every installed package's ``tgraph.ops`` entry point (once per process)."""
    global _installed_loaded
    if _installed_loaded:
        return
    _installed_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.module in _loaded:
            continue
        dist = ep.dist.name if ep.dist else "?"
        _guarded_import(f"installed plugin {ep.name!r} ({ep.value}, package {dist})",
                        dist, ep.load)
        _loaded.add(ep.module)


def load_env() -> None:
    for spec in filter(None, os.environ.get("TGRAPH_PLUGINS", "").split(os.pathsep)):
        load_plugin(spec.strip())


def load_all(specs=()) -> None:
    """What every CLI command does first: installed plugins, TGRAPH_PLUGINS, then --plugin."""
    load_installed()
    load_env()
    for spec in specs:
        load_plugin(spec)


def _import_file(path: Path) -> None:
    # A unique, valid module name per file: two plugins may both be called ops.py.
    name = f"tgraph_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses and friends look their module up here
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _guarded_import(what: str, source: str, do_import) -> None:
    """Run ``do_import``; on failure undo its registrations and raise one clear line."""
    from tgraph.ops.registry import _REGISTRY

    before = dict(_REGISTRY)
    try:
        do_import()
    except Exception as e:  # noqa: BLE001  (a plugin may raise anything: report it)
        _REGISTRY.clear()
        _REGISTRY.update(before)
        raise TGraphError(f"{what} failed to load{_where(e)}: {_describe(e)}") from None
    for name, opdef in _REGISTRY.items():
        if before.get(name) is not opdef:
            opdef.source = source


def _describe(e: Exception) -> str:
    if isinstance(e, TGraphError):
        return str(e)
    if isinstance(e, ModuleNotFoundError):
        return f"{e} (give an importable module name or a path to a .py file)"
    return f"{type(e).__name__}: {e}"


def _where(e: Exception) -> str:
    """`` at file.py:LINE``: the innermost frame of the plugin's own traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    if isinstance(e, (TGraphError, SyntaxError, ModuleNotFoundError)) or not own:
        return ""
    return f" at {Path(own[-1].filename).name}:{own[-1].lineno}"
