"""Loading user ops: by module name or file path (--plugin, TGRAPH_PLUGINS), or through the
``tgraph.ops`` entry-point group of installed packages. Never from a graph file."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from tgraph.errors import TGraphError

_loaded: set[str] = set()


def load_plugin(spec: str) -> None:
    """Import a plugin module (``pkg.mod``) or a Python file (``path/to/ops.py``) once."""
    if spec in _loaded:
        return
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise TGraphError(f"plugin file {spec!r} does not exist")
            name = f"tgraph_plugin_{path.stem}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except TGraphError:
        raise
    except Exception as e:  # a plugin's own bug: report it in one line, naming the plugin
        raise TGraphError(f"plugin {spec!r} failed to load: {type(e).__name__}: {e}") from None
    _loaded.add(spec)


def load_env_plugins() -> None:
    for spec in filter(None, os.environ.get("TGRAPH_PLUGINS", "").split(os.pathsep)):
        load_plugin(spec)


def load_entry_points() -> None:
    for ep in importlib.metadata.entry_points(group="tgraph.ops"):
        if ep.value in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:
            raise TGraphError(f"installed plugin {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from None
        _loaded.add(ep.value)


def load_all(specs=()) -> None:
    """What every CLI command does first: installed plugins, TGRAPH_PLUGINS, then --plugin."""
    load_entry_points()
    load_env_plugins()
    for spec in specs:
        load_plugin(spec)
