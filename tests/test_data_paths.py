"""One reader for every path (issue 9, findings 1-3 and 9): loading, training splits, evaluation.

Every malformed file of tests/malformed/ gives a ``DatasetError`` naming ``file:line`` through every
entry point (never a ValueError or another traceback); validation and test files get the data
doctor's checks and a leakage warning against the training file; a directory of splits keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_rows, write_jsonl
from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.leakage import find_leakage
from tuneforge.data.manager import TrainingDataManager

MALFORMED = Path(__file__).parent / "malformed"
EXPECTED = json.loads((MALFORMED / "expected.json").read_text())
# too_few.jsonl is only an error for training (the minimum); loading it for evaluation is fine.
BROKEN = sorted(name for name in EXPECTED if name != "too_few.jsonl")


def _where(name: str) -> str:
    line = EXPECTED[name]["line"]
    return f"{MALFORMED / name}:{line}" if line is not None else str(MALFORMED / name)


def _assert_names_the_line(error: DatasetError, name: str) -> None:
    assert _where(name) in str(error), str(error)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("train") / "train.jsonl", make_rows(30))


# ---------------------------------------------------------------- finding 1: one reader, DatasetError only


def test_huge_integer_is_a_dataset_error_everywhere(train_file: Path):
    bad = MALFORMED / "huge_integer.jsonl"
    manager = TrainingDataManager()
    for call in (lambda: manager.load(bad), lambda: manager.prepare_data(bad),
                 lambda: manager.prepare_data(bad, skip_invalid=False),
                 lambda: manager.prepare_data(train_file, validation=bad),
                 lambda: manager.prepare_data(train_file, test=bad),
                 lambda: manager.prepare_data(train_file, validation=bad, skip_invalid=False)):
        with pytest.raises(DatasetError) as caught:
            call()
        assert f"{bad}:2" in str(caught.value), str(caught.value)
    data = manager.prepare_data(train_file, test=bad, skip_invalid=True)  # the bad row is dropped, and said so
    assert f"{bad}:2" in [row["where"] for row in data.metadata["dropped"]]


@pytest.mark.parametrize("name", BROKEN)
def test_every_malformed_file_through_load_and_prepare_data(name: str, train_file: Path):
    bad = MALFORMED / name
    manager = TrainingDataManager()
    with pytest.raises(DatasetError) as caught:
        manager.load(bad)
    _assert_names_the_line(caught.value, name)
    with pytest.raises(DatasetError) as caught:
        manager.prepare_data(bad)
    _assert_names_the_line(caught.value, name)
    with pytest.raises(DatasetError) as caught:
        manager.prepare_data(train_file, validation=bad)
    _assert_names_the_line(caught.value, name)
    with pytest.raises(DatasetError) as caught:
        manager.prepare_data(train_file, test=bad, skip_invalid=False)
    _assert_names_the_line(caught.value, name)


def test_eval_command_reports_the_line_not_a_traceback(capsys, tiny_model_dir: Path):
    from tuneforge.cli.main import main

    bad = MALFORMED / "huge_integer.jsonl"
    code = main(["eval", "--data", str(bad), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}:2" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--validation-data", "--test-data"])
def test_finetune_with_a_malformed_split_file_reports_the_line(capsys, tiny_model_dir: Path, train_file: Path,
                                                              tmp_path: Path, flag: str):
    from tuneforge.cli.main import main

    bad = MALFORMED / "huge_integer.jsonl"
    code = main(["finetune", "--data", str(train_file), flag, str(bad), "--model", str(tiny_model_dir),
                 "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}:2" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_real_line_numbers_for_every_file_type(tmp_path: Path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(3)
    listed = tmp_path / "d.json"
    listed.write_text(json.dumps(rows, indent=2))  # each object spans 4 lines after the opening bracket
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("input,output\n" + "".join(f"{r['input']},{r['output']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    manager = TrainingDataManager()
    assert [e.source for e in manager.load(listed)[0]] == [f"{listed}:{n}" for n in (2, 6, 10)]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"note": [1, {"data": 2}],\n "data": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]}")
    assert [e.source for e in manager.load(wrapped)[0]] == [f"{wrapped}:{n}" for n in (3, 4, 5)]
    assert [e.source for e in manager.load(csv_file)[0]] == [f"{csv_file}:{n}" for n in (2, 3, 4)]
    assert manager.load(tmp_path / "d.parquet")[0][2].source == f"{tmp_path / 'd.parquet'}:row 3"
    assert manager.load(tmp_path / "saved")[0][1].source == f"{tmp_path / 'saved'}:row 2"


def test_in_memory_records_name_the_row():
    with pytest.raises(DatasetError) as caught:
        TrainingDataManager().load_records(make_rows(3) + [{"input": "no answer"}])
    assert "records:row 4" in str(caught.value) and "'output'" in str(caught.value)


# ---------------------------------------------------------------- finding 2: checks and leakage of every file


def test_validation_file_gets_the_doctor_and_skip_invalid(tmp_path: Path, train_file: Path):
    rows = [{"input": f"held-out question {i}?", "output": "yes"} for i in range(6)]
    rows[2] = {"input": "no answer"}
    validation = write_jsonl(tmp_path / "val.jsonl", rows)
    manager = TrainingDataManager()
    with pytest.raises(DatasetError) as caught:
        manager.prepare_data(train_file, validation=validation, skip_invalid=False)
    assert f"{validation}:3" in str(caught.value)
    data = manager.prepare_data(train_file, validation=validation, skip_invalid=True)
    assert len(data.validation) == 5
    assert data.metadata["dropped_rows"] == 1 and data.metadata["dropped"][0]["where"] == f"{validation}:3"


def test_leakage_between_train_and_validation_or_test(tmp_path: Path):
    train_rows = make_rows(30)
    train_rows[12] = {"input": "describe in one short sentence the colour of a ripe banana in the sun?", "output": "yellow"}
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    near = dict(train_rows[7], input=train_rows[7]["input"] + " ")  # spacing only: an exact copy after normalising
    close = {"input": train_rows[12]["input"].replace("sun?", "sun!"), "output": "whatever"}
    fresh = {"input": "a question nobody trained on, about something else entirely", "output": "x"}
    validation = write_jsonl(tmp_path / "val.jsonl", [fresh, near, fresh | {"output": "y"}])
    test = write_jsonl(tmp_path / "test.jsonl", [fresh, fresh, close])
    data = TrainingDataManager().prepare_data(train, validation=validation, test=test, skip_invalid=False)
    warnings = data.metadata["warnings"]
    assert [(w["code"], w["where"], w["other_where"]) for w in warnings] == [
        ("split_leakage", f"{validation}:2", f"{train}:8"),
        ("split_leakage", f"{test}:3", f"{train}:13"),
    ]
    assert "validation" in warnings[0]["message"] and "similarity" in warnings[1]["message"]


def test_find_leakage_returns_findings():
    train = [TrainingExample(input=f"question number {i} about colours", output="x", source=f"t.jsonl:{i}")
             for i in range(1, 20)]
    other = [TrainingExample(input="question number 5 about colours", output="y", source="v.jsonl:3"),
             TrainingExample(input="something unrelated", output="y", source="v.jsonl:4")]
    (leak,) = find_leakage(train, other, "validation")
    assert (leak.code, leak.severity, leak.where, leak.other_where) == ("split_leakage", "warning", "v.jsonl:3", "t.jsonl:5")
    assert find_leakage(train, [], "test") == []


def test_no_leakage_no_warnings_key(train_file: Path):
    assert "warnings" not in TrainingDataManager().prepare_data(train_file).metadata


# ---------------------------------------------------------------- finding 3: a directory keeps its splits


def _split_rows() -> dict[str, list[dict[str, str]]]:
    rows = make_rows(40)
    return {"train": rows[:30], "validation": rows[30:35], "test": rows[35:]}


def test_saved_dataset_dict_keeps_its_splits(tmp_path: Path):
    import datasets

    splits = _split_rows()
    directory = tmp_path / "saved"
    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(directory))
    data = TrainingDataManager().prepare_data(directory, validation_split=0.2, test_split=0.2)
    assert sorted(e.input for e in data.examples) == sorted(r["input"] for r in splits["train"])
    assert [e.input for e in data.validation] == [r["input"] for r in splits["validation"]]
    assert [e.input for e in data.test] == [r["input"] for r in splits["test"]]
    assert data.validation[0].source == f"{directory / 'validation'}:row 1"


def test_saved_dataset_dict_without_test_splits_it_off_train(tmp_path: Path):
    import datasets

    splits = _split_rows()
    directory = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(splits["train"]),
                          "validation": datasets.Dataset.from_list(splits["validation"])}).save_to_disk(str(directory))
    data = TrainingDataManager().prepare_data(directory, validation_split=0.2, test_split=0.2, skip_invalid=False)
    assert len(data.validation) == 5
    assert len(data.test) == 6 and len(data.examples) == 24
    assert all(e.source.startswith(str(directory / "train")) for e in data.test)


def test_prepared_directory_keeps_its_splits(tmp_path: Path):
    from tuneforge.data.prepare import PrepareOptions, prepare_dataset

    source = write_jsonl(tmp_path / "raw.jsonl", make_rows(40))
    out = tmp_path / "prepared"
    result = prepare_dataset(source, out, PrepareOptions(split=(0.7, 0.15, 0.15)))
    counts = result.manifest.get("counts")
    data = TrainingDataManager().prepare_data(out, validation_split=0.3, test_split=0.3, skip_invalid=False)
    lines = {name: sum(1 for line in (out / f"{name}.jsonl").read_text().splitlines() if line.strip())
             for name in ("train", "validation", "test")}
    assert (len(data.examples), len(data.validation), len(data.test)) == (lines["train"], lines["validation"], lines["test"])
    assert all(e.source.startswith(str(out / "validation.jsonl")) for e in data.validation)
    assert all(e.source.startswith(str(out / "test.jsonl")) for e in data.test)
    assert "warnings" not in data.metadata, counts  # prepare never puts a prompt in two splits


def test_explicit_validation_file_wins_over_the_directory(tmp_path: Path):
    from tuneforge.data.prepare import prepare_dataset

    out = tmp_path / "prepared"
    prepare_dataset(write_jsonl(tmp_path / "raw.jsonl", make_rows(40)), out)
    other = write_jsonl(tmp_path / "other.jsonl", [{"input": "a separate check?", "output": "yes"}] * 2)
    data = TrainingDataManager().prepare_data(out, validation=other)
    assert [e.source for e in data.validation] == [f"{other}:1", f"{other}:2"]
    assert all(e.source.startswith(str(out / "test.jsonl")) for e in data.test)


# ---------------------------------------------------------------- finding 9: the seed vocabulary


def test_training_example_from_input_output_prompt_completion_and_messages():
    pair = TrainingExample(input="q", output="a")
    assert (pair.input, pair.output) == ("q", "a")
    assert pair.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert TrainingExample(prompt="q", completion="a") == pair == TrainingExample.from_pair("q", "a")
    with_system = TrainingExample(input="q", output="a", system="be brief", source="f:1")
    assert with_system.messages[0] == {"role": "system", "content": "be brief"} and with_system.source == "f:1"
    chat = TrainingExample(messages=pair.messages)
    assert chat == pair and chat.output == "a"
    positional = TrainingExample(pair.messages, None, {"id": 1}, "f:2")
    assert positional.metadata == {"id": 1} and positional.source == "f:2"
    assert TrainingExample(text="raw").is_text


@pytest.mark.parametrize("kwargs", [{"input": "q"}, {"input": "q", "completion": "a"},
                                    {"input": "q", "output": "a", "text": "t"}, {"system": "s"},
                                    {"input": 3, "output": "a"}])
def test_training_example_misuse_is_a_dataset_error(kwargs):
    with pytest.raises(DatasetError):
        TrainingExample(**kwargs)


def test_training_example_is_exported_and_trains_like_a_loaded_row(tmp_path: Path):
    import tuneforge

    data = TrainingDataManager().prepare_data([tuneforge.TrainingExample(input=f"q{i}", output="a") for i in range(10)],
                                              validation_split=0.0, test_split=0.0)
    assert len(data.examples) == 10 and data.metadata["format"] == "examples"


def test_finetune_on_a_prepared_directory_trains_on_its_splits(capsys, tiny_model_dir: Path, tmp_path: Path):
    from tuneforge.cli.main import main
    from tuneforge.data.prepare import PrepareOptions, prepare_dataset

    out = tmp_path / "prepared"
    files = prepare_dataset(write_jsonl(tmp_path / "raw.jsonl", make_rows(30)), out, PrepareOptions(split=(0.6, 0.2, 0.2))).manifest["files"]
    run = tmp_path / "run"
    code = main(["finetune", "--data", str(out), "--model", str(tiny_model_dir), "--output", str(run), "--epochs", "1",
                 "--no-evaluate-base", "--max-new-tokens", "4", "--validation-split", "0.3", "--test-split", "0.3"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((run / "results.json").read_text())["data"]
    assert (data["train"], data["validation"], data["test"]) == tuple(
        files[f"{name}.jsonl"]["rows"] for name in ("train", "validation", "test"))
