"""``ChatSession``: a multi-turn greedy conversation with a model, in its own chat template."""

from __future__ import annotations

from typing import Any

from tuneforge.data.tokenize import render_chat
from tuneforge.evaluate.generate import generate_answers


class ChatSession:
    """Keeps the conversation so far; ``reply`` adds the user's message and the model's answer."""

    def __init__(self, model: Any, tokenizer: Any, system: str | None = None, max_new_tokens: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def reply(self, message: str) -> str:
        """The model's answer to ``message`` given the conversation so far."""
        self.messages.append({"role": "user", "content": message})
        prompt = render_chat(self.tokenizer, self.messages, add_generation_prompt=True)
        answer = generate_answers(self.model, self.tokenizer, [prompt], self.max_new_tokens, batch_size=1)[0]
        self.messages.append({"role": "assistant", "content": answer})
        return answer
