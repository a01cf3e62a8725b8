"""Preference pairs as data: both row formats are detected, become chosen/rejected examples, are checked by
the data doctor at file:line, and survive the run directory's data snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_jsonl
from tuneforge.core.errors import TuneforgeError
from tuneforge.data.examples import TrainingData
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.snapshot import read_snapshot, write_snapshot
from tuneforge.data.validate import ValidationOptions, validate_data

PROMPT_ROW = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}
MESSAGES_ROW = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sky?"}],
                "chosen": [{"role": "assistant", "content": "blue"}], "rejected": "green"}
OPENAI_ROW = {"input": {"messages": [{"role": "user", "content": "capital of France?"}], "tools": []},
              "preferred_output": [{"role": "assistant", "content": "Paris"}],
              "non_preferred_output": [{"role": "assistant", "content": "Lyon"}]}
OPTIONS = ValidationOptions(near_duplicate_threshold=None)


def test_every_preference_shape_becomes_a_chosen_rejected_pair(tmp_path: Path):
    for row, prompt, chosen, rejected in ((PROMPT_ROW, "2+2=", "4", "5"), (MESSAGES_ROW, "sky?", "blue", "green"),
                                          (OPENAI_ROW, "capital of France?", "Paris", "Lyon")):
        path = write_jsonl(tmp_path / "pairs.jsonl", [row, row])
        examples, detected = TrainingDataManager().load(path)
        assert detected in ("preference", "openai_preference")
        example = examples[0]
        assert (example.input, example.output, example.rejected) == (prompt, chosen, rejected)
        assert example.is_preference and example.messages[-1] == {"role": "assistant", "content": chosen}
    assert examples[0].messages[0] == {"role": "user", "content": "capital of France?"}


@pytest.mark.parametrize("row, field", [
    ({"prompt": "2+2=", "chosen": "4"}, "rejected"),
    ({"messages": [{"role": "user", "content": "q"}], "chosen": "a"}, "rejected"),
    ({"prompt": "2+2=", "chosen": "4", "rejected": 5}, "rejected"),
    ({"chosen": "4", "rejected": "5"}, "prompt"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}]},
     "non_preferred_output"),
    ({"input": {"messages": [{"role": "robot", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "messages[0].role"),
])
def test_a_broken_pair_is_an_error_naming_file_line_and_field(tmp_path: Path, row: dict, field: str):
    good = [_numbered(OPENAI_ROW if "input" in row else PROMPT_ROW, i) for i in range(12)]
    path = write_jsonl(tmp_path / "pairs.jsonl", good[:2] + [row] + good[2:])
    report = validate_data(path, OPTIONS)
    assert not report.ok
    assert {(f.file, f.line, f.field) for f in report.errors} == {(str(path), 3, field)}, [str(f) for f in report.errors]
    assert f"{path}:3" in str(report.errors[0])
    with pytest.raises(TuneforgeError) as caught:
        TrainingDataManager().load(path)
    assert f"{path}:3" in str(caught.value)


def _numbered(row: dict, index: int) -> dict:
    """``row`` with its prompt made distinct (no duplicate warnings)."""
    import copy

    row = copy.deepcopy(row)
    if "input" in row:
        row["input"]["messages"][0]["content"] += f" {index}"
    else:
        row["prompt"] += f" {index}"
    return row


def test_pairs_survive_the_run_directory_snapshot(tmp_path: Path):
    examples = []
    for index, rows in enumerate(([PROMPT_ROW, MESSAGES_ROW], [OPENAI_ROW])):
        examples += TrainingDataManager().load(write_jsonl(tmp_path / f"pairs{index}.jsonl", rows))[0]
    write_snapshot(TrainingData(examples=examples), tmp_path / "data")
    again = read_snapshot(tmp_path / "data").examples
    assert [(e.messages, e.rejected, e.source) for e in again] == [(e.messages, e.rejected, e.source) for e in examples]


def test_finetune_on_a_pair_without_rejected_is_one_message_before_any_run_directory(tmp_path: Path, capsys):
    from tuneforge.cli.main import main

    rows = [_numbered(PROMPT_ROW, i) for i in range(12)]
    del rows[6]["rejected"]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    code = main(["finetune", "--data", str(path), "--objective", "dpo", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "run").exists()
    assert f"{path}:7" in err and "'rejected'" in err and "Traceback" not in err
