"""``TrainingExample`` and ``TrainingData``: the in-memory shape of a dataset.

Every row format is normalised to chat messages, or to plain ``text`` for the text format, so the
rest of tuneforge handles one shape. ``source`` keeps ``file:line`` for messages about the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.core.errors import DatasetError

ROLES = ("system", "user", "assistant")


@dataclass(init=False)
class TrainingExample:
    """One example: chat ``messages`` (``role``, ``content``, optional ``weight``) or raw ``text``.

    Built from any of the shapes users arrive with, all normalised to chat messages:

    - ``TrainingExample(messages=[{"role": "user", ...}, {"role": "assistant", ...}])``
    - ``TrainingExample(input="q", output="a")`` and ``TrainingExample(prompt="q", completion="a")``
      (both with an optional ``system``): a user turn and the assistant's answer;
    - ``TrainingExample(text="...")``: raw text, every token trained;
    - any chat example plus ``rejected="..."``: a preference pair (DPO, ORPO), whose final assistant
      turn is the chosen answer and ``rejected`` the answer that should lose to it.

    ``input`` and ``output`` read back as properties (the last user turn, the final answer).
    """

    messages: list[dict[str, Any]]
    text: str | None
    metadata: dict[str, Any]
    source: str
    rejected: str | None  # a preference pair's rejected answer (the chosen one is the final assistant turn)
    tools: list[dict[str, Any]] | None  # the tools a tool-calling conversation declares (OpenAI's format, data/tool_calls.py)

    def __init__(
        self,
        messages: list[dict[str, Any]] | None = None,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        source: str = "",
        *,
        input: str | None = None,
        output: str | None = None,
        prompt: str | None = None,
        completion: str | None = None,
        system: str | None = None,
        rejected: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> None:
        self.messages = messages if messages is not None else []
        self.text = text
        self.metadata = metadata if metadata is not None else {}
        self.source = source
        self.rejected = rejected
        self.tools = tools
        pair = _pair_of(input, output, prompt, completion)
        if pair is None and system is not None:
            raise DatasetError("TrainingExample(system=...) needs input/output or prompt/completion beside it; "
                               "for chat messages put the system turn in messages")
        if pair is None:
            return
        if self.messages or self.text is not None:
            raise DatasetError("TrainingExample: give messages, text, input/output or prompt/completion, not several")
        question, answer = pair
        self.messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]

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
    def is_preference(self) -> bool:
        """A preference pair: the final assistant turn is the chosen answer, ``rejected`` the other one."""
        return self.rejected is not None

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
        if self.is_preference:  # the preference row format, so a run's data snapshot reads back as pairs
            row: dict[str, Any] = {"messages": self.prompt_messages, "chosen": self.output, "rejected": self.rejected}
        else:
            row = {"text": self.text} if self.is_text else {"messages": self.messages}
        if self.tools:
            row["tools"] = self.tools
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


def _pair_of(input: str | None, output: str | None, prompt: str | None,
             completion: str | None) -> tuple[str, str] | None:
    """``(question, answer)`` from input/output or prompt/completion; None when neither pair is used."""
    given = {name: value for name, value in
             (("input", input), ("output", output), ("prompt", prompt), ("completion", completion)) if value is not None}
    if not given:
        return None
    for question_key, answer_key in (("input", "output"), ("prompt", "completion")):
        if set(given) == {question_key, answer_key}:
            question, answer = given[question_key], given[answer_key]
            if not isinstance(question, str) or not isinstance(answer, str):
                raise DatasetError(f"TrainingExample: {question_key} and {answer_key} must be text, got "
                                   f"{type(question).__name__} and {type(answer).__name__}")
            return question, answer
    raise DatasetError(f"TrainingExample: got {', '.join(sorted(given))}; give input= with output=, "
                       "or prompt= with completion=")
