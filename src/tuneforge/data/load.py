"""Read data files into rows, each tagged with ``file:line`` (or ``file:row N``).

Supported: ``.jsonl``, ``.json`` (a list of objects, or {"data": [...]}) , ``.csv``, ``.parquet`` and
a ``datasets`` directory saved with ``save_to_disk``. Every unreadable row is reported, all at once.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.core.errors import DatasetError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class RawRow:
    """A row as read from the file, before its format is interpreted."""

    data: Any
    where: str  # "file:line" for messages


def read_rows(path: str | Path) -> list[RawRow]:
    """Read every row of ``path``; raise ``DatasetError`` naming each unreadable line."""
    file = Path(path)
    if not file.exists():
        raise DatasetError(f"data file not found: {file}; check the path (relative paths start at {Path.cwd()})")
    if file.is_dir():
        return _read_saved_dataset(file)
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DatasetError(
            f"{file}: unknown file type '{suffix or '(none)'}'; use one of {', '.join(SUPPORTED_SUFFIXES)} "
            "or a directory saved with datasets' save_to_disk"
        )
    if file.stat().st_size == 0:
        raise DatasetError(f"{file}: the file is empty; add at least one example")
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}[suffix]
    rows = reader(file)
    if not rows:
        raise DatasetError(f"{file}: no rows found; add at least one example")
    return rows


def _read_text(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DatasetError(f"{file}:{line}: not valid UTF-8 (byte {error.start}); save the file as UTF-8") from None


def _read_jsonl(file: Path) -> list[RawRow]:
    rows, problems = [], []
    # Split on "\n" only: str.splitlines() also breaks at U+2028/U+2029/U+0085, which JSON allows in strings.
    for number, line in enumerate(_read_text(file).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(RawRow(json.loads(line), f"{file}:{number}"))
        except json.JSONDecodeError as error:
            problems.append(f"{file}:{number}: invalid JSON ({error.msg} at column {error.colno})")
        except RecursionError:
            problems.append(f"{file}:{number}: JSON nested too deeply")
    if problems:
        raise DatasetError(f"{file}: {len(problems)} line(s) are not valid JSON; fix or remove them:", problems)
    return rows


def _read_json(file: Path) -> list[RawRow]:
    try:
        loaded = json.loads(_read_text(file))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{file}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise DatasetError(f"{file}: JSON nested too deeply") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        loaded = loaded["data"]
    if not isinstance(loaded, list):
        raise DatasetError(f"{file}: expected a JSON list of examples (or {{\"data\": [...]}}); for one example per line use .jsonl")
    return [RawRow(item, f"{file}:row {index}") for index, item in enumerate(loaded, start=1)]


def _read_csv(file: Path) -> list[RawRow]:
    text = _read_text(file)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise DatasetError(f"{file}:{reader.line_num}: more cells than the header has columns; quote fields that contain commas")
            rows.append(RawRow({key: value for key, value in row.items()}, f"{file}:{reader.line_num}"))
    except csv.Error as error:
        raise DatasetError(f"{file}: not readable as CSV ({error})") from None
    return rows


def _read_parquet(file: Path) -> list[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{file}: not a readable parquet file ({error})") from None
    return [RawRow(row, f"{file}:row {index}") for index, row in enumerate(table.to_pylist(), start=1)]


def _read_saved_dataset(directory: Path) -> list[RawRow]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(directory))
    except Exception as error:  # not a saved dataset
        raise DatasetError(f"{directory}: a directory, but not a dataset saved with save_to_disk ({error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DatasetError(f"{directory}: a DatasetDict without a 'train' split; splits found: {list(loaded)}")
        loaded = loaded["train"]
    return [RawRow(row, f"{directory}:row {index}") for index, row in enumerate(loaded, start=1)]
