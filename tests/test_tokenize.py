"""Token ids and labels: prompts masked, answers and their end-of-turn token trained, truncation reported."""

from __future__ import annotations

import copy

import pytest

from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    encode_example,
    encode_examples,
    render_chat,
    render_prompt,
)


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def trained_ids(encoded) -> list[int]:
    return [token for token, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]


def test_pair_masks_prompt_and_trains_answer_and_end_of_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    example = TrainingExample.from_pair("color of sky?", "blue", system="Be brief.")
    encoded = encode_example(tok, example, max_length=128)
    prompt = render_prompt(tok, example)
    assert prompt.endswith("<|im_start|>assistant\n")
    n_prompt = len(ids_of(tok, prompt))
    answer = ids_of(tok, "blue")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    # The ids are exactly the tokens of the rendered conversation (what the model sees at inference).
    assert encoded.input_ids == ids_of(tok, render_chat(tok, example.messages))
    assert encoded.input_ids[:n_prompt] == ids_of(tok, prompt)
    assert all(label == IGNORE_INDEX for label in encoded.labels[:n_prompt])
    # The answer tokens, then <|im_end|> right after them, are trained with themselves as labels.
    span = encoded.labels[n_prompt : n_prompt + len(answer) + 1]
    assert span == answer + [im_end]
    assert encoded.input_ids[n_prompt + len(answer)] == im_end
    assert encoded.truncated_tokens == 0
    assert encoded.trained_tokens == len(encoded.input_ids) - n_prompt
    assert tok.decode(trained_ids(encoded)).startswith("blue<|im_end|>")


def test_train_on_prompt_trains_everything(tiny_tokenizer):
    example = TrainingExample.from_pair("color of sky?", "blue")
    encoded = encode_example(tiny_tokenizer, example, max_length=128, train_on_prompt=True)
    assert encoded.labels == encoded.input_ids


def chat(weight_first: int, weight_second: int) -> TrainingExample:
    return TrainingExample(
        messages=[
            {"role": "user", "content": "sky?"},
            {"role": "assistant", "content": "blue", "weight": weight_first},
            {"role": "user", "content": "grass?"},
            {"role": "assistant", "content": "green", "weight": weight_second},
        ]
    )


def test_chat_weight_zero_turn_is_not_trained(tiny_tokenizer):
    tok = tiny_tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    encoded = encode_example(tok, chat(0, 1), max_length=128)
    text = tok.decode(trained_ids(encoded))
    assert "green<|im_end|>" in text
    assert "blue" not in text and "grass" not in text and "sky" not in text
    assert trained_ids(encoded).count(im_end) == 1

    both = encode_example(tok, chat(1, 1), max_length=128)
    text = tok.decode(trained_ids(both))
    assert "blue<|im_end|>" in text and "green<|im_end|>" in text
    assert "grass" not in text
    assert trained_ids(both).count(im_end) == 2
    assert both.input_ids == encoded.input_ids  # weights change labels only

    first_only = encode_example(tok, chat(1, 0), max_length=128)
    text = tok.decode(trained_ids(first_only))
    assert "blue<|im_end|>" in text and "green" not in text


def test_text_example_trains_every_token_and_ends_with_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    example = TrainingExample(text="the sky is blue")
    encoded = encode_example(tok, example, max_length=128)
    assert encoded.input_ids == ids_of(tok, "the sky is blue") + [tok.eos_token_id]
    assert encoded.labels == encoded.input_ids
    assert render_prompt(tok, example) == ""


def test_truncation(tiny_tokenizer):
    tok = tiny_tokenizer
    example = TrainingExample(text="grass is green " * 20)
    full = encode_example(tok, example, max_length=10_000)
    cut = encode_example(tok, example, max_length=16)
    assert len(cut.input_ids) == 16 and cut.input_ids == full.input_ids[:16]
    assert cut.labels == full.labels[:16]
    assert cut.truncated_tokens == len(full.input_ids) - 16 > 0


def test_encode_examples_reports_truncated_and_drops_untrainable(tiny_tokenizer):
    tok = tiny_tokenizer
    short = TrainingExample.from_pair("sky?", "blue", source="f:1")
    long_prompt = TrainingExample.from_pair("what color is the sky? " * 10, "blue", source="f:2")  # answer cut off
    long_text = TrainingExample(text="a rose is red " * 10, source="f:3")  # cut, but tokens left to train
    max_length = 24
    assert len(encode_example(tok, short, max_length).input_ids) < max_length
    dataset = encode_examples(tok, [short, long_prompt, long_text], max_length=max_length)
    assert dataset.truncated_examples == ["f:2", "f:3"]
    assert dataset.dropped_examples == ["f:2"]
    assert len(dataset.items) == 2
    assert all(len(item.input_ids) <= max_length for item in dataset.items)
    assert dataset.total_tokens == sum(len(item.input_ids) for item in dataset.items)
    assert dataset.trained_tokens == sum(item.trained_tokens for item in dataset.items)
    assert dataset.items[1].trained_tokens == max_length


def test_fallback_template_for_a_tokenizer_without_one(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    example = TrainingExample.from_pair("sky?", "blue")
    rendered = render_chat(tok, example.messages)
    assert "### User:\nsky?" in rendered and "### Assistant:\nblue" in rendered
    encoded = encode_example(tok, example, max_length=128)
    text = tok.decode(trained_ids(encoded))
    assert text.startswith("blue" + tok.eos_token)
    assert "sky" not in text
    assert FALLBACK_CHAT_TEMPLATE  # the fallback is what rendered it


@pytest.mark.parametrize("max_length", [16, 64])
def test_labels_align_with_ids(tiny_tokenizer, max_length):
    encoded = encode_example(tiny_tokenizer, chat(1, 1), max_length=max_length)
    assert len(encoded.labels) == len(encoded.input_ids) <= max_length
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(encoded.input_ids, encoded.labels))
