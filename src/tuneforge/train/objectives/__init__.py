"""Training objectives: what the loop minimises, one registry entry per objective.

An objective is a callable ``objective(model, batch, *, through_wrapper) -> LossSums`` (a class is
instantiated once with no arguments): the *summed* loss over the batch's labelled tokens, their
count and the correct predictions, so passes and accumulation steps combine exactly. The loop
divides by the step's token count. ``through_wrapper`` is the method's ``forward_through_wrapper``:
when true the objective must run the wrapped model's ``forward``, not the bare decoder.

Built in: ``sft`` (next-token cross-entropy on the answers, fused head + loss). A user objective
is one function registered in ``OBJECTIVES`` or named as ``objective: my_module:my_loss``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Protocol

from tuneforge.core.registries import OBJECTIVES

if TYPE_CHECKING:  # not imported at run time: config validation looks objectives up without torch
    from tuneforge.model.loss import LossSums


class Objective(Protocol):
    def __call__(self, model: Any, batch: dict[str, Any], *, through_wrapper: bool) -> LossSums: ...


def check_objective(name: str, entry: Any) -> Objective:
    """Registry check: a callable taking (model, batch, *, through_wrapper); a class is instantiated."""
    if isinstance(entry, type):
        entry = entry()
    if not callable(entry):
        raise TypeError(f"expected a loss function objective(model, batch, *, through_wrapper) -> LossSums, "
                        f"got {type(entry).__name__}")
    try:
        inspect.signature(entry).bind(None, None, through_wrapper=False)
    except TypeError as error:
        raise TypeError(f"must accept (model, batch, *, through_wrapper): {error}") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return entry


OBJECTIVES.set_check(check_objective)

from tuneforge.train.objectives import sft  # noqa: E402  (register the built-ins)


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (or ``module:attribute`` plug-in); unknown -> ``UnknownNameError``."""
    return OBJECTIVES.get(name)


def bind(objective: Objective, through_wrapper: bool) -> Callable[[Any, dict[str, Any]], LossSums]:
    """``loss_sums(model, batch)`` of ``objective`` for a method (what evaluation helpers take)."""
    return lambda model, batch: objective(model, batch, through_wrapper=through_wrapper)


def run_loss_sums(config: Any) -> Callable[[Any, dict[str, Any]], LossSums]:
    """``loss_sums(model, batch)`` of a run: its ``config.objective``, through the wrapper when its method needs it."""
    from tuneforge.model.methods import get_method

    return bind(get_objective(config.objective), get_method(config.method).forward_through_wrapper)


__all__ = ["OBJECTIVES", "Objective", "bind", "check_objective", "get_objective", "run_loss_sums", "sft"]
