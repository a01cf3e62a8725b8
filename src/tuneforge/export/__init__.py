"""Exporters: turn a finished run into something another tool runs (merged weights, GGUF, ONNX, ...).

An exporter is an object with the ``Exporter`` shape registered in ``core.registries.EXPORTERS``
(or named as a ``module:attribute`` plug-in). Each one is one file in this package plus
``EXPORTERS.register(name, exporter)`` (see docs/SEAMS.md): ``merged`` (HF safetensors), ``gguf``,
``gguf-lora`` and ``ollama`` (llama.cpp's own converter and quantizer) and ``onnx``. ``export`` does
the conversion; ``check`` proves the result answers like the run it came from (``export.parity``), so
a broken export never goes unnoticed. ``export_model`` (``export.api``) is the one entry point: it
checks the input, exports into a staging directory, runs the check, writes ``export_manifest.json``
and only then publishes the directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.registries import EXPORTERS


class ExportError(TuneforgeError):
    """An export cannot be made: a run without weights or unfinished, an unsupported architecture,
    an unknown quantization, a missing optional extra. The message says what to install or choose."""


class ParityError(ExportError):
    """The export answers differently from the trained model (under the agreement threshold)."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ExportResult:
    """What an export wrote and what its check found."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportCheck:
    """The parity check of an export: ``passed`` and, when not, what differed (per prompt)."""

    passed: bool
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Exporter(Protocol):
    """The contract of an exporter.

    ``name``: the registry name. ``description``: one line for help texts. ``methods``: the
    training methods it can export (empty: any). ``export(run_dir, out_dir, **options)`` writes the
    exported model to ``out_dir`` and raises a ``TuneforgeError`` subclass saying what to fix when
    it cannot. ``check(run_dir, out_dir, **options)`` compares the export with the run's own
    model and reports, never raises, a mismatch.
    """

    name: str
    description: str
    methods: tuple[str, ...]

    def export(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportResult: ...

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck: ...


def _check_exporter(name: str, entry: Any) -> Exporter:
    if isinstance(entry, type):
        entry = entry()
    missing = [attribute for attribute in ("name", "description", "methods", "export", "check") if not hasattr(entry, attribute)]
    if missing:
        raise TypeError(f"an exporter needs {', '.join(missing)} (see tuneforge.export.Exporter)")
    return entry


EXPORTERS.set_check(_check_exporter)


def get_exporter(name: str) -> Exporter:
    """The registered exporter ``name``; ``UnknownNameError`` lists the valid ones."""
    return EXPORTERS.get(name)


# The built-in exporters register themselves (imported last: they use the names above).
from tuneforge.export import merged as _merged  # noqa: E402,F401
from tuneforge.export import gguf as _gguf  # noqa: E402,F401
from tuneforge.export import ollama as _ollama  # noqa: E402,F401
from tuneforge.export import onnx as _onnx  # noqa: E402,F401
from tuneforge.export.api import export_model  # noqa: E402

__all__ = ["EXPORTERS", "ExportCheck", "ExportError", "ExportResult", "Exporter", "ParityError", "export_model",
           "get_exporter"]
