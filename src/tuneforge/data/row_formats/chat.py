"""``chat``: ``{"messages": [{"role", "content", "weight"?}, ...], "tools"?: [...]}``, OpenAI's fine-tuning format.

Checked with the codes of OpenAI's data-preparation cookbook (``missing_messages_list``,
``message_missing_key``, ``unrecognized_role``, ...) plus ``weight``: 0 or 1 on assistant turns,
0 meaning "context, do not learn this answer". Tool calling (OpenAI's function-calling format:
top-level ``tools``, assistant ``tool_calls`` with ``content`` null, ``tool`` messages with
``tool_call_id``) is checked by ``data/tool_calls.py``; the tool-call turns are trained like any
assistant turn, the tool answers are context.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.checks import Location, describe_type, show
from tuneforge.data.examples import ROLES, TrainingExample
from tuneforge.data.findings import Finding
from tuneforge.data.row_formats.base import Path, RowFormat, metadata_of
from tuneforge.data.tool_calls import has_tools, tool_problems

MESSAGE_KEYS = frozenset({"role", "content", "weight", "name", "tool_calls", "tool_call_id"})
CHAT_ROLES = (*ROLES, "tool")  # a tool message answers an assistant's tool call
TOOL_KEYS = ("tools", "parallel_tool_calls")  # top-level keys of a tool-calling row


def _calls_tools(message: Any) -> bool:
    """An assistant turn that calls tools: its content may be null or empty."""
    return isinstance(message, dict) and message.get("role") == "assistant" and bool(message.get("tool_calls"))


def convert_chat(row: dict[str, Any], where: str, problems: list[str]) -> TrainingExample | None:
    """The messages as given (role, content, and weight when set); problems name ``messages[i]``."""
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
        if role not in CHAT_ROLES:
            problems.append(f"{where}: {field}.role is {role!r}; expected one of: {', '.join(CHAT_ROLES)}")
        content = message.get("content")
        if _calls_tools(message) and content in (None, ""):
            content = ""  # a pure tool call
        elif not isinstance(content, str) or (role == "assistant" and not content.strip()):
            problems.append(f"{where}: {field}.content must be non-empty text")
        weight = message.get("weight")
        weight = 1 if weight is None else weight  # absent, or null in a parquet struct shared with weighted rows
        if weight not in (0, 1) or isinstance(weight, bool):
            problems.append(f"{where}: {field}.weight must be 0 or 1, got {weight!r}")
        item = {"role": role, "content": content}
        if message.get("weight") is not None:
            item["weight"] = weight
        for key in ("tool_calls", "tool_call_id"):
            if message.get(key) is not None:
                item[key] = message[key]
        clean.append(item)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(f"{where}: no assistant message; each example needs at least one answer to learn")
    if has_tools(row):
        problems += [f"{where}: {message}" for code, message, _ in tool_problems(row) if code != "tool_arguments_mismatch"]
    if len(problems) > before:
        return None
    return TrainingExample(messages=clean, metadata=metadata_of(row), source=where, tools=row.get("tools") or None)


def check_chat_row(row: dict[str, Any], at: Location) -> list[Finding]:
    """OpenAI's chat checks (the fine-tuning data-preparation cookbook's codes), plus ``weight``."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        got = "missing" if "messages" not in row else f"{describe_type(messages)}" if not isinstance(messages, list) else "empty"
        return [at("missing_messages_list", f"'messages' must be a non-empty list of {{role, content}} objects; got {got}",
                   "messages")]
    problems: list[Finding] = []
    assistant_weights: list[Any] = []
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(at("message_missing_key", f"{field} must be an object with 'role' and 'content', "
                               f"got {describe_type(message)}", field))
            continue
        missing = [key for key in ("role", "content") if key not in message and not (key == "content" and _calls_tools(message))]
        if missing:
            problems.append(at("message_missing_key", f"{field} has no {' and no '.join(repr(k) for k in missing)}", field))
        extra = sorted(str(key) for key in set(message) - MESSAGE_KEYS)
        if extra:
            problems.append(at("message_unrecognized_key", f"{field} has unrecognised key(s) {extra}; "
                               "allowed: role, content, weight, name, tool_calls, tool_call_id", field))
        role = message.get("role")
        if "role" in message and (not isinstance(role, str) or role not in CHAT_ROLES):
            problems.append(at("unrecognized_role", f"{field}.role is {show(role)}; expected one of: {', '.join(CHAT_ROLES)}",
                               f"{field}.role"))
        if _calls_tools(message) and message.get("content") in (None, ""):
            pass  # a pure tool call: the calls are the answer
        elif "content" in message:
            problems += _check_content(message["content"], role, field, at)
        if message.get("weight") is not None:  # null: absent (parquet structs shared with weighted rows)
            weight = message["weight"]
            if isinstance(weight, bool) or weight not in (0, 1):
                problems.append(at("invalid_weight", f"{field}.weight must be 0 or 1, got {show(weight)}", f"{field}.weight"))
            elif role != "assistant":
                problems.append(at("weight_on_non_assistant", f"{field}.weight is set on a {show(role)} message; "
                                   "only assistant messages are weighted (it is ignored)", f"{field}.weight"))
        if role == "assistant":
            weight = message.get("weight")
            assistant_weights.append(1 if weight is None else weight)
    if not assistant_weights:
        problems.append(at("example_missing_assistant_message",
                           "no assistant message; each example needs at least one answer to learn", "messages"))
    elif all(weight == 0 for weight in assistant_weights) and not any(p.code == "invalid_weight" for p in problems):
        problems.append(at("nothing_trained", "every assistant message has weight 0, so nothing is learned from it",
                           "messages"))
    if has_tools(row):
        problems += [at(code, message, field) for code, message, field in tool_problems(row)]
    return problems


def _check_content(content: Any, role: Any, field: str, at: Location) -> list[Finding]:
    if not isinstance(content, str):
        return [at("missing_content", f"{field}.content must be text, got {describe_type(content)}", f"{field}.content")]
    if not content.strip():
        if role == "assistant":
            return [at("missing_content", f"{field}.content is empty; an assistant answer must have text", f"{field}.content")]
        return [at("empty_content", f"{field}.content is empty", f"{field}.content")]
    return []


def _text_paths(row: dict[str, Any]) -> list[Path]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return []
    return [("messages", i, "content") for i, m in enumerate(messages) if isinstance(m, dict) and isinstance(m.get("content"), str)]


def _prompt_path(row: dict[str, Any]) -> Path | None:
    """The last user turn before the last answer."""
    messages = row.get("messages") or []
    last_answer = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    users = [i for i, m in enumerate(messages[:last_answer]) if m.get("role") == "user" and isinstance(m.get("content"), str)]
    return ("messages", users[-1], "content") if users else None


def _column_type(column: str, arrow_type: str) -> str | None:
    if column != "messages":
        return None
    fits = arrow_type.startswith(("list<", "large_list<")) and "role" in arrow_type and "content" in arrow_type
    return None if fits else "a list of structs with role and content"


CHAT = ROW_FORMATS.register("chat", RowFormat(
    name="chat", keys=("messages",), convert=convert_chat, check=check_chat_row,
    sample={"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]},
    becomes="the messages as given (tool calls too)", priority=10, text_paths=_text_paths, prompt_path=_prompt_path,
    optional=TOOL_KEYS,
    column_type=_column_type,
))
