"""Packed batches (one row, no padding, per-example attention) equal unpacked ones, logit for logit."""

from __future__ import annotations

import torch

from tuneforge.data.batching import collate, collate_packed
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import IGNORE_INDEX, encode_example
from tuneforge.model.attention import use_packed_attention
from tuneforge.model.loss import label_loss_sums

PAIRS = [("color of the sky?", "blue"), ("what color is grass in summer, usually?", "green"),
         ("snow?", "white"), ("the color of a ripe tomato, in one word please", "red")]


def _items(tokenizer):
    return [encode_example(tokenizer, TrainingExample.from_pair(q, a), 128) for q, a in PAIRS]


def test_packed_row_has_restarting_positions_and_masked_boundaries(tiny_tokenizer):
    items = _items(tiny_tokenizer)
    batch = collate_packed(items)
    lengths = [len(item.input_ids) for item in items]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["cu_seq_lens_q"].tolist() == [0] + list(torch.tensor(lengths).cumsum(0).tolist())
    starts = batch["cu_seq_lens_q"][:-1].tolist()
    assert all(batch["position_ids"][0, s].item() == 0 for s in starts)
    assert all(batch["labels"][0, s].item() == IGNORE_INDEX for s in starts)


def test_packed_and_padded_give_the_same_logits_loss_and_gradients(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    items = _items(tiny_tokenizer)
    padded = collate(items, tiny_tokenizer.pad_token_id)
    packed = collate_packed(items)

    with torch.no_grad():
        padded_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    reference = label_loss_sums(model, padded)
    reference.loss_sum.backward()
    reference_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    use_packed_attention(model)
    inputs = {k: v for k, v in packed.items() if k != "labels"}
    with torch.no_grad():
        packed_logits = model(**inputs).logits[0]
    offset = 0
    for row, item in enumerate(items):
        n = len(item.input_ids)
        assert torch.allclose(packed_logits[offset : offset + n], padded_logits[row, :n], atol=1e-5)
        offset += n
    result = label_loss_sums(model, packed)
    result.loss_sum.backward()
    assert result.tokens == reference.tokens
    assert result.correct == reference.correct
    assert torch.allclose(result.loss_sum, reference.loss_sum, atol=1e-4)
    for got, want in zip((p.grad for p in model.parameters()), reference_grads):
        assert torch.allclose(got, want, atol=1e-5)


def test_packed_attention_does_not_leak_across_examples(tiny_model_dir, tiny_tokenizer):
    """Changing one example must not change another example's logits in the same packed row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    items = _items(tiny_tokenizer)
    first = len(items[0].input_ids)
    with torch.no_grad():
        batch = {k: v for k, v in collate_packed(items).items() if k != "labels"}
        before = model(**batch).logits[0, first:]
        batch["input_ids"] = batch["input_ids"].clone()
        batch["input_ids"][0, : first] = (batch["input_ids"][0, : first] + 7) % model.config.vocab_size
        after = model(**batch).logits[0, first:]
    assert torch.allclose(before, after, atol=1e-6)
