"""Layers run one way: no module under src/tuneforge imports a module of a higher layer.

The map (and why ``report``, ``runs``, ``samples`` and the package itself sit where they do) is
``tuneforge.core.layers.LAYERS``. Imports are read with ``ast`` from the source, not by importing it:
every ``import``/``from ... import`` anywhere in a module counts, in functions and under
``TYPE_CHECKING`` too, relative imports resolved. ``from pkg import name`` imports ``pkg.name`` when
that is a module, else ``pkg`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tuneforge.core.layers import LAYERS, layer_of

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tuneforge"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str) -> bool:
    return name in MODULES


def imported_modules(module: str, path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import of a ``tuneforge`` module in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((target if is_module(target) else base, node.lineno))
    return [(name, line) for name, line in found if name == "tuneforge" or name.startswith("tuneforge.")]


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if layer_of(name) is None]
    assert not unplaced, f"add these to LAYERS in src/tuneforge/core/layers.py: {unplaced}"


def test_the_package_top_is_the_highest_layer_and_core_the_lowest():
    assert layer_of("tuneforge") == len(LAYERS) - 1 and layer_of("tuneforge.core.errors") == 0
    assert layer_of("tuneforge.newthing") is None  # a new top-level module must be placed, not fall to the top
    assert layer_of("tuneforge.report") == layer_of("tuneforge.monitor.events")


def test_lower_layers_never_import_higher_ones():
    upward = []
    for module, path in MODULES.items():
        own = layer_of(module)
        if own is None:
            continue  # reported by test_every_module_has_a_layer
        for target, line in imported_modules(module, path):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                upward.append(f"{path.relative_to(SRC.parent)}:{line}: {module} ({LAYERS[own][0]}) imports "
                              f"{target} ({LAYERS[theirs][0]})")
    assert not upward, "imports that go up a layer (move the shared piece down instead):\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("from tuneforge.report import write_report", ["tuneforge.report"]),
    ("def f():\n    from tuneforge import __version__", ["tuneforge"]),
    ("from . import events", ["tuneforge.monitor.events"]),
    ("from ..core.errors import TuneforgeError", ["tuneforge.core.errors"]),
    ("import json\nimport tuneforge.pipeline as p", ["tuneforge.pipeline"]),
])
def test_imports_are_found_inside_functions_and_relative_ones_resolved(tmp_path, source, expected):
    path = tmp_path / "sinks.py"
    path.write_text(source)
    assert [name for name, _ in imported_modules("tuneforge.monitor.sinks", path)] == expected


def test_an_upward_import_would_be_caught(tmp_path):
    """The check itself can fail: a data module importing the pipeline is an upward import."""
    path = tmp_path / "x.py"
    path.write_text("def later():\n    from tuneforge.pipeline import FineTuningPipeline\n")
    (target, _), = imported_modules("tuneforge.data.x", path)
    assert layer_of(target) > layer_of("tuneforge.data.x")
