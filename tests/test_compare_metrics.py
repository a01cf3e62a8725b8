"""The answer-check metrics (evaluate/answer_checks.py): JSON validity, schema, fields, contains, regex, numeric."""

from __future__ import annotations

import pytest

from tuneforge.config import make_config
from tuneforge.evaluate.answer_checks import (conforms, contains, first_number, json_fields, json_schema_metric,
                                              json_valid, numeric_metric, regex_match, regex_metric, schema_of)
from tuneforge.evaluate.metrics import metric_specs


def test_json_valid_accepts_fenced_json_only():
    answers = ['{"a": 1}', '```json\n[1, 2]\n```', "{'a': 1}", "a: 1"]
    assert json_valid(answers, [""] * 4) == {"json_valid": 0.5}


def test_json_schema_from_the_reference_and_a_given_schema():
    references = ['{"name": "Ada", "age": 36}'] * 4
    answers = ['{"name": "Bob", "age": 2}', '{"name": "Bob"}', '{"name": 3, "age": 2}', 'not json']
    assert json_schema_metric().compute(answers, references) == {"json_schema": 0.25}  # only the first has the shape
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    assert json_schema_metric(schema, name="person").compute(answers, references) == {"person": 0.5}
    assert conforms(3, schema_of(2.5)) and not conforms("x", schema_of(1))


def test_json_fields_counts_each_top_level_field():
    references = ['{"city": "Oslo", "country": "NO", "zip": "0150"}', '{"city": "Rome", "country": "IT"}', "[1]"]
    answers = ['{"city": "Oslo", "country": "SE", "zip": "0150"}', "garbage", "[1]"]
    assert json_fields(answers, references) == {"json_fields": pytest.approx(3 / 6)}  # 2 + 0 + 1 of 3 + 2 + 1


def test_contains_regex_and_numeric():
    assert contains(["It is Paris, France.", "parisian"], ["paris", "paris"]) == {"contains": 0.5}
    assert regex_match(["2024-01-05", "Jan 5"], [r"\d{4}-\d{2}-\d{2}", r"\d{4}-\d{2}-\d{2}"]) == {"regex_match": 0.5}
    assert regex_match(["a(b"], ["a(b"]) == {"regex_match": 1.0}  # an invalid pattern is matched literally
    assert regex_metric(r"yes|no", name="yes_no").compute(["Yes", "maybe"], ["", ""]) == {"yes_no": 0.5}
    assert first_number("costs 1,250.50 dollars") == 1250.5 and first_number("none") is None
    assert numeric_metric().compute(["about 3.0000001", "4", "x"], ["3", "5", "1"]) == {"numeric": pytest.approx(1 / 3)}
    assert numeric_metric(rel_tol=0.1).compute(["9.5"], ["10"]) == {"numeric": 1.0}


def test_answer_checks_are_registered_and_usable_in_a_config():
    names = ["json_valid", "json_schema", "json_fields", "contains", "regex_match", "numeric"]
    assert [spec.name for spec in metric_specs(names)] == names
    assert make_config({"evaluation_metrics": ["accuracy", *names]}).evaluation_metrics[-1] == "numeric"


def test_evaluate_model_reports_them(tiny_model, tiny_tokenizer):
    from tuneforge.data.examples import TrainingExample
    from tuneforge.evaluate.run import evaluate_model

    examples = [TrainingExample.from_pair(f"give person {i} as JSON", f'{{"id": {i}, "name": "n{i}"}}') for i in range(3)]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, max_new_tokens=3,
                                metrics=["json_valid", "json_fields", "contains", "numeric"])
    assert {"json_valid", "json_fields", "contains", "numeric", "exact_match"} <= set(evaluation.performance)


def test_error_analysis_confusion_and_fixed_broke():
    from tuneforge.evaluate.error_analysis import error_analysis

    refs = ["red", "red", "blue", "blue", "green"]
    tuned = [{"input": f"q{i}", "reference": r, "prediction": p} for i, (r, p) in
             enumerate(zip(refs, ["red", "blue", "blue", "It is blue.", "purple"]))]
    base = [{"input": f"q{i}", "reference": r, "prediction": p} for i, (r, p) in
            enumerate(zip(refs, ["red", "red", "green", "x", "green"]))]
    found = error_analysis(tuned, base, "classification", ["blue", "green", "red"])
    confusion = found["confusion"]
    assert confusion["columns"] == ["blue", "green", "red", "(other)"]
    assert confusion["matrix"] == [[2, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]  # rows: blue, green, red
    assert confusion["per_label"]["blue"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert found["wrong_count"] == 2 and [row["input"] for row in found["wrong"]] == ["q1", "q4"]
    assert [row["input"] for row in found["fixed"]] == ["q2", "q3"] and [row["input"] for row in found["broke"]] == ["q1", "q4"]
    assert found["broke"][0] == {"input": "q1", "reference": "red", "tuned": "blue", "base": "red"}
    assert "confusion" not in error_analysis(tuned, None, "generation") and "fixed" not in error_analysis(tuned, None, "generation")
