"""What one generation asks for (``GenerationRequest``) and what it produced (``GenerationResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from tuneforge.core.errors import InferenceError

BASE_ADAPTER = "base"  # the adapter name (besides None) that means "the base model, no adapter"
FinishReason = Literal["stop", "length"]


@dataclass
class GenerationRequest:
    """One prompt to continue, with its own settings.

    Give exactly one of ``prompt`` (text already in the model's format), ``messages`` (a chat,
    rendered with the model's chat template and an assistant turn opened) or ``prompt_ids``
    (token ids, for callers that tokenized already). ``temperature`` 0 is greedy; above 0 the next
    token is sampled from the softmax at that temperature, restricted to the ``top_p`` nucleus, with
    a generator seeded by ``seed`` (the same seed gives the same text; None draws one from torch's
    global generator, so ``torch.manual_seed`` makes a whole run reproducible). Generation ends at
    the model's end-of-turn token or at the first of the ``stop`` strings (the text is cut before
    it): ``finish_reason`` "stop"; or after ``max_new_tokens`` tokens: "length". ``adapter`` names
    a loaded adapter; None or "base" is the base model.
    """

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    prompt_ids: list[int] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    adapter: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def problems(self) -> list[str]:
        """What is wrong with this request, one sentence each (empty when it can be served)."""
        found = []
        given = [name for name in ("prompt", "messages", "prompt_ids") if getattr(self, name) is not None]
        if len(given) != 1:
            found.append(f"give exactly one of prompt, messages or prompt_ids (got {', '.join(given) or 'none'})")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            found.append(f"max_new_tokens must be a whole number of at least 1 (got {self.max_new_tokens!r})")
        if not self.temperature >= 0:
            found.append(f"temperature must be 0 (greedy) or more (got {self.temperature!r})")
        if not 0 < self.top_p <= 1:
            found.append(f"top_p must be above 0 and at most 1 (got {self.top_p!r})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            found.append(f"stop sequences must be non-empty strings (got {list(self.stop)!r})")
        return found


@dataclass
class GenerationResult:
    """The continuation of one request.

    ``text`` is the decoded completion (special tokens left out, cut before a stop string; not
    stripped). ``completion_tokens`` counts every token generated, the end-of-turn token included;
    ``token_ids`` are the completion's tokens without the end-of-turn token.
    """

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)
    adapter: str | None = None


def check_requests(requests: Sequence[GenerationRequest], adapters: Sequence[str]) -> None:
    """Raise one ``InferenceError`` naming every unusable request (by index) and why."""
    problems = []
    for index, request in enumerate(requests):
        found = request.problems()
        if request.adapter not in (None, BASE_ADAPTER) and request.adapter not in adapters:
            known = ", ".join([BASE_ADAPTER, *adapters])
            found.append(f"adapter {request.adapter!r} is not loaded (loaded: {known}); load it with engine.load_adapter(name, path)")
        problems += [f"request {index}: {problem}" for problem in found]
    if problems:
        raise InferenceError("cannot generate:\n" + "\n".join(f"  - {p}" for p in problems))
