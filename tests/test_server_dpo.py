"""OpenAI's fine-tuning job ``method`` maps onto tuneforge objectives, through the unmodified openai SDK:
``{"type": "supervised"}`` trains sft, ``{"type": "dpo", "dpo": {"hyperparameters": {"beta": ...}}}`` trains
dpo on a file in OpenAI's DPO format; a wrong file, beta or type is a 400 naming the parameter."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from helpers import make_rows, read_events  # noqa: E402
from server_support import API_KEY, live_server_with_worker  # noqa: E402

FAST_JOB = {"max_length": 64, "estimate_steps": 0, "max_new_tokens": 4, "batch_size": 8, "validation_split": 0.0,
            "baselines": False, "forgetting_check": False, "precision": "fp32"}


def _jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


def dpo_rows(n: int = 16) -> bytes:
    return _jsonl([{"input": {"messages": [{"role": "user", "content": row["input"]}], "tools": []},
                    "preferred_output": [{"role": "assistant", "content": row["output"]}],
                    "non_preferred_output": [{"role": "assistant", "content": "no idea"}]} for row in make_rows(n)])


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    with live_server_with_worker(tiny_model_dir, tmp_path_factory.mktemp("dpo-home")) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def files(client):
    chat = _jsonl([{"messages": [{"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["output"]}]}
                   for r in make_rows(16)])
    return (client.files.create(file=("pairs.jsonl", dpo_rows(), "application/jsonl"), purpose="fine-tune"),
            client.files.create(file=("chat.jsonl", chat, "application/jsonl"), purpose="fine-tune"))


def _dpo_job(client, server, pairs):
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=pairs.id, seed=3,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
                                         extra_body={"tuneforge": FAST_JOB})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    stored = server[1].get_job(job.id)
    assert stored.config["objective"] == "dpo" and stored.config["dpo_beta"] == 0.2
    return job, stored


def test_a_dpo_job_is_a_run_of_the_dpo_objective_with_its_beta(client, server, files):
    job, _ = _dpo_job(client, server, files[0])
    client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.slow
def test_a_dpo_job_trains_to_success_logging_its_rewards(client, server, files):
    job, stored = _dpo_job(client, server, files[0])
    deadline = time.monotonic() + 240
    while client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the dpo job did not finish"
        time.sleep(0.5)
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "succeeded", final.error
    steps = [event for event in read_events(stored.run_dir) if event["type"] == "train.step"]
    assert steps and all("reward_margin" in step for step in steps)


def test_supervised_maps_to_sft_and_auto_beta_to_the_default(client, server, files):
    pairs, chat = files
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=chat.id, method={"type": "supervised"},
                                         extra_body={"tuneforge": FAST_JOB})
    assert job.method.type == "supervised" and server[1].get_job(job.id).config.get("objective", "sft") == "sft"
    client.fine_tuning.jobs.cancel(job.id)
    auto = client.fine_tuning.jobs.create(model="tiny-llama", training_file=pairs.id, method={"type": "dpo"},
                                          extra_body={"tuneforge": FAST_JOB})
    assert server[1].get_job(auto.id).config["objective"] == "dpo" and auto.method.dpo.hyperparameters.beta == 0.1
    client.fine_tuning.jobs.cancel(auto.id)


@pytest.mark.parametrize("method, file_index, param", [
    ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}, 0, "method.dpo.hyperparameters.beta"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}, 0, "method.dpo.hyperparameters.gamma"),
    ({"type": "dpo"}, 1, "training_file"),
    ({"type": "reinforcement"}, 0, "method.type"),
])
def test_a_bad_method_is_a_400_naming_the_parameter(client, files, method, file_index, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=files[file_index].id, method=method)
    assert caught.value.body["param"] == param
