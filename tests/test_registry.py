"""core/registry.py: names, decorator/call registration, plug-ins as module:attribute, entry points."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from tuneforge.core.errors import PluginError, TuneforgeError, UnknownNameError
from tuneforge.core.registry import Registry, import_reference, is_plugin_reference


def test_register_by_call_and_decorator_then_get_and_names() -> None:
    registry: Registry[object] = Registry("widget")
    sentinel = object()
    assert registry.register("b", sentinel) is sentinel

    @registry.register("a")
    def a_widget() -> str:
        return "a"

    assert registry.get("a") is a_widget and registry.get("b") is sentinel
    assert registry.names() == ["a", "b"]
    assert "a" in registry and "c" not in registry and len(registry) == 2


def test_unknown_name_is_a_tuneforge_error_listing_valid_names() -> None:
    registry: Registry[int] = Registry("training method")
    registry.register("lora", 1)
    registry.register("full", 2)
    with pytest.raises(UnknownNameError) as caught:
        registry.get("qlora")
    error = caught.value
    assert isinstance(error, TuneforgeError)
    assert error.valid == ["full", "lora"] and error.name == "qlora"
    assert "training method 'qlora'" in str(error) and "full, lora" in str(error)
    assert registry.problem("qlora", "method").startswith("method: unknown training method 'qlora'")
    assert registry.problem("lora", "method") is None


def test_duplicate_name_refused_unless_replace() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("x", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x", 2)
    registry.register("x", 1)  # the same object again: harmless (module re-imported)
    registry.register("x", 3, replace=True)
    assert registry.get("x") == 3
    with pytest.raises(ValueError):
        registry.register("a:b", 4)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    source = textwrap.dedent(
        """
        class Holder:
            inner = "nested"

        thing = 42
        not_an_int = "text"
        """
    )
    (tmp_path / "tf_test_plugin_mod.py").write_text(source, encoding="utf-8")
    (tmp_path / "tf_test_broken_mod.py").write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tf_test_plugin_mod"
    for name in ("tf_test_plugin_mod", "tf_test_broken_mod"):
        sys.modules.pop(name, None)


def test_plugin_reference_is_imported_registered_and_returned(plugin_module) -> None:
    registry: Registry[int] = Registry("widget")
    assert is_plugin_reference(f"{plugin_module}:thing") and not is_plugin_reference("lora")
    assert registry.get(f"{plugin_module}:thing") == 42
    assert registry.get(f"{plugin_module}:Holder.inner") == "nested"
    # resolved once, then served from the registry; plug-in references are not listed as names
    assert f"{plugin_module}:thing" in registry._entries and registry.names() == []


def test_plugin_errors_name_module_or_attribute(plugin_module) -> None:
    registry: Registry[int] = Registry("widget")
    with pytest.raises(PluginError, match="cannot import module 'no_such_module_xyz'.*PYTHONPATH"):
        registry.get("no_such_module_xyz:thing")
    with pytest.raises(PluginError, match="has no attribute 'missing'.*thing"):
        registry.get(f"{plugin_module}:missing")
    with pytest.raises(PluginError, match="importing module 'tf_test_broken_mod' failed: RuntimeError: boom"):
        registry.get("tf_test_broken_mod:x")
    with pytest.raises(PluginError, match="expected 'module:attribute'"):
        import_reference(":x")


def test_check_validates_builtins_and_plugins(plugin_module) -> None:
    def must_be_int(name: str, entry: object) -> int:
        if not isinstance(entry, int):
            raise TypeError(f"expected an int, got {type(entry).__name__}")
        return entry

    registry: Registry[int] = Registry("number", check=must_be_int)
    registry.register("one", 1)
    with pytest.raises(PluginError, match="number 'two' cannot be used: expected an int, got str"):
        registry.register("two", "2")  # type: ignore[arg-type]
    assert registry.get(f"{plugin_module}:thing") == 42
    with pytest.raises(PluginError, match="expected an int, got str"):
        registry.get(f"{plugin_module}:not_an_int")
    assert registry.problem(f"{plugin_module}:not_an_int", "field").startswith("field: number")


def test_entry_points_are_discovered_lazily(plugin_module, monkeypatch) -> None:
    found = [
        EntryPoint(name="from_ep", value=f"{plugin_module}:thing", group="tuneforge.tests"),
        EntryPoint(name="broken_ep", value="no_such_module_xyz:thing", group="tuneforge.tests"),
    ]
    calls = []

    def fake_entry_points(group: str):
        calls.append(group)
        return [ep for ep in found if ep.group == group]

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    registry: Registry[int] = Registry("widget", entry_point_group="tuneforge.tests")
    registry.register("builtin", 0)
    assert registry.names() == ["broken_ep", "builtin", "from_ep"]
    assert registry.get("from_ep") == 42
    with pytest.raises(PluginError, match="entry point 'no_such_module_xyz:thing'.*failed to load"):
        registry.get("broken_ep")
    assert calls == ["tuneforge.tests"]  # discovered once


def test_builtins_modules_are_imported_on_first_lookup(tmp_path, monkeypatch) -> None:
    registry: Registry[int] = Registry("widget", builtins=("tf_test_builtins_mod",))
    (tmp_path / "tf_test_builtins_mod.py").write_text(
        "from tests_registry_holder import REGISTRY\nREGISTRY.register('built_in', 7)\n", encoding="utf-8")
    holder = type(sys)("tests_registry_holder")
    holder.REGISTRY = registry
    monkeypatch.setitem(sys.modules, "tests_registry_holder", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tf_test_builtins_mod" not in sys.modules
    try:
        assert registry.names() == ["built_in"] and registry.get("built_in") == 7
    finally:
        sys.modules.pop("tf_test_builtins_mod", None)
