"""The malformed-file corpus: each file in tests/malformed gets the finding expected.json names, at its
line and field, from the library and from the CLI (exit 1, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.findings import CODES
from tuneforge.data.validate import validate_data

CORPUS = Path(__file__).parent / "malformed"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir() if p.name not in ("expected.json", "make_corpus.py", "__pycache__")}
    assert files == set(EXPECTED)
    assert len(files) >= 30
    assert {e["code"] for e in EXPECTED.values()} <= set(CODES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_file_reports_expected_finding(name: str):
    expected = EXPECTED[name]
    path = CORPUS / name
    report = validate_data(path)
    assert not report.ok, f"{name}: no error reported"
    matching = [f for f in report.findings if f.code == expected["code"]]
    assert matching, f"{name}: expected {expected['code']}, got {[str(f) for f in report.findings]}"
    found = matching[0]
    assert found.severity == "error"
    assert found.file == str(path)
    assert found.line == expected["line"], str(found)
    if expected["field"] is not None:
        assert found.field == expected["field"], str(found)
    assert expected["message"] in found.message, str(found)
    where = f"{path}:{expected['line']}" if expected["line"] else str(path)
    assert str(found).startswith(where)


@pytest.mark.parametrize("name", ["invalid_json.jsonl", "chat_bad_role.jsonl", "wrong_columns.csv", "corrupt.parquet",
                                  "deep_nesting.jsonl", "empty.jsonl"])
def test_cli_exit_1_with_message(name: str, capsys):
    from tuneforge.cli.main import main

    code = main(["validate", str(CORPUS / name)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out + err
    assert EXPECTED[name]["code"] in out
    assert EXPECTED[name]["message"] in out
