"""The unmodified ``openai`` SDK drives the whole workflow against a live server (HTTP + a worker) on the tiny model.

files.create -> fine_tuning.jobs.create -> list_events until succeeded -> retrieve gives
fine_tuned_model -> chat.completions.create(model=that), plain and streamed -> models.list has it;
cancel; a bad upload makes job creation fail in OpenAI's error shape; path traversal in every path
parameter is refused without reading a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from helpers import make_rows  # noqa: E402
from server_support import API_KEY, live_server_with_worker  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FAST_JOB = {"max_length": 128, "estimate_steps": 0, "max_new_tokens": 4, "batch_size": 8, "validation_split": 0.0}
JOB_TIMEOUT = 240


def chat_rows(n: int = 24) -> bytes:
    rows = [{"messages": [{"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["output"]}]}
            for r in make_rows(n)]
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    with live_server_with_worker(tiny_model_dir, tmp_path_factory.mktemp("sdk-home")) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("colors.jsonl", chat_rows(), "application/jsonl"), purpose="fine-tune")


@pytest.fixture(scope="module")
def finished_job(client, training_file):
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file.id, suffix="colors", seed=3,
                                         hyperparameters={"n_epochs": 2}, extra_body={"tuneforge": FAST_JOB})
    assert job.status in ("validating_files", "queued", "running") and job.fine_tuned_model is None
    deadline, seen = time.monotonic() + JOB_TIMEOUT, []
    while time.monotonic() < deadline:
        seen = list(client.fine_tuning.jobs.list_events(job.id, limit=5))  # auto-paginates through every event
        status = client.fine_tuning.jobs.retrieve(job.id).status
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "succeeded", (final.error, [e.message for e in seen])
    return final, seen


def test_upload_is_checked_and_readable(client, training_file) -> None:
    assert training_file.object == "file" and training_file.purpose == "fine-tune"
    assert training_file.status == "processed" and training_file.filename == "colors.jsonl"
    assert client.files.retrieve(training_file.id).bytes == len(chat_rows())
    assert client.files.content(training_file.id).content == chat_rows()
    assert training_file.id in {f.id for f in client.files.list(limit=1)}  # cursor pages followed by the SDK


def test_sdk_workflow_fine_tunes_then_chats_with_the_result(client, finished_job) -> None:
    job, events = finished_job
    model = job.fine_tuned_model
    assert model.startswith("ft:tiny-llama:colors:") and model.endswith(job.id)
    assert job.finished_at and job.trained_tokens and job.seed == 3
    assert all(e.object == "fine_tuning.job.event" for e in events)
    assert any("completed" in e.message.lower() or "succeeded" in e.message.lower() for e in events), [e.message for e in events]

    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "color of sky?"}],
                                           max_tokens=4, temperature=0)
    assert reply.model == model and reply.choices[0].message.role == "assistant" and reply.usage.total_tokens > 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "color of sky?"}],
                                            max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content

    ids = {m.id for m in client.models.list()}
    assert model in ids and "tiny-llama" in ids
    assert client.models.retrieve(model).id == model
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=2)]


def test_checkpoints_are_models_too(client, finished_job) -> None:
    job, _ = finished_job
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    if not checkpoints:
        pytest.fail("a 2-epoch job keeps the checkpoint of its first epoch")
    name = checkpoints[0].fine_tuned_model_checkpoint
    assert name.startswith(job.fine_tuned_model + ":ckpt-step-")
    reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_cancel_then_cancel_again_is_400(client, training_file) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file.id,
                                         extra_body={"tuneforge": FAST_JOB})
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)  # 400, never 409: the SDK would retry it


def test_upload_with_a_bad_line_fails_job_creation_in_openai_shape(client) -> None:
    lines = chat_rows(12).decode().splitlines()
    lines[4] = '{"messages": [{"role": "user", "content": "no answer"'  # not JSON: line 5
    bad = client.files.create(file=("bad.jsonl", ("\n".join(lines) + "\n").encode()), purpose="fine-tune")
    assert bad.status == "error"
    findings = bad.model_extra["findings"]
    assert any(f["severity"] == "error" and f["line"] == 5 for f in findings), findings
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=bad.id)
    assert caught.value.param == "training_file" and caught.value.type == "invalid_request_error"
    assert "5" in caught.value.message
    assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_job_for_a_model_not_served_is_400(client, training_file) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="/etc", training_file=training_file.id)
    assert caught.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="tiny-llama", training_file="file-doesnotexist")


TRAVERSALS = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "file-..", "..", "file-abc%00", "%5c..%5cjobs.db",
              "file-0123456789abcdef01234567%2F..%2F..%2Fjobs.db"]


@pytest.mark.parametrize("payload", TRAVERSALS)
def test_path_traversal_in_every_path_parameter_is_refused(server, payload: str) -> None:
    url = server[0]
    for method, path in [("GET", "/files/{}"), ("DELETE", "/files/{}"), ("GET", "/files/{}/content"),
                         ("GET", "/fine_tuning/jobs/{}"), ("POST", "/fine_tuning/jobs/{}/cancel"),
                         ("POST", "/fine_tuning/jobs/{}/pause"), ("POST", "/fine_tuning/jobs/{}/resume"),
                         ("GET", "/fine_tuning/jobs/{}/events"), ("GET", "/fine_tuning/jobs/{}/checkpoints"),
                         ("GET", "/models/{}"), ("DELETE", "/models/{}")]:
        response = httpx.request(method, url + path.format(payload), headers=AUTH)
        assert response.status_code in (400, 404), (method, path, payload, response.status_code, response.text[:200])
        assert "root:" not in response.text and "SQLite" not in response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_upload_file_name_is_never_a_path(client, server) -> None:
    uploaded = client.files.create(file=("../../../../tmp/evil.jsonl", chat_rows(10)), purpose="fine-tune")
    assert uploaded.filename == "evil.jsonl"
    stored = server[1].get_file(uploaded.id)
    assert stored.path.parent == server[1].files.directory and stored.path.name.startswith(uploaded.id)
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_openai_strict_types_accept_the_objects(server, training_file, finished_job) -> None:
    strict = openai.OpenAI(base_url=server[0], api_key=API_KEY, max_retries=0, _strict_response_validation=True)
    job, _ = finished_job
    assert strict.files.retrieve(training_file.id).id == training_file.id
    assert strict.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    assert list(strict.fine_tuning.jobs.list_events(job.id, limit=3))
    assert any(m.id == job.fine_tuned_model for m in strict.models.list())




def test_tuneforge_serve_command_serves_and_stops_on_sigint(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real command: the key from the environment, HTTP and a worker in one process, Ctrl-C ends it cleanly."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TUNEFORGE_API_KEY": API_KEY, "TUNEFORGE_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "serve", "--port", str(port),
                                "--model", f"tiny={tiny_model_dir}"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=10)
        deadline = time.monotonic() + 90
        while True:
            try:
                ids = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() is not None else "timeout"
                time.sleep(0.3)
        assert ids[0] == "tiny"
        assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2).usage
        assert (tmp_path / "jobs.db").exists()  # the job store (and its worker) came up beside HTTP
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode in (0, 130), output
    assert "Traceback" not in output, output
    assert f"http://127.0.0.1:{port}/v1" in output


@pytest.mark.slow
def test_sdk_job_whose_process_is_sigkilled_resumes_by_itself_to_the_uninterrupted_adapter(client, server, training_file) -> None:
    """Through the SDK: a job's training process is SIGKILLed mid-training; the job continues from its last
    checkpoint by itself and ends with exactly the adapter of the same job run without interruption."""
    import os
    import signal

    from safetensors.torch import load_file

    _, manager = server
    settings = {**FAST_JOB, "saving_strategy": "steps", "save_steps": 4}

    def create():
        return client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file.id, seed=5,
                                              hyperparameters={"n_epochs": 8}, extra_body={"tuneforge": settings})

    def wait(job_id: str, done=lambda job: job.status in ("succeeded", "failed", "cancelled")):
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            job = client.fine_tuning.jobs.retrieve(job_id)
            if done(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not get there in {JOB_TIMEOUT} s")

    reference = wait(create().id)
    assert reference.status == "succeeded", reference.error
    job = create()
    deadline = time.monotonic() + JOB_TIMEOUT
    while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    os.kill(manager.store.get_job(job.id)["pid"], signal.SIGKILL)
    final = wait(job.id)
    assert final.status == "succeeded", final.error
    assert any("SIGKILL" in event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100))
    expected = load_file(str(manager.get_job(reference.id).run_dir / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(manager.get_job(job.id).run_dir / "adapter" / "adapter_model.safetensors"))
    assert expected.keys() == got.keys() and all((expected[key] == got[key]).all() for key in expected)
