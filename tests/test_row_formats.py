"""The row-format registry: every registered format honours the same contract (issue 9, the formats seam).

For each format in ``ROW_FORMATS``: its sample row converts, detection finds it, the data doctor
accepts a file of it, and a broken row is a finding with file:line. Plus: config, the CLI help and
plug-ins all read the same registry.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from helpers import write_jsonl
from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.examples import TrainingExample
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.row_formats import RowFormat, detect_row_format, flat_format, format_names, formats_help, get_format
from tuneforge.data.validate import ValidationOptions, validate_data

FORMATS = format_names()


def _rows(spec: RowFormat, count: int = 12) -> list[dict]:
    """``count`` distinct valid rows of the format: its sample with a number appended to every text."""
    rows = []
    for index in range(count):
        row = copy.deepcopy(spec.sample)
        for path in spec.texts(row):
            target = row
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = f"{target[path[-1]]} {index}"
        rows.append(row)
    return rows


def _broken(spec: RowFormat) -> dict:
    """The sample with its first identifying key holding a list of a number: no format accepts that."""
    row = copy.deepcopy(spec.sample)
    row[spec.keys[0]] = [1]
    return row


def test_the_builtin_formats_are_registered():
    assert set(FORMATS) >= {"chat", "prompt_completion", "input_output", "instruction", "text"}
    assert FORMATS.index("instruction") < FORMATS.index("input_output")  # the more specific keys first


@pytest.mark.parametrize("name", FORMATS)
def test_sample_row_converts_and_is_detected(name: str):
    spec = get_format(name)
    assert spec.name == name and detect_row_format(spec.sample) == name
    problems: list[str] = []
    example = spec.convert(spec.sample, "f.jsonl:1", problems)
    assert problems == [] and isinstance(example, TrainingExample) and example.source == "f.jsonl:1"
    assert example.is_text or example.output
    assert spec.check(spec.sample, _location()) == [] or all(f.severity == "warning" for f in spec.check(spec.sample, _location()))


@pytest.mark.parametrize("name", FORMATS)
def test_the_doctor_accepts_a_file_of_the_format(name: str, tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(get_format(name)))
    report = validate_data(path, ValidationOptions(near_duplicate_threshold=None))
    assert report.ok, [str(f) for f in report.errors]
    assert report.data_format == name
    examples, detected = TrainingDataManager().load(path)
    assert detected == name and len(examples) == 12
    forced, _ = TrainingDataManager(data_format=name).load(path)
    assert [e.source for e in forced] == [e.source for e in examples]


@pytest.mark.parametrize("name", FORMATS)
def test_a_broken_row_is_a_finding_with_file_and_line(name: str, tmp_path: Path):
    spec = get_format(name)
    rows = _rows(spec)
    rows.insert(4, _broken(spec))  # line 5
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = validate_data(path, ValidationOptions(near_duplicate_threshold=None))
    assert report.errors and {(f.file, f.line) for f in report.errors} == {(str(path), 5)}, [str(f) for f in report.findings]
    with pytest.raises(TuneforgeError) as caught:
        TrainingDataManager().load(path)
    assert f"{path}:5" in str(caught.value)


def test_config_and_cli_read_the_registry():
    from tuneforge.cli.flags import data_format_choices
    from tuneforge.config import make_config

    assert make_config({"data_format": "instruction"}).data_format == "instruction"
    with pytest.raises(ConfigError) as caught:
        make_config({"data_format": "yaml"})
    assert "data_format" in str(caught.value) and all(name in str(caught.value) for name in FORMATS)
    assert data_format_choices() == ["auto", *FORMATS]
    help_text = formats_help()
    assert all(name in help_text for name in FORMATS)


def _location():
    from tuneforge.data.checks import Location

    return Location("f.jsonl", 1, None)


QA = flat_format("qa", ("question", "answer"), lambda v: TrainingExample(input=v["question"], output=v["answer"]),
                 sample={"question": "sky?", "answer": "blue"}, becomes="user: question / assistant: answer",
                 priority=50, prompt_keys=("question",))


def test_a_new_format_is_one_spec_and_one_registration(tmp_path: Path):
    ROW_FORMATS.register("qa", QA)
    try:
        assert "qa" in format_names() and "qa" in formats_help()
        path = write_jsonl(tmp_path / "qa.jsonl", _rows(QA))
        examples, detected = TrainingDataManager().load(path)
        assert detected == "qa" and examples[0].output == "blue 0"
        from tuneforge.config import make_config

        assert make_config({"data_format": "qa"}).data_format == "qa"
    finally:
        ROW_FORMATS.unregister("qa")
    assert "qa" not in format_names()


def test_a_plugin_format_by_module_attribute(tmp_path: Path):
    from tuneforge.config import make_config

    reference = "test_row_formats:QA"
    try:
        assert make_config({"data_format": reference}).data_format == reference
        path = write_jsonl(tmp_path / "qa.jsonl", _rows(QA))
        examples, detected = TrainingDataManager(data_format=reference).load(path)
        assert len(examples) == 12 and examples[3].input == "sky? 3"
        with pytest.raises(ConfigError):
            make_config({"data_format": "test_row_formats:NOPE"})
    finally:
        ROW_FORMATS.unregister(reference)
