"""The exception types tuneforge raises.

Every error a user can cause is a ``TuneforgeError``: its message says what was found, where
(file, line, field) and how to fix it. The CLI prints the message and exits 1, never a traceback.
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """Base class of every error a user can act on."""


class ConfigError(TuneforgeError):
    """One or more configuration values are invalid. ``problems`` lists each one."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class DatasetError(TuneforgeError):
    """A data file is missing, unreadable, empty, or has rows that cannot be used.

    ``problems`` holds one ``file:line: message`` string per problem found, all at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        text = message
        if shown:
            text += "\n" + "\n".join(f"  {p}" for p in shown)
        if more > 0:
            text += f"\n  ... and {more} more"
        super().__init__(text)


class ModelNotFoundError(TuneforgeError):
    """``--model`` names nothing that can be loaded offline."""


class ModelLoadError(TuneforgeError):
    """A model was found but could not be loaded or converted."""


class CheckpointError(TuneforgeError):
    """A checkpoint or run directory is missing, incomplete or corrupted."""


class TrainingError(TuneforgeError):
    """Training could not go on (for example the loss became NaN)."""


class UnknownNameError(TuneforgeError):
    """A name (method, objective, metric, row format, exporter, sink) is in no registry.

    ``kind`` is what was looked up ("training method"), ``name`` the name given and ``valid`` the
    names that would have worked; the message lists them.
    """

    def __init__(self, kind: str, name: str, valid: list[str], hint: str = "") -> None:
        self.kind = kind
        self.name = name
        self.valid = valid
        choices = ", ".join(valid) if valid else "(none registered)"
        text = f"unknown {kind} {name!r}; choose from: {choices}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class PluginError(TuneforgeError):
    """A user plug-in (``module:attribute`` string or entry point) could not be imported or is not
    the kind of object its registry holds."""


class InferenceError(TuneforgeError):
    """A generation request cannot be served (an invalid setting, an unknown adapter)."""
