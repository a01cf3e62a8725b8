"""The job store and the manager without training: files and the data doctor, job creation, states, pagination,
and atomic claiming — on SQLite, and on PostgreSQL when ``TUNEFORGE_TEST_POSTGRES_URL`` names one."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from helpers import make_rows

POSTGRES_URL = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not POSTGRES_URL, reason="TUNEFORGE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)"))]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    from tuneforge.jobs.store import make_engine, metadata

    engine = make_engine(POSTGRES_URL)
    metadata.drop_all(engine)  # every test starts from an empty queue
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def manager(database_url: str, tmp_path: Path, tiny_model_dir: Path):
    from tuneforge.jobs import FineTuningManager

    made = FineTuningManager(database_url=database_url, home=tmp_path / "home")
    yield made
    made.store.dispose()


@pytest.fixture
def good_file(manager):
    return manager.upload_file(_jsonl(make_rows(20)), "colors.jsonl")


def test_upload_keeps_bytes_and_never_uses_the_name_as_a_path(manager):
    data = _jsonl(make_rows(12))
    stored = manager.upload_file(data, "../../etc/passwd")
    assert stored.filename == "passwd" and stored.status == "processed" and stored.findings == []
    assert stored.path.parent == manager.home / "files" and stored.path.name == f"{stored.id}.jsonl"
    assert manager.file_content(stored.id) == data
    wire = manager.get_file(stored.id).to_openai()
    assert wire["object"] == "file" and wire["bytes"] == len(data) and wire["purpose"] == "fine-tune"
    assert manager.delete_file(stored.id) == {"id": stored.id, "object": "file", "deleted": True}
    assert not stored.path.exists()


@pytest.mark.parametrize("bad_id", ["../jobs.db", "file-../../x", "file-" + "0" * 24 + "/x", "", "file-ABC"])
def test_malformed_file_ids_are_refused_before_any_path(manager, bad_id):
    from tuneforge.jobs import NotFound

    with pytest.raises(NotFound) as caught:
        manager.get_file(bad_id)
    assert caught.value.http_status == 404 and caught.value.param == "file_id"


def test_a_bad_line_is_a_finding_with_its_line_and_job_creation_is_refused(manager):
    from tuneforge.jobs import InvalidRequest

    rows = [json.dumps(row) for row in make_rows(12)]
    rows[4] = '{"input": "broken'
    stored = manager.upload_file(("\n".join(rows) + "\n").encode(), "broken.jsonl")
    assert stored.status == "error"
    assert [(f["line"], f["code"]) for f in stored.errors] == [(5, "invalid_json")]
    assert "line 5" in stored.to_openai()["status_details"]
    with pytest.raises(InvalidRequest) as caught:
        manager.create_job(stored.id)
    assert caught.value.param == "training_file" and "broken.jsonl:5" in str(caught.value)
    assert manager.list_jobs().data == []


def test_too_few_training_examples_are_refused_before_queueing(manager):
    from tuneforge.jobs import InvalidRequest

    small = manager.upload_file(_jsonl(make_rows(4)), "small.jsonl")
    assert small.status == "processed"  # fine as a validation file
    with pytest.raises(InvalidRequest) as caught:
        manager.create_job(small.id)
    assert caught.value.param == "training_file" and "at least 10" in str(caught.value)


def test_upload_size_limit(manager):
    from tuneforge.jobs import PayloadTooLarge

    manager.files.max_bytes = 100
    with pytest.raises(PayloadTooLarge) as caught:
        manager.upload_file(_jsonl(make_rows(12)), "big.jsonl")
    assert caught.value.http_status == 413
    assert list((manager.home / "files").iterdir()) == []


def test_create_job_maps_hyperparameters_onto_the_config(manager, good_file, tiny_model_dir):
    from tuneforge.config import DEFAULT_LEARNING_RATE

    job = manager.create_job(good_file.id, model=str(tiny_model_dir), suffix="colors", seed=7,
                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                 "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}}},
                             extra={"lora_r": 4, "max_length": 64})
    assert job.status == "queued" and job.id.startswith("ftjob-")
    assert job.config["epochs"] == 2 and job.config["batch_size"] == 4 and job.config["lora_r"] == 4
    assert job.config["learning_rate"] == pytest.approx(0.5 * DEFAULT_LEARNING_RATE["lora"])
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    wire = job.to_openai()
    assert wire["seed"] == 7 and wire["error"] is None and wire["fine_tuned_model"] is None
    assert manager.fine_tuned_name(job) == f"ft:{tiny_model_dir.name}:colors:{job.id}"
    messages = [e["message"] for e in manager.list_events(job.id).data]
    assert messages[0] == "Files validated, moving job to queued state" and messages[-1].startswith("Created fine-tuning job")


@pytest.mark.parametrize("fields, param", [
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 2.5}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"warmup": 3}}, "hyperparameters.warmup"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"method": {"type": "dpo"}}, "training_file"),  # a dpo job needs preference pairs, these are chat rows
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}}, "method.supervised.hyperparameters.beta"),
    ({"suffix": "a:b"}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"extra": {"lora_r": 0}}, "extra.lora_r"),
    ({"extra": {"trust_remote_code": True}}, "extra.trust_remote_code"),
    ({"extra": {"output": "/tmp/x"}}, "extra.output"),
    ({"model": "no-such-model-anywhere"}, "model"),
    ({"validation_file": "file-" + "0" * 24}, "validation_file"),
])
def test_invalid_job_requests_name_the_field(manager, good_file, tiny_model_dir, fields, param):
    from tuneforge.jobs import InvalidRequest

    request = {"model": str(tiny_model_dir), **fields}
    with pytest.raises(InvalidRequest) as caught:
        manager.create_job(good_file.id, **request)
    assert caught.value.param == param and caught.value.http_status == 400


def test_state_rules(manager, good_file, tiny_model_dir):
    from tuneforge.jobs import Conflict, NotFound

    job = manager.create_job(good_file.id, model=str(tiny_model_dir))
    with pytest.raises(Conflict):
        manager.resume(job.id)  # not paused
    assert manager.pause(job.id).to_openai()["status"] == "paused"
    assert manager.resume(job.id).status == "queued"
    cancelled = manager.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    for action in (manager.cancel, manager.pause, manager.resume):
        with pytest.raises(Conflict) as caught:
            action(job.id)
        assert caught.value.http_status == 400  # never 409: the SDK would retry
    with pytest.raises(NotFound) as missing:
        manager.get_job("ftjob-" + "0" * 24)
    assert missing.value.param == "fine_tuning_job_id"


def test_list_pagination_newest_first(manager, good_file, tiny_model_dir):
    from tuneforge.jobs import NotFound

    made = [manager.create_job(good_file.id, model=str(tiny_model_dir)).id for _ in range(5)]
    first = manager.list_jobs(limit=2)
    assert [j.id for j in first.data] == made[::-1][:2] and first.has_more
    seen = [j.id for j in first.data]
    page = first
    while page.has_more:
        page = manager.list_jobs(after=page.data[-1].id, limit=2)
        seen += [j.id for j in page.data]
    assert seen == made[::-1] and page.has_more is False
    assert manager.list_jobs(limit=2).to_openai()["object"] == "list"
    with pytest.raises(NotFound):
        manager.list_jobs(after="ftjob-" + "f" * 24)


def test_events_pagination(manager, good_file, tiny_model_dir):
    job = manager.create_job(good_file.id, model=str(tiny_model_dir))
    for step in range(1, 6):
        manager.add_event(job.id, f"Step {step}/5", type_="metrics", data={"step": step})
    everything = [e["id"] for e in manager.list_events(job.id, limit=100).data]
    pages, after = [], None
    while True:
        page = manager.list_events(job.id, after=after, limit=3)
        pages += [e["id"] for e in page.data]
        if not page.has_more:
            break
        after = page.data[-1]["id"]
    assert pages == everything and len(everything) == 8
    assert manager.list_events(job.id, limit=1).data[0]["data"] == {"step": 5}


def test_claim_is_atomic_between_two_claimers(manager, good_file, tiny_model_dir, database_url):
    """Two stores (as two workers on two machines) race for one queued job: exactly one gets it."""
    from tuneforge.jobs.store import JobStore

    job = manager.create_job(good_file.id, model=str(tiny_model_dir))
    for attempt in range(5):
        stores = [JobStore(database_url) for _ in range(2)]
        barrier = threading.Barrier(2)
        won: list[str | None] = [None, None]

        def claim(index: int) -> None:
            barrier.wait()
            row = stores[index].claim_next(f"worker-{index}", "host")
            won[index] = row["id"] if row else None

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert won.count(job.id) == 1 and won.count(None) == 1
        holder = manager.store.get_job(job.id)
        assert holder["status"] == "running" and holder["worker_id"] == f"worker-{won.index(job.id)}"
        manager.store.update_job(job.id, {"status": "queued", "worker_id": None})  # put it back for the next round
        for store in stores:
            store.dispose()


def test_claim_order_is_fifo(manager, good_file, tiny_model_dir):
    made = [manager.create_job(good_file.id, model=str(tiny_model_dir)).id for _ in range(3)]
    claimed = [manager.store.claim_next("w", "h")["id"] for _ in range(3)]
    assert claimed == made and manager.store.claim_next("w", "h") is None


def test_models_list_and_resolve(manager, good_file, tiny_model_dir):
    from tuneforge.config import DEFAULT_MODEL
    from tuneforge.jobs import InvalidRequest, NotFound

    manager.create_job(good_file.id, model=str(tiny_model_dir))
    listed = {m["id"] for m in manager.list_models()}
    assert {DEFAULT_MODEL, str(tiny_model_dir)} <= listed
    assert manager.resolve_model(str(tiny_model_dir)) == (str(tiny_model_dir), None)
    with pytest.raises(NotFound) as caught:
        manager.resolve_model("ft:nothing:x:ftjob-" + "0" * 24)
    assert caught.value.code == "model_not_found"
    with pytest.raises(InvalidRequest):
        manager.delete_model(str(tiny_model_dir))


def test_a_file_a_queued_job_needs_cannot_be_deleted(manager, good_file, tiny_model_dir):
    from tuneforge.jobs import Conflict

    job = manager.create_job(good_file.id, model=str(tiny_model_dir))
    with pytest.raises(Conflict) as caught:
        manager.delete_file(good_file.id)
    assert job.id in str(caught.value)
    manager.cancel(job.id)
    assert manager.delete_file(good_file.id)["deleted"] is True


def test_the_worker_claims_no_more_than_its_concurrency(manager, good_file, tiny_model_dir):
    from tuneforge.jobs import Worker

    made = [manager.create_job(good_file.id, model=str(tiny_model_dir)).id for _ in range(3)]
    worker = Worker(manager, concurrency=2)
    started: list[str] = []
    worker._spawn = lambda job_id: (started.append(job_id), worker.children.__setitem__(job_id, object()))
    worker.claim()
    worker.claim()
    assert started == made[:2]  # FIFO, and the third waits for a free slot
    assert manager.get_job(made[2]).status == "queued"
    worker.children.clear()


def test_start_training_queues_a_config(manager, tiny_model_dir, tmp_path):
    from tuneforge.config import FineTuningConfig, make_config

    data = tmp_path / "colors.jsonl"
    data.write_bytes(_jsonl(make_rows(12)))
    job = manager.start_training(FineTuningConfig(data=str(data), model=str(tiny_model_dir), epochs=2, method="full"))
    assert job.status == "queued" and job.training_file == str(data) and job.run_dir == manager.runs_dir / job.id
    assert job.config["model"] == str(tiny_model_dir) and "lora_r" not in job.config  # a method's options stay its own
    assert make_config({**job.config, "resume": False}).method == "full"
