"""One flag per ``FineTuningConfig`` field (``finetune``'s flags), and the flags given read back as config overrides.

Each field becomes ``--field-name`` in its group (data, model and method, training, evaluation and
saving, health monitor), documented from the schema: its description, its choices or the registered
names, its default. A field that defaults to ``auto`` also takes ``auto``; a list takes ``A,B``.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any, get_args, get_origin


def config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``FineTuningConfig`` field, named in kebab case, documented from the schema."""
    from tuneforge.config import AUTO_FIELDS, DEFAULT_LEARNING_RATE, FineTuningConfig, method_option_owners
    from tuneforge.core.registries import METHODS, OBJECTIVES, SINKS

    # Fields whose values are registry names (or module:attribute plug-ins): their help lists the names.
    REGISTRY_FIELDS = {"method": METHODS, "objective": OBJECTIVES, "report_to": SINKS}

    groups = {
        "data": parser.add_argument_group("data"),
        "model": parser.add_argument_group("model and method"),
        "train": parser.add_argument_group("training"),
        "eval": parser.add_argument_group("evaluation and saving"),
        "watch": parser.add_argument_group("health monitor, early stopping, best checkpoint, resume"),
    }
    sections = {
        "data": {"data", "validation_data", "test_data", "data_format", "text_template", "validation_split", "test_split", "train_on_prompt", "max_length", "skip_invalid"},
        "model": {"model", "method", "trust_remote_code", "adapter_name", "init_from", *method_option_owners()},
        "watch": {"best_metric", "final_weights", "early_stopping", "early_stopping_patience", "early_stopping_min_delta", "early_stopping_relative_delta", "early_stopping_goal",
                  "on_issue", "rollback_lr_factor", "max_rollbacks", "report_to", "resume"},
        "eval": {"evaluation_strategy", "eval_steps", "saving_strategy", "save_steps", "save_total_limit", "logging_steps",
                 "evaluation_metrics", "json_schema", "evaluate_base", "baselines", "baseline_shots", "baseline_retriever", "forgetting_check", "cross_validation", "judge", "judge_rubric", "max_eval_examples", "max_new_tokens", "cost_per_hour", "output", "name"},
    }
    for name, field in FineTuningConfig.model_fields.items():
        section = next((key for key, names in sections.items() if name in names), "train")
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        choices = literal_choices(annotation)
        takes_auto = name in AUTO_FIELDS  # a number (or flag) that defaults to auto: chosen from the data
        if takes_auto:
            choices = []
        default = field.default if field.default_factory is None else field.default_factory()
        if name == "learning_rate":
            default = ", ".join(f"{rate} ({method})" for method, rate in DEFAULT_LEARNING_RATE.items())
        text = field.description or ""
        if choices:
            text = (text + "; " if text else "") + "one of: " + ", ".join(choices)
        elif name in REGISTRY_FIELDS:
            registered = REGISTRY_FIELDS[name].names()
            text = (text + "; " if text else "") + "registered: " + (", ".join(registered) or "none")
        text = (f"{text} (default: {default})" if text else f"default: {default}").replace("%", "%%")
        if annotation is bool or (takes_auto and bool in plain_types(annotation)):
            groups[section].add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif is_list(annotation):
            groups[section].add_argument(flag, dest=name, default=None, metavar="A,B", help=text + " (comma-separated)")
        else:
            metavar = "NAME" if name in REGISTRY_FIELDS else metavar_of(name, annotation, choices)
            metavar += "|auto" if takes_auto else ""
            groups[section].add_argument(flag, dest=name, default=None, metavar=metavar, help=text)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (``A,B`` lists split), for ``load_config``'s overrides."""
    from tuneforge.config import FineTuningConfig

    overrides: dict[str, Any] = {}
    for name, field in FineTuningConfig.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if is_list(field.annotation) and isinstance(value, str) and value != "all-linear":
            value = [item.strip() for item in value.split(",") if item.strip()]
        overrides[name] = value
    return overrides


def plain_types(annotation: Any) -> set[Any]:
    """The types in ``annotation`` with ``Annotated`` limits taken off: ``Annotated[int, ...] | Literal['auto']`` -> {int, Literal}."""
    return {get_args(arg)[0] if get_origin(arg) is Annotated else arg for arg in (get_args(annotation) or (annotation,))}


def metavar_of(name: str, annotation: Any, choices: list[str]) -> str:
    if name == "on_issue":
        return "KIND=ACTION,..."
    if choices:
        return "{" + ",".join(choices) + "}"
    if name in ("data", "validation_data", "test_data", "output"):
        return "PATH"
    kinds = {int, float} & ({annotation} | plain_types(annotation))
    return "N" if kinds == {int} else "X" if kinds else "TEXT"


def literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is None:
        return []
    choices: list[str] = []
    for arg in get_args(annotation):
        if get_origin(arg) is not None and str(get_origin(arg)).endswith("Literal"):
            choices += [str(a) for a in get_args(arg)]
        elif isinstance(arg, str):
            choices.append(arg)
    return choices


def is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(arg) is list for arg in get_args(annotation))
