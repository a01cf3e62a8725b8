"""``/v1/chat/completions`` and ``/v1/completions``: OpenAI's request fields to ``GenerationRequest``s and back.

The request bodies accept (and ignore) every field the ``openai`` SDK may send that has no meaning
here (tools, logit_bias, ...); the fields that do have one are validated with OpenAI's limits.
``n`` choices are ``n`` requests in the same batch (seeds ``seed``, ``seed + 1``, ...). Streaming
is server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, AsyncIterator, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.inference import GenerationRequest, GenerationResult
from tuneforge.server.errors import APIError
from tuneforge.server.generation import Submission, generate, started

MAX_CHOICES = 16
MAX_STOP = 4

router = APIRouter()


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[dict[str, Any]], None] = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class _Sampling(_Open):
    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Union[str, list[str], None]) -> Union[str, list[str], None]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]


def _text_of(message: ChatMessage, index: int) -> str:
    """A message's text: a string, or the text parts of an array (other parts cannot be served)."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}].content: only text parts can be served by this model "
                                f"(got a {part.get('type')!r} part)", param=f"messages.{index}.content")
        texts.append(part["text"])
    return "".join(texts)


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    # The chat templates of small models know system/user/assistant; developer is OpenAI's new name for system.
    roles = {"developer": "system", "function": "tool"}
    return [{"role": roles.get(m.role, m.role), "content": _text_of(m, i)} for i, m in enumerate(body.messages)]


def _stops(value: Union[str, list[str], None]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _requests(body: _Sampling, prompts: list[dict[str, Any]], max_tokens: int) -> list[GenerationRequest]:
    """One request per prompt per choice; OpenAI's defaults (temperature 1, top_p 1)."""
    n = body.n or 1
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    requests = []
    for prompt in prompts:
        for choice in range(n):
            seed = None if body.seed is None else (body.seed + choice) % 2**63
            requests.append(GenerationRequest(**prompt, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                              seed=seed, stop=_stops(body.stop)))
    return requests


def _usage(results: list[GenerationResult], prompts: int, n: int) -> dict[str, int]:
    prompt_tokens = sum(r.prompt_tokens for r in results[::n]) if prompts else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    server = request.app.state.tuneforge
    host, adapter = server.host_for(body.model)
    max_tokens = body.max_completion_tokens or body.max_tokens or server.settings.default_max_tokens
    max_tokens = min(max_tokens, server.settings.max_tokens_limit)
    requests = _requests(body, [{"messages": _messages(body)}], max_tokens)
    submission = Submission(requests, adapter, loop=_loop(), stream=bool(body.stream))
    ident, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    if body.stream:
        await started(host, submission)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_chat_chunks(submission, ident, created, body.model, len(requests), include_usage))
    results = await generate(host, submission)
    return JSONResponse({
        "id": ident, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.text, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": r.finish_reason} for i, r in enumerate(results)],
        "usage": _usage(results, 1, len(requests)), "service_tier": "default", "system_fingerprint": None,
    })


async def _chat_chunks(submission: Submission, ident: str, created: int, model: str, n: int,
                       include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return body

    for index in range(n):
        yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
    async for event in _events(submission):
        if event[0] == "token":
            yield chunk([{"index": event[1], "delta": {"content": event[2]}, "logprobs": None, "finish_reason": None}])
        else:
            results: list[GenerationResult] = event[1]
            for index, result in enumerate(results):
                yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": result.finish_reason}])
            if include_usage:
                yield chunk([], _usage(results, 1, n))


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    server = request.app.state.tuneforge
    host, adapter = server.host_for(body.model)
    prompts = _completion_prompts(body.prompt)
    n = body.n or 1
    max_tokens = min(body.max_tokens or 16, server.settings.max_tokens_limit)  # 16: OpenAI's default for completions
    requests = _requests(body, prompts, max_tokens)
    submission = Submission(requests, adapter, loop=_loop(), stream=bool(body.stream))
    ident, created = "cmpl-" + secrets.token_hex(12), int(time.time())
    if body.stream:
        await started(host, submission)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_completion_chunks(submission, ident, created, body.model, len(prompts), n, include_usage))
    results = await generate(host, submission)
    return JSONResponse({
        "id": ident, "object": "text_completion", "created": created, "model": body.model, "system_fingerprint": None,
        "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason} for i, r in enumerate(results)],
        "usage": _usage(results, len(prompts), n),
    })


def _completion_prompts(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"prompt": prompt}]
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(item, int) for item in prompt):
        return [{"prompt_ids": list(prompt)}]
    if len(prompt) > MAX_CHOICES:
        raise APIError(400, f"at most {MAX_CHOICES} prompts per request", param="prompt")
    return [{"prompt": item} if isinstance(item, str) else {"prompt_ids": list(item)} for item in prompt]


async def _completion_chunks(submission: Submission, ident: str, created: int, model: str, prompts: int, n: int,
                             include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        body = {"id": ident, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": None, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return body

    async for event in _events(submission):
        if event[0] == "token":
            yield chunk([{"index": event[1], "text": event[2], "logprobs": None, "finish_reason": None}])
        else:
            results: list[GenerationResult] = event[1]
            for index, result in enumerate(results):
                yield chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": result.finish_reason}])
            if include_usage:
                yield chunk([], _usage(results, prompts, n))


async def _events(submission: Submission) -> AsyncIterator[tuple[Any, ...]]:
    """The submission's token events, then its ("done", results); an error ends the stream with an error event."""
    while True:
        event = await submission.events.get()
        if event[0] == "token":
            yield event
        elif event[0] == "done":
            yield event
            return
        elif event[0] == "error":
            raise event[1]


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        except Exception as error:  # after the 200 went out, an error is an event the SDK raises as APIError
            message = str(error) or type(error).__name__
            yield b"data: " + json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                                     "code": None}}).encode() + b"\n\n"
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def _loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()
