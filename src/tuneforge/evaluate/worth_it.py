"""``tuneforge eval``'s question: is this model better than prompting the base model?

``evaluate_with_baselines`` scores a model (a base model, or a trained run / adapter on its base) on a
set of examples and, beside it and on the same examples with the same scoring, the base model
zero-shot and its prompting baselines (``evaluate/baselines.py``: seeded few-shot and retrieval
few-shot), then gives the verdict. The shots come from a training pool that never includes the
examples scored: a run's own train split by default, or examples the caller gives; any pool example
equal to a scored one is dropped (and counted) so that retrieval cannot show the answer.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.baselines import DEFAULT_SHOTS, Baseline, candidates_of, evaluate_baselines, verdict
from tuneforge.evaluate.metrics import is_label_task, normalize_answer
from tuneforge.evaluate.run import ModelEvaluation, evaluate_model

DEFAULT_SEED = 42  # the config's default seed


@dataclass
class WorthItEvaluation:
    """A model's evaluation, and (when asked and possible) the base's, the baselines' and the verdict."""

    model: str  # what was evaluated, in words ("base model X", "LoRA adapter of RUN on X")
    evaluation: ModelEvaluation
    base: ModelEvaluation | None = None  # the base zero-shot, when ``model`` is a trained one
    baselines: dict[str, Baseline] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    baselines_skipped: str | None = None  # why there are no baselines, when they were asked for
    pool: dict[str, Any] = field(default_factory=dict)  # where the shots came from, how many, how many dropped

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        """The evaluation's own fields at the top (``performance``, ``resources``, ``task``) and the rest beside them."""
        return {"model": self.model, **self.evaluation.to_dict(with_predictions),
                "base": self.base.to_dict(with_predictions) if self.base else None,
                "baselines": {name: baseline.to_dict() for name, baseline in self.baselines.items()},
                "verdict": self.verdict, "baselines_skipped": self.baselines_skipped, "pool": self.pool}


def run_train_split(adapter: str | Path | None) -> Path | None:
    """A run directory's own train split (``RUN_DIR/data/train.jsonl``), or None."""
    if adapter is None:
        return None
    path = Path(adapter) / "data" / "train.jsonl"
    return path if path.is_file() else None


def _key(example: TrainingExample) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], " ".join(str(m["content"]).split())) for m in example.messages)


def disjoint_pool(pool: Sequence[TrainingExample], scored: Sequence[TrainingExample]) -> tuple[list[TrainingExample], int]:
    """``pool`` without the examples equal (same turns, white space aside) to one of ``scored``, and how many went."""
    scored_keys = {_key(example) for example in scored}
    kept = [example for example in pool if _key(example) not in scored_keys]
    return kept, len(pool) - len(kept)


def task_labels(*example_sets: Sequence[TrainingExample]) -> list[str] | None:
    """The label set of a label task (from every given example's answer), or None for free text."""
    references = [example.output for examples in example_sets for example in examples if not example.is_text]
    return sorted({normalize_answer(r) for r in references}) if references and is_label_task(references) else None


def evaluate_with_baselines(
    examples: Sequence[TrainingExample],
    adapter: str | Path | None = None,
    model: str | None = None,
    train: Sequence[TrainingExample] | None = None,
    baselines: bool = True,
    shots: int = DEFAULT_SHOTS,
    retriever: str = "bm25",
    seed: int | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    **evaluation_args: Any,
) -> WorthItEvaluation:
    """Score ``adapter`` on ``model`` (or ``model`` alone) on ``examples``, with the base and its baselines.

    ``train`` is the shot pool; default: the run's own train split when ``adapter`` is a run
    directory. ``seed`` draws the few-shot examples (default: the run's seed, else ``DEFAULT_SEED``).
    Without a pool (or with ``baselines=False``) only the model, and for a trained model its base
    zero-shot, are scored; ``baselines_skipped`` says why. ``evaluation_args`` go to
    ``evaluate_model`` (max_length, batch_size, max_new_tokens, metrics). ``on_progress(name, n)``
    is told of every batch ("model", "base", "few_shot", "retrieval_few_shot").
    """
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.runs import load_trained, run_config

    pool_source = "given"
    if train is None and baselines and run_train_split(adapter) is not None:
        train, _ = TrainingDataManager().load(run_train_split(adapter))
        pool_source = str(run_train_split(adapter))
    pool, dropped = disjoint_pool(train or [], examples)
    labels = task_labels(pool, examples)
    tell = (lambda name: (lambda n: on_progress(name, n))) if on_progress else (lambda name: None)

    loaded, tokenizer, description = load_trained(adapter, model)
    try:
        evaluation = evaluate_model(loaded, tokenizer, examples, labels=labels, on_progress=tell("model"), **evaluation_args)
    finally:
        if adapter is not None:
            del loaded
            gc.collect()
    result = WorthItEvaluation(model=description, evaluation=evaluation,
                               pool={"source": pool_source if train is not None else None, "examples": len(pool),
                                     "dropped_as_scored": dropped})
    if adapter is None and not baselines:
        return result
    if adapter is not None:
        saved = run_config(Path(adapter))
        if seed is None and isinstance(saved.get("seed"), int):
            seed = saved["seed"]  # the run's own draw of shots
        base_model, base_tokenizer, _ = load_trained(None, model or saved.get("model"))
        result.base = evaluate_model(base_model, base_tokenizer, examples, labels=labels, on_progress=tell("base"), **evaluation_args)
    else:
        base_model, base_tokenizer = loaded, tokenizer
    if not baselines:
        return result
    if not pool:
        result.baselines_skipped = ("no training examples to show as shots: give the training data (--train FILE)"
                                    + (", or evaluate a run directory (its data/train.jsonl is used)" if adapter is None else ""))
        return result
    result.baselines = evaluate_baselines(base_model, base_tokenizer, pool, examples, shots=shots, retriever=retriever,
                                          seed=DEFAULT_SEED if seed is None else seed, labels=labels, on_progress=on_progress,
                                          **evaluation_args)
    if not result.baselines:
        result.baselines_skipped = "no chat example with an answer to prompt with"
    elif adapter is not None:
        result.verdict = verdict({"performance": evaluation.performance, "resources": evaluation.resources},
                                 candidates_of(result.base, result.baselines))
    return result


# ----- prompting baselines beside the models of `tuneforge compare` -------------------------------

BASELINE_KIND = "baseline"  # a compare Contender that is a prompting baseline of a base model


def baselines_for_comparison(contenders: Sequence[Any], examples: Sequence[TrainingExample], labels: list[str] | None,
                             train: Sequence[TrainingExample] | None = None, shots: int = DEFAULT_SHOTS,
                             retriever: str = "bm25", **evaluation_args: Any) -> tuple[dict[str, Baseline], str | None, str | None]:
    """(baselines by name, the base model they prompt, why there are none) for ``compare_sources``' contenders.

    The base is the first trained contender's base model; the shots come from ``train`` or that
    run's own train split, without any of ``examples``; the seed is that run's.
    """
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.runs import load_trained, run_config

    trained = [c for c in contenders if c.kind not in ("model", BASELINE_KIND)]
    if not trained:
        return {}, None, "no trained model among those compared (baselines prompt a trained model's base)"
    first = trained[0]
    base = first.base_model or (run_config(first.run_dir).get("model") if first.run_dir else None)
    if not base:
        return {}, None, f"the base model of {first.name} is unknown (its run has no config.yaml)"
    if train is None and run_train_split(first.run_dir) is not None:
        train, _ = TrainingDataManager().load(run_train_split(first.run_dir))
    pool, _ = disjoint_pool(train or [], examples)
    if not pool:
        return {}, base, "no training examples to show as shots: give --train FILE (the first run has no data/train.jsonl)"
    saved = run_config(first.run_dir) if first.run_dir else {}
    seed = saved["seed"] if isinstance(saved.get("seed"), int) else DEFAULT_SEED
    model, tokenizer, _ = load_trained(None, str(base))
    try:
        found = evaluate_baselines(model, tokenizer, pool, examples, shots=shots, retriever=retriever, seed=seed,
                                   labels=labels, **evaluation_args)
    finally:
        del model
        gc.collect()
    return found, str(base), None if found else "no chat example with an answer to prompt with"
