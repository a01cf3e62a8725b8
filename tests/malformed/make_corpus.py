"""Regenerate the malformed-file corpus: ``python tests/malformed/make_corpus.py``.

Each file holds one kind of mistake (most next to enough good rows to be a real dataset);
``expected.json`` names, for each file, the finding the data doctor must report: its code, line
(or null), field (or null) and a part of its message.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).parent
GOOD = [{"input": f"what is the colour of thing number {i}?", "output": ["red", "green", "blue"][i % 3]} for i in range(12)]
CHAT = [{"messages": [{"role": "user", "content": f"hello number {i}"}, {"role": "assistant", "content": f"hi {i}"}]}
        for i in range(12)]
EXPECTED: dict[str, dict[str, object]] = {}


def jsonl(name: str, rows: list[object], code: str, line: int | None, message: str, field: str | None = None,
          raw: dict[int, str] | None = None) -> None:
    """Write ``rows`` as JSON lines; ``raw`` replaces given (1-based) lines with literal text."""
    lines = [json.dumps(row) for row in rows]
    for number, text in (raw or {}).items():
        lines.insert(number - 1, text)
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    expect(name, code, line, message, field)


def expect(name: str, code: str, line: int | None, message: str, field: str | None = None) -> None:
    EXPECTED[name] = {"code": code, "line": line, "field": field, "message": message}


def chat_with(message: dict[str, object] | str) -> list[object]:
    bad = {"messages": [{"role": "user", "content": "bad row"}, message, {"role": "assistant", "content": "ok"}]}
    return CHAT[:5] + [bad] + CHAT[5:]


def main() -> None:
    (HERE / "empty.jsonl").write_bytes(b"")
    expect("empty.jsonl", "empty_file", None, "empty")
    (HERE / "blank_lines.jsonl").write_text("\n   \n\t\n")
    expect("blank_lines.jsonl", "no_rows", None, "blank lines")
    good = "".join(json.dumps(r) + "\n" for r in GOOD[:11]).encode()
    (HERE / "latin1_bytes.jsonl").write_bytes(good[: good.index(b"\n") + 1] + '{"input": "caf\xe9", "output": "x"}\n'.encode("latin-1") + good[good.index(b"\n") + 1 :])
    expect("latin1_bytes.jsonl", "encoding", 2, "UTF-8")
    jsonl("invalid_json.jsonl", GOOD, "invalid_json", 3, "invalid JSON", raw={3: "{not json}"})
    jsonl("truncated_object.jsonl", GOOD, "invalid_json", 13, "invalid JSON", raw={13: '{"input": "a", "output": '})
    jsonl("row_is_list.jsonl", GOOD[:1] + [["sky", "blue"]] + GOOD[1:], "data_type", 2, "JSON object, got a list")
    jsonl("row_is_string.jsonl", GOOD + ["just a string"], "data_type", 13, "got str")
    jsonl("row_is_number.jsonl", [42] + GOOD, "data_type", 1, "got int")
    jsonl("row_is_null.jsonl", GOOD[:4] + [None] + GOOD[4:], "data_type", 5, "got null")
    jsonl("unknown_format.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(12)], "unknown_format", 1, "--text-template")
    jsonl("mixed_formats.jsonl", GOOD + [{"text": "free text"}], "mixed_formats", 13, "most rows are input_output")
    jsonl("missing_output.jsonl", GOOD[:6] + [{"input": "no answer"}] + GOOD[6:], "missing_field", 7, "missing field 'output'", "output")
    jsonl("empty_output.jsonl", GOOD + [{"input": "x", "output": "   "}], "empty_field", 13, "is empty", "output")
    jsonl("output_is_list.jsonl", GOOD + [{"input": "x", "output": ["red"]}], "wrong_type", 13, "must be text, got a list", "output")
    jsonl("input_is_bool.jsonl", [{"input": True, "output": "x"}] + GOOD, "wrong_type", 1, "true/false", "input")
    jsonl("system_is_object.jsonl", GOOD + [{"input": "x", "output": "y", "system": {"a": 1}}], "wrong_type", 13, "got an object", "system")
    jsonl("text_empty.jsonl", [{"text": f"some text {i}"} for i in range(11)] + [{"text": ""}], "empty_field", 12, "is empty", "text")
    jsonl("chat_messages_not_list.jsonl", CHAT + [{"messages": "hello"}], "missing_messages_list", 13, "non-empty list", "messages")
    jsonl("chat_messages_empty.jsonl", [{"messages": []}] + CHAT, "missing_messages_list", 1, "got empty", "messages")
    jsonl("chat_missing_role.jsonl", chat_with({"content": "no role"}), "message_missing_key", 6, "has no 'role'", "messages[1]")
    jsonl("chat_missing_content.jsonl", chat_with({"role": "user"}), "message_missing_key", 6, "has no 'content'", "messages[1]")
    jsonl("chat_extra_key.jsonl", chat_with({"role": "assistant", "content": "x", "mood": "happy"}), "message_unrecognized_key", 6,
          "'mood'", "messages[1]")
    jsonl("chat_bad_role.jsonl", chat_with({"role": "bot", "content": "hi"}), "unrecognized_role", 6, "'bot'", "messages[1].role")
    jsonl("chat_content_null.jsonl", chat_with({"role": "assistant", "content": None}), "missing_content", 6, "got null",
          "messages[1].content")
    jsonl("chat_empty_answer.jsonl", chat_with({"role": "assistant", "content": "  "}), "missing_content", 6, "must have text",
          "messages[1].content")
    jsonl("chat_no_assistant.jsonl", CHAT + [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}],
          "example_missing_assistant_message", 13, "no assistant message", "messages")
    jsonl("chat_weight_2.jsonl", chat_with({"role": "assistant", "content": "x", "weight": 2}), "invalid_weight", 6, "got 2",
          "messages[1].weight")
    jsonl("chat_weight_true.jsonl", chat_with({"role": "assistant", "content": "x", "weight": True}), "invalid_weight", 6,
          "got True", "messages[1].weight")
    jsonl("chat_message_not_object.jsonl", chat_with("hello"), "message_missing_key", 6, "must be an object", "messages[1]")
    jsonl("too_few.jsonl", GOOD[:3], "too_few_examples", None, "only 3 usable")
    jsonl("lone_surrogate.jsonl", GOOD, "encoding", 13, "lone surrogate", "input", raw={13: '{"input": "bad \\ud800 text", "output": "x"}'})
    jsonl("huge_integer.jsonl", GOOD, "invalid_json", 2, "invalid JSON", raw={2: '{"input": ' + "7" * 5000 + ', "output": "x"}'})
    jsonl("deep_nesting.jsonl", GOOD, "json_too_deep", 1, "nested too deeply", raw={1: "[" * 100_000 + "]" * 100_000})
    (HERE / "json_not_a_list.json").write_text(json.dumps({"input": "a", "output": "b"}))
    expect("json_not_a_list.json", "json_not_a_list", 1, "expected a JSON list")
    (HERE / "json_syntax.json").write_text('[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]\n')
    expect("json_syntax.json", "invalid_json", 3, "invalid JSON")
    (HERE / "json_row_not_object.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in GOOD) + ',\n  "oops"\n]\n')
    expect("json_row_not_object.json", "data_type", 14, "got str")
    with open(HERE / "wrong_columns.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows([[f"q{i}", "a"] for i in range(12)])
    expect("wrong_columns.csv", "csv_columns", 1, "fit no known format")
    (HERE / "csv_extra_cells.csv").write_text("input,output\n" + "".join(f"q{i},a\n" for i in range(11)) + "c,d,e\n")
    expect("csv_extra_cells.csv", "csv_row", 13, "more than the header's 2 columns")
    (HERE / "csv_header_only.csv").write_text("input,output\n")
    expect("csv_header_only.csv", "no_rows", None, "header but no data")
    (HERE / "csv_duplicate_header.csv").write_text("input,output,output\n" + "".join(f"q{i},a,b\n" for i in range(12)))
    expect("csv_duplicate_header.csv", "csv_columns", 1, "repeats column")
    (HERE / "csv_missing_cell.csv").write_text("input,output\n" + "".join(f"q{i},a\n" for i in range(11)) + "lonely\n")
    expect("csv_missing_cell.csv", "csv_row", 13, "fewer than the header's 2 columns")
    (HERE / "csv_latin1.csv").write_bytes(b"input,output\n" + b"".join(f"q{i},a\n".encode() for i in range(11)) + "caf\xe9,x\n".encode("latin-1"))
    expect("csv_latin1.csv", "encoding", 13, "UTF-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"input": [[1, 2]] * 12, "output": ["a"] * 12})
    pq.write_table(table, HERE / "wrong_schema.parquet")
    expect("wrong_schema.parquet", "parquet_schema", None, "expected string", "input")
    pq.write_table(pa.table({"question": ["q"] * 12, "answer": ["a"] * 12}), HERE / "wrong_columns.parquet")
    expect("wrong_columns.parquet", "parquet_schema", None, "fit no known format")
    (HERE / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 20 + b"PAR1")
    expect("corrupt.parquet", "unreadable", None, "not a readable parquet file")
    (HERE / "notes.txt").write_text("just some notes\n")
    expect("notes.txt", "unsupported_file_type", None, "unknown file type '.txt'")
    (HERE / "expected.json").write_text(json.dumps(EXPECTED, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
