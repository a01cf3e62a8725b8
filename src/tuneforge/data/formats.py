"""Row formats, as the rest of the data package used to see them: detection and conversion by name.

The formats themselves are specs in ``data/row_formats/`` (one file each) registered in
``tuneforge.core.registries.ROW_FORMATS``; this module keeps the older names working as live
views of that registry (``FORMAT_KEYS``, ``CONVERTERS``), so a format registered later shows up too.
"""

from __future__ import annotations

from typing import Any, Callable

from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats import (MESSAGE_KEYS, OPTIONAL_KEYS, detect_row_format, expected_columns, format_names,
                                        get_format, registered_formats)

__all__ = ["CONVERTERS", "FORMAT_KEYS", "MESSAGE_KEYS", "OPTIONAL_KEYS", "convert_row", "detect_row_format",
           "expected_columns", "format_names", "get_format"]


def convert_row(row: dict[str, Any], data_format: str, where: str, problems: list[str]) -> TrainingExample | None:
    """``row`` as an example in ``data_format``; problem strings (``where: message``) appended to ``problems``."""
    return get_format(data_format).convert(row, where, problems)


def __getattr__(name: str) -> Any:
    # Computed on access so formats registered after import (plug-ins) are included.
    if name == "FORMAT_KEYS":
        return {spec.name: spec.keys for spec in registered_formats()}
    if name == "CONVERTERS":
        converters: dict[str, Callable[[dict[str, Any], str, list[str]], TrainingExample | None]] = {
            spec.name: spec.convert for spec in registered_formats()}
        return converters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
