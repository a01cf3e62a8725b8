"""Saved-tensor recipes: the same gradients bit for bit, fewer tensors held, and nothing rebuilt that it must not be."""

from __future__ import annotations

import pytest
import torch

from tuneforge.config import FineTuningConfig
from tuneforge.data.tokenize import EncodedExample
from tuneforge.model import saved_recipes
from tuneforge.model.rms_norm import RMSNormFunction
from tuneforge.model.saved_recipes import SavedTally, saving_recipes
from tuneforge.train import accumulation

ITEMS = [EncodedExample(input_ids=[(i * 31 + j) % 300 + 3 for j in range(10 + 3 * i)],
                        labels=[-100] * 4 + [(i + j) % 300 + 3 for j in range(6 + 3 * i)]) for i in range(4)]
TOKENS = sum(len(item.input_ids) for item in ITEMS)


def _trainable(tiny_model_dir, method: str, packing: bool, checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    from tuneforge.model.methods import get_method, make_trainable

    config = FineTuningConfig(data="unused.jsonl", method=method, micro_batch_tokens=None, precision="fp32",
                              packing=packing, gradient_checkpointing=checkpointing)
    torch.manual_seed(0)
    model = make_trainable(get_method(method), AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           config)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make every adapter's path count
            parameter.data.normal_(0, 0.1)
    model.train()
    return model, config


def _gradients(tiny_model_dir, method: str, packing: bool, checkpointing: bool = False) -> dict[str, torch.Tensor]:
    from tuneforge.train.objectives import run_loss_sums

    model, config = _trainable(tiny_model_dir, method, packing, checkpointing)
    accumulation.accumulate_gradients(model, [ITEMS], config, run_loss_sums(config), "fp32", 0, "cpu")
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method,packing,checkpointing", [
    ("lora", True, False), ("lora", False, False), ("full", True, False), ("full", False, False), ("lora", True, True),
])
def test_gradients_are_bitwise_the_same_with_recipes_on_and_off(tiny_model_dir, monkeypatch, method, packing, checkpointing):
    monkeypatch.setattr(saved_recipes, "ENABLED", False)
    off = _gradients(tiny_model_dir, method, packing, checkpointing)
    monkeypatch.setattr(saved_recipes, "ENABLED", True)
    on = _gradients(tiny_model_dir, method, packing, checkpointing)
    assert off and set(on) == set(off)
    for name in off:
        assert torch.equal(on[name], off[name]), name


def _saved_in_last_layer(tiny_model_dir, method: str, packing: bool, recipes: bool) -> SavedTally:
    """What the last decoder layer's forward saves, one training pass through accumulate_gradients."""
    from tuneforge.train.fsdp import decoder_layers
    from tuneforge.train.objectives import run_loss_sums

    model, config = _trainable(tiny_model_dir, method, packing)
    tally, inside = SavedTally(), [False]
    add = tally.add
    tally.add = lambda tensor: add(tensor) if inside[0] else None  # type: ignore[method-assign]
    layer = decoder_layers(model)[-1]
    layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    with saving_recipes(enabled=recipes, tally=tally):  # the outer context decides: accumulate's own does nothing
        accumulation.accumulate_gradients(model, [ITEMS], config, run_loss_sums(config), "fp32", 0, "cpu")
    return tally


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_norm_outputs_and_the_o_proj_input_are_not_held(tiny_model_dir, method):
    hidden = 32  # tests/helpers.py's tiny Llama
    off = _saved_in_last_layer(tiny_model_dir, method, True, recipes=False)
    on = _saved_in_last_layer(tiny_model_dir, method, True, recipes=True)
    # the normed input (q, k, v share it), o_proj's input and the normed residual: three hidden-wide fp32 tensors
    assert off.saved_bytes - on.saved_bytes == 3 * TOKENS * hidden * 4
    assert on.recipes >= 5 and off.recipes == 0  # in that layer q, k, v, o_proj and the MLP each saved a recipe


def test_padded_batches_drop_the_two_norm_outputs(tiny_model_dir):
    hidden, rows, width = 32, len(ITEMS), max(len(item.input_ids) for item in ITEMS)
    off = _saved_in_last_layer(tiny_model_dir, "lora", False, recipes=False)
    on = _saved_in_last_layer(tiny_model_dir, "lora", False, recipes=True)
    assert off.saved_bytes - on.saved_bytes == 2 * rows * width * hidden * 4  # transformers' SDPA output stays


def test_the_training_forward_runs_under_recipes_but_not_under_fsdp(tiny_model_dir, monkeypatch):
    from tuneforge.train.objectives import run_loss_sums

    seen: list[bool] = []
    real = accumulation.training_loss_sums

    def spy(loss_sums, model, batch):
        seen.append(saved_recipes._active is not None and saved_recipes._active.recipes)
        return real(loss_sums, model, batch)

    monkeypatch.setattr(accumulation, "training_loss_sums", spy)
    model, config = _trainable(tiny_model_dir, "lora", True)
    accumulation.accumulate_gradients(model, [ITEMS], config, run_loss_sums(config), "fp32", 0, "cpu")
    accumulation.accumulate_gradients(model, [ITEMS], config.model_copy(update={"distributed": "fsdp"}),
                                      run_loss_sums(config), "fp32", 0, "cpu")
    assert seen == [True, False]
    assert saved_recipes._active is None  # nothing left behind between passes


def _norm_output() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, weight = torch.randn(2, 5, 8, requires_grad=True), torch.randn(8, requires_grad=True)
    return x, weight, RMSNormFunction.apply(x, weight, 1e-6)


def test_a_recipe_rebuilds_the_offered_output_exactly():
    with saving_recipes(enabled=True, tally=SavedTally()):
        x, weight, out = _norm_output()
        packed = saved_recipes._active.hook(out.reshape(-1, 8))
    assert len(packed) == 4  # a recipe, not the tensor
    rebuilt = saved_recipes._Registry.unpack(packed)
    assert rebuilt.shape == (10, 8) and torch.equal(rebuilt, out.detach().reshape(-1, 8))


def test_a_changed_or_dead_offer_is_saved_as_is():
    with saving_recipes(enabled=True):
        registry = saved_recipes._active
        _, _, out = _norm_output()
        with torch.no_grad():
            out.add_(1)  # modified in place since it was offered: its recipe would give the old values
        assert len(registry.hook(out)) == 2
        _, _, other = _norm_output()
        assert len(registry.hook(other.view(torch.int32))) == 2  # same storage, another dtype
        key = other.untyped_storage().data_ptr()
        _norm_output()  # the next offer of the site releases the hold on ``other``
        del other
        assert key not in registry.offers  # its death dropped the offer: a new tensor there is not mistaken for it
    assert registry.offers == {}


@pytest.mark.parametrize("recipes", [True, False])
def test_an_inplace_change_of_a_saved_tensor_still_raises(recipes):
    """saved_tensors_hooks switch off autograd's version check; the hooks make it themselves (recipes' sources too)."""
    with saving_recipes(enabled=recipes, tally=SavedTally()) as _:
        x, weight, out = _norm_output()
        loss = (out * weight).sum()  # saves out (a recipe from x, weight, rstd when on) and weight
        assert saved_recipes._active.tally.recipes == (1 if recipes else 0)
    with torch.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_checkpointed_regions_offer_nothing_and_keep_their_gradients():
    from torch.utils.checkpoint import checkpoint

    def block(x, weight, w2):
        return (RMSNormFunction.apply(x, weight, 1e-6) @ w2).tanh()

    def grads(recipes: bool):
        torch.manual_seed(0)
        x, weight, w2 = torch.randn(6, 8, requires_grad=True), torch.randn(8, requires_grad=True), torch.randn(8, 8, requires_grad=True)
        tally = SavedTally()
        with saving_recipes(enabled=recipes, tally=tally):
            out = checkpoint(block, x, weight, w2, use_reentrant=False)
            out = block(out, weight, w2)  # outside the region: recipes apply
        out.sum().backward()
        return [t.grad for t in (x, weight, w2)], tally

    off, _ = grads(False)
    on, tally = grads(True)
    assert tally.recipes == 1  # the second norm's output, saved by the matmul outside the region
    assert all(torch.equal(a, b) for a, b in zip(off, on))
