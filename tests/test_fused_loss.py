"""The fused projection + cross-entropy gives the same loss and gradients as transformers' own loss."""

from __future__ import annotations

import pytest
import torch

import tuneforge.model.loss as loss_module
from tuneforge.data.batching import collate
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_example
from tuneforge.model.loss import label_loss_sums


@pytest.mark.parametrize("chunk_rows", [1024, 5])
def test_gradients_equal_transformers_loss(tiny_model_dir, tiny_tokenizer, monkeypatch, chunk_rows):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(loss_module, "LOGITS_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(loss_module, "LOGITS_CHUNK_ROWS_TRAINED_HEAD", chunk_rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # full FT: tied head trains too
    pairs = [("sky?", "blue"), ("what is the colour of grass", "green, mostly"), ("snow", "white")]
    items = [encode_example(tiny_tokenizer, TrainingExample.from_pair(q, a), 64) for q, a in pairs]
    batch = collate(items, tiny_tokenizer.pad_token_id)

    model.zero_grad()
    reference = model(**batch)
    n = int((batch["labels"][:, 1:] != -100).sum())
    (reference.loss * n).backward()
    want = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    sums = label_loss_sums(model, batch)
    sums.loss_sum.backward()
    assert sums.tokens == n
    assert float(sums.loss_sum) == pytest.approx(float(reference.loss) * n, rel=1e-5)
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, want[name], atol=1e-5, rtol=1e-4), name
