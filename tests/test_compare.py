"""`tuneforge compare`: the significance tests against hand-computed cases, the table, regressions, the outputs."""

from __future__ import annotations

import json

import pytest

from tuneforge.evaluate.compare import (compare_sources, example_correct, mcnemar_exact, paired_bootstrap, regressions,
                                        resolve_contender, significance, write_comparison)


def _answers(only_a: int, only_b: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


def test_mcnemar_exact_matches_the_hand_computed_binomial():
    # 1 vs 6 discordant pairs: P[Bin(7, 1/2) <= 1] = (1 + 7) / 128, two-sided 16 / 128 = 0.125.
    result = mcnemar_exact(*_answers(only_a=1, only_b=6, both=10, neither=3))
    assert (result["only_a"], result["only_b"]) == (1, 6)
    assert result["p_value"] == pytest.approx(0.125)
    assert mcnemar_exact(*_answers(0, 8))["p_value"] == pytest.approx(2 / 256)  # 0 vs 8: 2 · (1/2)^8
    assert mcnemar_exact(*_answers(3, 3, both=4))["p_value"] == 1.0  # symmetric: capped at 1
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0  # no discordant pair at all
    scipy = pytest.importorskip("scipy.stats")
    assert result["p_value"] == pytest.approx(scipy.binomtest(1, 7, 0.5).pvalue)


def test_paired_bootstrap_interval():
    assert paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0]) == (0.0, 0.0)  # identical answers: no difference at all
    assert paired_bootstrap([0, 0, 0], [1, 1, 1]) == (1.0, 1.0)
    low, high = paired_bootstrap(*[list(map(float, x)) for x in _answers(2, 30, both=40, neither=28)])
    assert 0 < low < 0.28 < high  # the observed difference (30 - 2) / 100 lies inside, and it excludes 0


def test_significance_rows_per_pair_and_example_correctness():
    predictions = [{"reference": "red", "prediction": "It is red."}, {"reference": "blue", "prediction": "green"}]
    assert example_correct(predictions, "classification", ["red", "blue", "green"]) == [True, False]
    assert example_correct(predictions, "generation") == [False, False]
    correct = {"x": [True, False, True], "y": [True, True, True], "z": [False, False, False]}
    scores = {name: {"accuracy": sum(v) / 3} for name, v in correct.items()}
    rows = significance(["x", "y", "z"], correct, "accuracy", scores)
    assert [(r["a"], r["b"]) for r in rows] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert rows[0]["difference"] == pytest.approx(1 / 3) and (rows[0]["only_a"], rows[0]["only_b"]) == (0, 1)
    assert rows[2]["p_value"] == pytest.approx(0.25) and not rows[2]["significant"]  # 3 vs 0: 2/8


def test_regressions_respect_the_tolerance_and_the_direction():
    scores = {"main": {"accuracy": 0.80, "loss": 1.0}, "new": {"accuracy": 0.77, "loss": 1.2}, "ok": {"accuracy": 0.79, "loss": 0.9}}
    found = regressions(scores, "main", "accuracy", 0.02)
    assert [r["model"] for r in found] == ["new"] and found[0]["worse_by"] == pytest.approx(0.03)
    assert [r["model"] for r in regressions(scores, "main", "loss", 0.1)] == ["new"]  # lower is better
    assert regressions(scores, "main", "accuracy", 0.05) == []


def test_resolve_contender_kinds(lora_run, tiny_model_dir):
    run = resolve_contender(str(lora_run.run_dir))
    assert run.kind == "run" and run.run_dir == lora_run.run_dir
    assert resolve_contender(str(tiny_model_dir)).kind == "model"
    assert resolve_contender("smollm2-135m-instruct").kind == "model"
    checkpoint = next((lora_run.run_dir / "checkpoints").iterdir())
    found = resolve_contender(str(checkpoint))
    assert found.kind == "checkpoint" and found.run_dir == lora_run.run_dir and found.weights == checkpoint / "weights"


def test_compare_a_run_with_its_base_on_the_runs_test_split(lora_run, tiny_model_dir, tmp_path):
    comparison = compare_sources([str(lora_run.run_dir), str(tiny_model_dir)], max_new_tokens=4, baselines=False)
    run, base = lora_run.run_dir.name, tiny_model_dir.name
    assert comparison.data == str(lora_run.run_dir / "data" / "test.jsonl")
    accuracy = next(row for row in comparison.table if row["metric"] == "accuracy")
    assert accuracy[run] == pytest.approx(lora_run.tuned.performance["accuracy"])
    assert accuracy[base] == pytest.approx(lora_run.base.performance["accuracy"])
    (pair,) = comparison.pairs
    assert pair["test"] == "mcnemar_exact" and 0 <= pair["p_value"] <= 1
    assert len(comparison.examples) == lora_run.data["test"]
    paths = write_comparison(comparison, tmp_path / "cmp")
    rows = [json.loads(line) for line in paths["examples"].read_text().splitlines()]
    assert len(rows) == len(comparison.examples) and set(rows[0]["answers"]) == {run, base}
    page = paths["html"].read_text()
    assert "McNemar" in page and "training loss" in page and "Where they disagree" in page
    assert json.loads(paths["json"].read_text())["pairs"][0]["p_value"] == pair["p_value"]


def test_cli_compare_fails_on_a_regression(lora_run, tiny_model_dir, tmp_path, capsys):
    from tuneforge.cli.main import main

    base = str(tiny_model_dir)
    args = ["compare", str(lora_run.run_dir), base, "--baseline", base, "--max-new-tokens", "4", "--json"]
    worse = lora_run.tuned.performance["accuracy"] < lora_run.base.performance["accuracy"]
    code = main(args + ["--fail-if-worse", "0", "--out", str(tmp_path / "a")])
    shown = json.loads(capsys.readouterr().out)
    assert code == (1 if worse else 0) and bool(shown["regressions"]) == worse
    assert main(args[:-1] + ["--fail-if-worse", "1", "--out", str(tmp_path / "b")]) == 0  # nothing is worse by more than 1
    assert "paired tests on accuracy" in capsys.readouterr().out and (tmp_path / "b" / "compare.html").is_file()
    assert main(["compare", base, "--fail-if-worse", "0.1", "--data", str(lora_run.run_dir / "data" / "test.jsonl")]) == 1
    assert "--baseline" in capsys.readouterr().err


def test_ft_model_ids_compare_through_the_manager_with_the_same_code(lora_run, tiny_model_dir, tmp_path, capsys):
    import shutil
    import time

    from tuneforge.cli.main import main
    from tuneforge.jobs import FineTuningManager

    home = tmp_path / "home"
    manager = FineTuningManager(home=home)
    upload = manager.upload_file((lora_run.run_dir / "data" / "train.jsonl").read_bytes(), "train.jsonl")
    job = manager.create_job(upload.id, model=str(tiny_model_dir))
    shutil.copytree(lora_run.run_dir, job.run_dir, dirs_exist_ok=True)  # as if the job had trained this run
    name = manager.fine_tuned_name(job)
    manager.store.upsert_model({"id": name, "kind": "fine-tuned", "created": time.time(), "owned_by": "org-local",
                                "job_id": job.id, "base": str(tiny_model_dir)})
    test = lora_run.run_dir / "data" / "test.jsonl"
    found = manager.compare_models([name, str(tiny_model_dir)], test, max_new_tokens=4, baselines=False)
    direct = compare_sources([str(lora_run.run_dir), str(tiny_model_dir)], test, max_new_tokens=4, baselines=False)
    # FineTuningManager.compare_models and compare_sources are one code path: the same figures and tests.
    assert found["evaluations"][name] == pytest.approx(direct.performances[lora_run.run_dir.name])
    assert found["pairs"][0]["p_value"] == direct.pairs[0]["p_value"] and found["table"]
    fine_tuned = found["comparison"].contenders[0]
    assert fine_tuned.kind == "fine-tuned" and fine_tuned.run_dir == job.run_dir  # its training curves are drawn
    manager.store.dispose()

    out = tmp_path / "cmp"
    args = ["compare", name, str(tiny_model_dir), "--data", str(test), "--home", str(home), "--max-new-tokens", "4",
            "--no-baselines"]
    assert main(args + ["--json", "--out", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [m["kind"] for m in shown["models"]] == ["fine-tuned", "model"] and "training loss" in (out / "compare.html").read_text()
    assert main(["compare", "ft:nothing:x:ftjob-" + "0" * 24, str(tiny_model_dir), "--data", str(test), "--home", str(home)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_compare_puts_the_prompting_baselines_beside_the_models_with_a_verdict(lora_run, tiny_model_dir, tmp_path):
    run, base = lora_run.run_dir.name, tiny_model_dir.name
    comparison = compare_sources([str(lora_run.run_dir), str(tiny_model_dir)], max_new_tokens=4, shots=2,
                                 baseline=str(tiny_model_dir), fail_if_worse=1.0)
    few, retrieval = f"few-shot ({base})", f"retrieval few-shot ({base})"
    assert [c.name for c in comparison.contenders] == [run, base, few, retrieval]
    assert comparison.baselines[few]["shots"] == 2 and comparison.baselines[retrieval]["retriever"] == "bm25"
    accuracy = next(row for row in comparison.table if row["metric"] == "accuracy")
    assert {run, base, few, retrieval} <= set(accuracy)
    assert len(comparison.pairs) == 6  # every pair of the four, baselines included
    verdict = comparison.verdicts[run]
    assert verdict["metric"] == "accuracy" and verdict["best_baseline"] in {"base", few, retrieval}
    assert all(row["model"] not in (few, retrieval) for row in comparison.regressions)  # baselines are not gated
    page = write_comparison(comparison, tmp_path / "cmp")["html"].read_text()
    assert "retrieval few-shot" in page and verdict["message"].split(" (")[0] in page


def test_compare_scores_a_plugin_metric_named_by_metric(lora_run, tiny_model_dir, tmp_path, capsys):
    import sys
    import types

    from tuneforge.cli.main import main
    from tuneforge.core.registries import METRICS

    module = types.ModuleType("tf_compare_metric")
    module.always_half = lambda predictions, references: 0.5
    module.always_half.__name__ = "always_half"
    sys.modules[module.__name__] = module
    try:
        base = str(tiny_model_dir)
        args = ["compare", str(lora_run.run_dir), base, "--metric", "tf_compare_metric:always_half", "--no-baselines",
                "--evaluation-metrics", "exact_match", "--baseline", base, "--fail-if-worse", "0", "--max-new-tokens", "2",
                "--json", "--out", str(tmp_path / "c")]
        assert main(args) == 0  # equal on the plug-in's score: no regression
        shown = json.loads(capsys.readouterr().out)
        assert shown["metric"] == "always_half" and shown["pairs"][0]["difference"] == 0.0
        assert {row["metric"] for row in shown["table"]} == {"always_half", "exact_match"}
    finally:
        del sys.modules[module.__name__]
        METRICS.unregister("tf_compare_metric:always_half")
