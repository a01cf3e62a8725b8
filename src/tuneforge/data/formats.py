"""Row formats: detect which one a file uses and turn each row into a ``TrainingExample``.

| format              | columns                                   | becomes                                  |
| ------------------- | ----------------------------------------- | ---------------------------------------- |
| `chat`              | messages: [{role, content, weight?}]      | the messages as given                    |
| `prompt_completion` | prompt, completion                        | user: prompt / assistant: completion     |
| `input_output`      | input, output (system optional)           | user: input / assistant: output          |
| `instruction`       | instruction, input (optional), output     | user: instruction + input / assistant    |
| `text`              | text                                      | raw text, every token trained            |

Any other columns can be used through a ``text_template`` such as ``"{question}\\n{answer}"``.
"""

from __future__ import annotations

from typing import Any, Callable

from tuneforge.data.examples import ROLES, TrainingExample

# Keys that identify each format, most specific first (instruction rows also have input/output).
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "instruction": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "input_output": ("input", "output"),
    "text": ("text",),
}
OPTIONAL_KEYS = {"system", "metadata", "id", "label", "weight"}
MESSAGE_KEYS = {"role", "content", "weight", "name"}


def detect_row_format(row: Any) -> str | None:
    """The format whose identifying keys ``row`` has, or None."""
    if not isinstance(row, dict):
        return None
    for name, keys in FORMAT_KEYS.items():
        if all(key in row for key in keys):
            return name
    return None


def _text(row: dict[str, Any], key: str, where: str, problems: list[str], required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from CSV/parquet
        if required:
            problems.append(f"{where}: missing field '{key}'")
        return ""
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where}: field '{key}' must be text, got {type(value).__name__}")
        return ""
    if required and not value.strip():
        problems.append(f"{where}: field '{key}' is empty")
    return value


def _chat(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        return None
    clean: list[dict[str, Any]] = []
    before = len(problems)
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{where}: {field} must be an object with 'role' and 'content'")
            continue
        extra = set(message) - MESSAGE_KEYS
        if extra:
            problems.append(f"{where}: {field} has unrecognised key(s) {sorted(extra)}; allowed: role, content, weight")
        role = message.get("role")
        if role not in ROLES:
            problems.append(f"{where}: {field}.role is {role!r}; expected one of: {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str) or (role == "assistant" and not content.strip()):
            problems.append(f"{where}: {field}.content must be non-empty text")
        weight = message.get("weight")
        weight = 1 if weight is None else weight  # absent, or null in a parquet struct shared with weighted rows
        if weight not in (0, 1) or isinstance(weight, bool):
            problems.append(f"{where}: {field}.weight must be 0 or 1, got {weight!r}")
        item = {"role": role, "content": content}
        if message.get("weight") is not None:
            item["weight"] = weight
        clean.append(item)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(f"{where}: no assistant message; each example needs at least one answer to learn")
    if len(problems) > before:
        return None
    return TrainingExample(messages=clean, metadata=_metadata(row), source=where)


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def _pair(prompt_key: str, answer_key: str) -> Callable[[dict[str, Any], str, list[str]], TrainingExample | None]:
    def convert(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
        before = len(problems)
        prompt = _text(row, prompt_key, where, problems)
        answer = _text(row, answer_key, where, problems)
        system = _text(row, "system", where, problems, required=False) or None
        if len(problems) > before:
            return None
        return TrainingExample.from_pair(prompt, answer, system=system, metadata=_metadata(row), source=where)

    return convert


def _instruction(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    before = len(problems)
    instruction = _text(row, "instruction", where, problems)
    extra_input = _text(row, "input", where, problems, required=False)
    answer = _text(row, "output", where, problems)
    system = _text(row, "system", where, problems, required=False) or None
    if len(problems) > before:
        return None
    prompt = f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction
    return TrainingExample.from_pair(prompt, answer, system=system, metadata=_metadata(row), source=where)


def _plain_text(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    before = len(problems)
    text = _text(row, "text", where, problems)
    return None if len(problems) > before else TrainingExample(text=text, metadata=_metadata(row), source=where)


CONVERTERS: dict[str, Callable[[dict[str, Any], str, list[str]], TrainingExample | None]] = {
    "chat": _chat,
    "prompt_completion": _pair("prompt", "completion"),
    "input_output": _pair("input", "output"),
    "instruction": _instruction,
    "text": _plain_text,
}
