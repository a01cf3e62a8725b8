"""Seeded splits that keep equal prompts together, and TrainingDataManager.prepare_data."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_rows, write_jsonl
from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.split import split_examples


def examples(n: int = 100, duplicates: int = 0) -> list[TrainingExample]:
    items = [TrainingExample.from_pair(f"question number {i}", f"answer {i % 3}", source=f"mem:{i}") for i in range(n)]
    # Duplicated prompts, with case and spacing differences that normalise to the same prompt.
    for i in range(duplicates):
        items.append(TrainingExample.from_pair(f"Question   number {i}", f"other answer {i}", source=f"dup:{i}"))
    return items


def sources(items: list[TrainingExample]) -> list[str]:
    return [e.source for e in items]


def normalised(example: TrainingExample) -> str:
    return " ".join(example.input.lower().split())


def test_same_seed_same_split():
    first = split_examples(examples(), 0.1, 0.1, seed=7)
    second = split_examples(examples(), 0.1, 0.1, seed=7)
    assert [sources(part) for part in first] == [sources(part) for part in second]


def test_different_seed_different_split():
    first = split_examples(examples(), 0.1, 0.1, seed=1)
    second = split_examples(examples(), 0.1, 0.1, seed=2)
    assert [sources(part) for part in first] != [sources(part) for part in second]


def test_split_is_a_partition_with_no_prompt_in_two_splits():
    items = examples(100, duplicates=30)
    train, val, test = split_examples(items, 0.2, 0.2, seed=3)
    assert sorted(sources(train + val + test)) == sorted(sources(items))
    prompts = [{normalised(e) for e in part} for part in (train, val, test)]
    assert not prompts[0] & prompts[1]
    assert not prompts[0] & prompts[2]
    assert not prompts[1] & prompts[2]
    # The duplicates really are spread over several groups (otherwise the check above is empty).
    assert sum(1 for e in val + test if e.source.startswith("dup:")) > 0


def test_input_order_does_not_change_the_split():
    items = examples(60)
    forward = split_examples(items, 0.1, 0.2, seed=5)
    backward = split_examples(list(reversed(items)), 0.1, 0.2, seed=5)
    assert [sorted(sources(p)) for p in forward] == [sorted(sources(p)) for p in backward]


@pytest.mark.parametrize("val_share, test_share", [(0.1, 0.1), (0.2, 0.3), (0.0, 0.25), (0.15, 0.0)])
def test_sizes_follow_the_fractions(val_share: float, test_share: float):
    train, val, test = split_examples(examples(200), val_share, test_share, seed=0)
    assert len(val) == pytest.approx(200 * val_share, abs=2)
    assert len(test) == pytest.approx(200 * test_share, abs=2)
    assert len(train) + len(val) + len(test) == 200


def test_tiny_dataset_still_gets_validation_and_test():
    train, val, test = split_examples(examples(5), 0.1, 0.1, seed=0)
    assert len(val) == 1 and len(test) == 1 and len(train) == 3


def test_prepare_data_from_file(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(40))
    data = TrainingDataManager().prepare_data(path, validation_split=0.1, test_split=0.2, seed=1)
    assert len(data.examples) + len(data.validation) + len(data.test) == 40
    assert len(data.validation) == 4 and len(data.test) == 8
    assert data.metadata == {"format": "input_output", "version": 1, "source": str(path)}
    assert data.summary()["train"] == len(data.examples)
    again = TrainingDataManager().prepare_data(path, validation_split=0.1, test_split=0.2, seed=1)
    assert sources(again.test) == sources(data.test)


def test_prepare_data_uses_explicit_validation_and_test_files(tmp_path: Path):
    rows = make_rows(40)
    train_path = write_jsonl(tmp_path / "train.jsonl", rows[:30])
    val_path = write_jsonl(tmp_path / "val.jsonl", rows[30:34])
    test_path = write_jsonl(tmp_path / "test.jsonl", rows[34:])
    data = TrainingDataManager().prepare_data(train_path, validation=val_path, test=test_path, validation_split=0.2, test_split=0.2)
    assert len(data.examples) == 30  # nothing split off when both files are given
    assert [(e.input, e.output) for e in data.validation] == [(r["input"], r["output"]) for r in rows[30:34]]
    assert [(e.input, e.output) for e in data.test] == [(r["input"], r["output"]) for r in rows[34:]]
    assert all(e.source.startswith(str(val_path)) for e in data.validation)

    # Only a validation file: the test set is still split off the training file.
    data = TrainingDataManager().prepare_data(train_path, validation=val_path, validation_split=0.2, test_split=0.2)
    assert len(data.validation) == 4
    assert len(data.test) == 6 and len(data.examples) == 24
    assert all(e.source.startswith(str(train_path)) for e in data.test)


def test_prepare_data_from_records_and_examples():
    records = make_rows(20)
    data = TrainingDataManager().prepare_data(records, validation_split=0.1, test_split=0.1)
    assert data.metadata["source"] == "memory" and data.metadata["format"] == "input_output"
    assert len(data.examples) == 16
    items = [TrainingExample.from_pair(r["input"], r["output"]) for r in records]
    data = TrainingDataManager().prepare_data(items, validation_split=0.0, test_split=0.0)
    assert sorted(e.input for e in data.examples) == sorted(e.input for e in items)
    assert data.validation == [] and data.test == [] and data.metadata["format"] == "examples"


def test_prepare_data_errors(tmp_path: Path):
    with pytest.raises(DatasetError):
        TrainingDataManager().prepare_data([])
    bad_val = tmp_path / "missing-val.jsonl"
    with pytest.raises(DatasetError) as caught:
        TrainingDataManager().prepare_data(make_rows(10), validation=bad_val)
    assert str(bad_val) in str(caught.value)
