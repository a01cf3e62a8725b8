"""What the data doctor reports: one ``Finding`` per problem, with severity, code, file, line and field.

Codes are stable names that scripts may rely on (``--json``); ``CODES`` documents each one. Errors
stop training; warnings are worth a look but do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]

# code -> (severity, what it means). Kept in one table so the CLI help, the docs and tests agree.
CODES: dict[str, tuple[Severity, str]] = {
    # the file as a whole
    "file_not_found": ("error", "the path does not exist"),
    "unreadable": ("error", "the file could not be read (permissions, I/O error, corrupt parquet or dataset)"),
    "unsupported_file_type": ("error", "not .jsonl, .json, .csv, .parquet or a saved datasets directory"),
    "empty_file": ("error", "the file has no bytes"),
    "no_rows": ("error", "the file has no rows (only blank lines, or a CSV header alone)"),
    "too_few_examples": ("error", "fewer usable examples than the minimum (10)"),
    "json_not_a_list": ("error", "a .json file must hold a list of objects, or {\"data\": [...]}"),
    "csv_columns": ("error", "the CSV header has none of the column sets of a known format"),
    "parquet_schema": ("error", "parquet columns are missing or have the wrong type"),
    "mixed_formats": ("error", "a row uses another format than the rest of the file"),
    # one row
    "encoding": ("error", "bytes that are not valid UTF-8"),
    "invalid_json": ("error", "a line that is not valid JSON"),
    "json_too_deep": ("error", "JSON nested too deeply to read"),
    "line_too_long": ("error", "a line longer than the reader accepts"),
    "csv_row": ("error", "a CSV row with the wrong number of cells, or unreadable"),
    "data_type": ("error", "a row that is not a JSON object"),
    "unknown_format": ("error", "a row with none of the column sets of a known format"),
    "missing_field": ("error", "a required field is absent"),
    "empty_field": ("error", "a required field is empty"),
    "wrong_type": ("error", "a field has the wrong type (e.g. a list where text is expected)"),
    "missing_messages_list": ("error", "'messages' is missing, not a list, or empty"),
    "message_missing_key": ("error", "a message lacks 'role' or 'content'"),
    "message_unrecognized_key": ("error", "a message has a key other than role, content, weight, name"),
    "unrecognized_role": ("error", "a role other than system, user, assistant, tool"),
    "missing_content": ("error", "a message's content is not text, or an assistant answer is empty"),
    "example_missing_assistant_message": ("error", "a conversation without an assistant message"),
    "invalid_weight": ("error", "an assistant message's weight is not 0 or 1"),
    "chat_template_error": ("error", "the model's chat template refuses this conversation"),
    "invalid_row": ("error", "the row cannot be converted into an example"),
    "invalid_tools": ("error", "'tools' is not a list of {type: function, function: {name, parameters}} (or a name is bad or repeated)"),
    "invalid_tool_schema": ("error", "a tool's 'parameters' is not a JSON-schema object ({type: object, properties, required})"),
    "invalid_tool_call": ("error", "an assistant's tool_calls entry lacks an id, type function or a function name"),
    "invalid_tool_arguments": ("error", "a tool call's 'arguments' is not JSON text of an object"),
    "undeclared_tool": ("error", "a tool call names a tool the row's 'tools' does not declare"),
    "tool_message_without_call": ("error", "a tool message whose tool_call_id answers no earlier, unanswered call"),
    # warnings
    "empty_content": ("warning", "an empty system or user message"),
    "weight_on_non_assistant": ("warning", "'weight' on a system or user message (only assistant turns are weighted)"),
    "tool_arguments_mismatch": ("warning", "a tool call's arguments miss a required parameter of the tool's schema"),
    "nothing_trained": ("warning", "every assistant message has weight 0: the example teaches nothing"),
    "unused_field": ("warning", "a column that no format or template uses (ignored)"),
    "too_long": ("warning", "longer than max_length tokens: the end would be cut"),
    "no_trained_tokens": ("warning", "after truncation nothing is left to learn: the example would be dropped"),
    "end_of_turn_not_trained": ("warning", "the end-of-turn token is not trained: the model may not learn to stop"),
    "duplicate": ("warning", "an exact copy of an earlier example"),
    "near_duplicate": ("warning", "nearly the same as an earlier example"),
    "conflicting_outputs": ("warning", "the same input with different outputs"),
    "label_imbalance": ("warning", "some labels have far fewer examples than others"),
    "inconsistent_system_prompt": ("warning", "system prompts differ between examples, or only some have one"),
    "personal_data": ("warning", "likely personal data (e-mail address, phone or card number)"),
    "secret": ("warning", "likely a secret (API key, token, password, private key)"),
    "split_leakage": ("warning", "the same (or nearly the same) example is in two splits"),
}


@dataclass
class Finding:
    """One problem: where it is (file, line or row number, field) and what to do about it."""

    severity: Severity
    code: str
    message: str
    file: str = ""
    line: int | None = None  # 1-based line where the row starts (JSONL, JSON, CSV)
    row: int | None = None  # 1-based row number where lines mean nothing (parquet, saved datasets)
    field: str | None = None
    related: list[int] | None = None  # other lines involved (duplicates, conflicts)
    other_where: str | None = None  # the other row's ``file:line`` when it is in another file (split leakage)

    @property
    def where(self) -> str:
        """``file:line``, ``file:row N`` or ``file``: the prefix of every message."""
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.row is not None:
            return f"{self.file}:row {self.row}"
        return self.file

    def __str__(self) -> str:
        field = f" [{self.field}]" if self.field else ""
        return f"{self.where}:{field} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["where"] = self.where
        return {key: value for key, value in data.items() if value is not None}


def finding(code: str, message: str, file: str = "", line: int | None = None, row: int | None = None,
            field: str | None = None, related: list[int] | None = None, other_where: str | None = None) -> Finding:
    """A ``Finding`` whose severity comes from ``CODES``."""
    severity = CODES[code][0]
    return Finding(severity, code, message, str(file), line, row, field, related, other_where)
