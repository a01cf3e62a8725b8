"""Tool-calling data (OpenAI's function-calling format): checked, rendered with tools=, trained on the assistant turns.

Two tiny tokenizers: one whose chat template handles tools (a condensed Qwen2.5 template, written
here) and the tests' plain ChatML one, which ignores them and must be refused by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import write_jsonl
from tuneforge.config import make_config
from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats import get_format
from tuneforge.data.tokenize import IGNORE_INDEX, encode_example, render_prompt
from tuneforge.data.tool_calls import tool_template_problem
from tuneforge.data.validate import ValidationOptions, validate_data
from tuneforge.pipeline import FineTuningPipeline

# Qwen2.5's chat template, condensed (same tool prompt, <tool_call> turns and <tool_response> answers).
QWEN_LIKE_TEMPLATE = """{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}{{- '\\n\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- else %}{%- if messages and messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endif %}
{%- for message in messages %}{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant' and not message.tool_calls) %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}{{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}{%- elif message.role == 'tool' %}{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["location", "format"]}}}


def tool_row(city: str = "Paris", degrees: str = "21.0", call_id: str = "call_1") -> dict:
    arguments = json.dumps({"location": city, "format": "celsius"})
    return {"tools": [WEATHER], "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": f"How warm is it in {city}?"},
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                              "function": {"name": "get_current_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": degrees},
        {"role": "assistant", "content": f"It is {degrees} degrees in {city}."}]}


@pytest.fixture(scope="module")
def tools_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with a tokenizer whose chat template supports tools."""
    from transformers import AutoTokenizer

    directory = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("tools") / "tiny-tools")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tools_tokenizer(tools_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tools_model_dir)


def _example(row: dict) -> TrainingExample:
    problems: list[str] = []
    example = get_format("chat").convert(row, "f.jsonl:1", problems)
    assert example is not None and not problems, problems
    return example


def test_a_tool_row_converts_keeps_its_tools_and_round_trips():
    example = _example(tool_row())
    assert example.tools == [WEATHER] and example.output == "It is 21.0 degrees in Paris."
    assert example.messages[2]["tool_calls"][0]["function"]["name"] == "get_current_weather"
    assert example.messages[3] == {"role": "tool", "content": "21.0", "tool_call_id": "call_1"}
    again = _example(example.to_dict())  # the run's data snapshot reads back the same
    assert again.messages == example.messages and again.tools == example.tools


def test_the_doctor_names_file_line_and_field_of_each_tool_problem(tmp_path):
    bad_schema = tool_row()
    bad_schema["tools"] = [{"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "string"}}}]
    bad_arguments = tool_row()
    bad_arguments["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{location: Paris"
    undeclared = tool_row()
    undeclared["messages"][2]["tool_calls"][0]["function"]["name"] = "get_stock_price"
    no_call = tool_row()
    no_call["messages"][3]["tool_call_id"] = "call_9"
    missing_required = tool_row()
    missing_required["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"location": "Oslo"})
    no_tools = tool_row()
    del no_tools["tools"]
    rows = [tool_row(f"City{i}", call_id=f"c{i}") for i in range(10)] + [bad_schema, bad_arguments, undeclared, no_call,
                                                                        missing_required, no_tools]
    path = write_jsonl(tmp_path / "tools.jsonl", rows)
    report = validate_data(path, ValidationOptions(near_duplicate_threshold=None))
    found = {(f.code, f.line) for f in report.findings}
    assert ("invalid_tool_schema", 11) in found
    assert ("invalid_tool_arguments", 12) in found
    assert ("undeclared_tool", 13) in found
    assert ("tool_message_without_call", 14) in found
    assert ("tool_arguments_mismatch", 15) in found  # a warning: missing required 'format'
    assert ("undeclared_tool", 16) in found  # a call without any declared tools
    by_code = {f.code: f for f in report.findings}
    assert by_code["invalid_tool_arguments"].field == "messages[2].tool_calls[0].function.arguments"
    assert "tools.jsonl:12" in str(by_code["invalid_tool_arguments"])
    assert by_code["tool_arguments_mismatch"].severity == "warning"
    assert not [f for f in report.findings if f.line is not None and f.line <= 10 and f.severity == "error"]
    assert not [f for f in report.findings if f.code in ("unused_field", "unrecognized_role", "missing_content", "message_unrecognized_key")]


def test_the_template_renders_the_tools_and_the_loss_covers_the_assistant_turns_only(tools_tokenizer):
    example = _example(tool_row())
    encoded = encode_example(tools_tokenizer, example, max_length=4096)
    text = tools_tokenizer.decode(encoded.input_ids)
    assert "<tools>" in text and '"get_current_weather"' in text and "<tool_response>\n21.0\n</tool_response>" in text
    trained = tools_tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX])
    assert '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Paris", "format": "celsius"}}\n</tool_call>' in trained
    assert "It is 21.0 degrees in Paris." in trained
    assert "<tool_response>" not in trained and "How warm" not in trained and "<tools>" not in trained
    # the prompt for evaluation declares the tools too and ends where the final answer starts
    prompt = render_prompt(tools_tokenizer, example)
    assert "<tools>" in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_a_template_without_tool_support_is_refused_naming_the_model(tiny_tokenizer, tools_tokenizer):
    assert tool_template_problem(tools_tokenizer, tools_tokenizer.chat_template) is None
    problem = tool_template_problem(tiny_tokenizer, tiny_tokenizer.chat_template)
    assert problem and "declared tools" in problem
    with pytest.raises(DatasetError) as caught:
        encode_example(tiny_tokenizer, _example(tool_row()), max_length=512)
    assert "cannot render them" in str(caught.value) and str(tiny_tokenizer.name_or_path) in str(caught.value)
    # plain chat rows are untouched by the check
    assert encode_example(tiny_tokenizer, TrainingExample(input="hi", output="hello"), max_length=64).trained_tokens > 0


def short_tool_row(city: str, degrees: str, call_id: str) -> dict:
    """A compact tool-calling row (the tiny model has 256 positions)."""
    tool = {"type": "function", "function": {"name": "temp", "parameters": {"type": "object", "properties": {"c": {"type": "string"}},
                                                                            "required": ["c"]}}}
    return {"tools": [tool], "messages": [
        {"role": "user", "content": f"{city}?"},
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                              "function": {"name": "temp", "arguments": json.dumps({"c": city})}}]},
        {"role": "tool", "tool_call_id": call_id, "content": degrees},
        {"role": "assistant", "content": degrees}]}


def test_training_on_tool_calls(tools_model_dir, tiny_model_dir, tmp_path):
    rows = [short_tool_row(city, str(10 + i), f"call_{i}") for i, city in enumerate(
        ["Paris", "Oslo", "Rome", "Lima", "Kyiv", "Doha", "Baku", "Riga", "Bern", "Gent", "Linz", "Nice"])]
    data = write_jsonl(tmp_path / "tools.jsonl", rows)
    values = dict(data=str(data), model=str(tools_model_dir), output=str(tmp_path / "run"), max_steps=3, batch_size=4,
                  max_length=256, evaluate_base=False, test_split=0.0, validation_split=0.1, evaluation_strategy="no",
                  saving_strategy="no", precision="fp32", estimate_steps=0, max_new_tokens=4)
    result = FineTuningPipeline(make_config(values), handle_signals=False).train()
    assert str(result.status) == "succeeded" and result.train["steps"] == 3
    snapshot = (tmp_path / "run" / "data" / "train.jsonl").read_text()
    assert "tool_calls" in snapshot and "\"tools\"" in snapshot
    # the plain template: refused before any run directory is made
    with pytest.raises(DatasetError, match="cannot render them"):
        FineTuningPipeline(make_config({**values, "model": str(tiny_model_dir), "output": str(tmp_path / "plain")}),
                           handle_signals=False).train()
    assert not (tmp_path / "plain").exists()
