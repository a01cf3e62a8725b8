"""Helpers shared by the tests: the tiny model builder, the colour dataset, event reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<unk>"]

# A trivial label task: the colour of a thing. Three labels, several phrasings.
THINGS = {
    "blue": ["sky", "sea", "ocean", "sapphire"],
    "green": ["grass", "leaf", "frog", "lime"],
    "red": ["blood", "rose", "cherry", "tomato"],
}
PHRASINGS = ["color of {}?", "what color is the {}?", "the {} has which color?", "name the color of a {}"]


def make_rows(n: int = 40) -> list[dict[str, str]]:
    """``n`` (at most 48) input/output rows with distinct prompts and three interleaved labels."""
    pairs = [(thing, color) for things in zip(*THINGS.values()) for thing, color in zip(things, THINGS)]
    rows = [{"input": phrase.format(thing), "output": color} for phrase in PHRASINGS for thing, color in pairs]
    assert n <= len(rows)
    return rows[:n]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


CORPUS = [
    "the color of the sky is blue and the sea is blue",
    "grass is green, a leaf is green, a frog is green, a lime is green",
    "blood is red, a rose is red, a cherry is red, a tomato is red",
    "what color is the sapphire? name the color of a thing. which color has the ocean?",
    "user assistant system hello hi world the intent is billing refund shipping",
    "0123456789 ( ) # ? ! . , : ; - _ \" ' \n",
]


def build_tiny_model(directory: Path) -> Path:
    """Train a byte-level BPE tokenizer and save it with a random tiny Llama model in ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<unk>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events; a last line without its newline (a run still writing it, or killed mid-write) is left out."""
    complete = (Path(run_dir) / "events.jsonl").read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


# Settings that keep a run on the tiny model to a few seconds.
# test_estimate.py covers the estimate, test_baselines.py the prompting baselines and the forgetting check,
# test_auto.py the values chosen from the data: here early stopping is off (its quarter-epoch evaluations would
# slow every run) and warmup is the old 10 % of the steps, so these runs train as they did before auto.
FAST = dict(epochs=3, batch_size=4, max_new_tokens=8, max_length=128, estimate_steps=0, baselines=False,
            forgetting_check=False, early_stopping=False, warmup_steps=None)
