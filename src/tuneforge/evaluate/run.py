"""``evaluate_model``: loss, perplexity and generation scores of one model on a set of examples."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from tuneforge.core.memory import PeakMemory
from tuneforge.data.batching import iter_eval_batches
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_examples, render_prompt
from tuneforge.evaluate.generate import EVAL_BATCH_SIZE, generate_answers
from tuneforge.evaluate.preference import preference_scores
from tuneforge.evaluate.metrics import ANSWERS, LIKELIHOOD, is_label_task, metric_specs
from tuneforge.model.loss import mean_label_loss

# What evaluate_model scores unless told otherwise (the config's default evaluation_metrics).
DEFAULT_METRICS = ("accuracy", "precision", "recall", "f1", "loss", "perplexity", "bleu", "rouge")
# Answers longer than this many tokens beyond the longest label are not needed to score a label task.
LABEL_SLACK_TOKENS = 4


@dataclass
class ModelEvaluation:
    """How a model did on a dataset: ``performance`` scores, ``resources`` used, and every prediction."""

    performance: dict[str, float]
    resources: dict[str, float]
    task: str  # "classification" when the references are a small label set, else "generation"
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_predictions:
            data.pop("predictions")
        return data


def evaluate_model(
    model: Any,
    tokenizer: Any,
    examples: Sequence[TrainingExample],
    max_length: int = 512,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    metrics: Sequence[str] = DEFAULT_METRICS,
    on_progress: Callable[[int], None] | None = None,
    labels: Sequence[str] | None = None,
    training_time: float = 0.0,
    cost_per_hour: float = 0.0,
) -> ModelEvaluation:
    """Score ``model`` on ``examples``.

    ``metrics`` are names in the ``METRICS`` registry (or ``module:attribute`` plug-ins). Loss and
    perplexity come from the references (teacher forcing, completion tokens only). Greedy answers
    are scored by the answer metrics that apply to the task: accuracy/precision/recall/F1 for label
    tasks, BLEU and ROUGE-L for free text, exact match for both. Text-only examples get loss and perplexity only. ``labels``
    (the task's label set, known from the training data) makes it a label task even when the
    examples scored here are too few to tell.

    ``resources``: ``eval_seconds``, ``examples``, ``peak_memory_mb`` (the peak during this
    evaluation, not the process's lifetime peak; GPU memory on a GPU) and the seed vocabulary's
    ``training_time`` (seconds of training behind the model, as given), ``memory_usage`` (the same
    peak, MB) and ``compute_cost`` (training plus evaluation hours × ``cost_per_hour``). When answers
    were generated: ``prompt_tokens_per_request`` (mean tokens of a rendered prompt: what each request
    costs in input) and ``seconds_per_request`` (generation wall time / requests, batched as evaluation
    batches them; the loss pass not included), so prompting baselines and the tuned model compare.
    """
    started = time.perf_counter()
    with PeakMemory(_device_of(model)) as memory:
        performance, task, predictions, requests = _score(model, tokenizer, examples, max_length, batch_size, max_new_tokens,
                                                          metrics, on_progress, labels)
    seconds = time.perf_counter() - started
    resources = {
        "eval_seconds": round(seconds, 3), "peak_memory_mb": memory.peak_mb, "examples": len(examples),
        "training_time": round(training_time, 3), "memory_usage": memory.peak_mb,
        "compute_cost": round((training_time + seconds) / 3600 * cost_per_hour, 6),
        **requests,
    }
    return ModelEvaluation(performance=performance, resources=resources, task=task, predictions=predictions)


def _device_of(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


def _score(model: Any, tokenizer: Any, examples: Sequence[TrainingExample], max_length: int, batch_size: int,
           max_new_tokens: int, metrics: Sequence[str], on_progress: Callable[[int], None] | None,
           labels: Sequence[str] | None) -> tuple[dict[str, float], str, list[dict[str, Any]], dict[str, float]]:
    specs = metric_specs(metrics)
    performance: dict[str, float] = {}
    likelihood = [spec for spec in specs if spec.source == LIKELIHOOD]
    if likelihood:
        encoded = encode_examples(tokenizer, list(examples), max_length)
        if encoded.items:
            scores = mean_label_loss(model, iter_eval_batches(encoded.items, batch_size, tokenizer.pad_token_id))
            # The loss pass gives these three at once; likelihood plug-ins add their own keys.
            performance.update(loss=scores["loss"], perplexity=scores["perplexity"], token_accuracy=scores["accuracy"])
            for spec in likelihood:
                performance.update(spec.compute(scores))
    if any(example.is_preference for example in examples):  # held-out pairs: is the chosen answer the likelier one?
        performance.update(preference_scores(model, tokenizer, examples, max_length, batch_size))
    chat = [example for example in examples if not example.is_text]
    task = "language_modeling"
    predictions: list[dict[str, Any]] = []
    requests: dict[str, float] = {}
    scored = [spec for spec in specs if spec.source == ANSWERS]
    if chat and scored:
        references = [example.output for example in chat]
        task = "classification" if labels or is_label_task(references) else "generation"
        budget = max_new_tokens
        if task == "classification":
            known = set(references) | set(labels or ())
            longest = max(len(tokenizer(ref, add_special_tokens=False)["input_ids"]) for ref in known)
            budget = min(max_new_tokens, longest + LABEL_SLACK_TOKENS)
        prompts = [render_prompt(tokenizer, example) for example in chat]
        generation_started = time.perf_counter()
        answers = generate_answers(model, tokenizer, prompts, budget, batch_size=max(batch_size, EVAL_BATCH_SIZE), on_batch=on_progress)
        generation_seconds = time.perf_counter() - generation_started
        prompt_tokens = [len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) for prompt in prompts]
        requests = {"prompt_tokens_per_request": round(sum(prompt_tokens) / len(prompts), 2),
                    "seconds_per_request": round(generation_seconds / len(prompts), 5)}
        # Strict exact match is always reported beside whatever was asked for.
        for spec in metric_specs([*(spec.name for spec in scored), "exact_match"]):
            if task in spec.tasks:
                performance.update(spec.score(answers, references, labels, chat))
        predictions = [
            {"source": ex.source, "input": ex.input, "reference": ref, "prediction": ans}
            for ex, ref, ans in zip(chat, references, answers)
        ]
    return performance, task, predictions, requests
