"""Loading a base model in another dtype than it is stored in (model/load.py): the same model as transformers'
``from_pretrained(dtype=...)``, without keeping the whole file resident beside the converted copy."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import tuneforge.core.memory as core_memory
from tuneforge.model.load import cast_parameters, load_model


@pytest.mark.parametrize("stored, wanted", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                            (torch.float32, torch.float32)])
def test_a_load_in_another_dtype_is_transformers_load(tiny_model_dir, tmp_path, stored, wanted) -> None:
    checkpoint = tiny_model_dir
    if stored != torch.float32:  # the tiny model is stored in fp32; real checkpoints are mostly bf16
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=stored).save_pretrained(tmp_path)
        checkpoint = tmp_path
    ours = load_model(checkpoint, "cpu", dtype=wanted)
    theirs = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=wanted)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert mine[name].dtype == tensor.dtype and torch.equal(mine[name], tensor), name
    assert {p.dtype for p in ours.parameters()} == {wanted} and ours.config.dtype == wanted == theirs.config.dtype
    if ours.config.tie_word_embeddings:
        assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)


def test_each_converted_weight_lets_its_file_pages_go(tiny_model_dir, monkeypatch) -> None:
    released: list[tuple[int, int]] = []
    real = core_memory.release_file_pages

    def recording(address: int, length: int, mappings=None) -> int:
        done = real(address, length, mappings)
        released.append((length, done))
        return done

    monkeypatch.setattr(core_memory, "release_file_pages", recording)
    model = load_model(tiny_model_dir, "cpu", dtype=torch.bfloat16)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert sum(length for length, _ in released) == fp32_bytes  # every converted parameter's old data, once
    assert sum(done for _, done in released) > 0  # the file-backed ones' whole pages were dropped
    released.clear()
    load_model(tiny_model_dir, "cpu")  # stored in fp32, loaded in fp32: nothing converted, nothing to let go
    assert released == []


def test_modules_kept_in_fp32_stay_fp32_and_integers_are_left_alone() -> None:
    class Model(torch.nn.Module):
        _keep_in_fp32_modules = ["router"]

        def __init__(self) -> None:
            super().__init__()
            self.router, self.expert = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.steps = torch.nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)

    model = Model()
    assert cast_parameters(model, torch.bfloat16) == 2  # the expert's weight and bias
    assert model.expert.weight.dtype == torch.bfloat16 and model.router.weight.dtype == torch.float32
    assert model.steps.dtype == torch.int64
    assert cast_parameters(model, torch.float32) == 2  # fp32 keeps no module apart
