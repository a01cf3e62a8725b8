"""No input makes the loaders or the data doctor crash: every outcome is a report or a clear DatasetError.

Hypothesis feeds arbitrary bytes, arbitrary JSON values (wrong types, deep nesting), huge lines and
odd Unicode to ``validate_data``, ``load_checked``, ``prepare_dataset`` and the loader.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.core.errors import DatasetError
from tuneforge.data.findings import CODES
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.validate import ValidationOptions, load_checked, validate_data

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KEYS = ["messages", "input", "output", "prompt", "completion", "instruction", "text", "system", "role", "content",
        "weight", "label", "metadata", "name", "x"]
ROLES = st.sampled_from(["system", "user", "assistant", "bot", "", "ASSISTANT"])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
                      max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": ROLES, "content": st.text(max_size=30) | scalars},
                                          optional={"weight": scalars, "extra": scalars}) | values, max_size=4)
rows = st.one_of(
    st.fixed_dictionaries({"messages": messages}),
    st.fixed_dictionaries({"input": st.text(max_size=30) | scalars, "output": st.text(max_size=30) | scalars}, optional={"system": values}),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=5),
    values,
)


def check_report(report, path: Path) -> None:
    assert report.stats["rows"] >= 0
    for item in report.findings:
        assert item.code in CODES and item.severity == CODES[item.code][0]
        assert item.where.startswith(str(path)) and item.message
    json.dumps(report.to_dict())  # the --json output always serialises


def write(data: bytes, suffix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="tuneforge-fuzz-"))
    path = directory / f"data{suffix}"
    path.write_bytes(data)
    return path


def loader_outcome(path: Path) -> None:
    try:
        TrainingDataManager().load(path)
    except DatasetError:
        pass


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_arbitrary_bytes(data: bytes, suffix: str):
    path = write(data, suffix)
    check_report(validate_data(path), path)
    loader_outcome(path)


@FAST
@given(lines=st.lists(rows, min_size=1, max_size=15))
def test_arbitrary_json_rows(lines):
    path = write("".join(json.dumps(row) + "\n" for row in lines).encode(), ".jsonl")
    report = validate_data(path)
    check_report(report, path)
    try:
        checked = load_checked(path, skip_invalid=True)
    except DatasetError:
        return
    assert len(checked.examples) >= 10 and all(e.source for e in checked.examples)


@FAST
@given(lines=st.lists(rows, min_size=1, max_size=15))
def test_arbitrary_json_list_file(lines):
    path = write(json.dumps(lines).encode(), ".json")
    check_report(validate_data(path), path)
    loader_outcome(path)


@FAST
@given(cells=st.lists(st.lists(st.text(max_size=15), min_size=0, max_size=4), min_size=1, max_size=12),
       header=st.sampled_from(["input,output", "prompt,completion", "text", "a,b", "input,input", ""]))
def test_arbitrary_csv(cells, header):
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(cells)
    path = write((header + "\n" + buffer.getvalue()).encode("utf-8", "surrogatepass"), ".csv")
    check_report(validate_data(path), path)


@FAST
@given(texts=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=12))
def test_odd_unicode_through_the_tokenizer(texts, tiny_tokenizer):
    rows_ = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t[::-1] or "x"}]} for t in texts]
    path = write("".join(json.dumps(r) + "\n" for r in rows_).encode(), ".jsonl")
    report = validate_data(path, ValidationOptions(max_length=16, show_tokens=2), tokenizer=tiny_tokenizer)
    check_report(report, path)


@settings(max_examples=5, deadline=None)
@given(depth=st.integers(min_value=500, max_value=200_000))
def test_deep_json(depth: int):
    path = write(("[" * depth + "]" * depth + "\n").encode() * 2, ".jsonl")
    report = validate_data(path)
    check_report(report, path)
    assert {f.code for f in report.errors} <= {"json_too_deep", "data_type", "too_few_examples"}


def test_huge_line_is_read_and_checked(tmp_path: Path):
    path = tmp_path / "huge.jsonl"
    big = {"input": "word " * 1_000_000, "output": "x"}  # a 5 MB line
    path.write_text(json.dumps(big) + "\n" + "".join(json.dumps({"input": f"q{i}", "output": "a"}) + "\n" for i in range(12)))
    report = validate_data(path, ValidationOptions(near_duplicate_threshold=None))
    assert report.ok and report.stats["lengths"]["prompt"]["max"] == len(big["input"])


def test_line_over_the_reader_limit(tmp_path: Path, monkeypatch):
    from tuneforge.data import stream

    monkeypatch.setattr(stream, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"input": "y" * 5000, "output": "x"}) + "\n" + json.dumps({"input": "q", "output": "a"}) + "\n")
    report = validate_data(path)
    assert ("line_too_long", 1) in [(f.code, f.line) for f in report.errors]
    assert report.stats["usable_examples"] == 1


def test_prepare_never_crashes_on_fuzzed_rows(tmp_path: Path):
    from tuneforge.data.prepare import prepare_dataset

    @FAST
    @given(lines=st.lists(rows, min_size=1, max_size=20))
    def run(lines):
        path = write("".join(json.dumps(row) + "\n" for row in lines).encode(), ".jsonl")
        try:
            result = prepare_dataset(path, path.parent / "out")
        except DatasetError:
            return
        assert (path.parent / "out" / "manifest.json").is_file()
        assert sum(result.manifest["counts"]["written"].values()) >= 1

    run()
