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


def test_judge_reads_verdicts_and_reports_agreement_with_exact_match(monkeypatch):
    import tuneforge.evaluate.judge as judge
    from tuneforge.inference import GenerationResult

    assert judge.read_verdict("PASS") is True and judge.read_verdict(" fail.") is False
    assert judge.read_verdict("pass or fail") is None and judge.read_verdict("hmm") is None
    # judge [T, T, F, F] vs exact [T, F, F, F]: agree on 3 of 4; chance 0.5·0.25 + 0.5·0.75 = 0.5, kappa (0.75-0.5)/0.5
    assert judge.agreement([True, True, False, False], [True, False, False, False]) == (0.75, pytest.approx(0.5))

    replies = iter(["PASS", "PASS", "FAIL", "maybe"])

    class FakeEngine:
        def __init__(self, model, tokenizer, batch_size=16):
            pass

        def generate(self, requests):
            assert requests[0].messages[0]["content"] == "grade it" and "Reference answer:\nred" in requests[0].messages[1]["content"]
            return [GenerationResult(text=next(replies), finish_reason="stop", prompt_tokens=1, completion_tokens=1) for _ in requests]

    monkeypatch.setattr(judge, "InferenceEngine", FakeEngine)
    items = [{"input": "q", "reference": r, "prediction": p} for r, p in
             [("red", "red"), ("blue", "a blue one"), ("green", "red"), ("red", "red")]]
    scores = judge.judge_answers(None, None, items, rubric="grade it")
    assert scores["judge_score"] == 0.5 and scores["judge_unparsed"] == 1 and scores["verdicts"] == [True, True, False, None]
    assert scores["judge_agreement"] == 0.5  # exact [T, F, F, T] vs judged [T, T, F, F]


def test_a_run_with_a_judge_reports_its_scores(train_run):
    result = train_run(test_split=0.2, judge="base", epochs=1, evaluation_strategy="no", saving_strategy="no")
    for evaluation in (result.base, result.tuned):
        assert {"judge_score", "judge_agreement", "judge_kappa"} <= set(evaluation.performance)
        assert 0 <= evaluation.performance["judge_score"] <= 1


def test_json_schema_per_example_then_the_runs_then_the_references(tmp_path):
    from tuneforge.data.examples import TrainingExample
    from tuneforge.evaluate.answer_checks import load_json_schema, with_json_schema

    strict = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer", "enum": [1, 2]}},
              "additionalProperties": False}
    path = tmp_path / "schema.json"
    path.write_text(__import__("json").dumps(strict))
    own = {"type": "array", "items": {"type": "string"}}
    examples = [TrainingExample.from_pair("q0", '{"id": 1}'), TrainingExample.from_pair("q1", '{"id": 1}'),
                TrainingExample(messages=[{"role": "user", "content": "q2"}, {"role": "assistant", "content": '["a"]'}],
                                metadata={"json_schema": own})]
    given = with_json_schema(examples, load_json_schema(path))
    assert given[0].metadata["json_schema"] == strict and given[2].metadata["json_schema"] == own
    assert examples[0].metadata == {}  # copies: the caller's examples are untouched
    answers = ['{"id": 2}', '{"id": 3}', '["x", "y"]']  # right, outside the enum, right for its own schema
    spec = json_schema_metric()
    assert spec.score(answers, [e.output for e in given], None, given) == {"json_schema": pytest.approx(2 / 3)}
    # Without the schema file, the references' implied shape: an integer id is all it asks.
    assert spec.score(answers, [e.output for e in examples], None, examples) == {"json_schema": 1.0}
    assert not conforms({"id": 1, "extra": 0}, strict) and conforms({"id": 1}, strict)


def test_a_bad_schema_file_is_a_config_error_naming_it(tmp_path):
    from tuneforge.core.errors import ConfigError
    from tuneforge.evaluate.answer_checks import load_json_schema

    for name, text in (("not-json.json", "{type: object"), ("list.json", "[1]"), ("invalid.json", '{"type": 12}')):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_json_schema(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_json_schema(tmp_path / "missing.json")


def test_a_function_plugin_may_take_the_examples(tiny_model, tiny_tokenizer):
    import sys
    import types

    from tuneforge.core.registries import METRICS
    from tuneforge.data.examples import TrainingExample
    from tuneforge.evaluate.run import evaluate_model

    seen = []

    def tagged(predictions, references, examples):
        seen.extend(example.metadata.get("tag") for example in examples)
        return sum(example.metadata.get("tag") == "hard" for example in examples) / len(examples)

    module = types.ModuleType("tf_test_example_metrics")
    module.tagged = tagged
    sys.modules[module.__name__] = module
    try:
        examples = [TrainingExample(messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
                                    metadata={"tag": "hard" if i else "easy"}) for i in range(3)]
        evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, max_new_tokens=2,
                                    metrics=["tf_test_example_metrics:tagged"])
        assert evaluation.performance["tagged"] == pytest.approx(2 / 3) and seen == ["easy", "hard", "hard"]
    finally:
        del sys.modules[module.__name__]
        METRICS.unregister("tf_test_example_metrics:tagged")


def test_eval_and_finetune_take_a_json_schema_file(train_run, tiny_model_dir, session_dataset, tmp_path, capsys):
    import json

    from tuneforge.cli.main import main

    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "required": ["color"]}')
    assert main(["eval", "--data", str(session_dataset), "--model", str(tiny_model_dir), "--max-examples", "3",
                 "--max-new-tokens", "2", "--json-schema", str(schema), "--evaluation-metrics", "exact_match", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["performance"]["json_schema"] == 0.0 and "accuracy" not in shown["performance"]
    (tmp_path / "bad.json").write_text('{"type": 12}')
    assert main(["eval", "--data", str(session_dataset), "--model", str(tiny_model_dir), "--json-schema",
                 str(tmp_path / "bad.json")]) == 1
    assert "bad.json is not a valid JSON Schema" in capsys.readouterr().err
    result = train_run(test_split=0.2, json_schema=str(schema), evaluation_strategy="no", saving_strategy="no",
                       baselines=False, forgetting_check=False, epochs=1)
    assert "json_schema" in result.tuned.performance and "json_schema" in result.base.performance
