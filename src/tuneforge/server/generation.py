"""Serving generation: one base model in memory per served name, adapters by name, requests batched.

``ModelHost`` owns one base model, its tokenizer and an ``InferenceEngine``, and one thread that
runs every model call for it (torch and the tokenizer are used from that thread only). Requests
are queued; the thread takes the first one, waits up to ``batch_window_ms`` for more (up to
``max_batch`` rows), and runs them as one engine batch — rows for different adapters in the same
batch (PEFT's mixed batches). Requests that arrive while a batch runs form the next one.

Adapters are PEFT adapter directories, loaded on first use under a name derived from their path
and kept in an LRU of ``max_loaded_adapters`` (the least recently used one not needed by the
batch is deleted from the model when a new one is loaded).

A submission reports through an asyncio queue on the caller's loop: ``("started",)`` once its
prompts are encoded and fit the context, then ``("token", i, text)`` pieces as they are decided,
and finally ``("done", results)`` or ``("error", exception)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.core.errors import InferenceError, TuneforgeError
from tuneforge.inference import BASE_ADAPTER, GenerationRequest, GenerationResult, InferenceEngine

log = logging.getLogger("tuneforge.server")

Event = tuple[Any, ...]


class ContextLengthError(InferenceError):
    """A prompt leaves no room for an answer in the model's context window."""

    http_status = 400
    param = "messages"
    code = "context_length_exceeded"


@dataclass
class Submission:
    """Requests of one HTTP call (n choices are n requests) on one adapter (None: the base model)."""

    requests: list[GenerationRequest]
    adapter_path: Path | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    stream: bool = False

    def post(self, *event: Any) -> None:
        """Deliver an event to the caller's loop (called from the host's thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the client is gone
            pass


class ModelHost:
    """One served base model: lazily loaded, one generation thread, an adapter LRU, a batching queue."""

    def __init__(self, name: str, load: Callable[[], tuple[Any, Any]], max_batch: int = 16,
                 batch_window_ms: float = 20.0, max_loaded_adapters: int = 8, batch_gap_ms: float = 1.0) -> None:
        self.name = name
        self._load = load
        self.max_batch = max_batch
        self.batch_window = batch_window_ms / 1000
        self.batch_gap = min(batch_gap_ms, batch_window_ms) / 1000
        self.max_loaded_adapters = max_loaded_adapters
        self.engine: InferenceEngine | None = None
        self.context_length: int | None = None
        self._adapters: OrderedDict[str, str] = OrderedDict()  # adapter dir -> adapter name, least recent first
        self._queue: queue.Queue[Submission | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches_run = 0  # for tests and the benchmark: how many engine batches ran
        self.largest_batch = 0

    # ----- the caller's side ---------------------------------------------------------------------

    def submit(self, submission: Submission) -> None:
        """Queue ``submission``; its events arrive on ``submission.events``."""
        self._start()
        self._queue.put(submission)

    def close(self) -> None:
        """Stop the thread after the queued work (the model stays loaded until the host is dropped)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=f"tuneforge-generate-{self.name}", daemon=True)
                self._thread.start()

    # ----- the host's thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            try:
                self._run(batch)
            except Exception as error:  # never let one bad batch end the thread
                log.exception("generation batch failed")
                for submission in batch:
                    submission.post("error", error)

    def _collect(self, first: Submission) -> list[Submission]:
        """``first`` and what arrives with it, up to ``max_batch`` rows.

        Waits for the next request at most ``batch_gap`` after the previous one and at most
        ``batch_window`` in all: a lone request waits only the gap (a millisecond or two), a burst of
        concurrent requests is gathered into one batch.
        """
        batch, rows = [first], len(first.requests)
        start = time.monotonic()
        while rows < self.max_batch:
            remaining = min(self.batch_gap, start + self.batch_window - time.monotonic())
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # close after this batch
                break
            batch.append(item)
            rows += len(item.requests)
        return batch

    def _ensure_loaded(self) -> InferenceEngine:
        if self.engine is None:
            model, tokenizer = self._load()
            self.engine = InferenceEngine(model, tokenizer, batch_size=self.max_batch)
            self.context_length = _context_length(model)
        return self.engine

    def _run(self, batch: list[Submission]) -> None:
        try:
            engine = self._ensure_loaded()
        except Exception as error:
            for submission in batch:
                submission.post("error", error)
            return
        ready = [s for s in batch if self._prepare(engine, s)]
        if not ready:
            return
        try:
            names = self._adapter_names(engine, {s.adapter_path for s in ready if s.adapter_path is not None})
        except Exception as error:
            for submission in ready:
                submission.post("error", error)
            return
        flat: list[GenerationRequest] = []
        owners: list[tuple[Submission, int]] = []
        for submission in ready:
            adapter = names[submission.adapter_path] if submission.adapter_path is not None else BASE_ADAPTER
            for index, request in enumerate(submission.requests):
                request.adapter = adapter
                flat.append(request)
                owners.append((submission, index))

        def on_token(row: int, text: str) -> None:
            submission, index = owners[row]
            if submission.stream:
                submission.post("token", index, text)

        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(flat))
        streaming = any(s.stream for s in ready)  # without a stream the engine need not decode text at every step
        results = engine.generate(flat, on_token=on_token if streaming else None, batch_size=len(flat))
        grouped: dict[int, list[GenerationResult]] = {}
        for (submission, _), result in zip(owners, results):
            grouped.setdefault(id(submission), []).append(result)
        for submission in ready:
            submission.post("done", grouped[id(submission)])

    def _prepare(self, engine: InferenceEngine, submission: Submission) -> bool:
        """Encode the prompts and fit ``max_new_tokens`` into the context; False (error posted) if impossible."""
        try:
            for request in submission.requests:
                if request.prompt_ids is None:
                    request.prompt_ids = engine.encode(request)
                    request.prompt = request.messages = None
                if not request.prompt_ids:
                    raise InferenceError("the prompt is empty; give at least one token of text")
                if self.context_length:
                    room = self.context_length - len(request.prompt_ids)
                    if room < 1:
                        raise ContextLengthError(
                            f"This model's maximum context length is {self.context_length} tokens, but the prompt has "
                            f"{len(request.prompt_ids)} tokens; shorten the messages.")
                    request.max_new_tokens = min(request.max_new_tokens, room)
                problems = request.problems()
                if problems:
                    raise InferenceError("; ".join(problems))
        except TuneforgeError as error:
            submission.post("error", error)
            return False
        except Exception as error:  # a chat template that rejects the messages, for example
            submission.post("error", InferenceError(f"cannot build the prompt: {error}"))
            return False
        submission.post("started")
        return True

    def _adapter_names(self, engine: InferenceEngine, paths: set[Path]) -> dict[Path, str]:
        """The engine's adapter name of each path in ``paths``, loading and evicting as needed."""
        names = {}
        for path in sorted(paths):
            key = str(path)
            if key in self._adapters:
                self._adapters.move_to_end(key)
            else:
                name = "ft_" + hashlib.sha256(key.encode()).hexdigest()[:16]
                if name not in engine.adapters:  # still on the model after its bookkeeping was dropped
                    engine.load_adapter(name, path)
                self._adapters[key] = name
            names[path] = self._adapters[key]
        needed = {str(p) for p in paths}
        for key in list(self._adapters):
            if len(self._adapters) <= self.max_loaded_adapters:
                break
            if key not in needed:
                self._evict(engine, key)
        return names

    def _evict(self, engine: InferenceEngine, key: str) -> None:
        name = self._adapters.pop(key)
        engine.model.delete_adapter(name)
        remaining = engine.adapters
        if remaining and getattr(engine.model, "active_adapter", None) not in remaining:
            engine.model.set_adapter(remaining[0])

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)


def _context_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


async def generate(host: ModelHost, submission: Submission) -> list[GenerationResult]:
    """Submit and wait for the results (non-streaming); raises the error the host reported."""
    host.submit(submission)
    while True:
        event = await submission.events.get()
        if event[0] == "done":
            return event[1]
        if event[0] == "error":
            raise event[1]


async def started(host: ModelHost, submission: Submission) -> None:
    """Submit and wait until the prompts are accepted (streaming); raises the error if they are not."""
    host.submit(submission)
    event = await submission.events.get()
    if event[0] == "error":
        raise event[1]
