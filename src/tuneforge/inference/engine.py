"""``InferenceEngine``: batched generation with a KV cache, for evaluation, chat, the server and export checks.

One decoding loop over ``past_key_values`` (not ``model.generate``) so that every row has its own
settings and its own end: per-row temperature/top-p/seed, stop strings, streaming, and a row that
has finished leaves the batch (its cache rows are dropped) instead of being computed until the
slowest row is done. Prompts are sorted by length before batching, so rows pad little. With greedy
settings the tokens are the ones ``model.generate(do_sample=False)`` picks (tests/test_inference.py).

Adapters: the engine serves the model it was given, and, when that is a PEFT model, each of its
adapters by name. ``load_adapter(name, path)`` adds one (wrapping a plain model in PEFT the first
time). A request's ``adapter`` None is the engine's default (the model's active adapter when it
was given one, else the base model); "base" is the base model. A batch whose rows all use the
default runs the model as it is (the fastest path); a batch of only "base" runs with the adapters
disabled; anything else is a mixed batch through PEFT's ``adapter_names``.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from tuneforge.core.errors import InferenceError
from tuneforge.data.tokenize import render_chat
from tuneforge.inference.request import BASE_ADAPTER, GenerationRequest, GenerationResult, check_requests
from tuneforge.inference.sampling import pick_tokens, row_generator
from tuneforge.inference.text import RowText
from tuneforge.model.load import end_of_turn_ids
from tuneforge.model.loss import wrapper_injects_state

PEFT_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
DEFAULT_BATCH_SIZE = 16
MIN_SHARED_PREFIX = 8  # tokens; a shorter common start is not worth a separate forward pass

OnToken = Callable[[int, str], None]  # (index of the request, newly decoded text)
OnResult = Callable[[int, GenerationResult], None]  # (index of the request, its result), as each finishes


@dataclass
class _Row:
    """One request while its batch runs."""

    index: int
    request: GenerationRequest
    prompt_ids: list[int]
    adapter: str  # resolved: BASE_ADAPTER or an adapter name
    text: RowText
    generator: torch.Generator | None
    generated: int = 0


class InferenceEngine:
    """Generates continuations of ``GenerationRequest``s with ``model`` and its ``tokenizer``."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = set(end_of_turn_ids(tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.default_adapter = _active_adapter(model) or BASE_ADAPTER

    # ----- adapters -----------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters loaded on the model (the base model, "base", is always there too)."""
        return list(getattr(self.model, "peft_config", {}) or {})

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the PEFT adapter saved in ``path`` under ``name``; the default adapter does not change."""
        if name in (BASE_ADAPTER, PEFT_BASE) or not name:
            raise InferenceError(f"{name!r} cannot name an adapter: it means the base model; choose another name")
        if name in self.adapters:
            raise InferenceError(f"an adapter named {name!r} is already loaded; choose another name")
        if not (Path(path) / "adapter_config.json").is_file():
            raise InferenceError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
        if hasattr(self.model, "load_adapter") and hasattr(self.model, "peft_config"):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            from peft import PeftModel

            # PeftModel activates the adapter it loads; requests without an adapter stay on the default.
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        self.model.eval()

    def set_adapter(self, name: str | None) -> None:
        """Make ``name`` (an adapter, or None/"base") what requests without an adapter use."""
        name = name or BASE_ADAPTER
        if name != BASE_ADAPTER and name not in self.adapters:
            raise InferenceError(f"adapter {name!r} is not loaded (loaded: {', '.join([BASE_ADAPTER, *self.adapters])})")
        if name != BASE_ADAPTER:
            self.model.set_adapter(name, inference_mode=True)
        self.default_adapter = name

    # ----- generation ---------------------------------------------------------------------------

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids (chat messages rendered with the model's chat template)."""
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        text = request.prompt if request.prompt is not None else render_chat(self.tokenizer, request.messages, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_token: OnToken | None = None,
        on_result: OnResult | None = None,
        batch_size: int | None = None,
    ) -> list[GenerationResult]:
        """One ``GenerationResult`` per request, in the requests' order.

        ``on_token(i, text)`` is called with each piece of new text of request ``i`` as it is
        decided (the pieces of a request add up to its final ``text``); ``on_result(i, result)``
        as each request finishes. Raises ``InferenceError`` listing every invalid request.
        """
        check_requests(requests, self.adapters)
        if batch_size is not None and batch_size < 1:
            raise InferenceError(f"batch_size must be at least 1 (got {batch_size})")
        size = batch_size or self.batch_size
        prompts = [self.encode(request) for request in requests]
        empty = [i for i, ids in enumerate(prompts) if not ids]
        if empty:
            raise InferenceError(f"request(s) {empty} have an empty prompt; give at least one token")
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        results: list[GenerationResult | None] = [None] * len(requests)

        def finished(index: int, result: GenerationResult) -> None:
            results[index] = result
            if on_result:
                on_result(index, result)

        through_wrapper = wrapper_injects_state(self.model)
        with self._inference():
            for start in range(0, len(order), size):
                rows = [self._row(i, requests[i], prompts[i]) for i in order[start : start + size]]
                if through_wrapper:
                    for row in rows:
                        self._run_through_wrapper(row, on_token, finished)
                else:
                    self._run_batch(rows, on_token, finished)
        return results  # type: ignore[return-value]

    def _run_through_wrapper(self, row: _Row, on_token: OnToken | None, finished: Callable[[int, GenerationResult], None]) -> None:
        """One row through the PEFT wrapper's own ``generate``, for prompt-learning adapters.

        Prompt, prefix and p-tuning add virtual tokens (or their keys and values) inside the
        wrapper's forward, which the cache loop above would add again at every step. The tokens then
        go through the same stop, streaming and result logic; a seed seeds torch's generator for
        this row (so it is reproducible, but drawn differently from the loop's sampling).
        """
        device = next(self.model.parameters()).device
        request = row.request
        settings: dict[str, Any] = dict(max_new_tokens=request.max_new_tokens, eos_token_id=sorted(self.stop_ids),
                                        pad_token_id=self.pad_id, do_sample=not request.greedy)
        if not request.greedy:
            settings.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        input_ids = torch.tensor([row.prompt_ids], device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if not request.greedy:
                torch.manual_seed(int(row.generator.initial_seed()) if row.generator is not None else 0)
            with self._adapters_for([row]) as extra:
                output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                             **settings, **extra([row]))
        tokens = output[0, -(output.shape[1] - input_ids.shape[1]) :].tolist() if output.shape[1] > input_ids.shape[1] else []
        for token in tokens:
            if not self._advance(row, token, on_token, finished):
                return
        self._finish(row, "length", on_token, finished)  # generate ended without a stop token or the budget

    def _row(self, index: int, request: GenerationRequest, prompt_ids: list[int]) -> _Row:
        adapter = request.adapter or self.default_adapter
        generator = None if request.greedy else row_generator(request.seed)
        return _Row(index, request, prompt_ids, adapter, RowText(self.tokenizer, request.stop), generator)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def _run_batch(self, rows: list[_Row], on_token: OnToken | None, finished: Callable[[int, GenerationResult], None]) -> None:
        device = next(self.model.parameters()).device
        accepted = self._forward_parameters()
        cache_name = "cache" if "cache" in accepted else "past_key_values"  # transformers >= 5.24 renamed it
        last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}  # no vocabulary projection of the prompt
        with self._adapters_for(rows) as extra:
            shared = self._shared_prefix(rows)
            cache = None
            if shared:  # the prompts' common start (an instruction, a system prompt) is computed once
                prefix = torch.tensor([rows[0].prompt_ids[:shared]], device=device)
                cache = getattr(self.model(input_ids=prefix, use_cache=True, **extra(rows[:1]), **last_only), cache_name)
                cache.batch_repeat_interleave(len(rows))
            input_ids, mask, positions = _left_padded([row.prompt_ids[shared:] for row in rows], self.pad_id, shared, device)
            output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                **({cache_name: cache} if cache is not None else {}), **extra(rows), **last_only)
            cache = getattr(output, cache_name)
            active = rows
            while True:
                logits = output.logits[:, -1, :]
                tokens = pick_tokens(logits, [r.request.temperature for r in active], [r.request.top_p for r in active],
                                     [r.generator for r in active])
                keep = [slot for slot, (row, token) in enumerate(zip(active, tokens)) if self._advance(row, token, on_token, finished)]
                if not keep:
                    return
                if len(keep) < len(active):  # finished rows leave the batch and the cache
                    chosen = torch.tensor(keep, device=device)
                    cache.batch_select_indices(chosen)
                    mask, positions = mask[chosen], positions[chosen]
                    active = [active[slot] for slot in keep]
                    tokens = [tokens[slot] for slot in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                positions = positions[:, -1:] + 1
                next_ids = torch.tensor(tokens, device=device).unsqueeze(1)
                output = self.model(input_ids=next_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                    **{cache_name: cache}, **extra(active))

    @staticmethod
    def _shared_prefix(rows: list[_Row]) -> int:
        """How many leading prompt tokens all rows share and can compute once (0: not worth it or not possible).

        Only for rows on one adapter (an adapter changes the keys and values); every row keeps at
        least one token of its own, whose logits start its answer.
        """
        if len(rows) < 2 or len({row.adapter for row in rows}) > 1:
            return 0
        first, shortest = rows[0].prompt_ids, min(len(row.prompt_ids) for row in rows)
        length = 0
        while length < shortest - 1 and all(row.prompt_ids[length] == first[length] for row in rows):
            length += 1
        return length if length >= MIN_SHARED_PREFIX else 0

    def _advance(self, row: _Row, token: int, on_token: OnToken | None, finished: Callable[[int, GenerationResult], None]) -> bool:
        """Take ``token`` into ``row``; False (and the row's result reported) when the row is done."""
        row.generated += 1
        reason = None
        if token in self.stop_ids:
            reason = "stop"
        else:
            row.text.add(token)
            if row.text.stopped:
                reason = "stop"
            elif row.generated >= row.request.max_new_tokens:
                reason = "length"
        if reason is None:
            if on_token:
                piece = row.text.new_text()
                if piece:
                    on_token(row.index, piece)
            return True
        self._finish(row, reason, on_token, finished)
        return False

    def _finish(self, row: _Row, reason: str, on_token: OnToken | None, finished: Callable[[int, GenerationResult], None]) -> None:
        """Report ``row``'s result (and stream what was held back)."""
        text = row.text.finish()
        if on_token:
            piece = row.text.new_text(final=True)
            if piece:
                on_token(row.index, piece)
        finished(row.index, GenerationResult(
            text=text, finish_reason=reason, prompt_tokens=len(row.prompt_ids), completion_tokens=row.generated,
            token_ids=list(row.text.ids), adapter=None if row.adapter == BASE_ADAPTER else row.adapter,
        ))

    @contextlib.contextmanager
    def _adapters_for(self, rows: list[_Row]) -> Iterator[Callable[[list[_Row]], dict[str, Any]]]:
        """A context for the batch's adapters, and a function giving the forward's extra arguments for the rows still running."""
        names = {row.adapter for row in rows}
        if names == {_active_adapter(self.model) or BASE_ADAPTER}:  # what the model runs as it is
            yield lambda active: {}
        elif names == {BASE_ADAPTER}:
            with self.model.disable_adapter():
                yield lambda active: {}
        else:
            yield lambda active: {"adapter_names": [PEFT_BASE if r.adapter == BASE_ADAPTER else r.adapter for r in active]}

    def _forward_parameters(self) -> set[str]:
        """The names the underlying transformers model's ``forward`` takes."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        try:
            return set(inspect.signature(base.forward).parameters)
        except (TypeError, ValueError):
            return set()


def _active_adapter(model: Any) -> str | None:
    """The PEFT model's active adapter, or None for a plain model."""
    if not hasattr(model, "peft_config"):
        return None
    active = getattr(model, "active_adapter", None)
    return active if isinstance(active, str) else None


def _left_padded(prompts: list[list[int]], pad_id: int, offset: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) of prompts padded on the left to one width.

    ``offset`` tokens already in the cache (a shared prefix) come before every row: the mask covers
    them too and positions continue after them. Padding then sits between the prefix and a row's own
    tokens, masked out, so every row's real tokens keep the positions they would have alone.
    """
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    own = torch.zeros((len(prompts), width), dtype=torch.long)
    for slot, ids in enumerate(prompts):
        input_ids[slot, width - len(ids) :] = torch.tensor(ids)
        own[slot, width - len(ids) :] = 1
    positions = offset + (own.cumsum(-1) - 1).masked_fill(own == 0, 1)  # pads' positions as transformers' generate
    mask = torch.cat([torch.ones((len(prompts), offset), dtype=torch.long), own], dim=1)
    return input_ids.to(device), mask.to(device), positions.to(device)
