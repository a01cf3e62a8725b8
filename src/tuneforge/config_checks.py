"""The checks behind ``FineTuningConfig``'s validators: registered names, per-method and per-objective options,
issue policies, templates, sizes, and pydantic's errors turned into one readable line per problem.

Each check raises ``ValueError`` (pydantic reports it under the field's name) or returns the
problems it found; ``FineTuningConfig`` (config.py) calls them and ``make_config`` gathers every
problem into one ``ConfigError``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import ValidationError

from tuneforge.core.registries import METHODS, METRICS, OBJECTIVES, SINKS
from tuneforge.core.registry import Registry

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig

# What the training monitor can detect, and what it may do about each (see train/monitor.py).
ISSUE_KINDS = (
    "nan_loss", "nan_gradient", "loss_spike", "divergence", "exploding_gradients", "overfitting", "plateau",
    "lr_too_high", "lr_too_low", "throughput_drop", "memory_creep",
)
ISSUE_ACTIONS = ("warn", "stop", "rollback", "ignore")
# A non-finite loss or gradient stops the run; everything else is reported and training goes on.
# Overfitting also stops when early stopping is on (unless on_issue says otherwise).
DEFAULT_ISSUE_ACTIONS: dict[str, str] = {kind: "warn" for kind in ISSUE_KINDS} | {"nan_loss": "stop", "nan_gradient": "stop"}
FSDP_METHODS = ("full", "lora")  # the methods distributed: fsdp trains (train/fsdp.py; tested in tests/test_distributed.py)


# --- registered names: methods, objectives, metrics, sinks, row formats ---------------------------
def registered(registry: Registry[Any], field: str, name: str) -> str:
    """``name`` if ``registry`` resolves it (plug-ins are imported here), else a ValueError listing the valid names."""
    problem = registry.problem(name, field)
    if problem:
        raise ValueError(problem.removeprefix(f"{field}: "))
    return name


def registered_or_none(registry: Registry[Any], name: Any) -> Any:
    """The entry ``name`` of ``registry`` (a method, an objective), or None when it does not resolve (the field
    validator reports that)."""
    from tuneforge.core.errors import TuneforgeError

    if not isinstance(name, str):
        return None
    try:
        return registry.get(name)
    except TuneforgeError:
        return None


def registered_problems(registry: Registry[Any], field: str, names: Iterable[str]) -> None:
    """A ValueError naming every one of ``names`` that ``registry`` does not resolve."""
    problems = [problem for item in names if (problem := registry.problem(item, field))]
    if problems:
        raise ValueError("; ".join(p.removeprefix(f"{field}: ") for p in problems))


def check_data_format(value: str) -> str:
    """``auto``, a registered row format, or a ``module:attribute`` plug-in; unknown names list the valid ones."""
    from tuneforge.core.registries import ROW_FORMATS

    problem = ROW_FORMATS.problem(value, "data_format") if value != "auto" else None
    if problem:
        raise ValueError(problem.removeprefix("data_format: "))
    return value


def check_report_to(value: list[str]) -> list[str]:
    """The registered sinks, each once, ``none`` dropped."""
    sinks = [item for item in dict.fromkeys(value) if item != "none"]
    registered_problems(SINKS, "report_to", sinks)
    return sinks


def check_metrics(value: list[str]) -> list[str]:
    """The registered evaluation metrics, each once."""
    registered_problems(METRICS, "evaluation_metrics", value)
    return list(dict.fromkeys(value))


def comma_list(value: Any) -> Any:
    """``"a,b"`` (the CLI form) as ``["a", "b"]``; anything else as it is."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    return value


# --- per-method and per-objective options ---------------------------------------------------------
def option_owners(registry: Registry[Any]) -> dict[str, list[str]]:
    """Config field -> the registered entries of ``registry`` that read it (their ``options``), in registry order."""
    owners: dict[str, list[str]] = {}
    for name in registry.names():
        for option in getattr(registered_or_none(registry, name), "options", ()):
            owners.setdefault(option, []).append(name)
    return owners


def method_option_owners() -> dict[str, list[str]]:
    """Config field -> the registered methods that read it (their spec's ``options``), in registry order."""
    return option_owners(METHODS)


def objective_option_owners() -> dict[str, list[str]]:
    """Config field -> the registered objectives that read it (their ``options``)."""
    return option_owners(OBJECTIVES)


def packing_default(values: Any) -> Any:
    """``packing`` left unset is off for a method whose wrapper cannot take packed batches, and for an
    objective that trains on padded batches (the pairwise ones: chosen and rejected rows side by side)."""
    if isinstance(values, dict) and "packing" not in values:
        method = registered_or_none(METHODS, values.get("method", "lora"))
        objective = registered_or_none(OBJECTIVES, values.get("objective", "sft"))
        if (method is not None and not method.supports_packing) or not getattr(objective, "supports_packing", True):
            values = {**values, "packing": False}
    return values


def _foreign_options(config: FineTuningConfig, kind: str, own: Iterable[str], owners: dict[str, list[str]]) -> list[str]:
    """Options of another ``kind`` (method, objective) than the config's given a non-default value."""
    problems = []
    for field, names in owners.items():
        if field in own or field not in config.model_fields_set:
            continue
        if getattr(config, field) != type(config).model_fields[field].get_default(call_default_factory=True):
            flag = "--" + field.replace("_", "-")
            problems.append(f"{field} ({flag}) is an option of {kind} {', '.join(names)}, not of {kind} "
                            f"{getattr(config, kind)!r}; remove it, or choose --{kind} {names[0]}")
    return problems


def method_option_problems(config: FineTuningConfig) -> list[str]:
    """Options of another method given a non-default value, and packing the method cannot take."""
    method = registered_or_none(METHODS, config.method)
    if method is None:
        return []
    problems = _foreign_options(config, "method", method.options, method_option_owners())
    if config.adapter_name is not None and method.output_dir != "adapter":
        problems.append(f"adapter_name: method {config.method!r} trains the whole model, not an adapter; "
                        "use --name for the run directory")
    if config.packing and not method.supports_packing:
        problems.append(f"packing: method {config.method!r} cannot take packed batches (its wrapper adds virtual tokens "
                        "to every row); leave packing unset or set it to false")
    return problems


def objective_option_problems(config: FineTuningConfig) -> list[str]:
    """Options of another objective given a non-default value; what the objective itself refuses."""
    objective = registered_or_none(OBJECTIVES, config.objective)
    if objective is None:
        return []
    problems = _foreign_options(config, "objective", getattr(objective, "options", ()), objective_option_owners())
    if config.packing and not getattr(objective, "supports_packing", True):
        problems.append(f"packing: objective {config.objective!r} trains on padded batches (chosen and rejected answers "
                        "side by side); leave packing unset or set it to false")
    check = getattr(objective, "config_problems", None)
    if check is not None:
        problems += check(config, registered_or_none(METHODS, config.method))
    return problems


def cross_field_problems(config: FineTuningConfig) -> list[str]:
    """What no single field shows: options of the wrong method or objective, fsdp for a method it does not train,
    early stopping without evaluations, splits that leave too little to train on, an unusable text template."""
    problems: list[str] = method_option_problems(config) + objective_option_problems(config)
    if config.distributed == "fsdp" and config.method not in FSDP_METHODS:
        problems.append(f"distributed: fsdp trains methods {', '.join(FSDP_METHODS)}, not {config.method!r}; "
                        "use --distributed ddp for it")
    if config.early_stopping is True and config.evaluation_strategy == "no":
        problems.append("early_stopping needs evaluations: set evaluation_strategy to 'steps' or 'epoch'")
    if config.validation_split + config.test_split >= 0.9:
        problems.append("validation_split + test_split must leave at least 10% of the rows for training")
    if config.text_template is not None:
        problem = template_problem(config.text_template)
        if problem:
            problems.append(f"text_template: {problem}")
    return problems


# --- single values -------------------------------------------------------------------------------
def template_problem(template: str) -> str | None:
    """What is wrong with a ``--text-template`` (None if it is usable)."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        return f"not a valid template ({error}); write placeholders as {{field}} and literal braces as {{{{ }}}}"
    if not fields:
        return "needs at least one {field} placeholder naming a column"
    if any(not name or not name.isidentifier() for name in fields):
        return "every placeholder must name a column, e.g. {question}"
    return None


def check_memory_limit(value: str | None) -> str | None:
    """``None`` or a memory size like 12GB."""
    if value is not None:
        from tuneforge.core.memory import parse_memory_size

        try:
            parse_memory_size(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a memory size; write it like 12GB, 800MB or 1.5TB") from None
    return value


def parse_on_issue(value: Any) -> Any:
    """Accept ``"kind=action,kind=action"`` (the CLI form) as well as a mapping."""
    if isinstance(value, str):
        pairs = [item.strip() for item in value.split(",") if item.strip()]
        if any("=" not in pair for pair in pairs):
            raise ValueError("write KIND=ACTION pairs separated by commas, e.g. 'loss_spike=rollback,overfitting=stop'")
        return {k.strip(): v.strip() for k, v in (pair.split("=", 1) for pair in pairs)}
    return value


def check_on_issue(value: dict[str, str]) -> dict[str, str]:
    """Every kind one the monitor detects, every action one it can take."""
    problems = [f"unknown issue kind {kind!r}; choose from {', '.join(ISSUE_KINDS)}" for kind in value if kind not in ISSUE_KINDS]
    problems += [f"unknown action {action!r} for {kind}; choose from {', '.join(ISSUE_ACTIONS)}"
                 for kind, action in value.items() if action not in ISSUE_ACTIONS]
    if problems:
        raise ValueError("; ".join(problems))
    return value


# --- pydantic's errors as readable problems ------------------------------------------------------
_UNION_BRANCH = re.compile(r"^(constrained-)?(int|float|bool|str|none)$|^literal\[")


def problems_of(error: ValidationError) -> list[str]:
    """One ``field: what is wrong (got value)`` line per problem pydantic found."""
    problems = []
    items = error.errors()
    for item in items:
        loc = [str(part) for part in item["loc"]]
        if loc and loc[-1] == "literal['auto']" and len(items) > 1:
            continue  # a number-or-auto field: the number's problem is the one to show
        field = ".".join(part for part in loc if not _UNION_BRANCH.match(part)) or "config"
        if item["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field; `tuneforge finetune --help` lists the valid ones")
            continue
        message = item["msg"].replace("Input should be", "must be").replace("Value error, ", "")
        problems.append(f"{field}: {message} (got {item.get('input')!r})")
    return problems
