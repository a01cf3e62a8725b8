"""Tool-calling conversations in OpenAI's function-calling format: checking them and shaping them for a chat template.

A chat row may declare ``tools`` (``[{"type": "function", "function": {"name", "description"?,
"parameters"?}}]``, ``parameters`` a JSON-schema object) and hold assistant turns that call them
(``"tool_calls": [{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}]``,
``content`` null or absent) answered by ``{"role": "tool", "tool_call_id", "content"}`` messages.

``tool_problems(row)`` lists what is wrong with a row's tools and calls as ``(code, message, field)``
(the data doctor turns them into findings with file:line, the converter into its problems):
each tool's schema is a JSON-schema object, ``arguments`` is JSON text of an object, every call
names a declared tool, every tool message answers an earlier call by its id. ``template_messages``
turns the stored (OpenAI) messages into the shape Hugging Face chat templates read (arguments as
an object); ``check_tool_template`` says whether a tokenizer's chat template renders tools at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.core.errors import DatasetError

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
Problem = tuple[str, str, str]  # (code, message, field)


def has_tools(row_or_messages: Any) -> bool:
    """Whether a row (or a list of messages) uses tool calling: declared tools, calls or tool messages."""
    if isinstance(row_or_messages, dict):
        if row_or_messages.get("tools"):
            return True
        row_or_messages = row_or_messages.get("messages")
    return isinstance(row_or_messages, list) and any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool") for m in row_or_messages)


def tool_problems(row: dict[str, Any]) -> list[Problem]:
    """Every problem with the row's ``tools``, the assistant ``tool_calls`` and the ``tool`` messages."""
    problems: list[Problem] = []
    declared = _declared_tools(row.get("tools"), problems)
    if "parallel_tool_calls" in row and not isinstance(row["parallel_tool_calls"], bool):
        problems.append(("invalid_tools", "'parallel_tool_calls' must be true or false", "parallel_tool_calls"))
    messages = row.get("messages")
    if not isinstance(messages, list):
        return problems
    open_calls: dict[str, str] = {}  # call id -> function name, until a tool message answers it
    seen_ids: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        field = f"messages[{index}]"
        if message.get("tool_calls") is not None:
            if message.get("role") != "assistant":
                problems.append(("invalid_tool_call", f"{field} has tool_calls but role {message.get('role')!r}; "
                                 "only assistant messages call tools", f"{field}.tool_calls"))
            for call_id, name in _calls(message["tool_calls"], declared, field, seen_ids, problems):
                open_calls[call_id] = name
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            where = f"{field}.tool_call_id"
            if not isinstance(call_id, str) or not call_id:
                problems.append(("tool_message_without_call", f"{field} is a tool message without a 'tool_call_id' naming "
                                 "the call it answers", where))
            elif call_id not in open_calls:
                known = ", ".join(sorted(open_calls)) or "none open"
                problems.append(("tool_message_without_call", f"{field} answers call id {call_id!r}, which no earlier "
                                 f"assistant tool_calls made (or which was answered already); open calls: {known}", where))
            else:
                del open_calls[call_id]
        elif "tool_call_id" in message:
            problems.append(("message_unrecognized_key", f"{field} has 'tool_call_id' but is not a tool message", f"{field}.tool_call_id"))
    return problems


def _declared_tools(tools: Any, problems: list[Problem]) -> dict[str, dict[str, Any]] | None:
    """name -> the tool's JSON-schema ``parameters`` ({} when it takes none); None when the row declares no tools."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        problems.append(("invalid_tools", "'tools' must be a list of {type: function, function: {name, parameters}} objects", "tools"))
        return {}
    declared: dict[str, dict[str, Any]] = {}
    for index, tool in enumerate(tools):
        field = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            problems.append(("invalid_tools", f"{field} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                             "\"parameters\": {JSON schema}}}}", field))
            continue
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            problems.append(("invalid_tools", f"{field}.function.name must be 1-64 letters, digits, _ or -; got {name!r}",
                             f"{field}.function.name"))
            continue
        if name in declared:
            problems.append(("invalid_tools", f"{field} declares {name!r} a second time", f"{field}.function.name"))
        if "description" in function and not isinstance(function["description"], str):
            problems.append(("invalid_tools", f"{field}.function.description must be text", f"{field}.function.description"))
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        schema_problem = _schema_problem(parameters)
        if schema_problem:
            problems.append(("invalid_tool_schema", f"{field}.function.parameters {schema_problem}", f"{field}.function.parameters"))
            parameters = {}
        declared[name] = parameters
    return declared


def _schema_problem(schema: Any) -> str | None:
    """What keeps ``schema`` from being a JSON-schema object description (None if it is one)."""
    if not isinstance(schema, dict):
        return f"must be a JSON-schema object ({{\"type\": \"object\", \"properties\": {{...}}}}), got {type(schema).__name__}"
    if schema.get("type") != "object":
        return f"must be a JSON schema of type \"object\" (the arguments are an object), got type {schema.get('type')!r}"
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(value, dict) for value in properties.values()):
        return "has 'properties' that are not an object of JSON schemas (one per argument)"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return "has 'required' that is not a list of argument names"
    missing = [name for name in required if name not in properties]
    if missing:
        return f"requires {missing} but has no such properties"
    return None


def _calls(calls: Any, declared: dict[str, dict[str, Any]] | None, field: str, seen_ids: set[str],
           problems: list[Problem]) -> list[tuple[str, str]]:
    """(id, name) of each well-formed call of one assistant message; problems for the others."""
    if not isinstance(calls, list) or not calls:
        problems.append(("invalid_tool_call", f"{field}.tool_calls must be a non-empty list of calls", f"{field}.tool_calls"))
        return []
    made = []
    for number, call in enumerate(calls):
        where = f"{field}.tool_calls[{number}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function" or not isinstance(function, dict):
            problems.append(("invalid_tool_call", f"{where} must be {{\"id\", \"type\": \"function\", \"function\": "
                             "{\"name\", \"arguments\"}}", where))
            continue
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        if not isinstance(call_id, str) or not call_id:
            problems.append(("invalid_tool_call", f"{where}.id must be non-empty text (the tool message answers it by this id)", f"{where}.id"))
        elif call_id in seen_ids:
            problems.append(("invalid_tool_call", f"{where}.id {call_id!r} is used by an earlier call", f"{where}.id"))
        if not isinstance(name, str) or not name:
            problems.append(("invalid_tool_call", f"{where}.function.name must name the tool called", f"{where}.function.name"))
            continue
        if declared is None:
            problems.append(("undeclared_tool", f"{where} calls {name!r} but the row declares no 'tools'", f"{where}.function.name"))
        elif name not in declared:
            problems.append(("undeclared_tool", f"{where} calls {name!r}, which is not among the declared tools "
                             f"({', '.join(sorted(declared)) or 'none'})", f"{where}.function.name"))
        parsed = _arguments(arguments, where, problems)
        if parsed is not None and declared and name in declared:
            missing = [arg for arg in declared[name].get("required", []) if arg not in parsed]
            unknown = [arg for arg in parsed if declared[name].get("properties") is not None
                       and declared[name].get("additionalProperties") is False and arg not in declared[name]["properties"]]
            if missing or unknown:
                problems.append(("tool_arguments_mismatch", f"{where} arguments do not fit {name!r}'s schema: "
                                 + "; ".join(filter(None, [f"missing required {missing}" if missing else "",
                                                           f"unknown {unknown}" if unknown else ""])), f"{where}.function.arguments"))
        if isinstance(call_id, str) and call_id:
            seen_ids.add(call_id)
            made.append((call_id, name))
    return made


def _arguments(arguments: Any, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    if not isinstance(arguments, str):
        problems.append(("invalid_tool_arguments", f"{where}.function.arguments must be JSON text (a string such as "
                         f"'{{\"city\": \"Paris\"}}'), got {type(arguments).__name__}", f"{where}.function.arguments"))
        return None
    try:
        parsed = json.loads(arguments)
    except ValueError as error:
        problems.append(("invalid_tool_arguments", f"{where}.function.arguments is not valid JSON ({error}): {arguments[:60]!r}",
                         f"{where}.function.arguments"))
        return None
    if not isinstance(parsed, dict):
        problems.append(("invalid_tool_arguments", f"{where}.function.arguments must be a JSON object, got {type(parsed).__name__}",
                         f"{where}.function.arguments"))
        return None
    return parsed


# rendering ------------------------------------------------------------------------------------


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as Hugging Face chat templates read it: role and content, the calls with their
    arguments as objects (templates such as Qwen2.5's write ``arguments | tojson``), the tool answers' ids."""
    shaped = []
    for message in messages:
        item: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            item["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                   "function": {"name": call["function"]["name"],
                                                "arguments": json.loads(call["function"]["arguments"])}}
                                  for call in message["tool_calls"]]
        if message.get("tool_call_id") is not None:
            item["tool_call_id"] = message["tool_call_id"]
        shaped.append(item)
    return shaped


PROBE_TOOL = "tuneforge_probe_tool_7f3a"
_PROBE_TOOLS = [{"type": "function", "function": {"name": PROBE_TOOL, "description": "probe",
                                                  "parameters": {"type": "object", "properties": {}}}}]
_PROBE_CALL = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "", "tool_calls": [{"id": "probe_call", "type": "function",
                                                                  "function": {"name": PROBE_TOOL + "_call", "arguments": {}}}]}]


def tool_template_problem(tokenizer: Any, template: str) -> str | None:
    """Why ``template`` cannot render tool-calling conversations (None when it can).

    Rendered with and without ``tools=``: a template that supports tools writes the declared tool
    into the text and the assistant's calls into its turn; one that ignores them renders the same
    text either way (or fails).
    """
    try:
        with_tools = tokenizer.apply_chat_template(_PROBE_CALL[:1], tools=_PROBE_TOOLS, tokenize=False, chat_template=template)
        call = tokenizer.apply_chat_template(_PROBE_CALL, tools=_PROBE_TOOLS, tokenize=False, chat_template=template)
    except Exception as error:  # a template's own raise_exception, or a jinja error on the unknown keys
        return f"it fails on a conversation with tools ({type(error).__name__}: {error})"
    if PROBE_TOOL not in with_tools:
        return "it does not write the declared tools into the prompt (the text is the same with and without tools=)"
    if PROBE_TOOL + "_call" not in call:
        return "it does not write an assistant message's tool_calls"
    return None


_SUPPORT: dict[str, str | None] = {}  # template -> its problem: the template alone decides


def check_tool_template(tokenizer: Any, template: str) -> None:
    """Raise ``DatasetError`` naming the model and its template when the template cannot render tools."""
    if template not in _SUPPORT:
        _SUPPORT[template] = tool_template_problem(tokenizer, template)
    problem = _SUPPORT[template]
    if problem:
        model = getattr(tokenizer, "name_or_path", "") or "this model"
        raise DatasetError(
            f"the data has tool-calling conversations (tools, tool_calls, tool messages), but the chat template of {model} "
            f"cannot render them: {problem}. Train on a model whose template supports tools (Qwen2.5, Llama 3.1+, "
            "Mistral v3 ...), or give it such a template (tokenizer_config.json chat_template), or drop the tool rows")
