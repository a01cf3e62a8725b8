"""Cross-validation: fold construction (disjoint, complete, stratified) and K runs reported as mean ± std."""

from __future__ import annotations

import json
import statistics

import pytest

from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.folds import make_folds, summarize_folds


def test_folds_are_disjoint_complete_balanced_and_stratified():
    labels = ["a"] * 12 + ["b"] * 6 + ["c"] * 3
    examples = [TrainingExample(input=f"q{i}", output=label) for i, label in enumerate(labels)]
    folds = make_folds(examples, 3, seed=1)
    everything = [index for fold in folds for index in fold]
    assert sorted(everything) == list(range(len(examples)))  # no example in two folds' test sets, none left out
    assert {len(fold) for fold in folds} == {7}
    for fold in folds:
        counts = {label: sum(labels[i] == label for i in fold) for label in "abc"}
        assert counts == {"a": 4, "b": 2, "c": 1}  # each label in its overall share
    assert make_folds(examples, 3, seed=1) == folds and make_folds(examples, 3, seed=2) != folds
    with pytest.raises(ValueError):
        make_folds(examples, 1)


def test_free_text_folds_and_the_summary():
    examples = [TrainingExample(input=f"q{i}", output=f"a unique long answer {i}") for i in range(10)]
    folds = make_folds(examples, 4)
    assert sorted(i for fold in folds for i in fold) == list(range(10)) and sorted(map(len, folds)) == [2, 2, 3, 3]
    summary = summarize_folds([{"accuracy": 0.5, "loss": 1.0}, {"accuracy": 0.7, "loss": 2.0}, {"accuracy": 0.9}])
    assert set(summary) == {"accuracy"}  # only metrics every fold has
    assert summary["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["accuracy"]["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))


def test_cross_validation_trains_k_folds(train_run):
    result = train_run(cross_validation=2, epochs=1, evaluation_strategy="no", saving_strategy="no", test_split=0.2)
    saved = json.loads((result.run_dir / "results.json").read_text())
    cv = saved["cross_validation"]
    assert saved["status"] == "succeeded" and cv["k"] == 2 and [f["status"] for f in cv["folds"]] == ["succeeded"] * 2
    # every train and test example tested exactly once (the validation split stays the validation set)
    assert sum(fold["test"] for fold in cv["folds"]) == saved["data"]["train"] + saved["data"]["test"] == 40 - saved["data"]["validation"]
    assert (result.run_dir / "fold-1" / "results.json").is_file() and (result.run_dir / "fold-2" / "adapter").is_dir()
    assert cv["tuned"]["accuracy"]["folds"] == [fold["tuned"]["accuracy"] for fold in cv["folds"]]
    page = (result.run_dir / "report.html").read_text()  # the root's report: mean ± std, each fold linked
    assert "2-fold cross-validation" in page and " ± " in page and "fold-1/report.html" in page
