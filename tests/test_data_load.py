"""Reading data files of every type and format into TrainingExample, and reporting every bad row with file:line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import write_jsonl
from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.manager import TrainingDataManager

ROWS = [
    {"input": "color of sky?", "output": "blue"},
    {"input": "color of grass?", "output": "green"},
    {"input": "color of blood?", "output": "red"},
]


def load(path, **kwargs) -> tuple[list[TrainingExample], str]:
    return TrainingDataManager(**kwargs).load(path)


def assert_pairs(examples: list[TrainingExample], rows=ROWS):
    assert [(e.input, e.output) for e in examples] == [(r["input"], r["output"]) for r in rows]
    for example in examples:
        assert example.messages[-2:] == [
            {"role": "user", "content": example.input},
            {"role": "assistant", "content": example.output},
        ]
        assert not example.is_text


# ---------------------------------------------------------------- file types


def test_jsonl(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    examples, fmt = load(path)
    assert fmt == "input_output"
    assert_pairs(examples)
    assert [e.source for e in examples] == [f"{path}:{n}" for n in (1, 2, 3)]


def test_jsonl_blank_lines_keep_line_numbers(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n  \n" + json.dumps(ROWS[1]) + "\r\n")
    examples, _ = load(path)
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]


def test_json_list_and_data_object(tmp_path: Path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(ROWS, indent=2))
    examples, fmt = load(listed)
    assert fmt == "input_output"
    assert_pairs(examples)
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": ROWS}))
    assert_pairs(load(wrapped)[0])


def test_json_not_a_list(tmp_path: Path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"input": "a", "output": "b"}))
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_csv(tmp_path: Path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["input", "output"])
        writer.writeheader()
        writer.writerows(ROWS)
    examples, fmt = load(path)
    assert fmt == "input_output"
    assert_pairs(examples)
    assert examples[0].source == f"{path}:2"  # line 1 is the header


def test_csv_with_bom_and_numbers(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffprompt,completion\nhow many legs has a cat?,4\n".encode("utf-8"))
    examples, fmt = load(path)
    assert fmt == "prompt_completion"
    assert (examples[0].input, examples[0].output) == ("how many legs has a cat?", "4")


def test_csv_multiline_quoted_field(tmp_path: Path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output"])
        writer.writerow(["write two lines", "line one\nline two"])
    examples, _ = load(path)
    assert examples[0].output == "line one\nline two"


def test_csv_too_many_cells_names_line(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("input,output\na,b\nc,d,e\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert f"{path}:3" in str(caught.value)


def test_parquet(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    examples, fmt = load(path)
    assert fmt == "input_output"
    assert_pairs(examples)
    assert examples[2].source == f"{path}:row 3"


def test_saved_datasets_directory(tmp_path: Path):
    import datasets

    plain = tmp_path / "plain"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(plain))
    examples, fmt = load(plain)
    assert fmt == "input_output"
    assert_pairs(examples)

    split = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}).save_to_disk(str(split))
    assert_pairs(load(split)[0], ROWS[:2])


def test_directory_that_is_not_a_dataset(tmp_path: Path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DatasetError) as caught:
        load(folder)
    assert str(folder) in str(caught.value)


# ---------------------------------------------------------------- formats


def test_chat_format(tmp_path: Path):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer with a colour."},
                {"role": "user", "content": "sky?"},
                {"role": "assistant", "content": "blue", "weight": 0},
                {"role": "user", "content": "grass?"},
                {"role": "assistant", "content": "green", "weight": 1},
            ],
            "metadata": {"id": 7},
        }
    ]
    examples, fmt = load(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert fmt == "chat"
    (example,) = examples
    assert example.messages == rows[0]["messages"]
    assert example.input == "grass?"
    assert example.output == "green"
    assert example.prompt_messages == rows[0]["messages"][:4]
    assert example.metadata == {"id": 7}


def test_prompt_completion_format(tmp_path: Path):
    rows = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]
    examples, fmt = load(write_jsonl(tmp_path / "pc.jsonl", rows))
    assert fmt == "prompt_completion"
    assert [(e.input, e.output) for e in examples] == [("2+2=", "4"), ("3+3=", "6")]
    assert examples[0].messages == [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]


def test_input_output_with_system(tmp_path: Path):
    rows = [{"system": "Be brief.", "input": "sky?", "output": "blue"}]
    (example,), fmt = load(write_jsonl(tmp_path / "io.jsonl", rows))
    assert fmt == "input_output"
    assert example.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "sky?"},
        {"role": "assistant", "content": "blue"},
    ]


def test_instruction_format(tmp_path: Path):
    rows = [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Say hello.", "input": "", "output": "hello"},
        {"instruction": "Say bye.", "output": "bye"},
    ]
    examples, fmt = load(write_jsonl(tmp_path / "ins.jsonl", rows))
    assert fmt == "instruction"
    assert examples[0].input == "Translate to French.\n\ncat"
    assert examples[0].output == "chat"
    assert examples[1].input == "Say hello."
    assert examples[2].input == "Say bye." and examples[2].output == "bye"


def test_text_format(tmp_path: Path):
    rows = [{"text": "The sky is blue."}, {"text": "Grass is green."}]
    examples, fmt = load(write_jsonl(tmp_path / "text.jsonl", rows))
    assert fmt == "text"
    assert [e.text for e in examples] == ["The sky is blue.", "Grass is green."]
    assert all(e.is_text and e.messages == [] for e in examples)
    assert examples[0].input == "The sky is blue."


def test_text_template(tmp_path: Path):
    rows = [{"question": "sky?", "answer": "blue", "n": 1}, {"question": "grass?", "answer": "green", "n": 2}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    examples, fmt = load(path, text_template="Q: {question}\nA: {answer} #{n}")
    assert fmt == "text_template"
    assert [e.text for e in examples] == ["Q: sky?\nA: blue #1", "Q: grass?\nA: green #2"]
    # A row without a field the template uses is reported with its line and field.
    bad = write_jsonl(tmp_path / "qa-bad.jsonl", [rows[0], {"question": "x"}])
    with pytest.raises(DatasetError) as caught:
        load(bad, text_template="{question} {answer}")
    assert f"{bad}:2" in str(caught.value) and "answer" in str(caught.value)


@pytest.mark.parametrize("template", ["{question", "{question} {}"])
def test_malformed_text_template_is_a_tuneforge_error(tmp_path: Path, template: str):
    from tuneforge.core.errors import TuneforgeError

    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "sky?", "answer": "blue"}])
    with pytest.raises(TuneforgeError):
        load(path, text_template=template)


def test_forced_format_overrides_detection(tmp_path: Path):
    rows = [{"input": "a", "output": "b", "text": "whole text"}]
    path = write_jsonl(tmp_path / "both.jsonl", rows)
    assert load(path)[1] == "input_output"
    (example,), fmt = load(path, data_format="text")
    assert fmt == "text" and example.text == "whole text"


def test_load_records_in_memory():
    examples, fmt = TrainingDataManager().load_records(ROWS)
    assert fmt == "input_output"
    assert_pairs(examples)
    assert examples[1].source == "records:row 2"


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetError) as caught:
        load(missing)
    assert str(missing) in str(caught.value) and "not found" in str(caught.value)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv", "empty.parquet"])
def test_empty_file(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert str(path) in str(caught.value) and "empty" in str(caught.value)


def test_file_with_only_blank_lines(tmp_path: Path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_csv_with_only_a_header(tmp_path: Path):
    path = tmp_path / "header.csv"
    path.write_text("input,output\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_unknown_suffix(tmp_path: Path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message and ".txt" in message and ".jsonl" in message


def test_two_malformed_json_lines_reported_together(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(ROWS[0]), '{"input": "a", "output": ', json.dumps(ROWS[1]), "{not json}", json.dumps(ROWS[2])]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert len(caught.value.problems) == 2
    message = str(caught.value)
    assert f"{path}:2:" in message and f"{path}:4:" in message
    assert f"{path}:1:" not in message


def test_malformed_json_file_names_line(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]\n')
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert f"{path}:3" in str(caught.value)


def test_non_utf8_bytes(tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    content = (json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n").encode() + '{"input": "caf\xe9", "output": "x"}\n'.encode("latin-1")
    path.write_bytes(content)
    with pytest.raises(DatasetError) as caught:
        load(path)
    message = str(caught.value)
    assert f"{path}:3" in message and "UTF-8" in message


def test_jsonl_with_unicode_line_separator_in_a_string(tmp_path: Path):
    path = tmp_path / "u.jsonl"
    rows = [{"input": "first\u2028second", "output": "x"}, {"input": "c", "output": "y"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    examples, _ = load(path)
    assert [e.input for e in examples] == ["first\u2028second", "c"]


def test_mixed_formats(tmp_path: Path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [ROWS[0], ROWS[1], {"text": "free text"}, {"prompt": "p", "completion": "c"}])
    with pytest.raises(DatasetError) as caught:
        load(path)
    message = str(caught.value)
    assert "mix" in message
    assert f"{path}:1" in message and f"{path}:3" in message and f"{path}:4" in message
    assert "input_output" in message and "text" in message and "prompt_completion" in message


def test_unknown_format(tmp_path: Path):
    path = write_jsonl(tmp_path / "cols.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DatasetError) as caught:
        load(path)
    message = str(caught.value)
    assert f"{path}:1" in message and "question" in message and "--text-template" in message


@pytest.mark.parametrize(
    "message, expected",
    [
        ({"role": "bot", "content": "hi"}, ["messages[1].role", "'bot'"]),
        ({"role": "assistant", "content": "blue", "weight": 2}, ["messages[1].weight", "2"]),
        ({"role": "assistant", "content": "blue", "weight": True}, ["messages[1].weight"]),
        ({"role": "assistant", "content": "blue", "mood": "happy"}, ["messages[1]", "mood"]),
        ({"role": "assistant", "content": "   "}, ["messages[1].content"]),
        ({"role": "assistant", "content": None}, ["messages[1].content"]),
    ],
)
def test_bad_chat_rows(tmp_path: Path, message, expected):
    good = {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]}
    bad = {"messages": [{"role": "user", "content": "grass?"}, message, {"role": "assistant", "content": "green"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, good, bad])
    with pytest.raises(DatasetError) as caught:
        load(path)
    text = str(caught.value)
    assert f"{path}:3" in text, text
    assert f"{path}:1" not in text and f"{path}:2" not in text
    for part in expected:
        assert part in text, (part, text)


def test_chat_row_without_assistant(tmp_path: Path):
    good = {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]}
    bad = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "grass?"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, bad])
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert f"{path}:2" in str(caught.value) and "assistant" in str(caught.value)


def test_chat_messages_not_a_list(tmp_path: Path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": "hello"}, {"messages": []}])
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert len(caught.value.problems) == 2
    assert f"{path}:1" in str(caught.value) and f"{path}:2" in str(caught.value)


def test_every_bad_row_reported_at_once(tmp_path: Path):
    rows = [ROWS[0], {"input": "no answer"}, ROWS[1], {"input": "", "output": "x"}, {"input": "x", "output": ["list"]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError) as caught:
        load(path)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{path}:2:") and "'output'" in problems[0] and "missing" in problems[0]
    assert problems[1].startswith(f"{path}:4:") and "'input'" in problems[1]
    assert problems[2].startswith(f"{path}:5:") and "'output'" in problems[2]


def test_missing_field_in_csv(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("instruction,input,output\nsay hi,,hi\nsay bye,,\n")
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert f"{path}:3" in str(caught.value) and "'output'" in str(caught.value)


def test_row_that_is_not_an_object(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(["sky", "blue"]) + "\n" + '"just a string"\n')
    with pytest.raises(DatasetError) as caught:
        load(path)
    message = str(caught.value)
    assert f"{path}:2" in message and f"{path}:3" in message
    assert "object" in message


def test_many_problems_are_capped_in_the_message(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0]] + [{"input": f"q{i}"} for i in range(80)])
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert len(caught.value.problems) == 80
    assert "and 30 more" in str(caught.value)


def test_forced_unknown_format_is_a_tuneforge_error(tmp_path: Path):
    from tuneforge.core.errors import TuneforgeError

    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "i", "input": "x", "output": "o"}])
    assert load(path)[1] == "instruction"
    with pytest.raises(TuneforgeError):
        load(path, data_format="yaml")
