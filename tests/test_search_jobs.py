"""A hyperparameter search submitted as a job (``FineTuningManager.start_search``, ``tuneforge search --submit``)
and run by a ``Worker`` in its own process, each trial an event of the job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from helpers import FAST

SEARCH = {"search_strategy": {"type": "random", "num_trials": 2, "seed": 0, "pruner": "none"},
          "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
          **FAST, "epochs": 1, "test_split": 0.2, "evaluation_metrics": ["loss"]}


@pytest.fixture
def manager(tmp_path: Path):
    from tuneforge.jobs import FineTuningManager

    made = FineTuningManager(home=tmp_path / "home")
    yield made
    made.store.dispose()


@pytest.mark.slow
def test_a_search_job_runs_its_trials_and_records_each(manager, tiny_model_dir: Path, session_dataset: Path) -> None:
    from tuneforge.jobs import Worker

    job = manager.start_search({**SEARCH, "data": str(session_dataset), "model": str(tiny_model_dir)})
    assert job.status == "queued" and job.method["type"] == "search" and job.method["search"]["num_trials"] == 2
    worker = Worker(manager, poll_seconds=0.1, stale_seconds=5)
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while not manager.get_job(job.id).status.is_terminal or job.id in worker.children:
            assert time.monotonic() < deadline, "the search job did not finish"
            time.sleep(0.2)
    finally:
        worker.stop()
    done = manager.get_job(job.id)
    assert done.status == "succeeded", done.error
    messages = [e["message"] for e in manager.list_events(job.id, limit=100).data]
    assert messages[0] == "The search has successfully completed"
    assert sum(m.startswith("Trial ") and " finished: " in m for m in messages) == 2
    assert any(m.startswith("Best trial ") for m in messages)
    trials = json.loads((done.run_dir / "trials.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(Path(t["run_dir"]).parent == done.run_dir for t in trials)
    assert (done.run_dir / "best_config.yaml").is_file() and done.to_openai()["status"] == "succeeded"


def test_search_submit_queues_a_job_through_the_cli(tmp_path: Path, tiny_model_dir: Path, session_dataset: Path, capsys) -> None:
    from tuneforge.cli.main import main
    from tuneforge.jobs import FineTuningManager

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SEARCH, "data": str(session_dataset), "model": str(tiny_model_dir)}))
    assert main(["search", "--config", str(path), "--submit", "--home", str(tmp_path / "home")]) == 0
    job_id = capsys.readouterr().out.split()[0]
    manager = FineTuningManager(home=tmp_path / "home")
    try:
        assert manager.get_job(job_id).method["type"] == "search"
    finally:
        manager.store.dispose()


def test_a_bad_search_is_refused_when_submitted(manager, session_dataset: Path) -> None:
    from tuneforge.jobs import InvalidRequest

    with pytest.raises(InvalidRequest, match="searchable fields"):
        manager.start_search({**SEARCH, "data": str(session_dataset), "search_space": {"lora_rank": {"type": "int", "low": 1, "high": 2}}})
