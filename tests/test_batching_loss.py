"""Batch order and padding; the label-only loss against the model's own Hugging Face loss."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.data.batching import collate, epoch_batches, iter_eval_batches, sequential_batches
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import IGNORE_INDEX, EncodedExample, encode_examples
from tuneforge.model import loss as loss_module
from tuneforge.model.loss import label_loss_sums, mean_label_loss, perplexity

LENGTHS = [(i * 7) % 23 + 1 for i in range(45)]


@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_epoch_batches_cover_each_index_once(batch_size: int):
    for epoch in range(3):
        batches = epoch_batches(LENGTHS, batch_size, seed=11, epoch=epoch)
        flat = [index for batch in batches for index in batch]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert all(1 <= len(batch) <= batch_size for batch in batches)
        assert len(batches) == math.ceil(len(LENGTHS) / batch_size)


def test_epoch_batches_deterministic_and_vary_by_epoch_and_seed():
    assert epoch_batches(LENGTHS, 4, seed=3, epoch=1) == epoch_batches(LENGTHS, 4, seed=3, epoch=1)
    assert epoch_batches(LENGTHS, 4, seed=3, epoch=0) != epoch_batches(LENGTHS, 4, seed=3, epoch=1)
    assert epoch_batches(LENGTHS, 4, seed=3, epoch=0) != epoch_batches(LENGTHS, 4, seed=4, epoch=0)


def test_batches_group_similar_lengths():
    lengths = [1, 100] * 32
    batches = epoch_batches(lengths, 8, seed=0, epoch=0)
    # Length grouping: no batch mixes the short and the long examples.
    assert all(len({lengths[i] for i in batch}) == 1 for batch in batches)


def test_sequential_batches_sorted_by_length():
    batches = sequential_batches(LENGTHS, 5)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)


def test_collate_pads_right():
    items = [EncodedExample([5, 6, 7], [IGNORE_INDEX, 6, 7]), EncodedExample([8], [8]), EncodedExample([9, 10], [IGNORE_INDEX, IGNORE_INDEX])]
    batch = collate(items, pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100], [-100, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


@pytest.fixture(scope="module")
def padded_batch(tiny_tokenizer):
    examples = [
        TrainingExample.from_pair("color of sky?", "blue"),
        TrainingExample.from_pair("what color is the grass in spring?", "green, mostly"),
        TrainingExample(text="a rose is red"),
        TrainingExample.from_pair("tomato?", "red", system="Answer with one colour."),
    ]
    encoded = encode_examples(tiny_tokenizer, examples, max_length=128)
    batch = collate(encoded.items, tiny_tokenizer.pad_token_id)
    assert (batch["attention_mask"] == 0).any()  # really padded
    return encoded, batch


def test_label_loss_sums_matches_hf_loss(tiny_model, padded_batch):
    _, batch = padded_batch
    with torch.no_grad():
        sums = label_loss_sums(tiny_model, batch)
        output = tiny_model(**batch)
    n_labels = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert sums.tokens == n_labels
    assert float(sums.loss_sum) == pytest.approx(float(output.loss) * n_labels, rel=1e-5, abs=1e-5)
    # Correct predictions: argmax of the logits at each labelled position.
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    predicted = output.logits[:, :-1].argmax(-1)
    assert sums.correct == int((predicted[mask] == targets[mask]).sum())


def test_chunked_loss_and_gradients_match(tiny_model_dir, padded_batch, monkeypatch):
    from transformers import AutoModelForCausalLM

    _, batch = padded_batch
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)

    def loss_and_grad():
        model.zero_grad()
        sums = label_loss_sums(model, batch)
        sums.loss_sum.backward()
        return float(sums.loss_sum.detach()), sums.correct, model.get_input_embeddings().weight.grad.clone()

    whole = loss_and_grad()
    monkeypatch.setattr(loss_module, "LOGITS_CHUNK_ROWS", 3)  # several chunks
    monkeypatch.setattr(loss_module, "LOGITS_CHUNK_ROWS_TRAINED_HEAD", 3)
    chunked = loss_and_grad()
    assert chunked[0] == pytest.approx(whole[0], rel=1e-5)
    assert chunked[1] == whole[1]
    assert torch.allclose(chunked[2], whole[2], atol=1e-6)


def test_mean_label_loss_and_perplexity(tiny_model, padded_batch, tiny_tokenizer):
    encoded, batch = padded_batch
    tiny_model.train()
    try:
        scores = mean_label_loss(tiny_model, iter_eval_batches(encoded.items, 2, tiny_tokenizer.pad_token_id))
        assert tiny_model.training  # mode restored
    finally:
        tiny_model.eval()
    with torch.no_grad():
        expected = float(tiny_model(**batch).loss)
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-9)
    assert 0.0 <= scores["accuracy"] <= 1.0
    # A random model over a 400-token vocabulary: loss near ln(400).
    assert abs(scores["loss"] - math.log(len(tiny_tokenizer))) < 1.0


def test_perplexity_overflow():
    assert perplexity(0.0) == 1.0
    assert perplexity(1000.0) == float("inf")


def test_loss_on_a_peft_model_includes_the_adapter(tiny_model_dir, padded_batch):
    from transformers import AutoModelForCausalLM

    from tuneforge.model.adapters import apply_lora, count_parameters

    _, batch = padded_batch
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = apply_lora(base, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    with torch.no_grad():
        before = float(label_loss_sums(model, batch).loss_sum)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
        after = label_loss_sums(model, batch)
        hf = model(**batch).loss
    assert after.loss_sum.item() != pytest.approx(before)
    assert float(after.loss_sum) == pytest.approx(float(hf) * after.tokens, rel=1e-5)
