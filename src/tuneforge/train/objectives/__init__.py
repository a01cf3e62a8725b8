"""Training objectives: what the loop minimises, one registry entry per objective.

The protocol (also for a user's own loss, ``--objective my_module:my_loss``; worked example:
``examples/focal_loss.py``). An objective is a callable

    objective(model, batch, *, through_wrapper) -> LossSums | (loss, metrics)

(a class is instantiated once with no arguments). It receives the model being trained and one
collated batch — ``input_ids``, ``attention_mask``, ``labels`` (``-100`` where no loss is taken), or
packed ``position_ids``/``cu_seq_lens_*`` — and runs the model itself, so it computes only the
outputs it needs (``model.loss.label_logits`` gives the logits of the labelled positions;
``through_wrapper`` is the method's ``forward_through_wrapper``: when true, run the wrapped model's
``forward``, not the bare decoder). It returns either

- ``LossSums(loss_sum, tokens, correct, metrics)``: *sums* over the batch's labelled tokens (exact
  over micro-batches and accumulation: the loop divides by the step's labelled tokens), with
  ``metrics`` a dict of sums to log; or
- ``(loss, metrics)``: a scalar loss, the *mean* over the batch's labelled tokens, and a dict of
  means (numbers or scalar tensors) to log; weighted by labelled tokens across passes.

Every metric is written into each ``train.step`` event of ``events.jsonl`` (and, on validation
batches, into ``eval.result`` as ``validation_<name>``). Optional attributes: ``configure(config)``
returns the run's objective (its options read from the config), ``options`` names the config fields
it reads (refused for other objectives), ``config_problems(config, method)`` lists what it cannot
train with, ``supports_packing`` (False: padded batches), ``pairwise`` (True: it trains on
preference pairs, batches of the chosen rows then the rejected rows; each pair counts one unit).

Built in: ``sft`` (next-token cross-entropy on the answers, fused head + loss), ``dpo`` and ``orpo``
(preference pairs).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from tuneforge.core.errors import DatasetError, TrainingError
from tuneforge.core.registries import OBJECTIVES

if TYPE_CHECKING:  # not imported at run time: config validation looks objectives up without torch
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import EncodedDataset
    from tuneforge.model.loss import LossSums


class Objective(Protocol):
    def __call__(self, model: Any, batch: dict[str, Any], *, through_wrapper: bool) -> LossSums | tuple[Any, dict[str, Any]]: ...


def check_objective(name: str, entry: Any) -> Objective:
    """Registry check: a callable taking (model, batch, *, through_wrapper); a class is instantiated."""
    if isinstance(entry, type):
        entry = entry()
    if not callable(entry):
        raise TypeError(f"expected a loss function objective(model, batch, *, through_wrapper) -> LossSums or "
                        f"(loss, metrics), got {type(entry).__name__}")
    try:
        inspect.signature(entry).bind(None, None, through_wrapper=False)
    except TypeError as error:
        raise TypeError(f"must accept (model, batch, *, through_wrapper): {error}") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return entry


OBJECTIVES.set_check(check_objective)

from tuneforge.train.objectives import dpo, orpo, sft  # noqa: E402  (register the built-ins)


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (or ``module:attribute`` plug-in); unknown -> ``UnknownNameError``."""
    return OBJECTIVES.get(name)


def bind(objective: Objective, through_wrapper: bool) -> Callable[[Any, dict[str, Any]], LossSums]:
    """``loss_sums(model, batch)`` of ``objective`` for a method (what evaluation helpers take)."""
    return lambda model, batch: as_loss_sums(objective(model, batch, through_wrapper=through_wrapper), batch, objective)


def run_loss_sums(config: Any) -> Callable[[Any, dict[str, Any]], LossSums]:
    """``loss_sums(model, batch)`` of a run: its ``config.objective`` (configured by the run's options), through
    the wrapper when its method needs it."""
    from tuneforge.model.methods import get_method

    return bind(configured_objective(config), get_method(config.method).forward_through_wrapper)


def configured_objective(config: Any) -> Objective:
    """The run's objective: the registered one, given the config's options when it has ``configure``."""
    objective = get_objective(config.objective)
    configure = getattr(objective, "configure", None)
    return configure(config) if callable(configure) else objective


def is_pairwise(config: Any) -> bool:
    """Whether the run's objective trains on preference pairs (chosen and rejected answers)."""
    return bool(getattr(get_objective(config.objective), "pairwise", False))


def as_loss_sums(result: Any, batch: dict[str, Any], objective: Any = None) -> LossSums:
    """An objective's result as ``LossSums``: as is, or ``(mean loss, metric means)`` scaled by the batch's labelled tokens."""
    import torch

    from tuneforge.model.loss import IGNORE_INDEX, LossSums

    if isinstance(result, LossSums):
        return result
    if isinstance(result, tuple) and len(result) == 2 and torch.is_tensor(result[0]) and result[0].numel() == 1 \
            and isinstance(result[1], dict):
        loss, metrics = result
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        try:
            sums = {str(name): float(value) * tokens for name, value in metrics.items()}
        except (TypeError, ValueError) as error:
            raise TrainingError(f"objective {_name_of(objective)}: every metric must be a number or a one-element "
                                f"tensor ({error})") from None
        return LossSums(loss.reshape(()) * tokens, tokens, 0, sums)
    raise TrainingError(f"objective {_name_of(objective)} returned {type(result).__name__}; an objective returns "
                        "LossSums(loss_sum, tokens, correct, metrics) or (loss, metrics) with loss a scalar tensor and "
                        "metrics a dict (see docs/SEAMS.md, examples/focal_loss.py)")


def _name_of(objective: Any) -> str:
    return getattr(objective, "__name__", None) or getattr(objective, "name", None) or type(objective).__name__


def encode_for_objective(tokenizer: Any, examples: Sequence[TrainingExample], config: Any) -> EncodedDataset:
    """The examples tokenized as the run's objective trains on them: pairs for a pairwise one, else sequences
    (a preference pair then trains SFT on its chosen answer). ``DatasetError`` when a pairwise objective gets
    examples without a rejected answer."""
    from tuneforge.data.tokenize import encode_examples

    pairwise = is_pairwise(config)
    if pairwise:
        plain = [example for example in examples if not example.is_preference]
        if plain:
            raise DatasetError(f"objective {config.objective} trains on preference pairs, and {len(plain)} example(s) "
                               f"have no rejected answer (first: {plain[0].source or '?'}); give rows like "
                               '{"prompt": ..., "chosen": ..., "rejected": ...} or OpenAI\'s DPO format, or use --objective sft')
    return encode_examples(tokenizer, list(examples), config.max_length, config.train_on_prompt, pairs=pairwise)


__all__ = ["OBJECTIVES", "Objective", "as_loss_sums", "bind", "check_objective", "configured_objective",
           "encode_for_objective", "get_objective", "is_pairwise", "run_loss_sums", "sft"]
