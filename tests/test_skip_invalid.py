"""finetune runs the data doctor first: errors refuse training; --skip-invalid drops the bad rows and says which."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import make_rows
from tuneforge.cli.main import main


def _file_with_two_bad_rows(path: Path) -> Path:
    lines = [json.dumps(row) for row in make_rows(24)]
    lines.insert(3, '{"input": "broken json"')  # line 4
    lines.insert(9, json.dumps({"input": "no answer here"}))  # line 10: missing output
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_errors_refuse_training_and_name_every_bad_line(capsys, tiny_model_dir, tmp_path):
    data = _file_with_two_bad_rows(tmp_path / "data.jsonl")
    code = main(["finetune", "--data", str(data), "--model", str(tiny_model_dir), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{data}:4" in err and f"{data}:10" in err
    assert not (tmp_path / "run").exists()


def test_skip_invalid_drops_the_bad_rows_and_reports_them(capsys, tiny_model_dir, tmp_path):
    data = _file_with_two_bad_rows(tmp_path / "data.jsonl")
    run = tmp_path / "run"
    code = main(["finetune", "--data", str(data), "--model", str(tiny_model_dir), "--output", str(run),
                 "--skip-invalid", "--epochs", "1", "--no-evaluate-base", "--max-new-tokens", "4"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "dropped 2 invalid row(s)" in err and f"{data}:4" in err and f"{data}:10" in err
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "succeeded"
    assert results["data"]["dropped_rows"] == 2
    assert results["data"]["train"] + results["data"]["validation"] + results["data"]["test"] == 24
