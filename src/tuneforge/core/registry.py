"""One small registry for every extension point: training methods, objectives, metrics, row
formats, exporters, metric sinks.

A registry maps names to entries (specs, classes or functions, whatever the seam needs)::

    METHODS: Registry[MethodSpec] = Registry("training method", entry_point_group="tuneforge.methods")

    @METHODS.register("lora")              # decorator ...
    class LoraMethod: ...

    METHODS.register("full", FullMethod())  # ... or call

    METHODS.get("lora")                     # the entry; unknown names raise UnknownNameError
    METHODS.get("my_pkg.methods:dora")      # a user plug-in: imported, registered, returned
    METHODS.names()                         # ["full", "lora", ...] (built-ins and entry points)

A user plug-in is a ``module:attribute`` string (the module must be importable, e.g. on
``PYTHONPATH``), or an installed package's entry point in the registry's group, for example in
its ``pyproject.toml``::

    [project.entry-points."tuneforge.methods"]
    dora = "my_pkg.methods:dora"

The registry *instances* that a lower layer must look names up in (config validation sits below
the model and train code that implements methods and objectives) live in ``core/registries.py``;
each names its ``builtins``: the modules that register the built-in entries, imported on the first
lookup. So ``config`` can validate ``method: lora`` without importing the model layer, and the
entries live beside the code they drive.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar, overload

from tuneforge.core.errors import PluginError, UnknownNameError

T = TypeVar("T")

PLUGIN_SEPARATOR = ":"


def is_plugin_reference(name: str) -> bool:
    """True for a ``module:attribute`` string (a user plug-in), False for a plain registry name."""
    module, sep, attribute = name.partition(PLUGIN_SEPARATOR)
    return bool(sep and module and attribute)


def import_reference(reference: str, kind: str = "plug-in") -> Any:
    """Import ``module:attribute`` (the attribute may be dotted: ``module:Class.factory``).

    Raises ``PluginError`` saying whether the module or the attribute is missing and how to fix it.
    """
    module_name, _, attribute = reference.partition(PLUGIN_SEPARATOR)
    if not module_name or not attribute:
        raise PluginError(f"{kind} {reference!r}: expected 'module:attribute', e.g. 'my_package.my_module:my_object'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        raise PluginError(
            f"{kind} {reference!r}: cannot import module {module_name!r} (no module named {missing!r}); "
            "check the spelling, install the package, or add its folder to PYTHONPATH"
        ) from error
    except Exception as error:  # the plug-in's own code failed while importing
        raise PluginError(
            f"{kind} {reference!r}: importing module {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(target) if not n.startswith("_"))
            shown = ", ".join(public[:20]) + (", ..." if len(public) > 20 else "")
            raise PluginError(f"{kind} {reference!r}: {module_name!r} has no attribute {part!r}; it defines: {shown}")
        target = getattr(target, part)
    return target


class Registry(Generic[T]):
    """Names -> entries of one kind.

    ``kind`` names the seam in messages ("training method"). ``entry_point_group`` (optional) is an
    ``importlib.metadata`` group whose entry points are offered as names too, loaded on first use.
    ``check`` (optional) validates or converts an entry when it is registered (built-in or plug-in)
    and raises ``PluginError``/``TypeError`` for an object that cannot serve; it returns the entry
    to store. ``hint`` is added to the unknown-name message (e.g. how to write a plug-in).
    """

    def __init__(
        self,
        kind: str,
        *,
        entry_point_group: str | None = None,
        check: Callable[[str, Any], T] | None = None,
        hint: str = "or give a plug-in as 'module:attribute'",
        builtins: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._check = check
        self._hint = hint
        self._entries: dict[str, T] = {}
        self._entry_points: dict[str, Any] | None = None  # name -> EntryPoint, discovered lazily
        self._builtins = builtins
        self._builtins_loaded = not builtins

    def set_check(self, check: Callable[[str, Any], T]) -> None:
        """Install the entry validator (done by the builtins module, which knows the entry type)."""
        self._check = check

    # registering -----------------------------------------------------------------------------

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, entry: Any = None, *, replace: bool = False) -> Any:
        """Register ``entry`` under ``name`` and return it; without ``entry``, return a decorator.

        Registering a taken name raises ``ValueError`` unless ``replace`` (a second registration of
        the same object is a no-op, so re-importing a module is harmless).
        """
        if entry is None:
            return lambda obj: self.register(name, obj, replace=replace)
        if not name or PLUGIN_SEPARATOR in name:
            raise ValueError(f"{self.kind} name {name!r} must be non-empty and contain no {PLUGIN_SEPARATOR!r}")
        stored = self._validated(name, entry)
        existing = self._entries.get(name)
        if existing is not None and not replace and existing is not stored and existing is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to override it")
        self._entries[name] = stored
        return entry

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests use it to clean up what they registered)."""
        self._entries.pop(name, None)

    # looking up ------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The entry named ``name``, or the plug-in a ``module:attribute`` string refers to.

        A plug-in is imported, checked and registered under its reference string (so a run's saved
        config that names it resolves the same way later). Raises ``UnknownNameError`` listing the
        valid names, or ``PluginError`` when a plug-in cannot be imported or is unfit.
        """
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and is_plugin_reference(name):
            entry = self._validated(name, import_reference(name, kind=self.kind))
            self._entries[name] = entry
            return entry
        entry_point = self._discover().get(name) if isinstance(name, str) else None
        if entry_point is not None:
            try:
                loaded = entry_point.load()
            except Exception as error:
                raise PluginError(
                    f"{self.kind} {name!r} (entry point {entry_point.value!r} of group {self.entry_point_group!r}) "
                    f"failed to load: {type(error).__name__}: {error}"
                ) from error
            entry = self._validated(name, loaded)
            self._entries[name] = entry
            return entry
        raise UnknownNameError(self.kind, str(name), self.names(), self._hint)

    def names(self) -> list[str]:
        """Every name ``get`` accepts without a plug-in reference, sorted (built-ins + entry points)."""
        self._load_builtins()
        return sorted({*self._entries, *self._discover()} - {n for n in self._entries if is_plugin_reference(n)})

    def problem(self, name: str, field: str) -> str | None:
        """``None`` when ``name`` resolves, else a one-line problem for ``ConfigError`` naming ``field``."""
        try:
            self.get(name)
        except (UnknownNameError, PluginError) as error:
            return f"{field}: {error}"
        return None

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return isinstance(name, str) and (name in self._entries or name in self._discover())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"

    # internals -------------------------------------------------------------------------------

    def _validated(self, name: str, entry: Any) -> T:
        if self._check is None:
            return entry
        try:
            return self._check(name, entry)
        except PluginError:
            raise
        except (TypeError, ValueError) as error:
            raise PluginError(f"{self.kind} {name!r} cannot be used: {error}") from error

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True  # before importing: the modules register into this registry
        for module in self._builtins:
            importlib.import_module(module)

    def _discover(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {}
            if self.entry_point_group:
                from importlib.metadata import entry_points

                try:
                    found = entry_points(group=self.entry_point_group)
                except Exception:  # a broken installed distribution must not break every lookup
                    found = []
                self._entry_points = {ep.name: ep for ep in found}
        return self._entry_points
