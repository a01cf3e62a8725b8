"""The server without jobs: security (key, bind, 401, size limit, ids), OpenAI's error shape, completions, batching.

A live uvicorn server on a free loopback port serves the tiny model; clients are the unmodified
``openai`` SDK and ``httpx``. Adapters come from a stand-in manager whose ``resolve_model`` maps two
``ft:`` ids to LoRA adapters saved here (the real manager is covered by test_server_sdk.py).
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from server_support import API_KEY, live_server  # noqa: E402

from tuneforge.core.errors import TuneforgeError  # noqa: E402
from tuneforge.server import ServerConfigError, ServerSettings, create_app, resolve_api_key  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADAPTER_A = "ft:tiny-llama:a:ftjob-000000000000000000000001"
ADAPTER_B = "ft:tiny-llama:b:ftjob-000000000000000000000002"


def save_lora(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter of the tiny model with random (non-zero) B weights, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


class ModelNotFound(TuneforgeError):
    http_status = 404  # as tuneforge.jobs.errors.NotFound says it


class StandInManager:
    """What the server asks of ``FineTuningManager`` for models: resolve, list, retrieve, delete."""

    def __init__(self, adapters: dict[str, Path]) -> None:
        self.adapters = adapters

    def resolve_model(self, model_id: str) -> tuple[str, Path | None]:
        if model_id not in self.adapters:
            raise ModelNotFound(f"no model {model_id}")
        return "tiny-llama", self.adapters[model_id]

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": m, "object": "model", "created": 0, "owned_by": "org-local"} for m in self.adapters]

    def get_model(self, model_id: str) -> dict[str, Any]:
        self.resolve_model(model_id)
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "org-local"}

    def delete_model(self, model_id: str) -> dict[str, Any]:
        self.resolve_model(model_id)
        del self.adapters[model_id]
        return {"id": model_id, "object": "model", "deleted": True}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {ADAPTER_A: save_lora(tiny_model_dir, root / "a", 1), ADAPTER_B: save_lora(tiny_model_dir, root / "b", 2)}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    settings = ServerSettings(models=[str(tiny_model_dir)], home=tmp_path_factory.mktemp("server-home"), max_upload_mb=0.01,
                              batch_window_ms=50, batch_gap_ms=20, max_loaded_adapters=8)
    app = create_app(settings, manager=StandInManager(dict(adapters)), api_key=API_KEY)
    with live_server(app) as url:
        yield url, app.state.tuneforge


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=API_KEY, max_retries=0, timeout=60)


def chat(client, model: str = "tiny-llama", **kwargs: Any):
    kwargs.setdefault("messages", [{"role": "user", "content": "what color is the sky?"}])
    kwargs.setdefault("max_tokens", 6)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, **kwargs)


# ----- security ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/models", "/chat/completions", "/files", "/nothing-here"])
@pytest.mark.parametrize("header", [None, "Bearer wrong-key-0123456789", f"Basic {API_KEY}", API_KEY])
def test_every_route_needs_the_bearer_key(server, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.post(server[0] + path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_docs_need_the_key_too(server, path: str) -> None:
    root = server[0].removesuffix("/v1")
    assert httpx.get(root + path).status_code == 401
    assert httpx.get(root + path, headers=AUTH).status_code == 200


def test_sdk_without_the_key_gets_authentication_error(server) -> None:
    bad = openai.OpenAI(base_url=server[0], api_key="sk-not-the-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.request_id


def test_request_id_on_every_response_and_client_ids_kept(server) -> None:
    ok = httpx.get(server[0] + "/models", headers=AUTH)
    assert ok.headers["x-request-id"].startswith("req_")
    mine = httpx.get(server[0] + "/models", headers={**AUTH, "x-request-id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    hostile = httpx.get(server[0] + "/models", headers={**AUTH, "x-request-id": "a\tb<script>"})
    assert hostile.headers["x-request-id"].startswith("req_")
    assert httpx.get(server[0] + "/nope", headers=AUTH).headers["x-request-id"]


def test_body_over_the_limit_is_413(server) -> None:
    big = b"x" * 20_000  # the fixture's limit is 0.01 MB
    response = httpx.post(server[0] + "/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks():
        for _ in range(20):
            yield b"x" * 1000

    streamed = httpx.post(server[0] + "/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=chunks())
    assert streamed.status_code == 413


@pytest.mark.parametrize("model_id", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a\\..\\b",
                                      "ft:x:..:..", "%00", "tiny-llama%2F..%2F..%2Fconfig.json"])
def test_path_traversal_in_model_ids_is_404(server, model_id: str) -> None:
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{server[0]}/models/{model_id}", headers=AUTH)
        assert response.status_code in (400, 404), response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = httpx.post(server[0] + "/chat/completions", headers=AUTH,
                          json={"model": model_id, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_generated_key_is_private_and_stable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    said: list[str] = []
    key = resolve_api_key(ServerSettings(home=tmp_path), announce=said.append)
    path = tmp_path / "api_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(said) == 1 and key in said[0]
    assert resolve_api_key(ServerSettings(home=tmp_path), announce=said.append) == key and len(said) == 1
    monkeypatch.setenv("TUNEFORGE_API_KEY", "env-key-0123456789abcdef")
    assert resolve_api_key(ServerSettings(home=tmp_path)) == "env-key-0123456789abcdef"


def test_public_bind_without_an_explicit_key_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    with pytest.raises(ServerConfigError, match="TUNEFORGE_API_KEY"):
        resolve_api_key(ServerSettings(host="0.0.0.0", home=tmp_path))
    assert not (tmp_path / "api_key").exists()
    key_file = tmp_path / "key.txt"
    key_file.write_text("file-key-0123456789abcdef\n")
    assert resolve_api_key(ServerSettings(host="0.0.0.0", api_key_file=key_file, home=tmp_path)) == "file-key-0123456789abcdef"
    with pytest.raises(ServerConfigError, match="at least"):
        resolve_api_key(ServerSettings(api_key="short", home=tmp_path))


def test_cli_serve_on_all_interfaces_without_a_key_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from tuneforge.cli.main import main

    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--no-worker"]) == 1
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


# ----- errors ------------------------------------------------------------------------------------

def test_validation_errors_are_400_in_openai_shape(server, client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, temperature=5)
    assert caught.value.param == "temperature" and caught.value.type == "invalid_request_error"
    response = httpx.post(server[0] + "/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=b"{not json")
    assert response.status_code == 400 and set(response.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = httpx.put(server[0] + "/models", headers=AUTH)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_unknown_model_is_404_model_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="no-such-model")
    assert caught.value.code == "model_not_found"


def test_prompt_longer_than_the_context_is_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, messages=[{"role": "user", "content": "blue sky " * 400}])
    assert caught.value.code == "context_length_exceeded"


# ----- completions -------------------------------------------------------------------------------

def test_chat_completion_object_and_usage(client) -> None:
    strict = openai.OpenAI(base_url=str(client.base_url), api_key=API_KEY, max_retries=0, _strict_response_validation=True)
    reply = chat(strict, max_completion_tokens=5)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 5 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply._request_id


def test_stream_adds_up_to_the_plain_answer(client) -> None:
    plain = chat(client, max_tokens=8).choices[0].message.content
    chunks = list(chat(client, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert len({c.id for c in chunks}) == 1


def test_stream_wire_format_ends_with_done(server) -> None:
    with httpx.stream("POST", server[0] + "/chat/completions", headers=AUTH, json={
            "model": "tiny-llama", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_n_seed_and_stop(client) -> None:
    sampled = chat(client, n=3, temperature=1.0, seed=7, max_tokens=6)
    again = chat(client, n=3, temperature=1.0, seed=7, max_tokens=6)
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    assert [c.message.content for c in sampled.choices] == [c.message.content for c in again.choices]
    full = chat(client, max_tokens=10).choices[0].message.content
    if len(full) > 2:
        stopped = chat(client, max_tokens=10, stop=[full[1:3]])
        assert stopped.choices[0].message.content == full[: full.index(full[1:3])]
        assert stopped.choices[0].finish_reason == "stop"


def test_completions_endpoint(client) -> None:
    result = client.completions.create(model="tiny-llama", prompt=["the sky is", "grass is"], max_tokens=4, temperature=0)
    assert result.object == "text_completion" and [c.index for c in result.choices] == [0, 1]
    streamed = list(client.completions.create(model="tiny-llama", prompt="the sky is", max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == \
        client.completions.create(model="tiny-llama", prompt="the sky is", max_tokens=4, temperature=0).choices[0].text


# ----- adapters and batching ---------------------------------------------------------------------

def test_adapters_served_by_name_change_the_answer(client) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"tiny-llama", ADAPTER_A, ADAPTER_B} <= ids
    answers = {model: chat(client, model=model, max_tokens=8).choices[0].message.content
               for model in ("tiny-llama", ADAPTER_A, ADAPTER_B)}
    assert len(set(answers.values())) == 3, answers
    assert client.models.retrieve(ADAPTER_A).id == ADAPTER_A


def test_concurrent_requests_for_two_adapters_run_as_one_batch(server) -> None:
    url, state = server
    models = [ADAPTER_A, ADAPTER_B, "tiny-llama"] * 3

    async def one(http: httpx.AsyncClient, model: str) -> str:
        response = await http.post(url + "/chat/completions", headers=AUTH, json={
            "model": model, "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "color of grass?"}]})
        return response.json()["choices"][0]["message"]["content"]

    async def all_at_once() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(one(http, m) for m in models))

    async def one_by_one() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as http:
            return [await one(http, m) for m in models]

    alone = asyncio.run(one_by_one())
    host = state.hosts["tiny-llama"]
    before = host.batches_run
    together = asyncio.run(all_at_once())
    assert together == alone  # a row's answer does not depend on its batch neighbours or their adapters
    assert host.batches_run - before < len(models)
    assert host.largest_batch >= 3


def test_adapter_lru_evicts_the_least_recent(tiny_model_dir: Path, adapters: dict[str, Path]) -> None:
    from tuneforge.server.generation import ModelHost, Submission
    from tuneforge.inference import GenerationRequest
    from tuneforge.model.load import load_model, load_tokenizer

    host = ModelHost("tiny", lambda: (load_model(tiny_model_dir, "cpu"), load_tokenizer(tiny_model_dir)), max_loaded_adapters=1)

    async def ask(path: Path) -> str:
        from tuneforge.server.generation import generate

        request = GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=4)
        return (await generate(host, Submission([request], path, asyncio.get_running_loop())))[0].text

    a, b = adapters[ADAPTER_A], adapters[ADAPTER_B]
    first = asyncio.run(ask(a))
    asyncio.run(ask(b))
    assert host.loaded_adapters == [str(b)] and len(host.engine.adapters) == 1
    assert asyncio.run(ask(a)) == first  # reloaded after eviction, same weights
    host.close()


def test_delete_fine_tuned_model_then_404(server, client, adapters: dict[str, Path]) -> None:
    state = server[1]
    state.manager.adapters["ft:tiny-llama:gone:ftjob-000000000000000000000009"] = adapters[ADAPTER_A]
    assert client.models.delete("ft:tiny-llama:gone:ftjob-000000000000000000000009").deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ft:tiny-llama:gone:ftjob-000000000000000000000009")
    with pytest.raises(openai.BadRequestError):
        client.models.delete("tiny-llama")
