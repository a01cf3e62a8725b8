"""evaluate_model and greedy generation on the tiny model."""

from __future__ import annotations

import math

import pytest

from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import render_prompt
from tuneforge.evaluate.generate import generate_answers
from tuneforge.evaluate.run import evaluate_model


def prompts(tokenizer) -> list[str]:
    questions = ["sky?", "what color is the grass in spring?", "rose", "name the color of a cherry, please, now", "hi"]
    return [render_prompt(tokenizer, TrainingExample.from_pair(q, "x")) for q in questions]


def test_batched_generation_equals_one_by_one(tiny_model, tiny_tokenizer):
    side = tiny_tokenizer.padding_side
    batch = generate_answers(tiny_model, tiny_tokenizer, prompts(tiny_tokenizer), max_new_tokens=6, batch_size=8)
    single = [generate_answers(tiny_model, tiny_tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts(tiny_tokenizer)]
    assert batch == single  # left padding does not change the answers
    assert tiny_tokenizer.padding_side == side  # restored


@pytest.fixture
def force_tokens(tiny_model):
    """``force_tokens(first, then)``: the model predicts ``first`` as its next token, ``then`` ever after."""
    handles = []

    def force(first: int, then: int) -> None:
        calls = {"n": 0}

        def hook(module, inputs, output):
            output = output.clone()
            output[..., first if calls["n"] == 0 else then] += 1e4
            calls["n"] += 1
            return output

        handles.append(tiny_model.get_output_embeddings().register_forward_hook(hook))

    yield force
    for handle in handles:
        handle.remove()


def test_generation_stops_at_end_of_turn(tiny_model, tiny_tokenizer, force_tokens):
    (b,) = tiny_tokenizer("b", add_special_tokens=False)["input_ids"]
    force_tokens(tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"), b)
    # Had generation gone on past <|im_end|>, the answers would hold "b"s.
    assert generate_answers(tiny_model, tiny_tokenizer, prompts(tiny_tokenizer)[:2], max_new_tokens=20) == ["", ""]


def test_generation_respects_max_new_tokens(tiny_model, tiny_tokenizer, force_tokens):
    (b,) = tiny_tokenizer("b", add_special_tokens=False)["input_ids"]
    force_tokens(b, b)
    assert generate_answers(tiny_model, tiny_tokenizer, prompts(tiny_tokenizer)[:2], max_new_tokens=5) == ["bbbbb", "bbbbb"]


def test_evaluate_model_label_task(tiny_model, tiny_tokenizer):
    examples = [TrainingExample.from_pair(f"color of thing {i}?", ["blue", "green", "red"][i % 3], source=f"m:{i}") for i in range(9)]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, max_new_tokens=4)
    assert evaluation.task == "classification"
    performance = evaluation.performance
    for key in ("accuracy", "precision", "recall", "f1_score", "exact_match", "loss", "perplexity", "token_accuracy"):
        assert key in performance, key
    assert performance["perplexity"] == pytest.approx(math.exp(performance["loss"]))
    assert len(evaluation.predictions) == 9
    assert evaluation.predictions[4]["source"] == "m:4" and evaluation.predictions[4]["reference"] == "green"
    resources = evaluation.resources
    assert resources["examples"] == 9
    assert resources["training_time"] == 0.0 and resources["compute_cost"] == 0.0  # a base model, no price given
    assert 0 < resources["memory_usage"] == resources["peak_memory_mb"] and resources["eval_seconds"] > 0
    assert "predictions" not in evaluation.to_dict() and "predictions" in evaluation.to_dict(with_predictions=True)


def test_evaluate_model_generation_and_text(tiny_model, tiny_tokenizer):
    free = [TrainingExample.from_pair(f"describe thing {i}", f"a long and unique description number {i}") for i in range(4)]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, free, max_new_tokens=4, metrics=("bleu", "rouge", "loss"))
    assert evaluation.task == "generation"
    assert {"bleu", "rouge_l", "exact_match", "loss"} <= set(evaluation.performance)
    assert "accuracy" not in evaluation.performance

    text = [TrainingExample(text="the sky is blue"), TrainingExample(text="grass is green")]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, text)
    assert evaluation.task == "language_modeling"
    assert set(evaluation.performance) == {"loss", "perplexity", "token_accuracy"}
    assert evaluation.predictions == []


def test_evaluate_model_only_loss(tiny_model, tiny_tokenizer):
    examples = [TrainingExample.from_pair("sky?", "blue"), TrainingExample.from_pair("grass?", "green")]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, metrics=("loss",))
    assert set(evaluation.performance) == {"loss", "perplexity", "token_accuracy"}
    assert evaluation.predictions == []


def test_evaluation_resources_are_its_own(tiny_model, tiny_tokenizer):
    """Finding 8: the evaluation reports its own peak memory, not the process's lifetime peak; seed vocabulary keys."""
    from tuneforge.core.memory import peak_memory_mb

    block = bytearray(400 * 1_000_000)
    block[::4096] = b"x" * len(block[::4096])  # the process peak is now at least 400 MB above what evaluation needs
    del block
    examples = [TrainingExample.from_pair("sky?", "blue"), TrainingExample.from_pair("grass?", "green")]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, metrics=("loss", "accuracy"), max_new_tokens=2,
                                training_time=120.0, cost_per_hour=3.6)
    resources = evaluation.resources
    assert resources["peak_memory_mb"] < peak_memory_mb() - 300
    assert resources["memory_usage"] == resources["peak_memory_mb"]
    assert resources["training_time"] == 120.0
    assert resources["compute_cost"] == pytest.approx((120.0 + resources["eval_seconds"]) / 3600 * 3.6, abs=1e-5)
    assert {"eval_seconds", "examples"} <= set(resources)
