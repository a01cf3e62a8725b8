"""``RowFormat``: everything tuneforge knows about one row format, in one object.

A format's spec owns its identifying keys, its optional columns, the converter to a
``TrainingExample``, the data doctor's row checks, and what the cleaner and augmenter may touch.
Detection, conversion, validation, ``prepare`` and the CLI's help all read the specs from the
``ROW_FORMATS`` registry (``tuneforge.core.registries``); adding a format is one file in this
package plus one ``ROW_FORMATS.register(...)`` (or a ``module:attribute`` plug-in naming a spec).

Flat formats (columns of text) are built with ``flat_format``; chat has its own file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tuneforge.data.checks import Location, check_text_field
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding

# Columns every format tolerates without an "unused column" warning.
OPTIONAL_KEYS = frozenset({"system", "metadata", "id", "label", "weight"})

Converter = Callable[[dict[str, Any], str, list[str]], "TrainingExample | None"]
RowCheck = Callable[[dict[str, Any], Location], list[Finding]]
Path = tuple[Any, ...]  # a text inside a row: ("prompt",) or ("messages", 2, "content")


@dataclass(frozen=True)
class RowFormat:
    """One row format.

    Attributes:
        name: the name users give (``--data-format NAME``, ``data_format: NAME``).
        keys: identifying keys: a row that has all of them is in this format (detection).
        optional: optional text columns the format uses (e.g. ``system``).
        convert: ``(row, where, problems) -> TrainingExample | None``; appends ``"where: message"``
            strings to ``problems`` for a row it cannot convert.
        check: ``(row, Location) -> [Finding]``: the data doctor's checks of one row (errors stop
            training, warnings do not). Never raises.
        sample: a valid row, shown in the help text and used by the contract test.
        becomes: what the row turns into, for the help text ("user: prompt / assistant: completion").
        priority: detection order, lower first (a format whose keys include another's goes first).
        text_paths: ``row -> [path]``: the texts of a row the cleaner normalises and the doctor scans.
        prompt_path: ``row -> path | None``: the prompt text that augmentation may rewrite.
        column_type: ``(column, arrow type) -> expected | None``: ``expected`` names the right type
            when a parquet/arrow column has the wrong one, None when it fits (or is not the format's).
    """

    name: str
    keys: tuple[str, ...]
    convert: Converter
    check: RowCheck
    sample: dict[str, Any]
    becomes: str = ""
    optional: tuple[str, ...] = ()
    priority: int = 100
    text_paths: Callable[[dict[str, Any]], list[Path]] | None = None
    prompt_path: Callable[[dict[str, Any]], Path | None] | None = None
    column_type: Callable[[str, str], str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else; "note" is shown in the help text

    def matches(self, row: Any) -> bool:
        """True when ``row`` has every identifying key."""
        return isinstance(row, dict) and all(key in row for key in self.keys)

    @property
    def used_keys(self) -> frozenset[str]:
        """Columns the format reads (the rest, beyond ``OPTIONAL_KEYS``, are reported as unused)."""
        return frozenset(self.keys) | frozenset(self.optional)

    def texts(self, row: dict[str, Any]) -> list[Path]:
        if self.text_paths is not None:
            return self.text_paths(row)
        return [(key,) for key in (*self.keys, *self.optional) if isinstance(row.get(key), str)]

    def prompt(self, row: dict[str, Any]) -> Path | None:
        return self.prompt_path(row) if self.prompt_path is not None else None

    def column_problem(self, column: str, arrow_type: str) -> str | None:
        return self.column_type(column, arrow_type) if self.column_type is not None else None


def check_row_format(name: str, entry: Any) -> RowFormat:
    """The registry's check: a plug-in must be a ``RowFormat`` (or a function returning one)."""
    if callable(entry) and not isinstance(entry, RowFormat):
        entry = entry()
    if not isinstance(entry, RowFormat):
        raise TypeError(f"expected a tuneforge.data.row_formats.RowFormat, got {type(entry).__name__}")
    if not entry.keys:
        raise ValueError("a row format needs at least one identifying key")
    return entry


# ---------------------------------------------------------------- helpers for formats


def text_value(row: dict[str, Any], key: str, where: str, problems: list[str], required: bool = True) -> str:
    """The text of ``row[key]`` (numbers become text); a problem string when missing, empty or not text."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from CSV/parquet
        if required:
            problems.append(f"{where}: missing field '{key}'")
        return ""
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where}: field '{key}' must be text, got {type(value).__name__}")
        return ""
    if required and not value.strip():
        problems.append(f"{where}: field '{key}' is empty")
    return value


def metadata_of(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def _flat_column_type(columns: tuple[str, ...]) -> Callable[[str, str], str | None]:
    def problem(column: str, arrow_type: str) -> str | None:
        if column not in columns:
            return None
        fits = arrow_type in ("string", "large_string", "string_view", "null") or arrow_type.startswith(
            ("int", "uint", "float", "double"))
        return None if fits else "string"

    return problem


def flat_format(name: str, required: tuple[str, ...], build: Callable[[dict[str, str]], TrainingExample],
                sample: dict[str, Any], becomes: str, optional: tuple[str, ...] = (), priority: int = 100,
                prompt_keys: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> RowFormat:
    """A format of text columns: ``required`` must be non-empty text (or numbers), ``optional`` may be absent.

    ``build`` gets ``{column: text}`` of every required and optional column (absent ones as "") and
    returns the example; ``prompt_keys`` are the columns augmentation may rewrite, in order of preference.
    """

    def convert(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
        before = len(problems)
        values = {key: text_value(row, key, where, problems) for key in required}
        values.update({key: text_value(row, key, where, problems, required=False) for key in optional})
        if len(problems) > before:
            return None
        example = build(values)
        example.metadata, example.source = metadata_of(row), where
        return example

    def check(row: dict[str, Any], at: Location) -> list[Finding]:
        problems: list[Finding] = []
        for key in required:
            problems += check_text_field(row, key, at)
        for key in optional:
            problems += check_text_field(row, key, at, required=False)
        return problems

    def prompt_path(row: dict[str, Any]) -> Path | None:
        for key in prompt_keys:
            if isinstance(row.get(key), str) and row[key].strip():
                return (key,)
        return None

    return RowFormat(name=name, keys=required, optional=optional, convert=convert, check=check, sample=sample,
                     becomes=becomes, priority=priority, prompt_path=prompt_path,
                     column_type=_flat_column_type(required + optional), extra=dict(extra or {}))
