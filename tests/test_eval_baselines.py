"""`tuneforge eval` answers "was it worth it?": the model beside its base and the prompting baselines, with the verdict."""

from __future__ import annotations

import json

import pytest

from tuneforge.cli.main import main
from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.worth_it import disjoint_pool, evaluate_with_baselines


def _eval_json(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--max-new-tokens", "4", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_of_a_run_scores_its_base_the_baselines_and_gives_the_verdict(lora_run, capsys):
    run = lora_run.run_dir
    shown = _eval_json(capsys, "--data", str(run / "data" / "test.jsonl"), "--adapter", str(run), "--shots", "2")
    # The same test split and scoring as the run itself: the same figures for the model and its base.
    assert shown["performance"]["accuracy"] == pytest.approx(lora_run.tuned.performance["accuracy"])
    assert shown["base"]["performance"]["accuracy"] == pytest.approx(lora_run.base.performance["accuracy"])
    assert set(shown["baselines"]) == {"few_shot", "retrieval_few_shot"}
    assert all(b["shots"] == 2 for b in shown["baselines"].values())
    assert shown["baselines"]["retrieval_few_shot"]["retriever"] == "bm25"
    # Shots come from the run's own train split, which holds none of the scored examples.
    assert shown["pool"] == {"source": str(run / "data" / "train.jsonl"), "examples": lora_run.data["train"],
                             "dropped_as_scored": 0}
    few_shot = shown["baselines"]["few_shot"]["resources"]
    assert shown["resources"]["prompt_tokens_per_request"] < few_shot["prompt_tokens_per_request"]
    assert few_shot["seconds_per_request"] > 0 and shown["resources"]["seconds_per_request"] > 0
    verdict = shown["verdict"]
    assert verdict["metric"] == "accuracy" and verdict["message"] and verdict["prompt_token_ratio"] >= 1
    assert verdict["best_baseline"] in {"base", "few_shot", "retrieval_few_shot"}


def test_eval_no_baselines_scores_the_model_and_its_base_only(lora_run, capsys):
    run = lora_run.run_dir
    shown = _eval_json(capsys, "--data", str(run / "data" / "test.jsonl"), "--adapter", str(run), "--no-baselines")
    assert shown["baselines"] == {} and shown["verdict"] is None and shown["base"]["performance"]


def test_shots_never_come_from_the_scored_examples(tiny_model_dir, lora_run, capsys):
    test = str(lora_run.run_dir / "data" / "test.jsonl")
    # The scored examples given as the shot pool: every one is left out, so there is nothing to show.
    shown = _eval_json(capsys, "--data", test, "--model", str(tiny_model_dir), "--train", test)
    assert shown["baselines"] == {} and shown["pool"]["examples"] == 0
    assert shown["pool"]["dropped_as_scored"] == lora_run.data["test"] and "--train" in shown["baselines_skipped"]
    scored = [TrainingExample(input="a b", output="x")]
    kept, dropped = disjoint_pool([TrainingExample(input="a  b", output="x"), TrainingExample(input="c", output="y")], scored)
    assert [e.input for e in kept] == ["c"] and dropped == 1  # white space does not hide a copy


def test_a_base_model_with_a_training_file_gets_its_baselines_and_no_verdict(tiny_model_dir, lora_run):
    data = lora_run.run_dir / "data"
    from tuneforge.data.manager import TrainingDataManager

    test, _ = TrainingDataManager().load(data / "test.jsonl")
    train, _ = TrainingDataManager().load(data / "train.jsonl")
    found = evaluate_with_baselines(test, model=str(tiny_model_dir), train=train, shots=1, max_new_tokens=4)
    assert found.base is None and set(found.baselines) == {"few_shot", "retrieval_few_shot"}
    assert found.verdict is None  # nothing was tuned: the table shows zero-shot against the prompts
    assert all(b.evaluation.resources["examples"] == len(test) for b in found.baselines.values())


def test_eval_table_shows_the_baselines_tokens_and_verdict(lora_run, capsys, monkeypatch):
    from rich.console import Console

    from tuneforge.cli import render

    run = lora_run.run_dir
    shown = _eval_json(capsys, "--data", str(run / "data" / "test.jsonl"), "--adapter", str(run), "--shots", "1")
    monkeypatch.setattr(render, "out", Console(width=250, record=True, file=open("/dev/null", "w")))
    render.evaluation_with_baselines(shown)
    text = render.out.export_text()
    for words in ("base zero-shot", "few-shot", "retrieval few-shot", "this model", "prompt tokens / request",
                  "seconds / request", "verdict:"):
        assert words in text
