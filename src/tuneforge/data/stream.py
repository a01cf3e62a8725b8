"""Read a data file one row at a time, so a million-row file takes the memory of one row.

``iter_file(path)`` yields, in file order:

- ``Columns``: the header (CSV) or schema (parquet, saved datasets) before the first row;
- ``SourceRow``: one parsed row with the line it starts on (JSONL, JSON, CSV) or its row number;
- ``Finding``: a problem reading the file or a row. Reading goes on after a bad row, so every bad
  line is reported; it stops only when nothing more can be read.

It never raises for anything in the file: bytes that are not UTF-8, invalid or deeply nested
JSON, huge lines and corrupt parquet files all become findings.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tuneforge.data.findings import Finding, finding

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer JSONL line is reported, not read into memory
MAX_JSON_FILE_BYTES = 2 * 1024 * 1024 * 1024  # a .json file is parsed whole; JSONL streams
PARQUET_BATCH_ROWS = 1024


@dataclass
class SourceRow:
    """A parsed row: ``line`` where it starts (text files) or None; ``row`` its 1-based position."""

    data: Any
    line: int | None
    row: int


@dataclass
class Columns:
    """The columns a CSV header or a parquet/arrow schema declares (``types``: arrow type names)."""

    names: list[str]
    types: dict[str, str] | None = None
    line: int | None = None


Item = SourceRow | Columns | Finding


def iter_file(path: str | Path) -> Iterator[Item]:
    """Every row of ``path`` (a file, or a directory saved with ``datasets``' ``save_to_disk``)."""
    file = Path(path)
    try:
        if not file.exists():
            yield finding("file_not_found", f"not found; check the path (relative paths start at {Path.cwd()})", file)
            return
        if file.is_dir():
            yield from _iter_saved_dataset(file)
            return
        suffix = file.suffix.lower()
        if suffix not in SUFFIXES:
            yield finding("unsupported_file_type", f"unknown file type '{suffix or '(none)'}'; use one of "
                          f"{', '.join(SUFFIXES)} or a directory saved with datasets' save_to_disk", file)
            return
        if file.stat().st_size == 0:
            yield finding("empty_file", "the file is empty; add at least 10 examples", file)
            return
        reader = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet}[suffix]
        yield from reader(file)
    except OSError as error:
        yield finding("unreadable", f"could not read the file ({error.strerror or error})", file)


def parse_json_text(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, problem)``: json.loads without exceptions."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, f"invalid JSON ({error.msg} at column {error.colno})"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as error:  # e.g. an integer with more digits than Python converts
        return None, f"invalid JSON ({error})"


def _iter_jsonl(file: Path) -> Iterator[Item]:
    count = 0
    with open(file, "rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line without keeping it
                    raw = handle.readline(MAX_LINE_BYTES)
                yield finding("line_too_long", f"line longer than {MAX_LINE_BYTES // 2**20} MiB; split the example", file, number)
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield finding("encoding", f"not valid UTF-8 (byte {error.start + 1} of the line); save the file as UTF-8",
                              file, number)
                continue
            if not text.strip():
                continue
            count += 1
            value, problem = parse_json_text(text)
            if problem is not None:
                code = "json_too_deep" if "deeply" in problem else "invalid_json"
                yield finding(code, problem + "; each line must be one JSON object", file, number)
            else:
                yield SourceRow(value, number, count)
    if count == 0:
        yield finding("no_rows", "no rows: the file has only blank lines", file)


def _iter_json(file: Path) -> Iterator[Item]:
    if file.stat().st_size > MAX_JSON_FILE_BYTES:
        yield finding("unreadable", "a .json file this large is parsed whole; convert it to .jsonl (one object per line)", file)
        return
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        yield finding("encoding", f"not valid UTF-8 (byte {error.start + 1} of the file); save the file as UTF-8", file, line)
        return
    del raw
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        yield finding("invalid_json", f"invalid JSON ({error.msg} at column {error.colno})", file, error.lineno)
        return
    except RecursionError:
        yield finding("json_too_deep", "JSON nested too deeply", file)
        return
    except ValueError as error:
        yield finding("invalid_json", f"invalid JSON ({error})", file)
        return
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        items = loaded["data"]
        start = _data_list_start(text)
        lines = _element_lines(text, len(items), start) if start is not None else [None] * len(items)
    elif isinstance(loaded, list):
        items, lines = loaded, _element_lines(text, len(loaded), text.index("["))
    else:
        yield finding("json_not_a_list", "expected a JSON list of examples (or {\"data\": [...]}); "
                      "for one example per line use .jsonl", file, 1)
        return
    if not items:
        yield finding("no_rows", "no rows: the JSON list is empty", file)
    for index, item in enumerate(items, start=1):
        yield SourceRow(item, lines[index - 1], index)


def _data_list_start(text: str) -> int | None:
    """Where the list of ``{"data": [...]}`` opens (the text is a valid JSON object), or None."""
    decoder = json.JSONDecoder()
    position, found = text.index("{") + 1, None
    try:
        while True:
            while text[position] in " \t\r\n,":
                position += 1
            if text[position] == "}":
                return found
            key, position = decoder.raw_decode(text, position)
            while text[position] in " \t\r\n:":
                position += 1
            if key == "data":
                found = position  # the last one wins, as in json.loads
            _, position = decoder.raw_decode(text, position)
    except (ValueError, IndexError, RecursionError):  # cannot happen for valid JSON; fall back to row numbers
        return None


def _element_lines(text: str, count: int, start: int) -> list[int | None]:
    """The line each element of the JSON list opening at ``text[start]`` starts on (the text is valid JSON)."""
    decoder = json.JSONDecoder()
    lines: list[int | None] = []
    position, line = start + 1, text.count("\n", 0, start) + 1
    try:
        for _ in range(count):
            start = position
            while text[position] in " \t\r\n,":
                position += 1
            line += text.count("\n", start, position)
            lines.append(line)
            _, end = decoder.raw_decode(text, position)
            line += text.count("\n", position, end)
            position = end
    except (ValueError, IndexError, RecursionError):  # cannot happen for valid JSON; fall back to row numbers
        return [None] * count
    return lines


def _iter_csv(file: Path) -> Iterator[Item]:
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, MAX_LINE_BYTES))  # long texts are normal; the default is 128 KiB
    try:
        with open(file, "rb") as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
            yield from _csv_rows(file, csv.reader(text))
    finally:
        csv.field_size_limit(limit)


def _has_bad_bytes(cells: list[str]) -> bool:
    return any("\udc80" <= char <= "\udcff" for cell in cells for char in cell if char >= "\udc80")


def _csv_rows(file: Path, reader: Any) -> Iterator[Item]:
    header: list[str] | None = None
    count, last_line = 0, 0
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            yield finding("csv_row", f"not readable as CSV ({error}); check quoting", file, reader.line_num or start)
            if reader.line_num <= last_line:
                break
            last_line = reader.line_num
            continue
        last_line = reader.line_num
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if _has_bad_bytes(cells):
            yield finding("encoding", "not valid UTF-8; save the file as UTF-8", file, start)
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            yield Columns(header, line=start)
            continue
        count += 1
        if len(cells) != len(header):
            more = "more" if len(cells) > len(header) else "fewer"
            yield finding("csv_row", f"{len(cells)} cells, {more} than the header's {len(header)} columns; "
                          "quote fields that contain commas", file, start)
            continue
        yield SourceRow(dict(zip(header, cells)), start, count)
    if count == 0:
        yield finding("no_rows", "no rows: the CSV has a header but no data" if header else "no rows", file)


def _iter_parquet(file: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
        schema = parquet.schema_arrow
    except Exception as error:  # pyarrow raises several types for corrupt files
        yield finding("unreadable", f"not a readable parquet file ({_short(error)})", file)
        return
    yield Columns(list(schema.names), {field.name: str(field.type) for field in schema}, None)
    yield from _iter_batches(file, lambda: parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS))


def _iter_batches(file: Path, batches: Any) -> Iterator[Item]:
    count = 0
    try:
        for batch in batches():
            for data in batch.to_pylist():
                count += 1
                yield SourceRow(data, None, count)
    except Exception as error:  # corrupt pages surface only while reading
        yield finding("unreadable", f"could not read past row {count} ({_short(error)})", file, row=count + 1)
        return
    if count == 0:
        yield finding("no_rows", "no rows: the table is empty", file)


def _iter_saved_dataset(directory: Path) -> Iterator[Item]:
    try:
        import datasets

        loaded = datasets.load_from_disk(str(directory))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                yield finding("unreadable", f"a DatasetDict without a 'train' split; splits found: {list(loaded)}", directory)
                return
            loaded = loaded["train"]
        schema = loaded.data.schema
    except Exception as error:  # not a saved dataset, or a broken one
        yield finding("unreadable", f"a directory, but not a dataset saved with save_to_disk ({_short(error)})", directory)
        return
    yield Columns(list(schema.names), {field.name: str(field.type) for field in schema}, None)
    yield from _iter_batches(directory, lambda: (_Rows(batch) for batch in loaded.iter(batch_size=PARQUET_BATCH_ROWS)))


class _Rows:
    """A datasets column batch ({column: values}) seen as rows, like an arrow RecordBatch."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns

    def to_pylist(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [dict(zip(names, values)) for values in zip(*self.columns.values())]


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
