"""A fine-tuning job request checked and turned into the job's ``FineTuningConfig`` values (OpenAI's semantics).

What ``FineTuningManager.create_job`` accepts: uploaded training/validation files the data doctor
found no errors in, a base model that exists, ``hyperparameters`` (or ``method``'s, which win) each
a number in range or ``"auto"``, a suffix, a seed, and ``extra`` tuneforge config fields. Every
problem is an ``InvalidRequest`` whose ``param`` names the request field.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from tuneforge.core.errors import ConfigError, ModelNotFoundError, TuneforgeError
from tuneforge.jobs.errors import InvalidRequest, NotFound
from tuneforge.jobs.files import FileStore
from tuneforge.jobs import ids
from tuneforge.jobs.objects import StoredFile
from tuneforge.jobs.store import JobStore

# FineTuningConfig fields a request may not set through ``extra``: the job decides where data and
# output are, and remote code is never enabled from a request.
RESERVED_FIELDS = {"data": "training_file", "validation_data": "validation_file", "test_data": None,
                   "output": None, "resume": None, "trust_remote_code": None, "model": "model", "seed": "seed",
                   "name": None}
HYPERPARAMETER_FIELDS = {"n_epochs": "epochs", "batch_size": "batch_size", "learning_rate_multiplier": "learning_rate"}
# OpenAI's job ``method.type`` -> the tuneforge objective it trains with, and the method's own hyperparameters
# (beyond HYPERPARAMETER_FIELDS) -> (config field, low, high): DPO's beta is "auto" or a number in (0, 2].
METHOD_OBJECTIVES = {"supervised": "sft", "dpo": "dpo"}
METHOD_HYPERPARAMETERS = {"dpo": {"beta": ("dpo_beta", 0.0, 2.0)}}
PREFERENCE_FORMATS = ("preference", "openai_preference")
SUFFIX = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
MAX_SEED = 2**31 - 1
JOB_DEFAULTS = {"test_split": 0.0}  # a job trains on all it is given; the validation split still applies


def check_hyperparameters(hyperparameters: dict[str, Any] | None, method: dict[str, Any] | None) -> dict[str, Any]:
    """n_epochs / batch_size / learning_rate_multiplier, each a checked number or "auto"; ``method``'s win."""
    given = dict(hyperparameters or {})
    param_prefix = "hyperparameters"
    kind = method_type(method)
    own = METHOD_HYPERPARAMETERS.get(kind, {})
    if method is not None:
        section = method.get(kind) or {}
        if not isinstance(section, dict):
            raise InvalidRequest(f"method.{kind} must be an object like {{\"hyperparameters\": {{...}}}}", param=f"method.{kind}")
        inner = section.get("hyperparameters")
        if inner:
            if not isinstance(inner, dict):
                raise InvalidRequest(f"method.{kind}.hyperparameters must be an object", param=f"method.{kind}.hyperparameters")
            given, param_prefix = dict(inner), f"method.{kind}.hyperparameters"
    unknown = sorted(set(given) - set(HYPERPARAMETER_FIELDS) - set(own))
    if unknown:
        raise InvalidRequest(f"{param_prefix}.{unknown[0]}: unknown hyperparameter; use "
                             f"{', '.join([*HYPERPARAMETER_FIELDS, *own])}", param=f"{param_prefix}.{unknown[0]}")
    checked = {}
    limits = {"n_epochs": (0, 1000, False), "batch_size": (1, 4096, True), "learning_rate_multiplier": (0, 1000, False)}
    for name in HYPERPARAMETER_FIELDS:
        value = given.get(name, "auto")
        low, high, integer = limits[name]
        ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                                 and low < value <= high if not integer else
                                 isinstance(value, int) and not isinstance(value, bool) and low <= value <= high)
        if not ok:
            kind = "an integer" if integer else "a number"
            raise InvalidRequest(f"{param_prefix}.{name}: must be \"auto\" or {kind} in "
                                 f"{'[' if integer else '('}{low}, {high}], got {value!r}", param=f"{param_prefix}.{name}")
        checked[name] = value
    for name, (_, low, high) in own.items():
        value = given.get(name, "auto")
        if not (value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                                    and low < value <= high)):
            raise InvalidRequest(f"{param_prefix}.{name}: must be \"auto\" or a number in ({low:g}, {high:g}], got {value!r}",
                                 param=f"{param_prefix}.{name}")
        checked[name] = value
    return checked


def method_type(method: dict[str, Any] | None) -> str:
    """OpenAI's ``method.type`` (default ``supervised``), checked against what tuneforge jobs train."""
    if method is None:
        return "supervised"
    if not isinstance(method, dict):
        raise InvalidRequest("method must be an object like {\"type\": \"supervised\"}", param="method")
    kind = method.get("type", "supervised")
    if kind not in METHOD_OBJECTIVES:
        raise InvalidRequest(f"method.type {kind!r} is not supported; tuneforge jobs run {' and '.join(map(repr, METHOD_OBJECTIVES))} "
                             "(other objectives: extra={'objective': ...})", param="method.type")
    return kind


def objective_fields(kind: str, hyper: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """The config fields ``method.type`` sets: ``dpo`` -> objective dpo (and its beta); ``supervised`` leaves the
    objective to ``extra`` (default sft)."""
    if kind == "supervised":
        return {}
    objective = METHOD_OBJECTIVES[kind]
    chosen = (extra or {}).get("objective")
    if chosen is not None and chosen != objective:
        raise InvalidRequest(f"extra.objective: {chosen!r} contradicts method.type {kind!r} (objective {objective}); "
                             "remove one of them", param="extra.objective")
    fields: dict[str, Any] = {"objective": objective}
    for name, (field, _, _) in METHOD_HYPERPARAMETERS.get(kind, {}).items():
        if hyper.get(name, "auto") != "auto":
            fields[field] = hyper[name]
    return fields


def job_config(values: dict[str, Any], hyper: dict[str, Any],
               extra: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validated ``FineTuningConfig`` values of a job and its resolved hyperparameters."""
    from tuneforge.config import DEFAULT_LEARNING_RATE, make_config

    extra = dict(extra or {})
    for name in extra:
        if name in RESERVED_FIELDS:
            where = RESERVED_FIELDS[name]
            hint = f"; use the request's {where} field" if where else "; a job sets it itself"
            raise InvalidRequest(f"extra.{name}: may not be set through extra{hint}", param=f"extra.{name}")
    merged = {**JOB_DEFAULTS, **extra, **values}
    if values.get("validation_data"):
        merged["validation_split"] = 0.0
    if hyper["n_epochs"] != "auto":
        merged["epochs"] = hyper["n_epochs"]
    if hyper["batch_size"] != "auto":
        merged["batch_size"] = hyper["batch_size"]
    multiplier = hyper["learning_rate_multiplier"]
    try:
        probe = make_config({k: v for k, v in merged.items() if k != "learning_rate"})
        if multiplier != "auto":
            merged["learning_rate"] = float(multiplier) * DEFAULT_LEARNING_RATE[probe.method]
        config = make_config(merged)
    except ConfigError as error:
        raise InvalidRequest(str(error), param=_param_of(error, extra)) from None
    resolved = {"n_epochs": epochs_number(config.epochs), "batch_size": config.batch_size,
                "learning_rate_multiplier": (float(multiplier) if multiplier != "auto"
                                             else round(config.resolved_learning_rate / DEFAULT_LEARNING_RATE[config.method], 6))}
    for kind_fields in METHOD_HYPERPARAMETERS.values():  # a method's own ones, resolved from the config
        for name, (field, _, _) in kind_fields.items():
            if name in hyper:
                resolved[name] = getattr(config, field)
    return config.model_dump(mode="json", exclude_unset=True), resolved  # only what was chosen: a method's options stay its own


def check_training_file(files: FileStore, file_id: str, param: str) -> StoredFile:
    """The uploaded file ``file_id`` (request field ``param``), usable for training: else ``InvalidRequest`` saying why."""
    if not ids.is_valid(file_id, ids.FILE_PREFIX):
        raise InvalidRequest(f"{param}: no such file {str(file_id)[:80]!r}; upload one with purpose fine-tune first",
                             param=param)
    try:
        stored = files.get(file_id)
    except NotFound:
        raise InvalidRequest(f"{param}: no such file {file_id}", param=param) from None
    if stored.purpose != "fine-tune":
        raise InvalidRequest(f"{param}: {file_id} has purpose {stored.purpose!r}, not 'fine-tune'", param=param)
    errors = stored.errors
    if errors:
        listed = "\n".join(f"  {stored.filename}:{e['line'] or '-'}: {e['code']}: {e['message']}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InvalidRequest(f"{param}: {file_id} ({stored.filename}) has {len(errors)} error(s); fix them and upload "
                             f"it again:\n{listed}{more}", param=param, code=f"invalid_{param}")
    if not stored.path.is_file():
        raise InvalidRequest(f"{param}: the content of {file_id} is gone", param=param)
    examples = (stored.summary or {}).get("examples")
    from tuneforge.data.doctor.options import ValidationOptions

    least = ValidationOptions().min_examples if param == "training_file" else 1  # what training requires
    if isinstance(examples, int) and examples < least:
        raise InvalidRequest(f"{param}: {file_id} ({stored.filename}) has {examples} example(s), but must have at "
                             f"least {least} examples", param=param, code=f"invalid_{param}")
    return stored


def check_base_model(store: JobStore, model: str) -> str:
    """``model`` stripped, when it names a base model a job can train (embedded, known to the store, or found)."""
    from tuneforge.model.resolve import EMBEDDED_MODELS, resolve_model

    model = str(model).strip()
    if not model:
        raise InvalidRequest("model: name a base model", param="model")
    if model.startswith("ft:"):
        raise InvalidRequest(f"model: continuing from a fine-tuned model ({model}) is not supported yet; "
                             "name its base model", param="model")
    if model.lower() in EMBEDDED_MODELS:
        return model
    row = store.get_model(model)
    if row is not None and row["kind"] == "base":
        return model
    try:
        resolve_model(model)
    except ModelNotFoundError as error:
        raise InvalidRequest(f"model: {error}", param="model", code="model_not_found") from None
    except TuneforgeError as error:
        raise InvalidRequest(f"model: {error}", param="model") from None
    return model


def check_seed(seed: int | None) -> int:
    if seed is None:
        return random.SystemRandom().randint(0, MAX_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}", param="seed")
    return seed


def epochs_number(value: float | str) -> int | float | str:
    """A whole number of epochs as an int (OpenAI's form); ``auto`` (chosen from the data by the run) as it is."""
    if isinstance(value, str):
        return value
    return int(value) if float(value).is_integer() else value


def _param_of(error: ConfigError, extra: dict[str, Any]) -> str | None:
    """The request field a config problem is about: ``extra.<field>``, or the hyperparameter it came from."""
    first = error.problems[0] if error.problems else ""
    name = first.split(":", 1)[0].split(".", 1)[0].strip()
    back = {"epochs": "hyperparameters.n_epochs", "batch_size": "hyperparameters.batch_size",
            "learning_rate": "hyperparameters.learning_rate_multiplier"}
    if name in extra:
        return f"extra.{name}"
    return back.get(name, "extra" if extra else None)
