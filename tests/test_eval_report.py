"""report.html's evaluation parts: error analysis (confusion matrix, per-label P/R/F1, fixed and broken examples),
the prompting baselines with the verdict, and cross-validation's mean ± std with per-fold figures."""

from __future__ import annotations

import re

from tuneforge.evaluate.error_analysis import error_analysis
from tuneforge.report import _baselines_section, _cross_validation_section, _error_analysis_section

REFS = ["red", "red", "blue", "blue", "green"]


def _predictions(answers):
    return [{"input": f"q{i}", "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFS, answers))]


def _cells(page: str, label: str) -> list[str]:
    """The cells of the table row that starts with ``label``."""
    row = re.search(rf"<tr><td>{label}</td>(.*?)</tr>", page).group(1)
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_error_analysis_section_shows_the_matrix_per_label_scores_and_what_changed():
    tuned = _predictions(["red", "blue", "blue", "It is blue.", "purple"])
    base = _predictions(["red", "red", "green", "x", "green"])
    page = _error_analysis_section({"error_analysis": error_analysis(tuned, base, "classification", ["blue", "green", "red"])})
    assert "confusion matrix and per-label precision / recall / F1" in page
    # blue: both blue answered blue (2), precision 2/3, recall 1, F1 0.8, support 2; the (other) column exists.
    assert _cells(page, "blue") == ["2", "0", "0", "0", "0.6667", "1.0000", "0.8000", "2"]
    assert "<th>(other)</th>" in page
    assert "Fixed by fine-tuning (2)" in page and "Broken by fine-tuning (2)" in page
    assert "Wrong answers of the tuned model (2 of 5)" in page
    broken = page[page.index("Broken by fine-tuning"):]
    assert "<td>q1</td><td>red</td><td>red</td><td>blue</td>" in broken  # input, reference, base, tuned
    assert "<h3>Base model</h3>" in page  # the base's confusion matrix beside


def test_baselines_section_has_every_column_the_costs_and_the_verdict():
    results = {"base": {"accuracy": 0.1}, "tuned": {"accuracy": 0.8},
               "evaluation": {"base": {"prompt_tokens_per_request": 90.0}, "tuned": {"prompt_tokens_per_request": 90.0}},
               "baselines": {"few_shot": {"label": "few-shot", "performance": {"accuracy": 0.2}, "shots": 5,
                                          "resources": {"prompt_tokens_per_request": 470.0, "seconds_per_request": 0.2}}},
               "verdict": {"worth_it": True, "message": "tuned beats the best prompting baseline (few-shot, 0.20) by +0.60"}}
    page = _baselines_section(results)
    assert "<th>base zero-shot</th><th>few-shot</th><th>tuned</th>" in page
    assert _cells(page, "accuracy") == ["0.1000", "0.2000", "0.8000"]
    assert "prompt tokens / request" in page and "470.0" in page and "class='better'>tuned beats" in page


def test_cross_validation_section_gives_mean_std_and_each_fold():
    results = {"cross_validation": {
        "k": 3, "folds": [{"fold": i} for i in (1, 2, 3)],
        "tuned": {"accuracy": {"mean": 0.7, "std": 0.2, "folds": [0.5, 0.7, 0.9]}},
        "base": {"accuracy": {"mean": 0.1, "std": 0.05, "folds": [0.1, 0.15, 0.05]}}}}
    page = _cross_validation_section(results)
    assert "3-fold cross-validation" in page and "fold-2/report.html" in page
    assert _cells(page, "accuracy") == ["0.1000 ± 0.0500", "0.7000 ± 0.2000", "0.5000", "0.7000", "0.9000"]
    assert _cross_validation_section({}) == ""
