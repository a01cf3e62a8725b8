"""``ChatSession``: a multi-turn conversation with a model, in its own chat template, through the inference engine."""

from __future__ import annotations

from typing import Any, Callable

from tuneforge.inference import GenerationRequest, GenerationResult, InferenceEngine


class ChatSession:
    """Keeps the conversation so far; ``reply`` adds the user's message and the model's answer.

    Greedy by default; ``temperature``/``top_p``/``seed`` sample instead, ``stop`` ends answers
    early, and ``adapter`` picks one of the engine's adapters by name.
    """

    def __init__(self, model: Any, tokenizer: Any, system: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None, stop: tuple[str, ...] = (),
                 adapter: str | None = None, engine: InferenceEngine | None = None) -> None:
        self.engine = engine or InferenceEngine(model, tokenizer)
        self.model, self.tokenizer = self.engine.model, self.engine.tokenizer
        self.max_new_tokens = max_new_tokens
        self.settings = dict(temperature=temperature, top_p=top_p, seed=seed, stop=stop, adapter=adapter)
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.last: GenerationResult | None = None

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """The model's answer to ``message`` given the conversation so far; ``on_text`` streams it as it is written."""
        self.messages.append({"role": "user", "content": message})
        request = GenerationRequest(messages=list(self.messages), max_new_tokens=self.max_new_tokens, **self.settings)
        stream = (lambda index, text: on_text(text)) if on_text else None
        self.last = self.engine.generate([request], on_token=stream)[0]
        answer = self.last.text.strip()
        self.messages.append({"role": "assistant", "content": answer})
        return answer
