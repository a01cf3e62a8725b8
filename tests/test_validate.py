"""The data doctor: findings (code, file, line, field), dataset-wide checks, statistics, tokens, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_rows, write_jsonl
from tuneforge.core.errors import ConfigError, DatasetError
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.validate import ValidationOptions, load_checked, validate_data


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


def only(report, code: str):
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, (code, [str(f) for f in report.findings])
    return found[0]


def chat(user: str, answer: str, system: str | None = None, **extra) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer, **extra}]
    return {"messages": messages}


DISTINCT = [f"Question {i}: {word}?" for i, word in enumerate(
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split())]
LONG = "Please tell me which of the three colours best describes a ripe tomato in the middle of summer"


def test_clean_file_has_no_findings(tmp_path: Path):
    report = validate_data(write_jsonl(tmp_path / "ok.jsonl", make_rows(40)), ValidationOptions(near_duplicate_threshold=None))
    assert report.ok and report.findings == []
    assert report.stats["rows"] == 40 and report.stats["usable_examples"] == 40
    assert report.data_format == "input_output"


def test_every_problem_reported_in_one_pass(tmp_path: Path):
    rows = make_rows(20)
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[3] = '{"input": "x", "output": '                       # line 4: invalid JSON
    lines[6] = json.dumps({"input": "x"})                          # line 7: missing output
    lines[9] = json.dumps(["not", "an", "object"])                 # line 10: not an object
    lines[12] = json.dumps({"input": "", "output": "y"})           # line 13: empty input
    path.write_text("\n".join(lines) + "\n")
    report = validate_data(path)
    errors = [(f.code, f.line, f.field) for f in report.errors]
    assert errors == [("invalid_json", 4, None), ("missing_field", 7, "output"), ("data_type", 10, None),
                      ("empty_field", 13, "input")]
    assert report.stats["usable_examples"] == 16 and report.stats["invalid_rows"] == 3
    assert report.error_count == 4 and not report.ok


def test_duplicates_conflicts_and_near_duplicates(tmp_path: Path):
    rows = [{"input": q, "output": "yes"} for q in DISTINCT[:12]]
    rows[7]["input"] = "Please tell me which of the three colours best describes a ripe tomato in summer"
    rows.append(dict(rows[2]))                                          # line 13: exact copy of line 3
    rows.append({"input": DISTINCT[4], "output": "no"})                 # line 14: same input as line 5, other output
    rows.append({"input": "  " + rows[7]["input"].replace("ripe", "riipe"), "output": "yes"})  # line 15: near copy of line 8
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    duplicate = only(report, "duplicate")
    assert (duplicate.line, duplicate.related) == (13, [3]) and "line 3" in duplicate.message
    conflict = only(report, "conflicting_outputs")
    assert conflict.line == 5 and conflict.related == [14] and "2 different outputs" in conflict.message
    near = only(report, "near_duplicate")
    assert near.line == 15 and near.related == [8]
    assert report.ok  # all of these are warnings
    assert report.stats["duplicates"] == {"exact": 1, "near": 1, "conflicting_inputs": 1, "near_checked": 15}


def test_near_duplicate_check_can_be_turned_off(tmp_path: Path):
    rows = [{"input": q, "output": "yes"} for q in DISTINCT[:12]] + [{"input": LONG, "output": "yes"},
                                                                      {"input": LONG + "!", "output": "yes"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert "near_duplicate" in codes(validate_data(path))
    assert "near_duplicate" not in codes(validate_data(path, ValidationOptions(near_duplicate_threshold=None)))


def test_label_counts_and_imbalance(tmp_path: Path):
    rows = [{"input": q, "output": "spam"} for q in DISTINCT[:12]] + [{"input": "Is this ham?", "output": "Ham."}]
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.stats["labels"]["counts"] == {"spam": 12, "ham": 1}
    assert report.stats["labels"]["source"] == "answers"
    imbalance = only(report, "label_imbalance")
    assert "'spam' has 12" in imbalance.message and "'ham' only 1" in imbalance.message


def test_explicit_label_field_is_used(tmp_path: Path):
    rows = [{"input": q, "output": f"a long free text answer number {i}", "label": "pos" if i % 2 else "neg"}
            for i, q in enumerate(DISTINCT[:12])]
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.stats["labels"]["source"] == "label field"
    assert report.stats["labels"]["counts"] == {"neg": 6, "pos": 6}
    assert "unused_field" not in codes(report)


def test_free_text_answers_have_no_labels(tmp_path: Path):
    rows = [{"input": q, "output": f"answer text {i} with several words in it"} for i, q in enumerate(DISTINCT[:12])]
    assert validate_data(write_jsonl(tmp_path / "d.jsonl", rows)).stats["labels"] is None


def test_system_prompts_mixed_and_variant(tmp_path: Path):
    rows = [chat(q, "ok", system="Answer briefly.") for q in DISTINCT[:10]]
    rows.append(chat("Question x?", "ok"))                               # line 11: no system prompt
    rows.append(chat("Question y?", "ok", system="Answer  briefly!"))    # line 12: a variant
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    found = [f for f in report.findings if f.code == "inconsistent_system_prompt"]
    assert [f.line for f in found] == [11, 12]
    assert "11 example(s) have a system prompt and 1 have none" in found[0].message
    assert "'Answer briefly!'" in found[1].message
    assert report.stats["system_prompts"] == {"distinct": 2, "with": 11, "without": 1}


def test_personal_data_and_secrets_are_masked(tmp_path: Path):
    rows = [{"input": q, "output": "ok"} for q in DISTINCT[:10]]
    rows.append({"input": "write to jane.doe@example.org please", "output": "ok"})
    rows.append({"input": "my key is sk-proj-AbCdEfGhIjKlMnOpQrStUvWx", "output": "ok"})
    rows.append({"input": "call me", "output": "at +1 415-555-0132"})
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    personal = [f for f in report.findings if f.code == "personal_data"]
    secret = only(report, "secret")
    assert [(f.line, f.field) for f in personal] == [(11, "input"), (13, "output")]
    assert "e-mail address" in personal[0].message and "jane.doe@example.org" not in personal[0].message
    assert secret.line == 12 and "OpenAI API key" in secret.message and "AbCdEfGh" not in secret.message
    quiet = validate_data(tmp_path / "d.jsonl", ValidationOptions(check_sensitive=False))
    assert not {"personal_data", "secret"} & set(codes(quiet))


def test_openai_chat_checks_and_weights(tmp_path: Path):
    rows = [chat(q, "ok") for q in DISTINCT[:10]]
    rows.append({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 0}]})
    rows.append({"messages": [{"role": "user", "content": "u", "weight": 1}, {"role": "assistant", "content": "b"}]})
    rows.append({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "c"}]})
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert only(report, "nothing_trained").line == 11
    assert only(report, "weight_on_non_assistant").field == "messages[0].weight"
    assert only(report, "empty_content").line == 13
    assert report.ok


def test_unused_columns_are_reported_once(tmp_path: Path):
    rows = [{"input": q, "output": "ok", "anwser": "typo"} for q in DISTINCT[:12]]
    found = only(validate_data(write_jsonl(tmp_path / "d.jsonl", rows)), "unused_field")
    assert found.line == 1 and found.field == "anwser" and "12 row(s)" in found.message


def test_text_template_and_forced_format(tmp_path: Path):
    rows = [{"question": q, "answer": "x"} for q in DISTINCT[:11]] + [{"question": "q"}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    report = validate_data(path, ValidationOptions(text_template="Q: {question}\nA: {answer}"))
    missing = only(report, "missing_field")
    assert (missing.line, missing.field) == (12, "answer")
    forced = validate_data(write_jsonl(tmp_path / "io.jsonl", make_rows(12)), ValidationOptions(data_format="text"))
    assert {f.code for f in forced.errors} == {"missing_field", "too_few_examples"}


@pytest.mark.parametrize("options", [dict(data_format="yaml"), dict(text_template="{question"), dict(text_template="{0}"),
                                     dict(text_template="no fields"), dict(near_duplicate_threshold=1.5)])
def test_invalid_options_are_config_errors(tmp_path: Path, options):
    with pytest.raises(ConfigError):
        validate_data(write_jsonl(tmp_path / "d.jsonl", make_rows(12)), ValidationOptions(**options))


def test_csv_multiline_quoted_field_and_line_numbers(tmp_path: Path):
    path = tmp_path / "d.csv"
    body = "".join(f"q{i},a\n" for i in range(10))
    path.write_text('input,output\n"two\nlines",x\n' + body + ',empty input\n')
    report = validate_data(path, ValidationOptions(near_duplicate_threshold=None))
    assert [(f.code, f.line, f.field) for f in report.errors] == [("empty_field", 14, "input")]
    assert report.stats["usable_examples"] == 11


def test_json_rows_get_their_line(tmp_path: Path):
    path = tmp_path / "d.json"
    rows = make_rows(11) + [{"input": "x"}]
    path.write_text(json.dumps(rows, indent=2))
    found = only(validate_data(path), "missing_field")
    assert path.read_text().splitlines()[found.line - 1].strip() == "{"
    assert found.line == 1 + 4 * 11 + 1


def test_parquet_and_saved_dataset(tmp_path: Path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(12)
    pq.write_table(pa.Table.from_pylist(rows + [{"input": "x", "output": None}]), tmp_path / "d.parquet")
    found = only(validate_data(tmp_path / "d.parquet"), "missing_field")
    assert (found.line, found.row, found.where) == (None, 13, f"{tmp_path / 'd.parquet'}:row 13")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert validate_data(tmp_path / "saved", ValidationOptions(near_duplicate_threshold=None)).ok


def test_chat_parquet_with_null_weights_is_valid(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [chat(q, "ok") for q in DISTINCT[:11]] + [chat("weighted?", "yes", weight=1)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")  # weight becomes null in the other rows
    report = validate_data(tmp_path / "c.parquet")
    assert report.ok, [str(f) for f in report.findings]
    examples, _ = TrainingDataManager().load(tmp_path / "c.parquet")
    assert "weight" not in examples[0].messages[1] and examples[-1].messages[1]["weight"] == 1


def test_findings_are_capped_but_all_counted(tmp_path: Path):
    rows = make_rows(12) + [{"input": f"q{i}"} for i in range(30)]
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows), ValidationOptions(max_findings_per_code=5))
    assert report.counts_by_code["missing_field"] == 30
    assert sum(f.code == "missing_field" for f in report.findings) == 5
    assert report.omitted() == {"missing_field": 25}
    assert report.error_count == 30


def test_statistics_in_characters_without_a_tokenizer(tmp_path: Path):
    rows = [{"input": "a" * n, "output": "b" * (n % 3 + 1)} for n in range(10, 30)]
    stats = validate_data(write_jsonl(tmp_path / "d.jsonl", rows), ValidationOptions(batch_size=4, epochs=2)).stats
    assert stats["lengths"]["unit"] == "characters"
    assert stats["lengths"]["prompt"] == {"count": 20, "min": 10, "mean": 19.5, "p50": 19, "p95": 28, "max": 29, "sum": 390}
    assert stats["splits"] == {"train": 16, "validation": 2, "test": 2, "estimated": True}
    assert stats["training"]["steps_per_epoch"] == 4 and stats["training"]["total_steps"] == 8
    assert sum(b["count"] for b in stats["lengths"]["histogram"]) == 20


# ---------------------------------------------------------------- with the model's tokenizer


def test_token_counts_truncation_and_trained_tokens(tmp_path: Path, tiny_tokenizer):
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_example

    rows = make_rows(12) + [{"input": "what color is the sky? " * 10, "output": "blue " * 20}]
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows), ValidationOptions(max_length=40, near_duplicate_threshold=None),
                           tokenizer=tiny_tokenizer)
    long = TrainingExample.from_pair(rows[-1]["input"], rows[-1]["output"])
    full = encode_example(tiny_tokenizer, long, max_length=10_000)
    too_long = only(report, "too_long")
    assert too_long.line == 13
    assert f"{len(full.input_ids)} tokens" in too_long.message and f"last {len(full.input_ids) - 40} would be cut" in too_long.message
    tokens = report.stats["tokens"]
    assert tokens["truncated_examples"] == 1 and tokens["truncated_tokens"] == len(full.input_ids) - 40
    expected_trained = sum(encode_example(tiny_tokenizer, TrainingExample.from_pair(r["input"], r["output"]), 40).trained_tokens
                           for r in rows)
    assert tokens["trained"] == expected_trained
    assert report.stats["lengths"]["unit"] == "tokens"
    assert report.stats["lengths"]["example"]["max"] == len(full.input_ids)


def test_answer_past_max_length_trains_nothing(tmp_path: Path, tiny_tokenizer):
    rows = make_rows(12) + [{"input": "sky " * 60, "output": "blue"}]
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", rows), ValidationOptions(max_length=32), tokenizer=tiny_tokenizer)
    assert only(report, "no_trained_tokens").line == 13


def test_show_tokens_marks_trained_end_of_turn(tmp_path: Path, tiny_tokenizer):
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", make_rows(12)), ValidationOptions(show_tokens=2), tokenizer=tiny_tokenizer)
    assert len(report.samples) == 2
    sample = report.samples[0]
    trained = "".join(s["text"] for s in sample["spans"] if s["trained"])
    assert trained.startswith("blue") and "<|im_end|>" in trained
    assert "".join(s["text"] for s in sample["spans"] if not s["trained"]).count("color of sky?") == 1
    assert sample["end_of_turn_trained"] is True
    assert "end_of_turn_not_trained" not in codes(report)


def test_end_of_turn_not_trained_is_found(tmp_path: Path, tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    # A template without end-of-turn markers after the answers: nothing teaches the model to stop.
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", make_rows(12)), tokenizer=tokenizer)
    assert report.counts_by_code["end_of_turn_not_trained"] == 12
    assert report.stats["tokens"]["end_of_turn_not_trained"] == 12


def test_chat_template_error_is_a_finding(tmp_path: Path, tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                               "{% endif %}{{ m['content'] }}{% endfor %}")
    rows = [chat(q, "ok") for q in DISTINCT[:11]] + [chat("q", "a", system="s")]
    found = only(validate_data(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer=tokenizer), "chat_template_error")
    assert found.line == 12 and "no system role" in found.message


def test_estimate_time_with_a_measured_benchmark(tmp_path: Path, tiny_tokenizer, tiny_model_dir):
    from tuneforge.config import make_config
    from tuneforge.train.estimate import training_speed_probe

    probe = training_speed_probe(tiny_model_dir, make_config({"batch_size": 4}), tiny_tokenizer.pad_token_id, steps=3)
    options = ValidationOptions(cost_per_hour=3.6, epochs=2, near_duplicate_threshold=None)
    report = validate_data(write_jsonl(tmp_path / "d.jsonl", make_rows(20)), options, tokenizer=tiny_tokenizer, speed_probe=probe)
    training = report.stats["training"]
    estimate = training["estimate"]
    assert estimate["tokens_per_second"] > 0 and estimate["measured_steps"] == 3
    assert estimate["seconds"] == pytest.approx(training["tokens_per_epoch"] * 2 / estimate["tokens_per_second"], abs=0.06)
    assert estimate["cost"] == pytest.approx(estimate["seconds"] / 3600 * 3.6, abs=1e-3)


# ---------------------------------------------------------------- splits, skip-invalid, the manager


def test_directory_of_splits_counts_and_leakage(tmp_path: Path):
    rows = [{"input": q, "output": "ok"} for q in DISTINCT]
    rows[5]["input"] = LONG
    write_jsonl(tmp_path / "train.jsonl", rows[:12])
    write_jsonl(tmp_path / "validation.jsonl", rows[12:14] + [rows[0]])
    write_jsonl(tmp_path / "test.jsonl", rows[14:16] + [{"input": rows[5]["input"] + "!", "output": "ok"}])
    report = validate_data(tmp_path)
    assert report.stats["splits"] == {"train": 12, "validation": 3, "test": 3, "estimated": False}
    leaks = [f for f in report.findings if f.code == "split_leakage"]
    assert [(Path(f.file).name, f.line) for f in leaks] == [("test.jsonl", 3), ("validation.jsonl", 3)]
    assert "train" in leaks[1].message


def test_load_checked_refuses_errors_or_drops_them(tmp_path: Path):
    rows = make_rows(14)
    rows[2] = {"input": "x"}
    rows[9] = {"input": "y", "output": ""}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError) as caught:
        load_checked(path)
    assert f"{path}:3" in str(caught.value) and f"{path}:10" in str(caught.value)
    checked = TrainingDataManager().load_checked(path, skip_invalid=True)
    assert len(checked.examples) == 12
    assert [d.where for d in checked.dropped] == [f"{path}:3", f"{path}:10"]
    assert "missing_field" in checked.dropped[0].reasons[0] and "empty_field" in checked.dropped[1].reasons[0]


def test_skip_invalid_cannot_fix_too_few_examples(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(9) + [{"input": "x"}])
    with pytest.raises(DatasetError) as caught:
        load_checked(path, skip_invalid=True)
    assert "only 9 usable" in str(caught.value)


def test_skip_invalid_drops_minority_format_rows(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(12) + [{"text": "stray"}])
    checked = load_checked(path, skip_invalid=True)
    assert len(checked.examples) == 12 and checked.data_format == "input_output"
    assert checked.dropped[0].where == f"{path}:13" and "mixed_formats" in checked.dropped[0].reasons[0]


def test_manager_validate_data_and_prepare_data_skip_invalid(tmp_path: Path):
    rows = make_rows(30)
    rows[4] = {"input": "no answer"}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    manager = TrainingDataManager()
    report = manager.validate_data(path, max_length=64)
    assert [f.line for f in report.errors] == [5]
    data = manager.prepare_data(path, skip_invalid=True)
    assert len(data.examples) + len(data.validation) + len(data.test) == 29
    assert data.metadata["dropped_rows"] == 1 and data.metadata["dropped"][0]["where"] == f"{path}:5"
    with pytest.raises(DatasetError):
        manager.prepare_data(path, skip_invalid=False)
    with pytest.raises(DatasetError):
        manager.prepare_data(path)  # the loader's own behaviour is unchanged


def test_examples_match_the_loader(tmp_path: Path):
    rows = [chat(q, "ok", system="Be brief.") for q in DISTINCT[:12]]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    loaded, fmt = TrainingDataManager().load(path)
    checked = load_checked(path)
    assert fmt == checked.data_format == "chat"
    assert [(e.messages, e.source) for e in loaded] == [(e.messages, e.source) for e in checked.examples]


# ---------------------------------------------------------------- the CLI


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from tuneforge.cli.main import main

    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_validate_ok_json_and_report(tmp_path: Path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(20))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0 and "no errors" in out
    code, out, _ = run_cli(["validate", str(path), "--json", "--report", str(tmp_path / "r.html")], capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["stats"]["usable_examples"] == 20
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "examples per label" in html
    assert "<script" not in html and "http" not in html.split("</style>")[1]


def test_cli_validate_errors_exit_1_and_list_every_line(tmp_path: Path, capsys):
    rows = make_rows(12) + [{"input": "a"}, {"input": "b"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    code, out, _ = run_cli(["validate", str(path), "--json"], capsys)
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["errors"] == 2
    assert [f["where"] for f in data["findings"] if f["severity"] == "error"] == [f"{path}:13", f"{path}:14"]
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 1 and f"{path}:13: error missing_field [output]" in out and "2 error(s)" in out


def test_cli_validate_usage_errors_exit_2(tmp_path: Path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(12))
    with pytest.raises(SystemExit) as caught:  # argparse checks the template with the config's rule
        run_cli(["validate", str(path), "--text-template", "{oops"], capsys)
    assert caught.value.code == 2 and "argument --text-template" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        run_cli(["validate", str(path), "--format", "yaml"], capsys)
    assert caught.value.code == 2


def test_cli_show_tokens_brackets_when_not_a_terminal(tmp_path: Path, capsys, tiny_model_dir):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(12))
    code, out, _ = run_cli(["validate", str(path), "--model", str(tiny_model_dir), "--show-tokens", "1", "--max-length", "64"], capsys)
    assert code == 0
    assert "[[blue<|im_end|>" in out and "end-of-turn token trained: yes" in out
    assert "lengths (tokens)" in out
