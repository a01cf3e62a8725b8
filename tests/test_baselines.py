"""Prompting baselines (few-shot, retrieval few-shot), the verdict, and their place in a run's results."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.baselines import (BM25Retriever, candidates_of, evaluate_baselines, seeded_shots, verdict,
                                          with_shots)


def _pairs(rows):
    return [TrainingExample(input=q, output=a) for q, a in rows]


TRAIN = _pairs([("my card was charged twice", "billing"), ("the app crashes on start", "bug"),
                ("refund my money please", "billing"), ("how do I reset my password", "account"),
                ("login fails every time", "account"), ("screen freezes after update", "bug")])
TEST = _pairs([("I was charged twice for one order", "billing"), ("the app crashes when I log in", "bug")])


def test_shots_become_earlier_turns_after_the_system_turn():
    example = TrainingExample(input="q?", output="a", system="be brief")
    shown = with_shots(example, TRAIN[:2])
    roles = [m["role"] for m in shown.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert shown.messages[1]["content"] == TRAIN[0].input and shown.messages[2]["content"] == "billing"
    assert shown.input == "q?" and shown.output == "a"  # the question and reference are unchanged


def test_seeded_shots_are_reproducible_and_capped_by_the_pool():
    assert [e.input for e in seeded_shots(TRAIN, 3, seed=7)] == [e.input for e in seeded_shots(TRAIN, 3, seed=7)]
    assert len(seeded_shots(TRAIN, 50, seed=1)) == len(TRAIN)


def test_bm25_finds_the_most_similar_training_inputs():
    retriever = BM25Retriever(TRAIN)
    assert retriever.top("charged twice on my card", 1)[0].input == "my card was charged twice"
    assert retriever.top("the app crashes", 2)[0].input == "the app crashes on start"
    assert retriever.top("zzz qqq", 3) == []  # nothing shares a word: nothing is "similar"


def test_baselines_score_the_test_split_with_shots_from_train_only(tiny_model, tiny_tokenizer):
    found = evaluate_baselines(tiny_model, tiny_tokenizer, TRAIN, TEST, shots=2, seed=3, max_new_tokens=4,
                               labels=["account", "billing", "bug"])
    assert set(found) == {"few_shot", "retrieval_few_shot"}
    for baseline in found.values():
        evaluation = baseline.evaluation
        assert evaluation.task == "classification" and "accuracy" in evaluation.performance
        assert "loss" not in evaluation.performance  # the loss of a few-shot prompt would score the shots
        assert evaluation.resources["prompt_tokens_per_request"] > 0
        assert evaluation.resources["seconds_per_request"] > 0
        assert [p["input"] for p in evaluation.predictions] == [e.input for e in TEST]
    # Two shots make every prompt longer than the zero-shot prompt of the same question.
    from tuneforge.data.tokenize import render_prompt

    zero = sum(len(tiny_tokenizer(render_prompt(tiny_tokenizer, e), add_special_tokens=False)["input_ids"]) for e in TEST) / 2
    assert found["few_shot"].evaluation.resources["prompt_tokens_per_request"] > zero + 10


def test_retrieval_never_shows_a_test_example(tiny_model, tiny_tokenizer, monkeypatch):
    import tuneforge.evaluate.baselines as baselines

    shown: list[list[str]] = []
    real = baselines.evaluate_model

    def spy(model, tokenizer, examples, **kwargs):
        shown.extend([m["content"] for m in e.messages[:-2] if m["role"] == "user"] for e in examples)
        return real(model, tokenizer, examples, **kwargs)

    monkeypatch.setattr(baselines, "evaluate_model", spy)
    evaluate_baselines(tiny_model, tiny_tokenizer, TRAIN, TEST, shots=3, max_new_tokens=2)
    train_inputs = {e.input for e in TRAIN}
    assert shown and all(set(turns) <= train_inputs and len(turns) == 3 for turns in shown)


def _evaluation(value, tokens, metric="accuracy"):
    return {"performance": {metric: value}, "resources": {"prompt_tokens_per_request": tokens}}


def test_verdict_tuned_beats_the_best_baseline_and_counts_the_tokens():
    result = verdict(_evaluation(0.78, 20), {"base": _evaluation(0.30, 20), "few_shot": _evaluation(0.45, 150),
                                             "retrieval_few_shot": _evaluation(0.52, 196)})
    assert result["worth_it"] and result["best_baseline"] == "retrieval_few_shot"
    assert result["difference"] == pytest.approx(0.26) and result["prompt_token_ratio"] == pytest.approx(9.8)
    assert result["message"] == ("tuned beats the best prompting baseline (retrieval few-shot, 0.52) by +0.26 accuracy "
                                 "and needs 9.8× fewer prompt tokens per request")


def test_verdict_says_when_tuning_lost_and_what_to_try():
    result = verdict(_evaluation(0.40, 20), {"base": _evaluation(0.30, 20), "few_shot": _evaluation(0.60, 150)})
    assert not result["worth_it"] and result["difference"] == pytest.approx(-0.20)
    assert "does not beat" in result["message"] and "few-shot" in result["message"] and "try" in result["message"]


def test_verdict_on_a_tie_is_not_worth_it_and_lower_is_better_metrics_flip():
    assert not verdict(_evaluation(0.5, 10), {"few_shot": _evaluation(0.5, 100)})["worth_it"]
    assert "ties" in verdict(_evaluation(0.5, 10), {"few_shot": _evaluation(0.5, 100)})["message"]
    lower = verdict(_evaluation(1.0, 10, "loss"), {"few_shot": _evaluation(2.0, 10, "loss")}, metric="loss")
    assert lower["worth_it"] and lower["difference"] == pytest.approx(1.0)
    assert verdict(None, {"few_shot": _evaluation(0.5, 1)}) is None and verdict(_evaluation(0.5, 1), {}) is None


def test_candidates_include_the_zero_shot_base():
    found = candidates_of({"performance": {"accuracy": 0.9}, "resources": {}}, {"few_shot": _evaluation(0.1, 5)})
    assert list(found) == ["base", "few_shot"] and found["base"]["performance"]["accuracy"] == 0.9


def test_a_run_records_baselines_and_the_verdict(train_run, monkeypatch):
    result = train_run(test_split=0.2, learning_rate=1e-2, baselines=True, baseline_shots=2, evaluation_strategy="no",
                       saving_strategy="no", forgetting_check=True)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert set(saved["baselines"]) == {"few_shot", "retrieval_few_shot"}
    assert saved["baselines"]["few_shot"]["shots"] == 2 and saved["baselines"]["retrieval_few_shot"]["retriever"] == "bm25"
    assert saved["verdict"]["metric"] == "accuracy" and saved["verdict"]["message"]
    assert saved["evaluation"]["tuned"]["prompt_tokens_per_request"] < saved["baselines"]["few_shot"]["resources"]["prompt_tokens_per_request"]
    rows = [json.loads(line) for line in (result.run_dir / "baseline_predictions.jsonl").read_text().splitlines()]
    assert {row["baseline"] for row in rows} == {"few_shot", "retrieval_few_shot"}
    page = (result.run_dir / "report.html").read_text()
    assert "Was fine-tuning worth it?" in page and "Error analysis" in page and "confusion matrix" in page
    assert saved["error_analysis"]["confusion"]["labels"] == ["blue", "green", "red"]
    forgetting = saved["forgetting"]
    assert forgetting["before"] > 1 and forgetting["after"] > 1 and forgetting["before"] != forgetting["after"]
    assert "Forgetting" in page

    from rich.console import Console

    from tuneforge.cli import render

    monkeypatch.setattr(render, "out", Console(width=250, record=True, file=open("/dev/null", "w")))
    render.results(saved)
    shown = render.out.export_text()
    assert "retrieval few-shot" in shown and "prompt tokens / request" in shown and "verdict:" in shown


def test_forgetting_summary_and_the_shipped_sample():
    from tuneforge.evaluate.forgetting import forgetting_summary, general_text

    sample = general_text()
    assert len(sample) == 30 and all(example.is_text and len(example.text.split()) >= 8 for example in sample)
    damaged = forgetting_summary(10.0, 12.0)
    assert damaged["forgot"] and damaged["change"] == pytest.approx(0.2) and "try fewer epochs" in damaged["message"]
    assert not forgetting_summary(10.0, 10.5)["forgot"]  # +5 %: within the threshold


def test_no_baselines_leaves_them_out(train_run):
    result = train_run(test_split=0.2, baselines=False, evaluation_strategy="no", saving_strategy="no", epochs=1)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["baselines"] == {} and saved["verdict"] is None and saved["forgetting"] is None
