"""Hyper-parameters chosen from the data: what a config field left ``auto`` becomes, and why.

``choose_hyperparameters(profile, model, method, config)`` is a pure function of the data's statistics
(``DataProfile``: examples per split, the token-length distribution, the answers' lengths, the label
set — what the data doctor counts, here measured on the run's own tokenization), the model (``ModelFacts``:
parameters, context) and the method. It is not a search (that is ``tuneforge search``) and costs
microseconds. Every value comes with a reason a person can check, e.g. "max_length 96: the longest
example is 71 tokens". An explicit value always wins: only the fields left ``auto`` are chosen.

The rules (constants below; README "Defaults chosen from the data"):

- max_length: the longest example rounded up to a multiple of 16, so nothing real is cut; only when
  the tail is extreme (the longest is over 2x the 99th percentile and fewer than 1 % of the examples
  lie beyond that) is it cut at 2x the 99th percentile, saying how many examples are cut; never above
  the model's context (saying how many are cut, and how many lose their whole answer).
- batch_size: about ``TOKENS_PER_STEP`` tokens per optimizer step (a power of two from 4 to 64 examples
  of the mean length), halved while the run would have fewer than ``MIN_STEPS`` steps (down to 1) or an
  epoch fewer than ``MIN_STEPS_PER_EPOCH`` (down to 4); the passes per step follow from ``micro_batch_tokens``.
- epochs: about ``TARGET_EXAMPLES_SEEN`` examples seen, within 1 to 3 epochs (in halves); beyond
  ``MAX_EXAMPLES_SEEN`` examples, less than one epoch.
- early_stopping: on when there is a validation split, off without one. When on and the cadence is not
  set, evaluations every quarter epoch, patience 2 (a whole epoch, 4, for runs of 2 epochs or more); an evaluation improves when it beats the best loss by
  5 % of it and by 0.001 (so a plateau ends the run, and a loss already under ~0.001 is done) — the
  loop keeps the best checkpoint (``final_weights: best``); a validation split under
  ``NOISY_VALIDATION`` examples is evaluated once an epoch instead (its loss is mostly noise), patience 1;
  a validation loss under ``AUTO_GOAL_LOSS`` ends the run at once (nothing is left to learn).
- learning_rate: the method's ``default_learning_rate`` (tuned for ~100M-1B models), lower for bigger models;
  twice it for a LoRA-family run of a label task under ``SHORT_RUN_STEPS`` optimizer steps (measured: it reaches its
  best sooner; free-text tasks were worse at twice the rate).
- warmup_steps: 5 % of the steps for methods that keep the base frozen, 10 % for full fine-tuning.
- lora_r: 16; 32 from 20,000 training examples, 64 from 200,000 (more data can use more rank).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tuneforge.config import AUTO, FineTuningConfig, ResolvedValue
from tuneforge.data.stats import Distribution
from tuneforge.data.tokenize import IGNORE_INDEX

TOKENS_PER_STEP = 1024  # tokens per optimizer step the batch size aims at (batch 8 of ~128-token rows)
MIN_BATCH, MAX_BATCH = 4, 64  # below 4 a CPU pass is mostly overhead (bench/results/speed: b1 2.7x slower per example)
MIN_STEPS = 32  # fewer optimizer steps than this learn too little: the batch is halved (down to 1)
# An epoch of fewer optimizer steps than this makes too few updates per example seen: the batch is halved (down to
# MIN_BATCH). bench: short_text (180 rows) at batch 16, 12 steps an epoch, scored 0.983 ROUGE-L after 240 examples;
# at batch 8 it scored 1.0 after 144.
MIN_STEPS_PER_EPOCH = 16
# Examples a small task needs to see; epochs = this / train examples, within 1-3 (in halves). 400 gave the demo (288
# rows) 1.5 epochs, where its validation loss was still falling fast (0.138 at 1.5 epochs, 0.069 at 2; test accuracy
# 0.861 vs 0.972, bench/results/auto.md); tasks that learn sooner end by early stopping, not by this budget.
TARGET_EXAMPLES_SEEN = 500
MIN_EPOCHS, MAX_EPOCHS = 1.0, 3.0
MAX_EXAMPLES_SEEN = 50_000  # beyond this, less than one epoch: a pass over 50,000 examples is plenty for an adapter
EXTREME_TAIL_RATIO = 2.0  # the longest example over this times the 99th percentile is an extreme tail ...
EXTREME_TAIL_SHARE = 0.01  # ... when fewer than this share of the examples lie beyond that length
LENGTH_ROUNDING = 16
EVALUATIONS_PER_EPOCH = 4
# Under this many validation examples the validation loss moves by noise from one evaluation to the next
# (bench: 5 examples stopped a 45-row task after half an epoch): evaluated once an epoch instead.
NOISY_VALIDATION = 10
AUTO_PATIENCE, AUTO_MIN_DELTA = 2, 0.001
# An improvement must also beat the best loss by this share of it: an absolute 0.01 stopped runs whose loss was still
# falling 25 % an evaluation (bench: chat, 0.032 -> 0.0235) once the loss was small; under AUTO_MIN_DELTA it is done.
AUTO_RELATIVE_DELTA = 0.05
# A validation loss this low means each answer token gets about 99.75 % on average: greedy decoding reproduces the
# answers, more training cannot improve them, so the run stops there (bench: short_text scored 1.0 ROUGE-L from a
# loss of 0.0024, long_text from 0.0011, labels 1.0 accuracy from 0.0019; a goal of 0.001 kept short_text training 24
# more steps for nothing; a goal of 0.005 stopped short_text at batch 16 on 0.0048, 0.961 ROUGE-L).
AUTO_GOAL_LOSS = 0.0025
# A run of this many epochs or more waits a whole epoch without improvement before it stops: mid-run, at a high rate,
# the validation loss bounces (bench: chat, 0.042 -> 0.076 -> 0.058 stopped a run at 0.939 ROUGE-L that reached 0.953
# waiting an epoch); a shorter run keeps AUTO_PATIENCE evaluations.
LONG_PATIENCE_EPOCHS = 2.0
# Evaluated once an epoch, an epoch without improvement is already a clear signal (bench: tiny, best at epoch 1 of 3).
EPOCH_PATIENCE = 1
FROZEN_WARMUP, FULL_WARMUP = 0.05, 0.10
RANK_STEPS = ((200_000, 64), (20_000, 32), (0, 16))  # (from this many training examples, rank)
LR_SIZE_FACTORS = ((500e6, 1.0), (2e9, 0.7), (8e9, 0.5), (math.inf, 0.3))  # (up to this many parameters, factor)
# A short run of a label task (the answers are a few class labels: one to three trained tokens per example, little
# signal per step) with a LoRA-family method gets SHORT_RUN_FACTOR x the method's rate, so that it reaches its best
# within the steps it has (bench, this session: the demo, 54 steps, 0.722 at 1e-3 vs 0.861 at 2e-3; tiny 0.947 vs
# 1.0). Free-text answers keep the rate: at 2e-3 the chat task's loss levelled off at 0.036 against 0.022 at 1e-3
# (0.953 vs 0.972 ROUGE-L). Only where measured: the other methods keep their rate.
SHORT_RUN_STEPS, SHORT_RUN_FACTOR = 200, 2.0
SHORT_RUN_METHODS = frozenset({"lora", "qlora", "dora"})


@dataclass
class DataProfile:
    """The statistics the choice is made from (counts in tokens of the model's tokenizer and chat template)."""

    train_examples: int
    validation_examples: int
    lengths: Distribution  # whole example (prompt + answer), untruncated, train and validation
    answer_lengths: Distribution  # trained (answer) tokens per example
    prompt_lengths: Distribution = field(default_factory=Distribution)  # tokens before the first trained one
    labels: list[str] | None = None  # the label set when the answers are class labels

    @classmethod
    def from_lengths(cls, train: Iterable[tuple[int, int, int]], validation: Iterable[tuple[int, int, int]] = (),
                     labels: list[str] | None = None) -> DataProfile:
        """From ``(length, answer tokens, prompt tokens)`` per example of each split."""
        lengths, answers, prompts = Distribution(), Distribution(), Distribution()
        counts = []
        for split in (train, validation):
            count = 0
            for length, answer, prompt in split:
                lengths.add(length), answers.add(answer), prompts.add(prompt)
                count += 1
            counts.append(count)
        return cls(counts[0], counts[1], lengths, answers, prompts, labels)


@dataclass
class ModelFacts:
    """What the choice needs to know of the model."""

    parameters: int  # total parameters of the base
    context: int  # the most tokens it takes (max_position_embeddings)
    name: str = "the model"


@dataclass
class Choice:
    value: Any
    reason: str
    auto: bool = True  # False: the config gave it (it is only reported)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason, "auto": self.auto}


def choose_hyperparameters(profile: DataProfile, model: ModelFacts, method: Any, config: FineTuningConfig
                           ) -> dict[str, Choice]:
    """A value and its reason for each of ``AUTO_FIELDS`` (plus the evaluation cadence early stopping needs).

    ``method`` is the ``TrainingMethod`` (its ``name``, ``default_learning_rate``, ``freezes_base``, ``options``).
    Fields the config sets are reported as given (``auto=False``); nothing else is chosen for them.
    """
    choices: dict[str, Choice] = {}
    given = lambda name: getattr(config, name) != AUTO  # noqa: E731

    choices["max_length"] = (Choice(config.max_length, "given", False) if given("max_length")
                             else _max_length(profile, model))
    max_length = choices["max_length"].value
    mean = max(1.0, min(profile.lengths.total / max(profile.lengths.n, 1), max_length))
    examples = profile.train_examples
    if given("epochs"):
        choices["epochs"] = Choice(config.epochs, "given", False)
    else:
        choices["epochs"] = _epochs(examples)
    epochs = float(choices["epochs"].value)
    choices["batch_size"] = (Choice(config.batch_size, "given", False) if given("batch_size")
                             else _batch_size(examples, epochs, mean, config))
    batch = int(choices["batch_size"].value)
    steps_per_epoch = max(1, math.ceil(math.ceil(examples / batch) / config.gradient_accumulation_steps))
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    choices["learning_rate"] = (Choice(config.learning_rate, "given", False) if given("learning_rate")
                                else _learning_rate(model, method, total_steps, bool(profile.labels)))
    choices["warmup_steps"] = (Choice(config.warmup_steps, "given", False) if given("warmup_steps")
                               else _warmup(total_steps, method))
    if "lora_r" not in getattr(method, "options", ()):
        choices["lora_r"] = Choice(config.lora_r if given("lora_r") else 16, f"not read by method {method.name}",
                                   not given("lora_r"))
    else:
        choices["lora_r"] = Choice(config.lora_r, "given", False) if given("lora_r") else _rank(examples)
    choices.update(_early_stopping(profile, config, steps_per_epoch, total_steps))
    return choices


def _max_length(profile: DataProfile, model: ModelFacts) -> Choice:
    lengths = profile.lengths
    if not lengths.n:
        return Choice(min(512, model.context), "no examples to measure; the old default")
    longest, p99 = max(lengths.counts), lengths.percentile(99)
    limit, reason = _round_up(longest), f"the longest example is {longest} tokens"
    tail_cut = _round_up(int(EXTREME_TAIL_RATIO * p99))
    beyond = _count_above(lengths, tail_cut)
    if longest > EXTREME_TAIL_RATIO * p99 and beyond < EXTREME_TAIL_SHARE * lengths.n and tail_cut < limit:
        limit = tail_cut
        reason = (f"99% of the examples are at most {p99} tokens but the longest is {longest}: an extreme tail, cut at "
                  f"{EXTREME_TAIL_RATIO:g}x the 99th percentile ({_examples(beyond)} truncated)")
    if limit > model.context:
        limit = model.context
        cut = _count_above(lengths, limit)
        lost = _count_above(profile.prompt_lengths, limit - 1)
        reason = (f"the longest example is {longest} tokens, over {model.name}'s context of {model.context}: "
                  f"{_examples(cut)} truncated to the context"
                  + (f", {_examples(lost)} of them dropped (the prompt alone fills it, no answer token is left)" if lost else ""))
    return Choice(max(16, limit), reason)


def _epochs(examples: int) -> Choice:
    if examples > MAX_EXAMPLES_SEEN:
        epochs = max(0.001, round(MAX_EXAMPLES_SEEN / examples, 3))
        return Choice(epochs, f"{examples:,} training examples: a pass over {MAX_EXAMPLES_SEEN:,} of them is plenty "
                              "for fine-tuning (early stopping may end sooner)")
    wanted = TARGET_EXAMPLES_SEEN / max(examples, 1)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(wanted * 2) / 2))
    if epochs == MAX_EPOCHS and wanted > MAX_EPOCHS:
        why = f"only {examples} training examples: {epochs:g} passes (more would learn them by heart)"
    elif epochs == MIN_EPOCHS:
        why = f"{examples:,} training examples: one pass sees them all"
    else:
        why = f"{examples} training examples: {epochs:g} passes to see about {TARGET_EXAMPLES_SEEN} examples"
    return Choice(float(epochs), why)


def _batch_size(examples: int, epochs: float, mean_length: float, config: FineTuningConfig) -> Choice:
    by_tokens = _power_of_two(TOKENS_PER_STEP / mean_length)
    batch = min(MAX_BATCH, max(MIN_BATCH, by_tokens))
    reason = f"about {TOKENS_PER_STEP:,} tokens per step at a mean of {mean_length:.0f} tokens per example"
    while batch > 1 and math.ceil(examples / batch) * epochs < MIN_STEPS:
        batch //= 2
    while batch > MIN_BATCH and math.ceil(examples / batch) < MIN_STEPS_PER_EPOCH:
        batch //= 2
    if batch < min(MAX_BATCH, max(MIN_BATCH, by_tokens)):
        reason += (f", halved to {batch} to give at least {MIN_STEPS} optimizer steps over {examples} examples"
                   f" and {MIN_STEPS_PER_EPOCH} an epoch")
    if config.micro_batch_tokens:
        passes = max(1, math.ceil(batch * mean_length / config.micro_batch_tokens))
        reason += f"; {passes} pass{'es' if passes > 1 else ''} per step of at most {config.micro_batch_tokens:,} tokens"
    return Choice(int(max(1, batch)), reason)


def _learning_rate(model: ModelFacts, method: Any, total_steps: int, label_task: bool) -> Choice:
    base = float(method.default_learning_rate)
    factor = next(f for limit, f in LR_SIZE_FACTORS if model.parameters <= limit)
    size = f"{model.parameters / 1e6:,.0f}M parameters" if model.parameters >= 1e6 else f"{model.parameters:,} parameters"
    short = label_task and method.name in SHORT_RUN_METHODS and total_steps < SHORT_RUN_STEPS
    if factor == 1.0 and not short:
        return Choice(base, f"the {method.name} rate, meant for models up to 500M parameters (this one: {size})")
    parts = [f"the {method.name} rate {base:g}"]
    if factor != 1.0:
        parts.append(f"x {factor:g} for a model of {size}")
    if short:
        parts.append(f"x {SHORT_RUN_FACTOR:g} for a short run of a label task ({total_steps} planned steps, under "
                     f"{SHORT_RUN_STEPS}, and a few trained tokens per example: it has to reach its best within them)")
    return Choice(float(f"{base * factor * (SHORT_RUN_FACTOR if short else 1.0):.3g}"), " ".join(parts))


def _warmup(total_steps: int, method: Any) -> Choice:
    share = FROZEN_WARMUP if getattr(method, "freezes_base", False) else FULL_WARMUP
    steps = int(round(total_steps * share))
    what = "the base stays frozen" if share == FROZEN_WARMUP else "every weight trains"
    return Choice(steps, f"{share:.0%} of the {total_steps} planned steps ({what})")


def _rank(examples: int) -> Choice:
    rank = next(r for limit, r in RANK_STEPS if examples >= limit)
    if rank == 16:
        return Choice(16, f"{examples:,} training examples: rank 16 holds more than they can teach (32 from 20,000)")
    return Choice(rank, f"{examples:,} training examples: more data can use more rank")


def _early_stopping(profile: DataProfile, config: FineTuningConfig, steps_per_epoch: int, total_steps: int
                    ) -> dict[str, Choice]:
    if config.early_stopping != AUTO:
        return {"early_stopping": Choice(config.early_stopping, "given", False)}
    if not profile.validation_examples or config.evaluation_strategy == "no":
        why = "no validation split to stop on" if not profile.validation_examples else "evaluation_strategy is 'no'"
        return {"early_stopping": Choice(False, why)}
    choices = {"early_stopping": Choice(True, f"a validation split of {profile.validation_examples} examples: stop when "
                                              "validation stops improving, keep the best checkpoint")}
    chosen = config.model_fields_set
    if "evaluation_strategy" not in chosen and "eval_steps" not in chosen and profile.validation_examples < NOISY_VALIDATION:
        choices["evaluation_strategy"] = Choice(
            "epoch", f"a validation split of {profile.validation_examples} examples is noisy: evaluated once an epoch")
    elif "evaluation_strategy" not in chosen and "eval_steps" not in chosen:
        span = min(steps_per_epoch, total_steps)  # a run shorter than an epoch is evaluated in quarters of itself
        every = max(1, round(span / EVALUATIONS_PER_EPOCH))
        choices["evaluation_strategy"] = Choice("steps", "early stopping needs evaluations within an epoch")
        choices["eval_steps"] = Choice(every, f"every quarter epoch ({steps_per_epoch} steps per epoch)" if span == steps_per_epoch
                                       else f"four evaluations over the run's {total_steps} steps")
    per_epoch = (choices["evaluation_strategy"].value if "evaluation_strategy" in choices
                 else config.evaluation_strategy) == "epoch"
    if "early_stopping_patience" not in chosen:
        choices["early_stopping_patience"] = _patience(per_epoch, total_steps, steps_per_epoch)
    if "early_stopping_min_delta" not in chosen and "early_stopping_relative_delta" not in chosen:
        choices["early_stopping_min_delta"] = Choice(AUTO_MIN_DELTA, f"a validation loss gain under {AUTO_MIN_DELTA} "
                                                                      "counts as no improvement (the loss is as low as it matters)")
        choices["early_stopping_relative_delta"] = Choice(
            AUTO_RELATIVE_DELTA, f"a gain under {AUTO_RELATIVE_DELTA:.0%} of the best loss counts as no improvement (a plateau)")
    if "early_stopping_goal" not in chosen and config.best_metric == "validation_loss":
        choices["early_stopping_goal"] = Choice(AUTO_GOAL_LOSS, f"a validation loss under {AUTO_GOAL_LOSS} means the answers "
                                                                "are all but certain: stop there")
    return choices


def _patience(per_epoch: bool, total_steps: int, steps_per_epoch: int) -> Choice:
    if per_epoch:
        return Choice(EPOCH_PATIENCE, "evaluated once an epoch: stop after an epoch without improvement")
    if total_steps >= LONG_PATIENCE_EPOCHS * steps_per_epoch:
        return Choice(EVALUATIONS_PER_EPOCH, f"a run of {total_steps / steps_per_epoch:.2g} epochs stops after a whole "
                      f"epoch ({EVALUATIONS_PER_EPOCH} evaluations) without improvement: its loss bounces while the rate is high")
    return Choice(AUTO_PATIENCE, f"stop after {AUTO_PATIENCE} evaluations without improvement")


def resolve(config: FineTuningConfig, choices: dict[str, Choice]) -> FineTuningConfig:
    """``config`` with the chosen values in ``resolved`` (the ``auto`` fields stay ``auto``; ``concrete()`` applies them)."""
    resolved = dict(config.resolved)
    for name, choice in choices.items():
        if choice.auto and name not in resolved:
            resolved[name] = ResolvedValue(value=choice.value, reason=choice.reason)
    return config.model_copy(update={"resolved": resolved})


def describe_summary(summary: dict[str, dict[str, Any]]) -> str:
    """The choices (``Choice.to_dict()`` by field) as lines: ``max_length 96 (auto): the longest example is 71 tokens``."""
    lines = ["hyperparameters (auto: chosen from the data; given: set in the config or flags):"]
    for name, item in summary.items():
        lines.append(f"  {name} {item['value']}" + (f" (auto): {item['reason']}" if item.get("auto") else " (given)"))
    return "\n".join(lines)


def describe(choices: dict[str, Choice]) -> str:
    """``describe_summary`` of ``Choice`` objects."""
    return describe_summary({name: choice.to_dict() for name, choice in choices.items()})


def recorded_choices(config: FineTuningConfig) -> dict[str, Choice]:
    """What a config already holds: its ``resolved`` values (chosen by an earlier attempt) and its given values."""
    from tuneforge.config import AUTO_FIELDS

    choices = {name: Choice(getattr(config, name), "given", False) for name in AUTO_FIELDS
               if getattr(config, name) != AUTO}
    choices.update({name: Choice(item.value, item.reason) for name, item in config.resolved.items()})
    return choices


def read_model_facts(model_dir: Path) -> ModelFacts:
    """Parameters (from the safetensors headers, nothing loaded) and context (config.json) of a local model."""
    settings: dict[str, Any] = {}
    try:
        settings = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    settings = settings.get("text_config", settings) if isinstance(settings.get("text_config"), dict) else settings
    context = next((int(settings[k]) for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
                    if isinstance(settings.get(k), int)), 131072)
    parameters = sum(_safetensors_parameters(path) for path in sorted(model_dir.glob("*.safetensors")))
    if not parameters:  # no safetensors: a rough count from the shape (12·layers·hidden² + vocab·hidden)
        hidden, layers, vocab = (int(settings.get(k) or 0) for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
        parameters = 12 * layers * hidden * hidden + vocab * hidden
    return ModelFacts(parameters=parameters, context=min(context, 131072), name=model_dir.name)


def _safetensors_parameters(path: Path) -> int:
    try:
        with path.open("rb") as file:
            size = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(size))
    except (OSError, ValueError):
        return 0
    return sum(math.prod(item["shape"]) for name, item in header.items() if name != "__metadata__")


def _count_above(distribution: Distribution, limit: int) -> int:
    return sum(count for value, count in distribution.counts.items() if value > limit)


def _round_up(value: int) -> int:
    return max(LENGTH_ROUNDING, math.ceil(value / LENGTH_ROUNDING) * LENGTH_ROUNDING)


def _power_of_two(value: float) -> int:
    """The power of two nearest to ``value`` (geometrically), at least 1."""
    return 2 ** max(0, round(math.log2(max(value, 1.0))))


def _examples(count: int) -> str:
    return f"{count:,} example{'s' if count != 1 else ''}"


def profile_of(train_set: Any, validation_set: Any, labels: list[str] | None = None) -> DataProfile:
    """The ``DataProfile`` of two ``EncodedDataset`` s (lengths before truncation)."""
    def rows(dataset: Any) -> Iterable[tuple[int, int, int]]:
        for item in dataset.items:
            prompt = next((i for i, label in enumerate(item.labels) if label != IGNORE_INDEX), len(item.labels))
            yield _longest(item) + item.truncated_tokens, item.trained_tokens, prompt

    return DataProfile.from_lengths(rows(train_set), rows(validation_set), labels)


@dataclass
class AutoRun:
    """What ``encode_and_choose`` gives the pipeline."""

    config: FineTuningConfig  # the run's config with ``resolved`` filled in (still ``auto`` where it was)
    choices: dict[str, Choice]
    train_set: Any  # EncodedDataset at the chosen max_length
    validation_set: Any

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: choice.to_dict() for name, choice in self.choices.items()}


def encode_and_choose(config: FineTuningConfig, tokenizer: Any, data: Any, model_dir: Path, method: Any,
                      labels: list[str] | None) -> AutoRun:
    """Tokenize the train and validation splits and choose the fields still ``auto`` from what they hold.

    With ``max_length: auto`` the splits are first encoded at the model's context, measured, and encoded
    again only when the chosen length cuts an example. A config whose ``resolved`` already holds every
    ``auto`` field (a resumed run) is not chosen again: its recorded values and reasons are used.
    """
    from tuneforge.train.objectives import encode_for_objective

    pending = config.auto_fields()
    facts = read_model_facts(model_dir) if pending else None
    length = facts.context if "max_length" in pending and facts else config.concrete().max_length

    def encode(max_length: int) -> tuple[Any, Any]:
        # As the objective trains on them: sequences, or chosen/rejected pairs for a pairwise objective (dpo, orpo).
        settings = config.concrete().model_copy(update={"max_length": max_length})
        return (encode_for_objective(tokenizer, data.examples, settings),
                encode_for_objective(tokenizer, data.validation, settings))

    train_set, validation_set = encode(length)
    if not pending or facts is None:
        return AutoRun(config, recorded_choices(config), train_set, validation_set)
    choices = choose_hyperparameters(profile_of(train_set, validation_set, labels), facts, method, config)
    config = resolve(config, choices)
    chosen = config.concrete().max_length
    if chosen < length and any(_longest(item) > chosen for item in train_set.items + validation_set.items):
        train_set, validation_set = encode(chosen)
    return AutoRun(config, choices, train_set, validation_set)


def _longest(item: Any) -> int:
    """Tokens of an encoded example; of a preference pair, its longer sequence (chosen or rejected)."""
    return max(len(item.input_ids), len(getattr(item, "rejected_ids", ())))
