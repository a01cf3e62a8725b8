"""Answer checks for structured and loosely-worded answers, registered as metrics (docs/SEAMS.md, "Evaluation metrics").

- ``json_valid``: the share of answers that parse as JSON (a surrounding ```json fence is allowed);
- ``json_schema``: the share that conform to a JSON schema, checked by ``jsonschema``
  (draft 2020-12). Per example the schema is, first found: the example's own (``"metadata":
  {"json_schema": {...}}`` on its data row), the one given for the run (``json_schema: FILE``,
  ``--json-schema FILE``, which ``with_json_schema`` puts on every example without one), else the
  schema its reference implies (the same JSON type; for objects, the reference's keys required with
  the same value types); ``json_schema_metric(schema)`` makes a spec with a fixed default schema;
- ``json_fields``: field-level accuracy: the share of the reference objects' top-level fields the
  answer gives with the same value (a non-object reference is one field: the whole value);
- ``contains``: the share of answers that contain the reference (normalised, as a whole phrase);
- ``regex_match``: the share of answers that the reference, read as a regular expression, fully
  matches (an invalid pattern is matched literally); ``regex_metric(pattern)`` for one fixed pattern;
- ``numeric``: the share of answers whose first number equals the reference's within
  ``NUMERIC_REL_TOL`` (relative) or ``NUMERIC_ABS_TOL``; ``numeric_metric(rel_tol, abs_tol)`` for others.

None of them is in the default ``evaluation_metrics``: ask for them (``--evaluation-metrics
accuracy,json_valid,json_fields``).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

from tuneforge.evaluate.metrics import ALL_TASKS, MetricSpec

NUMERIC_REL_TOL = 1e-6
NUMERIC_ABS_TOL = 1e-9
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_MISSING = object()

# (references, right answers, wrong answers) for the metric contract test (tests/test_metric_contract.py).
JSON_SAMPLE = (('{"name": "Ada", "age": 36}', '{"name": "Alan", "age": 41}', '[1, 2, 3]'),
               ('```json\n{"age": 36, "name": "Ada"}\n```', '{"name": "Alan", "age": 41}', '[1, 2, 3]'),
               ('name: Ada', '{"name": "Bob", age: 1', 'one two three'))
NUMERIC_SAMPLE = (("42", "3.14", "-7"), ("The answer is 42.", "about 3.14", "-7"), ("41", "3.15", "seven"))


def _share(hits: Sequence[bool]) -> float:
    return float(sum(hits) / len(hits)) if hits else 0.0


def parse_json(text: str) -> Any:
    """The JSON value of ``text`` (outer white space and a ```json fence removed), or ``_MISSING``."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return _MISSING


def json_valid(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    return {"json_valid": _share([parse_json(p) is not _MISSING for p in predictions])}


_JSON_TYPES = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"),
               (type(None), "null")]


def _type_name(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def schema_of(value: Any) -> dict[str, Any]:
    """The JSON schema ``value`` implies: its type; for an object, its keys required, each with its value's schema."""
    kind = _type_name(value)
    schema: dict[str, Any] = {"type": ["integer", "number"] if kind in ("integer", "number") else kind}
    if kind == "object":
        schema["properties"] = {key: schema_of(item) for key, item in value.items()}
        schema["required"] = list(value)
    return schema


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` conforms to ``schema`` (JSON Schema draft 2020-12, checked by ``jsonschema``)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(value)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """What makes ``schema`` an invalid JSON Schema (draft 2020-12), or None."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        return error.message
    return None


SCHEMA_KEY = "json_schema"  # the metadata key of an example's own JSON schema


def load_json_schema(path: str | Path) -> dict[str, Any]:
    """The JSON schema in ``path``; a ``ConfigError`` naming the file when it is unreadable, not JSON or not a schema."""
    from tuneforge.core.errors import ConfigError

    fix = 'give a JSON Schema document (an object such as {"type": "object", "required": ["name"]})'
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([f"json_schema: cannot read {path}: {error.strerror or error}"]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError([f"json_schema: {path} is not JSON ({error}); {fix}"]) from None
    if not isinstance(schema, dict):
        raise ConfigError([f"json_schema: {path} holds a {type(schema).__name__}, not a schema object; {fix}"])
    problem = schema_problem(schema)
    if problem:
        raise ConfigError([f"json_schema: {path} is not a valid JSON Schema: {problem}"])
    return schema


def with_json_schema(examples: Sequence[Any], schema: dict[str, Any] | None) -> list[Any]:
    """``examples`` with ``schema`` as the JSON schema of each one without its own (shallow copies; None: as they are)."""
    import copy

    if schema is None:
        return list(examples)
    found = []
    for example in examples:
        if SCHEMA_KEY not in example.metadata:
            example = copy.copy(example)
            example.metadata = {**example.metadata, SCHEMA_KEY: schema}
        found.append(example)
    return found


def json_schema_metric(schema: dict[str, Any] | None = None, name: str = "json_schema") -> MetricSpec:
    """A metric: the share of answers that are JSON conforming to their example's schema (its metadata's
    ``json_schema``), else ``schema``, else the schema the reference implies."""

    def compute(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None,
                examples: Sequence[Any] | None = None) -> dict[str, float]:
        hits = []
        own = [example.metadata.get(SCHEMA_KEY) for example in examples] if examples else [None] * len(predictions)
        for prediction, reference, given in zip(predictions, references, own):
            value = parse_json(prediction)
            expected = given if given is not None else schema
            if expected is None:
                implied = parse_json(reference)
                expected = schema_of(implied) if implied is not _MISSING else None
            hits.append(value is not _MISSING and expected is not None and conforms(value, expected))
        return {name: _share(hits)}

    return MetricSpec(name, compute, (name,), tasks=ALL_TASKS, sample=JSON_SAMPLE, uses_examples=True,
                      description="share of answers that are JSON conforming to the example's or the run's schema "
                      "(default: the reference's shape)")


def json_fields(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    """Field-level accuracy over every top-level field of the JSON references (non-JSON references are skipped)."""
    right = total = 0
    for prediction, reference in zip(predictions, references):
        expected = parse_json(reference)
        if expected is _MISSING:
            continue
        answer = parse_json(prediction)
        if isinstance(expected, dict):
            total += len(expected)
            if isinstance(answer, dict):
                right += sum(key in answer and answer[key] == item for key, item in expected.items())
        else:
            total += 1
            right += answer is not _MISSING and answer == expected
    return {"json_fields": float(right / total) if total else 0.0}


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def contains(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    hits = [bool(_normal(r)) and re.search(rf"(?<!\w){re.escape(_normal(r))}(?!\w)", _normal(p)) is not None
            for p, r in zip(predictions, references)]
    return {"contains": _share(hits)}


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE | re.DOTALL)
    except re.error:
        return re.compile(re.escape(text), re.IGNORECASE | re.DOTALL)


def regex_match(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    return {"regex_match": _share([_pattern(r.strip()).fullmatch(p.strip()) is not None for p, r in zip(predictions, references)])}


def regex_metric(pattern: str, name: str = "regex") -> MetricSpec:
    """A metric: the share of answers that ``pattern`` fully matches (the references are not used)."""
    compiled = _pattern(pattern)
    return MetricSpec(name, lambda predictions, references, labels=None: {
        name: _share([compiled.fullmatch(p.strip()) is not None for p in predictions])}, (name,),
        description=f"share of answers matching /{pattern}/")


def first_number(text: str) -> float | None:
    """The first number written in ``text`` (thousands commas allowed), or None."""
    for match in _NUMBER.finditer(text):
        try:
            return float(match.group(0).replace(",", ""))
        except ValueError:
            continue
    return None


def numeric_metric(rel_tol: float = NUMERIC_REL_TOL, abs_tol: float = NUMERIC_ABS_TOL, name: str = "numeric") -> MetricSpec:
    """A metric: the share of answers whose first number is the reference's within the tolerances."""

    def compute(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
        hits = []
        for prediction, reference in zip(predictions, references):
            got, want = first_number(prediction), first_number(reference)
            hits.append(got is not None and want is not None and math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol))
        return {name: _share(hits)}

    return MetricSpec(name, compute, (name,), sample=NUMERIC_SAMPLE,
                      description=f"share of answers whose first number is the reference's (relative tolerance {rel_tol})")


def _spec(name: str, compute: Callable[..., dict[str, float]], description: str, **fields: Any) -> MetricSpec:
    return MetricSpec(name, compute, (name,), description=description, **fields)


def _register() -> None:
    from tuneforge.core.registries import METRICS

    for spec in [
        _spec("json_valid", json_valid, "share of answers that parse as JSON", sample=JSON_SAMPLE),
        json_schema_metric(),
        _spec("json_fields", json_fields, "share of the JSON references' top-level fields answered with the same value",
              sample=JSON_SAMPLE),
        _spec("contains", contains, "share of answers containing the reference as a whole phrase"),
        _spec("regex_match", regex_match, "share of answers the reference, as a regular expression, fully matches"),
        numeric_metric(),
    ]:
        METRICS.register(spec.name, spec)


_register()
