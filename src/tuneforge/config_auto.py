"""The values a config field takes when the user gives none: ``auto`` fields chosen from the data, the method's learning rate.

``auto``: the value is chosen from the data before training (train/auto.py, README "Defaults chosen
from the data"), recorded in ``FineTuningConfig.resolved`` with its reason. Where nothing chose one
(a config used outside a run: a test calling ``fit``, ``validate --estimate-time``),
``FineTuningConfig.concrete()`` falls back to ``AUTO_FALLBACKS``, the fixed defaults tuneforge had
before ``auto``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from tuneforge.core.registries import METHODS

AUTO = "auto"
Auto = Literal["auto"]
AUTO_FALLBACKS: dict[str, Any] = {"epochs": 3.0, "batch_size": 8, "learning_rate": None, "max_length": 512,
                                  "warmup_steps": None, "lora_r": 16, "early_stopping": False}
AUTO_FIELDS = tuple(AUTO_FALLBACKS)


class ResolvedValue(BaseModel):
    """A value chosen for a field left ``auto`` (train/auto.py), and why."""

    model_config = ConfigDict(extra="forbid")

    value: Any
    reason: str = ""


def resolved_problems(fields: dict[str, FieldInfo], resolved: dict[str, ResolvedValue]) -> list[str]:
    """What is wrong with ``resolved`` (field -> chosen value): an unknown field, a value the field refuses, or ``auto``."""
    problems = []
    for name, item in resolved.items():
        field = fields.get(name)
        if field is None or name == "resolved":
            problems.append(f"{name!r} is not a config field")
            continue
        try:
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            TypeAdapter(annotation).validate_python(item.value)
        except ValidationError as error:
            problems.append(f"{name}: {error.errors()[0]['msg']} (got {item.value!r})")
        if item.value == AUTO:
            problems.append(f"{name}: a resolved value cannot be 'auto'")
    return problems


class _DefaultLearningRates(Mapping[str, float]):
    """method name -> the learning rate used when the config gives none; each method's spec owns it
    (``TrainingMethod.default_learning_rate``: rates that work for small-task fine-tuning of ~100M-1B models)."""

    def __getitem__(self, method: str) -> float:
        from tuneforge.core.errors import UnknownNameError

        try:
            return float(METHODS.get(method).default_learning_rate)
        except UnknownNameError:
            raise KeyError(method) from None

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS.names())

    def __len__(self) -> int:
        return len(METHODS.names())


DEFAULT_LEARNING_RATE: Mapping[str, float] = _DefaultLearningRates()
