"""The search file: a ``search_strategy``, a ``search_space`` and the fixed ``FineTuningConfig`` fields around them.

```yaml
search_strategy: {type: random, num_trials: 20}     # random | tpe | grid
search_space:
  learning_rate: {type: float, low: 1e-6, high: 1e-3, log: true}
  lora_r:        {type: int, low: 8, high: 64}
  batch_size:    {type: choice, values: [8, 16, 32]}
data: train.jsonl                                    # any other key: a FineTuningConfig field, the same in every trial
```

Everything is checked here, once, before a study or a trial directory exists: every search-space
name must be a config field that may vary between trials, every bound and choice must be a value the
field accepts (the config's own validation, with the other fixed fields), and the strategy's keys
and names must be known. Each problem names the key and the valid choices (a ``ConfigError``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml

from tuneforge.config import FineTuningConfig, make_config
from tuneforge.core.errors import ConfigError

STRATEGIES = ("random", "tpe", "grid")
PRUNERS = ("median", "hyperband", "none")
PARAM_TYPES = ("float", "int", "choice")
DIRECTIONS = ("minimize", "maximize")
# Options each pruner takes in the search file (they are Optuna's own argument names).
PRUNER_OPTIONS = {"median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
                  "hyperband": ("min_resource", "max_resource", "reduction_factor"), "none": ()}
STRATEGY_KEYS = ("type", "num_trials", "pruner", "objective", "direction", "seed", "timeout", "enqueue")
PARAM_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
              "choice": ("type", "values")}
# Fields a trial may not choose: where the run goes, what it trains on (the splits are prepared once, so every
# trial is scored on the same validation examples), how it is driven.
NOT_SEARCHABLE = {"data", "validation_data", "test_data", "validation_split", "test_split", "data_format", "text_template",
                  "skip_invalid", "trust_remote_code", "output", "name", "resume", "cross_validation", "adapter_name",
                  "report_to", "cost_per_hour", "judge", "judge_rubric", "evaluate_base", "baselines", "forgetting_check"}
# The metrics every evaluation during training reports (train/loop.py eval.result): usable for pruning.
VALIDATION_METRICS = {"validation_loss": "minimize", "validation_perplexity": "minimize", "validation_accuracy": "maximize"}
DEFAULT_NUM_TRIALS = 20
MAX_GRID = 10_000  # a grid larger than this is almost surely a mistake (an int range without a step)


@dataclass(frozen=True)
class Param:
    """One dimension of the search space, as the search file wrote it."""

    name: str
    type: str  # float | int | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """This parameter's value in ``trial`` (an ``optuna.Trial``)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.name, list(self.values or ()))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """Every value a grid search tries; a ``ConfigError`` for a continuous range without a ``step``."""
        where = f"search_space.{self.name}"
        if self.type == "choice":
            return list(self.values or ())
        if self.type == "float" and self.step is None:
            raise ConfigError([f"{where}: a grid search needs a finite set of values: give the float range a `step`, "
                               f"or write it as {{type: choice, values: [...]}}"])
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        if count > MAX_GRID:
            raise ConfigError([f"{where}: the grid would have {count} values; give a larger `step` or a choice"])
        values = [self.low + i * step for i in range(count)]
        return [int(round(v)) for v in values] if self.type == "int" else [float(v) for v in values]

    def to_dict(self) -> dict[str, Any]:
        if self.type == "choice":
            return {"type": "choice", "values": list(self.values or ())}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class SearchSpec:
    """A validated search: the fixed base config, the space, and how to search it."""

    base: dict[str, Any]  # FineTuningConfig fields every trial shares (validated, data paths absolute)
    space: dict[str, Param]
    strategy: str = "tpe"
    num_trials: int | None = None  # None: DEFAULT_NUM_TRIALS, or the grid's size
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    objective: str = "validation_loss"
    direction: str = "minimize"
    seed: int | None = None
    timeout: float | None = None  # seconds for this process's part of the search
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to try first (Optuna's enqueue_trial)

    @property
    def trials_wanted(self) -> int:
        """How many finished (complete or pruned) trials the study is to reach."""
        if self.num_trials is not None:
            return self.num_trials
        if self.strategy == "grid":
            return math.prod(len(p.grid_values()) for p in self.space.values())
        return DEFAULT_NUM_TRIALS

    def base_config(self) -> FineTuningConfig:
        return make_config(dict(self.base))

    def trial_config(self, params: dict[str, Any], **fields: Any) -> FineTuningConfig:
        """The config of one trial: the base with ``params`` (and ``fields``) set."""
        return make_config({**self.base, **params, **fields})

    def to_dict(self) -> dict[str, Any]:
        """What the study stores, so a worker joining it (``--join``) needs only its name and storage."""
        return {"base": self.base, "space": {name: p.to_dict() for name, p in self.space.items()},
                "strategy": self.strategy, "num_trials": self.num_trials, "pruner": self.pruner,
                "objective": self.objective, "direction": self.direction, "seed": self.seed, "timeout": self.timeout,
                "enqueue": self.enqueue}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> SearchSpec:
        space = {name: Param(name=name, **{k: (tuple(v) if k == "values" else v) for k, v in entry.items()})
                 for name, entry in stored["space"].items()}
        return cls(**{**stored, "space": space})

    def same_search(self, other: SearchSpec) -> list[str]:
        """What differs in what is searched (the base, the space, the objective): a study holds one search."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [key for key in ("base", "space", "strategy", "objective", "direction") if mine[key] != theirs[key]]


def searchable_fields() -> list[str]:
    """The config fields a search space may name: numbers, booleans and fields with a fixed set of choices."""
    names = []
    for name, info in FineTuningConfig.model_fields.items():
        kinds = {info.annotation} | set(get_args(info.annotation))
        if name in NOT_SEARCHABLE:
            continue
        if kinds & {int, float, bool} or any("Literal" in str(kind) for kind in kinds) or name in ("method", "model", "objective"):
            names.append(name)
    return names


def field_range(name: str) -> str:
    """The values ``name`` accepts, from the schema's bounds: ``0 < x <= 1.0``, ``one of a, b``, ``any int``."""
    info = FineTuningConfig.model_fields[name]
    annotation, metadata = info.annotation, list(info.metadata)
    numeric = [arg for arg in get_args(annotation) if get_origin(arg) is Annotated]
    if numeric:  # a number-or-auto field (Annotated[int, Field(ge=...)] | "auto"): a search samples the number
        annotation = get_args(numeric[0])[0]
        metadata = [bound for extra in get_args(numeric[0])[1:] for bound in getattr(extra, "metadata", [extra])]
    choices = [] if numeric else [str(a) for kind in get_args(annotation) if "Literal" in str(kind) for a in get_args(kind)]
    if not numeric and "Literal" in str(annotation):
        choices = [str(a) for a in get_args(annotation)]
    if choices:
        return "one of " + ", ".join(choices)
    low = high = ""
    for bound in metadata:
        for attr, symbol in (("ge", "<="), ("gt", "<")):
            if getattr(bound, attr, None) is not None:
                low = f"{getattr(bound, attr)} {symbol} "
        for attr, symbol in (("le", "<="), ("lt", "<")):
            if getattr(bound, attr, None) is not None:
                high = f" {symbol} {getattr(bound, attr)}"
    kind = "int" if int in ({annotation} | set(get_args(annotation))) else "number"
    return f"{low}x{high}" if (low or high) else f"any {kind}"


def load_search_file(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Read a search YAML; ``overrides`` (non-None values) replace its keys (``data``, ``model``, ``num_trials`` ...)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError([f"search file not found: {file}; check the path given to --config"])
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError([f"not valid YAML: {error}"], str(file)) from None
    if not isinstance(loaded, dict):
        raise ConfigError(["the file must hold a mapping: search_strategy, search_space and config fields"], str(file))
    return parse_search(loaded, overrides, source=str(file))


def parse_search(values: dict[str, Any], overrides: dict[str, Any] | None = None, source: str | None = None) -> SearchSpec:
    """Validate a search given as a mapping (the YAML's content); every problem is reported at once."""
    from tuneforge.pipeline import with_absolute_paths

    values = dict(values)
    strategy = dict(values.pop("search_strategy", None) or {})
    space_values = values.pop("search_space", None)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in STRATEGY_KEYS:
        if key in overrides:
            strategy[key] = overrides.pop(key)
    values.update(overrides)
    base = with_absolute_paths(make_config(values, source))
    base_values = base.model_dump(mode="json", exclude_unset=False)
    base_values = {k: v for k, v in base_values.items() if k in base.model_fields_set or k in values}
    problems: list[str] = []
    space = _parse_space(space_values, base_values, problems)
    spec = _parse_strategy(strategy, base_values, space, problems)
    if problems:
        raise ConfigError(problems, source)
    return spec


def _parse_space(space_values: Any, base: dict[str, Any], problems: list[str]) -> dict[str, Param]:
    if not isinstance(space_values, dict) or not space_values:
        problems.append("search_space: missing or empty; give at least one field, e.g. "
                        "learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}")
        return {}
    space: dict[str, Param] = {}
    valid = searchable_fields()
    for name, entry in space_values.items():
        where = f"search_space.{name}"
        if name not in valid:
            known = "a config field that is not searched" if name in FineTuningConfig.model_fields else "unknown field"
            problems.append(f"{where}: {known}; searchable fields: {', '.join(valid)}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: write a mapping such as {{type: float, low: 1e-5, high: 1e-3}} "
                            "or {type: choice, values: [8, 16]}")
            continue
        param = _parse_param(name, entry, where, problems)
        if param is not None and _check_values(param, base, where, problems):
            space[name] = param
    return space


def _parse_param(name: str, entry: dict[str, Any], where: str, problems: list[str]) -> Param | None:
    kind = entry.get("type")
    if kind not in PARAM_TYPES:
        problems.append(f"{where}.type: {kind!r} is not a parameter type; choose from {', '.join(PARAM_TYPES)}")
        return None
    unknown = [key for key in entry if key not in PARAM_KEYS[kind]]
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))} for type {kind}; "
                        f"valid: {', '.join(PARAM_KEYS[kind])}")
        return None
    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            problems.append(f"{where}.values: give a non-empty list of values")
            return None
        odd = [value for value in values if value is not None and not isinstance(value, (bool, int, float, str))]
        if odd:  # Optuna's categorical choices are plain values
            problems.append(f"{where}.values: each choice must be a number, text, true/false or null, not {odd[0]!r}")
            return None
        return Param(name, "choice", values=tuple(values))
    numbers: dict[str, float] = {}
    for key in ("low", "high", "step"):
        raw = entry.get(key)
        if raw is None:
            if key != "step":
                problems.append(f"{where}.{key}: required for type {kind}")
            continue
        try:
            number = float(raw) if kind == "float" else int(raw)
        except (TypeError, ValueError):
            number = None
        if number is None or (kind == "int" and float(raw) != int(raw)) or not math.isfinite(number):
            problems.append(f"{where}.{key}: {raw!r} is not a{'n integer' if kind == 'int' else ' number'}")
            continue
        numbers[key] = number
    if "low" not in numbers or "high" not in numbers:
        return None
    log = bool(entry.get("log", False))
    if numbers["low"] > numbers["high"]:
        problems.append(f"{where}: low {numbers['low']} is above high {numbers['high']}")
        return None
    if log and numbers["low"] <= 0:
        problems.append(f"{where}: a log range needs low > 0 (got {numbers['low']})")
        return None
    if log and "step" in numbers:
        problems.append(f"{where}: give either log: true or a step, not both (Optuna cannot do both)")
        return None
    if "step" in numbers and numbers["step"] <= 0:
        problems.append(f"{where}.step: must be above 0")
        return None
    return Param(name, kind, low=numbers["low"], high=numbers["high"], log=log, step=numbers.get("step"))


def _check_values(param: Param, base: dict[str, Any], where: str, problems: list[str]) -> bool:
    """Each end of a range and each choice must be a value the field accepts next to the fixed fields."""
    candidates = list(param.values or ()) if param.type == "choice" else [("low", param.low), ("high", param.high)]
    ok = True
    for candidate in candidates:
        label, value = candidate if param.type != "choice" else ("value", candidate)
        try:
            make_config({**base, param.name: value})
        except ConfigError as error:
            own = [p for p in error.problems if p.startswith(param.name)] or error.problems
            problems.append(f"{where}: {label} {value!r} is not accepted ({'; '.join(own)}); "
                            f"{param.name} accepts {field_range(param.name)}")
            ok = False
    return ok


def _parse_strategy(strategy: dict[str, Any], base: dict[str, Any], space: dict[str, Param], problems: list[str]) -> SearchSpec:
    unknown = [key for key in strategy if key not in STRATEGY_KEYS]
    if unknown:
        problems.append(f"search_strategy: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(STRATEGY_KEYS)}")
    kind = strategy.get("type", "tpe")
    if kind not in STRATEGIES:
        problems.append(f"search_strategy.type: {kind!r} is not a strategy; choose from {', '.join(STRATEGIES)}")
    num_trials = strategy.get("num_trials")
    if num_trials is not None and (not isinstance(num_trials, int) or isinstance(num_trials, bool) or num_trials < 1):
        problems.append(f"search_strategy.num_trials: must be a whole number of at least 1 (got {num_trials!r})")
    pruner = _parse_pruner(strategy.get("pruner", "median"), problems)
    objective = str(strategy.get("objective") or "validation_loss")
    inferred = objective_direction(objective, problems)
    direction = strategy.get("direction") or inferred
    if direction not in DIRECTIONS:
        problems.append(f"search_strategy.direction: {direction!r}; choose from {', '.join(DIRECTIONS)}")
    seed = strategy.get("seed")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        problems.append(f"search_strategy.seed: must be a whole number >= 0 (got {seed!r})")
    timeout = strategy.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        problems.append(f"search_strategy.timeout: seconds above 0 (got {timeout!r})")
    enqueue = strategy.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(item, dict) for item in enqueue):
        problems.append("search_strategy.enqueue: a list of {field: value} mappings, the trials to try first")
        enqueue = []
    for index, item in enumerate(enqueue):
        extra = [name for name in item if name not in space]
        if extra:
            problems.append(f"search_strategy.enqueue[{index}]: {', '.join(extra)} not in the search space "
                            f"({', '.join(space)})")
    spec = SearchSpec(base=base, space=space, strategy=kind, num_trials=num_trials, pruner=pruner, objective=objective,
                      direction=str(direction), seed=seed, timeout=timeout, enqueue=enqueue)
    if kind == "grid" and space and not problems:
        try:
            spec.trials_wanted
        except ConfigError as error:
            problems.extend(error.problems)
    return spec


def _parse_pruner(value: Any, problems: list[str]) -> dict[str, Any]:
    entry = {"type": value} if isinstance(value, str) or value is None else dict(value) if isinstance(value, dict) else {}
    kind = entry.get("type") or "none"
    if kind not in PRUNERS:
        problems.append(f"search_strategy.pruner: {kind!r} is not a pruner; choose from {', '.join(PRUNERS)}")
        return {"type": "none"}
    unknown = [key for key in entry if key != "type" and key not in PRUNER_OPTIONS[kind]]
    if unknown:
        problems.append(f"search_strategy.pruner: unknown option(s) {', '.join(unknown)} for {kind}; "
                        f"valid: {', '.join(PRUNER_OPTIONS[kind]) or 'none'}")
    return {**entry, "type": kind}


def objective_direction(objective: str, problems: list[str] | None = None) -> str:
    """The direction that improves ``objective``: a validation metric or an evaluation metric's name or key."""
    if objective in VALIDATION_METRICS:
        return VALIDATION_METRICS[objective]
    spec = objective_metric(objective)
    if spec is None:
        if problems is not None:
            problems.append(f"search_strategy.objective: {objective!r} is not an evaluation metric; choose from "
                            f"{', '.join(valid_objectives())}")
        return "minimize"
    return "maximize" if spec.higher_is_better else "minimize"


def objective_metric(objective: str) -> Any:
    """The registered ``MetricSpec`` whose name or key is ``objective`` (None for a validation metric or none)."""
    from tuneforge.core.errors import TuneforgeError
    from tuneforge.core.registries import METRICS

    for name in METRICS.names():
        try:
            spec = METRICS.get(name)
        except TuneforgeError:
            continue
        if objective == name or objective in spec.keys:
            return spec
    return None


def valid_objectives() -> list[str]:
    from tuneforge.core.registries import METRICS

    return list(VALIDATION_METRICS) + list(METRICS.names())


def objective_key(objective: str) -> str:
    """The performance key an objective is read from: a metric's name becomes its key (``f1`` -> ``f1_score``)."""
    spec = objective_metric(objective)
    if spec is not None and objective == spec.name and len(spec.keys) == 1:
        return spec.keys[0]
    return objective
