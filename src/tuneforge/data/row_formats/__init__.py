"""The row formats tuneforge reads, one file each, registered in ``tuneforge.core.registries.ROW_FORMATS``.

| format              | columns                                   | becomes                                  |
| ------------------- | ----------------------------------------- | ---------------------------------------- |
| `chat`              | messages: [{role, content, weight?}]      | the messages as given                    |
| `instruction`       | instruction, input (optional), output     | user: instruction + input / assistant    |
| `prompt_completion` | prompt, completion                        | user: prompt / assistant: completion     |
| `input_output`      | input, output (system optional)           | user: input / assistant: output          |
| `text`              | text                                      | raw text, every token trained            |
| `preference`        | prompt or messages, chosen, rejected      | a preference pair (DPO, ORPO)            |
| `openai_preference` | input.messages, preferred_output, non_preferred_output | the same, OpenAI's DPO format |

Any other columns can be used through a ``text_template`` such as ``"{question}\\n{answer}"``.
To add a format: a new file here building a ``RowFormat`` and calling ``ROW_FORMATS.register``,
imported below; or, outside tuneforge, ``data_format: my_pkg.formats:my_format`` (a plug-in).

Lookups: ``get_format(name)``, ``format_names()``, ``detect_row_format(row)``, ``formats_help()``.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.row_formats.base import OPTIONAL_KEYS, RowFormat, check_row_format, flat_format, metadata_of, text_value

ROW_FORMATS.set_check(check_row_format)

# The built-in formats register themselves on import (after the check is installed).
from tuneforge.data.row_formats import chat, input_output, instruction, preference, prompt_completion, text  # noqa: E402,F401
from tuneforge.data.row_formats.chat import MESSAGE_KEYS  # noqa: E402

AUTO = "auto"

__all__ = ["AUTO", "MESSAGE_KEYS", "OPTIONAL_KEYS", "ROW_FORMATS", "RowFormat", "detect_row_format", "flat_format",
           "format_names", "formats_help", "get_format", "metadata_of", "registered_formats", "text_value"]


def get_format(name: str) -> RowFormat:
    """The spec named ``name`` (or a ``module:attribute`` plug-in); ``UnknownNameError`` lists the valid names."""
    return ROW_FORMATS.get(name)


def format_names() -> list[str]:
    """Every registered format name, in detection order."""
    return [spec.name for spec in registered_formats()]


def registered_formats() -> list[RowFormat]:
    """Every registered spec, in detection order (most specific first)."""
    return sorted((ROW_FORMATS.get(name) for name in ROW_FORMATS.names()), key=lambda spec: (spec.priority, spec.name))


def detect_row_format(row: Any) -> str | None:
    """The first format (in detection order) whose identifying keys ``row`` has, or None."""
    if not isinstance(row, dict):
        return None
    for spec in registered_formats():
        if spec.matches(row):
            return spec.name
    return None


def expected_columns() -> str:
    """``chat: messages; instruction: instruction, output; ...`` for error messages."""
    return "; ".join(f"{spec.name}: {', '.join(spec.keys)}" for spec in registered_formats())


def formats_help() -> str:
    """The help text's list of row formats, one line each with a sample row."""
    width = max(len(name) for name in format_names()) + 2
    lines = [f"  {spec.name:<{width}} {json.dumps(spec.sample)}" + (f"   {spec.extra['note']}" if spec.extra.get("note") else "")
             for spec in registered_formats()]
    lines.append(f"  {'any columns':<{width}} --text-template \"{{question}}\\n{{answer}}\"")
    return "\n".join(lines)
