"""Hyperparameter search (``tuneforge search``, ``tuneforge.search``): Optuna samplers and pruners over trials that
are ordinary run directories; the study in SQLite (PostgreSQL when TUNEFORGE_TEST_POSTGRES_URL names one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import FAST, read_events

SRC = str(Path(__file__).resolve().parents[1] / "src")
POSTGRES_URL = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL")
# Trials of a few steps; every second step evaluated, so a pruner has something to compare.
TRIAL = {**FAST, "epochs": 1, "batch_size": 4, "test_split": 0.2, "evaluation_strategy": "steps", "eval_steps": 2,
         "warmup_steps": 0, "evaluation_metrics": ["loss"]}


def search_file(tmp_path: Path, data: Path, model: Path, strategy: dict[str, Any], space: dict[str, Any] | None = None,
                name: str = "search.yaml", **fields: Any) -> Path:
    space = space or {"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                      "lora_r": {"type": "choice", "values": [4, 8]}}
    content = {"search_strategy": strategy, "search_space": space, "data": str(data), "model": str(model), **TRIAL, **fields}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def study_trials(search_dir: Path, name: str | None = None) -> list[Any]:
    import optuna

    storage = f"sqlite:///{search_dir / 'study.db'}"
    return optuna.load_study(study_name=name or search_dir.name, storage=storage).get_trials()


def cli(*args: str, timeout: float = 300, **popen: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tuneforge.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **popen)


# ---------------------------------------------------------------------------------------------- samplers

@pytest.fixture(scope="module")
def grid_search(tiny_model_dir: Path, session_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 4-trial grid search (2 rates x 2 ranks) through the CLI, no pruning."""
    from tuneforge.cli.main import main

    root = tmp_path_factory.mktemp("grid")
    space = {"learning_rate": {"type": "choice", "values": [1e-3, 2e-2]}, "lora_r": {"type": "int", "low": 4, "high": 8, "step": 4}}
    path = search_file(root, session_dataset, tiny_model_dir, {"type": "grid", "pruner": "none", "seed": 0}, space)
    assert main(["search", "--config", str(path), "--output", str(root / "s")]) == 0
    return root / "s"


def test_grid_search_runs_every_point_as_a_run_directory_and_writes_the_results(grid_search: Path) -> None:
    trials = study_trials(grid_search)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert {(t.params["learning_rate"], t.params["lora_r"]) for t in trials} == {(1e-3, 4), (1e-3, 8), (2e-2, 4), (2e-2, 8)}
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.parent == grid_search and (run_dir / "adapter").is_dir()
        results = json.loads((run_dir / "results.json").read_text())
        assert results["status"] == "succeeded" and results["tuned"] is None  # trials never see the test split
        assert results["train"]["learning_rate"] == trial.params["learning_rate"]
        history = results["train"]["validation_history"]
        assert trial.value == pytest.approx(next(r for r in history if r["step"] == results["train"]["final_weights_step"])["validation_loss"])
        assert sorted(trial.intermediate_values) == [r["step"] for r in history]  # every evaluation was reported
        assert not (run_dir / "checkpoints").exists()
    best = min(trials, key=lambda t: t.value)
    table = json.loads((grid_search / "trials.json").read_text())
    assert table["best"]["number"] == best.number and len(table["trials"]) == 4
    test = json.loads((grid_search / "best_test.json").read_text())
    assert test["trial"] == best.number and test["examples"] > 0 and "loss" in test["performance"]
    page = (grid_search / "search.html").read_text()
    for part in ("Optimisation history", "Parameter importances", "Trial curves", "<svg", "trial-0000/report.html"):
        assert part in page


def test_the_best_config_is_a_finetune_config(grid_search: Path, tmp_path: Path) -> None:
    from tuneforge.cli.main import main

    best = json.loads((grid_search / "trials.json").read_text())["best"]
    assert main(["finetune", "--config", str(grid_search / "best_config.yaml"), "--output", str(tmp_path / "again"),
                 "--json", "--no-evaluate-base", "--no-baselines"]) == 0
    results = json.loads((tmp_path / "again" / "results.json").read_text())
    assert results["status"] == "succeeded"
    assert results["train"]["learning_rate"] == best["params"]["learning_rate"]
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["lora_r"] == best["params"]["lora_r"]


def test_starting_a_finished_search_again_runs_nothing_and_more_trials_add_only_the_missing(
        grid_search: Path, tiny_model_dir: Path, session_dataset: Path, tmp_path: Path) -> None:
    from tuneforge.search import run_search

    space = {"learning_rate": {"type": "choice", "values": [1e-3, 2e-2]}, "lora_r": {"type": "int", "low": 4, "high": 8, "step": 4}}
    path = search_file(tmp_path, session_dataset, tiny_model_dir, {"type": "grid", "pruner": "none", "seed": 0}, space)
    result = run_search(path, output=grid_search)
    assert "already has its 4" in (result.message or "") and len(result.trials) == 4


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_random_and_tpe_searches_sample_inside_the_space(strategy: str, tiny_model_dir: Path, session_dataset: Path,
                                                         tmp_path: Path) -> None:
    from tuneforge.search import run_search

    path = search_file(tmp_path, session_dataset, tiny_model_dir, {"type": strategy, "num_trials": 4, "seed": 3, "pruner": "none"})
    result = run_search(path, output=tmp_path / "s")
    assert [row["state"] for row in result.trials] == ["COMPLETE"] * 4
    for row in result.trials:
        assert 1e-3 <= row["params"]["learning_rate"] <= 3e-2 and row["params"]["lora_r"] in (4, 8)
    assert len({row["params"]["learning_rate"] for row in result.trials}) == 4
    assert result.best["value"] == min(row["value"] for row in result.trials)
    assert result.best_config is not None and result.best_config.is_file()


# ---------------------------------------------------------------------------------------------- pruning

def test_the_median_pruner_stops_a_trial_with_a_useless_learning_rate_from_inside(tiny_model_dir: Path, session_dataset: Path,
                                                                                   tmp_path: Path) -> None:
    from tuneforge.search import run_search

    strategy = {"type": "random", "num_trials": 2, "seed": 0, "enqueue": [{"learning_rate": 3e-2}, {"learning_rate": 1e-7}],
                "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 1}}
    space = {"learning_rate": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True}}
    path = search_file(tmp_path, session_dataset, tiny_model_dir, strategy, space, epochs=2, eval_steps=1)
    result = run_search(path, output=tmp_path / "s")
    good, bad = result.trials
    assert good["state"] == "COMPLETE" and bad["state"] == "PRUNED" and bad["params"]["learning_rate"] == 1e-7
    events = read_events(Path(bad["run_dir"]))
    stopped = [e for e in events if e["type"] == "train.interrupted"]
    assert stopped and "pruned by the median pruner" in stopped[0]["reason"]
    planned = next(e for e in events if e["type"] == "train.started")["total_steps"]
    assert stopped[0]["step"] < planned  # stopped from inside, before the run's end
    assert json.loads((Path(bad["run_dir"]) / "results.json").read_text())["status"] == "interrupted"


def test_hyperband_pruner_and_an_answers_objective(tiny_model_dir: Path, session_dataset: Path, tmp_path: Path) -> None:
    """An evaluation metric as objective: maximized, scored on the validation split after training."""
    from tuneforge.search import run_search

    path = search_file(tmp_path, session_dataset, tiny_model_dir,
                       {"type": "random", "num_trials": 2, "seed": 1, "pruner": "hyperband", "objective": "accuracy"},
                       {"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}, max_new_tokens=2)
    result = run_search(path, output=tmp_path / "s")
    assert result.direction == "maximize" and result.trials[0]["state"] == "COMPLETE"
    results = json.loads((Path(result.trials[0]["run_dir"]) / "results.json").read_text())
    assert results["tuned"]["accuracy"] == result.trials[0]["value"]
    assert results["data"]["test"] == results["data"]["validation"]  # scored on the validation split, not the test split


# ---------------------------------------------------------------------------------------------- bad search files

BAD_SPACES = [
    ({"lora_rank": {"type": "int", "low": 4, "high": 8}}, {}, ["search_space.lora_rank: unknown field", "lora_r", "learning_rate"]),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 5.0}}, {}, ["high 5.0 is not accepted", "learning_rate accepts 0 < x <= 1.0"]),
    ({"batch_size": {"type": "choice", "values": [8, 0]}}, {}, ["value 0 is not accepted", "batch_size accepts 1 <= x <= 4096"]),
    ({"lr_scheduler": {"type": "choice", "values": ["cosine", "step"]}}, {}, ["'step'", "one of cosine, linear, constant"]),
    ({"learning_rate": {"type": "uniform", "low": 1e-5, "high": 1e-3}}, {}, ["not a parameter type", "float, int, choice"]),
    ({"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5}}, {}, ["low 0.001 is above high"]),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"type": "grid"}, ["grid search needs a finite set"]),
    ({"output": {"type": "choice", "values": ["a", "b"]}}, {}, ["a config field that is not searched"]),
    ({"lora_target_modules": {"type": "choice", "values": [["q_proj"], "all-linear"]}}, {}, ["each choice must be a number"]),
    ({"validation_split": {"type": "float", "low": 0.1, "high": 0.2}}, {}, ["a config field that is not searched"]),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"type": "bayes"}, ["not a strategy", "random, tpe, grid"]),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"objective": "speed"}, ["not an evaluation metric", "validation_loss"]),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"pruner": "patient"}, ["not a pruner", "median, hyperband, none"]),
]


@pytest.mark.parametrize("space, strategy, expected", BAD_SPACES, ids=[case[2][0][:30] for case in BAD_SPACES])
def test_a_bad_search_file_is_one_message_naming_the_valid_choices(space: dict, strategy: dict, expected: list[str],
                                                                    tmp_path: Path, session_dataset: Path, capsys) -> None:
    from tuneforge.cli.main import main

    path = search_file(tmp_path, session_dataset, tmp_path / "no-model-needed", strategy, space)
    assert main(["search", "--config", str(path), "--output", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: invalid configuration")
    for part in expected:
        assert part in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_search_needs_a_config_or_a_study_to_join(tmp_path: Path, capsys) -> None:
    from tuneforge.cli.main import main

    assert main(["search"]) == 1
    assert "--config search.yaml" in capsys.readouterr().err
    assert main(["search", "--join", "nope", "--output", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "no study at" in err and "--storage URL" in err and "Traceback" not in err
    assert main(["search", "--join", "nope", "--storage", f"sqlite:///{tmp_path / 'empty.db'}"]) == 1
    assert "no tuneforge search named 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- resume, workers

def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_a_stopped_search_continues_where_it_stopped(stop: int, tiny_model_dir: Path, session_dataset: Path,
                                                     tmp_path: Path) -> None:
    """SIGKILL (or Ctrl-C) during trial 1, after a checkpoint; starting the search again retries trial 1 from it."""
    path = search_file(tmp_path, session_dataset, tiny_model_dir, {"type": "random", "num_trials": 3, "seed": 5, "pruner": "none"},
                       epochs=6, saving_strategy="steps", save_steps=2)
    search_dir = tmp_path / "s"
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "search", "--config", str(path), "--output",
                                str(search_dir)], env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = search_dir / "trial-0001" / "events.jsonl"
    try:
        _wait_for(lambda: events.is_file() and '"checkpoint.saved"' in events.read_text(), 240, "trial 1's first checkpoint")
    finally:
        process.send_signal(stop)
        code = process.wait(timeout=120)
    if stop == signal.SIGKILL:
        assert [t.state.name for t in study_trials(search_dir)] == ["COMPLETE", "RUNNING"]
    else:  # the trial saved a checkpoint and was enqueued again before the process ended
        assert code == 75 and [t.state.name for t in study_trials(search_dir)] == ["COMPLETE", "FAIL", "WAITING"]

    result = cli("search", "--config", str(path), "--output", str(search_dir))
    assert result.returncode == 0, result.stderr
    trials = study_trials(search_dir)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == trials[1].params and retry.user_attrs["run_dir"] == str(search_dir / "trial-0001")
    resumed = [e for e in read_events(search_dir / "trial-0001") if e["type"] == "train.resumed"]
    assert resumed and resumed[0]["step"] >= 2  # continued from its checkpoint, not from step 0
    assert not (search_dir / f"trial-{retry.number:04d}").exists()


def _two_workers(tmp_path: Path, data: Path, model: Path, storage: str | None) -> tuple[Path, list[Any]]:
    """Create the study (no trial run), then two `--join` worker processes at once until 4 trials are finished."""
    from tuneforge.search import run_search

    path = search_file(tmp_path, data, model, {"type": "random", "num_trials": 4, "seed": 2, "pruner": "none"})
    search_dir = tmp_path / "s"
    name = f"shared-{os.getpid()}-{time.time_ns()}"
    run_search(path, output=search_dir, name=name, storage=storage, timeout=1e-9)  # makes the study; the timeout stops it at once
    storage = storage or f"sqlite:///{search_dir / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "search", "--join", name, "--storage", storage,
                                 "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    import optuna

    return search_dir, optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tiny_model_dir: Path, session_dataset: Path, tmp_path: Path) -> None:
    search_dir, trials = _two_workers(tmp_path, session_dataset, tiny_model_dir, None)
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5  # the global cap; a worker already inside a trial finishes it
    dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(dirs)) == len(dirs) and all(Path(d).parent == search_dir for d in dirs)
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both workers ran trials
    assert len({t.params["learning_rate"] for t in finished}) == len(finished)  # no worker replayed another's proposals


@pytest.mark.slow
@pytest.mark.skipif(not POSTGRES_URL, reason="TUNEFORGE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
def test_two_worker_processes_share_one_postgresql_study(tiny_model_dir: Path, session_dataset: Path, tmp_path: Path) -> None:
    _, trials = _two_workers(tmp_path, session_dataset, tiny_model_dir, POSTGRES_URL)
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(finished) >= 4 and len({t.user_attrs["pid"] for t in finished}) == 2


def test_storage_urls_use_psycopg_and_never_show_the_password() -> None:
    from tuneforge.search.study import shown_url, storage_url

    assert storage_url("postgresql://u:secret@db/optuna") == "postgresql+psycopg://u:secret@db/optuna"
    assert storage_url("sqlite:///x/study.db") == "sqlite:///x/study.db"
    assert "secret" not in shown_url("postgresql+psycopg://u:secret@db/optuna")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_another_machine_left_running_is_retried_when_its_heartbeat_stops(
        tiny_model_dir: Path, session_dataset: Path, tmp_path: Path) -> None:
    """Optuna's heartbeat: a RUNNING trial of another host whose heartbeat is older than the grace period
    (3 heartbeats) is failed by the next worker, and its parameters run again."""
    import optuna

    from tuneforge.search import run_search
    from tuneforge.search.study import open_storage

    path = search_file(tmp_path, session_dataset, tiny_model_dir, {"type": "random", "num_trials": 1, "seed": 0, "pruner": "none"})
    search_dir = tmp_path / "s"
    run_search(path, output=search_dir, timeout=1e-9, heartbeat_seconds=1)  # the study, no trial yet
    storage = open_storage(f"sqlite:///{search_dir / 'study.db'}", heartbeat_seconds=1)
    study = optuna.load_study(study_name="s", storage=storage)
    lost = study.ask()
    lost.suggest_float("learning_rate", 1e-3, 3e-2, log=True)
    lost.suggest_categorical("lora_r", [4, 8])
    lost.set_user_attr("host", "a-machine-that-died")
    lost.set_user_attr("pid", 1)
    storage.record_heartbeat(lost._trial_id)
    # older than the 3 s grace period by SQLite's clock, which Optuna reads with whole seconds: 3 s + 1 s + margin
    time.sleep(5.0)
    result = run_search(path, output=search_dir, heartbeat_seconds=1)
    assert [row["state"] for row in result.trials] == ["FAIL", "COMPLETE"]
    assert result.trials[1]["retry_of"] == 0 and result.trials[1]["params"] == result.trials[0]["params"]


def test_the_readme_search_file_is_a_valid_search(session_dataset: Path) -> None:
    """The YAML example of README.md's "Hyperparameter search" section, as it is written there."""
    from tuneforge.search.space import parse_search

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Hyperparameter search", 1)[1]
    example = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    spec = parse_search(example, {"data": str(session_dataset)})
    assert spec.strategy == "random" and spec.trials_wanted == 20 and spec.direction == "minimize"
    assert spec.space["learning_rate"].log and spec.space["batch_size"].values == (8, 16, 32)
