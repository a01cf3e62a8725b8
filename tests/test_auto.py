"""Hyper-parameters chosen from the data (train/auto.py): the rules on synthetic statistics, explicit values
winning, early stopping only with a validation split, and the chosen values round-tripping through
config.yaml and resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from helpers import FAST
from tuneforge.config import AUTO_FIELDS, load_config, make_config
from tuneforge.core.status import RunStatus
from tuneforge.data.stats import Distribution
from tuneforge.model.methods import get_method
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train.auto import DataProfile, ModelFacts, choose_hyperparameters, describe

SMOLLM = ModelFacts(parameters=134_515_008, context=8192, name="smollm2-135m-instruct")
LORA = get_method("lora")


def profile(rows: int, length: int, answer: int, validation: int | None = None, spread: int = 0,
            labels: list[str] | None = None) -> DataProfile:
    """``rows`` training examples of ``length`` tokens (± ``spread``) with ``answer`` trained tokens, built in O(distinct)."""
    validation = rows // 10 if validation is None else validation
    lengths, answers, prompts = Distribution(), Distribution(), Distribution()
    total = rows + validation
    values = [length + offset for offset in range(-spread, spread + 1)] or [length]
    for index, value in enumerate(values):
        count = total // len(values) + (1 if index < total % len(values) else 0)
        lengths.counts[value] += count
        lengths.total += value * count
        lengths.n += count
        answers.counts[min(answer, value)] += count
        answers.total += min(answer, value) * count
        answers.n += count
        prompts.counts[max(0, value - answer)] += count
        prompts.n += count
    return DataProfile(rows, validation, lengths, answers, prompts, labels)


def values(choices) -> dict:
    return {name: choice.value for name, choice in choices.items()}


def test_ten_rows_get_three_epochs_and_small_batches_for_enough_steps():
    choices = choose_hyperparameters(profile(10, 60, 3, labels=["no", "yes"]), SMOLLM, LORA, make_config({}))
    chosen = values(choices)
    assert chosen["epochs"] == 3.0 and "only 10 training examples" in choices["epochs"].reason
    assert chosen["batch_size"] == 1  # 10 rows x 3 epochs: only batch 1 gives 30 steps, close to the 32 wanted
    assert chosen["max_length"] == 64 and choices["max_length"].reason == "the longest example is 60 tokens"
    assert chosen["learning_rate"] == 2 * LORA.default_learning_rate  # 30 planned steps: a short run
    assert "short run of a label task (30 planned steps" in choices["learning_rate"].reason
    free_text = choose_hyperparameters(profile(10, 60, 3), SMOLLM, LORA, make_config({}))  # no label set
    assert free_text["learning_rate"].value == LORA.default_learning_rate
    assert chosen["early_stopping"] is True  # one validation example is still a validation split


def test_a_million_rows_see_fifty_thousand_examples_with_more_rank_and_choosing_is_cheap():
    stats = profile(1_000_000, 120, 40, spread=30)
    started = time.perf_counter()
    choices = choose_hyperparameters(stats, SMOLLM, LORA, make_config({}))
    assert time.perf_counter() - started < 1.0
    chosen = values(choices)
    assert chosen["epochs"] == 0.05 and "50,000" in choices["epochs"].reason
    assert chosen["lora_r"] == 64
    assert chosen["batch_size"] == 8  # 1,024 tokens per step at a mean of 120 tokens
    assert chosen["max_length"] == 160  # the longest (150) rounded up to a multiple of 16: nothing real is cut
    total_steps = 1_000_000 // 8 * 0.05
    assert chosen["eval_steps"] == round(total_steps / 4)  # a run shorter than an epoch is still evaluated 4 times
    assert chosen["warmup_steps"] == round(total_steps * 0.05)


def test_one_token_answers_of_a_label_task_are_never_cut():
    stats = profile(480, 40, 1, spread=5, labels=["no", "yes"])
    choices = choose_hyperparameters(stats, SMOLLM, LORA, make_config({}))
    chosen = values(choices)
    assert chosen["max_length"] == 48 and "45 tokens" in choices["max_length"].reason
    assert chosen["epochs"] == 1.5  # 480 examples: about 500 seen, in half epochs
    assert chosen["batch_size"] == 16  # 32 rows of 40 tokens fill the token budget, halved once ...
    assert 480 / 16 * 1.5 >= 32 and "halved to 16" in choices["batch_size"].reason  # ... for 32+ steps


def test_an_epoch_keeps_at_least_sixteen_steps_so_each_example_seen_moves_the_model():
    stats = profile(180, 60, 10)  # 180 rows of 60 tokens: 16 of them fill the token budget, 12 steps an epoch
    choices = choose_hyperparameters(stats, SMOLLM, LORA, make_config({}))
    assert choices["epochs"].value == 3.0  # 3 x 12 = 36 steps would pass the whole-run rule ...
    assert choices["batch_size"].value == 8 and "16 an epoch" in choices["batch_size"].reason  # ... an epoch needs 16
    few = choose_hyperparameters(profile(30, 60, 10), SMOLLM, LORA, make_config({}))
    assert few["batch_size"].value >= 1 and math.ceil(30 / few["batch_size"].value) * few["epochs"].value >= 32


def test_answers_longer_than_the_context_are_cut_at_the_context_and_the_reason_says_how_many():
    stats = profile(20, 9000, 8000)  # prompt 1,000 tokens, answer 8,000: beyond a context of 8,192
    choices = choose_hyperparameters(stats, SMOLLM, LORA, make_config({}))
    assert choices["max_length"].value == 8192
    assert "over smollm2-135m-instruct's context of 8192" in choices["max_length"].reason
    assert "22 examples truncated" in choices["max_length"].reason  # 20 train + 2 validation
    assert choices["batch_size"].value == 1  # one 8k-token example is over the 1,024-token budget already
    long_prompts = profile(20, 9000, 100)  # the prompt alone fills the context: no answer token is left
    assert "dropped" in choose_hyperparameters(long_prompts, SMOLLM, LORA, make_config({}))["max_length"].reason


def test_an_extreme_tail_is_cut_and_counted_but_an_ordinary_spread_is_not():
    stats = profile(1000, 100, 10, validation=0, spread=10)
    stats.lengths.add(5000)  # one outlier among 1,001
    choice = choose_hyperparameters(stats, SMOLLM, LORA, make_config({}))["max_length"]
    assert choice.value == 224 and "1 example truncated" in choice.reason and "extreme tail" in choice.reason
    ordinary = choose_hyperparameters(profile(1000, 100, 10, spread=10), SMOLLM, LORA, make_config({}))["max_length"]
    assert ordinary.value == 112 and ordinary.reason == "the longest example is 110 tokens"


def test_learning_rate_and_warmup_follow_method_model_size_and_run_length():
    big = ModelFacts(parameters=7_000_000_000, context=4096)
    stats = profile(300, 80, 10, labels=["a", "b", "c"])
    lora_big = choose_hyperparameters(stats, big, LORA, make_config({}))
    assert lora_big["learning_rate"].value == pytest.approx(LORA.default_learning_rate * 0.5 * 2)  # 57 steps: short run
    long_run = choose_hyperparameters(profile(5000, 80, 10, labels=["a", "b"]), big, LORA, make_config({}))  # 625 steps
    assert long_run["learning_rate"].value == pytest.approx(LORA.default_learning_rate * 0.5)
    assert "short run" not in long_run["learning_rate"].reason
    ia3 = get_method("ia3")  # the short-run factor is only for the LoRA family, where it was measured
    assert choose_hyperparameters(stats, SMOLLM, ia3, make_config({"method": "ia3"}))["learning_rate"].value == \
        ia3.default_learning_rate
    full = get_method("full")
    full_small = choose_hyperparameters(stats, SMOLLM, full, make_config({"method": "full"}))
    assert full_small["learning_rate"].value == full.default_learning_rate
    total = full_small["warmup_steps"].reason.split(" of the ")[1].split()[0]
    assert full_small["warmup_steps"].value == round(int(total) * 0.10)  # full fine-tuning warms up longer
    assert "not read by method full" in full_small["lora_r"].reason


def test_explicit_values_always_win_in_python_yaml_and_flags(tmp_path: Path):
    given = {"epochs": 2.0, "batch_size": 4, "learning_rate": 3e-4, "max_length": 96, "warmup_steps": 0, "lora_r": 8,
             "early_stopping": False}
    choices = choose_hyperparameters(profile(5000, 300, 100), SMOLLM, LORA, make_config(given))
    assert {name: values(choices)[name] for name in given} == given
    assert not any(choices[name].auto for name in given)
    assert "eval_steps" not in choices  # early stopping given as off: the evaluation cadence is left alone
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"max_length": 96, "epochs": "auto"}))
    config = load_config(path, {"batch_size": "4"})  # a CLI flag arrives as text
    assert (config.max_length, config.batch_size, config.epochs) == (96, 4, "auto")
    assert set(config.auto_fields()) == set(AUTO_FIELDS) - {"max_length", "batch_size"}
    assert "max_length 96 (given)" in describe(choose_hyperparameters(profile(50, 40, 2), SMOLLM, LORA, config))


def test_early_stopping_is_on_by_default_only_with_a_validation_split():
    with_split = choose_hyperparameters(profile(250, 50, 2, validation=20), SMOLLM, LORA, make_config({}))
    assert with_split["early_stopping"].value is True
    assert with_split["evaluation_strategy"].value == "steps"
    assert with_split["epochs"].value == 2.0 and with_split["early_stopping_patience"].value == 4  # a whole epoch
    one_epoch = choose_hyperparameters(profile(600, 50, 2, validation=20), SMOLLM, LORA, make_config({}))
    assert one_epoch["epochs"].value == 1.0 and one_epoch["early_stopping_patience"].value == 2
    assert (with_split["early_stopping_min_delta"].value, with_split["early_stopping_relative_delta"].value) == (0.001, 0.05)
    assert with_split["early_stopping_goal"].value == 0.0025  # a validation loss this low: nothing is left to gain
    without = choose_hyperparameters(profile(200, 50, 2, validation=0), SMOLLM, LORA, make_config({}))
    assert without["early_stopping"].value is False and "no validation split" in without["early_stopping"].reason
    assert "evaluation_strategy" not in without
    own_cadence = choose_hyperparameters(profile(200, 50, 2), SMOLLM, LORA, make_config({"eval_steps": 5}))
    assert own_cadence["early_stopping"].value is True and "eval_steps" not in own_cadence  # the user's cadence stays
    assert make_config({}).concrete().early_stopping is False  # a config no run resolved: early stopping off, as before


def test_a_validation_split_of_a_few_examples_is_evaluated_once_an_epoch():
    """Five validation examples: early stopping stays on, but its evaluations are per epoch, not per quarter."""
    few = choose_hyperparameters(profile(45, 60, 2, validation=5), SMOLLM, LORA, make_config({}))
    assert few["early_stopping"].value is True and few["evaluation_strategy"].value == "epoch"
    assert "eval_steps" not in few and "5 examples is noisy" in few["evaluation_strategy"].reason
    assert few["early_stopping_patience"].value == 1  # once an epoch: one epoch without improvement ends the run
    enough = choose_hyperparameters(profile(100, 60, 2, validation=10), SMOLLM, LORA, make_config({}))
    assert enough["evaluation_strategy"].value == "steps" and "eval_steps" in enough


AUTO_RUN = {name: value for name, value in FAST.items() if name not in AUTO_FIELDS}


def test_a_run_records_its_choices_and_resume_trains_with_the_same_values(tiny_model_dir, session_dataset, tmp_path):
    run_dir = tmp_path / "run"
    values_ = {**AUTO_RUN, "data": str(session_dataset), "model": str(tiny_model_dir), "output": str(run_dir),
               "evaluate_base": False}
    shown: list[dict] = []

    def on_event(event):
        if event.get("type") == "hyperparameters.chosen":
            shown.append(event)
        if event.get("type") == "train.step" and event["step"] == 2:
            pipeline.request_stop("test: stop after step 2")

    pipeline = FineTuningPipeline(make_config(values_), on_event=on_event, handle_signals=False)
    first = pipeline.train()
    assert first.status is RunStatus.INTERRUPTED
    assert shown and "max_length" in shown[0]["message"] and "(auto)" in shown[0]["message"]
    saved_text = (run_dir / "config.yaml").read_text()
    saved = yaml.safe_load(saved_text)
    assert all(saved[name] == "auto" for name in AUTO_FIELDS)  # the config keeps auto ...
    assert set(AUTO_FIELDS) <= set(saved["resolved"])  # ... beside the values chosen, with their reasons
    assert saved["resolved"]["max_length"]["reason"].startswith("the longest example is")
    chosen = {name: item["value"] for name, item in saved["resolved"].items()}
    results = json.loads((run_dir / "results.json").read_text())
    assert {name: item["value"] for name, item in results["hyperparameters"].items()} == chosen
    assert load_config(run_dir / "config.yaml").auto_fields() == []  # everything resolved: resume chooses nothing

    resumed = FineTuningPipeline(make_config({**values_, "resume": True})).train()
    assert resumed.status is RunStatus.SUCCEEDED and resumed.train["resumed_from_step"] == 2
    assert (run_dir / "config.yaml").read_text() == saved_text
    assert {name: item["value"] for name, item in resumed.hyperparameters.items()} == chosen
    started = [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
               if e["type"] == "train.started"]
    assert len(started) == 2 and started[0]["total_steps"] == started[1]["total_steps"]
    assert started[1]["batch_size"] == chosen["batch_size"]
    assert "Hyperparameters" in (run_dir / "report.html").read_text()


def test_without_a_validation_split_the_run_does_not_stop_early(tiny_model_dir, session_dataset, tmp_path):
    values_ = {**AUTO_RUN, "data": str(session_dataset), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
               "evaluate_base": False, "validation_split": 0.0, "epochs": 1, "batch_size": 8}
    result = FineTuningPipeline(make_config(values_)).train()
    assert result.status is RunStatus.SUCCEEDED
    assert result.hyperparameters["early_stopping"]["value"] is False and result.train["stopped_early"] is None
    assert result.hyperparameters["epochs"] == {"value": 1.0, "reason": "given", "auto": False}
