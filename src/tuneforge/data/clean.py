"""Cleaning of the text in a row: Unicode NFC, line ends and whitespace, control and invisible characters.

Only the texts the format trains on are touched (never ``metadata``), and each change is named so
``prepare``'s manifest can say what was done to which line and field. Indentation inside a text is
kept (code answers rely on it); runs of spaces between words, spaces at line ends, outer blank space
and runs of blank lines go.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from typing import Any

from tuneforge.core.registries import ROW_FORMATS


# C0/C1 controls except tab and newline, plus zero-width and byte-order marks that render as nothing.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200c\u200d\u2060\ufeff]")
_ODD_SPACES = re.compile("[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")  # between words; indentation at line starts is kept


def clean_text(text: str) -> tuple[str, list[str]]:
    """The cleaned text and the names of the changes made: ``unicode_nfc``, ``control_characters``, ``whitespace``."""
    changes: list[str] = []
    cleaned = unicodedata.normalize("NFC", text)
    if cleaned != text:
        changes.append("unicode_nfc")
    before = cleaned
    cleaned = _CONTROL.sub("", cleaned.replace("\r\n", "\n").replace("\r", "\n"))
    if cleaned != before.replace("\r\n", "\n").replace("\r", "\n"):
        changes.append("control_characters")
    spaced = _INNER_SPACES.sub(" ", _ODD_SPACES.sub(" ", cleaned))
    spaced = _BLANK_RUNS.sub("\n\n", _TRAILING.sub("\n", spaced)).strip()
    if spaced != cleaned or "\r" in before:
        changes.append("whitespace")
    return spaced, changes


def text_fields(row: dict[str, Any], data_format: str, template_fields: list[str] | None = None) -> list[tuple[Any, ...]]:
    """Paths to the texts of ``row``: ``(key,)`` for a column, ``("messages", i, "content")`` for a turn."""
    if template_fields is not None:
        return [(key,) for key in template_fields if isinstance(row.get(key), str)]
    from tuneforge.data.row_formats import get_format

    return get_format(data_format).texts(row) if data_format in ROW_FORMATS else []


def field_name(path: tuple[Any, ...]) -> str:
    return f"messages[{path[1]}].content" if path[0] == "messages" else str(path[0])


def get_path(row: dict[str, Any], path: tuple[Any, ...]) -> Any:
    value: Any = row
    for part in path:
        value = value[part]
    return value


def set_path(row: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = row
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def clean_row(row: dict[str, Any], data_format: str, template_fields: list[str] | None = None) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A cleaned copy of ``row`` and ``{field: [changes]}`` for each text that changed."""
    cleaned = copy.deepcopy(row)
    changed: dict[str, list[str]] = {}
    for path in text_fields(cleaned, data_format, template_fields):
        text, changes = clean_text(get_path(cleaned, path))
        if changes:
            set_path(cleaned, path, text)
            changed[field_name(path)] = changes
    return cleaned, changed
