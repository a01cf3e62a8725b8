"""The training methods beyond LoRA: their options, QLoRA's 4-bit base, DoRA beside the fused LoRA path,
bottleneck adapters, prompt learning without packing, loss falling on a repeated batch and evaluation for each.

(The shared contract — 3 steps, frozen parameters bit-identical, save/reload, exact resume — is
tests/test_method_contract.py, run over every registered method.)
"""

from __future__ import annotations

import pytest
import torch

from tuneforge.config import make_config, method_option_owners
from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import METHODS
from tuneforge.model.methods import get_method, make_trainable
from tuneforge.model.loss import label_loss_sums



def _has_bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _trainable(name, model_dir, **fields):
    config = make_config({"method": name, "precision": "fp32", **fields})
    method = get_method(name)
    torch.manual_seed(0)
    return method, make_trainable(method, method.load_base(model_dir, "cpu", config, "fp32"), config), config


def _batch(tokenizer):
    texts = ["what color is the sky? blue", "name the color of a leaf: green"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


# ----- options -----------------------------------------------------------------------------------

def test_an_option_of_another_method_is_refused_naming_the_option_and_the_method():
    with pytest.raises(ConfigError) as caught:
        make_config({"method": "ia3", "lora_r": 8})
    message = str(caught.value)
    assert "lora_r (--lora-r) is an option of method" in message and "not of method 'ia3'" in message
    assert "lora" in message and "--method" in message
    with pytest.raises(ConfigError, match="bottleneck_size .*not of method 'lora'"):
        make_config({"method": "lora", "bottleneck_size": 64})
    with pytest.raises(ConfigError, match="qlora_double_quant .*not of method 'dora'"):
        make_config({"method": "dora", "qlora_double_quant": False})


def test_each_method_accepts_its_own_options_and_defaults_of_others():
    assert make_config({"method": "dora", "lora_r": 4, "lora_alpha": 8}).lora_r == 4
    assert make_config({"method": "qlora", "lora_r": 4, "qlora_quant_type": "fp4", "qlora_double_quant": False}).qlora_quant_type == "fp4"
    assert make_config({"method": "ia3", "ia3_target_modules": ["k_proj", "v_proj"]}).ia3_target_modules == ["k_proj", "v_proj"]
    assert make_config({"method": "adapter", "bottleneck_size": 8, "bottleneck_placement": "houlsby"}).bottleneck_size == 8
    # a saved config.yaml holds every field at its value: defaults of other methods are not an error
    saved = make_config({"method": "lora"}).model_dump()
    assert make_config({**saved, "method": "ia3"}).method == "ia3"


def test_every_option_belongs_to_a_method_and_is_a_config_field():
    owners = method_option_owners()
    assert set(owners["lora_r"]) >= {"lora", "qlora", "dora", "loha", "lokr"}
    assert owners["num_virtual_tokens"] == ["prefix_tuning", "prompt_tuning"]
    from tuneforge.config import FineTuningConfig

    assert set(owners) <= set(FineTuningConfig.model_fields)
    for name in METHODS.names():
        assert set(get_method(name).options) <= set(FineTuningConfig.model_fields), name


def test_finetune_help_documents_every_method_option(capsys):
    from tuneforge.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--qlora-double-quant", "--ia3-target-modules", "--num-virtual-tokens", "--bottleneck-size",
                 "--bottleneck-placement", "--prefix-projection", "--adapter-name"):
        assert flag in text
    assert "qlora: also quantize the per-block scales" in text and "registered: adapter, dora, full, ia3" in text


def test_prompt_learning_turns_packing_off_and_refuses_it_when_asked():
    assert make_config({"method": "prompt_tuning"}).packing is False
    assert make_config({"method": "prefix_tuning"}).packing is False
    assert make_config({"method": "lora"}).packing is True
    with pytest.raises(ConfigError, match="packing: method 'prefix_tuning' cannot take packed batches"):
        make_config({"method": "prefix_tuning", "packing": True})


def test_adapter_name_is_for_methods_that_train_an_adapter():
    assert make_config({"method": "ia3", "adapter_name": "billing"}).adapter_name == "billing"
    with pytest.raises(ConfigError, match="adapter_name: method 'full' trains the whole model"):
        make_config({"method": "full", "adapter_name": "billing"})
    with pytest.raises(ConfigError, match="adapter_name"):
        make_config({"adapter_name": "../escape"})


# ----- qlora -------------------------------------------------------------------------------------

@pytest.mark.skipif(not _has_bnb(), reason="qlora needs bitsandbytes (the qlora extra)")
def test_qlora_stores_the_base_in_4_bits(tiny_model_dir, tiny_model):
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from tuneforge.model.adapters import resident_bytes

    method, model, _ = _trainable("qlora", tiny_model_dir, lora_r=4)
    base = model.get_base_model()
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7  # q k v o gate up down in both layers
    assert not [n for n, m in base.model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
    assert sum(isinstance(m, LoraLinear4bit) for m in model.modules()) == 14
    for layer in layers:
        assert layer.weight.dtype == torch.uint8 and layer.weight.quant_state.quant_type == "nf4"
        assert not layer.weight.requires_grad
    # resident size: the weights take 4 bits each (two per uint8), the block scales one byte per
    # 64 weights (double quantization); what is left is a fixed ~1.3 KB per layer (the NF4 code
    # tables), which dominates only on this 32-wide model (see BENCHMARKS.md for real sizes)
    fp32 = sum(m.weight.numel() * 4 for m in tiny_model.model.modules() if isinstance(m, torch.nn.Linear))
    packed = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    assert packed == fp32 // 8
    scales = sum(layer.weight.quant_state.absmax.numel() * layer.weight.quant_state.absmax.element_size() for layer in layers)
    assert layers[0].weight.quant_state.absmax.dtype == torch.uint8 and scales == fp32 // 4 // 64
    assert resident_bytes(base) < resident_bytes(tiny_model)
    # and it still computes roughly what the fp32 base computes (adapters start at zero)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        close = torch.nn.functional.cosine_similarity(model(input_ids=ids).logits.flatten(), tiny_model(input_ids=ids).logits.flatten(), dim=0)
    assert close > 0.9


@pytest.mark.skipif(not _has_bnb(), reason="qlora needs bitsandbytes (the qlora extra)")
def test_qlora_just_in_time_dequantization_equals_bitsandbytes(tiny_model_dir, tiny_tokenizer):
    import bitsandbytes as bnb

    _, model, _ = _trainable("qlora", tiny_model_dir, lora_r=4)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(hasattr(m, "_bnb_forward") for m in layers)
    x = torch.randn(3, 5, layers[0].in_features, requires_grad=True)
    ours = layers[0](x)
    theirs = layers[0]._bnb_forward(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not _has_bnb(), reason="qlora needs bitsandbytes (the qlora extra)")
def test_qlora_weights_keep_their_format_through_an_evaluation_forward(tiny_model_dir):
    """On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight in place on its first forward without gradients
    (another layout and scale format; for this 32-wide model it raised). The weights must stay as quantized, so the
    just-in-time dequantization (training) and the saved quantization settings keep meaning what they say."""
    import bitsandbytes as bnb

    _, model, _ = _trainable("qlora", tiny_model_dir, lora_r=4)
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    stored, scales = layer.weight.data.clone(), layer.weight.quant_state.absmax.clone()
    x = torch.randn(2, 3, layer.in_features)
    model.eval()
    with torch.no_grad():
        evaluated = layer._bnb_forward(x)  # bitsandbytes' own forward, where the repacking would happen
    assert torch.equal(layer.weight.data, stored) and torch.equal(layer.weight.quant_state.absmax, scales)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    torch.testing.assert_close(layer(x), evaluated, rtol=0, atol=0)


@pytest.mark.skipif(not _has_bnb(), reason="qlora needs bitsandbytes (the qlora extra)")
def test_a_bf16_qlora_base_is_quantized_as_a_reload_quantizes_it(tiny_model_dir):
    """Training quantizes each layer of its bf16 base; a reload (``load_saved``) quantizes an fp32 base with the
    saved compute dtype, each layer converted to it first: the 4-bit weights and block scales must be the same."""
    import bitsandbytes as bnb

    from tuneforge.config import make_config
    from tuneforge.model.load import load_model
    from tuneforge.model.methods import get_method
    from tuneforge.model.methods.qlora import quantize_linears

    method = get_method("qlora")
    config = make_config({"data": "unused.jsonl", "model": str(tiny_model_dir), "method": "qlora"})
    trained = method.load_base(tiny_model_dir, "cpu", config, "bf16")
    reloaded = load_model(tiny_model_dir, "cpu")  # as load_saved gets it: fp32
    quantize_linears(reloaded, "nf4", True, torch.bfloat16)
    assert {p.dtype for p in trained.parameters() if p.is_floating_point()} == {torch.bfloat16}
    pairs = [(a, b) for a, b in zip(trained.modules(), reloaded.modules()) if isinstance(a, bnb.nn.Linear4bit)]
    assert len(pairs) == 14
    for ours, theirs in pairs:
        assert ours.weight.quant_state.dtype == torch.bfloat16 == theirs.weight.quant_state.dtype
        assert torch.equal(ours.weight.data, theirs.weight.data)
        assert torch.equal(ours.weight.quant_state.absmax, theirs.weight.quant_state.absmax)


# ----- dora and the fused LoRA path --------------------------------------------------------------

def test_the_fused_lora_path_steps_aside_for_dora_and_results_equal_peft(tiny_model_dir, tiny_tokenizer):
    from tuneforge.model.fast_lora import speed_up_lora

    _, model, _ = _trainable("dora", tiny_model_dir, lora_r=4)  # make_trainable ran speed_up (fused path offered)
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if type(m) is LoraLinear]
    assert layers and all("default" in m.lora_variant for m in layers)
    assert speed_up_lora(model) == 0 and not any(hasattr(m, "_peft_forward") for m in layers)
    for layer in layers:  # a DoRA update that is not zero, so the magnitude/direction path matters
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.05)
    batch = _batch(tiny_tokenizer)
    with torch.no_grad():
        ours = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        with model.disable_adapter():
            base = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    reference = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                               LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", use_dora=True))
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, base)


# ----- bottleneck adapters -----------------------------------------------------------------------

@pytest.mark.parametrize("placement, per_layer", [("pfeiffer", 1), ("houlsby", 2)])
def test_bottleneck_adapters_start_as_the_base_and_train_only_themselves(tiny_model_dir, tiny_model, tiny_tokenizer, placement, per_layer):
    method, model, _ = _trainable("adapter", tiny_model_dir, bottleneck_size=8, bottleneck_placement=placement,
                                  bottleneck_nonlinearity="gelu")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == method.trainable_parameter_names(model)
    assert all(".adapter_" in n for n in trainable) and len(trainable) == 2 * per_layer * 4  # layers × sites × (down, up) × (w, b)
    batch = _batch(tiny_tokenizer)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, tiny_model(**inputs).logits, rtol=0, atol=0)
    sums = label_loss_sums(model, batch)
    (sums.loss_sum / sums.tokens).backward()
    ups = [p for n, p in model.named_parameters() if n.endswith("up.weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)


def test_finetune_with_another_methods_option_exits_1_before_any_run_directory(session_dataset, tmp_path, capsys):
    from tuneforge.cli.main import main

    out = tmp_path / "run"
    code = main(["finetune", "--data", str(session_dataset), "--method", "ia3", "--lora-r", "8", "--output", str(out)])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "lora_r (--lora-r) is an option of method" in err and "not of method 'ia3'" in err
