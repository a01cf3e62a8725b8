"""Preference pairs for DPO and ORPO: a prompt, the answer to prefer, the answer to reject.

Two row formats, detected automatically:

- ``preference``: ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` (``system`` optional) or
  ``{"messages": [...the conversation so far...], "chosen": ..., "rejected": ...}``; ``chosen`` and
  ``rejected`` are text or, as in TRL's conversational format, a list holding one assistant message.
- ``openai_preference``: OpenAI's DPO fine-tuning format, ``{"input": {"messages": [...]},
  "preferred_output": [{"role": "assistant", "content": ...}], "non_preferred_output": [...]}``.

Both become a chat ``TrainingExample`` whose final assistant turn is the chosen answer, with the
rejected answer in ``TrainingExample.rejected``: SFT trains on the chosen answers, the pairwise
objectives (``dpo``, ``orpo``) on both. The doctor checks the conversation with the chat checks and
names the missing or malformed field (``rejected``, ``preferred_output[0].content``) at ``file:line``.
They are detected by their answer key alone (``chosen``, ``preferred_output``) and before ``chat``,
so a row that lacks ``rejected`` is reported as such, not read as something else.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.checks import Location, check_text_field, describe_type
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding
from tuneforge.data.row_formats.base import Path, RowFormat, metadata_of
from tuneforge.data.row_formats.chat import check_chat_row, convert_chat

ANSWER_HINT = "text, or a list holding one {\"role\": \"assistant\", \"content\": ...} message"


def answer_text(value: Any) -> str | None:
    """The answer in ``value``: text, or the content of a list holding one assistant message (else None)."""
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role", "assistant") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    return None


def _answer_problem(row: dict[str, Any], key: str, at: Location) -> list[Finding]:
    value = row.get(key)
    if value is None:
        return [at("missing_field", f"missing field '{key}': a preference pair needs the answer to prefer (chosen / "
                   "preferred_output) and the one to reject (rejected / non_preferred_output)", key)]
    text = answer_text(value)
    if text is None:
        field = f"{key}[0].content" if isinstance(value, list) and value else key
        return [at("wrong_type", f"field '{key}' must be {ANSWER_HINT}, got {describe_type(value)}", field)]
    if not text.strip():
        return [at("empty_field", f"field '{key}' is empty", key)]
    return []


def _conversation(row: dict[str, Any], prompt_messages: Any, chosen_key: str) -> dict[str, Any]:
    """The chat row the chosen answer makes with the prompt: what the chat checks and converter read."""
    chosen = answer_text(row.get(chosen_key))
    messages = list(prompt_messages) if isinstance(prompt_messages, list) else prompt_messages
    if isinstance(messages, list):
        messages = messages + [{"role": "assistant", "content": chosen if chosen is not None else ""}]
    return {"messages": messages}


def _prompt_messages(row: dict[str, Any]) -> Any:
    """``preference`` rows: the messages, or the prompt (with its system text) as messages."""
    if "messages" in row:
        return row["messages"]
    system = row.get("system")
    prompt = [{"role": "user", "content": row.get("prompt")}]
    return ([{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []) + prompt


def _check_pair(row: dict[str, Any], at: Location, prompt_messages: Any, keys: tuple[str, str], prompt_field: str) -> list[Finding]:
    problems = _answer_problem(row, keys[0], at) + _answer_problem(row, keys[1], at)
    if not isinstance(prompt_messages, list) or not prompt_messages:
        return problems + [at("missing_messages_list", f"'{prompt_field}' must be a non-empty list of {{role, content}} "
                              "objects: the conversation the answers reply to", prompt_field)]
    if problems:
        return problems
    found = check_chat_row(_conversation(row, prompt_messages, keys[0]), at)
    return [problem for problem in found if problem.code != "example_missing_assistant_message"]


def _convert_pair(row: dict[str, Any], where: str, problems: list[str], prompt_messages: Any,
                  keys: tuple[str, str]) -> TrainingExample | None:
    before = len(problems)
    answers = {}
    for key in keys:
        text = answer_text(row.get(key))
        if text is None or not text.strip():
            problems.append(f"{where}: field '{key}' must be {ANSWER_HINT}" if key in row else f"{where}: missing field '{key}'")
        answers[key] = text
    if not isinstance(prompt_messages, list) or not prompt_messages:
        problems.append(f"{where}: the prompt must be a non-empty list of messages")
    if len(problems) > before:
        return None
    example = convert_chat(_conversation(row, prompt_messages, keys[0]), where, problems)
    if example is None:
        return None
    example.rejected, example.metadata = answers[keys[1]], metadata_of(row)
    return example


# ---------------------------------------------------------------- preference: prompt | messages, chosen, rejected

PAIR_KEYS = ("chosen", "rejected")


def check_preference_row(row: dict[str, Any], at: Location) -> list[Finding]:
    """A prompt (text) or messages, and both answers; the conversation passes the chat checks."""
    if "messages" not in row:
        prompt = check_text_field(row, "prompt", at)
        if prompt:
            if prompt[0].code == "missing_field":
                prompt = [at("missing_field", "missing field 'prompt' (or 'messages'): the question the answers reply to",
                             "prompt")]
            return prompt + _answer_problem(row, "chosen", at) + _answer_problem(row, "rejected", at)
    return _check_pair(row, at, _prompt_messages(row), PAIR_KEYS, "messages")


def convert_preference(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    if "messages" not in row and not (isinstance(row.get("prompt"), str) and row["prompt"].strip()):
        problems.append(f"{where}: missing field 'prompt' (or 'messages')")
        return None
    return _convert_pair(row, where, problems, _prompt_messages(row), PAIR_KEYS)


def _preference_texts(row: dict[str, Any]) -> list[Path]:
    paths: list[Path] = [(key,) for key in ("prompt", "system", *PAIR_KEYS) if isinstance(row.get(key), str)]
    messages = row.get("messages")
    if isinstance(messages, list):
        paths += [("messages", i, "content") for i, m in enumerate(messages)
                  if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return paths


def _preference_prompt(row: dict[str, Any]) -> Path | None:
    if isinstance(row.get("prompt"), str):
        return ("prompt",)
    messages = row.get("messages")
    users = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "user"]
    return ("messages", users[-1], "content") if users else None


def _answer_column(column: str, arrow_type: str) -> str | None:
    if column in ("prompt", "system", *PAIR_KEYS):
        fits = arrow_type in ("string", "large_string", "string_view", "null") or (
            column in PAIR_KEYS and arrow_type.startswith(("list<", "large_list<")) and "content" in arrow_type)
        return None if fits else "string"
    if column == "messages":
        fits = arrow_type.startswith(("list<", "large_list<")) and "role" in arrow_type and "content" in arrow_type
        return None if fits else "a list of structs with role and content"
    return None


PREFERENCE = ROW_FORMATS.register("preference", RowFormat(
    name="preference", keys=("chosen",), convert=convert_preference, check=check_preference_row,
    sample={"prompt": "2+2=", "chosen": "4", "rejected": "5"},
    becomes="a preference pair: user: prompt (or the messages) / assistant: chosen, rejected kept beside it",
    optional=("prompt", "messages", "rejected", "system"), priority=5, text_paths=_preference_texts,
    prompt_path=_preference_prompt, column_type=_answer_column,
    extra={"note": "(or messages instead of prompt; for --objective dpo / orpo)"},
))


# ---------------------------------------------------------------- OpenAI's DPO format

OPENAI_KEYS = ("preferred_output", "non_preferred_output")


def _openai_prompt(row: dict[str, Any]) -> Any:
    given = row.get("input")
    return given.get("messages") if isinstance(given, dict) else None


def check_openai_preference_row(row: dict[str, Any], at: Location) -> list[Finding]:
    """``input.messages`` and both outputs; the conversation passes the chat checks."""
    if not isinstance(row.get("input"), dict):
        got = "missing" if "input" not in row else describe_type(row["input"])
        return [at("missing_field", f"'input' must be an object with 'messages' (OpenAI's DPO format); got {got}",
                   "input")] + _answer_problem(row, OPENAI_KEYS[0], at) + _answer_problem(row, OPENAI_KEYS[1], at)
    return _check_pair(row, at, _openai_prompt(row), OPENAI_KEYS, "input.messages")


def convert_openai_preference(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    return _convert_pair(row, where, problems, _openai_prompt(row), OPENAI_KEYS)


def _openai_texts(row: dict[str, Any]) -> list[Path]:
    messages = _openai_prompt(row)
    paths: list[Path] = []
    if isinstance(messages, list):
        paths += [("input", "messages", i, "content") for i, m in enumerate(messages)
                  if isinstance(m, dict) and isinstance(m.get("content"), str)]
    for key in OPENAI_KEYS:
        if answer_text(row.get(key)) is not None and isinstance(row.get(key), list):
            paths.append((key, 0, "content"))
    return paths


def _openai_prompt_path(row: dict[str, Any]) -> Path | None:
    messages = _openai_prompt(row)
    users = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "user"]
    return ("input", "messages", users[-1], "content") if users else None


OPENAI_PREFERENCE = ROW_FORMATS.register("openai_preference", RowFormat(
    name="openai_preference", keys=("preferred_output",), convert=convert_openai_preference,
    check=check_openai_preference_row,
    sample={"input": {"messages": [{"role": "user", "content": "2+2="}]},
            "preferred_output": [{"role": "assistant", "content": "4"}],
            "non_preferred_output": [{"role": "assistant", "content": "5"}]},
    becomes="a preference pair: input.messages / assistant: preferred_output, non_preferred_output kept beside it",
    optional=("input", "non_preferred_output"), priority=6, text_paths=_openai_texts, prompt_path=_openai_prompt_path,
    extra={"note": "(OpenAI's DPO format)"},
))
