"""``TrainingExample`` and ``TrainingData``: the in-memory shape of a dataset.

Every row format is normalised to chat messages, or to plain ``text`` for the text format, so the
rest of tuneforge handles one shape. ``source`` keeps ``file:line`` for messages about the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass
class TrainingExample:
    """One example: chat ``messages`` (``role``, ``content``, optional ``weight``) or raw ``text``."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_pair(cls, input: str, output: str, system: str | None = None, **kwargs: Any) -> TrainingExample:
        """An example from an ``input`` (user turn) and the expected ``output`` (assistant turn)."""
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": input}, {"role": "assistant", "content": output}]
        return cls(messages=messages, **kwargs)

    @property
    def is_text(self) -> bool:
        return self.text is not None

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """The conversation up to (not including) the final assistant turn: what a model is asked."""
        last = self._last_assistant_index()
        return self.messages[:last] if last is not None else list(self.messages)

    @property
    def input(self) -> str:
        """The last user turn before the final answer (or the whole text for text examples)."""
        if self.is_text:
            return self.text or ""
        users = [m["content"] for m in self.prompt_messages if m["role"] == "user"]
        return users[-1] if users else ""

    @property
    def output(self) -> str:
        """The final assistant turn: the reference answer."""
        last = self._last_assistant_index()
        return self.messages[last]["content"] if last is not None else ""

    def _last_assistant_index(self) -> int | None:
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index]["role"] == "assistant":
                return index
        return None

    def to_dict(self) -> dict[str, Any]:
        """The example as a JSON-able row in chat or text format."""
        row: dict[str, Any] = {"text": self.text} if self.is_text else {"messages": self.messages}
        if self.metadata:
            row["metadata"] = self.metadata
        return row


@dataclass
class TrainingData:
    """A dataset ready to train on: ``examples`` (train), ``validation`` and ``test`` sets."""

    examples: list[TrainingExample]
    validation: list[TrainingExample] = field(default_factory=list)
    test: list[TrainingExample] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.examples), "validation": len(self.validation), "test": len(self.test), **self.metadata}
