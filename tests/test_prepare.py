"""``prepare``: cleaning, deduplication, leak-free (stratified) splits, balance, augmentation, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_rows, write_jsonl
from tuneforge.core.errors import ConfigError, DatasetError
from tuneforge.data.clean import clean_text
from tuneforge.data.prepare import PrepareOptions, prepare_dataset


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def labelled(n: int = 60) -> list[dict]:
    words = "apple river stone cloud piano tiger lemon chair ocean violin maple rocket candle forest garden".split()
    return [{"input": f"item {i}: {words[i % len(words)]} {words[(i * 7) % len(words)]} number {i * 37}",
             "output": "pos" if i % 4 else "neg"} for i in range(n)]


def test_clean_text():
    assert clean_text("Cafe\u0301  au\u00a0lait \x07\r\n\n\n\n  next  ") == ("Café au lait\n\n  next", ["unicode_nfc", "control_characters", "whitespace"])
    assert clean_text("    indented code\n        kept") == ("indented code\n        kept", ["whitespace"])
    assert clean_text("already clean") == ("already clean", [])


def test_prepare_writes_splits_and_manifest(tmp_path: Path):
    rows = labelled(50) + [{"input": "  ", "output": "pos"}, "not an object"]
    rows[3]["input"] = "  spaced   out\u200b "
    source = write_jsonl(tmp_path / "raw.jsonl", rows)
    result = prepare_dataset(source, tmp_path / "out")
    out = tmp_path / "out"
    written = {name: read(out / f"{name}.jsonl") for name in ("train", "validation", "test")}
    assert {k: len(v) for k, v in written.items()} == {"train": 40, "validation": 5, "test": 5}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["input"]["sha256"] and manifest["seed"] == 42
    assert [(r["where"], r["code"]) for r in manifest["removed"]] == [(f"{source}:51", "empty_field"), (f"{source}:52", "data_type")]
    changed = {c["where"]: c["fields"] for c in manifest["changed"]}
    assert changed[f"{source}:4"] == {"input": ["control_characters", "whitespace"]}
    assert any(row["input"] == "spaced out" for rows_ in written.values() for row in rows_)
    assert manifest["counts"]["written"] == {"train": 40, "validation": 5, "test": 5}
    assert manifest["files"]["train.jsonl"]["rows"] == 40


def test_same_command_same_bytes(tmp_path: Path):
    source = write_jsonl(tmp_path / "raw.jsonl", labelled(40))
    options = dict(dedup=True, near_dup=0.9, stratify="output", balance="oversample", augment=["typo"], seed=3)
    prepare_dataset(source, tmp_path / "a", PrepareOptions(**options))
    prepare_dataset(source, tmp_path / "b", PrepareOptions(**options))
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    prepare_dataset(source, tmp_path / "c", PrepareOptions(**{**options, "seed": 4}))
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()


def test_no_prompt_or_near_copy_in_two_splits(tmp_path: Path):
    rows = labelled(40)
    rows += [{"input": rows[i]["input"], "output": "other"} for i in range(10)]          # same prompt, other answer
    rows += [{"input": rows[i]["input"] + "!", "output": rows[i]["output"]} for i in range(10, 20)]  # near copies
    source = write_jsonl(tmp_path / "raw.jsonl", rows)
    prepare_dataset(source, tmp_path / "out", PrepareOptions(split=(0.6, 0.2, 0.2)))
    seen: dict[str, str] = {}
    for name in ("train", "validation", "test"):
        for row in read(tmp_path / "out" / f"{name}.jsonl"):
            key = row["input"].rstrip("!")
            assert seen.setdefault(key, name) == name, f"{key!r} in {seen[key]} and {name}"


def test_dedup_and_near_dedup_are_recorded(tmp_path: Path):
    rows = labelled(20)
    rows += [dict(rows[2]), {"input": rows[5]["input"] + ".", "output": rows[5]["output"]}]
    source = write_jsonl(tmp_path / "raw.jsonl", rows)
    manifest = prepare_dataset(source, tmp_path / "out", PrepareOptions(dedup=True, near_dup=0.75)).manifest
    removed = {r["where"]: r for r in manifest["removed"]}
    assert removed[f"{source}:21"]["code"] == "duplicate" and f"{source}:3" in removed[f"{source}:21"]["reason"]
    assert removed[f"{source}:22"]["code"] == "near_duplicate" and f"{source}:6" in removed[f"{source}:22"]["reason"]
    assert manifest["counts"]["duplicates_removed"] == 1 and manifest["counts"]["near_duplicates_removed"] == 1
    assert sum(manifest["counts"]["written"].values()) == 20


def test_stratified_split_keeps_label_shares(tmp_path: Path):
    source = write_jsonl(tmp_path / "raw.jsonl", labelled(80))  # 20 neg, 60 pos
    manifest = prepare_dataset(source, tmp_path / "out", PrepareOptions(stratify="output", split=(0.5, 0.25, 0.25))).manifest
    assert manifest["labels"]["written"] == {"train": {"neg": 10, "pos": 30}, "validation": {"neg": 5, "pos": 15},
                                             "test": {"neg": 5, "pos": 15}}


@pytest.mark.parametrize("method, expected", [("oversample", {"neg": 30, "pos": 30}), ("undersample", {"neg": 10, "pos": 10})])
def test_balance_touches_only_train(tmp_path: Path, method: str, expected: dict):
    source = write_jsonl(tmp_path / "raw.jsonl", labelled(80))
    manifest = prepare_dataset(source, tmp_path / "out", PrepareOptions(stratify="output", balance=method, split=(0.5, 0.25, 0.25))).manifest
    assert manifest["labels"]["written"]["train"] == expected
    assert manifest["labels"]["written"]["test"] == {"neg": 5, "pos": 15}
    if method == "oversample":
        assert sum(a["method"] == "oversample" for a in manifest["added"]) == 20
    else:
        assert sum(r["code"] == "undersampled" for r in manifest["removed"]) == 20


def test_augment_changes_prompts_not_answers(tmp_path: Path):
    source = write_jsonl(tmp_path / "raw.jsonl", [{**r, "input": r["input"].title() + "!"} for r in labelled(20)])
    manifest = prepare_dataset(source, tmp_path / "out", PrepareOptions(augment=["lowercase", "no-punct"], split=(0.8, 0.2))).manifest
    train = read(tmp_path / "out" / "train.jsonl")
    assert len(train) == 16 * 3 and manifest["counts"]["augmented"] == 32
    originals = train[:16]
    assert [r["output"] for r in train[16:]] == [r["output"] for r in originals for _ in range(2)]
    assert train[16]["input"] == originals[0]["input"].lower()
    assert train[17]["input"] == "".join(c for c in originals[0]["input"] if c not in ".,;:!?")
    assert not (tmp_path / "out" / "test.jsonl").exists()


def test_prepared_directory_validates_clean(tmp_path: Path):
    from tuneforge.data.validate import validate_data

    source = write_jsonl(tmp_path / "raw.jsonl", labelled(60))
    prepare_dataset(source, tmp_path / "out", PrepareOptions(dedup=True))
    report = validate_data(tmp_path / "out")
    assert report.stats["splits"] == {"train": 48, "validation": 6, "test": 6, "estimated": False}
    assert "split_leakage" not in {f.code for f in report.findings}


def test_out_dir_with_other_files_is_refused(tmp_path: Path):
    source = write_jsonl(tmp_path / "raw.jsonl", make_rows(20))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        prepare_dataset(source, tmp_path / "busy")
    prepare_dataset(source, tmp_path / "busy", force=True)
    assert not (tmp_path / "busy" / "notes.txt").exists() and (tmp_path / "busy" / "manifest.json").is_file()
    prepare_dataset(source, tmp_path / "busy")  # an earlier prepare's output is replaced without --force


@pytest.mark.parametrize("options", [dict(split=(0.5, 0.2)), dict(split=(0.0, 0.5, 0.5)), dict(near_dup=2.0),
                                     dict(balance="smote"), dict(augment=["backtranslate"])])
def test_invalid_options(tmp_path: Path, options):
    with pytest.raises(ConfigError):
        prepare_dataset(write_jsonl(tmp_path / "raw.jsonl", make_rows(20)), tmp_path / "out", PrepareOptions(**options))


def test_unusable_file_raises(tmp_path: Path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DatasetError):
        prepare_dataset(tmp_path / "empty.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prepare(tmp_path: Path, capsys):
    from tuneforge.cli.main import main

    source = write_jsonl(tmp_path / "raw.jsonl", labelled(30))
    assert main(["prepare", str(source), "--out", str(tmp_path / "out"), "--dedup", "--split", "0.8,0.2", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "written: train" in out and "manifest.json" in out and "Traceback" not in err
    assert main(["prepare", str(source), "--out", str(tmp_path / "out"), "--split", "0.8,0.3"]) == 2
    assert "split" in capsys.readouterr().err
