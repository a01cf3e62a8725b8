"""Splitting a batch into forward/backward passes by token budget changes memory, not the update."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from tuneforge.config import make_config
from tuneforge.data.batching import split_into_passes
from tuneforge.data.examples import TrainingData, TrainingExample
from tuneforge.data.tokenize import EncodedExample
from tuneforge.pipeline import FineTuningPipeline

QUICK = dict(estimate_steps=0, evaluate_base=False, test_split=0.0, validation_split=0.0, saving_strategy="no", evaluation_strategy="no")


def _item(length: int) -> EncodedExample:
    return EncodedExample(input_ids=[1] * length, labels=[1] * length)


def test_passes_keep_order_and_respect_the_budget():
    items = [_item(n) for n in (5, 7, 3, 9, 2, 4)]
    passes = split_into_passes(items, 12, packed=True)
    assert [item for part in passes for item in part] == items
    assert [[len(i.input_ids) for i in part] for part in passes] == [[5, 7], [3, 9], [2, 4]]
    assert all(sum(len(i.input_ids) for i in part) <= 12 for part in passes)


def test_padded_passes_count_the_padding():
    # Padded, a pass costs rows × its longest row: [5, 7] would cost 14 > 12.
    items = [_item(n) for n in (5, 7, 3)]
    assert [[len(i.input_ids) for i in part] for part in split_into_passes(items, 12, packed=False)] == [[5], [7], [3]]


def test_an_example_longer_than_the_budget_gets_a_pass_of_its_own():
    items = [_item(3), _item(40), _item(2)]
    assert [len(part) for part in split_into_passes(items, 10, packed=True)] == [1, 1, 1]
    assert split_into_passes(items, None, packed=True) == [items]


def test_split_passes_make_the_same_update_as_the_whole_batch(tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.train import accumulation

    passes: dict[str, int] = {}
    original = accumulation.training_loss_sums

    def counted(*args):
        passes[current] = passes.get(current, 0) + 1
        return original(*args)

    monkeypatch.setattr(accumulation, "training_loss_sums", counted)
    answers = ["red", "blue", "green grass is green and a leaf is green too", "a", "the sky is blue", "rose",
               "cherry and tomato and blood are red", "lime"]
    data = TrainingData(examples=[TrainingExample.from_pair(f"question {i}?", a) for i, a in enumerate(answers)])
    adapters = {}
    for current, budget in (("whole", None), ("split", 40)):
        name = current
        config = make_config({"model": str(tiny_model_dir), "output": str(tmp_path / name), "epochs": 2, "seed": 3,
                              "batch_size": 8, "micro_batch_tokens": budget, "learning_rate": 1e-2, "precision": "fp32",
                              **QUICK})
        FineTuningPipeline(config).train(data)
        adapters[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    assert passes["whole"] == 2 and passes["split"] >= 6  # one pass per step, against several
    whole, split = adapters["whole"], adapters["split"]
    assert whole.keys() == split.keys()
    for key in whole:
        # Same sums in another order: float noise ~1e-7; averaging per pass would differ by ~1e-2.
        assert torch.allclose(whole[key], split[key], atol=1e-5), key
    assert any(not torch.allclose(tensor, torch.zeros_like(tensor)) for key, tensor in whole.items() if "lora_B" in key)
